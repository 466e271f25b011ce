"""Cancellation is prompt and leaves the pool clean: stalled HTTP/2 uploads, cancelled connects.

The servers here misbehave on purpose: an HTTP/2 server that takes the
request headers and then stops reading the body (its socket fills, the
client's write blocks), and a server that accepts TCP but never answers the
TLS handshake (connects hang until cancelled).
"""

from __future__ import annotations

import functools
import math
import random
import socket
import typing

import anyio
import h2.settings
import pytest

from .flavour import HTTPTransport, httpcore, httpx
from .flavour._goaway import CANCEL_GRACE, GoawayGuardStream, GoawayState
from .raw_server import END_HEADERS, H2_PREFACE, RawConnection, RawServer, frame
from .raw_server import HEADERS as HEADERS_FRAME
from .raw_server import PING as PING_FRAME
from .servers import LOOPBACK, ServerThread

pytestmark = pytest.mark.anyio

# httpcore leaves the request body's iterator unfinished when an upload is
# cancelled (bare httpx too); trio reports it when it is collected.
abandoned_body = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <async_generator object \w*ByteStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)

UPLOAD = b"x" * 10_000_000
#: The stalled server reads again after this long, so that the old shielded
#: write returned then instead of never.
STALL = 3.0
MAX_WINDOW = 2**31 - 1


class StalledUploads:
    """An HTTP/2 server that takes the headers of ``requests`` requests, then stops reading.

    It grants the largest flow-control windows, so the client writes until
    the sockets are full; nothing is ever answered.
    """

    def __init__(self, requests: int = 1) -> None:
        self.requests = requests
        self.headers_seen = 0

    async def __call__(self, conn: RawConnection) -> None:
        h2_state = conn.h2
        h2_state.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: MAX_WINDOW})
        h2_state.increment_flow_control_window(MAX_WINDOW - 65535)
        for _ in range(self.requests):
            await conn.h2_requests()
            self.headers_seen += 1
        await anyio.sleep(STALL)
        await conn.drain()


class TrackedUpload:
    """A 10 MB request body that notes when httpcore last asked for more of it."""

    def __init__(self) -> None:
        self.pulled_at = math.inf
        self._left = len(UPLOAD) // 65536

    def __aiter__(self) -> TrackedUpload:
        return self

    async def __anext__(self) -> bytes:
        self.pulled_at = anyio.current_time()
        if not self._left:
            raise StopAsyncIteration
        self._left -= 1
        return UPLOAD[:65536]

    async def blocked(self) -> None:
        """Wait until httpcore has asked for nothing for a while: its write is blocked."""
        await _wait_for(lambda: anyio.current_time() - self.pulled_at > 0.3)


def _upload_client(transport: HTTPTransport, write_timeout: float | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, write=write_timeout))


