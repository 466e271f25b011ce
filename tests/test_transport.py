"""HTTPTransport: httpx's behaviour, plus timings and connection metrics.

Real servers on 127.0.0.1 (HTTP/1.1 and HTTP/2 over TLS, plain HTTP/1.1),
and a fake network where exact figures matter.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import FrozenInstanceError, asdict
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from .flavour import HTTPTransport, Timings, httpcore, httpx
from .raw_server import RawConnection, RawServer
from .servers import ScriptedApp, ServerThread
from .test_network import FakeBackend, FakeClock, FakeResolver, metric_points

pytestmark = pytest.mark.anyio

SETUP = "httpx_resilience.connection.setup.duration"
OPENED = "httpx_resilience.connection.opened"


async def loopback(host: str) -> list[str]:
    """Every name is 127.0.0.1: the tests never dial anything else."""
    return ["127.0.0.1"]


@pytest.fixture
def metric_reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider, reader
    provider.shutdown()


# --- timings against real servers -------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "http2", "version"),
    [("https", True, "HTTP/2"), ("https", False, "HTTP/1.1"), ("http", True, "HTTP/1.1")],
    ids=["h2-tls", "http1-tls", "http1-plain"],
)
async def test_first_request_times_the_setup_and_the_second_reuses_it(
    servers: ServerThread, scheme: str, http2: bool, version: str
) -> None:
    port = servers.tls_port if scheme == "https" else servers.http_port
    transport = HTTPTransport(verify=servers.ssl_context, http2=http2, resolver=loopback)
    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.get(f"{scheme}://localhost:{port}/echo")
        second = await client.get(f"{scheme}://localhost:{port}/echo")

    assert first.http_version == second.http_version == version
    timings = first.extensions["timings"]
    assert isinstance(timings, Timings)
    assert timings.dns is not None
    assert timings.dns > 0
    assert timings.connect is not None
    assert timings.connect > 0
    if scheme == "https":
        assert timings.tls is not None
        assert timings.tls > 0
    else:
        assert timings.tls is None
    assert not timings.connection_reused
    _assert_phases_add_up(timings)

    again = second.extensions["timings"]
    assert (again.dns, again.connect, again.tls) == (None, None, None)
    assert again.connection_reused
    _assert_phases_add_up(again)


def _assert_phases_add_up(timings: Timings) -> None:
    assert timings.send > 0
    assert timings.wait > 0
    assert timings.queue >= 0
    setup = (timings.dns or 0) + (timings.connect or 0) + (timings.tls or 0)
    parts = setup + timings.queue + timings.send + timings.wait
    assert parts == pytest.approx(timings.total, abs=0.01)


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
async def test_the_servers_think_time_is_the_wait(servers: ServerThread, http2: bool) -> None:
    transport = HTTPTransport(verify=servers.ssl_context, http2=http2)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(servers.tls_url + "/echo")  # the connection, out of the way
        response = await client.get(servers.tls_url + "/delay?seconds=0.2")
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    timings = response.extensions["timings"]
    assert timings.wait >= 0.2
    assert timings.send < 0.1
    _assert_phases_add_up(timings)


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
async def test_a_slow_upload_is_the_send(servers: ServerThread, http2: bool) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await anyio.sleep(0.2)
        yield b"b" * 1000

    transport = HTTPTransport(verify=servers.ssl_context, http2=http2)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(servers.tls_url + "/echo")  # the connection, out of the way
        response = await client.post(servers.tls_url + "/echo", content=body())
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    timings = response.extensions["timings"]
    assert timings.send >= 0.2
    assert timings.wait < 0.1
    _assert_phases_add_up(timings)


async def test_ip_address_has_no_dns_figure(servers: ServerThread) -> None:
    async with httpx.AsyncClient(transport=HTTPTransport()) as client:
        response = await client.get(servers.http_url + "/echo")
    timings = response.extensions["timings"]
    assert timings.dns is None
    assert timings.connect is not None
    assert timings.connect > 0


async def test_slow_resolver_shows_in_timings_and_in_the_dns_metric(
    servers: ServerThread, metric_reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = metric_reader
    resolver = FakeResolver({"localhost": ["127.0.0.1"]}, delay=0.2)
    transport = HTTPTransport(
        verify=servers.ssl_context, resolver=resolver, meter_provider=provider
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(servers.tls_url + "/echo")

    timings = response.extensions["timings"]
    assert timings.dns >= 0.2
    assert timings.total >= 0.2
    [point] = metric_points(reader, "dns.lookup.duration")
    assert point.attributes == {"dns.question.name": "localhost"}
    assert point.count == 1
    assert point.sum >= 0.2


async def test_failing_resolver_is_a_connect_error(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    transport = HTTPTransport(
        resolver=FakeResolver({"nowhere.test": error}), meter_provider=provider
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="Name or service not known"):
            await client.get("https://nowhere.test/")

    [dns] = metric_points(reader, "dns.lookup.duration")
    assert dns.attributes["error.type"] == "EAI_NONAME"
    [setup] = metric_points(reader, SETUP)
    assert setup.attributes == {
        "server.address": "nowhere.test",
        "server.port": 443,
        "url.scheme": "https",
        "error.type": "ConnectError",
    }
    assert metric_points(reader, OPENED) == []


async def test_resolver_past_the_connect_timeout_is_a_connect_timeout() -> None:
    resolver = FakeResolver({"slow.test": ["127.0.0.1"]}, delay=math.inf)
    timeout = httpx.Timeout(5, connect=0.05)
    async with httpx.AsyncClient(transport=HTTPTransport(resolver=resolver)) as client:
        with anyio.fail_after(2), pytest.raises(httpx.ConnectTimeout):
            await client.get("http://slow.test/", timeout=timeout)


async def test_dead_address_first_and_the_server_second_still_connects(
    servers: ServerThread,
) -> None:
    # Nothing listens on 127.0.0.2 at the server's port: refused at once.
    resolver = FakeResolver({"localhost": ["127.0.0.2", "127.0.0.1"]})
    transport = HTTPTransport(verify=servers.ssl_context, resolver=resolver)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(servers.tls_url + "/echo")
        address = response.extensions["network_stream"].get_extra_info("server_addr")

    assert response.status_code == 200
    assert address[0] == "127.0.0.1"


async def test_certificate_is_checked_against_the_host_name_not_the_address(
    servers: ServerThread,
) -> None:
    # The certificate is for "localhost" and 127.0.0.1. Connected by address,
    # a check against the address would pass for any name: it must not.
    transport = HTTPTransport(verify=servers.ssl_context, resolver=loopback)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(servers.tls_url + "/echo")
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.server_hostname == "localhost"  # SNI
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"https://impostor.test:{servers.tls_port}/echo")

    # trio's message is empty; the cause tells.
    [verify_error] = [
        e for e in _chain(caught.value) if isinstance(e, ssl.SSLCertVerificationError)
    ]
    assert "impostor.test" in verify_error.verify_message


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


# --- the DNS cache, end to end -------------------------------------------------------


async def test_fifty_concurrent_requests_look_the_host_up_once(
    servers: ServerThread, metric_reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = metric_reader
    # A slow lookup keeps every request waiting for a connection of its own.
    resolver = FakeResolver({"localhost": ["127.0.0.1"]}, delay=0.1)
    # HTTP/1.1: fifty requests at once need fifty connections, so fifty lookups
    # without the cache.
    transport = HTTPTransport(
        http2=False,
        resolver=resolver,
        dns_cache_ttl=60,
        limits=httpx.Limits(max_connections=50),
        meter_provider=provider,
    )
    url = f"http://localhost:{servers.http_port}/delay?seconds=0.05"
    responses: list[httpx.Response] = []

    async with httpx.AsyncClient(transport=transport) as client:

        async def get() -> None:
            responses.append(await client.get(url))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get)

    assert [r.status_code for r in responses] == [200] * 50
    assert resolver.calls == ["localhost"]
    assert sum(not r.extensions["timings"].connection_reused for r in responses) == 50
    [dns] = metric_points(reader, "dns.lookup.duration")
    assert dns.count == 1
    [opened] = metric_points(reader, OPENED)
    assert opened.value == 50


async def test_cached_answer_expires_after_the_ttl(servers: ServerThread) -> None:
    clock = FakeClock()
    resolver = FakeResolver({"localhost": ["127.0.0.1"]})
    transport = HTTPTransport(resolver=resolver, dns_cache_ttl=10, clock=clock)
    url = f"http://localhost:{servers.http_port}/echo"
    # "Connection: close" makes every request open a connection of its own.
    close = {"Connection": "close"}

    async with httpx.AsyncClient(transport=transport, headers=close) as client:
        await client.get(url)
        clock.advance(9)
        await client.get(url)
        assert resolver.calls == ["localhost"]
        clock.advance(2)
        await client.get(url)
        assert resolver.calls == ["localhost", "localhost"]

    cache = transport.dns_cache
    assert cache is not None
    assert (cache.ttl, cache.max_size) == (10, 256)


async def test_dns_cache_is_off_by_default() -> None:
    assert HTTPTransport().dns_cache is None


# --- HTTP/2 and connection metrics --------------------------------------------------


async def test_client_gets_http2_and_concurrent_requests_share_one_connection(
    servers: ServerThread, metric_reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = metric_reader
    transport = HTTPTransport(verify=servers.ssl_context, meter_provider=provider)
    responses: list[httpx.Response] = []

    async with httpx.AsyncClient(transport=transport) as client:

        async def get() -> None:
            responses.append(await client.get(servers.tls_url + "/delay?seconds=0.05"))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(get)

    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert len({id(r.extensions["network_stream"]) for r in responses}) == 1
    # One request opened it; the others waited for it (their queue time).
    timings = [r.extensions["timings"] for r in responses]
    assert sum(not t.connection_reused for t in timings) == 1
    [opened] = metric_points(reader, OPENED)
    assert opened.value == 1
    assert opened.attributes == {
        "server.address": "localhost",
        "server.port": servers.tls_port,
        "url.scheme": "https",
    }
    [setup] = metric_points(reader, SETUP)
    assert setup.count == 1
    [first] = [t for t in timings if not t.connection_reused]
    assert first.dns is not None
    assert first.tls is not None
    assert setup.sum >= first.dns + first.connect + first.tls


async def test_refused_connection_is_recorded_as_a_failed_setup(
    closed_port: int, metric_reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = metric_reader
    async with httpx.AsyncClient(transport=HTTPTransport(meter_provider=provider)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port}/")

    [setup] = metric_points(reader, SETUP)
    assert setup.attributes["error.type"] == "ConnectError"
    assert metric_points(reader, OPENED) == []


class CountingMeterProvider:
    """A meter provider that counts the instruments asked of it."""

    def __init__(self, inner: MeterProvider) -> None:
        self.inner = inner
        self.created: list[str] = []

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        meter = self.inner.get_meter(*args, **kwargs)
        provider = self

        class Meter:
            def __getattr__(self, name: str) -> Any:
                method = getattr(meter, name)
                if not name.startswith("create_"):
                    return method

                def create(instrument: str, *args: Any, **kwargs: Any) -> Any:
                    provider.created.append(instrument)
                    return method(instrument, *args, **kwargs)

                return create

        return Meter()


async def test_instruments_are_created_once_per_transport(
    servers: ServerThread, metric_reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    counting = CountingMeterProvider(metric_reader[0])
    transport = HTTPTransport(meter_provider=counting)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(servers.http_url + "/echo")
        created = list(counting.created)
        for _ in range(3):
            await client.get(servers.http_url + "/echo")
    assert set(created) == {"dns.lookup.duration", SETUP, OPENED}
    assert counting.created == created  # none more per request


# --- the trace extension ---------------------------------------------------------------


async def test_callers_trace_callback_still_gets_every_event(servers: ServerThread) -> None:
    events: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    extensions = {"trace": trace}
    async with httpx.AsyncClient(transport=HTTPTransport()) as client:
        response = await client.get(servers.http_url + "/echo", extensions=extensions)

    assert "connection.connect_tcp.complete" in events
    assert "http11.receive_response_headers.complete" in events
    # Body events come after the transport has returned: they still arrive.
    assert "http11.receive_response_body.complete" in events
    assert "http11.response_closed.complete" in events
    assert isinstance(response.extensions["timings"], Timings)
    assert response.request.extensions["trace"] is trace


async def test_request_extensions_are_left_as_they_were(servers: ServerThread) -> None:
    request = httpx.Request("GET", servers.http_url + "/echo")
    before = dict(request.extensions)
    async with HTTPTransport() as transport:
        response = await transport.handle_async_request(request)
        await response.aread()
    assert request.extensions == before
    assert "trace" not in request.extensions


# --- parity with httpx.AsyncHTTPTransport ----------------------------------------------

Outcome = tuple[Any, ...]
Case = Callable[[Callable[..., httpx.AsyncBaseTransport], ServerThread, int], Awaitable[Outcome]]


async def _send(
    make: Callable[..., httpx.AsyncBaseTransport],
    method: str,
    url: str,
    *,
    transport_options: dict[str, Any] | None = None,
    **request_options: Any,
) -> Outcome:
    """What the caller sees: the response's status, version and body, or the exception class."""
    transport = make(**(transport_options or {}))
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.request(method, url, **request_options)
    except httpx.HTTPError as exc:
        return ("raised", type(exc))
    body: Any = response.content
    if response.headers.get("content-type") == "application/json":
        body = json.loads(body)
    return (response.status_code, response.http_version, body)


