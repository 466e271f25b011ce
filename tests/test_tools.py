"""The tools users test and observe httpx code with, through the default stack.

pytest-httpx, vcrpy and OpenTelemetry's httpx instrumentation patch httpx's
own transport classes. ``resilient_transport()``'s base is one of them, so
each tool sees every attempt, and our layers (retries, request IDs) run on
top of the mocked, replayed or instrumented responses. respx's default mode
patches httpcore's pools, which ours are.

pytest-httpx, respx and the instrumentation know httpx only; vcrpy 9.4 also
patches httpx2's transports (``vcr/patch.py``), so its tests run for both
flavours.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from .fakes import FakeSleep
from .flavour import httpx, resilient_transport
from .servers import Reply, ScriptedApp, ServerThread

try:
    import vcr
except ImportError:  # vcrpy 9.4 needs Python 3.11 or newer; the test extra skips it on 3.10
    vcr = None

pytestmark = pytest.mark.anyio

needs_vcr = pytest.mark.skipif(vcr is None, reason="vcrpy 9.4 needs Python 3.11 or newer")

URL = "https://api.example.com/things"


# The mocks answer before any name is looked up; should one ever fail to, the
# request fails here instead of asking DNS about a public name.
async def offline(host: str) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, f"{host}: the tests look no name up")


def sync_offline(host: str) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, f"{host}: the tests look no name up")


class Instrumented:
    """OpenTelemetry's httpx instrumentation, on for one test, its spans in memory."""

    def __init__(self) -> None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.instrumentor = HTTPXClientInstrumentor()
        self.instrumentor.instrument(tracer_provider=provider)

    def spans(self, scope: str) -> list[Any]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == scope
        ]


@pytest.fixture
def instrumented() -> Any:
    instrumented = Instrumented()
    yield instrumented
    instrumented.instrumentor.uninstrument()


def status_of(span: Any) -> Any:
    """The response status a span recorded, under the old or the stable attribute name."""
    attributes = span.attributes
    return attributes.get("http.response.status_code", attributes.get("http.status_code"))


def span_id_sent(traceparent: str) -> int:
    return int(traceparent.split("-")[2], 16)


