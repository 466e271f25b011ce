"""CircuitBreakerTransport: stop calling an origin that keeps failing, then probe it."""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httpx

from . import _checks, _otel
from ._budget import Origin, origin_of
from ._clock import SteadyClock
from ._goaway import unprocessed_reason
from ._layer import Layer
from ._lru import make_room
from ._semconv import _DEFAULT_PORTS, SERVER_ADDRESS, SERVER_PORT

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

logger = logging.getLogger("httpx_resilience")

#: Answers that count against an origin: it is failing or shedding load.
DEFAULT_FAILURE_STATUSES = frozenset({429, *range(500, 600)})

#: Transport errors that say something about the origin. Left out:
#: ``httpx.UnsupportedProtocol`` (a bad URL says nothing of the server) and
#: ``CircuitOpenError`` itself (a subclass of ``httpx.TransportError`` only).
DEFAULT_FAILURE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.ProtocolError,
    httpx.ProxyError,
)

#: Counter of state changes, labelled with the server and the new state.
TRANSITIONS_METRIC = "http.client.circuit_breaker.transitions"
#: Counter of requests failed fast by an open (or busy half-open) circuit.
REJECTIONS_METRIC = "http.client.circuit_breaker.rejections"
#: ``request.extensions`` key: after a failed call the breaker leaves itself
#: there, so that the retry layer around it can ask ``retry_in(request.url)``
#: before it waits, instead of waiting only to meet an open circuit.
CIRCUIT_EXTENSION = "httpx_resilience.circuit_breaker"
#: Metric attribute: the state a circuit moved to.
CIRCUIT_STATE = "httpx_resilience.circuit.state"

# The window is a ring of this many buckets: outcomes age out a tenth of the
# window at a time, and no per-call record is kept.
_BUCKETS = 10
# The stamp of a bucket never written: older than any window.
_NEVER = float("-inf")


class CircuitState(str, enum.Enum):
    """Where an origin's circuit stands."""

    #: Calls go through; their outcomes are counted.
    CLOSED = "closed"
    #: Calls fail fast with ``CircuitOpenError`` until the break is over.
    OPEN = "open"
    #: The break is over: a few probe calls go through and decide.
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    """When to stop calling an origin, for how long, and what counts as failing.

    Built once and shared by every origin; change it with ``dataclasses.replace``.

    >>> policy = CircuitBreakerPolicy(failure_ratio=0.5, min_calls=20, break_duration=10)
    >>> transport = CircuitBreakerTransport(httpx.AsyncHTTPTransport(), policy)

    The circuit opens when at least ``failure_ratio`` of the calls that ended
    in the last ``window`` seconds failed, and there were at least
    ``min_calls`` of them. It then fails every call at once for
    ``break_duration`` seconds, after which it lets ``probes`` calls through
    at a time: the first to succeed closes it, the first to fail opens it for
    another ``break_duration``. A response whose status is in ``statuses``,
    or an exception in ``exceptions``, is a failure; anything else (a 404,
    a cancelled call) is not.
    """

    failure_ratio: float = 0.5
    min_calls: int = 20
    window: float = 30.0
    break_duration: float = 10.0
    probes: int = 1
    statuses: Iterable[int] = DEFAULT_FAILURE_STATUSES
    exceptions: Iterable[type[Exception]] = DEFAULT_FAILURE_EXCEPTIONS

    def __post_init__(self) -> None:
        _checks.real("failure_ratio", self.failure_ratio, unit="")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError(f"failure_ratio must be in (0, 1], got {self.failure_ratio!r}")
        min_calls = _checks.count("min_calls", self.min_calls, minimum=1)
        _checks.number("window", self.window, above_minimum=True)
        _checks.number("break_duration", self.break_duration)
        probes = _checks.count("probes", self.probes, minimum=1)  # else it never closes
        statuses = _checks.statuses("statuses", self.statuses, low=100, high=599)
        exceptions = _checks.exception_types("exceptions", self.exceptions)
        object.__setattr__(self, "min_calls", min_calls)
        object.__setattr__(self, "probes", probes)
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "exceptions", exceptions)


