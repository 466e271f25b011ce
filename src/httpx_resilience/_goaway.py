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
sooner if it falls idle. Only frame headers are read, plus the payloads of
the few rare frames the guard acts on (GOAWAY, RST_STREAM, SETTINGS, and
WINDOW_UPDATE for a request still being sent); nothing is decoded or
reordered: frames are held back or dropped whole, and the guard's own frames
go in at frame boundaries.

An invalid GOAWAY (on a stream other than 0, or shorter than its 8 bytes)
is a connection error (RFC 9113 §6.8): the guard leaves it to h2, which
fails the connection, and nothing is refused or re-sent because of it.

The guard also keeps two things the server says about load, so that the
pool spreads requests instead of queueing them all on one connection
(httpcore's pool gives every queued request to the first HTTP/2 connection
that is not closed): the server's ``SETTINGS_MAX_CONCURRENT_STREAMS``, and
how many requests a connection is served before its GOAWAY, learned per
origin by ``GuardedConnectionPool``. A connection that has reached either
takes no more requests (``ConnectionNotAvailable`` before anything is sent,
so the pool opens another, within ``max_connections``). A connection whose
server refuses several streams in a row without answering any takes no more
either.

When the server answers a request in full while its body is still being
sent and then resets the stream with ``NO_ERROR`` (an early ``413``, RFC 9113
§8.1), the reset is kept from h2 and the rest of the body is not written:
h2 is given back the flow-control credit of what it dropped, httpcore
finishes "sending" at once, and the caller gets the response.
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

_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _GOAWAY, _WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x7, 0x8
_END_STREAM = _ACK = 0x1
_NO_ERROR, _INTERNAL_ERROR, _REFUSED_STREAM, _ENHANCE_YOUR_CALM = 0x0, 0x2, 0x7, 0xB
_MAX_CONCURRENT_STREAMS, _INITIAL_WINDOW_SIZE = 0x3, 0x4
#: The largest frame a client accepts unless it said otherwise (RFC 9113
#: §4.2; httpcore does not): a longer GOAWAY is left to h2 to refuse.
_MAX_FRAME_SIZE = 16384
_FRAME_HEADER = struct.Struct(">BHBBL")  # length as 1 + 2 bytes, type, flags, stream
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")

#: GOAWAY error codes after which the streams above ``last_stream_id``, though
#: unprocessed, are re-sent only after the retry policy's wait: the server is
#: overloaded (``ENHANCE_YOUR_CALM``) or failing (``INTERNAL_ERROR``).
BACK_OFF_CODES = frozenset({_INTERNAL_ERROR, _ENHANCE_YOUR_CALM})

#: A connection whose server refuses this many streams in a row
#: (``REFUSED_STREAM``), answering none in between, takes no new requests.
REFUSALS_BEFORE_DRAINING = 8

#: The most streams httpcore opens on one connection whatever the server
#: allows (its SETTINGS_MAX_CONCURRENT_STREAMS, read from the wire once sent).
HTTPCORE_MAX_STREAMS = 100

#: Frame types whose payload the guard may read on the way in.
_WATCHED = frozenset({_RST_STREAM, _SETTINGS, _GOAWAY, _WINDOW_UPDATE})

#: The flow-control window h2 is given for a request body the server no
#: longer reads (a stream above a GOAWAY, or an answered upload): enough that
#: httpcore "sends" the rest at once, well below the 2**31-1 limit.
_WINDOW_FOR_DROPPED = 1 << 24

#: Ended streams whose resets are still dropped (each answered early; rare).
_MUTED_KEPT = 64

#: Seconds a cancelled HTTP/2 write may go on: enough for one that is merely
#: in progress to finish, short enough that a cancel stays prompt.
CANCEL_GRACE = 0.25

# A write the socket has room for goes out at once: one default-size DATA
# frame (16 KiB) and a few small frames with it.
_SMALL_WRITE = 20 * 1024


def refused_stream_frame(stream_id: int) -> bytes:
    """An RST_STREAM frame with error code REFUSED_STREAM."""
    return _FRAME_HEADER.pack(0, 4, _RST_STREAM, 0, stream_id) + _U32.pack(_REFUSED_STREAM)