async def _pool_timeout(
    make: Callable[..., httpx.AsyncBaseTransport], servers: ServerThread, closed_port: int
) -> Outcome:
    transport = make(verify=servers.ssl_context, limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport) as client:
        url = servers.http_url + "/echo"
        async with client.stream("GET", url):  # holds the one connection
            try:
                await client.get(url, timeout=httpx.Timeout(5, pool=0.05))
            except httpx.HTTPError as exc:
                return ("raised", type(exc))
    return ("no error",)


PARITY_CASES: dict[str, Case] = {
    "h2-tls-get": lambda make, s, _: _send(
        make, "GET", s.tls_url + "/echo?x=1", transport_options={"verify": s.ssl_context}
    ),
    "http1-tls-post": lambda make, s, _: _send(
        make,
        "POST",
        s.tls_url + "/echo",
        transport_options={"verify": s.ssl_context, "http2": False},
        content=b"payload",
    ),
    "plain-post-json": lambda make, s, _: _send(make, "POST", s.http_url + "/echo", json=[1]),
    "h2c-prior-knowledge": lambda make, s, _: _send(
        make, "GET", s.http_url + "/echo", transport_options={"http1": False}
    ),
    "status-503": lambda make, s, _: _send(
        make, "GET", s.tls_url + "/status/503", transport_options={"verify": s.ssl_context}
    ),
    "local-address": lambda make, s, _: _send(
        make, "GET", s.http_url + "/echo", transport_options={"local_address": "127.0.0.1"}
    ),
    "refused": lambda make, s, port: _send(make, "GET", f"http://127.0.0.1:{port}/"),
    "untrusted-certificate": lambda make, s, _: _send(make, "GET", s.tls_url + "/echo"),
    "read-timeout": lambda make, s, _: _send(
        make,
        "GET",
        s.tls_url + "/delay?seconds=0.3",
        transport_options={"verify": s.ssl_context},
        timeout=httpx.Timeout(5, read=0.05),
    ),
    "unsupported-protocol": lambda make, s, _: _send(make, "GET", "ftp://127.0.0.1/"),
    "missing-unix-socket": lambda make, s, _: _send(
        make,
        "GET",
        "http://localhost/",
        transport_options={"uds": "/nonexistent/httpx-resilience.sock"},
    ),
    "pool-timeout": _pool_timeout,
}


