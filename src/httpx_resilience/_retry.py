"""RetryTransport: re-send what failed, when it is safe, after a backoff."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from tenacity import AsyncRetrying, Future, RetryCallState

from . import _otel
from ._budget import MAX_BUDGET_BOOKS, BudgetBook, RetryBudget, SharedBudgetBook
from ._classify import resend_at_once, unprocessed_reason
from ._clock import SteadyClock
from ._errors import DeadlineExceeded
from ._keys import BUDGET, CIRCUIT, OPTIONS, REQUEST_ID
from ._layer import Layer, Transport, wrong_policy
from ._lru import make_room
from ._options import request_options
from ._origin import Origin, format_origin, origin_of
from ._records import RetryEvent, RetryHistory
from ._retry_policy import (
    DEFAULT_POLICY,
    RetryPolicy,
    is_replayable,
    parse_retry_after,
    retry_reason,
)
from ._semconv import (
    ERROR_TYPE,
    HTTP_REQUEST_METHOD,
    SERVER_ADDRESS,
    SERVER_PORT,
    method_attribute,
    server_port,
)
from ._state import MEMORY, AsyncBudgetStore, BudgetStore, StateBackend

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

logger = logging.getLogger("httpx_resilience")

#: What the retry layer waits with: ``anyio.sleep`` for async clients,
#: ``time.sleep`` for sync ones, or a fake in tests.
Sleep = Callable[[float], Awaitable[Any]]
SyncSleep = Callable[[float], Any]

#: Counter of re-sends, labelled with the reason (``error.type``), method and server.
RETRIES_METRIC = "http.client.request.retries"
#: Span event added to the caller's span before each wait.
RETRY_EVENT = "httpx_resilience.retry"


_FIRST_TRY = RetryHistory(attempts=1)
_STOPPED = "the policy's stop strategy ended the retries"

#: The per-origin allowance of re-sends at once beyond each request's first:
#: 20 at most, refilled only by re-sends at once that got an answer.
AT_ONCE_ALLOWANCE = RetryBudget(ratio=1.0, max_tokens=20, min_per_second=0.0)


class RetryTransport(Layer):
    """Re-send failed requests that are safe to re-send, with Tenacity backoff.

    >>> client = httpx.AsyncClient(transport=RetryTransport(httpx.AsyncHTTPTransport()))

    What is retried and how long to wait come from the ``RetryPolicy``; a
    request can replace it with ``extensions={"resilience": {"retry": ...}}``
    (``False`` for no retries, or another ``RetryPolicy``). After the last
    attempt the caller gets the last response, or the last exception as
    httpx raised it.

    Each retry is logged (logger ``httpx_resilience``, with the request ID
    from ``request.extensions["request_id"]``), counted in
    ``http.client.request.retries`` through ``meter_provider`` (the global
    one by default, nothing without OpenTelemetry), and added as a span
    event to the caller's current span. A first attempt that succeeds does
    none of this.

    With ``state=RedisState(...)`` the policy's retry budget is shared by
    every process using its prefix (docs/fleet.md): requests are counted
    locally and settled when a retry takes tokens, so a request that
    succeeds makes no call to the backend.
    """

    def __init__(
        self,
        transport: Transport,
        policy: RetryPolicy | None = None,
        *,
        sleep: Sleep = anyio.sleep,
        sync_sleep: SyncSleep = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        meter_provider: MeterProvider | None = None,
        state: StateBackend | None = None,
    ) -> None:
        super().__init__(transport)
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise TypeError(wrong_policy(RetryPolicy, policy))
        if state is not None and not isinstance(state, StateBackend):
            raise TypeError(f"state must be a MemoryState or RedisState, got {state!r}")
        self._policy = policy or DEFAULT_POLICY
        self._sleep = sleep
        self._sync_sleep = sync_sleep
        self._clock = SteadyClock(clock)  # a step back or NaN: no time passed
        self._wall_clock = wall_clock
        # Tenacity strategies receive a RetryCallState, which names its
        # Retrying object; none of our loop runs inside it.
        self._retrying = AsyncRetrying(sleep=sleep)
        # Token buckets per budget configuration (equal budgets share one),
        # then per origin; at most MAX_BUDGET_BOOKS, the least recently used going.
        self._books: OrderedDict[RetryBudget, BudgetBook] = OrderedDict()
        self._books_lock = threading.Lock()
        self._own_book: BudgetBook | None = None
        # On shared state, the layer's own budget is shared; per-request
        # budgets stay this process's own.
        self._async_budget_store: AsyncBudgetStore | None = None
        self._budget_store: BudgetStore | None = None
        if self._policy.budget is not None:
            stores = (state or MEMORY).budgets(self._policy.budget)
            if stores is None:
                self._own_book = BudgetBook(self._policy.budget, clock=clock)
            else:
                self._own_book = SharedBudgetBook(self._policy.budget, clock=clock)
                self._async_budget_store, self._budget_store = stores
            self._books[self._policy.budget] = self._own_book
        #: Per origin, the re-sends at once of unprocessed requests.
        self._at_once = BudgetBook(AT_ONCE_ALLOWANCE, clock=clock)
        self._retries = _otel.counter(
            meter_provider,
            RETRIES_METRIC,
            "{retry}",
            "Re-sends of HTTP client requests, by the reason for each.",
        )

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    # unasync: begin
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy, deadline = self._settings(request)
        if deadline is not None:
            return await self._async_within_deadline(request, policy, deadline)
        # Decided before the first attempt: a transport may swap in a
        # replayable copy of a body it has consumed (MockTransport does).
        if policy is None or not is_replayable(request):
            response = await self._async_next.handle_async_request(request)
            response.extensions["retry"] = _FIRST_TRY
            return response
        budget = self._lend_budget(request, policy)
        start = self._clock()
        # The first attempt stays out of Tenacity's machinery: most requests
        # never need a second one.
        outcome: httpx.Response | Exception
        try:
            outcome = await self._async_next.handle_async_request(request)
        except Exception as exc:
            if retry_reason(request, exc, policy) is None:
                raise
            outcome = exc
        else:
            if outcome.status_code not in policy.statuses:
                outcome.extensions["retry"] = _FIRST_TRY
                return outcome
        # Outside the except clause, so that a later attempt's exception
        # does not carry this one as its __context__.
        return await self._async_retry(request, policy, outcome, start, budget, None)

    async def _async_within_deadline(
        self, request: httpx.Request, policy: RetryPolicy | None, deadline: float
    ) -> httpx.Response:
        """The same, with every attempt and wait inside one time budget."""
        start = self._clock()
        limit = _Deadline(deadline, start + deadline, request.extensions.get("timeout"))
        if policy is None or not is_replayable(request):
            outcome = await self._async_send(request, limit, policy)
            return self._deliver(request, outcome, _FIRST_TRY, limit)
        budget = self._lend_budget(request, policy)
        outcome = await self._async_send(request, limit, policy)
        try:
            reason = retry_reason(request, outcome, policy)
        except BaseException:
            await _async_abandon(outcome)
            raise
        if reason is not None:
            return await self._async_retry(request, policy, outcome, start, budget, limit)
        return self._deliver(request, outcome, _FIRST_TRY, limit)

    async def _async_retry(
        self,
        request: httpx.Request,
        policy: RetryPolicy,
        outcome: httpx.Response | Exception,
        start: float,
        budget: _Budget | None,
        limit: _Deadline | None,
    ) -> httpx.Response:
        state = RetryCallState(self._retrying, None, (), {})
        state.start_time = start
        events: list[RetryEvent] = []
        sends = 1
        unprocessed_left = policy.unprocessed_resends
        while True:
            # Whatever raises while a response is held closes it first, or
            # its connection never goes back to the pool.
            try:
                reason = retry_reason(request, outcome, policy)
                if reason is None:
                    break
                if unprocessed_left and self._resend_at_once(
                    request, outcome, unprocessed_left == policy.unprocessed_resends
                ):
                    # Nothing of it was processed: send it again now, on another
                    # stream or connection, without spending a policy attempt.
                    unprocessed_left -= 1
                    events.append(RetryEvent(state.attempt_number, reason, 0.0, unprocessed=True))
                    self._report(request, state.attempt_number, reason, 0.0)
                    wait = None
                else:
                    step = self._next_wait(request, policy, state, outcome, limit)
                    if (
                        budget is not None
                        and not isinstance(step, str)
                        and not await self._async_withdraw(budget, outcome)
                    ):
                        step = f"the retry budget of {request.url.host} is spent"
                    if isinstance(step, str):
                        # A policy of one attempt gives nothing up.
                        if events or step is not _STOPPED:
                            _log_gave_up(request, sends, reason, why=step)
                        break
                    wait = step
                    events.append(RetryEvent(state.attempt_number, reason, wait))
                    self._report(request, state.attempt_number, reason, wait)
            except BaseException:
                await _async_abandon(outcome)
                raise
            if isinstance(outcome, httpx.Response):
                await _async_discard(outcome)
            if wait is not None:
                await self._sleep(wait)
                state.idle_for += wait
                state.prepare_for_next_attempt()
            outcome = await self._async_send(request, limit, policy)
            sends += 1
            if wait is None:
                self._resent_at_once(request, outcome)
        return self._deliver(request, outcome, RetryHistory(sends, tuple(events)), limit)

    async def _async_send(
        self, request: httpx.Request, limit: _Deadline | None, policy: RetryPolicy | None
    ) -> httpx.Response | Exception:
        """One attempt: its response or the exception it raised; cancellation propagates."""
        if limit is None:
            try:
                return await self._async_next.handle_async_request(request)
            except Exception as exc:
                return exc
        left = limit.start_attempt(request, policy, self._clock())
        if left is None:
            return limit.exceeded()
        return await _async_attempt_within(self._async_next, request, left, limit, self._clock)

    async def _async_withdraw(self, budget: _Budget, outcome: httpx.Response | Exception) -> bool:
        """Take the tokens for one retry: from the shared bucket, or this process's own."""
        book, origin = budget
        timeout = isinstance(outcome, httpx.TimeoutException)
        if self._async_budget_store is not None and isinstance(book, SharedBudgetBook):
            settled = await self._async_budget_store.settle(
                format_origin(origin), book.unsettled(origin), book.cost(timeout)
            )
            if settled is not None:
                return settled
        return book.withdraw(origin, timeout=timeout)

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy, deadline = self._settings(request)
        if deadline is not None:
            return self._within_deadline(request, policy, deadline)
        # Decided before the first attempt: a transport may swap in a
        # replayable copy of a body it has consumed (MockTransport does).
        if policy is None or not is_replayable(request):
            response = self._next.handle_request(request)
            response.extensions["retry"] = _FIRST_TRY
            return response
        budget = self._lend_budget(request, policy)
        start = self._clock()
        # The first attempt stays out of Tenacity's machinery: most requests
        # never need a second one.
        outcome: httpx.Response | Exception
        try:
            outcome = self._next.handle_request(request)
        except Exception as exc:
            if retry_reason(request, exc, policy) is None:
                raise
            outcome = exc
        else:
            if outcome.status_code not in policy.statuses:
                outcome.extensions["retry"] = _FIRST_TRY
                return outcome
        # Outside the except clause, so that a later attempt's exception
        # does not carry this one as its __context__.
        return self._retry(request, policy, outcome, start, budget, None)

    def _within_deadline(
        self, request: httpx.Request, policy: RetryPolicy | None, deadline: float
    ) -> httpx.Response:
        """The same, with every attempt and wait inside one time budget."""
        start = self._clock()
        limit = _Deadline(deadline, start + deadline, request.extensions.get("timeout"))
        if policy is None or not is_replayable(request):
            outcome = self._send(request, limit, policy)
            return self._deliver(request, outcome, _FIRST_TRY, limit)
        budget = self._lend_budget(request, policy)
        outcome = self._send(request, limit, policy)
        try:
            reason = retry_reason(request, outcome, policy)
        except BaseException:
            _abandon(outcome)
            raise
        if reason is not None:
            return self._retry(request, policy, outcome, start, budget, limit)
        return self._deliver(request, outcome, _FIRST_TRY, limit)

    def _retry(
        self,
        request: httpx.Request,
        policy: RetryPolicy,
        outcome: httpx.Response | Exception,
        start: float,
        budget: _Budget | None,
        limit: _Deadline | None,
    ) -> httpx.Response:
        state = RetryCallState(self._retrying, None, (), {})
        state.start_time = start
        events: list[RetryEvent] = []
        sends = 1
        unprocessed_left = policy.unprocessed_resends
        while True:
            # Whatever raises while a response is held closes it first, or
            # its connection never goes back to the pool.
            try:
                reason = retry_reason(request, outcome, policy)
                if reason is None:
                    break
                if unprocessed_left and self._resend_at_once(
                    request, outcome, unprocessed_left == policy.unprocessed_resends
                ):
                    # Nothing of it was processed: send it again now, on another
                    # stream or connection, without spending a policy attempt.
                    unprocessed_left -= 1
                    events.append(RetryEvent(state.attempt_number, reason, 0.0, unprocessed=True))
                    self._report(request, state.attempt_number, reason, 0.0)
                    wait = None
                else:
                    step = self._next_wait(request, policy, state, outcome, limit)
                    if (
                        budget is not None
                        and not isinstance(step, str)
                        and not self._withdraw(budget, outcome)
                    ):
                        step = f"the retry budget of {request.url.host} is spent"
                    if isinstance(step, str):
                        # A policy of one attempt gives nothing up.
                        if events or step is not _STOPPED:
                            _log_gave_up(request, sends, reason, why=step)
                        break
                    wait = step
                    events.append(RetryEvent(state.attempt_number, reason, wait))
                    self._report(request, state.attempt_number, reason, wait)
            except BaseException:
                _abandon(outcome)
                raise
            if isinstance(outcome, httpx.Response):
                _discard(outcome)
            if wait is not None:
                self._sync_sleep(wait)
                state.idle_for += wait
                state.prepare_for_next_attempt()
            outcome = self._send(request, limit, policy)
            sends += 1
            if wait is None:
                self._resent_at_once(request, outcome)
        return self._deliver(request, outcome, RetryHistory(sends, tuple(events)), limit)

    def _send(
        self, request: httpx.Request, limit: _Deadline | None, policy: RetryPolicy | None
    ) -> httpx.Response | Exception:
        """One attempt: its response or the exception it raised; cancellation propagates."""
        if limit is None:
            try:
                return self._next.handle_request(request)
            except Exception as exc:
                return exc
        left = limit.start_attempt(request, policy, self._clock())
        if left is None:
            return limit.exceeded()
        return _attempt_within(self._next, request, left, limit, self._clock)

    def _withdraw(self, budget: _Budget, outcome: httpx.Response | Exception) -> bool:
        """Take the tokens for one retry: from the shared bucket, or this process's own."""
        book, origin = budget
        timeout = isinstance(outcome, httpx.TimeoutException)
        if self._budget_store is not None and isinstance(book, SharedBudgetBook):
            settled = self._budget_store.settle(
                format_origin(origin), book.unsettled(origin), book.cost(timeout)
            )
            if settled is not None:
                return settled
        return book.withdraw(origin, timeout=timeout)

    # unasync: generated end

    def _settings(self, request: httpx.Request) -> tuple[RetryPolicy | None, float | None]:
        """The request's policy (``None``: no retries) and deadline."""
        if OPTIONS not in request.extensions:  # no per-request options: the usual case
            return self._policy, self._policy.deadline
        options = request_options(request)
        option = options.get("retry", True)  # checked by request_options()
        policy = self._policy if option is True else None if option is False else option
        return policy, options.get("deadline", None if policy is None else policy.deadline)

    def _lend_budget(self, request: httpx.Request, policy: RetryPolicy) -> _Budget | None:
        """Count the request in its origin's retry budget, and lend the budget inward."""
        if policy.budget is None:
            return None
        # The layer's own policy keeps its book at hand: hashing the frozen
        # budget on every request costs more than the deposit itself.
        book = self._own_book if policy is self._policy else self._book_for(policy.budget)
        assert book is not None  # the own book exists when the own policy has a budget
        origin = origin_of(request.url)
        book.deposit(origin)
        # Hedging, inside this layer, draws on the same tokens.
        request.extensions[BUDGET] = book
        return book, origin

    def _book_for(self, budget: RetryBudget) -> BudgetBook:
        with self._books_lock:
            book = self._books.get(budget)
            if book is None:
                make_room(self._books, MAX_BUDGET_BOOKS, lambda other: other is not self._own_book)
                book = self._books[budget] = BudgetBook(budget, clock=self._clock)
            elif book is not self._own_book:
                self._books.move_to_end(budget)
            return book

    def _next_wait(
        self,
        request: httpx.Request,
        policy: RetryPolicy,
        state: RetryCallState,
        outcome: httpx.Response | Exception,
        limit: _Deadline | None,
    ) -> float | str:
        """Seconds to wait before the next attempt, or why there is none."""
        now = self._clock()
        _record(state, outcome, now)
        retry_after = None
        if isinstance(outcome, httpx.Response) and policy.respect_retry_after:
            header = outcome.headers.get("Retry-After")
            if header is not None:
                retry_after = parse_retry_after(header, self._wall_clock())
        if retry_after is not None and retry_after > policy.max_retry_after:
            return f"the server asked for {retry_after:g} s, more than max_retry_after"
        wait = policy.next_wait(state, retry_after)
        if wait is None:
            return _STOPPED
        if limit is not None and now + wait >= limit.at:
            return "the deadline would pass during the wait"
        breaker = request.extensions.get(CIRCUIT)
        if breaker is not None and breaker.retry_in(request.url) > wait:
            # The failure opened the origin's circuit: waiting would only meet it.
            return "the origin's circuit breaker opened"
        return wait

    def _resend_at_once(
        self, request: httpx.Request, outcome: httpx.Response | Exception, first: bool
    ) -> bool:
        """Whether to re-send an unprocessed request at once, without a policy attempt.

        Bounded per origin too, so that a server refusing everything sees
        about twice the requests, not ``unprocessed_resends`` times: each
        request pays for its first such re-send, later ones draw on a small
        shared allowance (``AT_ONCE_ALLOWANCE``), which a re-send at once
        that gets an answer pays back. What is not re-sent at once goes the
        ordinary way: the policy's wait, the retry budget.
        """
        if not isinstance(outcome, Exception) or not resend_at_once(outcome):
            return False
        origin = origin_of(request.url)
        if first:
            self._at_once.deposit(origin)
        return self._at_once.withdraw(origin)

    def _resent_at_once(self, request: httpx.Request, outcome: httpx.Response | Exception) -> None:
        """An answer to a re-send at once: the server is processing, the allowance refills."""
        if isinstance(outcome, httpx.Response):
            self._at_once.deposit(origin_of(request.url))

    @staticmethod
    def _deliver(
        request: httpx.Request,
        outcome: httpx.Response | Exception,
        history: RetryHistory,
        limit: _Deadline | None,
    ) -> httpx.Response:
        """The response to return, or the exception to raise, after the last attempt."""
        if isinstance(outcome, httpx.Response):
            outcome.extensions["retry"] = history
            return outcome
        unprocessed = unprocessed_reason(outcome)
        if unprocessed is not None:
            # Say what happened in words, not in h2's state-machine terms.
            raise type(outcome)(_UNPROCESSED[unprocessed]) from outcome
        if (
            limit is not None
            and isinstance(outcome, httpx.TimeoutException)
            and not isinstance(outcome, DeadlineExceeded)
            and limit.passed()
        ):
            raise limit.exceeded() from outcome
        if history.events:
            _add_note(outcome, history)
        raise outcome

    def _report(self, request: httpx.Request, attempt: int, reason: str, wait: float) -> None:
        """Tell the log, the retry counter and the caller's span about one retry."""
        _log_retry(request, attempt, reason, wait)
        if self._retries is not None:
            url = request.url
            attributes: dict[str, str | int] = {
                ERROR_TYPE: reason,
                HTTP_REQUEST_METHOD: method_attribute(request.method),
                SERVER_ADDRESS: url.host,
            }
            port = server_port(url)
            if port is not None:
                attributes[SERVER_PORT] = port
            self._retries.add(1, attributes)
        # The caller's span: TracingTransport (inside this layer) makes an
        # attempt's span current only while that attempt runs.
        span = _otel.current_span()
        if span is not None and span.is_recording():
            span.add_event(
                RETRY_EVENT,
                {
                    ERROR_TYPE: reason,
                    "httpx_resilience.retry.attempt": attempt,
                    "httpx_resilience.retry.wait": wait,
                },
            )


