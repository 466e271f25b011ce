"""HedgingTransport: when an answer is late, ask again, and take the first good one."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import anyio
import anyio.abc
import httpx

from . import _checks, _otel
from ._budget import BudgetBook
from ._clock import SteadyClock
from ._keys import BUDGET
from ._layer import Layer, Transport, wrong_policy
from ._lru import make_room
from ._options import request_options
from ._origin import Origin, origin_of
from ._records import HedgeHistory
from ._retry import Sleep
from ._retry_policy import (
    DEFAULT_POLICY,
    DEFAULT_RETRY_STATUSES,
    IDEMPOTENT_METHODS,
    is_idempotent,
    is_replayable,
)
from ._semconv import (
    HTTP_REQUEST_METHOD,
    SERVER_ADDRESS,
    SERVER_PORT,
    method_attribute,
    server_port,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

logger = logging.getLogger("httpx_resilience")

#: Safe by RFC 9110 §9.2.1: the methods hedged unless the policy says otherwise.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Counter of hedges sent (attempts after the first), by method and server.
HEDGES_METRIC = "http.client.request.hedges"


@dataclass(frozen=True, slots=True)
class HedgingPolicy:
    """When to send another copy of a slow request, and how many in all.

    Built once and shared by every request; change it with
    ``dataclasses.replace``.

    >>> HedgingPolicy(delay=0.05, max_attempts=3)  # a fixed delay  # doctest: +ELLIPSIS
    HedgingPolicy(delay=0.05, max_attempts=3, ...)
    >>> policy = HedgingPolicy(percentile=0.99, min_delay=0.02, max_delay=0.5)  # learned

    If no acceptable answer has come ``delay`` seconds after the last attempt
    went out, another goes out, up to ``max_attempts`` in all. With
    ``delay=None`` (the default) the delay is learned per origin: the
    ``percentile`` of the last ``window`` latencies of acceptable answers,
    kept between ``min_delay`` and ``max_delay``; until ``min_samples`` are
    in, it is ``max_delay``. A response whose status is in ``statuses`` (by
    default those the retry layer retries) or an exception does not win;
    the attempts still out may, and no new one starts after it.

    Only ``methods`` are hedged (GET, HEAD and OPTIONS by default; PUT and
    DELETE may be added, never POST or PATCH), and only with a body that
    can be sent again.
    """

    delay: float | None = None
    max_attempts: int = 2
    percentile: float = 0.95
    min_delay: float = 0.01
    max_delay: float = 1.0
    window: int = 200
    min_samples: int = 20
    statuses: Iterable[int] = DEFAULT_RETRY_STATUSES
    methods: Iterable[str] = SAFE_METHODS

    def __post_init__(self) -> None:
        # NaN here made every hedged request fail inside the task group.
        _checks.optional_number("delay", self.delay)
        max_attempts = _checks.count("max_attempts", self.max_attempts, minimum=1)
        _checks.real("percentile", self.percentile, unit="")
        if not 0 < self.percentile < 1:
            raise ValueError(f"percentile must be between 0 and 1, got {self.percentile!r}")
        _checks.real("min_delay", self.min_delay)
        _checks.real("max_delay", self.max_delay)
        if not 0 <= self.min_delay <= self.max_delay:
            raise ValueError(
                "need 0 <= min_delay <= max_delay, "
                f"got min_delay={self.min_delay!r}, max_delay={self.max_delay!r}"
            )
        window = _checks.count("window", self.window, minimum=1)
        min_samples = _checks.count("min_samples", self.min_samples)
        if not 1 <= min_samples <= window:
            raise ValueError(f"min_samples must be from 1 to window ({window}), got {min_samples}")
        statuses = _checks.statuses("statuses", self.statuses, low=100, high=599)
        methods = _checks.methods("methods", self.methods)
        unsafe = methods - IDEMPOTENT_METHODS
        if unsafe:
            # Two copies of a POST run at the same time: even with an
            # Idempotency-Key the second is a conflict (409), and may win.
            raise ValueError(
                f"cannot hedge {', '.join(sorted(unsafe))}: only idempotent methods "
                f"({', '.join(sorted(IDEMPOTENT_METHODS))}) may run twice at once"
            )
        object.__setattr__(self, "max_attempts", max_attempts)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "min_samples", min_samples)
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "methods", methods)


DEFAULT_HEDGING_POLICY = HedgingPolicy()


_NOT_HEDGED = HedgeHistory(attempts=1, winner=1)


def may_hedge(request: httpx.Request, policy: HedgingPolicy) -> bool:
    """Whether the request may run as more than one attempt at a time.

    >>> may_hedge(httpx.Request("GET", "https://example.com"), HedgingPolicy())
    True
    >>> may_hedge(httpx.Request("POST", "https://example.com", json={}), HedgingPolicy())
    False

    Its method must be one of the policy's, it must not be marked
    ``{"idempotent": False}``, and its body must be replayable.
    """
    return (
        request.method in cast(frozenset[str], policy.methods)
        # The methods are idempotent; only the per-request option can say no.
        and is_idempotent(request, DEFAULT_POLICY)
        and is_replayable(request)
    )


class LatencyWindow:
    """The latencies of the last ``size`` acceptable answers from one origin.

    >>> window = LatencyWindow(size=100)
    >>> for ms in range(1, 101):
    ...     window.add(ms / 1000)
    >>> window.quantile(0.95)
    0.095

    The quantile is the nearest rank of the sorted samples, computed again
    only once a tenth of the samples are new, so asking for it per request
    costs a comparison. A sample no clock could give (negative, NaN or
    infinite) is left out: one NaN would spoil the sorting for good.
    """

    __slots__ = ("_cached", "_count", "_next", "_q", "_samples", "_stale")

    def __init__(self, size: int) -> None:
        self._samples = [0.0] * size
        self._next = 0
        self._count = 0
        self._cached = 0.0
        self._q = -1.0
        self._stale = 0

    def __len__(self) -> int:
        return self._count

    def add(self, seconds: float) -> None:
        if not 0.0 <= seconds < math.inf:
            return
        samples = self._samples
        samples[self._next] = seconds
        self._next = (self._next + 1) % len(samples)
        if self._count < len(samples):
            self._count += 1
        self._stale += 1

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0 < q < 1) of the samples, ``None`` with none."""
        count = self._count
        if not count:
            return None
        if q != self._q or self._stale * 10 >= count:
            ordered = sorted(self._samples[:count])
            self._cached = ordered[max(0, math.ceil(q * count) - 1)]
            self._q = q
            self._stale = 0
        return self._cached


