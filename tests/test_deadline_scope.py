"""The deadline bounds the whole request in wall-clock time, against servers that stall politely.

A server that keeps every read busy (a status line a byte at a time, a 1xx
every 0.2 s, HTTP/2 PINGs instead of an answer) never trips a per-read
timeout; only a cancel scope around the attempt cuts it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest
from tenacity import stop_after_attempt, wait_fixed

from .fakes import FakeSleep
from .flavour import DeadlineExceeded, RetryPolicy, RetryTransport, httpx
from .raw_server import PING, Handler, RawConnection, RawServer, frame
from .servers import ServerThread

pytestmark = pytest.mark.anyio

# Each stall lasts about 4 s and then answers 200: before the deadline was a
# cancel scope, the caller got that 200 after 4 s despite deadline=1.
STALL = 4.0
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def _status_line_byte_by_byte(conn: RawConnection) -> None:
    await conn.read_until(b"\r\n\r\n")
    for byte in OK[: int(STALL / 0.1)]:
        await conn.send(bytes([byte]))
        await anyio.sleep(0.1)
    await conn.send(OK[int(STALL / 0.1) :])
    await conn.drain()


async def _trickled_102s(conn: RawConnection) -> None:
    await conn.read_until(b"\r\n\r\n")
    for _ in range(int(STALL / 0.2)):
        await conn.send(b"HTTP/1.1 102 Processing\r\n\r\n")
        await anyio.sleep(0.2)
    await conn.send(OK)
    await conn.drain()


async def _pings(conn: RawConnection) -> None:
    (stream_id,) = await conn.h2_requests()
    for number in range(int(STALL / 0.1)):
        await conn.send(frame(PING, 0, 0, number.to_bytes(8, "big")))
        await anyio.sleep(0.1)
    await conn.h2_respond(stream_id, 200, b"ok")
    await conn.drain()


STALLS: dict[str, tuple[Handler, bool]] = {
    "status-line-byte-by-byte": (_status_line_byte_by_byte, False),
    "trickled-102": (_trickled_102s, False),
    "h2-pings": (_pings, True),
}


@pytest.fixture(params=sorted(STALLS))
async def stalling_server(request: pytest.FixtureRequest) -> AsyncIterator[RawServer]:
    handler, h2 = STALLS[request.param]
    async with RawServer(handler, tls=h2, alpn=("h2",)) as server:
        yield server


def _client(server: RawServer, policy: RetryPolicy) -> httpx.AsyncClient:
    # HTTP/2 (by ALPN) for the TLS server, HTTP/1.1 for the plain one.
    base = httpx.AsyncHTTPTransport(http2=True, verify=server.ssl_context)
    # Generous per-read timeouts: they must not be what ends the request.
    return httpx.AsyncClient(transport=RetryTransport(base, policy, sleep=FakeSleep()), timeout=10)


POLICY = RetryPolicy(wait=wait_fixed(0), stop=stop_after_attempt(3))


@pytest.mark.parametrize("where", ["policy", "request"])
async def test_the_deadline_cuts_a_server_that_keeps_every_read_busy(
    stalling_server: RawServer, where: str
) -> None:
    policy = POLICY if where == "request" else RetryPolicy(deadline=1, **_no_wait())
    extensions = {"resilience": {"deadline": 1}} if where == "request" else {}
    started = time.monotonic()
    async with _client(stalling_server, policy) as client:
        with pytest.raises(DeadlineExceeded, match=r"deadline of 1 s ran out after 1 attempt\b"):
            await client.get(stalling_server.url, extensions=extensions)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0


async def test_the_deadline_applies_with_retries_off(stalling_server: RawServer) -> None:
    started = time.monotonic()
    async with _client(stalling_server, POLICY) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get(
                stalling_server.url,
                extensions={"resilience": {"deadline": 0.5, "retry": False}},
            )
    assert time.monotonic() - started < 1.5


async def test_the_callers_cancellation_stays_a_cancellation(stalling_server: RawServer) -> None:
    policy = RetryPolicy(deadline=5, **_no_wait())
    started = time.monotonic()
    async with _client(stalling_server, policy) as client:
        with anyio.move_on_after(0.5) as scope:
            await client.get(stalling_server.url)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 1.5


async def test_an_outer_deadline_shorter_than_ours_is_the_callers() -> None:
    # Our scope ends at 1 s, the caller's at 0.3 s: the caller's wins and
    # stays a cancellation, not a DeadlineExceeded.
    async with (
        RawServer(_trickled_102s) as server,
        _client(server, RetryPolicy(deadline=1, **_no_wait())) as client,
    ):
        with anyio.move_on_after(0.3) as scope:
            await client.get(server.url)
    assert scope.cancelled_caught


async def test_a_returned_response_is_not_cut_by_the_deadline() -> None:
    # The deadline bounds getting the response; reading a streamed body is
    # the caller's business.
    async def slow_body(conn: RawConnection) -> None:
        await conn.read_until(b"\r\n\r\n")
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        for byte in b"body":
            await anyio.sleep(0.2)
            await conn.send(bytes([byte]))
        await conn.drain()

    async with (
        RawServer(slow_body) as server,
        _client(server, RetryPolicy(deadline=0.5, **_no_wait())) as client,
        client.stream("GET", server.url) as response,
    ):
        assert await response.aread() == b"body"


async def test_the_attempts_are_counted_when_a_later_attempt_stalls() -> None:
    served = 0

    async def first_503_then_stall(conn: RawConnection) -> None:
        nonlocal served
        while True:
            await conn.read_until(b"\r\n\r\n")
            served += 1
            if served == 1:
                await conn.send(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n")
                continue
            await _trickle_forever(conn)

    started = time.monotonic()
    async with (
        RawServer(first_503_then_stall) as server,
        _client(server, RetryPolicy(deadline=1, **_no_wait())) as client,
    ):
        with pytest.raises(DeadlineExceeded, match="after 2 attempts"):
            await client.get(server.url)
    assert served == 2
    assert time.monotonic() - started < 2.0


async def _trickle_forever(conn: RawConnection) -> None:
    for _ in range(int(STALL / 0.2)):
        await conn.send(b"HTTP/1.1 102 Processing\r\n\r\n")
        await anyio.sleep(0.2)


def _no_wait() -> dict[str, object]:
    return {"wait": wait_fixed(0), "stop": stop_after_attempt(3)}


@pytest.mark.parametrize("tls", [True, False], ids=["h2", "http1"])
async def test_the_pool_works_on_after_a_deadline_cut(servers: ServerThread, tls: bool) -> None:
    # One connection: if the cut attempt kept it, the next request would
    # meet PoolTimeout.
    base = httpx.AsyncHTTPTransport(
        http2=True,
        verify=servers.ssl_context,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )
    transport = RetryTransport(base, RetryPolicy(deadline=0.3, **_no_wait()))
    url = servers.tls_url if tls else servers.http_url
    timeout = httpx.Timeout(10, pool=1)
    async with httpx.AsyncClient(transport=transport, base_url=url, timeout=timeout) as client:
        for _ in range(3):
            with pytest.raises(DeadlineExceeded):
                await client.get("/delay", params={"seconds": 2})
            response = await client.get("/status/204")
            assert response.status_code == 204
