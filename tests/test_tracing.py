"""TracingTransport and the retry layer's telemetry, read back from in-memory SDK exporters."""

from __future__ import annotations

import errno
import logging
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import anyio
import h2.events
import pytest
from anyio.abc import SocketAttribute
from anyio.lowlevel import checkpoint
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_setter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from tenacity import stop_after_attempt, wait_fixed

from .fakes import FakeSleep, Script
from .flavour import (
    FLAVOUR,
    PACKAGE,
    HTTPTransport,
    RequestIdTransport,
    RetryPolicy,
    RetryTransport,
    TracingTransport,
    httpx,
    request_id,
)
from .flavour._breaker import CircuitBreakerPolicy, CircuitBreakerTransport
from .flavour._otel import DURATION_BUCKETS
from .raw_server import RawConnection, RawServer
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/v1/things"
FAST = RetryPolicy(wait=wait_fixed(1), stop=stop_after_attempt(3))


class Telemetry:
    """SDK providers with in-memory readers, passed explicitly (never set globally)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def tracing(self, transport: httpx.AsyncBaseTransport, **options: Any) -> TracingTransport:
        return TracingTransport(
            transport,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,
        )

    def retrying(
        self, transport: httpx.AsyncBaseTransport, sleep: FakeSleep | None = None
    ) -> RetryTransport:
        return RetryTransport(
            transport, FAST, sleep=sleep or FakeSleep(), meter_provider=self.meter_provider
        )

    def spans(self) -> list[ReadableSpan]:
        """Finished client spans of the library, in the order they ended."""
        return [
            span
            for span in self.exporter.get_finished_spans()
            if span.instrumentation_scope is not None
            and span.instrumentation_scope.name == "httpx_resilience"
        ]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def durations(self) -> list[Any]:
        """``HistogramDataPoint``s, typed loosely: their attributes are optional."""
        return self.points("http.client.request.duration")

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def point_attrs(points: Sequence[Any]) -> list[dict[str, Any]]:
    return sorted((dict(p.attributes) for p in points), key=repr)


class Snapshots:
    """A MockTransport handler that plays statuses in order and copies each attempt's headers.

    RetryTransport re-sends the same ``httpx.Request``; its headers are only
    worth comparing as they were at each send.
    """

    def __init__(self, statuses: Sequence[int]) -> None:
        self.statuses = list(statuses)
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(httpx.Headers(request.headers))
        return httpx.Response(self.statuses[min(len(self.headers), len(self.statuses)) - 1])

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class SlowBody(httpx.AsyncByteStream):
    """A response body served chunk by chunk, optionally failing after the last one.

    An iterator object, not an async generator: a test that stops reading
    early must not leave a generator for trio to finalize (and warn about).
    """

    def __init__(self, chunks: Sequence[bytes], fail_with: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.fail_with = fail_with
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        await checkpoint()
        if self.chunks:
            return self.chunks.pop(0)
        if self.fail_with is not None:
            raise self.fail_with
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


# --- the must-show list ----------------------------------------------


async def test_retried_get_gives_sibling_spans_durations_and_distinct_traceparents(
    telemetry: Telemetry, servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(200, body=b"done")])
    base = httpx.AsyncHTTPTransport(verify=servers.ssl_context, http2=True)
    transport = RequestIdTransport(telemetry.retrying(telemetry.tracing(base)))
    async with httpx.AsyncClient(transport=transport) as client:
        with telemetry.tracer.start_as_current_span("caller") as caller:
            response = await client.get(servers.tls_url + unique_path)
    assert response.status_code == 200

    spans = telemetry.spans()
    assert [span.name for span in spans] == ["GET"] * 3
    assert {span.kind for span in spans} == {SpanKind.CLIENT}
    caller_context = caller.get_span_context()
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == caller_context.span_id
        assert span.context.trace_id == caller_context.trace_id
    assert [attrs(s).get("http.request.resend_count") for s in spans] == [None, 1, 2]
    assert [attrs(s)["http.response.status_code"] for s in spans] == [503, 503, 200]
    assert [s.status.status_code for s in spans] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [attrs(s).get("error.type") for s in spans] == ["503", "503", None]

    first = attrs(spans[0])
    assert first["http.request.method"] == "GET"
    assert first["url.full"] == servers.tls_url + unique_path
    assert first["server.address"] == "localhost"
    assert first["server.port"] == servers.tls_port
    assert first["network.protocol.version"] == "2"
    assert first["network.peer.address"] == "127.0.0.1"
    assert first["network.peer.port"] == servers.tls_port

    # The server saw each attempt's own span as the parent, and one request ID.
    received = app.received(unique_path)
    parents = [r.headers["traceparent"].split("-")[2] for r in received]
    assert parents == [format(span.context.span_id, "016x") for span in spans]
    assert len(set(parents)) == 3
    request_ids = {r.headers["x-request-id"] for r in received}
    assert len(request_ids) == 1
    assert {attrs(s)["http.request.header.x-request-id"] for s in spans} == {tuple(request_ids)}

    durations = telemetry.durations()
    assert sum(point.count for point in durations) == 3
    assert {tuple(point.explicit_bounds) for point in durations} == {
        tuple(float(b) for b in DURATION_BUCKETS)
    }
    common = {
        "http.request.method": "GET",
        "server.address": "localhost",
        "server.port": servers.tls_port,
        "network.protocol.version": "2",
    }
    by_status = {p.attributes["http.response.status_code"]: p for p in durations}
    assert dict(by_status[503].attributes) == {
        **common,
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert by_status[503].count == 2
    assert dict(by_status[200].attributes) == {**common, "http.response.status_code": 200}

    # The retry layer's part: a counter by reason and one event per wait on the caller.
    [retries] = telemetry.points("http.client.request.retries")
    assert retries.value == 2
    assert dict(retries.attributes) == {
        "error.type": "503",
        "http.request.method": "GET",
        "server.address": "localhost",
        "server.port": servers.tls_port,
    }
    [caller_span] = [s for s in telemetry.exporter.get_finished_spans() if s.name == "caller"]
    assert [(e.name, dict(e.attributes or {})) for e in caller_span.events] == [
        (
            "httpx_resilience.retry",
            {
                "error.type": "503",
                "httpx_resilience.retry.attempt": attempt,
                "httpx_resilience.retry.wait": 1.0,
            },
        )
        for attempt in (1, 2)
    ]


async def test_connect_error_gives_a_span_with_error_type_and_a_duration(
    telemetry: Telemetry, closed_port: int
) -> None:
    transport = telemetry.tracing(httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port}/x")
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "ConnectError"
    assert attrs(span)["url.full"] == f"http://127.0.0.1:{closed_port}/x"
    assert "http.response.status_code" not in attrs(span)
    assert [event.name for event in span.events] == ["exception"]
    [point] = telemetry.durations()
    assert point.count == 1
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": closed_port,
        "error.type": "ConnectError",
    }


async def test_span_of_a_slowly_read_5mb_body_ends_after_the_last_chunk(
    telemetry: Telemetry, servers: ServerThread
) -> None:
    size = 5 * 1024 * 1024
    transport = telemetry.tracing(httpx.AsyncHTTPTransport(verify=servers.ssl_context, http2=True))
    received = chunks = last_chunk = 0
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", f"{servers.tls_url}/stream/slow?size={size}") as response,
    ):
        # Headers are in, the body is not: the attempt is still open.
        assert telemetry.spans() == []
        assert telemetry.durations() == []
        async for chunk in response.aiter_raw():
            last_chunk = time.time_ns()  # the SDK's clock
            received += len(chunk)
            chunks += 1
            if chunks <= 20:  # slow, within bounds: ~20 ms of reading
                await anyio.sleep(0.001)
    assert received == size
    assert chunks > 20
    [span] = telemetry.spans()
    assert span.end_time is not None
    assert span.end_time >= last_chunk
    assert span.status.status_code is StatusCode.UNSET
    [point] = telemetry.durations()
    assert point.count == 1
    # The duration covers the body, as the span does.
    assert span.start_time is not None
    assert point.sum == pytest.approx((span.end_time - span.start_time) / 1e9, abs=0.01)


async def test_credentials_and_signatures_never_reach_span_attributes(
    telemetry: Telemetry,
) -> None:
    secrets = ["secret", "s1gn4ture", "AKIAEXAMPLE", "tok3n", "bearer-xyz", "cookie-xyz"]
    script = Script([503, 200])
    transport = telemetry.retrying(telemetry.tracing(script.transport()))
    url = (
        "https://user:secret@api.example.com/files/report.pdf"
        "?sig=s1gn4ture&X-Amz-Credential=AKIAEXAMPLE&access_token=tok3n&color=blue"
    )
    headers = {"Authorization": "Bearer bearer-xyz", "Cookie": "session=cookie-xyz"}
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(url, headers=headers)
    spans = telemetry.spans()
    assert len(spans) == 2
    assert attrs(spans[0])["url.full"] == (
        "https://REDACTED:REDACTED@api.example.com/files/report.pdf"
        "?sig=REDACTED&X-Amz-Credential=REDACTED&access_token=REDACTED&color=blue"
    )
    recorded = repr([(s.name, s.attributes, [e.attributes for e in s.events]) for s in spans])
    recorded += repr([p.attributes for p in telemetry.durations()])
    for secret in secrets:
        assert secret not in recorded
    assert "authorization" not in recorded.lower()
    assert "cookie" not in recorded.lower()


# --- streaming ---------------------------------------------------------------


async def test_response_closed_early_or_unread_ends_its_span(telemetry: Telemetry) -> None:
    bodies = [SlowBody([b"a", b"b", b"c"]), SlowBody([b"a"])]
    replies = iter(bodies)
    script = Script([lambda request: httpx.Response(200, stream=next(replies))])
    transport = telemetry.tracing(script.transport())

    # Closed after one chunk of three. (At the transport: under trio, stopping
    # httpx's own async-generator iterators early leaves them to the garbage
    # collector, which trio reports as a ResourceWarning.)
    response = await transport.handle_async_request(httpx.Request("GET", URL))
    assert await response.stream.__aiter__().__anext__() == b"a"  # type: ignore[union-attr]
    assert telemetry.spans() == []
    await response.aclose()
    assert len(telemetry.spans()) == 1

    # Closed unread.
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        assert len(telemetry.spans()) == 1
        await response.aclose()
    assert [body.closed for body in bodies] == [True, True]
    spans = telemetry.spans()
    assert len(spans) == 2
    assert {s.status.status_code for s in spans} == {StatusCode.UNSET}
    assert sum(point.count for point in telemetry.durations()) == 2


async def test_failure_mid_body_is_recorded_on_the_span_and_the_duration(
    telemetry: Telemetry,
) -> None:
    body = SlowBody([b"first"], fail_with=httpx.ReadError("connection reset"))
    script = Script([lambda request: httpx.Response(200, stream=body)])
    async with httpx.AsyncClient(transport=telemetry.tracing(script.transport())) as client:
        with pytest.raises(httpx.ReadError):
            await client.get(URL)
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    # The type, not the message: an exception's text may quote what was sent.
    assert span.status.description == "ReadError"
    assert attrs(span)["http.response.status_code"] == 200
    assert attrs(span)["error.type"] == "ReadError"
    assert [(event.name, dict(event.attributes or {})) for event in span.events] == [
        ("exception", {"exception.type": f"{FLAVOUR}.ReadError"})
    ]
    [point] = telemetry.durations()
    assert point.attributes["error.type"] == "ReadError"
    assert point.attributes["http.response.status_code"] == 200


async def test_cancelled_attempt_is_not_an_error(telemetry: Telemetry) -> None:
    started = anyio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async with (
        httpx.AsyncClient(transport=telemetry.tracing(httpx.MockTransport(hang))) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.get, URL)
        await started.wait()
        tg.cancel_scope.cancel()
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(span)
    # What was being sent is still on the span.
    assert attrs(span)["http.request.method"] == "GET"
    assert attrs(span)["url.full"] == URL
    assert span.events == ()
    assert telemetry.durations() == []


# --- attributes --------------------------------------------------------------


async def test_unknown_method_default_ports_and_http11(
    telemetry: Telemetry, servers: ServerThread
) -> None:
    script = Script([200])
    async with httpx.AsyncClient(transport=telemetry.tracing(script.transport())) as client:
        await client.request("PURGE", "https://cdn.example.com/a")
        await client.get("http://cdn.example.com/b")
    purge, get = telemetry.spans()
    assert purge.name == "HTTP"
    assert attrs(purge)["http.request.method"] == "_OTHER"
    assert attrs(purge)["http.request.method_original"] == "PURGE"
    assert attrs(purge)["server.port"] == 443
    assert attrs(get)["server.port"] == 80
    assert "http.request.method_original" not in attrs(get)
    # A MockTransport response says nothing of the protocol or the peer.
    assert "network.protocol.version" not in attrs(get)
    assert "network.peer.address" not in attrs(get)
    assert {p.attributes["http.request.method"] for p in telemetry.durations()} == {
        "_OTHER",
        "GET",
    }

    transport = telemetry.tracing(httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"{servers.http_url}/status/204")
    plain = telemetry.spans()[-1]
    assert attrs(plain)["network.protocol.version"] == "1.1"
    assert attrs(plain)["network.peer.address"] == "127.0.0.1"
    assert attrs(plain)["server.address"] == "127.0.0.1"


class FakeNetworkStream:
    """Stands in for httpcore's network stream in ``response.extensions``."""

    def __init__(self, server_addr: object) -> None:
        self.server_addr = server_addr

    def get_extra_info(self, info: str) -> object:
        return self.server_addr if info == "server_addr" else None