def _window_update(stream_id: int, increment: int) -> bytes:
    return _FRAME_HEADER.pack(0, 4, _WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


@dataclass(frozen=True, slots=True)
class AboveLastStream:
    """Why a request failed: its stream was above the GOAWAY's ``last_stream_id``.

    The server promised not to process such a stream (RFC 9113 §6.8), so the
    request can be sent again on another connection, whatever its method.
    ``error_code`` is the GOAWAY's: 0 (``NO_ERROR``) for a server closing the
    connection in good order.
    """

    stream_id: int
    last_stream_id: int
    error_code: int = _NO_ERROR

    def __str__(self) -> str:
        code = f", error code {self.error_code:#x}" if self.error_code else ""
        return (
            f"the server closed the HTTP/2 connection (GOAWAY, last stream "
            f"{self.last_stream_id}{code}) before processing stream {self.stream_id}"
        )


class OriginLimits:
    """What the pool has learned about one origin's HTTP/2 connections."""

    __slots__ = ("served",)

    def __init__(self) -> None:
        #: Requests a connection is served before the server's GOAWAY, or None.
        self.served: int | None = None


class GoawayState:
    """What one connection's guard has seen; shared with ``GuardedConnection``."""

    __slots__ = (
        "draining",
        "error_code",
        "handed",
        "http1",
        "inside",
        "last_stream_id",
        "limits",
        "max_streams",
        "open",
        "refused",
        "refused_in_a_row",
    )

    def __init__(self, limits: OriginLimits | None = None) -> None:
        #: ``last_stream_id`` of the lowest GOAWAY received, or None.
        self.last_stream_id: int | None = None
        #: The error code of the last GOAWAY received.
        self.error_code = _NO_ERROR
        #: The connection must take no new requests.
        self.draining = False
        #: Streams answered with a local REFUSED_STREAM.
        self.refused: set[int] = set()
        #: Client streams opened and not yet ended.
        self.open: set[int] = set()
        #: Server REFUSED_STREAM resets since the last stream it answered.
        self.refused_in_a_row = 0
        #: Streams the connection may have open at once: until the server
        #: says, httpcore's own limit (as it tells the server in SETTINGS).
        self.max_streams = HTTPCORE_MAX_STREAMS
        #: The origin's learned limits (shared by its connections), if any.
        self.limits = limits
        #: Requests the connection took, and requests it is sending now.
        self.handed = 0
        self.inside = 0
        #: ALPN chose HTTP/1.1: none of the HTTP/2 limits apply.
        self.http1 = False

    def full(self) -> bool:
        """Whether a new request should go to another connection, though this one is open.

        When it has taken as many requests as the origin's connections are
        served before GOAWAY, while some are still in flight (idle, it takes
        more: the server may have raised its limit), or when as many streams
        are in flight as the server allows.
        """
        if self.http1:
            return False
        busy = max(self.inside, len(self.open))
        if not busy:
            return False
        limits = self.limits
        served = None if limits is None else limits.served
        if served is not None and self.handed >= served:
            return True
        return busy >= self.max_streams

    def take(self) -> None:
        """Count a request this connection accepted."""
        limits = self.limits
        if limits is not None and not self.http1:
            served = limits.served
            if served is not None and self.handed >= served:
                # Idle past the learned number, and no GOAWAY: it no longer holds.
                limits.served = None
        self.handed += 1
        self.inside += 1


_KEEP, _HOLD, _DROP, _PEEK = 0, 1, 2, 3


class _Frames:
    """Follows the frame boundaries of one direction of an HTTP/2 connection."""

    __slots__ = (
        "complete",
        "flags",
        "header",
        "held",
        "kind",
        "length",
        "mode",
        "remaining",
        "stream_id",
    )

    def __init__(self) -> None:
        self.header = b""  # a frame header still arriving
        self.remaining = 0  # payload bytes of the current frame still to come
        self.kind = self.flags = self.stream_id = self.length = 0
        self.mode = _KEEP  # what happens to the current frame's bytes
        self.held = bytearray()  # the current frame, when held back or peeked at
        self.complete = False  # the last byte of a frame was just consumed

    @property
    def at_boundary(self) -> bool:
        return not self.header and self.remaining == 0

    def advance(
        self, view: memoryview, out: bytearray, decide: Callable[[_Frames], int]
    ) -> memoryview:
        """Consume bytes of the current frame into ``out``, or hold or drop them.

        ``decide(frames)`` picks, once per frame (its header read), ``_KEEP``,
        ``_HOLD`` (kept in ``held``), ``_DROP``, or ``_PEEK`` (both kept and
        copied to ``held``).
        """
        if self.remaining == 0:
            need = 9 - len(self.header)
            self.header += bytes(view[:need])
            view = view[need:]
            if len(self.header) < 9:
                return view
            high, low, self.kind, self.flags, stream_id = _FRAME_HEADER.unpack(self.header)
            self.remaining = self.length = (high << 16) | low
            self.stream_id = stream_id & 0x7FFFFFFF
            mode = self.mode = decide(self)
            if mode == _KEEP:
                out += self.header
            elif mode != _DROP:
                self.held = bytearray(self.header)
                if mode == _PEEK:
                    out += self.header
            self.header = b""
        take = view[: self.remaining]
        self.remaining -= len(take)
        mode = self.mode
        if mode == _KEEP:
            out += take
        elif mode != _DROP:
            self.held += take
            if mode == _PEEK:
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
        #: Client streams opened and not yet ended (shared with the state).
        self._open = state.open
        #: The highest client stream opened.
        self._highest = 0
        #: Streams whose request h2 is still sending -> the flow-control
        #: credit the server gave each (WINDOW_UPDATE) less what h2 sent,
        #: so that the window h2 sees is ``_window`` plus it, at most.
        self._sending: dict[int, int] = {}
        #: The server's SETTINGS_INITIAL_WINDOW_SIZE.
        self._window = 65535
        #: MAX_CONCURRENT_STREAMS of the server's SETTINGS and of h2's own.
        self._server_streams: int | None = None
        self._client_streams: int | None = None
        #: Refused streams whose request h2 is still sending.
        self._refuse_later: set[int] = set()
        #: Streams answered in full, then reset with NO_ERROR, while h2 was
        #: still sending the request: nothing more of them goes either way.
        self._muted: dict[int, None] = {}
        #: Frames for h2 at the next inbound frame boundary.
        self._inject = bytearray()

    def sent(self, data: bytes) -> bytes:
        """Bytes h2 is about to write -> the bytes to write.

        Once the server has said GOAWAY, it ignores every stream above
        ``last_stream_id``; their frames are not written at all, so a server
        that has closed the connection cannot fail them with a write error.
        Nor are those of a stream muted after an early answer. h2 gets back
        the flow-control credit of every DATA frame kept from the server.
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
                self._on_sent(frames)
        return bytes(out)

    def _route_sent(self, frames: _Frames) -> int:
        stream_id = frames.stream_id
        last = self.state.last_stream_id
        if (last is not None and stream_id > last) or stream_id in self._muted:
            return _DROP
        if frames.kind == _SETTINGS and not frames.flags & _ACK:
            return _PEEK  # h2's own MAX_CONCURRENT_STREAMS (httpcore keeps to it too)
        return _KEEP

    def _route_received(self, frames: _Frames) -> int:
        kind = frames.kind
        if kind in _WATCHED:
            # Rare frames; payloads well-formed enough to read, or h2 judges them.
            length = frames.length
            stream_id = frames.stream_id
            if kind == _RST_STREAM:
                return _HOLD if length == 4 else _KEEP
            if kind == _WINDOW_UPDATE:
                return _HOLD if stream_id in self._sending and length == 4 else _KEEP
            if kind == _SETTINGS:
                valid = not frames.flags & _ACK and length % 6 == 0 and not stream_id
                return _PEEK if valid and length <= _MAX_FRAME_SIZE else _KEEP
            # GOAWAY: only a valid one is kept from h2; on another stream or
            # too short it is a connection error (RFC 9113 §6.8) for h2 to raise.
            return _HOLD if not stream_id and 8 <= length <= _MAX_FRAME_SIZE else _KEEP
        return _KEEP

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

    def _on_sent(self, frames: _Frames) -> None:
        kind, stream_id = frames.kind, frames.stream_id
        if kind == _DATA:
            if frames.mode == _DROP:
                if frames.length:
                    # Never reaches the server, so never counts against its
                    # windows: give h2 its credit back.
                    self._inject += _window_update(stream_id, frames.length)
                    self._inject += _window_update(0, frames.length)
                if frames.flags & _END_STREAM:
                    self._sent_all(stream_id)
                return
            credit = self._sending.get(stream_id)
            if credit is not None:
                if frames.flags & _END_STREAM:
                    self._sent_all(stream_id)
                else:
                    self._sending[stream_id] = credit - frames.length
            return
        if kind == _HEADERS:
            ends = frames.flags & _END_STREAM
            if stream_id > self._highest and stream_id % 2 == 1:
                self._highest = stream_id
                self._open.add(stream_id)
                if not ends:
                    self._sending[stream_id] = 0
                last = self.state.last_stream_id
                if last is not None and stream_id > last:
                    self._refuse(stream_id)
            elif ends and stream_id in self._sending:
                self._sent_all(stream_id)  # trailers
            return
        if kind == _RST_STREAM:
            self._refuse_later.discard(stream_id)
            self._sending.pop(stream_id, None)
            self._open.discard(stream_id)
        elif kind == _SETTINGS and frames.mode == _PEEK:
            self._on_settings(bytes(frames.held), server=False)

    def _sent_all(self, stream_id: int) -> None:
        """h2 has sent the whole request of ``stream_id``."""
        self._sending.pop(stream_id, None)
        if stream_id in self._refuse_later:
            self._refuse_later.discard(stream_id)
            self._inject += refused_stream_frame(stream_id)

    def _on_received(self, frames: _Frames) -> None:
        if frames.mode == _KEEP:
            if frames.flags & _END_STREAM and frames.kind in (_DATA, _HEADERS):
                self._open.discard(frames.stream_id)
                self.state.refused_in_a_row = 0  # the server answers
            return
        frame = bytes(frames.held)
        kind, stream_id = frames.kind, frames.stream_id
        if kind == _SETTINGS:  # peeked: h2 has it already
            self._on_settings(frame, server=True)
        elif kind == _GOAWAY:
            self._on_goaway(frame)  # and never hand it to h2
        elif kind == _WINDOW_UPDATE:
            if stream_id in self._muted:
                return  # the server's business is over with that stream
            credit = self._sending.get(stream_id)
            if credit is not None:  # the request may have ended since the header came
                self._sending[stream_id] = credit + (_U32.unpack_from(frame, 9)[0] & 0x7FFFFFFF)
            self._inject += frame
        elif self._on_reset(stream_id, _U32.unpack_from(frame, 9)[0]):
            self._inject += frame

    def _on_reset(self, stream_id: int, error_code: int) -> bool:
        """The server reset a stream: whether h2 should see it."""
        if stream_id in self._muted:
            return False  # the stream is over for h2; its resets would only fail it
        if (
            error_code == _NO_ERROR
            and stream_id in self._sending
            and stream_id not in self._open
            and stream_id not in self.state.refused
        ):
            # Answered in full while h2 is still sending the request: "stop
            # sending, the response is complete" (RFC 9113 §8.1). h2 would
            # drop the response, so it never sees the reset; the rest of the
            # body goes nowhere.
            self._muted[stream_id] = None
            if len(self._muted) > _MUTED_KEPT:
                del self._muted[next(iter(self._muted))]
            self._open_window(stream_id)
            return False
        if error_code == _REFUSED_STREAM:
            state = self.state
            state.refused_in_a_row += 1
            if state.refused_in_a_row >= REFUSALS_BEFORE_DRAINING:
                state.draining = True
        self._open.discard(stream_id)
        self._sending.pop(stream_id, None)
        self._refuse_later.discard(stream_id)
        return True

    def _on_settings(self, frame: bytes, *, server: bool) -> None:
        """Read a SETTINGS frame of the server's, or of h2's own."""
        for offset in range(9, len(frame), 6):
            identifier, value = _SETTING.unpack_from(frame, offset)
            # 0 stops new streams for a while; httpcore ignores it, and so do we.
            if identifier == _MAX_CONCURRENT_STREAMS and value:
                if server:
                    self._server_streams = value
                else:
                    self._client_streams = value
            elif identifier == _INITIAL_WINDOW_SIZE and server:
                self._window = value
        # httpcore opens no more streams than it lets the server open.
        mine = HTTPCORE_MAX_STREAMS if self._client_streams is None else self._client_streams
        theirs = self._server_streams
        self.state.max_streams = mine if theirs is None else min(mine, theirs)

    def _on_goaway(self, frame: bytes) -> None:
        last, error_code = struct.unpack_from(">LL", frame, 9)
        last &= 0x7FFFFFFF
        state = self.state
        state.draining = True
        state.error_code = error_code
        if state.last_stream_id is None or last < state.last_stream_id:
            state.last_stream_id = last
        for stream_id in sorted(self._open):
            if stream_id > state.last_stream_id:
                self._refuse(stream_id)

    def _refuse(self, stream_id: int) -> None:
        """Answer a stream above ``last_stream_id`` with REFUSED_STREAM.

        Only once h2 has sent all of its request: reset earlier, h2 would
        fail httpcore still sending the body (StreamClosedError), leaving the
        body's iterator unfinished. Until then, what h2 sends of it is
        dropped and credited back, so that comes at once.
        """
        state = self.state
        self._open.discard(stream_id)
        state.refused.add(stream_id)
        last = state.last_stream_id
        limits = state.limits
        if state.error_code == _NO_ERROR and last and limits is not None:
            # A server closing connections in good order after so many
            # requests, and this one was sent too many: the pool learns the
            # fewest (too many would be re-sent; see GoawayState.take).
            served = (last + 1) // 2
            if limits.served is None or served < limits.served:
                limits.served = served
        if stream_id in self._sending:
            self._refuse_later.add(stream_id)
            self._open_window(stream_id)
        else:
            self._inject += refused_stream_frame(stream_id)

    def _open_window(self, stream_id: int) -> None:
        """Let h2 send the rest of a request body that will be dropped, at once.

        h2's window for the stream is at most ``_window`` plus its credit
        (it may lag by bytes h2 has queued but not yet written); raising
        that to ``_WINDOW_FOR_DROPPED`` unblocks httpcore without ever
        taking h2 past the 2**31-1 limit.
        """
        window = self._window + self._sending[stream_id]
        if window < _WINDOW_FOR_DROPPED:
            self._inject += _window_update(stream_id, _WINDOW_FOR_DROPPED - window)


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
            self._state.http1 = True
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

    Nor while it has as many requests as its server serves at once, or on
    one connection (see ``GoawayState.full``): the request goes to another
    connection before anything of it is sent.

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
        state = self._goaway
        if self._abandoned or state.draining or state.full():
            # Before anything is sent: the pool gives the request to another
            # connection (a new one, within max_connections) or queues it.
            raise httpcore.ConnectionNotAvailable()
        self._requests_seen += 1
        state.take()
        try:
            try:
                return await super().handle_async_request(request)
            finally:
                state.inside -= 1
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
                raise httpcore.RemoteProtocolError(
                    AboveLastStream(stream_id, last, state.error_code)
                ) from exc
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
        state = self._goaway
        return not state.draining and not state.full() and super().is_available()

    def has_expired(self) -> bool:
        if self._orphaned():
            return True
        return super().has_expired() or (self._goaway.draining and self.is_idle())

    def is_idle(self) -> bool:
        # httpcore's HTTP/2 connection turns idle, to be closed or to expire,
        # when its last open stream ends, though requests may still be
        # waiting inside for a stream of their own.
        return not self._goaway.inside and super().is_idle()


#: Origins whose learned limits a pool keeps (least recently connected to go first).
ORIGINS_KEPT = 256


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
        #: What the origins' GOAWAYs taught, the most recently used last.
        self._limits: dict[tuple[bytes, bytes, int], OriginLimits] = {}

    def _limits_of(self, origin: httpcore.Origin) -> OriginLimits:
        key = (origin.scheme, origin.host, origin.port)
        limits = self._limits.pop(key, None)
        if limits is None:
            limits = OriginLimits()
            if len(self._limits) >= ORIGINS_KEPT:
                del self._limits[next(iter(self._limits))]
        self._limits[key] = limits
        return limits

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        state = GoawayState(self._limits_of(origin))
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


def resend_at_once(exc: BaseException) -> bool:
    """Whether a failure the server provably never processed may be re-sent at once.

    Yes for ``REFUSED_STREAM`` and for a stream above the ``last_stream_id``
    of a GOAWAY sent in good order; not after a GOAWAY saying
    ``ENHANCE_YOUR_CALM`` (the server is overloaded) or ``INTERNAL_ERROR``:
    those requests are still safe to re-send, whatever their method, but
    only after the retry policy's wait and within its budget.
    """
    if unprocessed_reason(exc) is None:
        return False
    cause = exc.__cause__
    detail = cause.args[0] if cause is not None and cause.args else None
    if isinstance(detail, (AboveLastStream, h2.events.ConnectionTerminated)):
        return detail.error_code not in BACK_OFF_CODES
    return True