_Budget = tuple[BudgetBook, Origin]

_TIMEOUTS = ("connect", "read", "write", "pool")


class _Deadline:
    """One request's deadline, across its attempts."""

    __slots__ = ("at", "attempts", "ended_at", "seconds", "timeouts")

    def __init__(self, seconds: float, at: float, timeouts: Mapping[str, float | None] | None):
        self.seconds = seconds
        self.at = at
        self.timeouts = timeouts or {}
        self.ended_at: float | None = None
        #: Attempts sent so far (one cut short by the deadline included).
        self.attempts = 0

    def start_attempt(
        self, request: httpx.Request, policy: RetryPolicy | None, now: float
    ) -> float | None:
        """Ready the request for one more attempt: the seconds it has, ``None`` for none."""
        left = self.at - now
        if not left > 0:
            return None
        # Each attempt gets what is left of the deadline, at most.
        request.extensions["timeout"] = self.cut(left)
        header = None if policy is None else policy.deadline_header
        if header is not None:
            request.headers[header] = f"{left:.3f}"
        self.attempts += 1
        return left

    def cut(self, left: float) -> dict[str, float]:
        """The caller's httpx timeouts, none longer than what is left."""
        cut = {}
        for name in _TIMEOUTS:
            timeout = self.timeouts.get(name)
            cut[name] = left if timeout is None or timeout > left else timeout
        return cut

    def passed(self) -> bool:
        """Whether the last attempt failed at the deadline (so its timeout was ours)."""
        return self.ended_at is not None and self.ended_at >= self.at - 0.001

    def exceeded(self, cause: Exception | None = None) -> DeadlineExceeded:
        attempts = self.attempts
        tried = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
        error = DeadlineExceeded(f"the request's deadline of {self.seconds:g} s ran out{tried}")
        error.__cause__ = cause
        return error


