"""resilient_transport(): the recommended stack, against real servers."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tenacity import wait_fixed

from .fakes import FakeSleep, Script
from .flavour import (
    CircuitBreakerPolicy,
    CircuitBreakerTransport,
    HedgingTransport,
    IdempotencyKeyTransport,
    Layer,
    RequestIdTransport,
    RetryPolicy,
    RetryTransport,
    Timings,
    httpx,
    resilient_transport,
    uuid4_request_id,
)
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio


async def test_the_stack_keeps_the_client_api_and_reports_every_layer(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(200, body=b"done")])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    hooked: list[int] = []

    async def hook(response: httpx.Response) -> None:
        hooked.append(response.status_code)

    transport = resilient_transport(
        verify=servers.ssl_context,
        retry=RetryPolicy(wait=wait_fixed(0.5)),
        sleep=FakeSleep(),
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    async with (
        httpx.AsyncClient(
            transport=transport,
            base_url=servers.tls_url,
            headers={"X-Client": "tests"},
            event_hooks={"response": [hook]},
        ) as client,
        client.stream("GET", unique_path) as response,
    ):
        body = await response.aread()
    assert (response.status_code, body, response.http_version) == (200, b"done", "HTTP/2")
    assert hooked == [200]
    assert response.extensions["retry"].attempts == 3
    assert isinstance(response.extensions["timings"], Timings)
    received = app.received(unique_path)
    assert len(received) == 3
    assert {r.headers["x-client"] for r in received} == {"tests"}
    # One request ID for the logical request, one span per attempt.
    assert {r.headers["x-request-id"] for r in received} == {response.extensions["request_id"]}
    assert len({r.headers["traceparent"] for r in received}) == 3
    assert [
        s.attributes.get("http.request.resend_count") for s in exporter.get_finished_spans()
    ] == [
        None,
        1,
        2,
    ]


async def test_layers_can_be_switched_off_or_configured(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(201)])
    transport = resilient_transport(
        verify=servers.ssl_context,
        retry=False,
        request_id_header=None,
        tracing=False,
    )
    async with httpx.AsyncClient(transport=transport, base_url=servers.tls_url) as client:
        response = await client.get(unique_path)
    assert response.status_code == 503
    assert "retry" not in response.extensions
    assert "x-request-id" not in app.received(unique_path)[0].headers

    app.script(unique_path, [Reply(503), Reply(201)])
    keyed = resilient_transport(
        verify=servers.ssl_context,
        retry=RetryPolicy(wait=wait_fixed(0)),
        idempotency_keys=True,
        request_id_header="X-Correlation-ID",
        request_id_factory=uuid4_request_id,
        sleep=FakeSleep(),
    )
    async with httpx.AsyncClient(transport=keyed, base_url=servers.tls_url) as client:
        response = await client.post(unique_path, json={"amount": 1})
    assert response.status_code == 201
    retried = app.received(unique_path)[1:]
    assert len(retried) == 2
    assert len({r.headers["idempotency-key"] for r in retried}) == 1
    (correlation_id,) = {r.headers["x-correlation-id"] for r in retried}
    assert uuid.UUID(correlation_id).version == 4


async def test_any_transport_can_be_the_base() -> None:
    script = Script([503, 200])
    transport = resilient_transport(base=script.transport(), sleep=FakeSleep(), tracing=False)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://api.example.com/")
    assert response.status_code == 200
    assert len({r.headers["x-request-id"] for r in script.requests}) == 1
    with pytest.raises(TypeError, match="verify"):
        resilient_transport(base=script.transport(), verify=False)
    assert isinstance(
        resilient_transport(base=script.transport(), request_id_header=None, tracing=False),
        RetryTransport,
    )


def test_breaker_and_hedging_are_opt_in_and_sit_inside_retry() -> None:
    base = Script([200]).transport()
    assert _chain(resilient_transport(base=base, tracing=False)) == [
        RequestIdTransport,
        RetryTransport,
        httpx.MockTransport,
    ]
    stack = resilient_transport(
        base=base,
        tracing=False,
        circuit_breaker=CircuitBreakerPolicy(min_calls=5),
        hedging=True,
        idempotency_keys=True,
    )
    assert _chain(stack) == [
        RequestIdTransport,
        IdempotencyKeyTransport,
        RetryTransport,
        CircuitBreakerTransport,
        HedgingTransport,
        httpx.MockTransport,
    ]


def _chain(transport: httpx.AsyncBaseTransport) -> list[type]:
    layers: list[type] = []
    while True:
        layers.append(type(transport))
        if not isinstance(transport, Layer):
            return layers
        transport = transport.transport
