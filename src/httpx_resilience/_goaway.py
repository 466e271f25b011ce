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

import contextlib
import math
import select
import socket
import ssl
import sys
import time
import typing

import anyio
import anyio.lowlevel
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpcore

from ._h2watch import PREFACE, AboveLastStream, GoawayState, H2Watch, OriginLimits

#: Seconds a cancelled HTTP/2 write may go on: enough for one that is merely
#: in progress to finish, short enough that a cancel stays prompt.
CANCEL_GRACE = 0.25

# A write the socket has room for goes out at once: one default-size DATA
# frame (16 KiB) and a few small frames with it.
_SMALL_WRITE = 20 * 1024


class _SendRoom:
    """Whether a socket's send buffer has room, asked without blocking.

    On Linux a TCP socket polls writable only while its free send space is
    at least half of what is queued, so one frame then fits, and a write of
    at most ``sure`` bytes (a quarter of the send buffer as it was at the
    connect: it only grows) goes to the kernel whole. Without a socket to
    ask (another network backend), the answer is no.
    """

    __slots__ = ("_poll", "_sock", "sure")

    def __init__(self, sock: typing.Any) -> None:
        self._sock = sock
        self._poll: typing.Any = None
        self.sure = 0
        if sock is not None and hasattr(select, "poll"):  # not on Windows
            poll = select.poll()
            poll.register(sock, select.POLLOUT)
            self._poll = poll
            with contextlib.suppress(OSError, AttributeError):
                sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                self.sure = min(sndbuf // 4, _SMALL_WRITE)

    def has_room(self) -> bool:
        if self._poll is not None:
            for _, events in self._poll.poll(0):
                return bool(events == select.POLLOUT)
            return False
        if self._sock is None:
            return False
        return bool(select.select([], [self._sock], [], 0)[1])  # pragma: no cover - Windows


def _readable_probe(sock: typing.Any) -> typing.Callable[[], bool] | None:
    """Whether ``sock`` has something to read, asked without blocking; None without poll().

    What httpcore asks an idle HTTP/1.1 connection before reusing it (a
    server that closed it makes it readable), for a fraction of the cost:
    httpcore's anyio streams build a dict of every attribute of the stream
    on each question, about 20 times the cost of the poll() itself, and the
    pool asks every idle connection twice per request.
    """
    if sock is None or not hasattr(select, "poll"):  # no socket, or Windows
        return None
    poll = select.poll()
    try:
        poll.register(sock, select.POLLIN)
    except (OSError, TypeError, ValueError):  # not a socket after all
        return None
    ask = poll.poll

    def readable() -> bool:
        return bool(ask(0))

    return readable


class _PoolBook:
    """What the connections of one pool keep in common, so that the pool's passes stay cheap.

    httpcore 1.0.9's pool asks every connection, in the order it made them,
    whether it is closed, then expired, then idle, on each pass (twice per
    request).
    """

    __slots__ = ("asking", "idle_seen", "keep", "last_seq", "made")

    def __init__(self, keep: int | None) -> None:
        #: The connection the pass has just found unexpired, which it asks next
        #: whether it is idle, to close it if too many are open.
        self.asking: object | None = None
        #: Idle connections kept to this point of the current pass.
        self.idle_seen = 0
        #: Idle connections kept at most (max_keepalive_connections), if we count them.
        self.keep = keep
        #: The connection the pass last asked, by the order they were made in.
        self.last_seq = -1
        #: Connections made so far.
        self.made = 0


#: Seconds an idle HTTP/1.1 connection past max_keepalive_connections stays
#: open, for the next request of a burst or of steady load to take.
SURPLUS_IDLE = 1.0

#: Seconds an idle connection is reused as it is (httpx's keepalive_expiry);
#: idle longer, within its own keepalive_expiry, only while its socket has
#: nothing to read. A server that closed an idle connection (an HTTP/2 one
#: with GOAWAY first) makes it readable; so may frames an HTTP/2 server sent
#: after its last response, which costs a new connection, as at httpx's 5 s.
QUIET_AFTER = 5.0

#: Whether the pool counts every connection again for each idle one on each
#: pass, and closes an idle one whenever more connections than
#: max_keepalive_connections are open, idle or not (httpcore 1.0.9; httpcore2
#: counts the idle ones, once a pass).
_QUADRATIC_POOL = not hasattr(httpcore.AsyncHTTPConnection, "can_multiplex")

#: Origins whose learned limits a pool keeps (least recently connected to go first).
ORIGINS_KEPT = 256


# unasync: begin
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
            try:
                data = await self._stream.read(max_bytes, timeout)
            except Exception:
                self._gone()
                raise
            if not data:
                self._gone()
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
                self._http2(self._stream)
            else:
                self._http1(self._stream)
        watch = self._watch
        if watch is not None:
            if not buffer:
                # httpcore writes whatever h2 has to send, often nothing.
                return
            quiet = not watch.sending  # before this write: no request body on its way
            buffer = watch.sent(buffer)
            if buffer:
                await _async_write_frames(self, buffer, timeout, quiet)
            return
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def _http1(self, stream: httpcore.AsyncNetworkStream) -> None:
        state = self._state
        state.http1 = True
        state.readable = _readable_probe(stream.get_extra_info("socket"))

    def _http2(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._decided = True
        self._watch = H2Watch(self._state)
        self._state.readable = _readable_probe(stream.get_extra_info("socket"))

    def _gone(self) -> None:
        # The server closed or the socket failed: the connection takes no new
        # requests, and goes once idle. (httpcore2's pool keeps an idle HTTP/2
        # connection whose socket is gone, neither available nor expired, for
        # ever: with max_connections of them, every later request times out.)
        self._state.draining = True

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
            await _async_close_shielded(self._stream)
            raise
        ssl_object = stream.get_extra_info("ssl_object")
        protocol = None if ssl_object is None else ssl_object.selected_alpn_protocol()
        if protocol is not None and protocol != "h2":
            # HTTP/1.1 (or another protocol without GOAWAY): httpcore gets the
            # TLS stream itself, and every read and write skips the guard.
            self._http1(stream)
            return stream
        guarded = GoawayGuardStream(stream, self._state)
        if protocol == "h2":
            guarded._http2(stream)
        # Without ALPN the first write decides, as on plain TCP: HTTP/2 by
        # prior knowledge starts with the preface.
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


class GuardedConnection(httpcore.AsyncHTTPConnection):
    """A pool connection that takes no new requests once its server said GOAWAY.

    Nor while it has as many requests as its server serves at once, or on
    one connection (see ``GoawayState.full``): the request goes to another
    connection before anything of it is sent.

    A subclass rather than a wrapper: the pool asks every connection whether
    it is closed, expired, idle or available around every request (twice
    per request, and for each idle connection again on httpcore 1.0.9), so
    these answers are kept cheap: an idle HTTP/1.1 connection asks its own
    socket whether the server closed it, and only one idle connection of the
    pool at a time says it is idle (see ``is_idle``).
    """

    def __init__(
        self, *, state: GoawayState, book: _PoolBook | None = None, **options: typing.Any
    ) -> None:
        super().__init__(**options)
        self._goaway = state
        self._book = _PoolBook(None) if book is None else book
        #: Its place in the order the pool made its connections in.
        self._seq = self._book.made
        self._book.made += 1
        self._keepalive_expiry: float | None = options.get("keepalive_expiry")
        #: When the pool first saw this HTTP/1.1 connection idle since its last request.
        self._idle_since: float | None = None
        #: Requests that reached this connection.
        self._requests_seen = 0
        #: Never used, and reported expired to the pool (see ``_orphaned``).
        self._abandoned = False
        #: A request has begun sending here: setting the connection up is over.
        self._set_up = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        state = self._goaway
        with state.lock:
            if self._abandoned or state.draining or state.full() or self._async_busy():
                # Before anything is sent: the pool gives the request to another
                # connection (a new one, within max_connections) or queues it.
                raise httpcore.ConnectionNotAvailable()
            self._requests_seen += 1
            state.take()
        # Taken: busy from now on, before httpcore says so (see is_available).
        self._idle_since = None
        try:
            try:
                if self._set_up:
                    return await super().handle_async_request(request)
                return await _async_through_setup(self, super().handle_async_request, request)
            finally:
                with state.lock:
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
        except h2.exceptions.ProtocolError as exc:
            # httpcore raises h2's error as it is from setting up
            # the connection again, for a request that waited while another
            # one's setup failed and closed it. Nothing of this request was
            # sent; a connection of its own takes it.
            if super().is_closed():
                raise httpcore.ConnectionNotAvailable() from exc
            raise httpcore.LocalProtocolError(exc) from exc
        except BaseException:
            await self._async_close_if_stranded()
            raise

    async def _async_close_if_stranded(self) -> None:
        """Close the connection if its first request failed and left it of no use to the pool.

        A request cancelled between connecting and its first byte leaves
        httpcore's HTTP/1.1 connection NEW: open, but neither idle,
        available, closed nor expired, so the pool would keep it, counted
        against ``max_connections``, for ever. Closed, the pool drops it.
        """
        if self._requests_seen == 1 and not (
            self._idle() or self.is_available() or super().is_closed() or self._expired()
        ):
            await _async_close_shielded(self)

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
        if state.http1:
            # Busy as soon as a request is inside: httpcore's own connection
            # says so only after a pass of the event loop, and meanwhile its
            # pool hands the same idle connection to every other request of a
            # burst, all but one of which then fail, queue and go round again.
            return not state.inside and not state.draining and super().is_available()
        return (
            not state.draining
            and not state.full()
            and not self._async_busy()
            and super().is_available()
        )

    def _async_busy(self) -> bool:
        """Whether a request of another thread is in flight here (sync clients only).

        httpcore's sync HTTP/2 connection does not serialize h2's state
        machine between threads (encode/httpx#3002): two streams in flight
        from two threads corrupt its HPACK and stream state. So a sync
        connection carries one request at a time, and the pool opens more
        for more threads, as it does for HTTP/1.1.
        """
        return _async_one_at_a_time and (
            self._goaway.inside > 0 or (self._requests_seen > 0 and not super().is_idle())
        )

    def has_expired(self) -> bool:
        expired = self._expired()
        if not expired and _QUADRATIC_POOL:
            self._book.asking = self
        return expired

    def _expired(self) -> bool:
        if self._orphaned():
            return True
        state = self._goaway
        if not self._idle():
            # Not while a request is inside: see is_closed.
            return not state.inside and super().has_expired()
        readable = state.readable
        idle_for = None
        if readable is None:
            expired = super().has_expired() or state.draining
        else:
            # An idle connection: expired past keepalive_expiry, or when the
            # server closed it (its socket is readable), as httpcore judges an
            # HTTP/1.1 one; an HTTP/2 one is asked only once idle past
            # QUIET_AFTER. The pool asks right after each response ends.
            now = time.monotonic()
            since = self._idle_since
            if since is None:
                since = self._idle_since = now
            idle_for = now - since
            expiry = self._keepalive_expiry
            expired = (
                state.draining
                or (expiry is not None and idle_for > expiry)
                or ((state.http1 or idle_for > QUIET_AFTER) and readable())
            )
        if expired:
            return True
        book = self._book
        if book.keep is None:
            return False
        # Idle connections past max_keepalive_connections go, the ones the
        # pass comes to last (the newest), once idle for SURPLUS_IDLE: under
        # steady load some are idle at any moment, between a response and
        # the next request. httpcore 1.0.9 would close one whenever more
        # connections than that are open, busy or not.
        book.idle_seen += 1
        if book.idle_seen <= book.keep:
            return False
        book.idle_seen -= 1
        # With max_keepalive_connections=0 none is kept, not even for a while.
        return idle_for is None or not book.keep or idle_for > SURPLUS_IDLE

    def is_idle(self) -> bool:
        """Whether the connection carries no request, so that the pool may close it.

        Asked right after ``has_expired`` by httpcore 1.0.9's pool pass, the
        answer is no: there the pool asks only to close idle connections
        past ``max_keepalive_connections``, which ``has_expired`` has done,
        and it would count every connection again for each idle one, twice
        per request (2,500 questions per pass with 50 idle connections).
        """
        book = self._book
        if book.asking is self:
            book.asking = None
            return False
        return self._idle()

    def _idle(self) -> bool:
        # httpcore's HTTP/2 connection turns idle, to be closed or to expire,
        # when its last open stream ends, though requests may still be
        # waiting inside for a stream of their own.
        return not self._goaway.inside and super().is_idle()

    def is_closed(self) -> bool:
        book = self._book
        book.asking = None
        # The pool asks every connection this first, in the order it made
        # them: asked about an earlier one, it has begun a new pass.
        if self._seq <= book.last_seq:
            book.idle_seen = 0
        book.last_seq = self._seq
        # Once a connect failed (a request cancelled while connecting),
        # httpcore's connection says it is closed and expired, though
        # another request inside may connect it again: dropped then, what
        # that request opens would never be closed.
        return super().is_closed() and not self._goaway.inside


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
        keep = limits.get("max_keepalive_connections")
        if keep is not None:
            # Our connections count the idle ones, and keep those past the
            # count for SURPLUS_IDLE (see _expired); httpcore 1.0.9 would
            # count all of them, busy ones too, and both close them at once.
            limits["max_keepalive_connections"] = None
            keep = min(keep, limits.get("max_connections") or keep)
        else:
            keep = None
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
        self._book = _PoolBook(keep)
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
            book=self._book,
            origin=origin,
            network_backend=_GuardingBackend(self._backend, state),
            **self._connection_options,
        )


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
class SyncGoawayGuardStream(httpcore.NetworkStream):
    """A network stream that keeps HTTP/2 GOAWAY from losing answered requests.

    It watches only connections that speak HTTP/2 (ALPN ``h2``, or the h2c
    preface); for HTTP/1.1 it forwards every call untouched.
    """

    def __init__(self, stream: httpcore.NetworkStream, state: GoawayState) -> None:
        self._stream = stream
        self._state = state
        self._watch: H2Watch | None = None
        self._decided = False
        self._room: _SendRoom | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        watch = self._watch
        if watch is None:
            return self._stream.read(max_bytes, timeout)
        pending = watch.pending()
        if pending:
            return pending
        while True:
            try:
                data = self._stream.read(max_bytes, timeout)
            except Exception:
                self._gone()
                raise
            if not data:
                self._gone()
                return watch.eof()
            out = watch.received(data)
            if out:
                return out
            # Everything read was held back (a GOAWAY, or part of a frame
            # header): h2 has nothing new yet, so keep reading.

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not self._decided:
            # Plain TCP: h2c by prior knowledge starts with the preface.
            self._decided = True
            if buffer.startswith(PREFACE):
                self._http2(self._stream)
            else:
                self._http1(self._stream)
        watch = self._watch
        if watch is not None:
            if not buffer:
                # httpcore writes whatever h2 has to send, often nothing.
                return
            quiet = not watch.sending  # before this write: no request body on its way
            buffer = watch.sent(buffer)
            if buffer:
                _write_frames(self, buffer, timeout, quiet)
            return
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def _http1(self, stream: httpcore.NetworkStream) -> None:
        state = self._state
        state.http1 = True
        state.readable = _readable_probe(stream.get_extra_info("socket"))

    def _http2(self, stream: httpcore.NetworkStream) -> None:
        self._decided = True
        self._watch = H2Watch(self._state)
        self._state.readable = _readable_probe(stream.get_extra_info("socket"))

    def _gone(self) -> None:
        # The server closed or the socket failed: the connection takes no new
        # requests, and goes once idle. (httpcore2's pool keeps an idle HTTP/2
        # connection whose socket is gone, neither available nor expired, for
        # ever: with max_connections of them, every later request times out.)
        self._state.draining = True

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            stream = self._stream.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            # httpcore closes the TCP stream when the handshake fails, but
            # not when it is cancelled, and nothing else would.
            _close_shielded(self._stream)
            raise
        ssl_object = stream.get_extra_info("ssl_object")
        protocol = None if ssl_object is None else ssl_object.selected_alpn_protocol()
        if protocol is not None and protocol != "h2":
            # HTTP/1.1 (or another protocol without GOAWAY): httpcore gets the
            # TLS stream itself, and every read and write skips the guard.
            self._http1(stream)
            return stream
        guarded = SyncGoawayGuardStream(stream, self._state)
        if protocol == "h2":
            guarded._http2(stream)
        # Without ALPN the first write decides, as on plain TCP: HTTP/2 by
        # prior knowledge starts with the preface.
        return guarded

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _SyncGuardingBackend(httpcore.NetworkBackend):
    """Wraps the streams one connection opens, reporting to its GoawayState."""

    def __init__(self, backend: httpcore.NetworkBackend, state: GoawayState) -> None:
        self._backend = backend
        self._state = state

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return SyncGoawayGuardStream(stream, self._state)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return SyncGoawayGuardStream(stream, self._state)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class SyncGuardedConnection(httpcore.HTTPConnection):
    """A pool connection that takes no new requests once its server said GOAWAY.

    Nor while it has as many requests as its server serves at once, or on
    one connection (see ``GoawayState.full``): the request goes to another
    connection before anything of it is sent.

    A subclass rather than a wrapper: the pool asks every connection whether
    it is closed, expired, idle or available around every request (twice
    per request, and for each idle connection again on httpcore 1.0.9), so
    these answers are kept cheap: an idle HTTP/1.1 connection asks its own
    socket whether the server closed it, and only one idle connection of the
    pool at a time says it is idle (see ``is_idle``).
    """

    def __init__(
        self, *, state: GoawayState, book: _PoolBook | None = None, **options: typing.Any
    ) -> None:
        super().__init__(**options)
        self._goaway = state
        self._book = _PoolBook(None) if book is None else book
        #: Its place in the order the pool made its connections in.
        self._seq = self._book.made
        self._book.made += 1
        self._keepalive_expiry: float | None = options.get("keepalive_expiry")
        #: When the pool first saw this HTTP/1.1 connection idle since its last request.
        self._idle_since: float | None = None
        #: Requests that reached this connection.
        self._requests_seen = 0
        #: Never used, and reported expired to the pool (see ``_orphaned``).
        self._abandoned = False
        #: A request has begun sending here: setting the connection up is over.
        self._set_up = False

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        state = self._goaway
        with state.lock:
            if self._abandoned or state.draining or state.full() or self._busy():
                # Before anything is sent: the pool gives the request to another
                # connection (a new one, within max_connections) or queues it.
                raise httpcore.ConnectionNotAvailable()
            self._requests_seen += 1
            state.take()
        # Taken: busy from now on, before httpcore says so (see is_available).
        self._idle_since = None
        try:
            try:
                if self._set_up:
                    return super().handle_request(request)
                return _through_setup(self, super().handle_request, request)
            finally:
                with state.lock:
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
        except h2.exceptions.ProtocolError as exc:
            # httpcore raises h2's error as it is from setting up
            # the connection again, for a request that waited while another
            # one's setup failed and closed it. Nothing of this request was
            # sent; a connection of its own takes it.
            if super().is_closed():
                raise httpcore.ConnectionNotAvailable() from exc
            raise httpcore.LocalProtocolError(exc) from exc
        except BaseException:
            self._close_if_stranded()
            raise

    def _close_if_stranded(self) -> None:
        """Close the connection if its first request failed and left it of no use to the pool.

        A request cancelled between connecting and its first byte leaves
        httpcore's HTTP/1.1 connection NEW: open, but neither idle,
        available, closed nor expired, so the pool would keep it, counted
        against ``max_connections``, for ever. Closed, the pool drops it.
        """
        if self._requests_seen == 1 and not (
            self._idle() or self.is_available() or super().is_closed() or self._expired()
        ):
            _close_shielded(self)

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
        if state.http1:
            # Busy as soon as a request is inside: httpcore's own connection
            # says so only after a pass of the event loop, and meanwhile its
            # pool hands the same idle connection to every other request of a
            # burst, all but one of which then fail, queue and go round again.
            return not state.inside and not state.draining and super().is_available()
        return (
            not state.draining and not state.full() and not self._busy() and super().is_available()
        )

    def _busy(self) -> bool:
        """Whether a request of another thread is in flight here (sync clients only).

        httpcore's sync HTTP/2 connection does not serialize h2's state
        machine between threads (encode/httpx#3002): two streams in flight
        from two threads corrupt its HPACK and stream state. So a sync
        connection carries one request at a time, and the pool opens more
        for more threads, as it does for HTTP/1.1.
        """
        return _one_at_a_time and (
            self._goaway.inside > 0 or (self._requests_seen > 0 and not super().is_idle())
        )

    def has_expired(self) -> bool:
        expired = self._expired()
        if not expired and _QUADRATIC_POOL:
            self._book.asking = self
        return expired

    def _expired(self) -> bool:
        if self._orphaned():
            return True
        state = self._goaway
        if not self._idle():
            # Not while a request is inside: see is_closed.
            return not state.inside and super().has_expired()
        readable = state.readable
        idle_for = None
        if readable is None:
            expired = super().has_expired() or state.draining
        else:
            # An idle connection: expired past keepalive_expiry, or when the
            # server closed it (its socket is readable), as httpcore judges an
            # HTTP/1.1 one; an HTTP/2 one is asked only once idle past
            # QUIET_AFTER. The pool asks right after each response ends.
            now = time.monotonic()
            since = self._idle_since
            if since is None:
                since = self._idle_since = now
            idle_for = now - since
            expiry = self._keepalive_expiry
            expired = (
                state.draining
                or (expiry is not None and idle_for > expiry)
                or ((state.http1 or idle_for > QUIET_AFTER) and readable())
            )
        if expired:
            return True
        book = self._book
        if book.keep is None:
            return False
        # Idle connections past max_keepalive_connections go, the ones the
        # pass comes to last (the newest), once idle for SURPLUS_IDLE: under
        # steady load some are idle at any moment, between a response and
        # the next request. httpcore 1.0.9 would close one whenever more
        # connections than that are open, busy or not.
        book.idle_seen += 1
        if book.idle_seen <= book.keep:
            return False
        book.idle_seen -= 1
        # With max_keepalive_connections=0 none is kept, not even for a while.
        return idle_for is None or not book.keep or idle_for > SURPLUS_IDLE

    def is_idle(self) -> bool:
        """Whether the connection carries no request, so that the pool may close it.

        Asked right after ``has_expired`` by httpcore 1.0.9's pool pass, the
        answer is no: there the pool asks only to close idle connections
        past ``max_keepalive_connections``, which ``has_expired`` has done,
        and it would count every connection again for each idle one, twice
        per request (2,500 questions per pass with 50 idle connections).
        """
        book = self._book
        if book.asking is self:
            book.asking = None
            return False
        return self._idle()

    def _idle(self) -> bool:
        # httpcore's HTTP/2 connection turns idle, to be closed or to expire,
        # when its last open stream ends, though requests may still be
        # waiting inside for a stream of their own.
        return not self._goaway.inside and super().is_idle()

    def is_closed(self) -> bool:
        book = self._book
        book.asking = None
        # The pool asks every connection this first, in the order it made
        # them: asked about an earlier one, it has begun a new pass.
        if self._seq <= book.last_seq:
            book.idle_seen = 0
        book.last_seq = self._seq
        # Once a connect failed (a request cancelled while connecting),
        # httpcore's connection says it is closed and expired, though
        # another request inside may connect it again: dropped then, what
        # that request opens would never be closed.
        return super().is_closed() and not self._goaway.inside


class SyncGuardedConnectionPool(httpcore.ConnectionPool):
    """``httpcore.ConnectionPool`` whose connections survive GOAWAY.

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
        network_backend: httpcore.NetworkBackend | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
        **limits: typing.Any,
    ) -> None:
        # anyio runs on asyncio and trio alike (httpcore's AutoBackend is private).
        backend = network_backend or httpcore.SyncBackend()
        keep = limits.get("max_keepalive_connections")
        if keep is not None:
            # Our connections count the idle ones, and keep those past the
            # count for SURPLUS_IDLE (see _expired); httpcore 1.0.9 would
            # count all of them, busy ones too, and both close them at once.
            limits["max_keepalive_connections"] = None
            keep = min(keep, limits.get("max_connections") or keep)
        else:
            keep = None
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
        self._book = _PoolBook(keep)
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

    def create_connection(self, origin: httpcore.Origin) -> httpcore.ConnectionInterface:
        state = GoawayState(self._limits_of(origin))
        return SyncGuardedConnection(
            state=state,
            book=self._book,
            origin=origin,
            network_backend=_SyncGuardingBackend(self._backend, state),
            **self._connection_options,
        )


# unasync: generated end

# Where the async and sync guards differ: async requests share an HTTP/2
# connection, sync ones take turns (see GuardedConnection._async_busy); an
# async write may be cut by a cancellation, and what is closed after a
# cancellation is closed shielded.
_async_one_at_a_time = False
_one_at_a_time = True


async def _async_write_frames(
    guard: GoawayGuardStream, buffer: bytes, timeout: float | None, quiet: bool
) -> None:
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
    room = guard._room
    if room is None:
        room = guard._room = _SendRoom(guard._stream.get_extra_info("socket"))
    size = len(buffer)
    try:
        if size <= _SMALL_WRITE and room.has_room():
            if quiet and size <= room.sure:
                # The common case (a request's HEADERS, small frames, no
                # request body on its way): the kernel takes the bytes whole,
                # and the event loop's transport holds at most a few small
                # frames, so the write cannot block, and a shield alone keeps
                # a cancellation out.
                with anyio.CancelScope(shield=True):
                    await guard._stream.write(buffer, timeout)
                return
            # The socket takes the bytes at once, or most of them. Shielded,
            # with no task to watch for a cancellation: nothing here sees one
            # sent by cancel(), and only a deadline (the caller's, plus the
            # grace) can cut the write.
            deadline = anyio.current_effective_deadline()
            if deadline == -math.inf:  # already cancelled
                deadline = anyio.current_time()
            with anyio.CancelScope(shield=True, deadline=deadline + CANCEL_GRACE) as scope:
                await guard._stream.write(buffer, timeout)
            cut = scope.cancelled_caught
        else:
            # The event loop's transport may keep some of it: its next writes
            # may wait for room, where a cancellation can reach them.
            cut = await _write_watched(guard, buffer, timeout)
    except Exception:
        # A write that failed under a shield (another request cut the
        # connection) must not turn the caller's cancellation into an error.
        await anyio.lowlevel.checkpoint_if_cancelled()
        raise
    if cut:
        await _close_cut(guard)


async def _write_watched(guard: GoawayGuardStream, buffer: bytes, timeout: float | None) -> bool:
    """Write while a task waits for the caller's cancellation; whether the write was cut.

    For writes that may block (the socket is full): the write runs
    shielded, and once the caller's cancel scopes are cancelled it gets
    ``CANCEL_GRACE`` seconds.
    """
    write_scope = anyio.CancelScope(shield=True)

    def grace() -> None:
        write_scope.deadline = anyio.current_time() + CANCEL_GRACE

    await _async_run_watched(write_scope, lambda: guard._stream.write(buffer, timeout), grace)
    return write_scope.cancelled_caught


_T = typing.TypeVar("_T")


async def _async_run_watched(
    scope: anyio.CancelScope,
    run: typing.Callable[[], typing.Awaitable[_T]],
    on_cancel: typing.Callable[[], None],
) -> _T | None:
    """Run ``run()`` in ``scope`` (a shield) while a task waits for the caller's cancellation.

    The caller's cancel scopes reach the waiting task, not ``run()``: if they
    are cancelled while ``run()`` goes on, ``on_cancel`` decides when to cut
    ``scope``. Returns what ``run()`` returned, or None if ``scope`` cut it;
    its exceptions come out as they are, not in an ExceptionGroup, which
    httpcore does not expect.
    """
    done = False

    async def watch() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            if not done:
                on_cancel()
        # Ends quietly: the caller's own cancellation reaches the caller
        # after run(), and nothing else is worth reporting.

    result: _T | None = None
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            with scope:
                result = await run()
        except Exception as exc:
            error = exc
        finally:
            done = True
            group.cancel_scope.cancel()
    if error is not None:
        try:
            raise error
        finally:
            del error
    return result


async def _close_cut(guard: GoawayGuardStream) -> None:
    """Close the connection a cut write left half-written, and let the cancellation through.

    A cut happens only after the caller's cancellation (a deadline past,
    or cancel()), which the checkpoint delivers; the pool drops the
    connection once its last request has ended.
    """
    guard._state.draining = True
    with anyio.CancelScope(shield=True):
        await guard._stream.aclose()
    await anyio.lowlevel.checkpoint_if_cancelled()
    raise httpcore.WriteError(  # pragma: no cover - the cancellation comes first
        "an HTTP/2 write was cut short by a cancellation; the connection is closed"
    )


def _write_frames(
    guard: SyncGoawayGuardStream, buffer: bytes, timeout: float | None, quiet: bool
) -> None:
    # Nothing cancels a sync write: it ends when the socket takes the bytes or
    # the write timeout passes, quiet connection or not.
    guard._stream.write(buffer, timeout)


#: The trace events after which a request holds a cancellation back until it
#: begins sending: it sets up HTTP/2, or the connection it opened is up
#: (over TLS, once the handshake is done).
_SETUP_STARTED = "http2.send_connection_init.started"
_UP_TLS = frozenset({"connection.start_tls.complete"})
_UP_PLAIN = frozenset(
    {"connection.connect_tcp.complete", "connection.connect_unix_socket.complete"}
)
_SETUP_OVER = frozenset(
    {"http2.send_request_headers.started", "http11.send_request_headers.started"}
)


async def _async_through_setup(
    connection: GuardedConnection,
    send: typing.Callable[[httpcore.Request], typing.Awaitable[httpcore.Response]],
    request: httpcore.Request,
) -> httpcore.Response:
    """Send a request that may set the connection up, never cut by a cancellation halfway.

    httpcore leaves two things broken when a cancellation cuts in between a
    request taking a connection and beginning to send on it:

    - The request that sets up an HTTP/2 connection fills the semaphore that
      counts its streams in a loop of 99 acquires, each a checkpoint. Cut
      short, the semaphore keeps permits it should not have; the server's
      SETTINGS then release past its bound, and some other request fails
      with ``ValueError: semaphore released too many times``.
    - A request counted in but not yet sending leaves the connection ACTIVE;
      if it was the one that opened it, no stream ever ends there to make
      it idle, and the pool keeps it for ever.

    So from the moment the connection this request opened is up (or it sets
    up HTTP/2) until its first frame, a cancellation is held back, and
    delivered at the start of sending, before h2 opens a stream: that
    stretch never waits on the network but for the preface, which a new
    socket always has room for. Before and after, a cancellation goes
    through at once. Only requests that reach a connection before any has
    begun sending on it come here.
    """
    scope = anyio.CancelScope(shield=True)
    up = _UP_TLS if request.url.scheme in (b"https", b"wss") else _UP_PLAIN
    hold = _SetupHold(connection, scope, up, request.extensions.get("trace"))
    request.extensions["trace"] = hold
    response: httpcore.Response | None = None

    async def sent() -> httpcore.Response:
        nonlocal response
        response = await send(request)
        return response

    try:
        await _async_run_watched(scope, sent, hold.cancelled)
        # The caller's cancellation, if any, wins: the request was cut by it,
        # or answered as it came. (An error gives way to it in _Pools.)
        await anyio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        if response is not None:
            await _async_close_shielded(response)
        raise
    finally:
        if request.extensions.get("trace") is hold:
            request.extensions["trace"] = hold.chained
    if response is None:  # pragma: no cover - cut only by a cancellation, raised above
        raise httpcore.ConnectError("cancelled")
    return response


class _SetupHold:
    """The trace callback of a request that may set a connection up (see ``_async_through_setup``).

    Every event goes on to the callback it replaced.
    """

    __slots__ = ("_connection", "_holding", "_pending", "_scope", "_up", "chained")

    def __init__(
        self,
        connection: GuardedConnection,
        scope: anyio.CancelScope,
        up: frozenset[str],
        chained: typing.Any,
    ) -> None:
        self._connection = connection
        self._scope = scope
        self._up = up
        self.chained = chained
        self._holding = False
        self._pending = False

    async def __call__(self, name: str, info: dict[str, typing.Any]) -> None:
        if name in _SETUP_OVER:
            self._connection._set_up = True
            if self._holding:
                self._holding = False
                if self._pending:
                    # Before h2 or h11 take the request: nothing is sent.
                    self._scope.cancel()
                    await anyio.lowlevel.checkpoint_if_cancelled()
        elif name in self._up:
            # A cancellation passed on before this is delivered at the
            # connection's first lock, before the request is counted in.
            self._holding = True
        elif name == _SETUP_STARTED and not self._holding:
            # Setting up a connection another request opened: a cancellation
            # passed on but not delivered yet (a lock's shielded checkpoint
            # came after it) is delivered here; httpcore closes the connection.
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._holding = True
        if self.chained is not None:
            await self.chained(name, info)

    def cancelled(self) -> None:
        """The caller was cancelled: pass it on at once, or once sending begins."""
        if self._holding:
            self._pending = True
        else:
            self._scope.cancel()


def _through_setup(
    connection: SyncGuardedConnection,
    send: typing.Callable[[httpcore.Request], httpcore.Response],
    request: httpcore.Request,
) -> httpcore.Response:
    # Nothing cancels a sync request.
    connection._set_up = True
    return send(request)


async def _async_close_shielded(closable: typing.Any) -> None:
    with anyio.CancelScope(shield=True):
        await closable.aclose()


def _close_shielded(closable: typing.Any) -> None:
    closable.close()
