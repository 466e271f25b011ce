"""TracingTransport: one OpenTelemetry CLIENT span and one duration point per attempt."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import httpx

from . import _otel
from ._clock import seconds
from ._keys import ATTEMPTS, REQUEST_ID, REQUEST_ID_HEADER
from ._layer import Layer, Transport
from ._records import Timings
from ._redact import SENSITIVE_QUERY_PARAMETERS, redact_url
from ._semconv import (
    ERROR_TYPE,
    HTTP_REQUEST_HEADER,
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
    KNOWN_METHODS,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_PROTOCOL_VERSION,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_FULL,
    error_type,
    method_attribute,
    protocol_version,
    server_port,
)

if _otel.OTEL_AVAILABLE:
    from . import _otel_context as _oc

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, TracerProvider

logger = logging.getLogger("httpx_resilience")

DURATION_METRIC = "http.client.request.duration"

#: The span event of a failed attempt, with ``exception.type`` only (see ``_Attempt``).
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"

#: Span events for the phases of opening a connection (HTTPTransport's timings),
#: each at the moment its phase ended, with its duration in seconds.
DNS_EVENT = "httpx_resilience.dns"
CONNECT_EVENT = "httpx_resilience.connect"
TLS_EVENT = "httpx_resilience.tls"
PHASE_DURATION = "httpx_resilience.duration"


class TracingTransport(Layer):
    """One OpenTelemetry CLIENT span and one ``http.client.request.duration`` point per attempt.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> transport = RetryTransport(
    ...     TracingTransport(httpx.AsyncHTTPTransport(), tracer_provider=TracerProvider())
    ... )

    Place it inside ``RetryTransport``: each re-send is then a span of its
    own, a sibling of the first under the caller's span, with
    ``http.request.resend_count``. Attributes follow the stable HTTP client
    conventions; ``url.full`` has credentials and the values of
    ``sensitive_query_parameters`` replaced by ``REDACTED``. The span of a
    streamed response ends when its body is read to the end, closed, or
    fails. Each attempt carries its own ``traceparent`` (the propagators'
    headers), and the OpenTelemetry httpx instrumentation, if active, stays
    quiet for the attempts this layer traces.

    Providers default to the global ones. Needs ``opentelemetry-api``; the
    constructor raises ``ImportError`` without it.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        sensitive_query_parameters: Iterable[str] = SENSITIVE_QUERY_PARAMETERS,
    ) -> None:
        _otel.require_otel("TracingTransport")
        if isinstance(sensitive_query_parameters, str):
            raise TypeError("sensitive_query_parameters must be a collection of names, not a str")
        super().__init__(transport)
        self._tracer = _otel.get_tracer(tracer_provider)
        meter = _otel.get_meter(meter_provider)
        assert meter is not None  # require_otel passed
        self._duration = meter.create_histogram(
            DURATION_METRIC,
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=_otel.DURATION_BUCKETS,
        )
        # None: the global propagator, looked up per attempt, so that one set
        # up after this transport was built still applies.
        self._inject: Callable[..., None] = _oc.inject if propagator is None else propagator.inject
        self._sensitive = frozenset(sensitive_query_parameters)

    # unasync: begin
    # A plain method returning a coroutine: when nothing records, the caller
    # awaits the inner transport's coroutine itself, and no frame of this
    # layer sits in the chain that every I/O wait of the request resumes.
    def handle_async_request(self, request: httpx.Request) -> Coroutine[Any, Any, httpx.Response]:
        start = self._start(request)
        if start is None:
            return self._async_next.handle_async_request(request)
        return self._async_traced(request, *start)

    async def _async_traced(
        self,
        request: httpx.Request,
        attempts: _Attempts,
        parent: Context,
        span: Span,
        recording: bool,
    ) -> httpx.Response:
        try:
            attempt, token = self._begin(request, attempts, parent, span, recording)
        except Exception as exc:
            # Telemetry is optional: a propagator that fails (say) costs the
            # attempt its span, not its request.
            _telemetry_failed(exc)
            _end_quietly(span)
            return await self._async_next.handle_async_request(request)
        try:
            response = await self._async_next.handle_async_request(request)
        except BaseException as exc:
            attempt.end(exc)
            raise
        finally:
            if token is not None:
                _oc.detach(token)
        # From here on nothing raises: the response is the caller's, and
        # only its body, read or closed, frees its connection.
        attempt.received(response)
        if response.is_closed:
            # Already read (httpx reads a Response built from bytes at once).
            attempt.end(None)
        else:
            stream = cast(httpx.AsyncByteStream, response.stream)
            response.stream = _AsyncTracedStream(stream, attempt)
        return response

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    # A plain method returning a coroutine: when nothing records, the caller
    # awaits the inner transport's coroutine itself, and no frame of this
    # layer sits in the chain that every I/O wait of the request resumes.
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = self._start(request)
        if start is None:
            return self._next.handle_request(request)
        return self._traced(request, *start)

    def _traced(
        self,
        request: httpx.Request,
        attempts: _Attempts,
        parent: Context,
        span: Span,
        recording: bool,
    ) -> httpx.Response:
        try:
            attempt, token = self._begin(request, attempts, parent, span, recording)
        except Exception as exc:
            # Telemetry is optional: a propagator that fails (say) costs the
            # attempt its span, not its request.
            _telemetry_failed(exc)
            _end_quietly(span)
            return self._next.handle_request(request)
        try:
            response = self._next.handle_request(request)
        except BaseException as exc:
            attempt.end(exc)
            raise
        finally:
            if token is not None:
                _oc.detach(token)
        # From here on nothing raises: the response is the caller's, and
        # only its body, read or closed, frees its connection.
        attempt.received(response)
        if response.is_closed:
            # Already read (httpx reads a Response built from bytes at once).
            attempt.end(None)
        else:
            stream = cast(httpx.SyncByteStream, response.stream)
            response.stream = _TracedStream(stream, attempt)
        return response

    # unasync: generated end

    def _start(self, request: httpx.Request) -> tuple[_Attempts, Context, Span, bool] | None:
        """The attempt's count, parent context and span; ``None`` when it goes untraced."""
        parent = _oc.get_current()
        # An empty context (the usual case without the SDK) cannot hold a key
        # that suppresses us, nor a trace or baggage to pass on. Suppressed (by
        # a tracing layer outside this one, say), the attempt is not ours to count.
        if parent and _suppressed(parent):
            return None
        attempts = request.extensions.get(ATTEMPTS)
        if attempts is None:
            attempts = request.extensions[ATTEMPTS] = _Attempts()
        else:
            attempts.next(request.headers)
        method = request.method
        span = None
        try:
            span = self._tracer.start_span(
                method if method in KNOWN_METHODS else "HTTP", parent, _oc.SpanKind.CLIENT
            )
            recording = span.is_recording()
        except Exception as exc:
            # An SDK that fails costs the attempt its span, not its request.
            _telemetry_failed(exc)
            if span is not None:
                _end_quietly(span)
            return None
        if not (recording or parent or _otel.may_record(self._duration)):
            # Nothing would be recorded or passed on (the API without an SDK,
            # the usual case): the attempt costs its span, which does not
            # record and so has nothing to end, and no more.
            return None
        return attempts, parent, span, recording

    def _begin(
        self,
        request: httpx.Request,
        attempts: _Attempts,
        parent: Context,
        span: Span,
        recording: bool,
    ) -> tuple[_Attempt, Token[Context] | None]:
        """The attempt's record, its propagation headers set and its context attached."""
        # The attributes a span and its duration point share, built once.
        url = request.url
        common: dict[str, Any] = {
            HTTP_REQUEST_METHOD: method_attribute(request.method),
            SERVER_ADDRESS: url.host,
        }
        port = server_port(url)
        if port is not None:
            common[SERVER_PORT] = port
        # Set on the span together with the response's, in one call.
        attributes = (
            self._request_attributes(request, common, attempts.count) if recording else None
        )
        attempt = _Attempt(self._duration, span, attributes, common)
        token = None
        if recording or parent:
            context = _oc.set_value(
                _oc.SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, _oc.set_span_in_context(span, parent)
            )
            attempts.inject(request.headers, context, self._inject)
            token = _oc.attach(context)
        return attempt, token

    def _request_attributes(
        self, request: httpx.Request, common: dict[str, Any], count: int
    ) -> dict[str, Any]:
        method = request.method
        attributes = dict(common)
        attributes[URL_FULL] = redact_url(request.url, self._sensitive)
        if method not in KNOWN_METHODS:
            attributes[HTTP_REQUEST_METHOD_ORIGINAL] = method
        if count > 1:
            attributes[HTTP_REQUEST_RESEND_COUNT] = count - 1
        request_id = request.extensions.get(REQUEST_ID)
        if request_id is not None:
            header = request.extensions.get(REQUEST_ID_HEADER, "x-request-id")
            attributes[f"{HTTP_REQUEST_HEADER}.{header}"] = (request_id,)
        return attributes