def hedge_delay(policy: HedgingPolicy, window: LatencyWindow | None) -> float:
    """Seconds to wait for an answer before sending the next attempt.

    >>> hedge_delay(HedgingPolicy(delay=0.05), None)
    0.05
    >>> hedge_delay(HedgingPolicy(), LatencyWindow(10))  # nothing learned yet: the ceiling
    1.0
    """
    if policy.delay is not None:
        return policy.delay
    if window is None or len(window) < policy.min_samples:
        return policy.max_delay
    learned = cast(float, window.quantile(policy.percentile))
    return min(policy.max_delay, max(policy.min_delay, learned))


def copy_request(request: httpx.Request) -> httpx.Request:
    """Another attempt of ``request``: same method, URL, headers and body bytes.

    The extensions dict is new, its values shared: the tracing layer's
    attempt count travels in it, so each copy is traced as a re-send.
    """
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=request.stream,
        extensions=dict(request.extensions),
    )


class _Race:
    """The attempts of one hedged request, and how they stand."""

    __slots__ = (
        "failed",
        "group",
        "in_flight",
        "outcome",
        "request",
        "sent",
        "window",
        "winner",
    )

    def __init__(
        self,
        request: httpx.Request,
        group: anyio.abc.TaskGroup,
        window: LatencyWindow | None,
    ) -> None:
        self.request = request
        self.group = group
        self.window = window
        self.sent = 1
        self.in_flight = 1
        self.winner: int | None = None
        # The acceptable answer once there is one; else the last outcome in.
        self.outcome: httpx.Response | Exception | None = None
        self.failed = False  # an unacceptable outcome came in: no new attempts