DEFAULT_BREAKER_POLICY = CircuitBreakerPolicy()


def format_origin(origin: Origin) -> str:
    """``https://api.example.com:8443`` from ``("https", "api.example.com", 8443)``."""
    scheme, host, port = origin
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


class CircuitOpenError(httpx.TransportError):
    """The origin's circuit is open: the request was failed fast, never sent.

    A subclass of ``httpx.TransportError``, so ``except httpx.TransportError``
    catches it. ``origin`` is the ``(scheme, host, port)`` of the circuit and
    ``retry_in`` the seconds until it lets a probe through (0 while probes
    are already in flight).

    >>> try:  # doctest: +SKIP
    ...     await client.get("https://api.example.com/things")
    ... except CircuitOpenError as exc:
    ...     print(exc.origin, exc.retry_in)
    ('https', 'api.example.com', None) 7.5
    """

    def __init__(
        self,
        message: str,
        *,
        origin: Origin,
        retry_in: float,
        request: httpx.Request | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.origin = origin
        self.retry_in = retry_in


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """One origin's circuit as the application may report it: ``breaker.states()``.

    ``calls`` and ``failures`` count the calls that ended in the current
    window; ``retry_in`` is the seconds until the next probe while open,
    else ``None``.
    """

    origin: Origin
    state: CircuitState
    calls: int
    failures: int
    retry_in: float | None


OnChange = Callable[["Circuit", CircuitState, CircuitState], None]


class Circuit:
    """One origin's circuit: a state machine with no I/O; the caller passes the time.

    >>> circuit = Circuit(("https", "api.example.com", None), CircuitBreakerPolicy(min_calls=2))
    >>> permit = circuit.acquire(now=0.0)
    >>> circuit.record(permit, failed=True, now=0.1)
    >>> circuit.record(circuit.acquire(0.2), failed=True, now=0.3)
    >>> circuit.state, circuit.acquire(now=0.4)
    (<CircuitState.OPEN: 'open'>, None)

    ``acquire`` says whether a call may go out, and returns a permit (an
    int) for it; the call's end is reported with ``record`` (a verdict) or
    ``release`` (no verdict: cancelled, or an error that is not a failure).
    A permit names the state it was given in: the outcome of a call that
    started before the last state change is ignored, so calls still in
    flight when the circuit opened cannot keep it open, nor close it.
    ``on_change(circuit, old, new)`` hears every state change.

    ``now`` is a reading of a monotonic clock, guarded as it comes in: a
    step back, NaN or infinity counts as no time passed (``SteadyClock``),
    so a clock that jumps back 900 s still ends a 10 s break after 10 s of
    the clock's steps, and a bad reading never raises.
    """

    __slots__ = (
        "_calls",
        "_failures",
        "_in_flight",
        "_on_change",
        "_stamps",
        "_time",
        "_width",
        "generation",
        "open_until",
        "origin",
        "policy",
        "state",
        "tripped",
    )

    def __init__(
        self, origin: Origin, policy: CircuitBreakerPolicy, on_change: OnChange | None = None
    ) -> None:
        self.origin = origin
        self.policy = policy
        self._on_change = on_change
        self.state = CircuitState.CLOSED
        #: Bumped on every state change; a permit is the generation it was given in.
        self.generation = 0
        #: When the break ends (meaningful while open), on the circuit's steady
        #: time: the clock's readings, until it first steps back.
        self.open_until = 0.0
        #: (failures, calls) of the window that opened the circuit last.
        self.tripped = (0, 0)
        self._width = policy.window / _BUCKETS
        # Bucket i holds the calls that ended in the interval with absolute
        # index _stamps[i]; a bucket whose stamp is too old counts as empty.
        self._calls = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._stamps = [_NEVER] * _BUCKETS
        self._in_flight = 0  # probes out while half-open
        self._time = SteadyClock()

    def acquire(self, now: float) -> int | None:
        """A permit for one call, or ``None``: fail it fast."""
        state = self.state
        if state is CircuitState.CLOSED:
            return self.generation
        if state is CircuitState.OPEN:
            if self._time.at(now) < self.open_until:
                return None
            self._move(CircuitState.HALF_OPEN)
        if self._in_flight >= self.policy.probes:
            return None
        self._in_flight += 1
        return self.generation

    def record(self, permit: int, failed: bool, now: float) -> None:
        """The call given ``permit`` ended with a verdict: failed or succeeded."""
        if permit != self.generation:
            return
        now = self._time.at(now)
        if self.state is CircuitState.HALF_OPEN:
            self._in_flight -= 1
            if failed:
                self._open(now)
            else:
                self._close()
            return
        # Closed (an open circuit gives no permits of its own generation).
        index = int(now // self._width)
        slot = index % _BUCKETS
        if self._stamps[slot] != index:
            self._stamps[slot] = index
            self._calls[slot] = 0
            self._failures[slot] = 0
        self._calls[slot] += 1
        if failed:
            self._failures[slot] += 1
            # Only a failure can open the circuit: sum the window then.
            failures, calls = self._counts(now)
            policy = self.policy
            if calls >= policy.min_calls and failures >= policy.failure_ratio * calls:
                self.tripped = (failures, calls)
                self._open(now)

    def release(self, permit: int) -> None:
        """The call given ``permit`` ended with no verdict (cancelled, or not a failure)."""
        if permit == self.generation and self.state is CircuitState.HALF_OPEN:
            self._in_flight -= 1

    def counts(self, now: float) -> tuple[int, int]:
        """(failures, calls) among the calls that ended in the window before ``now``."""
        return self._counts(self._time.at(now))

    def _counts(self, now: float) -> tuple[int, int]:
        index = int(now // self._width)
        failures = calls = 0
        for slot in range(_BUCKETS):
            if index - _BUCKETS < self._stamps[slot] <= index:
                failures += self._failures[slot]
                calls += self._calls[slot]
        return failures, calls

    @property
    def acquirable(self) -> bool:
        """Whether a half-open circuit has a probe slot free."""
        return self._in_flight < self.policy.probes

    def state_at(self, now: float) -> CircuitState:
        """The state a call at ``now`` would meet; the break may be over without a call yet."""
        return self._state_at(self._time.at(now))

    def _state_at(self, now: float) -> CircuitState:
        if self.state is CircuitState.OPEN and now >= self.open_until:
            return CircuitState.HALF_OPEN
        return self.state

    def break_left(self, now: float) -> float:
        """Seconds of the break left at ``now``; 0 when the circuit is not open."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.open_until - self._time.at(now))

    def snapshot(self, now: float) -> CircuitSnapshot:
        now = self._time.at(now)
        state = self._state_at(now)
        failures, calls = self._counts(now)
        retry_in = self.open_until - now if state is CircuitState.OPEN else None
        return CircuitSnapshot(self.origin, state, calls, failures, retry_in)

    def _open(self, now: float) -> None:
        self.open_until = now + self.policy.break_duration
        self._move(CircuitState.OPEN)

    def _close(self) -> None:
        # A fresh window: the failures that opened the circuit are history.
        self._stamps = [_NEVER] * _BUCKETS
        self._move(CircuitState.CLOSED)

    def _move(self, state: CircuitState) -> None:
        old, self.state = self.state, state
        self.generation += 1
        self._in_flight = 0
        if self._on_change is not None:
            self._on_change(self, old, state)


class CircuitBreakerTransport(Layer):
    """Fail fast with ``CircuitOpenError`` while an origin keeps failing, then probe it.

    >>> transport = RetryTransport(CircuitBreakerTransport(httpx.AsyncHTTPTransport()))
    >>> client = httpx.AsyncClient(transport=transport)

    One circuit per origin (scheme, host, port), driven by the
    ``CircuitBreakerPolicy``. Place it inside ``RetryTransport``: each retry
    is a call the circuit counts, and ``CircuitOpenError`` is not retried.
    After a failed call the layer leaves itself in
    ``request.extensions[CIRCUIT_EXTENSION]``, so that the retry layer can ask
    ``retry_in()`` before waiting on a circuit the failure has just opened.
    Responses are returned as they are, failures included; the layer never
    reads a body.

    State changes are logged (logger ``httpx_resilience``: opening as a
    warning, the rest as info), counted in
    ``http.client.circuit_breaker.transitions`` (rejected calls in
    ``http.client.circuit_breaker.rejections``) through ``meter_provider``
    (the global one by default, nothing without OpenTelemetry), and readable
    with ``state()``, ``retry_in()`` and ``states()`` for health reports. ``clock`` is the
    monotonic time in seconds (a step back or NaN counts as no time passed).

    About ``max_origins`` circuits are kept. A new origin past that makes
    room by forgetting the least recently used closed circuit; an open or
    half-open one is never forgotten, since forgetting it would let the
    origin's calls through again. When the circuits looked at are all open
    or half-open, the map grows past ``max_origins`` instead, and shrinks
    back as they close.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        meter_provider: MeterProvider | None = None,
        max_origins: int = 1024,
    ) -> None:
        super().__init__(transport)
        if policy is not None and not isinstance(policy, CircuitBreakerPolicy):
            raise TypeError(f"policy must be a CircuitBreakerPolicy or None, got {policy!r}")
        max_origins = _checks.count("max_origins", max_origins, minimum=1)
        self._policy = policy or DEFAULT_BREAKER_POLICY
        self._clock = clock
        self._max_origins = max_origins
        self._circuits: OrderedDict[Origin, Circuit] = OrderedDict()
        self._statuses = cast(frozenset[int], self._policy.statuses)
        self._exceptions = cast(tuple[type[Exception], ...], self._policy.exceptions)
        meter = _otel.get_meter(meter_provider)
        if meter is None:
            self._transitions = self._rejections = None
        else:
            self._transitions = meter.create_counter(
                TRANSITIONS_METRIC,
                unit="{transition}",
                description="Circuit breaker state changes, by origin and new state.",
            )
            self._rejections = meter.create_counter(
                REJECTIONS_METRIC,
                unit="{request}",
                description="Requests failed fast by an open circuit, by origin.",
            )

    @property
    def policy(self) -> CircuitBreakerPolicy:
        return self._policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = origin_of(request.url)
        circuit = self._circuits.get(origin)
        if circuit is None:
            circuit = self._add(origin)
        else:
            self._circuits.move_to_end(origin)
        permit = circuit.acquire(self._clock())
        if permit is None:
            raise self._reject(circuit, request)
        try:
            response = await self._transport.handle_async_request(request)
        except Exception as exc:
            # A request the server provably never processed (GOAWAY, a
            # refused stream) says nothing bad about the server's health.
            if isinstance(exc, self._exceptions) and unprocessed_reason(exc) is None:
                circuit.record(permit, True, self._clock())
                request.extensions[CIRCUIT_EXTENSION] = self
            else:
                circuit.release(permit)
            raise
        except BaseException:
            # Cancelled: the origin gave no verdict, but a probe slot must come back.
            circuit.release(permit)
            raise
        if response.status_code in self._statuses:
            circuit.record(permit, True, self._clock())
            request.extensions[CIRCUIT_EXTENSION] = self
        else:
            circuit.record(permit, False, self._clock())
        return response

    def state(self, where: Origin | httpx.URL | str) -> CircuitState:
        """The state of the circuit for a URL's origin (or an origin tuple).

        >>> breaker.state("https://api.example.com")  # doctest: +SKIP
        <CircuitState.CLOSED: 'closed'>
        """
        circuit = self._circuits.get(_origin(where))
        return CircuitState.CLOSED if circuit is None else circuit.state_at(self._clock())

    def retry_in(self, where: Origin | httpx.URL | str) -> float:
        """Seconds until the origin's circuit lets a call through; 0 if it would now.

        >>> breaker.retry_in("https://api.example.com")  # doctest: +SKIP
        7.5
        """
        circuit = self._circuits.get(_origin(where))
        if circuit is None or circuit.state is CircuitState.CLOSED:
            return 0.0
        if circuit.state is CircuitState.OPEN:
            return circuit.break_left(self._clock())
        # Half-open: no wait if a probe slot is free, else until a probe decides.
        return 0.0 if circuit.acquirable else circuit.policy.break_duration

    def states(self) -> dict[Origin, CircuitSnapshot]:
        """Every known origin's circuit, for a health report.

        >>> states = breaker.states()  # doctest: +SKIP
        >>> {format_origin(o): s.state.value for o, s in states.items()}  # doctest: +SKIP
        {'https://api.example.com': 'open'}
        """
        now = self._clock()
        return {origin: circuit.snapshot(now) for origin, circuit in self._circuits.items()}

    def _add(self, origin: Origin) -> Circuit:
        make_room(self._circuits, self._max_origins, _forgettable)
        circuit = self._circuits[origin] = Circuit(origin, self._policy, self._changed)
        return circuit

    def _reject(self, circuit: Circuit, request: httpx.Request) -> CircuitOpenError:
        origin = circuit.origin
        if self._rejections is not None:
            self._rejections.add(1, _attributes(origin))
        if circuit.state is CircuitState.OPEN:
            retry_in = circuit.break_left(self._clock())
            failures, calls = circuit.tripped
            message = (
                f"circuit breaker open for {format_origin(origin)}: {failures} of the last "
                f"{calls} calls failed; the next probe goes out in {retry_in:.1f} s"
            )
        else:
            retry_in = 0.0
            message = (
                f"circuit breaker half-open for {format_origin(origin)}: "
                f"{circuit.policy.probes} probe(s) in flight decide whether it closes"
            )
        return CircuitOpenError(message, origin=origin, retry_in=retry_in, request=request)

    def _changed(self, circuit: Circuit, old: CircuitState, new: CircuitState) -> None:
        """Tell the log and the transitions counter about one state change."""
        origin = circuit.origin
        if self._transitions is not None:
            attributes = _attributes(origin)
            attributes[CIRCUIT_STATE] = new.value
            self._transitions.add(1, attributes)
        where = format_origin(origin)
        extra = {"origin": where, "circuit_state": new.value, "previous_state": old.value}
        if new is CircuitState.OPEN:
            failures, calls = circuit.tripped
            if old is CircuitState.HALF_OPEN:
                reason = "a probe failed"
            else:
                reason = f"{failures} of the last {calls} calls failed"
            logger.warning(
                "circuit breaker opened for %s: %s; failing calls fast for %.1f s",
                where,
                reason,
                circuit.policy.break_duration,
                extra=extra,
            )
        elif new is CircuitState.HALF_OPEN:
            logger.info("circuit breaker half-open for %s: probing", where, extra=extra)
        else:
            logger.info("circuit breaker closed for %s: a probe succeeded", where, extra=extra)


def _forgettable(circuit: Circuit) -> bool:
    """A closed circuit: forgotten, it comes back closed; an open one would let calls through."""
    return circuit.state is CircuitState.CLOSED


def _origin(where: Origin | httpx.URL | str) -> Origin:
    return where if isinstance(where, tuple) else origin_of(httpx.URL(where))


def _attributes(origin: Origin) -> dict[str, str | int]:
    scheme, host, port = origin
    attributes: dict[str, str | int] = {SERVER_ADDRESS: host}
    if port is None:  # httpx leaves a scheme's default port out of the URL
        port = _DEFAULT_PORTS.get(scheme)
    if port is not None:
        attributes[SERVER_PORT] = port
    return attributes