# unasync: begin
@pytest.mark.httpx_only
async def test_pytest_httpx_mocks_the_default_stack(httpx_mock: Any) -> None:
    httpx_mock.add_response(status_code=503)
    httpx_mock.add_response(status_code=200, json={"ok": True})
    sleep = FakeSleep()
    transport = resilient_transport(
        sleep=sleep, sync_sleep=sleep, resolver=offline, sync_resolver=sync_offline
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert response.extensions["retry"].attempts == 2
    requests = httpx_mock.get_requests()
    assert len(requests) == 2
    assert {r.headers["x-request-id"] for r in requests} == {response.extensions["request_id"]}
    assert len(sleep.calls) == 1


@pytest.mark.httpx_only
async def test_pytest_httpx_meets_the_retry_rules(httpx_mock: Any) -> None:
    # A POST without an idempotency key that met a 503 may have been acted on:
    # sent once, as against a real server.
    httpx_mock.add_response(status_code=503)
    sleep = FakeSleep()
    transport = resilient_transport(
        sleep=sleep, sync_sleep=sleep, resolver=offline, sync_resolver=sync_offline
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post(URL, json={"amount": 1})
    assert response.status_code == 503
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


@pytest.mark.httpx_only
async def test_respx_default_mode_mocks_the_default_stack() -> None:
    respx = pytest.importorskip("respx")
    sleep = FakeSleep()
    with respx.mock:
        route = respx.get(URL).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
        transport = resilient_transport(
            sleep=sleep, sync_sleep=sleep, resolver=offline, sync_resolver=sync_offline
        )
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(URL)
    assert response.status_code == 200
    assert route.call_count == 2
    assert response.extensions["retry"].attempts == 2
    # respx answers inside our pool: even the timings are there.
    assert "timings" in response.extensions


@pytest.mark.httpx_only
async def test_respx_using_httpx_replaces_the_whole_stack() -> None:
    # respx(using="httpx") swaps the client's transport for its own: no layer
    # runs, so the 503 comes back unretried. docs/testing.md says to avoid it.
    respx = pytest.importorskip("respx")
    with respx.mock(using="httpx") as mock:
        route = mock.get(URL).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
        transport = resilient_transport(resolver=offline, sync_resolver=sync_offline)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(URL)
    assert response.status_code == 503
    assert route.call_count == 1
    assert "retry" not in response.extensions


@needs_vcr
async def test_vcrpy_records_and_replays_through_the_default_stack(
    servers: ServerThread, app: ScriptedApp, unique_path: str, tmp_path: Path
) -> None:
    cassette = str(tmp_path / "cassette.yaml")
    url = f"{servers.tls_url}{unique_path}"
    sleep = FakeSleep()
    transport = resilient_transport(verify=servers.ssl_context, sleep=sleep, sync_sleep=sleep)

    app.script(unique_path, [Reply(503), Reply(200, body=b"recorded")])
    with vcr.use_cassette(cassette, record_mode="once") as recording:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(url)
    assert (response.status_code, response.content) == (200, b"recorded")
    assert len(recording) == 2
    assert len(app.received(unique_path)) == 2

    # The server now answers otherwise; the replay must not ask it.
    app.script(unique_path, [Reply(500, body=b"live")])
    with vcr.use_cassette(cassette, record_mode="none") as replay:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(url)
    assert (response.status_code, response.content) == (200, b"recorded")
    assert response.extensions["retry"].attempts == 2
    assert replay.play_count == 2
    assert replay.all_played
    assert len(app.received(unique_path)) == 2
    assert len(sleep.calls) == 2


@needs_vcr
async def test_vcrpy_replays_with_the_server_gone(
    servers: ServerThread, app: ScriptedApp, unique_path: str, tmp_path: Path, closed_port: int
) -> None:
    cassette = str(tmp_path / "cassette.yaml")
    sleep = FakeSleep()
    transport = resilient_transport(verify=servers.ssl_context, sleep=sleep, sync_sleep=sleep)
    app.script(unique_path, [Reply(503), Reply(200, body=b"recorded")])
    # Recorded against a port where the server is, replayed against one where
    # nothing listens: the cassette matches on the URL, so the same URL is
    # asked both times, but the replay could never reach a server.
    with vcr.use_cassette(cassette, record_mode="once", match_on=["method", "path"]):
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(f"{servers.tls_url}{unique_path}")
    with vcr.use_cassette(cassette, record_mode="none", match_on=["method", "path"]) as replay:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://127.0.0.1:{closed_port}{unique_path}")
    assert (response.status_code, response.content) == (200, b"recorded")
    assert response.extensions["retry"].attempts == 2
    assert replay.all_played


@pytest.mark.httpx_only
async def test_opentelemetry_instrumentation_sees_each_attempt(
    instrumented: Instrumented, servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(200)])
    sleep = FakeSleep()
    transport = resilient_transport(
        verify=servers.ssl_context, tracing=False, sleep=sleep, sync_sleep=sleep
    )
    async with httpx.AsyncClient(transport=transport, base_url=servers.tls_url) as client:
        response = await client.get(unique_path)
    assert response.status_code == 200
    spans = instrumented.spans("opentelemetry.instrumentation.httpx")
    assert [status_of(s) for s in spans] == [503, 200]
    assert {s.kind for s in spans} == {SpanKind.CLIENT}
    # Each attempt carried the traceparent of its own span, and one request ID.
    received = app.received(unique_path)
    assert [span_id_sent(r.headers["traceparent"]) for r in received] == [
        s.context.span_id for s in spans
    ]
    assert len({r.headers["x-request-id"] for r in received}) == 1


@pytest.mark.httpx_only
async def test_opentelemetry_instrumentation_gives_way_to_our_tracing(
    instrumented: Instrumented, servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    # With our tracing on, each attempt gets one span, ours, not two.
    app.script(unique_path, [Reply(503), Reply(200)])
    sleep = FakeSleep()
    tracer_provider = TracerProvider()
    ours = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ours))
    transport = resilient_transport(
        verify=servers.ssl_context, tracer_provider=tracer_provider, sleep=sleep, sync_sleep=sleep
    )
    async with httpx.AsyncClient(transport=transport, base_url=servers.tls_url) as client:
        response = await client.get(unique_path)
    assert response.status_code == 200
    assert instrumented.spans("opentelemetry.instrumentation.httpx") == []
    spans = ours.get_finished_spans()
    assert [s.attributes.get("http.request.resend_count") for s in spans] == [None, 1]
    received = app.received(unique_path)
    assert [span_id_sent(r.headers["traceparent"]) for r in received] == [
        s.context.span_id for s in spans
    ]


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
@pytest.mark.httpx_only
def test_sync_pytest_httpx_mocks_the_default_stack(httpx_mock: Any) -> None:
    httpx_mock.add_response(status_code=503)
    httpx_mock.add_response(status_code=200, json={"ok": True})
    sleep = FakeSleep()
    transport = resilient_transport(
        sleep=sleep, sync_sleep=sleep, resolver=offline, sync_resolver=sync_offline
    )
    with httpx.Client(transport=transport) as client:
        response = client.get(URL)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert response.extensions["retry"].attempts == 2
    requests = httpx_mock.get_requests()
    assert len(requests) == 2
    assert {r.headers["x-request-id"] for r in requests} == {response.extensions["request_id"]}
    assert len(sleep.calls) == 1


