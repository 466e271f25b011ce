"""HTTP/2 GOAWAY without losing the requests the server still answers.

When a server sends GOAWAY it promises to finish the streams up to
``last_stream_id`` and to ignore the ones above it. h2 4.x, which httpcore
uses, moves the whole client connection to CLOSED the moment GOAWAY arrives
and then rejects the responses the server goes on sending: requests the
server processed fail with ``LocalProtocolError``/``RemoteProtocolError``,
and a POST among them cannot safely be re-sent.

``GoawayGuardStream`` sits between httpcore and the socket of one HTTP/2
connection and reads the frame headers going by. When GOAWAY arrives it

- keeps the GOAWAY frame from h2 altogether, so h2 accepts the responses
  to the streams at or below ``last_stream_id``, and httpcore hands out
  responses it has already received (httpcore 1.0.9 raises for every
  stream once it has seen GOAWAY, even one whose response is in);
- answers every stream above it, open now or opened later, with a local
  ``RST_STREAM(REFUSED_STREAM)``, which httpcore raises as
  ``RemoteProtocolError`` and the retry layer re-sends at once, for every
  method: RFC 9113 §8.7 guarantees such a stream was not processed;
- flags the connection, so ``GuardedConnection`` stops the pool from giving
  it new requests.

The server closes the connection once it has answered; the pool closes it
sooner if it falls idle. Only frame headers are read; nothing is decoded or
reordered: the GOAWAY is dropped and the resets go in at frame boundaries.
"""

from __future__ import annotations

import math
import select
import ssl
import struct
import sys
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpcore
import httpx

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_DATA, _HEADERS, _RST_STREAM, _GOAWAY = 0x0, 0x1, 0x3, 0x7
_END_STREAM = 0x1
_REFUSED_STREAM = 0x7
_FRAME_HEADER = struct.Struct(">BHBBL")  # length as 1 + 2 bytes, type, flags, stream

#: Seconds a cancelled HTTP/2 write may go on: enough for one that is merely
#: in progress to finish, short enough that a cancel stays prompt.
CANCEL_GRACE = 0.25

# A write the socket has room for goes out at once: one default-size DATA
# frame (16 KiB) and a few small frames with it.
_SMALL_WRITE = 20 * 1024


def refused_stream_frame(stream_id: int) -> bytes:
    """An RST_STREAM frame with error code REFUSED_STREAM."""
    return _FRAME_HEADER.pack(0, 4, _RST_STREAM, 0, stream_id) + struct.pack(">L", _REFUSED_STREAM)


@dataclass(frozen=True, slots=True)
class AboveLastStream:
    """Why a request failed: its stream was above the GOAWAY's ``last_stream_id``.

    The server promised not to process such a stream (RFC 9113 §6.8), so the
    request can be sent again on another connection, whatever its method.
    """

    stream_id: int
    last_stream_id: int

    def __str__(self) -> str:
        return (
            f"the server closed the HTTP/2 connection (GOAWAY, last stream "
            f"{self.last_stream_id}) before processing stream {self.stream_id}"
        )


class GoawayState:
    """What one connection's guard has seen; shared with ``GuardedConnection``."""

    __slots__ = ("draining", "last_stream_id", "refused")

    def __init__(self) -> None:
        #: ``last_stream_id`` of the lowest GOAWAY received, or None.
        self.last_stream_id: int | None = None
        #: The connection must take no new requests.
        self.draining = False
        #: Streams answered with a local REFUSED_STREAM.
        self.refused: set[int] = set()


_KEEP, _HOLD, _DROP = 0, 1, 2


