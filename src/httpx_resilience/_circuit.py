"""One origin's circuit: the breaker's state machine, with no I/O and no httpx.

The caller passes the time and the verdicts; ``CircuitBreakerTransport``
(``_breaker.py``) moves requests and reads the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._clock import SteadyClock
from ._origin import Origin


class CircuitSettings(Protocol):
    """What a circuit reads of its ``CircuitBreakerPolicy``."""

    @property
    def failure_ratio(self) -> float: ...
    @property
    def min_calls(self) -> int: ...
    @property
    def window(self) -> float: ...
    @property
    def break_duration(self) -> float: ...
    @property
    def probes(self) -> int: ...


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
        self, origin: Origin, policy: CircuitSettings, on_change: OnChange | None = None
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