_UNPROCESSED = {
    "GOAWAY": "the server closed the HTTP/2 connection (GOAWAY) before processing the request, "
    "every time it was sent; it did not process it",
    "REFUSED_STREAM": "the server refused the HTTP/2 stream (REFUSED_STREAM) every time; "
    "it did not process the request",
    "STREAM_LIMIT": "no HTTP/2 stream could be opened for the request; it was not sent",
    "CONNECTION_CLOSED": "the HTTP/2 connection closed (GOAWAY) before the request could be "
    "sent; it was not sent",
}

#: A discarded response body up to this size is read before it is closed.
DRAIN_LIMIT = 64 * 1024


# unasync: begin
async def _async_discard(response: httpx.Response) -> None:
    """Close a response that will not reach the caller, freeing its connection.

    A small body is read first: an HTTP/1.1 connection closed mid-body cannot
    be reused, and an HTTP/2 one never gets the unread bytes back in its
    flow-control window (encode/httpcore#943), so enough discarded error
    pages stall it.
    """
    length = response.headers.get("Content-Length", "")
    try:
        # ASCII digits only: int() refuses some that isdigit() accepts ("²").
        if length.isascii() and length.isdigit() and int(length) <= DRAIN_LIMIT:
            await response.aread()
    except httpx.HTTPError:
        pass  # a reset, a body that does not decode: the retry will do without it
    finally:
        await _async_abandon(response)


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
def _discard(response: httpx.Response) -> None:
    """Close a response that will not reach the caller, freeing its connection.

    A small body is read first: an HTTP/1.1 connection closed mid-body cannot
    be reused, and an HTTP/2 one never gets the unread bytes back in its
    flow-control window (encode/httpcore#943), so enough discarded error
    pages stall it.
    """
    length = response.headers.get("Content-Length", "")
    try:
        # ASCII digits only: int() refuses some that isdigit() accepts ("²").
        if length.isascii() and length.isdigit() and int(length) <= DRAIN_LIMIT:
            response.read()
    except httpx.HTTPError:
        pass  # a reset, a body that does not decode: the retry will do without it
    finally:
        _abandon(response)


