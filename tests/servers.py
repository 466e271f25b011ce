"""Real HTTP servers for tests: Hypercorn in-process, driven by a scripted ASGI app.

One asyncio event loop in a daemon thread serves two listeners on loopback: TLS
(HTTP/2 and HTTP/1.1 by ALPN, certificate from trustme) and plain HTTP/1.1 (h2c
too, by prior knowledge or upgrade). The server owns its loop, so tests may run
on asyncio or trio.

Close clients before stopping a server: a connection that is still open when
the server stops has to be torn down by force, which costs up to a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs

import anyio
import trustme
from anyio.lowlevel import checkpoint
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

__all__ = [
    "LOOPBACK",
    "Received",
    "Reply",
    "ScriptedApp",
    "ServerThread",
    "closed_port",
    "start_servers",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = "127.0.0.1"
DEFAULT_CHUNK = 65536
# asyncio waits 30 s by default for a TLS peer's close_notify; an idle client that
# never reads again would hold stop() that long.
SSL_SHUTDOWN_TIMEOUT = 1.0

# Messages asyncio uses, matched to tell noise from faults.
_ACCEPT_FAILED = "Error on transport creation for incoming connection"
_SLOW_CALLBACK = "Executing %s took %.3f seconds"

# Hypercorn's default error log is a handler of its own writing to stderr. A plain
# named logger routes its lines through logging instead: pytest captures them, and
# shows them with a failing test.
SERVER_LOGGER = logging.getLogger("tests.servers.hypercorn")


@dataclass(frozen=True)
class Reply:
    """One scripted response. The server sleeps `delay` after reading the request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as the server saw it, body read to the end."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    http_version: str


class ScriptedApp:
    """ASGI 3 app: scripted replies per path, built-in routes, a log of requests.

    The server calls it on its own thread while tests read it from theirs, so the
    shared state sits behind one lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self._received: dict[str, list[Received]] = {}
        self._produced: dict[str, int] = {}

    def script(self, path: str, replies: Sequence[Reply]) -> None:
        """Answer requests for `path` with `replies` in order; the last one then repeats."""
        if not replies:
            raise ValueError("script needs at least one reply")
        with self._lock:
            self._scripts[path] = list(replies)
            self._served[path] = 0

    def received(self, path: str) -> list[Received]:
        """Requests for `path`, in the order their bodies were complete.

        A request whose client hung up before the end of its body is not listed.
        """
        with self._lock:
            return list(self._received.get(path, ()))

    def produced(self, token: str) -> int:
        """Bytes of `/stream/{token}` handed to the server so far."""
        with self._lock:
            return self._produced.get(token, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # Anything else (websocket) is refused by returning without accepting.

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                break
        request = Received(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers=_header_dict(scope["headers"]),
            body=bytes(body),
            http_version=scope["http_version"],
        )
        with self._lock:
            self._received.setdefault(request.path, []).append(request)
            reply = self._next_scripted(request.path)

        # A client that hangs up mid-response must stop the app: otherwise it writes
        # on into a closed transport (asyncio logs each write) or spins to the end.
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            if reply is not None:
                await _send_reply(send, reply)
            else:
                await self._builtin(request, send)
            tg.cancel_scope.cancel()

    def _next_scripted(self, path: str) -> Reply | None:
        replies = self._scripts.get(path)
        if replies is None:
            return None
        index = min(self._served[path], len(replies) - 1)
        self._served[path] += 1
        return replies[index]

    async def _builtin(self, request: Received, send: Send) -> None:
        path = request.path
        query = parse_qs(request.query)
        if path == "/echo":
            payload = {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
                "body": request.body.decode("latin-1"),
                "http_version": request.http_version,
            }
            reply = Reply(
                headers={"content-type": "application/json"}, body=json.dumps(payload).encode()
            )
            await _send_reply(send, reply)
        elif path.startswith("/status/") and path.removeprefix("/status/").isdigit():
            await _send_reply(send, Reply(status=int(path.removeprefix("/status/"))))
        elif path.startswith("/stream/") and path != "/stream/":
            size = int(query.get("size", ["0"])[0])
            chunk = max(1, int(query.get("chunk", [str(DEFAULT_CHUNK)])[0]))
            await self._stream(path.removeprefix("/stream/"), size, chunk, send)
        elif path == "/delay":
            await anyio.sleep(float(query.get("seconds", ["0"])[0]))
            await _send_reply(send, Reply(body=b"ok"))
        else:
            await _send_reply(send, Reply(status=404))

    async def _stream(self, token: str, size: int, chunk: int, send: Send) -> None:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(size).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with self._lock:
            self._produced[token] = 0
        remaining = size
        while remaining > 0:
            piece = min(chunk, remaining)
            remaining -= piece
            # Counted before send() returns, so produced() is an upper bound on what
            # the server has taken: a low value is proof of backpressure.
            with self._lock:
                self._produced[token] += piece
            await send({"type": "http.response.body", "body": b"x" * piece, "more_body": True})
            # Once the peer is gone Hypercorn's HTTP/1.1 send returns without ever
            # yielding, so the disconnect watcher would never run to cancel us.
            await checkpoint()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _send_reply(send: Send, reply: Reply) -> None:
    if reply.delay > 0:
        await anyio.sleep(reply.delay)
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
    ]
    # An explicit length keeps HTTP/1.1 replies out of chunked encoding, so what
    # the client sees on the wire is what the test scripted.
    if not any(name == b"content-length" for name, _ in headers):
        headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


def _header_dict(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def closed_port() -> int:
    """A loopback TCP port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


