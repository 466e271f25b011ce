"""HTTP/2 GOAWAY without losing the requests the server still answers.

When a server sends GOAWAY it promises to finish the streams up to
``last_stream_id`` and to ignore the ones above it. h2 4.x, which httpcore
uses, moves the whole client connection to CLOSED the moment GOAWAY arrives
and then rejects the responses the server goes on sending: requests the
server processed fail with ``LocalProtocolError``/``RemoteProtocolError``,
and a POST among them cannot safely be re-sent.

``GoawayGuardStream`` sits between httpcore and the socket of one HTTP/2
connection and reads the frame headers going by. When GOAWAY arrives it

- holds the GOAWAY frame back until every stream at or below
  ``last_stream_id`` has ended, so h2 accepts their responses;
- answers every stream above it, open now or opened later, with a local
  ``RST_STREAM(REFUSED_STREAM)``, which httpcore raises as
  ``RemoteProtocolError`` and the retry layer re-sends at once, for every
  method: RFC 9113 §8.7 guarantees such a stream was not processed;
- flags the connection, so ``GuardedConnection`` stops the pool from giving
  it new requests.

Only frame headers are read; nothing is decoded, copied or reordered except
the held GOAWAY and the injected resets, which go in at frame boundaries.
"""

from __future__ import annotations

import ssl
import struct
import typing

import h2.exceptions
import httpcore

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_DATA, _HEADERS, _RST_STREAM, _GOAWAY = 0x0, 0x1, 0x3, 0x7
_END_STREAM = 0x1
_REFUSED_STREAM = 0x7
_FRAME_HEADER = struct.Struct(">BHBBL")  # length as 1 + 2 bytes, type, flags, stream


def refused_stream_frame(stream_id: int) -> bytes:
    """An RST_STREAM frame with error code REFUSED_STREAM."""
    return _FRAME_HEADER.pack(0, 4, _RST_STREAM, 0, stream_id) + struct.pack(">L", _REFUSED_STREAM)


class GoawayState:
    """What one connection's guard has seen; shared with ``GuardedConnection``."""

    __slots__ = ("draining", "last_stream_id")

    def __init__(self) -> None:
        #: ``last_stream_id`` of the lowest GOAWAY received, or None.
        self.last_stream_id: int | None = None
        #: The connection must take no new requests.
        self.draining = False


class _Frames:
    """Follows the frame boundaries of one direction of an HTTP/2 connection."""

    __slots__ = ("complete", "flags", "header", "held", "kind", "remaining", "stream_id")

    def __init__(self) -> None:
        self.header = b""  # a frame header still arriving
        self.remaining = 0  # payload bytes of the current frame still to come
        self.kind = self.flags = self.stream_id = 0
        self.held: bytearray | None = None  # the whole frame, when held back
        self.complete = False  # the last byte of a frame was just consumed

    @property
    def at_boundary(self) -> bool:
        return not self.header and self.remaining == 0

    def advance(self, view: memoryview, out: bytearray | None) -> memoryview:
        """Consume bytes of the current frame, copying them to ``out`` unless held."""
        if self.remaining == 0:
            need = 9 - len(self.header)
            self.header += bytes(view[:need])
            view = view[need:]
            if len(self.header) < 9:
                return view
            high, low, self.kind, self.flags, stream_id = _FRAME_HEADER.unpack(self.header)
            self.remaining = (high << 16) | low
            self.stream_id = stream_id & 0x7FFFFFFF
            if out is not None and self.kind == _GOAWAY:
                self.held = bytearray(self.header)
            elif out is not None:
                out += self.header
            self.header = b""
        take = view[: self.remaining]
        self.remaining -= len(take)
        if self.held is not None:
            self.held += take
        elif out is not None:
            out += take
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
        self._held_goaway: bytes | None = None
        #: Frames for h2 at the next inbound frame boundary.
        self._inject = bytearray()

    def sent(self, data: bytes) -> None:
        """Look at bytes h2 is about to write."""
        view = memoryview(data)
        if self._preface_left:
            skip = min(self._preface_left, len(view))
            self._preface_left -= skip
            view = view[skip:]
        frames = self._out
        while view:
            view = frames.advance(view, None)
            if frames.complete:
                frames.complete = False
                self._on_sent(frames.kind, frames.stream_id)

    def received(self, data: bytes) -> bytes:
        """Bytes read from the server -> the bytes h2 should see now."""
        out = bytearray(self.pending())
        view = memoryview(data)
        frames = self._in
        while view:
            view = frames.advance(view, out)
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
        """The server closed: release a held GOAWAY so h2 learns why."""
        held, self._held_goaway = self._held_goaway, None
        return self.pending() + (held or b"")

    def _on_sent(self, kind: int, stream_id: int) -> None:
        if kind == _HEADERS and stream_id % 2 == 1 and stream_id not in self._open:
            self._open.add(stream_id)
            last = self.state.last_stream_id
            if last is not None and stream_id > last:
                self._refuse(stream_id)
        elif kind == _RST_STREAM:
            self._end(stream_id)

    def _on_received(self, frames: _Frames) -> None:
        if frames.held is not None:
            goaway, frames.held = bytes(frames.held), None
            self._on_goaway(goaway)
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
        self._held_goaway = frame
        for stream_id in sorted(self._open):
            if stream_id > state.last_stream_id:
                self._refuse(stream_id)
        self._maybe_release()

    def _refuse(self, stream_id: int) -> None:
        self._open.discard(stream_id)
        self._inject += refused_stream_frame(stream_id)

    def _end(self, stream_id: int) -> None:
        self._open.discard(stream_id)
        self._maybe_release()

    def _maybe_release(self) -> None:
        last = self.state.last_stream_id
        if self._held_goaway is None or last is None:
            return
        if not any(stream_id <= last for stream_id in self._open):
            self._inject += self._held_goaway
            self._held_goaway = None


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
            self._watch.sent(buffer)
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        guarded = GoawayGuardStream(stream, self._state)
        ssl_object = stream.get_extra_info("ssl_object")
        guarded._decided = True
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            guarded._watch = H2Watch(self._state)
        return guarded

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


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


class GuardedConnection(httpcore.AsyncConnectionInterface):
    """A pool connection that takes no new requests once its server said GOAWAY."""

    def __init__(self, connection: httpcore.AsyncConnectionInterface, state: GoawayState) -> None:
        self._connection = connection
        self._state = state

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        try:
            return await self._connection.handle_async_request(request)
        except httpcore.LocalProtocolError as exc:
            # h2 refused to open another stream: its count of open streams
            # and httpcore's disagree (encode/httpcore#943). New requests go
            # to a fresh connection instead.
            if exc.args and isinstance(exc.args[0], h2.exceptions.TooManyStreamsError):
                self._state.draining = True
            raise

    async def aclose(self) -> None:
        await self._connection.aclose()

    def info(self) -> str:
        return self._connection.info()

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return self._connection.can_handle_request(origin)

    def is_available(self) -> bool:
        return not self._state.draining and self._connection.is_available()

    def has_expired(self) -> bool:
        return self._connection.has_expired() or (
            self._state.draining and self._connection.is_idle()
        )

    def is_idle(self) -> bool:
        return self._connection.is_idle()

    def is_closed(self) -> bool:
        return self._connection.is_closed()

    def __repr__(self) -> str:
        return f"<GuardedConnection {self._connection!r}>"


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
        connection = httpcore.AsyncHTTPConnection(
            origin=origin,
            network_backend=_GuardingBackend(self._backend, state),
            **self._connection_options,
        )
        return GuardedConnection(connection, state)