async def test_protocol_and_peer_come_from_the_response_extensions(
    telemetry: Telemetry,
) -> None:
    def reply(server_addr: object, version: bytes) -> httpx.Response:
        extensions = {"http_version": version, "network_stream": FakeNetworkStream(server_addr)}
        return httpx.Response(200, extensions=extensions)

    script = Script(
        [
            lambda r: reply(("2001:db8::1", 8443), b"HTTP/2"),
            lambda r: reply("/run/app.sock", b"HTTP/1.0"),
            lambda r: reply(None, b"HTTP/0.9"),
        ]
    )
    async with httpx.AsyncClient(transport=telemetry.tracing(script.transport())) as client:
        for _ in range(3):
            await client.get(URL)
    tcp, unix, old = (attrs(span) for span in telemetry.spans())
    assert (tcp["network.peer.address"], tcp["network.peer.port"]) == ("2001:db8::1", 8443)
    assert tcp["network.protocol.version"] == "2"
    assert "network.peer.address" not in unix
    assert unix["network.protocol.version"] == "1.0"
    assert old["network.protocol.version"] == "0.9"


async def test_scheme_without_a_default_port_has_no_server_port(telemetry: Telemetry) -> None:
    script = Script([503, 200])
    transport = telemetry.retrying(telemetry.tracing(script.transport()))
    response = await transport.handle_async_request(httpx.Request("GET", "gopher://old.example/"))
    assert response.status_code == 200
    assert all("server.port" not in attrs(span) for span in telemetry.spans())
    assert all("server.port" not in point.attributes for point in telemetry.durations())
    [retries] = telemetry.points("http.client.request.retries")
    assert "server.port" not in retries.attributes