@functools.cache
def _shared_ca() -> trustme.CA:
    # Key generation is the slow part of TLS set-up; one CA can sign for every server.
    return trustme.CA()


class _ServerLoop(asyncio.SelectorEventLoop):
    # Hypercorn gives asyncio.start_server no TLS shutdown timeout; this loop
    # supplies one to every TLS listener it creates.
    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None and sys.version_info >= (3, 11):
            kwargs.setdefault("ssl_shutdown_timeout", SSL_SHUTDOWN_TIMEOUT)
        return await super().create_server(*args, **kwargs)


class _ProblemLog(logging.Handler):
    """Collects warnings and errors logged on the server thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread_id: int | None = None
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # asyncio's debug mode reports slow callbacks; that is timing, not a fault.
        if record.msg == _SLOW_CALLBACK:
            return
        if record.thread == self.thread_id:
            self.lines.append(f"{record.name} {record.levelname}: {record.getMessage()}")


class ServerThread:
    """Hypercorn serving `app` on a TLS and a plain listener from its own thread.

    Both ports are bound in the constructor (ephemeral ones unless given), so the
    URLs are valid before start(). The certificate names `identities`.
    Use it as a context manager, or call start() and stop().

    On stop(), requests still running get `graceful_timeout` seconds to finish and
    are then cancelled (an HTTP/1.1 client that has no response yet gets a 500).
    """

    def __init__(
        self,
        app: ScriptedApp,
        *,
        keep_alive_max_requests: int | None = None,
        keep_alive_timeout: float | None = None,
        graceful_timeout: float = 1.0,
        ca: trustme.CA | None = None,
        identities: Sequence[str] = ("localhost", LOOPBACK),
        tls_port: int = 0,
        http_port: int = 0,
        **overrides: Any,
    ) -> None:
        self.app = app
        self.ca = ca if ca is not None else _shared_ca()
        self.ssl_context = ssl.create_default_context(cadata=self.ca.cert_pem.bytes().decode())
        self._cert = self.ca.issue_cert(*identities)
        self._graceful_timeout = graceful_timeout

        self._config = Config()
        self._config.errorlog = SERVER_LOGGER
        self._config.accesslog = None
        self._config.alpn_protocols = ["h2", "http/1.1"]
        # Our own deadline cancels requests still running after `graceful_timeout`;
        # Hypercorn's must come later, or it cancels whole connections instead,
        # and its cleanup of those logs errors.
        self._config.graceful_timeout = graceful_timeout + SSL_SHUTDOWN_TIMEOUT + 1.0
        if keep_alive_max_requests is not None:
            self._config.keep_alive_max_requests = keep_alive_max_requests
        if keep_alive_timeout is not None:
            self._config.keep_alive_timeout = keep_alive_timeout
        for name, value in overrides.items():
            if not hasattr(Config, name):
                raise TypeError(f"unknown Hypercorn config option {name!r}")
            setattr(self._config, name, value)

        self._tls_sock = socket.create_server((LOOPBACK, tls_port))
        self._plain_sock = socket.create_server((LOOPBACK, http_port))
        self.tls_port: int = self._tls_sock.getsockname()[1]
        self.http_port: int = self._plain_sock.getsockname()[1]
        self.tls_url = f"https://localhost:{self.tls_port}"
        self.http_url = f"http://{LOOPBACK}:{self.http_port}"

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._files = contextlib.ExitStack()
        self._problems = _ProblemLog()
        self._stopped = False

    @property
    def problems(self) -> list[str]:
        """Warnings and errors the server thread logged (a clean run has none)."""
        return list(self._problems.lines)

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None or self._stopped:
            raise RuntimeError("a ServerThread starts once")
        pem = self._files.enter_context(self._cert.private_key_and_cert_chain_pem.tempfile())
        self._config.certfile = pem
        self._config.keyfile = pem
        # Hypercorn wraps an fd:// descriptor in a socket object of its own and closes
        # it at shutdown; giving it duplicates keeps ours the only owners of theirs.
        self._config.bind = [f"fd://{os.dup(self._tls_sock.fileno())}"]
        self._config.insecure_bind = [f"fd://{os.dup(self._plain_sock.fileno())}"]
        for logger in (SERVER_LOGGER, logging.getLogger("asyncio")):
            logger.addHandler(self._problems)
        self._thread = threading.Thread(
            target=self._run, name=f"hypercorn-{self.tls_port}-{self.http_port}", daemon=True
        )
        self._thread.start()
        started = self._ready.wait(timeout)
        # By now Hypercorn has loaded the certificate, or never will.
        self._files.close()
        if started and self._error is None:
            return
        error = self._error
        with contextlib.suppress(RuntimeError):
            self.stop()
        if error is not None:
            raise RuntimeError("server failed to start") from error
        raise RuntimeError(f"server did not start within {timeout} s")

    def stop(self, timeout: float | None = None) -> None:
        """Shut down and join the thread, waiting at most `timeout` seconds."""
        if self._stopped:
            return
        self._stopped = True
        if timeout is None:
            timeout = self._config.graceful_timeout + 5.0
        try:
            loop, event = self._loop, self._stop_event
            if loop is not None and event is not None:
                with contextlib.suppress(RuntimeError):  # the loop has already closed
                    loop.call_soon_threadsafe(event.set)
            if self._thread is not None:
                self._thread.join(timeout)
                if self._thread.is_alive():
                    raise RuntimeError(f"server thread still running after {timeout} s")
        finally:
            for logger in (SERVER_LOGGER, logging.getLogger("asyncio")):
                logger.removeHandler(self._problems)
            self._tls_sock.close()
            self._plain_sock.close()
            self._files.close()
        if self._error is not None:
            raise RuntimeError("server thread failed") from self._error

    def __enter__(self) -> ServerThread:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        # An exception escaping a thread becomes a pytest warning, so an error in
        # whatever test runs next; keep it for start() or stop() to raise instead.
        self._problems.thread_id = threading.get_ident()
        loop = _ServerLoop()
        loop.set_exception_handler(self._on_loop_exception)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            try:
                _close_loop(loop)
            except BaseException as exc:
                self._error = self._error or exc
            self._ready.set()

    async def _serve(self) -> None:
        stop_event = asyncio.Event()
        abort_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._stop_event = stop_event

        async def shutdown_trigger() -> None:
            # Hypercorn calls this once every listener is accepting.
            self._ready.set()
            await stop_event.wait()
            asyncio.get_running_loop().call_later(self._graceful_timeout, abort_event.set)

        app = _abortable(self.app, abort_event)
        await serve(cast(ASGIFramework, app), self._config, shutdown_trigger=shutdown_trigger)

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        # A failed TLS handshake (say, a client that rightly rejects the certificate)
        # is the client's business; Hypercorn's own runner ignores it too. In debug
        # mode asyncio also reports a client that hung up mid-handshake.
        if isinstance(exc, ssl.SSLError):
            return
        if context.get("message") == _ACCEPT_FAILED and isinstance(exc, OSError):
            return
        # Python 3.11's asyncio.start_server calls exception() on a connection task
        # that was cancelled, which reports the cancellation as an error.
        if isinstance(exc, asyncio.CancelledError):
            return
        # Hypercorn does not expect this one from its close; the traceback would only
        # say that a client never answered close_notify, which this says plainly.
        if isinstance(exc, TimeoutError) and str(exc) == "SSL shutdown timed out":
            SERVER_LOGGER.warning(
                "a TLS client stayed connected but silent at shutdown; close clients "
                "before stopping the server"
            )
            return
        loop.default_exception_handler(context)


def _abortable(app: ASGIApp, abort: asyncio.Event) -> ASGIApp:
    """Wrap `app` so that its HTTP requests end when `abort` is set."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        # Ending a request from inside the app lets Hypercorn close its stream the
        # normal way; if Hypercorn has to cancel the connection instead, its
        # HTTP/2 clean-up fails and leaves a never-awaited coroutine behind.
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_when_set, abort, tg.cancel_scope)
            await app(scope, receive, send)
            tg.cancel_scope.cancel()

    return wrapped


async def _cancel_when_set(event: asyncio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncio.run does after its main coroutine, for a loop we made ourselves."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler(
                    {
                        "message": "unhandled exception during server shutdown",
                        "exception": task.exception(),
                        "task": task,
                    }
                )
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def start_servers(
    app: ScriptedApp,
    *,
    keep_alive_max_requests: int | None = None,
    keep_alive_timeout: float | None = None,
    graceful_timeout: float = 1.0,
    ca: trustme.CA | None = None,
    **overrides: Any,
) -> ServerThread:
    """Build and start a ServerThread; stop() it, or use it in `with`, when done."""
    server = ServerThread(
        app,
        keep_alive_max_requests=keep_alive_max_requests,
        keep_alive_timeout=keep_alive_timeout,
        graceful_timeout=graceful_timeout,
        ca=ca,
        **overrides,
    )
    server.start()
    return server