@pytest.mark.httpx_only
def test_sync_pytest_httpx_meets_the_retry_rules(httpx_mock: Any) -> None:
    # A POST without an idempotency key that met a 503 may have been acted on:
    # sent once, as against a real server.
    httpx_mock.add_response(status_code=503)
    sleep = FakeSleep()
    transport = resilient_transport(
        sleep=sleep, sync_sleep=sleep, resolver=offline, sync_resolver=sync_offline
    )
    with httpx.Client(transport=transport) as client:
        response = client.post(URL, json={"amount": 1})
    assert response.status_code == 503
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


@pytest.mark.httpx_only
def test_sync_respx_default_mode_mocks_the_default_stack() -> None:
    respx = pytest.importorskip("respx")
    sleep = FakeSleep()
    with respx.mock:
        route = respx.get(URL).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
        transport = resilient_transport(
            sleep=sleep, sync_sleep=sleep, resolver=offline, sync_resolver=sync_offline
        )
        with httpx.Client(transport=transport) as client:
            response = client.get(URL)
    assert response.status_code == 200
    assert route.call_count == 2
    assert response.extensions["retry"].attempts == 2
    # respx answers inside our pool: even the timings are there.
    assert "timings" in response.extensions


@pytest.mark.httpx_only
def test_sync_respx_using_httpx_replaces_the_whole_stack() -> None:
    # respx(using="httpx") swaps the client's transport for its own: no layer
    # runs, so the 503 comes back unretried. docs/testing.md says to avoid it.
    respx = pytest.importorskip("respx")
    with respx.mock(using="httpx") as mock:
        route = mock.get(URL).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
        transport = resilient_transport(resolver=offline, sync_resolver=sync_offline)
        with httpx.Client(transport=transport) as client:
            response = client.get(URL)
    assert response.status_code == 503
    assert route.call_count == 1
    assert "retry" not in response.extensions