async def test_body_that_fails_to_close_ends_its_span_with_the_error(
    telemetry: Telemetry,
) -> None:
    class BrokenClose(SlowBody):
        async def aclose(self) -> None:
            raise httpx.ReadError("reset while closing")

    script = Script([lambda request: httpx.Response(200, stream=BrokenClose([b"x"]))])
    async with httpx.AsyncClient(transport=telemetry.tracing(script.transport())) as client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        with pytest.raises(httpx.ReadError):
            await response.aclose()
    [span] = telemetry.spans()
    assert attrs(span)["error.type"] == "ReadError"
    assert span.status.status_code is StatusCode.ERROR


def test_a_header_changed_by_the_caller_is_not_taken_back() -> None:
    from .flavour._tracing import _Attempts

    attempts = _Attempts()
    headers = httpx.Headers()
    attempts.inject(headers, Context(), lambda carrier, context: carrier.update(a="1", b="2"))
    headers["b"] = "changed"
    attempts.next(headers)
    assert attempts.count == 2
    assert dict(headers) == {"b": "changed"}


async def test_request_id_is_recorded_unless_sensitive(telemetry: Telemetry) -> None:
    script = Script([200])
    for sensitive in (False, True):
        transport = RequestIdTransport(
            telemetry.tracing(script.transport()), header="X-Correlation-ID", sensitive=sensitive
        )
        async with httpx.AsyncClient(transport=transport) as client:
            with request_id(f"id-{sensitive}"):
                await client.get(URL)
    recorded, hidden = telemetry.spans()
    assert attrs(recorded)["http.request.header.x-correlation-id"] == ("id-False",)
    assert "id-True" not in repr(hidden.attributes)
    assert [r.headers["X-Correlation-ID"] for r in script.requests] == ["id-False", "id-True"]