def _ours(**options: Any) -> httpx.AsyncBaseTransport:
    # http2 spelled out: it is the one default that differs from httpx's.
    return HTTPTransport(**{"http2": True, "resolver": loopback, **options})


def _httpx(**options: Any) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(**{"http2": True, **options})


@pytest.mark.parametrize("case", PARITY_CASES)
async def test_same_outcome_as_httpx(servers: ServerThread, closed_port: int, case: str) -> None:
    run = PARITY_CASES[case]
    with anyio.fail_after(10):
        expected = await run(_httpx, servers, closed_port)
        actual = await run(_ours, servers, closed_port)
    assert actual == expected
    if case == "h2-tls-get":
        assert expected[1] == "HTTP/2"  # the case tests what it says
    if case in ("refused", "untrusted-certificate", "missing-unix-socket"):
        assert expected == ("raised", httpx.ConnectError)


@pytest.mark.skipif(importlib.util.find_spec("socksio") is not None, reason="socksio installed")
def test_socks_proxy_needs_socksio_as_in_httpx() -> None:
    with pytest.raises(ImportError) as ours:
        HTTPTransport(proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ImportError) as theirs:
        httpx.AsyncHTTPTransport(proxy="socks5://127.0.0.1:1080")
    # The same words (httpx2 still names httpx's extra; ours names httpx2's).
    assert str(ours.value).replace("httpx2", "httpx") == str(theirs.value).replace(
        "httpx2", "httpx"
    )