class _Frames:
    """Follows the frame boundaries of one direction of an HTTP/2 connection."""

    __slots__ = ("complete", "flags", "header", "held", "kind", "mode", "remaining", "stream_id")

    def __init__(self) -> None:
        self.header = b""  # a frame header still arriving
        self.remaining = 0  # payload bytes of the current frame still to come
        self.kind = self.flags = self.stream_id = 0
        self.mode = _KEEP  # what happens to the current frame's bytes
        self.held = bytearray()  # the current frame, when held back
        self.complete = False  # the last byte of a frame was just consumed

    @property
    def at_boundary(self) -> bool:
        return not self.header and self.remaining == 0

    def advance(
        self, view: memoryview, out: bytearray, decide: Callable[[int, int], int]
    ) -> memoryview:
        """Consume bytes of the current frame into ``out``, or hold or drop them.

        ``decide(kind, stream_id)`` picks, once per frame, ``_KEEP``,
        ``_HOLD`` (kept in ``held``) or ``_DROP``.
        """
        if self.remaining == 0:
            need = 9 - len(self.header)
            self.header += bytes(view[:need])
            view = view[need:]
            if len(self.header) < 9:
                return view
            high, low, self.kind, self.flags, stream_id = _FRAME_HEADER.unpack(self.header)
            self.remaining = (high << 16) | low
            self.stream_id = stream_id & 0x7FFFFFFF
            self.mode = decide(self.kind, self.stream_id)
            if self.mode == _KEEP:
                out += self.header
            elif self.mode == _HOLD:
                self.held = bytearray(self.header)
            self.header = b""
        take = view[: self.remaining]
        self.remaining -= len(take)
        if self.mode == _KEEP:
            out += take
        elif self.mode == _HOLD:
            self.held += take
        self.complete = self.remaining == 0
        return view[len(take) :]


class H2Watch:
    """The frame bookkeeping behind ``GoawayGuardStream``, free of I/O."""

    def __init__(self, state: GoawayState) -> None:
        self.state = state
        self._in = _Frames()
        self._out = _Frames()
        self._preface_left = len(PREFACE)
        #: Client streams opened and not yet ended.
        self._open: set[int] = set()
        #: Open streams whose whole request h2 has sent (END_STREAM).
        self._sent_all: set[int] = set()
        #: Refused streams whose request h2 is still sending.
        self._refuse_later: set[int] = set()
        #: Frames for h2 at the next inbound frame boundary.
        self._inject = bytearray()

    def sent(self, data: bytes) -> bytes:
        """Bytes h2 is about to write -> the bytes to write.

        Once the server has said GOAWAY, it ignores every stream above
        ``last_stream_id``; their frames are not written at all, so a server
        that has closed the connection cannot fail them with a write error.
        """
        view = memoryview(data)
        out = bytearray()
        if self._preface_left:
            skip = min(self._preface_left, len(view))
            self._preface_left -= skip
            out += view[:skip]
            view = view[skip:]
        frames = self._out
        while view:
            view = frames.advance(view, out, self._route_sent)
            if frames.complete:
                frames.complete = False
                self._on_sent(frames.kind, frames.flags, frames.stream_id)
        return bytes(out)

    def _route_sent(self, kind: int, stream_id: int) -> int:
        last = self.state.last_stream_id
        if last is not None and stream_id > last:
            return _DROP
        return _KEEP

    @staticmethod
    def _route_received(kind: int, stream_id: int) -> int:
        return _HOLD if kind == _GOAWAY else _KEEP

    def received(self, data: bytes) -> bytes:
        """Bytes read from the server -> the bytes h2 should see now."""
        out = bytearray(self.pending())
        view = memoryview(data)
        frames = self._in
        while view:
            view = frames.advance(view, out, self._route_received)
            if frames.complete:
                frames.complete = False
                self._on_received(frames)
                out += self._inject
                self._inject.clear()
        return bytes(out)

    def pending(self) -> bytes:
        """Injected frames h2 can have now, without reading the socket."""
        if not self._inject or not self._in.at_boundary:
            return b""
        out = bytes(self._inject)
        self._inject.clear()
        return out

    def eof(self) -> bytes:
        """The server closed: refuse the streams still waiting for it."""
        for stream_id in sorted(self._refuse_later):
            self._inject += refused_stream_frame(stream_id)
        self._refuse_later.clear()
        return self.pending()

    def _on_sent(self, kind: int, flags: int, stream_id: int) -> None:
        if kind == _RST_STREAM:
            self._refuse_later.discard(stream_id)
            self._end(stream_id)
            return
        ends = kind in (_DATA, _HEADERS) and bool(flags & _END_STREAM)
        if kind == _HEADERS and stream_id % 2 == 1 and stream_id not in self._open:
            if stream_id in self._refuse_later:
                pass  # trailers of a stream already refused
            else:
                self._open.add(stream_id)
                if ends:
                    self._sent_all.add(stream_id)
                last = self.state.last_stream_id
                if last is not None and stream_id > last:
                    self._refuse(stream_id)
                return
        if ends:
            if stream_id in self._refuse_later:
                self._refuse_later.discard(stream_id)
                self._inject_refusal(stream_id)
            elif stream_id in self._open:
                self._sent_all.add(stream_id)

    def _on_received(self, frames: _Frames) -> None:
        if frames.mode == _HOLD:
            self._on_goaway(bytes(frames.held))  # and never hand it to h2
        elif frames.kind == _RST_STREAM or (
            frames.kind in (_DATA, _HEADERS) and frames.flags & _END_STREAM
        ):
            self._end(frames.stream_id)

    def _on_goaway(self, frame: bytes) -> None:
        last = struct.unpack(">L", frame[9:13])[0] & 0x7FFFFFFF
        state = self.state
        state.draining = True
        if state.last_stream_id is None or last < state.last_stream_id:
            state.last_stream_id = last
        for stream_id in sorted(self._open):
            if stream_id > state.last_stream_id:
                self._refuse(stream_id)

    def _refuse(self, stream_id: int) -> None:
        """Answer a stream above ``last_stream_id`` with REFUSED_STREAM.

        Only once h2 has sent all of its request: reset earlier, h2 would
        fail httpcore still sending the body (StreamClosedError), leaving the
        body's iterator unfinished.
        """
        self._open.discard(stream_id)
        self.state.refused.add(stream_id)
        if stream_id in self._sent_all:
            self._inject_refusal(stream_id)
        else:
            self._refuse_later.add(stream_id)

    def _inject_refusal(self, stream_id: int) -> None:
        self._sent_all.discard(stream_id)
        self._inject += refused_stream_frame(stream_id)

    def _end(self, stream_id: int) -> None:
        self._open.discard(stream_id)
        self._sent_all.discard(stream_id)