async def test_redirect_hop_counts_as_a_resend(telemetry: Telemetry) -> None:
    script = Script([(302, {"Location": "/moved"}), 200])
    async with httpx.AsyncClient(
        transport=telemetry.tracing(script.transport()), follow_redirects=True
    ) as client:
        await client.get(URL)
    first, second = telemetry.spans()
    # The semantic conventions count redirects as resends.
    assert "http.request.resend_count" not in attrs(first)
    assert attrs(second)["http.request.resend_count"] == 1
    assert attrs(second)["url.full"] == "https://api.example.com/moved"


# --- propagation -------------------------------------------------------------


class FirstAttemptOnly(TextMapPropagator):
    """Injects a header on the first call only, like a sampler that changed its mind."""

    def __init__(self) -> None:
        self.calls = 0

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        self.calls += 1
        if self.calls == 1:
            setter.set(carrier, "x-trace", "first")

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] | None = None,
    ) -> Context:
        raise NotImplementedError  # pragma: no cover

    @property
    def fields(self) -> set[str]:
        return {"x-trace"}


async def test_each_attempt_carries_its_own_headers_and_never_a_stale_one(
    telemetry: Telemetry,
) -> None:
    sent = Snapshots([503, 503, 200])
    transport = telemetry.retrying(telemetry.tracing(sent.transport()))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    parents = [headers.get_list("traceparent") for headers in sent.headers]
    assert [len(values) for values in parents] == [1, 1, 1]
    assert [values[0].split("-")[2] for values in parents] == [
        format(span.context.span_id, "016x") for span in telemetry.spans()
    ]
    assert len({values[0] for values in parents}) == 3

    sent = Snapshots([503, 200])
    transport = telemetry.retrying(
        telemetry.tracing(sent.transport(), propagator=FirstAttemptOnly())
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL, headers={"X-Keep": "mine"})
    assert [headers.get("x-trace") for headers in sent.headers] == ["first", None]
    assert [headers.get("x-keep") for headers in sent.headers] == ["mine", "mine"]