@needs_vcr
def test_sync_vcrpy_records_and_replays_through_the_default_stack(
    servers: ServerThread, app: ScriptedApp, unique_path: str, tmp_path: Path
) -> None:
    cassette = str(tmp_path / "cassette.yaml")
    url = f"{servers.tls_url}{unique_path}"
    sleep = FakeSleep()
    transport = resilient_transport(verify=servers.ssl_context, sleep=sleep, sync_sleep=sleep)

    app.script(unique_path, [Reply(503), Reply(200, body=b"recorded")])
    with vcr.use_cassette(cassette, record_mode="once") as recording:
        with httpx.Client(transport=transport) as client:
            response = client.get(url)
    assert (response.status_code, response.content) == (200, b"recorded")
    assert len(recording) == 2
    assert len(app.received(unique_path)) == 2

    # The server now answers otherwise; the replay must not ask it.
    app.script(unique_path, [Reply(500, body=b"live")])
    with vcr.use_cassette(cassette, record_mode="none") as replay:
        with httpx.Client(transport=transport) as client:
            response = client.get(url)
    assert (response.status_code, response.content) == (200, b"recorded")
    assert response.extensions["retry"].attempts == 2
    assert replay.play_count == 2
    assert replay.all_played
    assert len(app.received(unique_path)) == 2
    assert len(sleep.calls) == 2


@needs_vcr
def test_sync_vcrpy_replays_with_the_server_gone(
    servers: ServerThread, app: ScriptedApp, unique_path: str, tmp_path: Path, closed_port: int
) -> None:
    cassette = str(tmp_path / "cassette.yaml")
    sleep = FakeSleep()
    transport = resilient_transport(verify=servers.ssl_context, sleep=sleep, sync_sleep=sleep)
    app.script(unique_path, [Reply(503), Reply(200, body=b"recorded")])
    # Recorded against a port where the server is, replayed against one where
    # nothing listens: the cassette matches on the URL, so the same URL is
    # asked both times, but the replay could never reach a server.
    with vcr.use_cassette(cassette, record_mode="once", match_on=["method", "path"]):
        with httpx.Client(transport=transport) as client:
            client.get(f"{servers.tls_url}{unique_path}")
    with vcr.use_cassette(cassette, record_mode="none", match_on=["method", "path"]) as replay:
        with httpx.Client(transport=transport) as client:
            response = client.get(f"https://127.0.0.1:{closed_port}{unique_path}")
    assert (response.status_code, response.content) == (200, b"recorded")
    assert response.extensions["retry"].attempts == 2
    assert replay.all_played


@pytest.mark.httpx_only
def test_sync_opentelemetry_instrumentation_sees_each_attempt(
    instrumented: Instrumented, servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(200)])
    sleep = FakeSleep()
    transport = resilient_transport(
        verify=servers.ssl_context, tracing=False, sleep=sleep, sync_sleep=sleep
    )
    with httpx.Client(transport=transport, base_url=servers.tls_url) as client:
        response = client.get(unique_path)
    assert response.status_code == 200
    spans = instrumented.spans("opentelemetry.instrumentation.httpx")
    assert [status_of(s) for s in spans] == [503, 200]
    assert {s.kind for s in spans} == {SpanKind.CLIENT}
    # Each attempt carried the traceparent of its own span, and one request ID.
    received = app.received(unique_path)
    assert [span_id_sent(r.headers["traceparent"]) for r in received] == [
        s.context.span_id for s in spans
    ]
    assert len({r.headers["x-request-id"] for r in received}) == 1


@pytest.mark.httpx_only
def test_sync_opentelemetry_instrumentation_gives_way_to_our_tracing(
    instrumented: Instrumented, servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    # With our tracing on, each attempt gets one span, ours, not two.
    app.script(unique_path, [Reply(503), Reply(200)])
    sleep = FakeSleep()
    tracer_provider = TracerProvider()
    ours = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ours))
    transport = resilient_transport(
        verify=servers.ssl_context, tracer_provider=tracer_provider, sleep=sleep, sync_sleep=sleep
    )
    with httpx.Client(transport=transport, base_url=servers.tls_url) as client:
        response = client.get(unique_path)
    assert response.status_code == 200
    assert instrumented.spans("opentelemetry.instrumentation.httpx") == []
    spans = ours.get_finished_spans()
    assert [s.attributes.get("http.request.resend_count") for s in spans] == [None, 1]
    received = app.received(unique_path)
    assert [span_id_sent(r.headers["traceparent"]) for r in received] == [
        s.context.span_id for s in spans
    ]


# unasync: generated end
