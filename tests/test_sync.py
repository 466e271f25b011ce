"""The same stack for sync clients (``httpx.Client``), against real servers on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import anyio.from_thread
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tenacity import stop_after_attempt, wait_exponential

from httpx_resilience.testing import FaultPlan, FaultServer

from .flavour import (
    HedgingPolicy,
    HTTPTransport,
    RetryPolicy,
    Timings,
    httpx,
    request_id,
    resilient_transport,
)
from .servers import Reply, ScriptedApp, ServerThread

POLICY = RetryPolicy(wait=wait_exponential(multiplier=1, max=30), stop=stop_after_attempt(3))


class RecordedSleep:
    """A sync sleep that records the waits and sleeps for none of them."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.calls.append(seconds)


def _client(
    servers: ServerThread, sleep: RecordedSleep, *, base_url: str | None = None, **options: object
) -> httpx.Client:
    options.setdefault("retry", POLICY)
    transport = resilient_transport(
        verify=servers.ssl_context, sync_sleep=sleep, tracing=False, **options
    )
    return httpx.Client(transport=transport, base_url=base_url or servers.tls_url)


@pytest.fixture(params=["h2-tls", "http1"])
def base_url(request: pytest.FixtureRequest, servers: ServerThread) -> str:
    return servers.tls_url if request.param == "h2-tls" else servers.http_url


def test_http2_with_timings(servers: ServerThread) -> None:
    with httpx.Client(transport=HTTPTransport(verify=servers.ssl_context)) as client:
        first = client.get(f"{servers.tls_url}/echo")
        second = client.get(f"{servers.tls_url}/echo")
    assert (first.status_code, first.http_version) == (200, "HTTP/2")
    timings = first.extensions["timings"]
    assert isinstance(timings, Timings)
    assert not timings.connection_reused
    assert timings.dns is not None  # "localhost", looked up
    assert timings.connect is not None
    assert timings.tls is not None
    assert second.extensions["timings"].connection_reused


def test_get_meets_503_503_200(
    servers: ServerThread, app: ScriptedApp, unique_path: str, base_url: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(200, body=b"done")])
    sleep = RecordedSleep()
    with _client(servers, sleep, base_url=base_url) as client:
        response = client.get(unique_path)
    assert (response.status_code, response.content) == (200, b"done")
    assert response.extensions["retry"].attempts == 3
    assert sleep.calls == [1.0, 2.0]
    assert len(app.received(unique_path)) == 3


def test_post_without_key_is_sent_once(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(200)])
    sleep = RecordedSleep()
    with _client(servers, sleep) as client:
        response = client.post(unique_path, json={"amount": 10})
    assert response.status_code == 503
    assert len(app.received(unique_path)) == 1
    assert sleep.calls == []


def test_post_with_idempotency_keys_is_retried_with_one_key(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(201)])
    with _client(servers, RecordedSleep(), idempotency_keys=True) as client:
        response = client.post(unique_path, json={"amount": 10})
    assert response.status_code == 201
    received = app.received(unique_path)
    assert len(received) == 3
    assert len({r.headers["idempotency-key"] for r in received}) == 1
    assert len({r.headers["x-request-id"] for r in received}) == 1


def test_refused_connection_raises_connect_error(servers: ServerThread, closed_port: int) -> None:
    sleep = RecordedSleep()
    with (
        _client(servers, sleep, base_url=f"http://127.0.0.1:{closed_port}") as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.post("/pay", json={"amount": 10})
    assert sleep.calls == [1.0, 2.0]  # refused: nothing was sent, so even a POST is retried


def test_three_attempts_three_spans(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(200)])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    transport = resilient_transport(
        verify=servers.ssl_context,
        retry=POLICY,
        sync_sleep=RecordedSleep(),
        tracer_provider=provider,
    )
    with httpx.Client(transport=transport) as client:
        response = client.get(f"{servers.tls_url}{unique_path}")
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    assert [(span.attributes or {}).get("http.request.resend_count") for span in spans] == [
        None,
        1,
        2,
    ]
    assert [(span.attributes or {}).get("http.response.status_code") for span in spans] == [
        503,
        503,
        200,
    ]
    # Each attempt carries the traceparent of its own span.
    sent = [r.headers["traceparent"] for r in app.received(unique_path)]
    assert [value.split("-")[2] for value in sent] == [
        format(span.context.span_id, "016x") for span in spans
    ]
    provider.shutdown()


def test_request_id_is_honoured(servers: ServerThread, app: ScriptedApp, unique_path: str) -> None:
    app.script(unique_path, [Reply(503), Reply(200)])
    with _client(servers, RecordedSleep()) as client, request_id("order-42"):
        response = client.get(unique_path)
    assert response.extensions["request_id"] == "order-42"
    assert [r.headers["x-request-id"] for r in app.received(unique_path)] == ["order-42"] * 2


def test_hedging_refuses_a_sync_client_with_a_reason(servers: ServerThread) -> None:
    transport = resilient_transport(verify=servers.ssl_context, hedging=HedgingPolicy(delay=0.01))
    with (
        httpx.Client(transport=transport) as client,
        pytest.raises(RuntimeError, match="cannot hedge for a sync client"),
    ):
        client.get(f"{servers.tls_url}/echo")


@contextmanager
def fault_server_in_a_thread(plan: FaultPlan) -> Iterator[FaultServer]:
    """The fault server, on an event loop of its own, for sync clients to call."""
    with anyio.from_thread.start_blocking_portal() as portal:
        server = portal.call(FaultServer, plan)  # made on the loop it serves on
        with portal.wrap_async_context_manager(server):
            yield server


def test_12_threads_share_one_client_through_a_goaway_every_50() -> None:
    """400 GETs and 200 POSTs: every GET gets through, and no POST is processed twice."""
    with fault_server_in_a_thread(FaultPlan(goaway_every=50)) as server:
        transport = resilient_transport(
            verify=server.ssl_context, sync_sleep=RecordedSleep(), tracing=False
        )
        with httpx.Client(transport=transport, base_url=server.url, timeout=10) as client:

            def send(number: int) -> tuple[str, int | None]:
                method = "POST" if number % 3 == 2 else "GET"
                try:
                    response = client.request(method, f"/orders/{number}", json={"n": number})
                except httpx.TransportError:
                    return method, None
                return method, response.status_code

            with ThreadPoolExecutor(max_workers=12) as pool:
                outcomes = list(pool.map(send, range(600)))
        succeeded = {"GET": 0, "POST": 0}
        for method, status in outcomes:
            if status == 200:
                succeeded[method] += 1
        assert succeeded["GET"] == 400
        assert succeeded["POST"] >= 190  # 95 %
        # Nothing was processed twice: no POST (which must not be), nor a GET.
        assert server.duplicates() == {}