async def test_without_the_sdk_nothing_is_recorded_and_the_parent_is_propagated() -> None:
    sent = Snapshots([503, 200, 200])
    transport = RetryTransport(
        TracingTransport(
            sent.transport(),
            tracer_provider=NoOpTracerProvider(),
            meter_provider=NoOpMeterProvider(),
        ),
        FAST,
        sleep=FakeSleep(),
        meter_provider=NoOpMeterProvider(),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL)
        assert response.status_code == 200
        assert all("traceparent" not in headers for headers in sent.headers)

        # A remote parent (extracted from an inbound request) still goes on.
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        inbound = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        token = otel_context.attach(TraceContextTextMapPropagator().extract(inbound))
        try:
            await client.get(URL)
        finally:
            otel_context.detach(token)
    assert sent.headers[-1]["traceparent"] == inbound["traceparent"]

    failing = TracingTransport(
        Script([httpx.ConnectError("refused")]).transport(),
        tracer_provider=NoOpTracerProvider(),
    )
    with pytest.raises(httpx.ConnectError):
        await failing.handle_async_request(httpx.Request("GET", URL))


async def test_a_meter_without_a_tracer_still_times_the_whole_body(
    telemetry: Telemetry,
) -> None:
    body = SlowBody([b"a" * 10, b"b" * 10])
    transport = TracingTransport(
        httpx.MockTransport(lambda request: httpx.Response(200, stream=body)),
        tracer_provider=NoOpTracerProvider(),
        meter_provider=telemetry.meter_provider,
    )
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        assert telemetry.durations() == []  # the body is still to come
        assert await response.aread() == b"a" * 10 + b"b" * 10
    [point] = telemetry.durations()
    assert point.count == 1
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "server.address": "api.example.com",
        "server.port": 443,
    }
    assert telemetry.spans() == []


GLOBAL_PROVIDERS_SET_LATER = textwrap.dedent(
    """
    import anyio
    import FLAVOUR as httpx
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from PACKAGE import TracingTransport

    sent = []

    def handler(request):
        sent.append(dict(request.headers))
        return httpx.Response(200, content=b"ok")

    # Built at import time, before the application sets up OpenTelemetry.
    client = httpx.AsyncClient(transport=TracingTransport(httpx.MockTransport(handler)))

    def durations(reader):
        return [
            point.count
            for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "http.client.request.duration"
            for point in metric.data.data_points
        ]

    async def main():
        await client.get("https://api.example.com/before")
        # Metrics first, with no tracer: the durations must still be recorded.
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        response = await client.get("https://api.example.com/metered")
        assert response.content == b"ok"
        assert durations(reader) == [1]
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        await client.get("https://api.example.com/traced")
        [span] = exporter.get_finished_spans()
        assert span.attributes["url.full"] == "https://api.example.com/traced", span.attributes
        assert durations(reader) == [2]
        assert ["traceparent" in headers for headers in sent] == [False, False, True], sent

    anyio.run(main)
    print("ok")
    """
)


def run_script(script: str) -> None:
    """Run ``script`` in a fresh interpreter (warnings are errors); it prints "ok".

    ``FLAVOUR`` and ``PACKAGE`` in it name the flavour under test and its package.
    """
    script = script.replace("PACKAGE", PACKAGE).replace("FLAVOUR", FLAVOUR)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_global_providers_set_after_the_transport_was_built_are_used() -> None:
    # Without an SDK an attempt skips all telemetry work; it must notice the
    # providers the application sets later. A subprocess: globals are set once.
    run_script(GLOBAL_PROVIDERS_SET_LATER)