# unasync: generated end

# Where the async and sync layers differ: a cancelled caller must still give
# a connection back, and only async code can bound a whole attempt.


async def _async_abandon(outcome: httpx.Response | Exception) -> None:
    """Close a response on the way out of an error or a cancellation, whatever happens.

    Shielded: a cancelled caller must still give the connection back.
    """
    if not isinstance(outcome, httpx.Response):
        return
    # The error on its way out is the one to report, not one from closing.
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await outcome.aclose()


def _abandon(outcome: httpx.Response | Exception) -> None:
    if isinstance(outcome, httpx.Response):
        with contextlib.suppress(Exception):
            outcome.close()


async def _async_attempt_within(
    transport: httpx.AsyncBaseTransport,
    request: httpx.Request,
    left: float,
    limit: _Deadline,
    clock: Callable[[], float],
) -> httpx.Response | Exception:
    """One attempt, cut when the deadline passes."""
    # Per-read timeouts alone never end a server that keeps every read busy
    # (a status line a byte at a time, 1xx after 1xx, PINGs): the scope bounds
    # the attempt as a whole. It ends once the response is returned; reading
    # its body is the caller's business.
    with anyio.CancelScope(deadline=anyio.current_time() + left) as scope:
        try:
            return await transport.handle_async_request(request)
        except Exception as exc:
            limit.ended_at = clock()
            if scope.cancel_called:
                # A layer below turned our cancellation into an error.
                return limit.exceeded(exc)
            return exc
    # Only our own deadline ends up here: the scope lets the caller's
    # cancellation go on up as it is.
    limit.ended_at = clock()
    return limit.exceeded()