def _suppressed(context: Context) -> bool:
    return any(_oc.get_value(key, context) for key in _oc.SUPPRESS_INSTRUMENTATION_KEYS)


def _telemetry_failed(exc: Exception) -> None:
    # The type only: the text of an exception may hold what it was given.
    logger.debug("tracing left out part of an attempt's telemetry: %s", type(exc).__name__)


def _end_quietly(span: Span) -> None:
    try:
        span.end()
    except Exception as exc:
        _telemetry_failed(exc)


def _peer(response: httpx.Response) -> tuple[str, int] | None:
    """``network.peer.address`` and ``.port``: optional, so never worth an exception.

    The network stream reads them from its socket; under trio, one the
    server has just reset answers ``OSError(ENOTCONN)``.
    """
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        peer = stream.get_extra_info("server_addr")
    except Exception:
        return None
    if isinstance(peer, tuple) and len(peer) >= 2 and isinstance(peer[1], int):
        return str(peer[0]), peer[1]
    return None


def _nanoseconds(duration: float) -> int:
    """Whole nanoseconds of a phase; 0 for a figure no clock could give (NaN, infinite)."""
    return int(seconds(duration) * 1e9)


def _qualified_name(exc: BaseException) -> str:
    """``exception.type``: the class's full name, as the SDK's ``record_exception`` gives it."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"


class _Attempts:
    """What one logical request carries from one attempt to the next."""

    __slots__ = ("count", "injected")

    def __init__(self) -> None:
        self.count = 1
        self.injected: dict[str, str] = {}

    def next(self, headers: httpx.Headers) -> None:
        """Count a re-send, and take back the previous attempt's propagation headers.

        Left in place, a ``traceparent`` naming the previous attempt's span
        would go out again if this attempt injects none (say, it is not
        traced). A header the caller changed since is theirs and stays.
        """
        self.count += 1
        for name, value in self.injected.items():
            if headers.get(name) == value:
                del headers[name]
        self.injected = {}

    def inject(
        self, headers: httpx.Headers, context: Context, inject: Callable[..., None]
    ) -> None:
        carrier: dict[str, str] = {}
        inject(carrier, context)
        for name, value in carrier.items():
            headers[name] = value
        self.injected = carrier


class _Attempt:
    """One attempt's span and duration, ended exactly once."""

    __slots__ = (
        "_attributes",
        "_common",
        "_done",
        "_histogram",
        "_recording",
        "_span",
        "_start",
        "_start_ns",
        "_status",
        "_version",
    )

    def __init__(
        self,
        histogram: Histogram,
        span: Span,
        attributes: dict[str, Any] | None,
        common: dict[str, Any],
    ) -> None:
        self._histogram = histogram
        self._span = span
        # A recording span's request attributes, until they are set.
        self._attributes = attributes
        self._recording = recording = attributes is not None
        # Method, server address and port: the duration point's first attributes.
        self._common = common
        self._status: int | None = None
        self._version: str | None = None
        self._done = False
        self._start = time.perf_counter()
        # Wall-clock time for span events; only a recorded span has any.
        self._start_ns = time.time_ns() if recording else 0

    def received(self, response: httpx.Response) -> None:
        """The response headers are in: note what the span and the duration need.

        Never raises: whatever telemetry fails here, the response still goes
        to the caller, whose reading or closing of the body ends the attempt.
        """
        try:
            self._received(response)
        except Exception as exc:
            _telemetry_failed(exc)

    def _received(self, response: httpx.Response) -> None:
        status = self._status = response.status_code
        version = self._version = protocol_version(response.extensions.get("http_version"))
        attributes = self._attributes
        if attributes is None:
            return
        self._attributes = None
        attributes[HTTP_RESPONSE_STATUS_CODE] = status
        if version is not None:
            attributes[NETWORK_PROTOCOL_VERSION] = version
        peer = _peer(response)
        if peer is not None:
            attributes[NETWORK_PEER_ADDRESS], attributes[NETWORK_PEER_PORT] = peer
        if status >= 400:
            attributes[ERROR_TYPE] = str(status)
            self._span.set_status(_oc.Status(_oc.StatusCode.ERROR))
        self._span.set_attributes(attributes)
        timings = response.extensions.get("timings")
        if isinstance(timings, Timings) and not timings.connection_reused:
            self._setup_events(timings)

    def _setup_events(self, timings: Timings) -> None:
        """DNS, TCP connect and TLS of a new connection, as events at their ends."""
        at = self._start_ns + _nanoseconds(timings.queue)
        for name, phase in (
            (DNS_EVENT, timings.dns),
            (CONNECT_EVENT, timings.connect),
            (TLS_EVENT, timings.tls),
        ):
            if phase is not None:
                at += _nanoseconds(phase)
                self._span.add_event(name, {PHASE_DURATION: phase}, timestamp=at)

    def end(self, exc: BaseException | None) -> None:
        """End the span and record the duration, once; never raises."""
        if self._done:
            return
        self._done = True
        elapsed = time.perf_counter() - self._start
        # Cancelled (or interrupted): the caller gave up, the request did not
        # fail. Neither an error nor a duration worth recording.
        cancelled = exc is not None and not isinstance(exc, Exception)
        error = None
        try:
            error = self._outcome(exc, cancelled)
        except Exception as failure:
            _telemetry_failed(failure)
        finally:
            _end_quietly(self._span)
        if cancelled:
            return
        try:
            self._histogram.record(elapsed, self._metric_attributes(error))
        except Exception as failure:
            _telemetry_failed(failure)

    def _outcome(self, exc: BaseException | None, cancelled: bool) -> str | None:
        """Put the outcome on the span; the ``error.type`` of the duration point."""
        span = self._span
        if self._attributes is not None:
            span.set_attributes(self._attributes)  # no response came
            self._attributes = None
        if cancelled:
            return None
        if exc is not None:
            error = error_type(exc)
            if self._recording:
                # The type, never the message: an exception's text may quote
                # what was sent (h11 quotes a refused header value, token and all).
                span.add_event(EXCEPTION_EVENT, {EXCEPTION_TYPE: _qualified_name(exc)})
                span.set_attribute(ERROR_TYPE, error)
                span.set_status(_oc.Status(_oc.StatusCode.ERROR, error))
            return error
        if self._status is not None and self._status >= 400:
            return str(self._status)
        return None

    def _metric_attributes(self, error: str | None) -> dict[str, Any]:
        attributes = dict(self._common)
        if self._status is not None:
            attributes[HTTP_RESPONSE_STATUS_CODE] = self._status
        if self._version is not None:
            attributes[NETWORK_PROTOCOL_VERSION] = self._version
        if error is not None:
            attributes[ERROR_TYPE] = error
        return attributes