def test_unknown_proxy_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown scheme for proxy URL"):
        HTTPTransport(proxy="ftp://127.0.0.1:21")


async def test_http_proxy_connection_goes_through_the_timed_backend(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    # The test server answers the proxy's absolute-form request itself.
    async with httpx.AsyncClient(transport=HTTPTransport(proxy=servers.http_url)) as client:
        response = await client.get(f"http://example.test{unique_path}")

    assert response.status_code == 404
    assert len(app.received(f"http://example.test{unique_path}")) == 1
    timings = response.extensions["timings"]
    assert timings.dns is None  # the proxy is an IP address
    assert timings.connect is not None
    assert not timings.connection_reused


async def test_https_through_a_proxy_times_the_request_not_the_connect(
    servers: ServerThread,
) -> None:
    # A CONNECT proxy that takes 0.2 s to open its tunnel, to the test server.
    async def tunnel(client: SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await client.receive()
            await anyio.sleep(0.2)
            async with await anyio.connect_tcp("127.0.0.1", servers.tls_port) as origin:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")

                async def pipe(
                    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream
                ) -> None:
                    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        async for chunk in source:
                            await sink.send(chunk)
                    tg.cancel_scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(pipe, client, origin)
                    tg.start_soon(pipe, origin, client)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    transport = HTTPTransport(
        verify=servers.ssl_context, http2=False, proxy=f"http://127.0.0.1:{port}"
    )
    async with listener, anyio.create_task_group() as proxy:
        proxy.start_soon(listener.serve, tunnel)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(servers.tls_url + "/delay?seconds=0.3")
        proxy.cancel_scope.cancel()
    assert response.status_code == 200
    timings = response.extensions["timings"]
    assert 0.3 <= timings.wait < 0.5  # the server's think time, not the tunnel's
    assert timings.queue >= 0.2  # opening the tunnel, before the request went out
    _assert_phases_add_up(timings)


@pytest.mark.parametrize(
    ("core", "expected"),
    [
        (httpcore.ConnectTimeout, httpx.ConnectTimeout),
        (httpcore.ReadTimeout, httpx.ReadTimeout),
        (httpcore.WriteTimeout, httpx.WriteTimeout),
        (httpcore.PoolTimeout, httpx.PoolTimeout),
        (httpcore.TimeoutException, httpx.TimeoutException),
        (httpcore.ConnectError, httpx.ConnectError),
        (httpcore.ReadError, httpx.ReadError),
        (httpcore.WriteError, httpx.WriteError),
        (httpcore.NetworkError, httpx.NetworkError),
        (httpcore.ProxyError, httpx.ProxyError),
        (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
        (httpcore.LocalProtocolError, httpx.LocalProtocolError),
        (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
        (httpcore.ProtocolError, httpx.ProtocolError),
    ],
)
async def test_httpcore_errors_become_the_httpx_ones(
    core: type[Exception], expected: type[httpx.TransportError]
) -> None:
    transport = HTTPTransport()
    transport._pool._async_pool = BrokenPool(request_error=core("boom"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.TransportError) as caught:
            await client.get("http://example.test/")
    assert type(caught.value) is expected
    assert str(caught.value) == "boom"


def test_the_request_path_is_httpx_own() -> None:
    """Tools that patch httpx's transports (pytest-httpx, vcrpy, OpenTelemetry) see ours.

    It pins the one private attribute of httpx's transports we rely on: both
    send through ``self._pool``, which here holds our pools.
    """
    assert HTTPTransport.handle_async_request is httpx.AsyncHTTPTransport.handle_async_request
    assert HTTPTransport.handle_request is httpx.HTTPTransport.handle_request
    transport = HTTPTransport()
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert isinstance(transport, httpx.HTTPTransport)
    assert hasattr(transport._pool, "handle_async_request")
    assert hasattr(transport._pool, "handle_request")


# --- the response body ----------------------------------------------------------------


class FailingBody:
    """An httpcore response body that breaks after its first chunk, and on close."""

    def __init__(self, error: Exception, close_error: Exception | None = None) -> None:
        self.error = error
        self.close_error = close_error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"first"
        raise self.error

    async def aclose(self) -> None:
        if self.close_error is not None:
            raise self.close_error


class ScriptedPool(httpcore.AsyncConnectionPool):
    """A pool whose response body is given, for what real servers cannot be made to do."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self.body = body

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        return httpcore.Response(200, content=self.body)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpcore.ReadError("reset"), httpx.ReadError),
        (httpcore.RemoteProtocolError("bad frame"), httpx.RemoteProtocolError),
    ],
)
async def test_body_errors_are_raised_as_httpx_errors(
    error: Exception, expected: type[Exception]
) -> None:
    transport = HTTPTransport()
    transport._pool._async_pool = ScriptedPool(FailingBody(error))
    chunks: list[bytes] = []

    async def read(response: httpx.Response) -> None:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)  # noqa: PERF401 - each chunk counts before the error

    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", "http://example.test/") as response,
    ):
        with pytest.raises(expected):
            await read(response)
    assert chunks == [b"first"]


async def test_body_close_errors_are_raised_as_httpx_errors() -> None:
    transport = HTTPTransport()
    transport._pool._async_pool = ScriptedPool(
        FailingBody(RuntimeError(), httpcore.ReadError("close"))
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.send(
            client.build_request("GET", "http://example.test/"), stream=True
        )
        with pytest.raises(httpx.ReadError):
            await response.aclose()


async def test_unknown_body_errors_pass_through() -> None:
    transport = HTTPTransport()
    transport._pool._async_pool = ScriptedPool(
        FailingBody(RuntimeError("bug"), RuntimeError("close bug"))
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.send(
            client.build_request("GET", "http://example.test/"), stream=True
        )
        with pytest.raises(RuntimeError) as read:
            await response.aread()
        errors = [str(read.value)]
        try:
            await response.aclose()
        except RuntimeError as exc:
            errors.append(str(exc))
    # Each passes through as it is. httpx reports the read's error and leaves
    # the close to the caller; httpx2 closes a body that failed while read,
    # and reports the close's error instead.
    assert errors in (["bug", "close bug"], ["close bug"])


async def test_unknown_errors_from_the_pool_pass_through() -> None:
    transport = HTTPTransport()
    transport._pool._async_pool = BrokenPool()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(RuntimeError, match="pool bug"):
            await client.get("http://example.test/")


async def test_errors_on_exit_are_raised_as_httpx_errors() -> None:
    transport = HTTPTransport()
    transport._pool._async_pool = BrokenPool(httpcore.ReadError("closing"))
    with pytest.raises(httpx.ReadError, match="closing"):
        async with transport:
            pass
    transport._pool._async_pool = BrokenPool(RuntimeError("exit bug"))
    with pytest.raises(RuntimeError, match="exit bug"):
        async with transport:
            pass


class BrokenPool(httpcore.AsyncConnectionPool):
    """A pool that fails every request with a bug, and its exit with ``exit_error``."""

    def __init__(
        self, exit_error: Exception | None = None, request_error: Exception | None = None
    ) -> None:
        super().__init__()
        self.exit_error = exit_error
        self.request_error = request_error or RuntimeError("pool bug")

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        raise self.request_error

    async def __aexit__(self, *args: object) -> None:
        if self.exit_error is not None:
            raise self.exit_error


async def test_body_without_aclose_is_fine() -> None:
    transport = HTTPTransport()
    transport._pool._async_pool = ScriptedPool(_NoClose([b"plain"]))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("http://example.test/")
    assert response.content == b"plain"


class _NoClose:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


# --- exact figures, on a fake network ------------------------------------------------------


def _fake_transport(
    clock: FakeClock, inner: FakeBackend, **options: Any
) -> tuple[HTTPTransport, FakeResolver]:
    resolver = FakeResolver({"api.test": ["192.0.2.7"]}, clock=clock, cost=0.010)
    return HTTPTransport(
        network_backend=inner, resolver=resolver, clock=clock, **options
    ), resolver


async def test_figures_on_a_fake_network_add_up_exactly() -> None:
    clock = FakeClock()
    inner = FakeBackend(clock=clock, connect_cost=0.020, tls_cost=0.030, read_cost=0.050)
    transport, _ = _fake_transport(clock, inner)

    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.get("https://api.test/")
        second = await client.get("https://api.test/")

    assert asdict(first.extensions["timings"]) == pytest.approx(
        {
            "dns": 0.010,
            "connect": 0.020,
            "tls": 0.030,
            "queue": 0.0,
            "send": 0.0,
            "wait": 0.050,
            "total": 0.110,
            "connection_reused": False,
        }
    )
    assert asdict(second.extensions["timings"]) == pytest.approx(
        {
            "dns": None,
            "connect": None,
            "tls": None,
            "queue": 0.0,
            "send": 0.0,
            "wait": 0.050,
            "total": 0.050,
            "connection_reused": True,
        }
    )
    assert inner.streams[0].server_hostname == "api.test"
    assert inner.attempts == ["192.0.2.7"]


async def test_unix_socket_connection_is_timed_without_dns() -> None:
    clock = FakeClock()
    inner = FakeBackend(clock=clock, connect_cost=0.001)
    transport, resolver = _fake_transport(clock, inner, uds="/run/api.sock")

    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("http://api.test/")

    timings = response.extensions["timings"]
    assert (timings.dns, timings.tls) == (None, None)
    assert timings.connect == pytest.approx(0.001)
    assert inner.unix_paths == ["/run/api.sock"]
    assert resolver.calls == []


async def test_connect_retries_sleep_through_the_inner_backend() -> None:
    clock = FakeClock()
    inner = FakeBackend({"192.0.2.7": "refuse"}, clock=clock)
    transport, _ = _fake_transport(clock, inner, retries=2)

    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://api.test/")

    assert inner.attempts == ["192.0.2.7"] * 3
    assert inner.sleeps == [0, 0.5]  # httpcore's backoff


async def test_close_reaches_the_connections() -> None:
    clock = FakeClock()
    inner = FakeBackend(clock=clock)
    transport, _ = _fake_transport(clock, inner, http2=False)

    async with transport:
        client = httpx.AsyncClient(transport=transport)
        await client.get("http://api.test/")
        assert not inner.streams[0].closed
    assert inner.streams[0].closed

    await transport.aclose()  # closing twice is harmless


def test_timings_are_frozen() -> None:
    timings = Timings(
        dns=None,
        connect=None,
        tls=None,
        queue=0.0,
        send=0.0,
        wait=0.0,
        total=0.0,
        connection_reused=True,
    )
    with pytest.raises(FrozenInstanceError):
        timings.total = 1.0  # type: ignore[misc]


# --- header values with CR, LF or NUL ---------------------------------------------


@pytest.mark.parametrize("alpn", ["h2", "http/1.1"])
@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"Authorization": "Bearer tok-3f9a1c\n"}, "'Authorization'"),
        ({"Authorization": "Bearer tok-3f9a1c\r\nX-Injected: 1"}, "'Authorization'"),
        ({"X-Api-Key": "tok-3f9a1c\0"}, "'X-Api-Key'"),
        ({"X-Bad\r\nName": "tok-3f9a1c"}, "header number"),
    ],
    ids=["lf", "crlf", "nul", "name"],
)
async def test_header_with_cr_lf_or_nul_is_refused_before_anything_is_sent(
    alpn: str, headers: dict[str, str], named: str
) -> None:
    # h11 refuses these for HTTP/1.1 (quoting the value, token and all); h2
    # used to send them as they were. Now neither protocol sends a byte.
    async def handler(conn: RawConnection) -> None:
        await conn.drain()

    async with RawServer(handler, tls=True, alpn=[alpn]) as server:
        transport = HTTPTransport(verify=server.ssl_context)
        async with httpx.AsyncClient(transport=transport, timeout=2) as client:
            with pytest.raises(httpx.LocalProtocolError) as raised:
                await client.get(server.url, headers=headers)
            # With a body too: nothing of it goes either.
            with pytest.raises(httpx.LocalProtocolError):
                await client.post(server.url, headers=headers, content=b"body")
        assert server.connections == 0
    message = str(raised.value)
    assert named in message
    assert "tok-3f9a1c" not in message
    assert raised.value.request.method == "GET"


async def test_good_headers_after_a_refused_one_go_out(servers: ServerThread) -> None:
    transport = HTTPTransport(verify=servers.ssl_context)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(f"{servers.tls_url}/echo", headers={"X-Token": "a\nb"})
        response = await client.get(f"{servers.tls_url}/echo", headers={"X-Token": "a b"})
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