class GoawayGuardStream(httpcore.AsyncNetworkStream):
    """A network stream that keeps HTTP/2 GOAWAY from losing answered requests.

    It watches only connections that speak HTTP/2 (ALPN ``h2``, or the h2c
    preface); for HTTP/1.1 it forwards every call untouched.
    """

    def __init__(self, stream: httpcore.AsyncNetworkStream, state: GoawayState) -> None:
        self._stream = stream
        self._state = state
        self._watch: H2Watch | None = None
        self._decided = False
        self._room: _SendRoom | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        watch = self._watch
        if watch is None:
            return await self._stream.read(max_bytes, timeout)
        pending = watch.pending()
        if pending:
            return pending
        while True:
            data = await self._stream.read(max_bytes, timeout)
            if not data:
                return watch.eof()
            out = watch.received(data)
            if out:
                return out
            # Everything read was held back (a GOAWAY, or part of a frame
            # header): h2 has nothing new yet, so keep reading.

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not self._decided:
            # Plain TCP: h2c by prior knowledge starts with the preface.
            self._decided = True
            if buffer.startswith(PREFACE):
                self._watch = H2Watch(self._state)
        if self._watch is not None:
            buffer = self._watch.sent(buffer)
            if buffer:
                await self._write_frames(buffer, timeout)
            return
        await self._stream.write(buffer, timeout)

    async def _write_frames(self, buffer: bytes, timeout: float | None) -> None:
        """Write HTTP/2 frames whole, unless a cancelled write blocks past a short grace.

        httpcore has already taken these bytes out of h2's buffer, and they
        may carry other streams' frames (and move the TLS and HPACK state
        on): cut short by a cancellation (a hedge's loser, a caller's
        timeout), the write leaves a frame half sent, and the connection is
        broken for every request on it. So a cancelled write may go on for
        ``CANCEL_GRACE`` seconds; one still blocked then (a server that
        stopped reading) is cut, and its connection closed, so that the
        caller's cancellation is prompt and no other request meets a
        half-written frame. The write timeout still holds.
        """
        room = self._room
        if room is None:
            room = self._room = _SendRoom(self._stream.get_extra_info("socket"))
        if len(buffer) <= _SMALL_WRITE and room.has_room():
            # The common case: the socket takes the bytes at once. Shielded,
            # with no task to watch for a cancellation: nothing here sees one
            # sent by cancel(), and only a deadline (the caller's, plus the
            # grace) can cut the write.
            deadline = anyio.current_effective_deadline()
            if deadline == -math.inf:  # already cancelled
                deadline = anyio.current_time()
            with anyio.CancelScope(shield=True, deadline=deadline + CANCEL_GRACE) as scope:
                await self._stream.write(buffer, timeout)
            cut = scope.cancelled_caught
        else:
            cut = await self._write_watched(buffer, timeout)
        if cut:
            await self._close_cut()

    async def _write_watched(self, buffer: bytes, timeout: float | None) -> bool:
        """Write while a task waits for the caller's cancellation; whether the write was cut.

        For writes that may block (the socket is full): the write runs
        shielded, and the watching task, which the caller's cancel scopes
        do reach, gives it ``CANCEL_GRACE`` seconds once they are cancelled.
        """
        write_scope = anyio.CancelScope(shield=True)
        done = False

        async def watch() -> None:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                if not done:
                    write_scope.deadline = anyio.current_time() + CANCEL_GRACE
            # Ends quietly: the caller's own cancellation reaches the caller
            # after the write, and nothing else is worth reporting.

        error: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:
                with write_scope:
                    await self._stream.write(buffer, timeout)
            except Exception as exc:
                # Raised outside the task group, which would wrap it in an
                # ExceptionGroup that httpcore does not expect.
                error = exc
            finally:
                done = True
                group.cancel_scope.cancel()
        if error is not None:
            try:
                raise error
            finally:
                del error
        return write_scope.cancelled_caught

    async def _close_cut(self) -> None:
        """Close the connection a cut write left half-written, and let the cancellation through.

        A cut happens only after the caller's cancellation (a deadline past,
        or cancel()), which the checkpoint delivers; the pool drops the
        connection once its last request has ended.
        """
        self._state.draining = True
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()
        await anyio.lowlevel.checkpoint_if_cancelled()
        raise httpcore.WriteError(  # pragma: no cover - the cancellation comes first
            "an HTTP/2 write was cut short by a cancellation; the connection is closed"
        )

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            stream = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            # httpcore closes the TCP stream when the handshake fails, but
            # not when it is cancelled, and nothing else would.
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
            raise
        ssl_object = stream.get_extra_info("ssl_object")
        protocol = None if ssl_object is None else ssl_object.selected_alpn_protocol()
        if protocol is not None and protocol != "h2":
            # HTTP/1.1 (or another protocol without GOAWAY): httpcore gets the
            # TLS stream itself, and every read and write skips the guard.
            return stream
        guarded = GoawayGuardStream(stream, self._state)
        if protocol == "h2":
            guarded._decided = True
            guarded._watch = H2Watch(self._state)
        # Without ALPN the first write decides, as on plain TCP: HTTP/2 by
        # prior knowledge starts with the preface.
        return guarded

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _SendRoom:
    """Whether a socket's send buffer has room, asked without blocking.

    On Linux a TCP socket polls writable only while its free send space is
    at least half of what is queued, so one frame then fits. Without a
    socket to ask (another network backend), the answer is no.
    """

    __slots__ = ("_poll", "_sock")

    def __init__(self, sock: typing.Any) -> None:
        self._sock = sock
        self._poll: typing.Any = None
        if sock is not None and hasattr(select, "poll"):  # not on Windows
            poll = select.poll()
            poll.register(sock, select.POLLOUT)
            self._poll = poll

    def has_room(self) -> bool:
        if self._poll is not None:
            for _, events in self._poll.poll(0):
                return bool(events == select.POLLOUT)
            return False
        if self._sock is None:
            return False
        return bool(select.select([], [self._sock], [], 0)[1])  # pragma: no cover - Windows


