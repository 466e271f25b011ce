"""Where the layers that keep state keep it: in memory (the default) or shared by a fleet.

A backend is chosen once and handed to the layers that keep state: the
circuit breaker, the retry budget and the rate limiter, each through its
``state=`` keyword (``resilient_transport(state=...)`` hands it to all of
them)::

    state = RedisState("redis://127.0.0.1:6379/0", prefix="billing")
    transport = resilient_transport(circuit_breaker=True, rate_limit=policy, state=state)

``MemoryState`` keeps today's behaviour: each layer keeps its state in its
own objects, at no cost over a layer without ``state=``. A shared backend
gives each layer a pair of stores (one for async clients, one for sync
ones); a store answers ``None`` whenever the backend could not be asked
(down, slow, refused), and the layer then decides on its own local state,
so a failing backend never fails a request. The protocols below are what a
backend of one's own (memcached, a database) would implement.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._circuit import CircuitSettings
from ._lru import make_room

logger = logging.getLogger("httpx_resilience")


@dataclass(frozen=True, slots=True)
class CircuitReply:
    """What a shared circuit answered: a permit or a refusal, and where it stands.

    ``state`` is ``"closed"``, ``"open"`` or ``"half_open"`` after the call,
    ``previous`` before it (they differ when this call moved the circuit);
    ``permit`` is the generation the call may report under, ``None`` when it
    is failed fast; ``retry_in`` is the seconds left of the break while open;
    ``tripped`` the (failures, calls) that opened it last.
    """

    permit: int | None
    state: str
    previous: str
    retry_in: float
    tripped: tuple[int, int]


class AsyncCircuitStore(Protocol):
    """One breaker's circuits, shared; every method answers ``None`` when the backend failed."""

    async def acquire(self, key: str, successes: int, generation: int) -> CircuitReply | None:
        """A permit for one call, after counting ``successes`` calls of ``generation``."""

    async def record(self, key: str, permit: int, failed: bool) -> CircuitReply | None:
        """The call given ``permit`` ended with a verdict."""

    async def release(self, key: str, permit: int) -> None:
        """The call given ``permit`` ended with no verdict."""


class CircuitStore(Protocol):
    """The same for sync clients."""

    def acquire(self, key: str, successes: int, generation: int) -> CircuitReply | None: ...
    def record(self, key: str, permit: int, failed: bool) -> CircuitReply | None: ...
    def release(self, key: str, permit: int) -> None: ...


class AsyncBudgetStore(Protocol):
    """One retry budget's token buckets, shared."""

    async def settle(self, key: str, deposit: float, cost: float) -> bool | None:
        """Add ``deposit`` tokens, then take ``cost`` (0: none); whether there were enough."""


class BudgetStore(Protocol):
    def settle(self, key: str, deposit: float, cost: float) -> bool | None: ...


class AsyncRateStore(Protocol):
    """One rate limiter's counters and pauses, shared."""

    async def acquire(self, key: str) -> float | None:
        """0 when a request may go now (and it is counted), else the seconds to wait."""

    async def pause(self, key: str, seconds: float) -> None:
        """No request for ``key`` goes out for ``seconds`` (a longer pause stands)."""


class RateStore(Protocol):
    def acquire(self, key: str) -> float | None: ...
    def pause(self, key: str, seconds: float) -> None: ...


class RateSettings(Protocol):
    """What a rate store reads of its ``RateLimitPolicy``."""

    @property
    def interval(self) -> float: ...
    @property
    def burst(self) -> int: ...


class BudgetSettings(Protocol):
    """What a budget store reads of its ``RetryBudget``."""

    @property
    def max_tokens(self) -> float: ...
    @property
    def min_per_second(self) -> float: ...


class StateBackend:
    """Where the layers that keep state keep it; the base keeps it in memory.

    Each method gives a layer its shared stores, async and sync, or ``None``:
    keep the state in the layer's own objects.
    """

    def circuits(self, policy: CircuitSettings) -> tuple[AsyncCircuitStore, CircuitStore] | None:
        return None

    def budgets(self, budget: BudgetSettings) -> tuple[AsyncBudgetStore, BudgetStore] | None:
        return None

    def rates(self, policy: RateSettings) -> tuple[AsyncRateStore, RateStore] | None:
        return None


class MemoryState(StateBackend):
    """Each layer keeps its state in memory, for its own process: the default.

    >>> state = MemoryState()
    >>> transport = resilient_transport(circuit_breaker=True, state=state)  # doctest: +SKIP
    """

    def __repr__(self) -> str:
        return "MemoryState()"