# --- the OpenTelemetry httpx instrumentation ----------------------------------


@pytest.mark.httpx_only
async def test_contrib_instrumentation_is_suppressed_for_traced_attempts(
    telemetry: Telemetry, servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.httpx")
    instrumentor = instrumentation.HTTPXClientInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        url = f"{servers.http_url}{unique_path}"
        app.script(unique_path, [Reply(503), Reply(200)])
        # Control: the instrumentation is live for a bare transport.
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as client:
            await client.get(f"{servers.http_url}/status/204")
        contrib = [
            s for s in telemetry.exporter.get_finished_spans() if s not in telemetry.spans()
        ]
        assert len(contrib) == 1

        transport = telemetry.retrying(telemetry.tracing(httpx.AsyncHTTPTransport()))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(url)
        assert response.status_code == 200
    finally:
        instrumentor.uninstrument()
    all_spans = telemetry.exporter.get_finished_spans()
    assert len(all_spans) == 1 + 2
    assert [attrs(s).get("http.request.resend_count") for s in telemetry.spans()] == [None, 1]


async def test_stacked_tracing_layers_trace_each_attempt_once(telemetry: Telemetry) -> None:
    script = Script([200])
    transport = telemetry.tracing(telemetry.tracing(script.transport()))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    [span] = telemetry.spans()
    assert sum(point.count for point in telemetry.durations()) == 1
    # The inner layer neither counts a re-send nor takes the outer's header back.
    assert "http.request.resend_count" not in attrs(span)
    [sent] = script.requests
    assert sent.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


async def test_suppressed_context_is_not_traced(telemetry: Telemetry) -> None:
    utils = pytest.importorskip("opentelemetry.instrumentation.utils")
    script = Script([200])
    async with httpx.AsyncClient(transport=telemetry.tracing(script.transport())) as client:
        with utils.suppress_instrumentation():
            await client.get(URL)
        with utils.suppress_http_instrumentation():
            await client.get(URL)
    assert telemetry.spans() == []
    assert telemetry.durations() == []
    assert all("traceparent" not in r.headers for r in script.requests)


# --- construction and imports ------------------------------------------------


def test_sensitive_query_parameters_are_configurable() -> None:
    with pytest.raises(TypeError, match="not a str"):
        TracingTransport(
            httpx.MockTransport(lambda r: httpx.Response(200)), sensitive_query_parameters="sig"
        )


async def test_custom_sensitive_keys_replace_the_defaults(telemetry: Telemetry) -> None:
    script = Script([200])
    transport = telemetry.tracing(script.transport(), sensitive_query_parameters={"session"})
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"{URL}?session=abc&sig=visible&X%2DSession=x")
    [span] = telemetry.spans()
    assert attrs(span)["url.full"] == f"{URL}?session=REDACTED&sig=visible&X%2DSession=x"


NO_OTEL = textwrap.dedent(
    """
    import sys
    for name in [m for m in sys.modules if m.startswith("opentelemetry")]:
        del sys.modules[name]
    for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.metrics",
                 "opentelemetry.context", "opentelemetry.propagate"):
        sys.modules[name] = None

    import anyio
    import FLAVOUR as httpx
    import PACKAGE as httpx_resilience
    from PACKAGE import RequestIdTransport, RetryPolicy, RetryTransport, TracingTransport

    calls = []

    def handler(request):
        calls.append(request.headers["X-Request-ID"])
        return httpx.Response(503 if len(calls) == 1 else 200)

    async def no_sleep(seconds):
        pass

    async def main():
        transport = RequestIdTransport(
            RetryTransport(httpx.MockTransport(handler), sleep=no_sleep)
        )
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("https://api.example.com/")
        assert response.status_code == 200, response
        assert len(calls) == 2 and calls[0] == calls[1], calls

    anyio.run(main)
    try:
        TracingTransport(httpx.MockTransport(handler))
    except ImportError as exc:
        assert "pip install 'httpx-resilience[otel]'" in str(exc), exc
    else:
        raise AssertionError("TracingTransport needs OpenTelemetry")
    assert not any(m.startswith("opentelemetry") and sys.modules[m] is not None
                   for m in sys.modules), "opentelemetry got imported"
    print("ok")
    """
)