class _GuardingBackend(httpcore.AsyncNetworkBackend):
    """Wraps the streams one connection opens, reporting to its GoawayState."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, state: GoawayState) -> None:
        self._backend = backend
        self._state = state

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return GoawayGuardStream(stream, self._state)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return GoawayGuardStream(stream, self._state)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedConnection(httpcore.AsyncHTTPConnection):
    """A pool connection that takes no new requests once its server said GOAWAY.

    A subclass rather than a wrapper: the pool asks every connection whether
    it is closed, expired, idle or available around every request, and only
    the last two answers change here.
    """

    def __init__(self, *, state: GoawayState, **options: typing.Any) -> None:
        super().__init__(**options)
        self._goaway = state
        #: Requests that reached this connection.
        self._requests_seen = 0
        #: Never used, and reported expired to the pool (see ``_orphaned``).
        self._abandoned = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._abandoned:
            # The pool has dropped this connection; it queues the request again.
            raise httpcore.ConnectionNotAvailable()
        self._requests_seen += 1
        try:
            return await super().handle_async_request(request)
        except httpcore.ConnectionNotAvailable:
            raise
        except httpcore.ProtocolError as exc:
            state = self._goaway
            detail = exc.args[0] if exc.args else None
            if isinstance(detail, h2.exceptions.TooManyStreamsError):
                # h2's count of open streams and httpcore's disagree
                # (encode/httpcore#943): new requests go to a fresh connection.
                state.draining = True
            # A stream we refused after GOAWAY fails either with the reset we
            # injected or, if httpcore was still sending its body, with h2's
            # StreamClosedError: either way, say what really happened.
            stream_id = getattr(detail, "stream_id", None)
            last = state.last_stream_id
            if (
                isinstance(detail, (h2.events.StreamReset, h2.exceptions.StreamClosedError))
                and stream_id in state.refused
                and last is not None
            ):
                raise httpcore.RemoteProtocolError(AboveLastStream(stream_id, last)) from exc
            raise
        except BaseException:
            await self._close_if_stranded()
            raise

    async def _close_if_stranded(self) -> None:
        """Close the connection if its first request failed and left it of no use to the pool.

        A request cancelled between connecting and its first byte leaves
        httpcore's HTTP/1.1 connection NEW: open, but neither idle,
        available, closed nor expired, so the pool would keep it, counted
        against ``max_connections``, for ever. Closed, the pool drops it.
        """
        if self._requests_seen == 1 and not (
            self.is_idle() or self.is_available() or self.is_closed() or self.has_expired()
        ):
            with anyio.CancelScope(shield=True):
                await self.aclose()

    def _orphaned(self) -> bool:
        """Whether the request this connection was created for is gone before using it.

        The pool creates a connection for a queued request, which can be
        cancelled before it runs again to use it. Until it connects, an
        HTTP/1.1 connection is neither idle, available, closed nor expired,
        so the pool would keep it, counted against ``max_connections``, for
        ever. The pool asks ``has_expired`` while it unwinds the failed or
        cancelled request (in its ``except`` clause): a never-used
        connection seen then is taken as that request's. A wrong guess
        costs nothing: the request still to come meets
        ``ConnectionNotAvailable`` and the pool queues it again.
        """
        if (
            not self._abandoned
            and self._requests_seen == 0
            and sys.exc_info()[1] is not None
            # An HTTP/2-capable connection is offered to the next request anyway.
            and not super().is_available()
        ):
            self._abandoned = True
        return self._abandoned

    def is_available(self) -> bool:
        return not self._goaway.draining and super().is_available()

    def has_expired(self) -> bool:
        if self._orphaned():
            return True
        return super().has_expired() or (self._goaway.draining and self.is_idle())


class GuardedConnectionPool(httpcore.AsyncConnectionPool):
    """``httpcore.AsyncConnectionPool`` whose connections survive GOAWAY.

    Takes the pool's own keyword arguments; ``create_connection`` is the
    pool's public extension point.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float | None = None,
        http1: bool = True,
        http2: bool = False,
        retries: int = 0,
        local_address: str | None = None,
        uds: str | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
        **limits: typing.Any,
    ) -> None:
        # anyio runs on asyncio and trio alike (httpcore's AutoBackend is private).
        backend = network_backend or httpcore.AnyIOBackend()
        super().__init__(
            ssl_context=ssl_context,
            keepalive_expiry=keepalive_expiry,
            http1=http1,
            http2=http2,
            retries=retries,
            local_address=local_address,
            uds=uds,
            network_backend=backend,
            socket_options=socket_options,
            **limits,
        )
        self._connection_options: dict[str, typing.Any] = {
            "ssl_context": ssl_context,
            "keepalive_expiry": keepalive_expiry,
            "http1": http1,
            "http2": http2,
            "retries": retries,
            "local_address": local_address,
            "uds": uds,
            "socket_options": socket_options,
        }
        self._backend = backend

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        state = GoawayState()
        return GuardedConnection(
            state=state,
            origin=origin,
            network_backend=_GuardingBackend(self._backend, state),
            **self._connection_options,
        )