async def _wait_for(condition: typing.Callable[[], bool]) -> None:
    """Poll: the conditions are counters and clocks that signal no event."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def _in_use(transport: HTTPTransport) -> list[str]:
    return [c.info() for c in transport.connections if not c.is_idle()]


@abandoned_body
@pytest.mark.parametrize("write_timeout", [None, 2.0])
async def test_move_on_after_cuts_a_stalled_http2_upload(
    write_timeout: float | None, servers: ServerThread
) -> None:
    async with RawServer(StalledUploads(), tls=True, alpn=("h2",)) as server:
        transport = HTTPTransport(verify=server.ssl_context)
        async with _upload_client(transport, write_timeout) as client:
            start = anyio.current_time()
            with anyio.move_on_after(0.5) as scope:
                await client.post(server.url, content=UPLOAD)
            elapsed = anyio.current_time() - start
            # The shielded write used to hold the caller until the write
            # timeout (2.3 s) or until the server read again (3 s here).
            assert scope.cancelled_caught
            assert elapsed < 1.5

            # The cut connection is gone; the transport serves the next request.
            response = await client.get(f"{servers.tls_url}/after")
            await response.aclose()
            assert response.status_code == 404
            assert _in_use(transport) == []


@abandoned_body
async def test_cancel_scope_cancel_cuts_a_stalled_http2_upload(servers: ServerThread) -> None:
    stalled = StalledUploads()
    raised: list[BaseException] = []

    body = TrackedUpload()

    async def upload(client: httpx.AsyncClient, url: str) -> None:
        try:
            await client.post(url, content=body)
        except BaseException as exc:
            raised.append(exc)
            raise

    async with RawServer(stalled, tls=True, alpn=("h2",)) as server:
        transport = HTTPTransport(verify=server.ssl_context)
        async with _upload_client(transport, None) as client:
            async with anyio.create_task_group() as group:
                group.start_soon(upload, client, server.url)
                await body.blocked()
                cancelled_at = anyio.current_time()
                group.cancel_scope.cancel()
            elapsed = anyio.current_time() - cancelled_at
            # No deadline for a shield to see: only a task watching for the
            # cancellation notices it (it used to wait for the server, 3 s).
            assert elapsed < 1.0
            # The caller's cancellation, not another exception.
            assert len(raised) == 1
            assert isinstance(raised[0], anyio.get_cancelled_exc_class())

            response = await client.get(f"{servers.tls_url}/after")
            await response.aclose()
            assert response.status_code == 404
            assert _in_use(transport) == []


@abandoned_body
async def test_a_cut_write_fails_the_other_requests_on_its_connection() -> None:
    """The connection is closed, not left with half a frame for other streams to follow."""
    stalled = StalledUploads(requests=2)
    outcome: list[BaseException] = []

    async def waiting_get(client: httpx.AsyncClient, url: str) -> None:
        try:
            await client.get(url)
        except Exception as exc:
            outcome.append(exc)

    async with RawServer(stalled, tls=True, alpn=("h2",)) as server:
        transport = HTTPTransport(verify=server.ssl_context)
        async with _upload_client(transport, None) as client, anyio.create_task_group() as group:
            group.start_soon(waiting_get, client, server.url)
            await _wait_for(lambda: stalled.headers_seen == 1)
            async with anyio.create_task_group() as upload:
                body = TrackedUpload()
                upload.start_soon(functools.partial(client.post, server.url, content=body))
                await body.blocked()
                upload.cancel_scope.cancel()
            cancelled_at = anyio.current_time()
            await _wait_for(lambda: bool(outcome))
            # Failed with the cut (it used to wait out the stall, then its read timeout).
            assert anyio.current_time() - cancelled_at < 1.5
            assert isinstance(outcome[0], httpx.TransportError)
            assert server.connections == 1
            assert _in_use(transport) == []


# Cancelled connects: no connection may stay in the pool for ever.


class SilentTLS:
    """Accepts TCP and reads the TLS client hello, but never answers it: connects hang."""

    async def __call__(self, conn: RawConnection) -> None:
        await conn.drain()


async def test_requests_cancelled_while_queued_for_a_connecting_pool_leave_no_connection(
    servers: ServerThread,
) -> None:
    """httpcore's pool gives a queued request a new connection, which it never uses if cancelled.

    Two requests connect (and hang in the TLS handshake) while eighteen wait
    for a connection; the cancellation fails the connects, whose cleanup
    hands queued requests new connections that their requests, cancelled
    too, never open. With ``max_connections=2`` these used to fill the pool
    for ever: every later request ended in ``PoolTimeout``.
    """
    limits = httpx.Limits(max_connections=2)
    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=limits)
    async with (
        RawServer(SilentTLS()) as silent,
        httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=1)) as client,
    ):
        url = f"https://{LOOPBACK}:{silent.port}/"
        for _ in range(3):
            connecting = silent.connections + 2
            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(client.get, url)
                await _wait_for(lambda target=connecting: silent.connections == target)
                await anyio.sleep(0.05)
                group.cancel_scope.cancel()
        response = await client.get(f"{servers.tls_url}/after")
        await response.aclose()
        assert response.status_code == 404
        assert _in_use(transport) == []
        assert len(transport.connections) == 1


async def test_random_cancellations_during_connect_leave_no_connection(
    servers: ServerThread,
) -> None:
    """Cancelled at random points of TCP connect, TLS and the first request: nothing sticks."""
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=0)
    transport = HTTPTransport(verify=servers.ssl_context, http2=False, limits=limits)
    rng = random.Random(12)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=2)) as client:
        for _ in range(20):
            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(client.get, f"{servers.tls_url}/x")
                await anyio.sleep(rng.uniform(0, 0.01))
                group.cancel_scope.cancel()
        response = await client.get(f"{servers.tls_url}/after")
        await response.aclose()
        assert response.status_code == 404
        assert _in_use(transport) == []


class CancelOnConnect(httpcore.AsyncNetworkBackend):
    """Connects at once; while ``scope`` is set, cancels it just as the connection opens."""

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.opened = 0
        self.closed = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.opened += 1
        if self.scope is not None:
            self.scope.cancel()
        return _AnsweringStream(self)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _AnsweringStream(httpcore.AsyncNetworkStream):
    """Answers one HTTP/1.1 request with 200."""

    def __init__(self, backend: CancelOnConnect) -> None:
        self._backend = backend
        self._answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        answer, self._answer = self._answer, b""
        return answer

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        pass

    async def aclose(self) -> None:
        self._backend.closed += 1

    def get_extra_info(self, info: str) -> typing.Any:
        return None


async def test_a_request_cancelled_between_connect_and_first_byte_leaves_no_connection() -> None:
    """Cancelled right after connecting, httpcore's HTTP/1.1 connection stayed NEW for ever."""
    backend = CancelOnConnect()
    limits = httpx.Limits(max_connections=1)
    transport = HTTPTransport(http2=False, network_backend=backend, limits=limits)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=1)) as client:
        for _ in range(3):
            with anyio.CancelScope() as scope:
                backend.scope = scope
                await client.get(f"http://{LOOPBACK}:9/")
            assert scope.cancelled_caught
        backend.scope = None
        response = await client.get(f"http://{LOOPBACK}:9/")
        assert response.status_code == 200
    assert (backend.opened, backend.closed) == (4, 4)


