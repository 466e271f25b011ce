"""Retry budgets: retries may add only a fraction to the load on an origin."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from . import _checks
from ._clock import SteadyClock
from ._lru import make_room
from ._origin import Origin

#: Distinct per-request budgets one RetryTransport keeps a book for (equal
#: budgets share one); past that, the least recently used book goes.
MAX_BUDGET_BOOKS = 64


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many retries an origin may get, as a token bucket per origin.

    Every request puts ``ratio`` tokens in its origin's bucket and every retry
    takes one out (a retry after a timeout takes ``timeout_cost``): retries
    stay near ``ratio`` of the requests however badly the origin fails, so a
    struggling server is not buried under a retry storm: at most ``ratio``
    times the requests plus ``max_tokens`` retries. The bucket holds at most
    ``max_tokens`` (so a burst of failures can still be retried), starts full,
    and refills by ``min_per_second`` on its own, so a quiet client can always
    retry now and then. The manner of
    gRPC's retry throttling, Envoy's retry budget and Finagle's RetryBudget.

    >>> policy = RetryPolicy(budget=RetryBudget(ratio=0.1))  # doctest: +SKIP
    >>> policy = RetryPolicy(budget=None)  # no budget  # doctest: +SKIP
    """

    ratio: float = 0.2
    max_tokens: float = 50.0
    min_per_second: float = 1.0
    timeout_cost: float = 2.0

    def __post_init__(self) -> None:
        _checks.number("ratio", self.ratio, maximum=1, unit="")
        # NaN here compared False everywhere: the budget was silently off.
        _checks.number("max_tokens", self.max_tokens, minimum=1, unit="tokens")
        _checks.number("min_per_second", self.min_per_second, unit="tokens per second")
        _checks.number("timeout_cost", self.timeout_cost, unit="tokens")


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now


class BudgetBook:
    """The token buckets of one transport, per origin; only full buckets are forgotten.

    ``clock`` gives monotonic seconds; a step back or NaN counts as no time
    passed (``SteadyClock``), so a bad reading neither refills a bucket nor
    stops it from refilling.

    About ``size`` origins are kept. A bucket that has refilled to the brim
    holds nothing a new one would not (a new bucket starts full), so any
    such bucket may go, and which one does not matter. A bucket below full,
    drained by retries and still in its refill time, is never forgotten:
    forgetting it would hand a failing origin its retries back. When the
    buckets looked at are all below full, the book grows past ``size``
    instead, and shrinks back as they refill.
    """

    def __init__(
        self, budget: RetryBudget, *, clock: Callable[[], float] = time.monotonic, size: int = 1024
    ) -> None:
        self.budget = budget
        self._clock = SteadyClock(clock)
        self._size = size
        self._buckets: OrderedDict[Origin, _Bucket] = OrderedDict()
        # One transport may serve many threads.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The origins the book holds a bucket for."""
        return len(self._buckets)

    def deposit(self, origin: Origin) -> None:
        """A new request to ``origin``: it earns the origin ``ratio`` tokens.

        Called for every request, so it reads no clock: the time-based
        refill is settled when tokens are taken.
        """
        with self._lock:
            bucket = self._buckets.get(origin)
            if bucket is None:
                bucket = self._new(origin)
            tokens = bucket.tokens + self.budget.ratio
            bucket.tokens = tokens if tokens < self.budget.max_tokens else self.budget.max_tokens

    def withdraw(self, origin: Origin, *, timeout: bool = False) -> bool:
        """Take the tokens for one retry or hedge; ``False`` when there are too few."""
        cost = self.budget.timeout_cost if timeout else 1.0
        with self._lock:
            bucket = self._refilled(origin)
            if bucket.tokens < cost:
                return False
            bucket.tokens -= cost
            return True

    def tokens(self, origin: Origin) -> float:
        """Tokens left for ``origin`` (a full bucket for one never seen)."""
        with self._lock:
            return self._refilled(origin).tokens

    def _new(self, origin: Origin) -> _Bucket:
        now = self._clock()
        budget = self.budget

        def full(bucket: _Bucket) -> bool:
            return bucket.tokens + (now - bucket.updated) * budget.min_per_second >= (
                budget.max_tokens
            )

        make_room(self._buckets, self._size, full)
        bucket = self._buckets[origin] = _Bucket(budget.max_tokens, now)
        return bucket

    def _refilled(self, origin: Origin) -> _Bucket:
        bucket = self._buckets.get(origin)
        if bucket is None:
            return self._new(origin)
        now = self._clock()
        budget = self.budget
        if budget.min_per_second and now > bucket.updated:
            refill = (now - bucket.updated) * budget.min_per_second
            bucket.tokens = min(budget.max_tokens, bucket.tokens + refill)
        bucket.updated = now
        return bucket


class SharedBudgetBook(BudgetBook):
    """A budget book whose buckets a backend shares; the book itself is the local fallback.

    Deposits go to the local buckets (what this process decides on while
    the backend does not answer, and what hedges draw on) and are counted
    per origin for the shared bucket, where they are settled when a retry
    takes tokens: the happy path never calls the backend. A process's
    unsettled deposits are capped at a full bucket, so the fleet never gets
    more than ``ratio`` times its requests plus one bucket of retries.
    """

    def __init__(
        self, budget: RetryBudget, *, clock: Callable[[], float] = time.monotonic, size: int = 1024
    ) -> None:
        super().__init__(budget, clock=clock, size=size)
        self._unsettled: dict[Origin, float] = {}

    def deposit(self, origin: Origin) -> None:
        budget = self.budget
        with self._lock:
            bucket = self._buckets.get(origin)
            if bucket is None:
                bucket = self._new(origin)
            tokens = bucket.tokens + budget.ratio
            bucket.tokens = tokens if tokens < budget.max_tokens else budget.max_tokens
            unsettled = self._unsettled.get(origin)
            if unsettled is None:
                if len(self._unsettled) >= self._size:
                    return  # too many origins to keep count of: these deposits are lost
                unsettled = 0.0
            unsettled += budget.ratio
            self._unsettled[origin] = (
                unsettled if unsettled < budget.max_tokens else budget.max_tokens
            )

    def unsettled(self, origin: Origin) -> float:
        """Take the deposits for ``origin`` not yet settled with the backend."""
        with self._lock:
            return self._unsettled.pop(origin, 0.0)

    def cost(self, timeout: bool) -> float:
        """The tokens one retry takes."""
        return self.budget.timeout_cost if timeout else 1.0