def unprocessed_reason(exc: BaseException) -> str | None:
    """Why an HTTP/2 failure proves the server never processed the request.

    ``"GOAWAY"``: the stream was above the ``last_stream_id`` of the
    server's GOAWAY (``HTTPTransport`` reports these).
    ``"REFUSED_STREAM"``: the server reset the stream with REFUSED_STREAM,
    which RFC 9113 §8.7 says it does only for streams it did not process
    (also what our GOAWAY guard answers for streams above ``last_stream_id``).
    ``"STREAM_LIMIT"``: h2 refused to open the stream, so no byte left.
    ``"CONNECTION_CLOSED"``: the connection was closed before the request
    headers could be sent. ``None``: the request may have been processed.

    The evidence is httpcore's exception, which httpx chains as ``__cause__``
    and which carries h2's event or exception as its argument (or, after a
    GOAWAY, h2's exception as its ``__context__``).
    """
    cause = exc.__cause__
    if not isinstance(exc, httpx.ProtocolError) or not isinstance(cause, httpcore.ProtocolError):
        return None
    detail = cause.args[0] if cause.args else None
    if isinstance(detail, h2.events.ConnectionTerminated):
        # httpcore reports the GOAWAY that closed the connection; what h2
        # refused for this request is the exception it was handling.
        detail = cause.__context__
    if isinstance(detail, AboveLastStream):
        return "GOAWAY"
    if isinstance(detail, h2.events.StreamReset):
        refused = detail.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        return "REFUSED_STREAM" if refused else None
    if isinstance(detail, h2.exceptions.TooManyStreamsError):
        return "STREAM_LIMIT"
    # h2 says which input its connection state machine refused; only a
    # refused SEND_HEADERS proves nothing of this request was sent.
    if isinstance(detail, h2.exceptions.ProtocolError) and str(detail).startswith(
        "Invalid input ConnectionInputs.SEND_HEADERS in state"
    ):
        return "CONNECTION_CLOSED"
    return None


