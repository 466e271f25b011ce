"""Timings: how long each phase of one attempt took, read from httpcore's trace events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import httpcore

from . import _otel, _semconv
from ._clock import seconds
from ._network import TIMED_STREAM, SyncTimedStream, TimedStream
from ._origin import Origin
from ._records import Timings

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter, MeterProvider

Clock = Callable[[], float]
TraceCallback = Callable[[str, dict[str, Any]], Awaitable[None]]
SyncTraceCallback = Callable[[str, dict[str, Any]], None]

SETUP_DURATION = "httpx_resilience.connection.setup.duration"
CONNECTIONS_OPENED = "httpx_resilience.connection.opened"


class ConnectionMetrics:
    """The per-connection instruments of one transport: setup time and connections opened."""

    __slots__ = ("_opened", "_setup")

    def __init__(self, meter: Meter) -> None:
        self._setup = meter.create_histogram(
            SETUP_DURATION,
            unit="s",
            description="Time to open a connection: DNS lookup, TCP connect and TLS handshake.",
            explicit_bucket_boundaries_advisory=_otel.DURATION_BUCKETS,
        )
        self._opened = meter.create_counter(
            CONNECTIONS_OPENED,
            unit="{connection}",
            description="Connections opened and ready to carry requests.",
        )

    @classmethod
    def create(cls, meter_provider: MeterProvider | None = None) -> ConnectionMetrics | None:
        """The instruments, or ``None`` when OpenTelemetry is not installed."""
        meter = _otel.get_meter(meter_provider)
        return None if meter is None else cls(meter)

    def opened(self, origin: Origin, duration: float) -> None:
        attributes = _attributes(origin)
        self._setup.record(seconds(duration), attributes)
        self._opened.add(1, attributes)

    def failed(self, origin: Origin, duration: float, exc: object) -> None:
        attributes = _attributes(origin)
        attributes[_semconv.ERROR_TYPE] = type(exc).__name__
        self._setup.record(seconds(duration), attributes)


def _attributes(origin: Origin) -> dict[str, str | int]:
    scheme, host, port = origin
    attributes: dict[str, str | int] = {_semconv.SERVER_ADDRESS: host, "url.scheme": scheme}
    if port is None:
        port = _semconv.DEFAULT_PORTS.get(scheme)
    if port is not None:
        attributes[_semconv.SERVER_PORT] = port
    return attributes


def _origin(url: httpcore.URL) -> Origin:
    return (url.scheme.decode("ascii"), url.host.decode("ascii"), url.port)


# The trace events that mark a phase, by name. httpcore names an event
# after its logger: "connection." for direct connections, "socks." for a
# SOCKS proxy, "http11." or "http2." for the exchange.
_CONNECT_STARTED = 1
_CONNECTED = 2
_SETUP_FAILED = 3
_READY = 4
_SEND = 5
_WAIT = 6
_HEADERS = 7
_SENT = 8
_HEADERS_SENT = 9
_EVENTS = {
    "http11.send_request_headers.started": _SEND,
    "http2.send_request_headers.started": _SEND,
    "http11.send_request_headers.complete": _HEADERS_SENT,
    "http2.send_request_headers.complete": _HEADERS_SENT,
    "http11.send_request_body.complete": _SENT,
    "http2.send_request_body.complete": _SENT,
    "http11.receive_response_headers.started": _WAIT,
    "http2.receive_response_headers.started": _WAIT,
    "http11.receive_response_headers.complete": _HEADERS,
    "http2.receive_response_headers.complete": _HEADERS,
    "connection.connect_tcp.started": _CONNECT_STARTED,
    "connection.connect_unix_socket.started": _CONNECT_STARTED,
    "socks.connect_tcp.started": _CONNECT_STARTED,
    "connection.connect_tcp.complete": _CONNECTED,
    "connection.connect_unix_socket.complete": _CONNECTED,
    "socks.connect_tcp.complete": _CONNECTED,
    "connection.connect_tcp.failed": _SETUP_FAILED,
    "connection.connect_unix_socket.failed": _SETUP_FAILED,
    "socks.connect_tcp.failed": _SETUP_FAILED,
    "connection.start_tls.failed": _SETUP_FAILED,
    "socks.start_tls.failed": _SETUP_FAILED,
    # The HTTP/2 preface is the first thing written on a new connection.
    "http2.send_connection_init.started": _READY,
}


_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether httpcore sends a body after these request headers (as it decides)."""
    return any(name.lower() in _BODY_HEADERS for name, _ in headers)


