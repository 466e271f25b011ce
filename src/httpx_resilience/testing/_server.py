"""FaultServer: a real HTTP/1.1 and HTTP/2 server on loopback that fails on purpose.

Built on h11 and h2 over anyio sockets, so it runs in the caller's event loop
(asyncio or trio) and can do what a well-behaved server never does: reset a
connection mid-body, refuse a stream, send GOAWAY and still answer the
streams it covers (RFC 9113 §6.8), stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import json
import logging
import os
import signal
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeAlias, cast
from urllib.parse import parse_qs

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h11
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream
from hyperframe.frame import GoAwayFrame

from ._plan import (
    Chooser,
    Delay,
    FaultPlan,
    GoAway,
    Headers,
    Outcome,
    Refuse,
    Reset,
    ResetMidBody,
    Respond,
    SlowBody,
    Stall,
)

if TYPE_CHECKING:
    import trustme

logger = logging.getLogger("httpx_resilience.testing")

LOOPBACK = "127.0.0.1"
#: How long a closing connection waits for the client to hang up first. Closing
#: while a byte from the client is still unread makes the kernel send a RST,
#: which can destroy the response the client has not read yet.
LINGER = 1.0
HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 65536
#: The built-in ``/bytes`` body and the filler of made-up bodies, one block reused.
_BLOCK = b"0123456789abcdef" * 4096
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The standard reason phrase of each status, for the HTTP/1.1 status line.
_REASONS = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}
_HOP_BY_HOP = frozenset(
    {"connection", "content-length", "keep-alive", "proxy-connection", "transfer-encoding"}
)
_H2_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    # Inbound headers stay checked: a client bug should fail loudly here. What
    # we send is lower-case and well-formed by construction; checking it again
    # would cost a fifth of h2's time per request.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)

# What a client that hangs up, resets or speaks nonsense makes a connection
# raise; the connection just ends. Anything else is a bug of the server.
_PEER_ERRORS = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,  # includes ssl.SSLError and TimeoutError
    h11.ProtocolError,
    h2.exceptions.ProtocolError,
)

Ending: TypeAlias = Literal["graceful", "reset", "close"]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the fault server saw it, and what it did with it.

    >>> [r.method for r in server.received if r.processed]  # doctest: +SKIP
    ['GET', 'POST']

    Recorded when the request's body is complete; the response fields are
    filled in when the response ends. ``processed`` is False for refused
    streams and for HTTP/2 streams above a GOAWAY's ``last_stream_id``
    (``outcome`` is then None: the plan never saw them). ``complete`` means
    the whole response was handed to the socket.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    http_version: str
    connection: int
    stream_id: int | None
    outcome: Outcome | None
    processed: bool
    status: int | None = None
    body_sent: int = 0
    complete: bool = False

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def traceparent(self) -> str | None:
        return self.headers.get("traceparent")


@dataclass(frozen=True, slots=True)
class GoAwaySent:
    """One GOAWAY the fault server sent: on which connection, covering which streams."""

    connection: int
    last_stream_id: int
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class _Body:
    """A response body: given bytes, or ``size`` bytes of filler never held in full."""

    size: int
    data: bytes | None = None

    def chunks(self, stop: int | None = None) -> Iterator[bytes]:
        end = self.size if stop is None else min(stop, self.size)
        if self.data is not None:
            if end:
                yield self.data[:end]
            return
        for start in range(0, end, len(_BLOCK)):
            # A full slice of bytes is the block itself, not a copy.
            yield _BLOCK[: min(len(_BLOCK), end - start)]


def _filler(size: int) -> _Body:
    return _Body(size)


def _builtin_body(method: str, path: str, query: str, http_version: str) -> tuple[str, _Body]:
    if path == "/bytes":
        sizes = parse_qs(query).get("size", ["0"])
        try:
            size = max(0, int(sizes[0]))
        except ValueError:
            size = 0
        return "application/octet-stream", _filler(size)
    payload = json.dumps({"method": method, "path": path, "http_version": http_version})
    data = payload.encode()
    return "application/json", _Body(len(data), data)


def _response_head(
    respond: Respond, method: str, path: str, query: str, http_version: str
) -> tuple[int, Headers, _Body]:
    """Status, headers and body of a ``Respond``: pure, shared by both protocols."""
    if respond.body is None:
        content_type, body = _builtin_body(method, path, query, http_version)
        extra: Headers = (("content-type", content_type),)
    else:
        body, extra = _Body(len(respond.body), respond.body), ()
    given = cast(Headers, respond.headers)  # normalised by Respond
    headers = extra + tuple((name, value) for name, value in given if name not in _HOP_BY_HOP)
    if method == "HEAD" or respond.status in (204, 304):
        body = _Body(0)
    return respond.status, headers, body


class FaultServer:
    """A real HTTP server on 127.0.0.1 that answers per a ``FaultPlan``, in your event loop.

    >>> plan = FaultPlan(routes={"/pay": [Refuse(), Respond(201)]})
    >>> async with FaultServer(plan) as server:  # doctest: +SKIP
    ...     async with httpx.AsyncClient(http2=True, verify=server.ssl_context) as client:
    ...         response = await client.post(f"{server.url}/pay", json={})
    ...     assert [r.processed for r in server.received] == [False, True]

    TLS (the default) offers HTTP/2 and HTTP/1.1 by ALPN with a trustme
    certificate for ``localhost`` and ``127.0.0.1``; give clients
    ``ssl_context`` or ``ca_path``. Plain HTTP serves HTTP/1.1, and HTTP/2
    by prior knowledge when ``http2`` is on. The server runs in a task
    group of the current event loop, binds 127.0.0.1 only, and stops by
    itself ``max_lifetime`` seconds after it started; leaving the ``async
    with`` closes every connection.
    """

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        http2: bool = True,
        tls: bool = True,
        port: int = 0,
        max_lifetime: float = 300.0,
        ca: trustme.CA | None = None,
    ) -> None:
        if max_lifetime <= 0:
            raise ValueError(f"max_lifetime must be > 0 seconds, got {max_lifetime}")
        self.plan = plan or FaultPlan()
        self.http2 = http2
        self.tls = tls
        self.max_lifetime = max_lifetime
        #: Every request, in the order their bodies were complete.
        self.received: list[Received] = []
        #: Every HTTP/2 GOAWAY sent, in order.
        self.goaways: list[GoAwaySent] = []
        #: Unexpected errors of connection handlers (bugs); raised on exit.
        self.errors: list[Exception] = []
        self._requested_port = port
        self._ca = ca
        self._chooser = Chooser(self.plan)
        self._connections = 0
        self._port: int | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._ca_pem = b""
        self._ca_file: Path | None = None
        self._scope = anyio.CancelScope()
        self._stopped = anyio.Event()
        self._exit_stack: contextlib.AsyncExitStack | None = None

    # -- what clients need ------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fault server is not started; use `async with FaultServer()`")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, ``https://127.0.0.1:PORT`` or ``http://...``, no trailing slash."""
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the server's certificate: ``verify=server.ssl_context``."""
        if self._client_ssl is None:
            raise RuntimeError("no TLS: this fault server was made with tls=False")
        return self._client_ssl

    @property
    def ca_pem(self) -> bytes:
        """The PEM of the CA that signed the server's certificate."""
        if not self._ca_pem:
            raise RuntimeError("no TLS: this fault server was made with tls=False")
        return self._ca_pem

    @property
    def ca_path(self) -> Path:
        """A PEM file of the CA, for ``--cacert`` or ``SSL_CERT_FILE``; deleted at close."""
        if self._ca_file is None:
            fd, name = tempfile.mkstemp(prefix="fault-server-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as file:
                file.write(self.ca_pem)
            self._ca_file = Path(name)
        return self._ca_file

    @property
    def connections(self) -> int:
        """How many connections the server has accepted."""
        return self._connections

    # -- what tests assert ------------------------------------------------

    def processed_count(self, value: str, header: str = "x-request-id") -> int:
        """How many times a request carrying ``header: value`` was processed.

        >>> server.processed_count(key, header="idempotency-key")  # doctest: +SKIP
        1
        """
        header = header.lower()
        return sum(1 for r in self.received if r.processed and r.headers.get(header) == value)

    def duplicates(self, header: str = "x-request-id") -> dict[str, int]:
        """Values of ``header`` whose requests were processed more than once, with the count.

        >>> assert server.duplicates() == {}, "a POST reached the server twice"  # doctest: +SKIP
        """
        header = header.lower()
        counts: dict[str, int] = {}
        for record in self.received:
            value = record.headers.get(header)
            if record.processed and value is not None:
                counts[value] = counts.get(value, 0) + 1
        return {value: count for value, count in counts.items() if count > 1}

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> FaultServer:
        if self._exit_stack is not None:
            raise RuntimeError("a FaultServer runs once")
        if self.tls:
            self._set_up_tls()
        async with contextlib.AsyncExitStack() as stack:
            listener = await anyio.create_tcp_listener(
                local_host=LOOPBACK, local_port=self._requested_port
            )
            stack.push_async_callback(anyio.aclose_forcefully, listener)
            self._port = listener.extra(SocketAttribute.local_port)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            self._scope.deadline = anyio.current_time() + self.max_lifetime
            task_group.start_soon(self._serve, listener)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        assert self._exit_stack is not None
        try:
            # Not given the body's exception: the task group would wrap it in an
            # ExceptionGroup (always, under trio), and `except` clauses around
            # the `async with` would miss it. It propagates as raised.
            await self._exit_stack.aclose()
        finally:
            if self._ca_file is not None:
                self._ca_file.unlink(missing_ok=True)
        if self.errors and exc_type is None:
            raise RuntimeError(
                f"the fault server failed {len(self.errors)} time(s); first: {self.errors[0]!r}"
            ) from self.errors[0]

    def stop(self) -> None:
        """Stop accepting and close every connection (``async with`` does it on exit)."""
        self._scope.cancel()

    async def wait_stopped(self) -> None:
        """Wait until the server has stopped: ``stop()`` or ``max_lifetime``."""
        await self._stopped.wait()

    async def _serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        try:
            with self._scope:
                async with anyio.create_task_group() as connections:
                    await listener.serve(self._connection, connections)
        finally:
            await anyio.aclose_forcefully(listener)
            self._stopped.set()

    def _set_up_tls(self) -> None:
        try:
            ca = self._ca or _shared_ca()
        except ImportError as exc:  # trustme is a test and demo dependency only
            raise ImportError(
                "FaultServer(tls=True) needs trustme: pip install 'httpx-resilience[demo]', "
                "or pass tls=False"
            ) from exc
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _issued_cert(ca).configure_cert(server)
        server.set_alpn_protocols(["h2", "http/1.1"] if self.http2 else ["http/1.1"])
        # Trusts the test CA alone; also ~50x cheaper than create_default_context(),
        # which loads the system's CAs.
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(client)
        self._server_ssl, self._client_ssl = server, client
        self._ca_pem = ca.cert_pem.bytes()

    # -- per connection ---------------------------------------------------

    async def _connection(self, sock: anyio.abc.SocketStream) -> None:
        self._connections += 1
        number = self._connections
        stream: anyio.abc.ByteStream = sock
        try:
            initial = b""
            if self._server_ssl is not None:
                with anyio.fail_after(HANDSHAKE_TIMEOUT):
                    stream = await TLSStream.wrap(
                        sock,
                        server_side=True,
                        ssl_context=self._server_ssl,
                        # A TLS close_notify exchange would only wait on clients.
                        standard_compatible=False,
                    )
                use_h2 = stream.extra(TLSAttribute.alpn_protocol) == "h2"
            elif self.http2:
                use_h2, initial = await _sniff_preface(sock)
            else:
                use_h2 = False
            handler: _H1Connection | _H2Connection
            if use_h2:
                handler = _H2Connection(self, stream, sock, number)
            else:
                handler = _H1Connection(self, stream, sock, number)
            await handler.run(initial)
        except _PEER_ERRORS:
            pass
        except Exception as exc:
            logger.exception("fault server: connection %d failed", number)
            self.errors.append(exc)
        finally:
            await anyio.aclose_forcefully(stream)

    def _next_outcome(self, path: str) -> Outcome:
        return self._chooser.next(path)

    def _record(self, record: Received) -> int:
        self.received.append(record)
        return len(self.received) - 1

    def _responded(self, index: int, status: int, body_sent: int, complete: bool) -> None:
        record = self.received[index]
        self.received[index] = replace(
            record, status=status, body_sent=body_sent, complete=complete
        )


@functools.cache
def _shared_ca() -> trustme.CA:
    # One CA per process: making keys is the slow part of starting a server.
    import trustme

    return trustme.CA()


@functools.cache
def _issued_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", LOOPBACK)


async def _sniff_preface(sock: anyio.abc.SocketStream) -> tuple[bool, bytes]:
    """Whether a plain connection starts with the HTTP/2 preface, and the bytes read."""
    data = b""
    while len(data) < len(_PREFACE) and _PREFACE.startswith(data):
        data += await sock.receive()
    return data.startswith(_PREFACE), data


async def _reset(sock: anyio.abc.SocketStream) -> None:
    """Close with a TCP RST instead of a FIN: SO_LINGER on, timeout 0."""
    raw = sock.extra(SocketAttribute.raw_socket)
    with contextlib.suppress(OSError):
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await anyio.aclose_forcefully(sock)


async def _close_gracefully(
    sock: anyio.abc.SocketStream, listen: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Send FIN, then read until the client hangs up (at most LINGER s), so no RST follows.

    ``listen`` reads instead of discarding what arrives, when the caller still
    wants to see it.
    """
    with anyio.move_on_after(LINGER), contextlib.suppress(*_PEER_ERRORS):
        await sock.send_eof()
        if listen is not None:
            await listen()
        while True:
            await sock.receive()


def _header_dict(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers:
            headers[name] = f"{headers[name]}, {value}"
        else:
            headers[name] = value
    return headers


def _split_target(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query


# -- HTTP/1.1 ----------------------------------------------------------------


class _H1Connection:
    """One HTTP/1.1 connection: requests one after another, each answered per the plan."""

    def __init__(
        self,
        server: FaultServer,
        stream: anyio.abc.ByteStream,
        sock: anyio.abc.SocketStream,
        number: int,
    ) -> None:
        self._server = server
        self._stream = stream
        self._sock = sock
        self._number = number
        self._h11 = h11.Connection(h11.SERVER)

    async def run(self, initial: bytes) -> None:
        if initial:
            self._h11.receive_data(initial)
        served = 0
        goaway_every = self._server.plan.goaway_every
        while True:
            request = await self._read_request()
            if request is None:
                return
            head, body = request
            method = head.method.decode("ascii")
            path, query = _split_target(head.target.decode("latin-1"))
            outcome = self._server._next_outcome(path)
            processed = not isinstance(outcome, Refuse)
            served += processed
            index = self._server._record(
                Received(
                    method=method,
                    path=path,
                    query=query,
                    headers=_header_dict(head.headers.raw_items()),
                    body=body,
                    http_version="1.1",
                    connection=self._number,
                    stream_id=None,
                    outcome=outcome,
                    processed=processed,
                )
            )
            last = goaway_every is not None and served >= goaway_every
            if not await self._answer(outcome, index, method, path, query, last):
                return
            if self._h11.our_state is h11.MUST_CLOSE:
                await _close_gracefully(self._sock)
                return
            self._h11.start_next_cycle()

    async def _read_request(self) -> tuple[h11.Request, bytes] | None:
        head = await self._next_event()
        if not isinstance(head, h11.Request):
            return None  # the client closed the connection
        parts = []
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return head, b"".join(parts)
            else:
                return None

    async def _next_event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self._stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                data = b""
            self._h11.receive_data(data)

    async def _answer(
        self, outcome: Outcome, index: int, method: str, path: str, query: str, last: bool
    ) -> bool:
        """Apply ``outcome``; whether the connection can serve another request."""
        if isinstance(outcome, Refuse | Reset):
            await _reset(self._sock)
            return False
        if isinstance(outcome, Stall):
            # Wait for the client to give up (it hangs up), at most the stall.
            with anyio.move_on_after(outcome.seconds), contextlib.suppress(*_PEER_ERRORS):
                while await self._stream.receive():
                    pass
            return False
        if isinstance(outcome, Delay):
            await anyio.sleep(outcome.seconds)
            respond = outcome.then
        elif isinstance(outcome, GoAway):
            respond, last = outcome.then, True
        elif isinstance(outcome, SlowBody | ResetMidBody):
            return await self._partial(outcome, index, last)
        else:
            respond = outcome
        status, headers, body = _response_head(respond, method, path, query, "1.1")
        head = self._head(status, headers, body.size, last)
        if body.data is not None and body.size <= READ_SIZE:
            # A small body goes out with the head, in one write.
            data = self._h11.send(h11.Data(data=body.data)) if body.size else b""
            await self._stream.send(head + (data or b""))
        else:
            await self._stream.send(head)
            for chunk in body.chunks():
                await self._send_data(chunk)
        # Content-Length framing: the end of the message adds no bytes.
        self._h11.send(h11.EndOfMessage())
        self._server._responded(index, status, body.size, complete=True)
        return True

    async def _partial(self, outcome: SlowBody | ResetMidBody, index: int, last: bool) -> bool:
        if isinstance(outcome, ResetMidBody):
            await self._stream.send(self._head(200, (), outcome.size, last))
            sent = 0
            for chunk in _filler(outcome.size).chunks(stop=outcome.after):
                await self._send_data(chunk)
                sent += len(chunk)
            self._server._responded(index, 200, sent, complete=False)
            await _reset(self._sock)
            return False
        size = outcome.chunks * outcome.chunk_size
        await self._stream.send(self._head(outcome.status, (), size, last))
        piece = _filler(outcome.chunk_size)
        for number in range(outcome.chunks):
            if number:
                await anyio.sleep(outcome.interval)
            for chunk in piece.chunks():
                await self._send_data(chunk)
            self._server._responded(index, outcome.status, (number + 1) * piece.size, False)
        self._h11.send(h11.EndOfMessage())
        self._server._responded(index, outcome.status, size, complete=True)
        return True

    def _head(self, status: int, headers: Headers, size: int, close: bool) -> bytes:
        fields = [*_length_header(status, size), *headers]
        if close:
            fields.append(("connection", "close"))
        response = h11.Response(
            status_code=status, headers=fields, reason=_REASONS.get(status, b"")
        )
        return self._h11.send(response) or b""

    async def _send_data(self, chunk: bytes) -> None:
        # Content-Length framing passes the bytes through untouched: no copy.
        for piece in self._h11.send_with_data_passthrough(h11.Data(data=chunk)) or ():
            await self._stream.send(piece)


def _length_header(status: int, size: int) -> list[tuple[str, str]]:
    # RFC 9110 §8.6: no Content-Length on 204; on 304 it would describe another body.
    return [] if status in (204, 304) else [("content-length", str(size))]


# -- HTTP/2 ------------------------------------------------------------------


class _H2Stream:
    """One request stream on an HTTP/2 connection, as far as it has arrived."""

    __slots__ = ("body", "ended", "headers", "id", "ignored", "reset")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], ignored: bool):
        self.id = stream_id
        self.headers = headers
        self.body: list[bytes] = []
        #: Above the last_stream_id of our GOAWAY: never processed.
        self.ignored = ignored
        #: Reset by the client.
        self.reset = False
        #: Made only when a handler waits on it; set when the client resets.
        self.ended: anyio.Event | None = None


class _H2Connection:
    """One HTTP/2 connection: a reader that answers what it can at once, tasks for the rest.

    The GOAWAY frame is written by hand, next to h2's own output: h2 moves
    its connection to CLOSED when it sends GOAWAY and then refuses to send
    the responses that RFC 9113 still expects for streams up to
    ``last_stream_id``.
    """

    def __init__(
        self,
        server: FaultServer,
        stream: anyio.abc.ByteStream,
        sock: anyio.abc.SocketStream,
        number: int,
    ) -> None:
        self._server = server
        self._stream = stream
        self._sock = sock
        self._number = number
        self._h2 = h2.connection.H2Connection(config=_H2_CONFIG)
        # Set while a task writes; others queue and wait for it (cheaper than a lock).
        self._writing: anyio.Event | None = None
        self._out: list[bytes] = []
        self._coalesce = False
        self._streams: dict[int, _H2Stream] = {}
        self._window = anyio.Event()
        self._done = False
        self._receiving = anyio.CancelScope()
        self._ending: Ending = "close"
        self._goaway: int | None = None
        self._client_gone_away = False
        self._settled = anyio.Event()
        self._highest_processed = 0
        self._served = 0
        # Answered by the reader in this batch; complete once the batch is flushed.
        self._answered: list[tuple[int, int, int]] = []
        self._task_group: anyio.abc.TaskGroup | None = None

    async def run(self, initial: bytes) -> None:
        self._h2.initiate_connection()
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            await self._read(initial)
            # Every stream that still has a task was reset, or is being torn down.
            task_group.cancel_scope.cancel()
        try:
            if self._ending == "reset":
                await _reset(self._sock)
            elif self._ending == "graceful":
                # Requests sent before the client read our GOAWAY still arrive while
                # we wait for it to hang up: read them, to record them as not processed.
                await _close_gracefully(self._sock, self._listen if self._goaway else None)
        finally:
            for stream in self._streams.values():
                if stream.ignored:
                    # What arrived of a request the client sent after our GOAWAY.
                    self._server._record(self._received(stream, None, processed=False))

    async def _listen(self) -> None:
        """Read on after the last write; every stream is above the GOAWAY by now."""
        while True:
            for event in self._h2.receive_data(await self._stream.receive(READ_SIZE)):
                self._on_event(event)

    def _end(self, ending: Ending) -> None:
        """Ask the reader to stop and close the connection this way."""
        if not self._done or ending == "reset":
            self._ending = ending
        self._done = True
        self._receiving.cancel()

    async def _read(self, data: bytes) -> None:
        """Feed h2, answer, flush; the connection task itself, so never cancelled mid-write."""
        try:
            while True:
                for event in self._h2.receive_data(data) if data else ():
                    if self._done and self._ending == "reset":
                        break  # the server "died" before reading on
                    self._on_event(event)
                await self._flush()
                for index, status, sent in self._answered:
                    self._server._responded(index, status, sent, complete=True)
                self._answered.clear()
                data = b""
                if self._done:
                    return
                # _end() cancels it: a handler can stop the read it waits in.
                self._receiving = anyio.CancelScope()
                with self._receiving:
                    data = await self._stream.receive(READ_SIZE)
        except h2.exceptions.ProtocolError:
            # h2 has queued a GOAWAY naming the error; say it before closing.
            with contextlib.suppress(*_PEER_ERRORS):
                await self._flush()
            self._end("graceful")
        except _PEER_ERRORS:
            self._end("close")

    async def _flush(self) -> None:
        """Write everything queued so far; return once it is handed to the socket."""
        writing = self._writing
        if writing is not None:
            # The task writing now loops until nothing is queued, ours included.
            await writing.wait()
            return
        self._writing = writing = anyio.Event()
        try:
            while True:
                # Usually one piece; a GOAWAY goes in a write of its own unless
                # it asked to be coalesced with what follows.
                self._out.append(self._h2.data_to_send())
                pieces, self._out = [piece for piece in self._out if piece], []
                if self._coalesce:
                    pieces, self._coalesce = [b"".join(pieces)], False
                if not pieces:
                    return
                for piece in pieces:
                    await self._stream.send(piece)
        finally:
            self._writing = None
            writing.set()

    def _wake(self) -> None:
        self._window.set()
        self._window = anyio.Event()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None
            assert event.headers is not None
            ignored = self._goaway is not None and event.stream_id > self._goaway
            # Bytes, since header_encoding is None.
            self._streams[event.stream_id] = _H2Stream(event.stream_id, event.headers, ignored)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            assert event.data is not None
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body.append(event.data)
            if event.flow_controlled_length:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                self._dispatch(stream)
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream.reset = True
                if stream.ended is not None:
                    stream.ended.set()
            self._wake()
            self._check_done()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._client_gone_away = True
            self._check_done()
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self._settled.set()

    def _received(self, stream: _H2Stream, outcome: Outcome | None, processed: bool) -> Received:
        pseudo = {k: v for k, v in stream.headers if k.startswith(b":")}
        path, query = _split_target(pseudo.get(b":path", b"").decode("latin-1"))
        body = b"".join(stream.body)
        stream.body = []
        return Received(
            method=pseudo.get(b":method", b"").decode("ascii", "replace"),
            path=path,
            query=query,
            headers=_header_dict([(k, v) for k, v in stream.headers if not k.startswith(b":")]),
            body=body,
            http_version="2",
            connection=self._number,
            stream_id=stream.id,
            outcome=outcome,
            processed=processed,
        )

    def _dispatch(self, stream: _H2Stream) -> None:
        """The request on ``stream`` is complete: record it, pick its outcome, act."""
        sid = stream.id
        if stream.ignored:
            self._server._record(self._received(stream, None, processed=False))
            self._forget(sid)
            return
        path = _split_target(dict(stream.headers).get(b":path", b"").decode("latin-1"))[0]
        outcome = self._server._next_outcome(path)
        processed = not isinstance(outcome, Refuse)
        goaway_last: int | None = None
        if isinstance(outcome, GoAway):
            # Never less than a stream already handed over: it may be processed.
            goaway_last = max(
                sid if outcome.last_stream_id is None else outcome.last_stream_id,
                self._highest_processed,
            )
            if self._goaway is not None:
                goaway_last = self._goaway
            processed = sid <= goaway_last
        if processed:
            self._highest_processed = max(self._highest_processed, sid)
            self._served += 1
        record = self._received(stream, outcome, processed)
        method, query = record.method, record.query
        index = self._server._record(record)
        every = self._server.plan.goaway_every
        if processed and every is not None and self._served >= every and goaway_last is None:
            goaway_last = self._highest_processed
        if goaway_last is not None and self._goaway is None:
            if isinstance(outcome, GoAway):
                self._send_goaway(goaway_last, outcome.error_code, outcome.coalesce)
            else:
                self._send_goaway(goaway_last, 0, coalesce=False)
        if not processed:
            if isinstance(outcome, Refuse):
                self._h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            self._forget(sid)
            return
        respond: Respond | None = None
        if isinstance(outcome, Respond):
            respond = outcome
        elif isinstance(outcome, GoAway):
            respond = outcome.then
        elif isinstance(outcome, Reset):
            if outcome.scope == "connection" and self._settled.is_set():
                self._end("reset")
                return
            if outcome.scope == "connection":
                self._spawn(stream, outcome, index, method, path, query)
                return
            self._h2.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self._forget(sid)
            return
        if respond is not None:
            status, headers, payload = _response_head(respond, method, path, query, "2")
            if payload.size <= min(self._h2.local_flow_control_window(sid), READ_SIZE):
                # Fits the flow-control window: answer now, flushed with the batch.
                self._h2.send_headers(sid, _h2_head(status, headers, payload.size))
                sent = self._queue_data(sid, payload)
                self._h2.end_stream(sid)
                self._answered.append((index, status, sent))
                self._forget(sid)
                return
        self._spawn(stream, outcome, index, method, path, query)

    def _spawn(
        self, stream: _H2Stream, outcome: Outcome, index: int, method: str, path: str, query: str
    ) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(self._answer, stream, outcome, index, method, path, query)

    def _send_goaway(self, last_stream_id: int, error_code: int, coalesce: bool) -> None:
        self._goaway = last_stream_id
        self._server.goaways.append(GoAwaySent(self._number, last_stream_id, error_code))
        frame = GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code)
        # Behind whatever h2 has queued, ahead of anything it queues next.
        self._out.append(self._h2.data_to_send())
        self._out.append(frame.serialize())
        self._coalesce = coalesce
        for stream in self._streams.values():
            if stream.id > last_stream_id:
                stream.ignored = True

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._check_done()

    def _check_done(self) -> None:
        """After a GOAWAY, close once every stream it covers is answered."""
        if self._goaway is None and not self._client_gone_away:
            return
        if all(stream.ignored for stream in self._streams.values()):
            self._end("graceful")

    def _queue_data(self, stream_id: int, payload: _Body, stop: int | None = None) -> int:
        sent = 0
        frame_size = self._h2.max_outbound_frame_size
        for chunk in payload.chunks(stop):
            for start in range(0, len(chunk), frame_size):
                piece = chunk[start : start + frame_size]
                self._h2.send_data(stream_id, piece)
                sent += len(piece)
        return sent

    async def _answer(
        self,
        stream: _H2Stream,
        outcome: Outcome,
        index: int,
        method: str,
        path: str,
        query: str,
    ) -> None:
        """Apply an outcome that waits, or a body larger than the flow-control window."""
        sid = stream.id
        try:
            if isinstance(outcome, Delay):
                if await self._wait(stream, outcome.seconds):
                    return
                outcome = outcome.then
            if isinstance(outcome, Respond | GoAway):
                respond = outcome.then if isinstance(outcome, GoAway) else outcome
                status, headers, payload = _response_head(respond, method, path, query, "2")
                self._h2.send_headers(sid, _h2_head(status, headers, payload.size))

                def progress(sent: int) -> None:
                    self._server._responded(index, status, sent, complete=False)

                sent = await self._send_body(stream, payload, progress=progress)
                if sent == payload.size:
                    self._h2.end_stream(sid)
                    await self._flush()
                self._server._responded(index, status, sent, complete=sent == payload.size)
            elif isinstance(outcome, SlowBody):
                await self._slow_body(stream, outcome, index)
            elif isinstance(outcome, Reset):
                await self._settle()
                self._end("reset")
            elif isinstance(outcome, ResetMidBody):
                if outcome.scope == "connection":
                    await self._settle()
                self._h2.send_headers(sid, _h2_head(200, (), outcome.size))
                sent = await self._send_body(stream, _filler(outcome.size), stop=outcome.after)
                self._server._responded(index, 200, sent, complete=False)
                if outcome.scope == "connection":
                    self._end("reset")
                elif not stream.reset:
                    self._h2.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    await self._flush()
            elif isinstance(outcome, Stall) and not await self._wait(stream, outcome.seconds):
                self._h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                await self._flush()
        except h2.exceptions.StreamClosedError:
            pass  # the client reset the stream between two of our steps
        except _PEER_ERRORS:
            self._end("close")
        finally:
            self._forget(sid)

    async def _slow_body(self, stream: _H2Stream, outcome: SlowBody, index: int) -> None:
        size = outcome.chunks * outcome.chunk_size
        self._h2.send_headers(stream.id, _h2_head(outcome.status, (), size))
        await self._flush()
        piece = _filler(outcome.chunk_size)
        sent = 0
        for number in range(outcome.chunks):
            if number and await self._wait(stream, outcome.interval):
                break
            sent_now = await self._send_body(stream, piece)
            sent += sent_now
            self._server._responded(index, outcome.status, sent, complete=False)
            if sent_now < piece.size:
                return
        else:
            self._h2.end_stream(stream.id)
            await self._flush()
            self._server._responded(index, outcome.status, sent, complete=True)

    async def _settle(self) -> None:
        """Wait (briefly) for the client to acknowledge our SETTINGS before a TCP reset.

        Until then the client still has a SETTINGS ACK to write; a reset would
        surface as a WriteError on that write instead of a ReadError on the
        response, depending on timing. Waiting makes the fault repeatable.
        """
        with anyio.move_on_after(LINGER):
            await self._settled.wait()

    async def _wait(self, stream: _H2Stream, seconds: float) -> bool:
        """Sleep up to ``seconds``; whether the client reset the stream meanwhile."""
        if stream.reset:
            return True
        if stream.ended is None:
            stream.ended = anyio.Event()
        with anyio.move_on_after(seconds):
            await stream.ended.wait()
        return stream.reset

    async def _send_body(
        self,
        stream: _H2Stream,
        payload: _Body,
        stop: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Send as flow control allows; the bytes sent (fewer if the client reset).

        ``progress`` hears the bytes handed to the socket so far, whenever the
        server has to wait for the client to open its window.
        """
        sent = 0
        frame_size = self._h2.max_outbound_frame_size
        for chunk in payload.chunks(stop):
            view = memoryview(chunk)
            while view:
                if stream.reset:
                    return sent
                window = self._h2.local_flow_control_window(stream.id)
                if window <= 0:
                    changed = self._window
                    await self._flush()
                    if progress is not None:
                        progress(sent)
                    await changed.wait()
                    continue
                size = min(window, frame_size, len(view))
                self._h2.send_data(stream.id, view[:size])
                view = view[size:]
                sent += size
            # One block at a time keeps what h2 buffers small.
            await self._flush()
        return sent


def _h2_head(status: int, headers: Headers, size: int) -> list[tuple[bytes, bytes]]:
    head = [(b":status", str(status).encode())]
    head.extend(
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in (*_length_header(status, size), *headers)
    )
    return head


# -- blocking entry point ----------------------------------------------------


def run_fault_server(
    plan: FaultPlan | None = None,
    *,
    http2: bool = True,
    tls: bool = True,
    port: int = 0,
    max_lifetime: float = 300.0,
    on_ready: Callable[[FaultServer], object] | None = None,
    backend: str = "asyncio",
) -> list[Received]:
    """Serve until ``max_lifetime`` passes, Ctrl-C or ``kill``; return what was received.

    >>> run_fault_server(  # doctest: +SKIP
    ...     FaultPlan(default=Weighted((9, Respond()), (1, Respond(503, retry_after=1)))),
    ...     on_ready=lambda server: print(server.url, server.ca_path),
    ... )

    ``on_ready`` is called once the server listens (a CLI prints the URL and
    the CA file there). ``backend`` is anyio's: ``"asyncio"`` or ``"trio"``.
    Called from the main thread, it stops the same way on ``SIGINT``
    (Ctrl-C), ``SIGTERM`` and ``SIGHUP``: it closes its connections, deletes
    its CA file and returns. A signal the process was started ignoring
    (``nohup``, ``&`` in a script) stays ignored.
    """
    servers: list[FaultServer] = []

    async def serve() -> None:
        with contextlib.ExitStack() as stack:
            # Listening before the server starts: no signal finds it half made.
            signals = _stop_signals(stack)
            async with FaultServer(
                plan, http2=http2, tls=tls, port=port, max_lifetime=max_lifetime
            ) as server:
                servers.append(server)
                if on_ready is not None:
                    on_ready(server)
                async with anyio.create_task_group() as group:
                    if signals is not None:
                        group.start_soon(_stop_on, signals, server)
                    await server.wait_stopped()
                    group.cancel_scope.cancel()

    # Ctrl-C before the handlers are in: on Python 3.10 asyncio cancels the
    # main task and lets the CancelledError out, instead of KeyboardInterrupt.
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        anyio.run(serve, backend=backend)
    return servers[0].received if servers else []


#: What stops ``run_fault_server``: Ctrl-C, ``kill``, the terminal closing.
_STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _stop_signals(stack: contextlib.ExitStack) -> AsyncIterator[signal.Signals] | None:
    """Receive the stop signals the process does not ignore, when this thread can."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}
    wanted = [number for number, handler in previous.items() if handler != signal.SIG_IGN]
    if not wanted:
        return None
    for number in wanted:
        handler = previous[number]
        if handler is not None:  # None: set outside Python, cannot be put back
            # asyncio puts back the defaults, not what the caller had.
            stack.callback(signal.signal, number, handler)
    try:
        return stack.enter_context(anyio.open_signal_receiver(*wanted))
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows)
        return None


async def _stop_on(signals: AsyncIterator[signal.Signals], server: FaultServer) -> None:
    async for _ in signals:
        server.stop()
