"""The HTTP/2 frame bookkeeping behind the GOAWAY guard: pure, no I/O, no httpcore.

``H2Watch`` reads the frame headers one connection writes and reads (and the
payloads of the few rare frames it acts on) and says what to write, what h2
should see, and what the connection's ``GoawayState`` is; ``_goaway.py``
puts it between httpcore and the socket. Both flavours share it.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

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
        "lock",
        "max_streams",
        "open",
        "readable",
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
        #: Whether the connection's socket has something to read (while idle:
        #: its server closed it, or sent HTTP/2 frames), if it can be asked.
        self.readable: Callable[[], bool] | None = None
        #: Held while the state changes: a sync connection serves many threads.
        self.lock = threading.Lock()

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

    # For the fast scans of H2Watch, which read whole frames in place and
    # keep only a frame cut at the end of a chunk here.

    def rest_of_kept(self, size: int) -> tuple[int, bool]:
        """Pass over what a chunk of ``size`` bytes holds of a kept frame begun earlier.

        Returns where the next frame starts (``size`` if the chunk is all
        that frame's), and whether the kept frame ended in this chunk.
        """
        left = self.remaining
        if left > size:
            self.remaining = left - size
            return size, False
        self.remaining = 0
        return left, True

    def keep_cut(self, kind: int, flags: int, stream_id: int, length: int, left: int) -> None:
        """A kept frame whose last ``left`` payload bytes come in the next chunk."""
        self.kind, self.flags, self.stream_id = kind, flags, stream_id
        self.length, self.mode, self.remaining = length, _KEEP, left


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
        self.sending: dict[int, int] = {}
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
        with self.state.lock:
            kept = 0
            if self.state.last_stream_id is None:
                kept = self._scan_sent(data)
                if kept == len(data):
                    return data
            view = memoryview(data)[kept:]
            out = bytearray(data[:kept])
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
                return _HOLD if stream_id in self.sending and length == 4 else _KEEP
            if kind == _SETTINGS:
                valid = not frames.flags & _ACK and length % 6 == 0 and not stream_id
                return _PEEK if valid and length <= _MAX_FRAME_SIZE else _KEEP
            # GOAWAY: only a valid one is kept from h2; on another stream or
            # too short it is a connection error (RFC 9113 §6.8) for h2 to raise.
            return _HOLD if not stream_id and 8 <= length <= _MAX_FRAME_SIZE else _KEEP
        return _KEEP

    def received(self, data: bytes) -> bytes:
        """Bytes read from the server -> the bytes h2 should see now."""
        with self.state.lock:
            if self.state.last_stream_id is None and not self._inject:
                kept = self._scan_received(data)
                if kept == len(data):
                    return data
                out = bytearray(data[:kept])
                view = memoryview(data)[kept:]
            else:
                out = bytearray(self._pending())
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
        if not self._inject:  # one atomic look, without the lock: the common case
            return b""
        with self.state.lock:
            return self._pending()

    # The fast path, until the first GOAWAY: frame headers are read where they
    # are, and the bytes go on as they came, uncopied. It stops at the first
    # frame it cannot pass on as it is (or whose payload it must read and is
    # not all there), or at a frame header cut short; the general path, which
    # holds, drops and injects frames, takes over from that frame boundary.

    def _scan_sent(self, data: bytes) -> int:
        """How many bytes of ``data`` go out as they are, their frames' bookkeeping done."""
        frames = self._out
        if self._preface_left or frames.header or (frames.remaining and frames.mode != _KEEP):
            return 0
        size = len(data)
        pos = 0
        if frames.remaining:
            pos, ended = frames.rest_of_kept(size)
            if ended:
                self._sent_kept(frames.kind, frames.flags, frames.stream_id, frames.length)
        muted = self._muted
        unpack = _FRAME_HEADER.unpack_from
        while pos + 9 <= size:
            high, low, kind, flags, stream_id = unpack(data, pos)
            length = (high << 16) | low
            stream_id &= 0x7FFFFFFF
            end = pos + 9 + length
            if muted and stream_id in muted:
                return pos
            if kind == _SETTINGS and not flags & _ACK:
                if end > size:
                    return pos
                self._on_settings(data, pos + 9, end, server=False)
            elif end > size:
                # Its payload goes on in the next write: kept, and counted once whole.
                frames.keep_cut(kind, flags, stream_id, length, end - size)
                return size
            else:
                self._sent_kept(kind, flags, stream_id, length)
            pos = end
        return pos

    def _scan_received(self, data: bytes) -> int:
        """How many bytes of ``data`` h2 may have as they are, their frames' bookkeeping done."""
        frames = self._in
        if frames.header or (frames.remaining and frames.mode != _KEEP):
            return 0
        size = len(data)
        pos = 0
        if frames.remaining:
            pos, ended = frames.rest_of_kept(size)
            if ended:
                self._received_kept(frames.kind, frames.flags, frames.stream_id)
        unpack = _FRAME_HEADER.unpack_from
        while pos + 9 <= size:
            high, low, kind, flags, stream_id = unpack(data, pos)
            length = (high << 16) | low
            stream_id &= 0x7FFFFFFF
            end = pos + 9 + length
            if kind in _WATCHED:
                if end > size or not self._watched_as_is(
                    kind, flags, stream_id, length, data, pos
                ):
                    return pos
            elif end > size:
                frames.keep_cut(kind, flags, stream_id, length, end - size)
                return size
            elif flags & _END_STREAM and kind in (_DATA, _HEADERS):
                self._open.discard(stream_id)
                self.state.refused_in_a_row = 0
            pos = end
        return pos

    def _watched_as_is(
        self, kind: int, flags: int, stream_id: int, length: int, data: bytes, start: int
    ) -> bool:
        """Read a whole watched frame at ``start`` of ``data``: whether h2 may have it as it is.

        As ``_route_received`` and ``_on_received`` would, for the frames that
        pass unchanged: SETTINGS, and WINDOW_UPDATE of a request still sending.
        """
        if kind == _SETTINGS:
            if (
                not flags & _ACK
                and length % 6 == 0
                and not stream_id
                and length <= _MAX_FRAME_SIZE
            ):
                self._on_settings(data, start + 9, start + 9 + length, server=True)
            return True
        if kind == _WINDOW_UPDATE:
            credit = self.sending.get(stream_id)
            if credit is None or length != 4:
                return True
            if stream_id in self._muted:
                return False
            self.sending[stream_id] = credit + (_U32.unpack_from(data, start + 9)[0] & 0x7FFFFFFF)
            return True
        if kind == _RST_STREAM:
            return length != 4
        # GOAWAY: a valid one never reaches h2.
        return bool(stream_id) or not 8 <= length <= _MAX_FRAME_SIZE

    def _pending(self) -> bytes:
        if not self._inject or not self._in.at_boundary:
            return b""
        out = bytes(self._inject)
        self._inject.clear()
        return out

    def eof(self) -> bytes:
        """The server closed: refuse the streams still waiting for it."""
        with self.state.lock:
            for stream_id in sorted(self._refuse_later):
                self._inject += refused_stream_frame(stream_id)
            self._refuse_later.clear()
            return self._pending()

    def _on_sent(self, frames: _Frames) -> None:
        kind, stream_id = frames.kind, frames.stream_id
        if kind == _DATA and frames.mode == _DROP:
            if frames.length:
                # Never reaches the server, so never counts against its
                # windows: give h2 its credit back.
                self._inject += _window_update(stream_id, frames.length)
                self._inject += _window_update(0, frames.length)
            if frames.flags & _END_STREAM:
                self._sent_all(stream_id)
        elif kind == _SETTINGS:
            if frames.mode == _PEEK:
                self._on_settings(frames.held, 9, len(frames.held), server=False)
        else:
            self._sent_kept(kind, frames.flags, stream_id, frames.length)

    def _sent_kept(self, kind: int, flags: int, stream_id: int, length: int) -> None:
        """Bookkeeping of a frame h2 sent (or that was dropped, but for DATA)."""
        if kind == _DATA:
            credit = self.sending.get(stream_id)
            if credit is not None:
                if flags & _END_STREAM:
                    self._sent_all(stream_id)
                else:
                    self.sending[stream_id] = credit - length
        elif kind == _HEADERS:
            ends = flags & _END_STREAM
            if stream_id > self._highest and stream_id % 2 == 1:
                self._highest = stream_id
                self._open.add(stream_id)
                if not ends:
                    self.sending[stream_id] = 0
                last = self.state.last_stream_id
                if last is not None and stream_id > last:
                    self._refuse(stream_id)
            elif ends and stream_id in self.sending:
                self._sent_all(stream_id)  # trailers
        elif kind == _RST_STREAM:
            self._refuse_later.discard(stream_id)
            self.sending.pop(stream_id, None)
            self._open.discard(stream_id)

    def _sent_all(self, stream_id: int) -> None:
        """h2 has sent the whole request of ``stream_id``."""
        self.sending.pop(stream_id, None)
        if stream_id in self._refuse_later:
            self._refuse_later.discard(stream_id)
            self._inject += refused_stream_frame(stream_id)

    def _on_received(self, frames: _Frames) -> None:
        if frames.mode == _KEEP:
            self._received_kept(frames.kind, frames.flags, frames.stream_id)
            return
        frame = bytes(frames.held)
        kind, stream_id = frames.kind, frames.stream_id
        if kind == _SETTINGS:  # peeked: h2 has it already
            self._on_settings(frame, 9, len(frame), server=True)
        elif kind == _GOAWAY:
            self._on_goaway(frame)  # and never hand it to h2
        elif kind == _WINDOW_UPDATE:
            if stream_id in self._muted:
                return  # the server's business is over with that stream
            credit = self.sending.get(stream_id)
            if credit is not None:  # the request may have ended since the header came
                self.sending[stream_id] = credit + (_U32.unpack_from(frame, 9)[0] & 0x7FFFFFFF)
            self._inject += frame
        elif self._on_reset(stream_id, _U32.unpack_from(frame, 9)[0]):
            self._inject += frame

    def _received_kept(self, kind: int, flags: int, stream_id: int) -> None:
        if flags & _END_STREAM and kind in (_DATA, _HEADERS):
            self._open.discard(stream_id)
            self.state.refused_in_a_row = 0  # the server answers

    def _on_reset(self, stream_id: int, error_code: int) -> bool:
        """The server reset a stream: whether h2 should see it."""
        if stream_id in self._muted:
            return False  # the stream is over for h2; its resets would only fail it
        if (
            error_code == _NO_ERROR
            and stream_id in self.sending
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
        self.sending.pop(stream_id, None)
        self._refuse_later.discard(stream_id)
        return True

    def _on_settings(self, data: bytes | bytearray, start: int, end: int, *, server: bool) -> None:
        """Read the payload of a SETTINGS frame (``data[start:end]``), the server's or h2's own."""
        for offset in range(start, end - 5, 6):
            identifier, value = _SETTING.unpack_from(data, offset)
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
        if stream_id in self.sending:
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
        window = self._window + self.sending[stream_id]
        if window < _WINDOW_FOR_DROPPED:
            self._inject += _window_update(stream_id, _WINDOW_FOR_DROPPED - window)