class _Recorder:
    """The phases of one attempt, from httpcore's trace events; ``finish()`` gives its ``Timings``.

    Its subclasses are the ``trace`` callbacks of async and sync clients, which
    forward every event to the caller's own ``trace`` callback, if any.
    Only the request that opens a connection sees the connection events; a
    request without them ran on a connection that was already there.

    Without a caller's callback it leaves ``extensions`` (the dict httpcore
    reads the callback from) once the request is sent: the wait ends when
    the pool hands back the response, and each later event would cost a
    call for nothing.
    """

    __slots__ = (
        "_bodiless",
        "_clock",
        "_connect_start",
        "_headers",
        "_metrics",
        "_request",
        "_send",
        "_start",
        "_stream",
        "_wait",
        "chained",
        "extensions",
    )

    def __init__(
        self,
        clock: Clock,
        request: httpcore.Request,
        chained: Any,
        metrics: ConnectionMetrics | None,
    ) -> None:
        self._clock = clock
        self._request = request
        self.chained = chained
        self._metrics = metrics
        self._stream: object = None
        self._connect_start: float | None = None
        self._send: float | None = None
        self._wait: float | None = None
        self._headers: float | None = None
        self.extensions: MutableMapping[str, Any] | None = None
        self._bodiless = False
        self._start = clock()

    def record(self, name: str, info: dict[str, Any]) -> None:
        """Take one trace event's time, if it marks a phase."""
        event = _EVENTS.get(name)
        if event is not None:
            now = self._clock()
            # The three events every request sees come first.
            if event == _SEND:
                self._send = now
                sending = info.get("request")
                self._bodiless = sending is not None and not _has_body(sending.headers)
                if self._connect_start is not None:
                    self._opened(now - self._connect_start)
            elif event == _HEADERS_SENT:
                if self._bodiless:  # sent with its headers
                    self._sent(now)
            elif event in (_SENT, _WAIT):
                self._sent(now)
            elif event == _HEADERS:
                self._headers = now
            elif event == _CONNECT_STARTED:
                self._connect_start = now
            elif event == _CONNECTED:
                stream = info.get("return_value")
                self._stream = None if stream is None else stream.get_extra_info(TIMED_STREAM)
            elif self._connect_start is None:
                pass  # a connection this request did not open
            elif event == _READY:
                self._opened(now - self._connect_start)
            else:  # _SETUP_FAILED
                if self._metrics is not None:
                    duration = now - self._connect_start
                    failure = info.get("exception")
                    self._metrics.failed(_origin(self._request.url), duration, failure)
                self._connect_start = None

    def _sent(self, now: float) -> None:
        self._wait = now
        if self.chained is None and self.extensions is not None:
            self.extensions["trace"] = None

    def _opened(self, seconds: float) -> None:
        # The connection is about to carry its first bytes of HTTP: setup is over.
        if self._metrics is not None:
            self._metrics.opened(_origin(self._request.url), seconds)
        self._connect_start = None

    def finish(self, end: float) -> Timings:
        """The attempt's ``Timings``, its response headers having arrived at ``end``.

        A clock that stepped back or gave NaN makes a phase 0, never negative or NaN.
        """
        send = self._send if self._send is not None else end
        wait = self._wait if self._wait is not None else end
        headers = self._headers if self._headers is not None else end
        stream = self._stream
        dns: float | None
        connect: float | None
        tls: float | None
        if isinstance(stream, (TimedStream, SyncTimedStream)):
            dns = None if stream.dns is None else seconds(stream.dns)
            connect = seconds(stream.connect)
            tls = None if stream.tls is None else seconds(stream.tls)
            setup = (dns or 0.0) + connect + (tls or 0.0)
            reused = False
        else:
            dns = connect = tls = None
            setup = 0.0
            reused = stream is None
        # Positional: a frozen dataclass is slow enough to build as it is.
        return Timings(
            dns,
            connect,
            tls,
            seconds(send - self._start - setup),
            seconds(wait - send),
            seconds(headers - wait),
            seconds(end - self._start),
            reused,
        )


# unasync: begin
class AsyncTimingsRecorder(_Recorder):
    """httpcore's ``trace`` callback for one attempt of an async client."""

    __slots__ = ()

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.record(name, info)
        if self.chained is not None:
            await self.chained(name, info)


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
class TimingsRecorder(_Recorder):
    """httpcore's ``trace`` callback for one attempt of an async client."""

    __slots__ = ()

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.record(name, info)
        if self.chained is not None:
            self.chained(name, info)


# unasync: generated end