#: The default backend: state in memory, per layer.
MEMORY = MemoryState()


class Health:
    """Whether a shared backend is answering, and one log record per outage.

    After a failure the backend is left alone for ``retry_after`` seconds
    (the layers decide on local state meanwhile), so a backend that is down
    costs one timeout per ``retry_after``, not one per request. The first
    failure of an outage is logged as a warning, the first answer after it
    as info; a backend that keeps flapping is reported at most once a
    minute.
    """

    __slots__ = ("_clock", "_down_until", "_lock", "_logged_at", "failures", "name", "retry_after")

    #: The least time between two warnings about the same backend.
    LOG_EVERY = 60.0

    def __init__(
        self, name: str, retry_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.retry_after = retry_after
        self._clock = clock
        #: 0 while the backend answers; else when to ask it again.
        self._down_until = 0.0
        self._logged_at = -self.LOG_EVERY
        self._lock = threading.Lock()
        #: Calls that failed, since the start (for tests and health reports).
        self.failures = 0

    @property
    def up(self) -> bool:
        """Whether to ask the backend now (down, but its pause is over, counts as up)."""
        down_until = self._down_until
        return not down_until or self._clock() >= down_until

    @property
    def down(self) -> bool:
        """Whether the last call failed and no call has answered since."""
        return bool(self._down_until)

    def failed(self, exc: BaseException) -> None:
        """A call failed: local state until ``retry_after`` has passed."""
        with self._lock:
            self.failures += 1
            now = self._clock()
            first = not self._down_until
            self._down_until = now + self.retry_after
            if not first or now - self._logged_at < self.LOG_EVERY:
                return
            self._logged_at = now
        logger.warning(
            "shared state %s unreachable (%s: %s): the layers use local state, "
            "and ask it again in %.1f s",
            self.name,
            type(exc).__name__,
            exc,
            self.retry_after,
            extra={"backend": self.name, "error": type(exc).__name__},
        )

    def answered(self) -> None:
        """A call answered: back to shared state, if it was away."""
        if not self._down_until:
            return
        with self._lock:
            if not self._down_until:
                return
            self._down_until = 0.0
        logger.info(
            "shared state %s answers again: the layers share state again",
            self.name,
            extra={"backend": self.name},
        )


class LocalRates:
    """One process's rates and pauses per key: GCRA on a monotonic clock.

    >>> rates = LocalRates(clock=lambda: 0.0)
    >>> [rates.acquire("k", interval=0.5, burst=2) for _ in range(3)]
    [0.0, 0.0, 0.5]

    GCRA (the generic cell rate algorithm) is a token bucket kept as one
    time per key, the theoretical arrival time of the next request: a
    request may go when it is at most ``burst`` intervals ahead, so at most
    ``burst`` go at once and then one per ``interval``; over ``T`` seconds
    at most ``burst + T / interval``. A refusal says how long to wait, and
    costs nothing. ``RedisState`` runs the same on Redis' clock.

    About ``size`` keys are kept; a key whose bucket is full again and that
    is not paused holds nothing a new one would not, and may go.
    """

    __slots__ = ("_clock", "_lock", "_pauses", "_size", "_tats")

    def __init__(self, clock: Callable[[], float] = time.monotonic, size: int = 1024) -> None:
        self._clock = clock
        self._size = size
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._pauses: dict[str, float] = {}
        # One transport may serve many threads.
        self._lock = threading.Lock()

    def acquire(self, key: str, interval: float, burst: int) -> float:
        """0 when a request may go now (and it is counted), else the seconds to wait."""
        with self._lock:
            now = self._clock()
            if self._pauses:
                paused = self._pauses.get(key)
                if paused is not None:
                    if paused > now:
                        return paused - now
                    del self._pauses[key]
            if interval <= 0:
                return 0.0
            tat = self._tats.get(key)
            if tat is None:
                make_room(self._tats, self._size, lambda tat: tat <= now)
            if tat is None or tat < now:
                tat = now
            next_tat = tat + interval
            allow_at = next_tat - burst * interval
            if now < allow_at:
                return allow_at - now
            self._tats[key] = next_tat
            return 0.0

    def pause(self, key: str, seconds: float) -> None:
        """No request for ``key`` goes for ``seconds`` (a longer pause stands)."""
        with self._lock:
            until = self._clock() + seconds
            if len(self._pauses) >= self._size:
                now = self._clock()
                for other in [k for k, v in self._pauses.items() if v <= now]:
                    del self._pauses[other]
            if self._pauses.get(key, -math.inf) < until:
                self._pauses[key] = until