class HedgingTransport(Layer):
    """Send another attempt of a slow idempotent request; the first good answer wins.

    >>> base = httpx.AsyncHTTPTransport(http2=True)
    >>> transport = HedgingTransport(base, HedgingPolicy(delay=0.05))
    >>> client = httpx.AsyncClient(transport=transport)

    When a GET has had no answer ``delay`` seconds after it went out, a copy
    goes out too, concurrently, up to ``max_attempts`` in all (see
    ``HedgingPolicy``). The first acceptable answer is returned; the other
    attempts are cancelled and any response they got is closed. If none is
    acceptable, the caller gets the last outcome to come back, response or
    exception, as the retry layer around this one expects.

    Each hedge takes a token from the retry budget when the request carries
    one (``RetryTransport`` lends it): no token, no hedge. A request opts out
    with ``extensions={"resilience": {"hedge": False}}`` or brings its own
    ``HedgingPolicy`` there. Place it inside ``RetryTransport`` and the
    circuit breaker, outside ``TracingTransport``: each attempt is then a
    span of its own, with its ``http.request.resend_count``.

    Hedges are logged at debug level and counted in
    ``http.client.request.hedges`` through ``meter_provider``. ``sleep``
    waits the delay and ``clock`` (monotonic seconds; a step back or NaN
    counts as no time passed) times the answers the delay is learned from.
    The latencies of the ``max_origins`` origins used last are kept; the
    least recently used goes first (learning its delay again costs nothing
    but a few hedges at ``max_delay``).
    """

    def __init__(
        self,
        transport: Transport,
        policy: HedgingPolicy | None = None,
        *,
        sleep: Sleep = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
        meter_provider: MeterProvider | None = None,
        max_origins: int = 1024,
    ) -> None:
        super().__init__(transport)
        if policy is not None and not isinstance(policy, HedgingPolicy):
            raise TypeError(wrong_policy(HedgingPolicy, policy))
        max_origins = _checks.count("max_origins", max_origins, minimum=1)
        self._policy = policy or DEFAULT_HEDGING_POLICY
        self._sleep = sleep
        self._clock = SteadyClock(clock)
        self._max_origins = max_origins
        self._windows: OrderedDict[Origin, LatencyWindow] = OrderedDict()
        self._hedges = _otel.counter(
            meter_provider,
            HEDGES_METRIC,
            "{hedge}",
            "Extra attempts sent because an answer was late.",
        )

    @property
    def policy(self) -> HedgingPolicy:
        return self._policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Not a twin of handle_async_request: hedging runs attempts at the
        # same time and cancels the losers, which a sync client cannot do (a
        # thread blocked in a read cannot be cancelled; each loser would hold
        # its connection and a thread until its answer came).
        if self._hedged(request) is not None:
            raise RuntimeError(
                "HedgingTransport cannot hedge for a sync client: a hedge runs a second "
                "attempt at the same time and cancels the slower one, which a sync client "
                "cannot do; use an httpx.AsyncClient, or hedging=False for sync clients"
            )
        return self._next.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self._hedged(request)
        if policy is None:
            return await self._async_next.handle_async_request(request)
        window = None
        if policy.delay is None:
            origin = origin_of(request.url)
            window = self._windows.get(origin)
            if window is None:
                window = self._add(origin, policy.window)
            else:
                self._windows.move_to_end(origin)
        delay = hedge_delay(policy, window)
        group = anyio.create_task_group()
        race = _Race(request, group, window)
        try:
            async with group:
                group.start_soon(self._hedge, race, policy, delay)
                # The first attempt runs in the caller's task: it enters the
                # layers below before any hedge exists (the tracing layer
                # starts its attempt count there), in the caller's context.
                await self._attempt(race, request, 1, policy)
        except BaseException:
            # The caller was cancelled: whatever answer there is goes unread.
            if isinstance(race.outcome, httpx.Response):
                with anyio.CancelScope(shield=True):
                    await race.outcome.aclose()
            raise
        outcome = race.outcome
        if isinstance(outcome, httpx.Response):
            outcome.extensions["hedging"] = (
                _NOT_HEDGED if race.sent == 1 else HedgeHistory(race.sent, race.winner)
            )
            return outcome
        assert outcome is not None  # every attempt ends with an outcome or is cancelled
        if race.sent > 1:
            _add_note(outcome, race.sent)
        raise outcome

    def _hedged(self, request: httpx.Request) -> HedgingPolicy | None:
        """The policy to hedge this request with, or ``None`` for a single attempt."""
        policy = self._policy_for(request)
        if policy is None or policy.max_attempts < 2 or not may_hedge(request, policy):
            return None
        return policy

    def _policy_for(self, request: httpx.Request) -> HedgingPolicy | None:
        # The first layer to read the options checked them all, before sending.
        option = request_options(request).get("hedge", True)
        if option is True:
            return self._policy
        if option is False:
            return None
        return cast(HedgingPolicy, option)

    def _add(self, origin: Origin, size: int) -> LatencyWindow:
        # Every window is idle to the map: a race in flight holds its own.
        make_room(self._windows, self._max_origins, _always)
        window = self._windows[origin] = LatencyWindow(size)
        return window

    async def _hedge(self, race: _Race, policy: HedgingPolicy, delay: float) -> None:
        """Send the next attempt each time ``delay`` passes without an answer."""
        # Lent by RetryTransport: hedges and retries draw on the same tokens.
        book = cast("BudgetBook | None", race.request.extensions.get(BUDGET))
        for number in range(2, policy.max_attempts + 1):
            await self._sleep(delay)
            if race.failed:
                return  # a failure is for the retry layer: it waits first
            if book is not None and not book.withdraw(origin_of(race.request.url)):
                return
            race.sent += 1
            race.in_flight += 1
            self._report(race.request, number, delay)
            race.group.start_soon(self._attempt, race, copy_request(race.request), number, policy)

    async def _attempt(
        self, race: _Race, request: httpx.Request, number: int, policy: HedgingPolicy
    ) -> None:
        start = self._clock()
        try:
            outcome: httpx.Response | Exception = await self._async_next.handle_async_request(
                request
            )
        except Exception as exc:
            outcome = exc
        race.in_flight -= 1
        drop: httpx.Response | Exception | None
        # Decide before any await, so that no other attempt can win meanwhile.
        if race.winner is not None:
            drop = outcome  # too late: another attempt won while this one came back
        elif isinstance(outcome, httpx.Response) and _acceptable(outcome, policy):
            if race.window is not None:
                race.window.add(self._clock() - start)
            drop, race.outcome, race.winner = race.outcome, outcome, number
            race.group.cancel_scope.cancel()
        else:
            # Not acceptable: kept in case nothing better comes, and no new
            # attempt starts (a failure is for the retry layer, which waits).
            drop, race.outcome = race.outcome, outcome
            race.failed = True
            if not race.in_flight:
                race.group.cancel_scope.cancel()  # nothing left to wait for; stop the timer
        if isinstance(drop, httpx.Response):
            with anyio.CancelScope(shield=True):
                await drop.aclose()

    def _report(self, request: httpx.Request, number: int, delay: float) -> None:
        """Tell the log and the hedges counter about one hedge."""
        if logger.isEnabledFor(logging.DEBUG):
            url = request.url.copy_with(username=None, password=None, query=None, fragment=None)
            logger.debug(
                "hedging %s %s: no answer after %.3f s, sending attempt %d",
                request.method,
                url,
                delay,
                number,
                extra={"http_method": request.method, "url": str(url), "attempt": number},
            )
        if self._hedges is not None:
            url = request.url
            attributes: dict[str, str | int] = {
                HTTP_REQUEST_METHOD: method_attribute(request.method),
                SERVER_ADDRESS: url.host,
            }
            port = server_port(url)
            if port is not None:
                attributes[SERVER_PORT] = port
            self._hedges.add(1, attributes)


def _always(window: LatencyWindow) -> bool:
    return True


def _acceptable(response: httpx.Response, policy: HedgingPolicy) -> bool:
    return response.status_code not in cast(frozenset[int], policy.statuses)


def _add_note(exc: BaseException, attempts: int) -> None:
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:  # Python >= 3.11
        add_note(f"httpx-resilience: none of {attempts} hedged attempts succeeded")
