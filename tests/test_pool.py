"""The connection pool under bursts of HTTP/1.1 requests, against real servers.

httpcore 1.0.9 closes an idle connection whenever more connections than
``max_keepalive_connections`` are open, busy ones included: with 50 requests
in flight and 20 kept, every burst closed 30 connections and opened them again
(a TLS handshake each). Ours keep what the limits say, and no more.
"""

from __future__ import annotations

import anyio
import pytest

from .flavour import PRODUCTION_LIMITS, HTTPTransport, _goaway, httpx
from .raw_server import RawConnection, RawServer
from .servers import ServerThread

pytestmark = pytest.mark.anyio

BURST = 50


async def _burst(client: httpx.AsyncClient, url: str, size: int) -> list[bool]:
    """``size`` GETs at once; whether each went over a connection opened before."""
    reused: list[bool] = []

    async def one() -> None:
        response = await client.get(url)
        assert response.status_code == 200
        reused.append(response.extensions["timings"].connection_reused)

    async with anyio.create_task_group() as group:
        for _ in range(size):
            group.start_soon(one)
    return reused


async def test_bursts_reuse_the_connections_of_the_first(servers: ServerThread) -> None:
    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=PRODUCTION_LIMITS)
    url = servers.tls_url + "/delay?seconds=0.05"
    async with httpx.AsyncClient(transport=transport) as client:
        first = await _burst(client, url, BURST)
        later = [await _burst(client, url, BURST) for _ in range(3)]
    opened = first.count(False)
    assert 1 <= opened <= BURST
    # Every connection of the first burst stays for the next ones.
    assert [burst.count(False) for burst in later] == [0, 0, 0]


async def test_idle_connections_past_max_keepalive_stay_for_the_next_burst(
    servers: ServerThread,
) -> None:
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=3)
    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=limits)
    url = servers.tls_url + "/delay?seconds=0.1"
    async with httpx.AsyncClient(transport=transport) as client:
        first = await _burst(client, url, 10)
        second = await _burst(client, url, 10)
    assert first.count(False) == 10  # all at once: ten connections
    assert second.count(True) == 10  # idle for less than SURPLUS_IDLE: all kept


async def test_idle_connections_past_max_keepalive_close_once_idle_a_while(
    servers: ServerThread,
) -> None:
    from .flavour._goaway import SURPLUS_IDLE

    limits = httpx.Limits(max_connections=20, max_keepalive_connections=3)
    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=limits)
    url = servers.tls_url + "/delay?seconds=0.1"
    async with httpx.AsyncClient(transport=transport) as client:
        first = await _burst(client, url, 10)
        await anyio.sleep(SURPLUS_IDLE + 0.2)
        second = await _burst(client, url, 10)
    assert first.count(False) == 10
    assert second.count(True) == 3  # three of them kept


async def test_an_idle_connection_past_keepalive_expiry_is_not_reused(
    servers: ServerThread,
) -> None:
    limits = httpx.Limits(max_keepalive_connections=5, keepalive_expiry=0.2)
    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=limits)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(servers.tls_url + "/echo")
        soon = await client.get(servers.tls_url + "/echo")
        await anyio.sleep(0.4)
        late = await client.get(servers.tls_url + "/echo")
    assert soon.extensions["timings"].connection_reused
    assert not late.extensions["timings"].connection_reused


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    """No retry layer here: a stale connection would fail the second request."""
    served = 0

    async def handler(conn: RawConnection) -> None:
        nonlocal served
        await conn.read_until(b"\r\n\r\n")
        served += 1
        # Keep-alive by every header, then gone.
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with RawServer(handler) as server:
        async with httpx.AsyncClient(transport=HTTPTransport(http2=False)) as client:
            first = await client.get(server.url)
            await anyio.sleep(0.2)  # the server's close arrives
            second = await client.get(server.url)
    assert (first.text, second.text, served) == ("ok", "ok", 2)
    assert not second.extensions["timings"].connection_reused


async def test_an_idle_http2_connection_the_server_closed_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept past httpx's 5 s only while quiet: a GOAWAY and close that came meanwhile end it.

    No retry layer here: the stale connection would fail the second request.
    """
    monkeypatch.setattr(_goaway, "QUIET_AFTER", 0.1)
    served = 0

    async def handler(conn: RawConnection) -> None:
        nonlocal served
        (stream_id,) = await conn.h2_requests()
        served += 1
        await conn.h2_respond(stream_id, body=b"ok")
        await anyio.sleep(0.1)  # the client is idle by now
        conn.h2.close_connection(last_stream_id=stream_id)
        await conn.h2_flush()

    async with RawServer(handler, tls=True, alpn=("h2",)) as server:
        limits = httpx.Limits(keepalive_expiry=30)
        transport = HTTPTransport(verify=server.ssl_context, limits=limits)
        async with httpx.AsyncClient(transport=transport) as client:
            first = await client.get(server.url)
            await anyio.sleep(0.4)  # idle past QUIET_AFTER, the GOAWAY and close arrived
            second = await client.get(server.url)
    assert (first.http_version, first.text, second.text, served) == ("HTTP/2", "ok", "ok", 2)
    assert not second.extensions["timings"].connection_reused


async def test_a_quiet_idle_http2_connection_is_reused_within_keepalive_expiry(
    servers: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_goaway, "QUIET_AFTER", 0.1)
    limits = httpx.Limits(keepalive_expiry=30)
    transport = HTTPTransport(verify=servers.ssl_context, limits=limits)
    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.get(servers.tls_url + "/echo")
        await anyio.sleep(0.4)
        second = await client.get(servers.tls_url + "/echo")
    assert (first.http_version, second.http_version) == ("HTTP/2", "HTTP/2")
    assert second.extensions["timings"].connection_reused


def test_sync_bursts_from_threads_reuse_the_connections_of_the_first(
    servers: ServerThread,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=PRODUCTION_LIMITS)
    url = servers.tls_url + "/delay?seconds=0.05"

    with httpx.Client(transport=transport) as client, ThreadPoolExecutor(20) as threads:

        def one(_: int) -> bool:
            response = client.get(url)
            assert response.status_code == 200
            reused: bool = response.extensions["timings"].connection_reused
            return reused

        first = list(threads.map(one, range(20)))
        later = [list(threads.map(one, range(20))) for _ in range(3)]
    assert 1 <= first.count(False) <= 20
    assert [burst.count(False) for burst in later] == [0, 0, 0]


async def test_no_keepalive_closes_every_connection_once_idle(servers: ServerThread) -> None:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=0)
    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=limits)
    async with httpx.AsyncClient(transport=transport) as client:
        responses = [await client.get(servers.tls_url + "/echo") for _ in range(3)]
    assert [r.extensions["timings"].connection_reused for r in responses] == [False] * 3