def server_broke_protocol(exc: BaseException) -> bool:
    """Whether a ``LocalProtocolError`` is the client refusing a step because of the server.

    httpcore raises every error of h2 as ``LocalProtocolError``, also when
    the server broke the protocol: h2 refused its frames, or the server's
    error closed the connection or stream under a request still sending or
    reading, and h2's state machine refused the next step ("Invalid input
    ConnectionInputs.SEND_DATA in state ConnectionState.CLOSED"). That is
    the server's fault, as a ``RemoteProtocolError`` is, and another
    attempt may well succeed. A request the caller built wrong (a header
    h11 or h2 refuses: ``Illegal header value``, a ``TE`` header) fails
    before anything is sent, and would fail again: ``False``.
    """
    cause = exc.__cause__
    if not isinstance(exc, httpx.LocalProtocolError) or not isinstance(
        cause, httpcore.LocalProtocolError
    ):
        return False
    detail = cause.args[0] if cause.args else None
    if not isinstance(detail, h2.exceptions.ProtocolError):
        return False  # h11 refused the caller's request itself
    if isinstance(detail, h2.exceptions.StreamClosedError) or str(detail).startswith(
        "Invalid input "
    ):
        return True  # the server closed or reset what the request still used
    # Otherwise h2 refused either the server's frames or the request's
    # headers; only the former come out of its receive_data().
    return any(
        frame.f_code.co_name == "receive_data"
        and frame.f_globals.get("__name__") == h2.connection.__name__
        for frame, _ in traceback.walk_tb(detail.__traceback__)
    )


# TODO(restructure): the sync guard, generated, once the GOAWAY work lands.
SyncGuardedConnectionPool = httpcore.ConnectionPool