class ResetOnCancel(CancelOnConnect):
    """Connects at once; the first read cancels ``scope`` and fails in the same breath.

    No checkpoint between the two, as when httpcore hands a cancelled
    request the write lock of a shared HTTP/2 connection and re-raises the
    error another request's write stored there.
    """

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.opened += 1
        return _ResetStream(self)


class _ResetStream(_AnsweringStream):
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        scope = self._backend.scope
        assert scope is not None
        scope.cancel()
        raise httpcore.ReadError("connection reset by peer")


async def test_an_error_raised_after_the_cancellation_gives_way_to_it() -> None:
    """The caller asked to stop: it sees its cancellation, never the error that came with it."""
    backend = ResetOnCancel()
    transport = HTTPTransport(http2=False, network_backend=backend)
    async with httpx.AsyncClient(transport=transport) as client:
        for method in ("GET", "POST"):
            with anyio.CancelScope() as scope:
                backend.scope = scope
                await client.request(method, f"http://{LOOPBACK}:9/", content=b"once")
                pytest.fail("the request went on after its cancellation")
            assert scope.cancelled_caught
    assert (backend.opened, backend.closed) == (2, 2)


class FirstConnectHangs(CancelOnConnect):
    """The first connect hangs until cancelled; later ones take a moment, then answer HTTP/1.1."""

    def __init__(self) -> None:
        super().__init__()
        self.connects = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects += 1
        await anyio.sleep(math.inf if self.connects == 1 else 0.1)
        self.opened += 1
        return _TLSAnsweringStream(self)


class _TLSAnsweringStream(_AnsweringStream):
    """Its TLS is itself, with no ALPN: HTTP/1.1."""

    async def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return self


async def test_a_connection_another_request_connects_after_a_cancelled_connect_is_closed() -> None:
    """A cancelled connect made httpcore's connection say it was closed and expired.

    The pool then dropped it while a second request, waiting on the same
    connection (HTTP/2 may multiplex it), was connecting it again: that
    socket was never closed.
    """
    backend = FirstConnectHangs()
    transport = HTTPTransport(network_backend=backend)
    async with httpx.AsyncClient(transport=transport) as client:
        responses: list[httpx.Response] = []
        async with anyio.create_task_group() as group:
            first = anyio.CancelScope()

            async def cancelled_get() -> None:
                with first:
                    await client.get(f"https://{LOOPBACK}:9/first")

            async def second_get() -> None:
                responses.append(await client.get(f"https://{LOOPBACK}:9/second"))

            group.start_soon(cancelled_get)
            await _wait_for(lambda: backend.connects == 1)
            group.start_soon(second_get)
            await anyio.sleep(0.05)  # waiting for the same connection
            first.cancel()
        assert first.cancelled_caught
        assert [r.text for r in responses] == ["ok"]
    assert (backend.opened, backend.closed) == (1, 1)


async def _answer_h2(conn: RawConnection) -> None:
    """Answer every HTTP/2 request 200 ``ok``."""
    while True:
        try:
            (stream_id,) = await conn.h2_requests()
        except EOFError:
            return
        await conn.h2_respond(stream_id, body=b"ok")