def test_package_works_without_opentelemetry() -> None:
    run_script(NO_OTEL)


# --- hostile servers and bad input (issue 12) ---------------------------------


class ResetAfterHeaders:
    """Answers with the headers of a 100-byte body, then resets the connection (RST).

    The reset waits until the client has the headers (``client_has_headers``,
    set by the test's trace hook), and the hook waits for the reset: the
    order is certain, whichever event loop runs.
    """

    def __init__(self) -> None:
        self.client_has_headers = anyio.Event()
        self.reset = anyio.Event()

    async def __call__(self, conn: RawConnection) -> None:
        if conn.alpn == "h2":
            [stream_id] = await conn.h2_requests()
            conn.h2.send_headers(stream_id, [(b":status", b"200"), (b"content-length", b"100")])
            await conn.h2_flush()
        else:
            await conn.read_until(b"\r\n\r\n")
            await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        await self.client_has_headers.wait()
        sock = conn.stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await anyio.aclose_forcefully(conn.stream)
        self.reset.set()

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        """The caller's trace hook: the tracing layer looks at the socket after the reset."""
        if name.endswith("receive_response_headers.complete"):
            self.client_has_headers.set()
            await self.reset.wait()
            await anyio.sleep(0.05)  # for the RST to reach the client's socket


async def answer(conn: RawConnection) -> None:
    """A 200 with a body, on HTTP/1.1 or HTTP/2, for every request until the client closes."""
    if conn.alpn == "h2":
        while True:
            events = await conn.h2_events()
            if not events:
                return
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    await conn.h2_respond(event.stream_id, body=b"ok")
    while True:
        await conn.read_until(b"\r\n\r\n")
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


@pytest.mark.parametrize("alpn", ["h2", "http/1.1"])
async def test_reset_right_after_the_headers_ends_every_span_and_frees_the_pool(
    telemetry: Telemetry, alpn: str
) -> None:
    # Under trio the peer address is read from the socket itself, and a reset
    # socket answers OSError(ENOTCONN): it used to escape the tracing layer,
    # leaving the span open and the connection in use, until the pool ran dry.
    resets = 6
    scenes = [ResetAfterHeaders() for _ in range(resets)]

    async def handler(conn: RawConnection) -> None:
        if server.connections > resets:
            await answer(conn)
        else:
            await scenes[server.connections - 1](conn)

    async with RawServer(handler, tls=True, alpn=[alpn]) as server:
        base = HTTPTransport(verify=server.ssl_context, limits=httpx.Limits(max_connections=5))
        transport = telemetry.tracing(base)
        async with httpx.AsyncClient(transport=transport, timeout=2) as client:
            for scene in scenes:
                with pytest.raises(httpx.TransportError):
                    await client.get(server.url, extensions={"trace": scene.trace})
            spans = telemetry.spans()
            assert len(spans) == resets  # every span ended
            # Each got its 200 before the reset (httpcore2 may meet a reset
            # connection before the headers: then no status).
            assert {attrs(span).get("http.response.status_code") for span in spans} <= {200, None}
            assert all(span.status.status_code is StatusCode.ERROR for span in spans)
            assert [c for c in base.connections if not (c.is_idle() or c.is_closed())] == []
            # Later requests get connections: five at once, more than were left before.
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(client.get, server.url)
    assert len(telemetry.spans()) == resets + 5


class PeerlessStream:
    """A network stream whose socket is gone: asked for anything, it raises."""

    def get_extra_info(self, info: str) -> object:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")


class BrokenSpan:
    """Stands in for an SDK span whose every method fails, counting its ends."""

    def __init__(self) -> None:
        self.ends = 0

    def is_recording(self) -> bool:
        return True

    def end(self) -> None:
        self.ends += 1
        raise RuntimeError("exporter bug")

    def __getattr__(self, name: str) -> Any:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{name} bug")

        return broken


class BrokenTracer:
    def __init__(self) -> None:
        self.spans: list[BrokenSpan] = []

    def start_span(self, *args: Any, **kwargs: Any) -> BrokenSpan:
        self.spans.append(BrokenSpan())
        return self.spans[-1]


class BrokenTracerProvider:
    def __init__(self) -> None:
        self.tracer = BrokenTracer()

    def get_tracer(self, *args: Any, **kwargs: Any) -> BrokenTracer:
        return self.tracer