# unasync: begin
class _AsyncTracedStream(httpx.AsyncByteStream):
    """A response body that ends its attempt when it is read out, fails or is closed.

    Nothing is read ahead: each chunk passes through as the caller asks for it.
    """

    __slots__ = ("_attempt", "_iterator", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, attempt: _Attempt) -> None:
        self._stream = stream
        self._attempt = attempt
        self._iterator: AsyncIterator[bytes] | None = None

    # An iterator object rather than an async generator: a generator left
    # unfinished (the caller stops reading) is finalized later by the event
    # loop, and would report GeneratorExit as a failure of the body.
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._stream.__aiter__()
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            self._attempt.end(None)
            raise
        except BaseException as exc:
            self._attempt.end(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except BaseException as exc:
            self._attempt.end(exc)
            raise
        self._attempt.end(None)


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
class _TracedStream(httpx.SyncByteStream):
    """A response body that ends its attempt when it is read out, fails or is closed.

    Nothing is read ahead: each chunk passes through as the caller asks for it.
    """

    __slots__ = ("_attempt", "_iterator", "_stream")

    def __init__(self, stream: httpx.SyncByteStream, attempt: _Attempt) -> None:
        self._stream = stream
        self._attempt = attempt
        self._iterator: Iterator[bytes] | None = None

    # An iterator object rather than an async generator: a generator left
    # unfinished (the caller stops reading) is finalized later by the event
    # loop, and would report GeneratorExit as a failure of the body.
    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._stream.__iter__()
        try:
            return self._iterator.__next__()
        except StopIteration:
            self._attempt.end(None)
            raise
        except BaseException as exc:
            self._attempt.end(exc)
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        except BaseException as exc:
            self._attempt.end(exc)
            raise
        self._attempt.end(None)


# unasync: generated end
