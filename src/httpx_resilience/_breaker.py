"""CircuitBreakerTransport: stop calling an origin that keeps failing, then probe it."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httpx

from . import _checks, _otel
from ._circuit import Circuit, CircuitSnapshot, CircuitState
from ._classify import unprocessed_reason
from ._errors import CircuitOpenError, RateLimitExceeded
from ._keys import CIRCUIT
from ._layer import Layer, Transport, wrong_policy
from ._lru import make_room
from ._origin import Origin, format_origin, origin_of
from ._semconv import DEFAULT_PORTS, SERVER_ADDRESS, SERVER_PORT
from ._state import (
    MEMORY,
    AsyncCircuitStore,
    CircuitReply,
    CircuitStore,
    StateBackend,
)

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
#: Metric attribute: the state a circuit moved to.
CIRCUIT_STATE = "httpx_resilience.circuit.state"


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


class CircuitBreakerTransport(Layer):
    """Fail fast with ``CircuitOpenError`` while an origin keeps failing, then probe it.

    >>> transport = RetryTransport(CircuitBreakerTransport(httpx.AsyncHTTPTransport()))
    >>> client = httpx.AsyncClient(transport=transport)

    One circuit per origin (scheme, host, port), driven by the
    ``CircuitBreakerPolicy``. Place it inside ``RetryTransport``: each retry
    is a call the circuit counts, and ``CircuitOpenError`` is not retried.
    After a failed call the layer leaves itself in
    ``request.extensions[_keys.CIRCUIT]``, so that the retry layer can ask
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

    ``state`` is where the circuits live: this process's memory by default,
    or a ``RedisState`` that every process using its prefix shares, so that
    the fleet's failures open the circuit for all of them (docs/fleet.md).
    On shared state each request makes one call to the backend (a failure
    a second one), and a backend that does not answer leaves the decision
    to this process's own circuits.

    About ``max_origins`` circuits are kept. A new origin past that makes
    room by forgetting the least recently used closed circuit; an open or
    half-open one is never forgotten, since forgetting it would let the
    origin's calls through again. When the circuits looked at are all open
    or half-open, the map grows past ``max_origins`` instead, and shrinks
    back as they close.
    """

    def __init__(
        self,
        transport: Transport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        meter_provider: MeterProvider | None = None,
        max_origins: int = 1024,
        state: StateBackend | None = None,
    ) -> None:
        super().__init__(transport)
        if policy is not None and not isinstance(policy, CircuitBreakerPolicy):
            raise TypeError(wrong_policy(CircuitBreakerPolicy, policy))
        if state is not None and not isinstance(state, StateBackend):
            raise TypeError(f"state must be a MemoryState or RedisState, got {state!r}")
        max_origins = _checks.count("max_origins", max_origins, minimum=1)
        self._policy = policy or DEFAULT_BREAKER_POLICY
        self._clock = clock
        self._max_origins = max_origins
        self._circuits: OrderedDict[Origin, Circuit] = OrderedDict()
        # Circuits change under this lock: one transport may serve many threads.
        self._lock = threading.Lock()
        self._statuses = cast(frozenset[int], self._policy.statuses)
        self._exceptions = cast(tuple[type[Exception], ...], self._policy.exceptions)
        stores = (state or MEMORY).circuits(self._policy)
        self._async_store: AsyncCircuitStore | None = None
        self._store: CircuitStore | None = None
        if stores is not None:
            self._async_store, self._store = stores
        # Shared state only: per origin, the circuit as this process last saw
        # it, and the successes not yet counted (they go with the next acquire).
        self._views: dict[Origin, _View] = {}
        self._successes: dict[Origin, list[int]] = {}
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

    # unasync: begin
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._async_store is not None:
            return await self._async_shared_request(request)
        return await self._async_local_request(request)

    async def _async_local_request(self, request: httpx.Request) -> httpx.Response:
        circuit, permit = self._admit(request)
        try:
            response = await self._async_next.handle_async_request(request)
        except BaseException as exc:
            self._failed(request, circuit, permit, exc)
            raise
        self._answered(request, circuit, permit, response)
        return response

    async def _async_shared_request(self, request: httpx.Request) -> httpx.Response:
        """The same on shared state: one call to the backend per request that succeeds."""
        assert self._async_store is not None
        origin = origin_of(request.url)
        key = format_origin(origin)
        successes, generation = self._take_successes(origin)
        reply = await self._async_store.acquire(key, successes, generation)
        if reply is None:  # the backend did not answer: this process decides alone
            self._views.pop(origin, None)
            return await self._async_local_request(request)
        permit = self._admit_shared(request, origin, reply)
        probe = reply.state != "closed"
        try:
            response = await self._async_next.handle_async_request(request)
        except Exception as exc:
            if self._is_failure(exc):
                ended = await self._async_store.record(key, permit, True)
                self._ended(request, origin, ended, failed=True)
            elif probe:
                await self._async_store.release(key, permit)
            # Cancelled (not an Exception): a probe's slot comes back after
            # a break at most, when the backend gives it to another caller.
            raise
        failed = response.status_code in self._statuses
        if failed or probe:
            ended = await self._async_store.record(key, permit, failed)
            self._ended(request, origin, ended, failed=failed)
        else:
            self._succeeded(origin, permit)
        return response

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._store is not None:
            return self._shared_request(request)
        return self._local_request(request)

    def _local_request(self, request: httpx.Request) -> httpx.Response:
        circuit, permit = self._admit(request)
        try:
            response = self._next.handle_request(request)
        except BaseException as exc:
            self._failed(request, circuit, permit, exc)
            raise
        self._answered(request, circuit, permit, response)
        return response

    def _shared_request(self, request: httpx.Request) -> httpx.Response:
        """The same on shared state: one call to the backend per request that succeeds."""
        assert self._store is not None
        origin = origin_of(request.url)
        key = format_origin(origin)
        successes, generation = self._take_successes(origin)
        reply = self._store.acquire(key, successes, generation)
        if reply is None:  # the backend did not answer: this process decides alone
            self._views.pop(origin, None)
            return self._local_request(request)
        permit = self._admit_shared(request, origin, reply)
        probe = reply.state != "closed"
        try:
            response = self._next.handle_request(request)
        except Exception as exc:
            if self._is_failure(exc):
                ended = self._store.record(key, permit, True)
                self._ended(request, origin, ended, failed=True)
            elif probe:
                self._store.release(key, permit)
            # Cancelled (not an Exception): a probe's slot comes back after
            # a break at most, when the backend gives it to another caller.
            raise
        failed = response.status_code in self._statuses
        if failed or probe:
            ended = self._store.record(key, permit, failed)
            self._ended(request, origin, ended, failed=failed)
        else:
            self._succeeded(origin, permit)
        return response

    # unasync: generated end
    # unasync: generated end

    def _admit(self, request: httpx.Request) -> tuple[Circuit, int]:
        """The origin's circuit and a permit for this call; raise if it is failed fast."""
        origin = origin_of(request.url)
        with self._lock:
            circuit = self._circuits.get(origin)
            if circuit is None:
                circuit = self._add(origin)
            else:
                self._circuits.move_to_end(origin)
            permit = circuit.acquire(self._clock())
            if permit is None:
                raise self._reject(circuit, request)
        return circuit, permit

    def _failed(
        self, request: httpx.Request, circuit: Circuit, permit: int, exc: BaseException
    ) -> None:
        # A request the server provably never processed (GOAWAY, a refused
        # stream) says nothing bad about the server's health; a cancelled one
        # gave no verdict, but a probe slot must come back.
        with self._lock:
            if self._is_failure(exc):
                circuit.record(permit, True, self._clock())
                request.extensions[CIRCUIT] = self
            else:
                circuit.release(permit)

    def _is_failure(self, exc: BaseException) -> bool:
        """Whether an exception counts against the origin.

        Not a request the server provably never processed (GOAWAY, a refused
        stream), nor one a rate limiter inside this layer kept back.
        """
        return (
            isinstance(exc, self._exceptions)
            and unprocessed_reason(exc) is None
            and not isinstance(exc, RateLimitExceeded)
        )

    def _answered(
        self, request: httpx.Request, circuit: Circuit, permit: int, response: httpx.Response
    ) -> None:
        failed = response.status_code in self._statuses
        with self._lock:
            circuit.record(permit, failed, self._clock())
        if failed:
            request.extensions[CIRCUIT] = self

    # --- shared state -----------------------------------------------------------

    def _take_successes(self, origin: Origin) -> tuple[int, int]:
        """The successes not yet counted for ``origin``, and the generation they were in."""
        if not self._successes:
            return 0, 0
        with self._lock:
            pending = self._successes.pop(origin, None)
        return (0, 0) if pending is None else (pending[1], pending[0])

    def _succeeded(self, origin: Origin, permit: int) -> None:
        """A success on shared state: counted with the origin's next acquire, not now."""
        with self._lock:
            pending = self._successes.get(origin)
            if pending is not None and pending[0] == permit:
                pending[1] += 1
            elif pending is None and len(self._successes) >= self._max_origins:
                return  # too many origins in flight to keep count of: successes only
            else:
                self._successes[origin] = [permit, 1]

    def _admit_shared(self, request: httpx.Request, origin: Origin, reply: CircuitReply) -> int:
        """The permit the backend gave, or the ``CircuitOpenError`` for its refusal."""
        self._saw(origin, reply)
        if reply.permit is None:
            if self._rejections is not None:
                self._rejections.add(1, _attributes(origin))
            raise self._open_error(
                origin, CircuitState(reply.state), reply.retry_in, reply.tripped, request
            )
        return reply.permit

    def _ended(
        self, request: httpx.Request, origin: Origin, reply: CircuitReply | None, *, failed: bool
    ) -> None:
        if reply is not None:
            self._saw(origin, reply)
        if failed:
            request.extensions[CIRCUIT] = self

    def _saw(self, origin: Origin, reply: CircuitReply) -> None:
        """Remember the shared circuit as the backend answered; report a change this call made."""
        state = CircuitState(reply.state)
        view = _View(state, self._clock() + reply.retry_in, reply.tripped)
        with self._lock:
            if origin not in self._views and len(self._views) >= self._max_origins:
                self._views.pop(next(iter(self._views)))
            self._views[origin] = view
        if reply.previous != reply.state:
            self._report(origin, CircuitState(reply.previous), state, reply.tripped)

    def state(self, where: Origin | httpx.URL | str) -> CircuitState:
        """The state of the circuit for a URL's origin (or an origin tuple).

        >>> breaker.state("https://api.example.com")  # doctest: +SKIP
        <CircuitState.CLOSED: 'closed'>

        On shared state: as this process last saw it.
        """
        origin = _origin(where)
        with self._lock:
            view = self._views.get(origin)
            if view is not None:
                return view.state_at(self._clock())
            circuit = self._circuits.get(origin)
            return CircuitState.CLOSED if circuit is None else circuit.state_at(self._clock())

    def retry_in(self, where: Origin | httpx.URL | str) -> float:
        """Seconds until the origin's circuit lets a call through; 0 if it would now.

        >>> breaker.retry_in("https://api.example.com")  # doctest: +SKIP
        7.5
        """
        origin = _origin(where)
        with self._lock:
            view = self._views.get(origin)
            if view is not None:
                return view.retry_in(self._clock())
            circuit = self._circuits.get(origin)
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

        On shared state: the circuits as this process last saw them, with the
        failures that opened them last (the window's counts live in the backend).
        """
        with self._lock:
            now = self._clock()
            states = {origin: circuit.snapshot(now) for origin, circuit in self._circuits.items()}
            for origin, view in self._views.items():
                state = view.state_at(now)
                retry_in = view.retry_in(now) if state is CircuitState.OPEN else None
                failures, calls = view.tripped
                states[origin] = CircuitSnapshot(origin, state, calls, failures, retry_in)
            return states

    def _add(self, origin: Origin) -> Circuit:
        make_room(self._circuits, self._max_origins, _forgettable)
        circuit = self._circuits[origin] = Circuit(origin, self._policy, self._changed)
        return circuit

    def _reject(self, circuit: Circuit, request: httpx.Request) -> CircuitOpenError:
        origin = circuit.origin
        if self._rejections is not None:
            self._rejections.add(1, _attributes(origin))
        retry_in = circuit.break_left(self._clock())
        return self._open_error(origin, circuit.state, retry_in, circuit.tripped, request)

    def _open_error(
        self,
        origin: Origin,
        state: CircuitState,
        retry_in: float,
        tripped: tuple[int, int],
        request: httpx.Request,
    ) -> CircuitOpenError:
        if state is CircuitState.OPEN:
            failures, calls = tripped
            message = (
                f"circuit breaker open for {format_origin(origin)}: {failures} of the last "
                f"{calls} calls failed; the next probe goes out in {retry_in:.1f} s"
            )
        else:
            retry_in = 0.0
            message = (
                f"circuit breaker half-open for {format_origin(origin)}: "
                f"{self._policy.probes} probe(s) in flight decide whether it closes"
            )
        return CircuitOpenError(message, origin=origin, retry_in=retry_in, request=request)

    def _changed(self, circuit: Circuit, old: CircuitState, new: CircuitState) -> None:
        self._report(circuit.origin, old, new, circuit.tripped)

    def _report(
        self, origin: Origin, old: CircuitState, new: CircuitState, tripped: tuple[int, int]
    ) -> None:
        """Tell the log and the transitions counter about one state change."""
        if self._transitions is not None:
            attributes = _attributes(origin)
            attributes[CIRCUIT_STATE] = new.value
            self._transitions.add(1, attributes)
        where = format_origin(origin)
        extra = {"origin": where, "circuit_state": new.value, "previous_state": old.value}
        if new is CircuitState.OPEN:
            failures, calls = tripped
            if old is CircuitState.HALF_OPEN:
                reason = "a probe failed"
            else:
                reason = f"{failures} of the last {calls} calls failed"
            logger.warning(
                "circuit breaker opened for %s: %s; failing calls fast for %.1f s",
                where,
                reason,
                self._policy.break_duration,
                extra=extra,
            )
        elif new is CircuitState.HALF_OPEN:
            logger.info("circuit breaker half-open for %s: probing", where, extra=extra)
        else:
            logger.info("circuit breaker closed for %s: a probe succeeded", where, extra=extra)


class _View:
    """A shared circuit as this process last saw it: its state and when its break ends."""

    __slots__ = ("open_until", "state", "tripped")

    def __init__(self, state: CircuitState, open_until: float, tripped: tuple[int, int]) -> None:
        self.state = state
        self.open_until = open_until  # on this process's clock
        self.tripped = tripped

    def state_at(self, now: float) -> CircuitState:
        if self.state is CircuitState.OPEN and now >= self.open_until:
            return CircuitState.HALF_OPEN
        return self.state

    def retry_in(self, now: float) -> float:
        if self.state is CircuitState.OPEN:
            return max(0.0, self.open_until - now)
        return 0.0


def _forgettable(circuit: Circuit) -> bool:
    """A closed circuit: forgotten, it comes back closed; an open one would let calls through."""
    return circuit.state is CircuitState.CLOSED


def _origin(where: Origin | httpx.URL | str) -> Origin:
    return where if isinstance(where, tuple) else origin_of(httpx.URL(where))


def _attributes(origin: Origin) -> dict[str, str | int]:
    scheme, host, port = origin
    attributes: dict[str, str | int] = {SERVER_ADDRESS: host}
    if port is None:  # httpx leaves a scheme's default port out of the URL
        port = DEFAULT_PORTS.get(scheme)
    if port is not None:
        attributes[SERVER_PORT] = port
    return attributes