async def test_a_peer_address_that_cannot_be_read_is_left_out(telemetry: Telemetry) -> None:
    body = SlowBody([b"ok"])
    extensions = {"http_version": b"HTTP/1.1", "network_stream": PeerlessStream()}
    script = Script([lambda request: httpx.Response(200, stream=body, extensions=extensions)])
    async with httpx.AsyncClient(transport=telemetry.tracing(script.transport())) as client:
        response = await client.get(URL)
    assert response.content == b"ok"
    [span] = telemetry.spans()
    assert "network.peer.address" not in attrs(span)
    assert attrs(span)["network.protocol.version"] == "1.1"


@pytest.mark.parametrize("outcome", ["response", "error"])
async def test_telemetry_that_fails_never_fails_the_request_and_ends_its_span_once(
    outcome: str,
) -> None:
    provider = BrokenTracerProvider()

    def fail_propagation(carrier: Any, context: Any = None, setter: Any = None) -> None:
        raise RuntimeError("propagator bug")

    class BrokenPropagator:
        inject = staticmethod(fail_propagation)

    for propagator in (None, BrokenPropagator()):
        body = SlowBody([b"a", b"b"])
        if outcome == "response":
            script = Script([lambda request, body=body: httpx.Response(200, stream=body)])
        else:
            script = Script([httpx.ConnectError("refused")])
        transport = TracingTransport(
            script.transport(),
            tracer_provider=provider,  # type: ignore[arg-type]
            meter_provider=NoOpMeterProvider(),
            propagator=propagator,  # type: ignore[arg-type]
        )
        async with httpx.AsyncClient(transport=transport) as client:
            if outcome == "response":
                response = await client.get(URL)
                assert response.content == b"ab"
                assert body.closed
            else:
                with pytest.raises(httpx.ConnectError):
                    await client.get(URL)
        assert len(script.requests) == 1
    assert [span.ends for span in provider.tracer.spans] == [1, 1]


async def test_a_tracer_that_cannot_start_a_span_never_fails_the_request() -> None:
    class Unstartable(BrokenTracer):
        def start_span(self, *args: Any, **kwargs: Any) -> BrokenSpan:
            raise RuntimeError("sampler bug")

    provider = BrokenTracerProvider()
    provider.tracer = Unstartable()
    script = Script([200])
    transport = TracingTransport(
        script.transport(),
        tracer_provider=provider,  # type: ignore[arg-type]
        meter_provider=NoOpMeterProvider(),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 200
    assert len(script.requests) == 1


async def test_a_refused_header_value_never_reaches_the_span(telemetry: Telemetry) -> None:
    # h11 refuses a header value ending in a newline (a pasted token, say) and
    # quotes it in its message; the span carries the error's type, not its text.
    token = "tok-3f9a1c"
    transport = telemetry.tracing(HTTPTransport(http2=False))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.LocalProtocolError) as raised:
            await client.get("http://127.0.0.1:9/", headers={"Authorization": f"Bearer {token}\n"})
    assert token not in str(raised.value)
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "LocalProtocolError"
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("exception", {"exception.type": f"{FLAVOUR}.LocalProtocolError"})
    ]
    assert token not in repr((span.attributes, span.status, [e.attributes for e in span.events]))


async def test_exception_text_never_reaches_the_span(telemetry: Telemetry) -> None:
    # What h11 says of a header value with a newline: the value, quoted.
    error = httpx.LocalProtocolError("Illegal header value b'Bearer tok-3f9a1c\\n'")
    transport = telemetry.retrying(telemetry.tracing(Script([error]).transport()))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(URL, headers={"Authorization": "Bearer tok-3f9a1c"})
    [span] = telemetry.spans()
    recorded = repr(
        (span.attributes, span.status.description, [e.attributes for e in span.events])
    )
    assert "tok-3f9a1c" not in recorded
    assert attrs(span)["error.type"] == "LocalProtocolError"


async def test_retry_and_breaker_logs_carry_no_exception_text_nor_header_values(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    error = httpx.ReadError("reset while sending 'Bearer tok-3f9a1c'")
    script = Script([error, error, 503])
    policy = CircuitBreakerPolicy(min_calls=2, failure_ratio=0.5)
    breaker = CircuitBreakerTransport(telemetry.tracing(script.transport()), policy)
    transport = telemetry.retrying(breaker)
    caplog.set_level(logging.DEBUG, logger="httpx_resilience")
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadError):
            await client.get(URL, headers={"Authorization": "Bearer tok-3f9a1c"})
    assert [r.message for r in caplog.records if "retrying" in r.message]
    assert [r.message for r in caplog.records if "circuit breaker opened" in r.message]
    logged = repr([(r.getMessage(), r.__dict__) for r in caplog.records])
    assert "tok-3f9a1c" not in logged