async def test_a_cancellation_during_http2_setup_leaves_the_connection_sound() -> None:
    """Cut while httpcore filled its stream semaphore, the connection broke for the next request.

    The server's SETTINGS then released the semaphore past its bound:
    ``ValueError: semaphore released too many times``, not an httpx error.
    """
    async with RawServer(_answer_h2, tls=True, alpn=("h2",)) as server:
        transport = HTTPTransport(verify=server.ssl_context)
        async with httpx.AsyncClient(transport=transport) as client:
            with anyio.CancelScope() as scope:

                async def cancel_in_setup(name: str, info: object) -> None:
                    if name == "http2.send_connection_init.complete":
                        scope.cancel()

                await client.get(server.url, extensions={"trace": cancel_in_setup})
            assert scope.cancelled_caught
            response = await client.get(server.url)
    assert (response.http_version, response.text) == ("HTTP/2", "ok")
    assert server.connections == 1


# The write path itself, over a stream whose writes a test controls.


class ScriptedWrites(httpcore.AsyncNetworkStream):
    """A network stream whose writes take ``write_time`` seconds (or raise ``error``)."""

    def __init__(
        self, sock: socket.socket | None, write_time: float = 0.0, *, uploading: bool = False
    ) -> None:
        self.sock = sock
        self.uploading = uploading
        self.write_time = write_time
        self.error: Exception | None = None
        self.written: list[bytes] = []
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await anyio.sleep_forever()
        return b""  # pragma: no cover

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await anyio.sleep(self.write_time)
        if self.error is not None:
            raise self.error
        self.written.append(buffer)

    async def aclose(self) -> None:
        self.closed = True

    def get_extra_info(self, info: str) -> typing.Any:
        return self.sock if info == "socket" else None


PING = frame(PING_FRAME, 0, 0, b"12345678")


def _inner(kind: str) -> typing.Iterator[ScriptedWrites]:
    if kind == "no-socket":
        yield ScriptedWrites(None)
        return
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ScriptedWrites(ours, uploading=kind == "room-uploading")


@pytest.fixture(params=["room", "room-uploading", "no-socket"])
def inner(request: pytest.FixtureRequest) -> typing.Iterator[ScriptedWrites]:
    """The three write paths. A small write to a socket with room, on a connection
    with no request body on its way, is only shielded (it cannot block); with an
    upload on its way, the caller's deadline plus the grace bounds it; without a
    socket to ask, a task watches for the caller's cancellation."""
    yield from _inner(request.param)


@pytest.fixture(params=["room-uploading", "no-socket"])
def may_block(request: pytest.FixtureRequest) -> typing.Iterator[ScriptedWrites]:
    """The write paths where a write may block: a cancellation must be able to cut it."""
    yield from _inner(request.param)


async def _http2_stream(inner: ScriptedWrites) -> tuple[GoawayGuardStream, GoawayState]:
    state = GoawayState()
    stream = GoawayGuardStream(inner, state)
    await stream.write(H2_PREFACE)  # HTTP/2 by prior knowledge: the guard watches
    if inner.uploading:
        await stream.write(frame(HEADERS_FRAME, END_HEADERS, 1, b"\x82"))  # a body to follow
    return stream, state


async def test_a_write_in_progress_when_cancelled_finishes(inner: ScriptedWrites) -> None:
    """A hedge's loser cancelled mid-write: the frame goes out whole, the connection stays."""
    stream, state = await _http2_stream(inner)
    inner.write_time = 0.1
    with anyio.CancelScope() as scope:
        scope.cancel()
        await stream.write(PING)
    assert inner.written[-1] == PING
    assert (inner.closed, state.draining) == (False, False)


async def test_a_write_blocked_past_the_deadline_is_cut(may_block: ScriptedWrites) -> None:
    inner = may_block
    stream, state = await _http2_stream(inner)
    inner.write_time = STALL
    start = anyio.current_time()
    with anyio.move_on_after(0.1) as scope:
        await stream.write(PING)
    assert scope.cancelled_caught
    assert anyio.current_time() - start < 0.1 + CANCEL_GRACE + 0.5
    assert (inner.closed, state.draining) == (True, True)


async def test_a_blocked_write_is_cut_by_cancel() -> None:
    inner = ScriptedWrites(None)
    stream, state = await _http2_stream(inner)
    inner.write_time = STALL
    async with anyio.create_task_group() as group:
        group.start_soon(stream.write, PING)
        await anyio.sleep(0.05)
        cancelled_at = anyio.current_time()
        group.cancel_scope.cancel()
    assert anyio.current_time() - cancelled_at < CANCEL_GRACE + 0.5
    assert (inner.closed, state.draining) == (True, True)


async def test_write_errors_come_out_as_they_are(inner: ScriptedWrites) -> None:
    stream, state = await _http2_stream(inner)
    inner.error = httpcore.WriteTimeout("slow")
    with pytest.raises(httpcore.WriteTimeout):
        await stream.write(PING)
    assert (inner.closed, state.draining) == (False, False)
