"""RateLimitTransport: at most so many requests per period and in flight, and pause when asked."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from . import _checks
from ._errors import RateLimitExceeded
from ._layer import Layer, Transport, wrong_policy
from ._origin import format_origin, origin_of
from ._retry_policy import parse_retry_after
from ._state import MEMORY, AsyncRateStore, LocalRates, RateStore, StateBackend

Sleep = Callable[[float], Awaitable[Any]]
SyncSleep = Callable[[float], Any]

#: Answers that pause a key for every caller when they carry ``Retry-After``.
DEFAULT_PAUSE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """How many requests may go per key (an origin, by default): a rate, a burst, a cap in flight.

    >>> policy = RateLimitPolicy(rate=100)                        # 100 a second
    >>> policy = RateLimitPolicy(rate=500, period=60, burst=20)   # 500 a minute, 20 at once
    >>> policy = RateLimitPolicy(max_in_flight=8, wait=False)     # 8 at a time, fail the 9th

    - ``rate`` requests per ``period`` seconds (``None``: no rate), with at
      most ``burst`` at once (default: ``rate``, rounded up): over ``T``
      seconds at most ``burst + rate * T / period`` go.
    - ``max_in_flight``: requests sent and not yet answered in full (the
      response body closed), per transport; ``None`` for no cap.
    - A request over the limit waits for its turn when ``wait`` is true, at
      most its pool timeout (httpx's ``timeout.pool``, 5 s by default; less
      when the retry layer's deadline is nearer) and never more than
      ``max_wait``; a turn further away fails it at once with
      ``RateLimitExceeded``, an ``httpx.PoolTimeout``. ``wait=False`` fails
      every request over the limit at once.
    - A response in ``pause_statuses`` (429, 503) with ``Retry-After``
      pauses its key for every caller sharing the limiter, for what the
      header asks (``max_pause`` at most).
    - ``key(request)``: what the limits are kept per (a str); by default
      the request's origin, such as ``https://api.example.com``.
    """

    rate: float | None = None
    period: float = 1.0
    burst: int | None = None
    max_in_flight: int | None = None
    wait: bool = True
    max_wait: float = 60.0
    pause_statuses: Iterable[int] = DEFAULT_PAUSE_STATUSES
    max_pause: float = 60.0
    key: Callable[[httpx.Request], str] | None = None

    def __post_init__(self) -> None:
        if self.rate is not None:
            _checks.number("rate", self.rate, above_minimum=True, unit="requests")
        _checks.number("period", self.period, above_minimum=True)
        if self.burst is not None:
            _checks.count("burst", self.burst, minimum=1)
        elif self.rate is not None:
            object.__setattr__(self, "burst", max(1, math.ceil(self.rate)))
        if self.max_in_flight is not None:
            _checks.count("max_in_flight", self.max_in_flight, minimum=1)
        _checks.flag("wait", self.wait)
        _checks.number("max_wait", self.max_wait)
        statuses = _checks.statuses("pause_statuses", self.pause_statuses, low=100, high=599)
        object.__setattr__(self, "pause_statuses", statuses)
        _checks.number("max_pause", self.max_pause)
        if self.key is not None and not callable(self.key):
            raise TypeError(f"key must be a function of the request, got {self.key!r}")

    @property
    def interval(self) -> float:
        """Seconds between two requests at the steady rate; 0 for no rate."""
        return 0.0 if self.rate is None else self.period / self.rate

    @property
    def bucket(self) -> int:
        """The burst, as the rate stores read it."""
        return self.burst or 1


DEFAULT_RATE_LIMIT_POLICY = RateLimitPolicy()


class _Settings:
    """What the stores read of a policy: the interval and the burst."""

    __slots__ = ("burst", "interval")

    def __init__(self, policy: RateLimitPolicy) -> None:
        self.interval = policy.interval
        self.burst = policy.bucket


class RateLimitTransport(Layer):
    """Send at most so many requests per period and in flight, and pause when the server asks.

    >>> policy = RateLimitPolicy(rate=50, max_in_flight=10)
    >>> transport = RateLimitTransport(httpx.AsyncHTTPTransport(), policy)
    >>> client = httpx.AsyncClient(transport=transport)

    Limits are kept per key (the origin, by default; ``policy.key`` derives
    another from the request). The rate and the pauses live in ``state``:
    this process's memory by default, or a ``RedisState`` shared by every
    process using its prefix, so that a fleet keeps one quota and a 429
    with ``Retry-After`` seen by one process pauses them all. The cap on
    requests in flight is this transport's own.

    Place it inside ``RetryTransport`` (``resilient_transport(rate_limit=...)``
    does): every attempt, retries included, counts against the rate, as it
    does at the server. ``sleep``/``sync_sleep`` are what a waiting request
    waits with; ``clock`` is the monotonic time of the local state.
    """

    def __init__(
        self,
        transport: Transport,
        policy: RateLimitPolicy | None = None,
        *,
        state: StateBackend | None = None,
        sleep: Sleep = anyio.sleep,
        sync_sleep: SyncSleep = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(transport)
        if policy is not None and not isinstance(policy, RateLimitPolicy):
            raise TypeError(wrong_policy(RateLimitPolicy, policy))
        if state is not None and not isinstance(state, StateBackend):
            raise TypeError(f"state must be a MemoryState or RedisState, got {state!r}")
        self._policy = policy = policy or DEFAULT_RATE_LIMIT_POLICY
        self._sleep = sleep
        self._sync_sleep = sync_sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._interval = policy.interval
        self._burst = policy.bucket
        self._pause_statuses = frozenset(policy.pause_statuses)
        # This process's rates and pauses: the state itself in memory, the
        # fallback while a shared backend does not answer.
        self._local = LocalRates(clock)
        stores = (state or MEMORY).rates(_Settings(policy))
        self._async_store: AsyncRateStore | None = None
        self._store: RateStore | None = None
        if stores is not None:
            self._async_store, self._store = stores
        cap = policy.max_in_flight
        self._async_slots = None if cap is None else anyio.Semaphore(cap)
        self._slots = None if cap is None else threading.Semaphore(cap)

    @property
    def policy(self) -> RateLimitPolicy:
        return self._policy

    # unasync: begin
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = self._clock()
        limit = self._patience(request)
        key = self._key(request)
        held = await self._async_hold(request, key, start, limit)
        try:
            await self._async_admit(request, key, start, limit)
            response = await self._async_next.handle_async_request(request)
        except BaseException:
            if held:
                self._async_slots.release()  # type: ignore[union-attr]
            raise
        if response.status_code in self._pause_statuses:
            await self._async_pause_for(key, response)
        if held:
            if response.is_closed:  # a body already in memory: nothing more in flight
                self._async_slots.release()  # type: ignore[union-attr]
            else:
                response.stream = _Releasing(response.stream, self._async_slots.release)  # type: ignore[union-attr]
        return response

    async def _async_admit(
        self, request: httpx.Request, key: str, start: float, limit: float
    ) -> None:
        """Wait for the key's turn (bounded by ``limit``), or raise ``RateLimitExceeded``."""
        while True:
            wait = None
            if self._async_store is not None:
                wait = await self._async_store.acquire(key)
            if wait is None:  # memory, or the backend did not answer
                wait = self._local.acquire(key, self._interval, self._burst)
            if not wait:
                return
            left = limit - (self._clock() - start)
            if not self._policy.wait or wait > left:
                raise self._refused(request, key, wait, left)
            await self._sleep(wait)

    async def _async_pause_for(self, key: str, response: httpx.Response) -> None:
        """A 429 or 503 asked for a pause: every caller of the key waits it out."""
        seconds = self._pause_asked(response)
        if seconds is None:
            return
        self._local.pause(key, seconds)
        if self._async_store is not None:
            await self._async_store.pause(key, seconds)

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = self._clock()
        limit = self._patience(request)
        key = self._key(request)
        held = self._hold(request, key, start, limit)
        try:
            self._admit(request, key, start, limit)
            response = self._next.handle_request(request)
        except BaseException:
            if held:
                self._slots.release()  # type: ignore[union-attr]
            raise
        if response.status_code in self._pause_statuses:
            self._pause_for(key, response)
        if held:
            if response.is_closed:  # a body already in memory: nothing more in flight
                self._slots.release()  # type: ignore[union-attr]
            else:
                response.stream = _Releasing(response.stream, self._slots.release)  # type: ignore[union-attr]
        return response

    def _admit(self, request: httpx.Request, key: str, start: float, limit: float) -> None:
        """Wait for the key's turn (bounded by ``limit``), or raise ``RateLimitExceeded``."""
        while True:
            wait = None
            if self._store is not None:
                wait = self._store.acquire(key)
            if wait is None:  # memory, or the backend did not answer
                wait = self._local.acquire(key, self._interval, self._burst)
            if not wait:
                return
            left = limit - (self._clock() - start)
            if not self._policy.wait or wait > left:
                raise self._refused(request, key, wait, left)
            self._sync_sleep(wait)

    def _pause_for(self, key: str, response: httpx.Response) -> None:
        """A 429 or 503 asked for a pause: every caller of the key waits it out."""
        seconds = self._pause_asked(response)
        if seconds is None:
            return
        self._local.pause(key, seconds)
        if self._store is not None:
            self._store.pause(key, seconds)

    # unasync: generated end

    async def _async_hold(
        self, request: httpx.Request, key: str, start: float, limit: float
    ) -> bool:
        """Take a slot of the cap on requests in flight; ``False`` when there is no cap."""
        slots = self._async_slots
        if slots is None:
            return False
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            pass
        else:
            return True
        left = limit - (self._clock() - start)
        if self._policy.wait and left > 0:
            with anyio.move_on_after(left):
                await slots.acquire()
                return True
        raise self._full(request, key)

    def _hold(self, request: httpx.Request, key: str, start: float, limit: float) -> bool:
        slots = self._slots
        if slots is None:
            return False
        if slots.acquire(blocking=False):
            return True
        left = limit - (self._clock() - start)
        if self._policy.wait and left > 0 and slots.acquire(timeout=left):
            return True
        raise self._full(request, key)

    def _key(self, request: httpx.Request) -> str:
        key = self._policy.key
        return format_origin(origin_of(request.url)) if key is None else key(request)

    def _patience(self, request: httpx.Request) -> float:
        """How long the request may wait for its turn: its pool timeout, ``max_wait`` at most."""
        timeout = request.extensions.get("timeout")
        pool = None if timeout is None else timeout.get("pool")
        limit = self._policy.max_wait
        return limit if pool is None or pool > limit else pool

    def _pause_asked(self, response: httpx.Response) -> float | None:
        header = response.headers.get("Retry-After")
        if header is None:
            return None
        seconds = parse_retry_after(header, self._wall_clock())
        if seconds is None or seconds <= 0:
            return None
        return min(seconds, self._policy.max_pause)

    def _refused(
        self, request: httpx.Request, key: str, wait: float, left: float
    ) -> RateLimitExceeded:
        if self._policy.wait:
            why = f"more than the {max(left, 0.0):.2f} s it may wait (its pool timeout)"
        else:
            why = "and the policy does not wait"
        return RateLimitExceeded(
            f"rate limit for {key}: the next request may go in {wait:.2f} s, {why}; not sent",
            key=key,
            retry_in=wait,
            request=request,
        )

    def _full(self, request: httpx.Request, key: str) -> RateLimitExceeded:
        return RateLimitExceeded(
            f"rate limit for {key}: {self._policy.max_in_flight} requests in flight, and no "
            "slot came free in the time the request may wait; not sent",
            key=key,
            retry_in=0.0,
            request=request,
        )


class _Releasing(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A response body that gives its in-flight slot back when it is closed."""

    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._give_back()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