def _attempt_within(
    transport: httpx.BaseTransport,
    request: httpx.Request,
    left: float,
    limit: _Deadline,
    clock: Callable[[], float],
) -> httpx.Response | Exception:
    """One attempt of a sync client: bounded by its cut timeouts only (nothing can cancel it)."""
    try:
        return transport.handle_request(request)
    except Exception as exc:
        limit.ended_at = clock()
        return exc


def _record(state: RetryCallState, outcome: httpx.Response | Exception, now: float) -> None:
    """Tell Tenacity's state what the attempt gave, for its stop and wait strategies."""
    future: Future = Future(state.attempt_number)
    if isinstance(outcome, httpx.Response):
        future.set_result(outcome)
    else:
        future.set_exception(outcome)
    state.outcome, state.outcome_timestamp = future, now


def _log_retry(request: httpx.Request, attempt: int, reason: str, wait: float) -> None:
    if logger.isEnabledFor(logging.INFO):
        url = request.url.copy_with(username=None, password=None, query=None, fragment=None)
        # Set by RequestIdTransport, unless the ID is configured as sensitive.
        request_id = request.extensions.get(REQUEST_ID)
        logger.info(
            "retrying %s %s after attempt %d failed with %s; waiting %.3f s%s",
            request.method,
            url,
            attempt,
            reason,
            wait,
            "" if request_id is None else f" (request ID {request_id})",
            extra={
                "http_method": request.method,
                "url": str(url),
                "attempt": attempt,
                "reason": reason,
                "wait": wait,
                "request_id": request_id,
            },
        )


def _log_gave_up(request: httpx.Request, attempts: int, reason: str, *, why: str) -> None:
    """One record when the layer stops retrying a request that still fails."""
    if logger.isEnabledFor(logging.WARNING):
        url = request.url.copy_with(username=None, password=None, query=None, fragment=None)
        request_id = request.extensions.get(REQUEST_ID)
        logger.warning(
            "gave up on %s %s after %d attempt%s, the last failing with %s: %s%s",
            request.method,
            url,
            attempts,
            "" if attempts == 1 else "s",
            reason,
            why,
            "" if request_id is None else f" (request ID {request_id})",
            extra={
                "http_method": request.method,
                "url": str(url),
                "attempts": attempts,
                "reason": reason,
                "why": why,
                "request_id": request_id,
            },
        )


def _add_note(exc: BaseException, history: RetryHistory) -> None:
    reasons = ", ".join(event.reason for event in history.events)
    note = (
        f"httpx-resilience: gave up after {history.attempts} attempts (retried after: {reasons})"
    )
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:  # Python >= 3.11
        add_note(note)
    else:  # Python 3.10: the attribute PEP 678 defines, without the method
        exc.__notes__ = [*getattr(exc, "__notes__", ()), note]  # type: ignore[attr-defined]
