"""RetryTransport: re-send what failed, when it is safe, after a backoff."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx
from tenacity import AsyncRetrying, Future, RetryCallState

from . import _otel
from ._budget import BUDGET_EXTENSION, MAX_BUDGET_BOOKS, BudgetBook, RetryBudget
from ._classify import resend_at_once, unprocessed_reason
from ._clock import SteadyClock
from ._keys import CIRCUIT as CIRCUIT_EXTENSION
from ._keys import REQUEST_ID
from ._layer import Layer
from ._lru import make_room
from ._options import EXTENSION, request_options
from ._origin import Origin, origin_of
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

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

logger = logging.getLogger("httpx_resilience")

Sleep = Callable[[float], Awaitable[Any]]

#: Counter of re-sends, labelled with the reason (``error.type``), method and server.
RETRIES_METRIC = "http.client.request.retries"
#: Span event added to the caller's span before each wait.
RETRY_EVENT = "httpx_resilience.retry"


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One decision to re-send: after which attempt, why, and the wait.

    ``unprocessed`` marks a re-send at once of a request the server provably
    never processed (HTTP/2 ``REFUSED_STREAM``, a connection closed by
    GOAWAY before the request went out): it is not counted as an attempt of
    the policy and waits for nothing.
    """

    attempt: int
    reason: str
    wait: float
    unprocessed: bool = False


@dataclass(frozen=True, slots=True)
class RetryHistory:
    """What the retry layer did for a response: ``response.extensions["retry"]``.

    ``attempts`` counts every time the request was sent, unprocessed
    re-sends included.

    >>> history = response.extensions["retry"]  # doctest: +SKIP
    >>> history.attempts, [(e.reason, e.wait) for e in history.events]  # doctest: +SKIP
    (3, [('503', 0.61), ('503', 1.2)])
    """

    attempts: int
    events: tuple[RetryEvent, ...] = ()


_FIRST_TRY = RetryHistory(attempts=1)

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
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: RetryPolicy | None = None,
        *,
        sleep: Sleep = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(transport)
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise TypeError(f"policy must be a RetryPolicy or None, got {policy!r}")
        self._policy = policy or DEFAULT_POLICY
        self._sleep = sleep
        self._clock = SteadyClock(clock)  # a step back or NaN: no time passed
        self._wall_clock = wall_clock
        # Tenacity strategies receive a RetryCallState, which names its
        # Retrying object; none of our loop runs inside it.
        self._retrying = AsyncRetrying(sleep=sleep)
        # Token buckets per budget configuration (equal budgets share one),
        # then per origin; at most MAX_BUDGET_BOOKS, the least recently used going.
        self._books: OrderedDict[RetryBudget, BudgetBook] = OrderedDict()
        self._own_book: BudgetBook | None = None
        if self._policy.budget is not None:
            self._own_book = BudgetBook(self._policy.budget, clock=clock)
            self._books[self._policy.budget] = self._own_book
        self._retries = _otel.counter(
            meter_provider,
            RETRIES_METRIC,
            "{retry}",
            "Re-sends of HTTP client requests, by the reason for each.",
        )

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy: RetryPolicy | None
        if EXTENSION not in request.extensions:  # no per-request options: the usual case
            policy = self._policy
            deadline = policy.deadline
        else:
            options = request_options(request)
            policy = self._policy_for(options)
            deadline = options.get("deadline", None if policy is None else policy.deadline)
        if deadline is not None:
            return await self._within_deadline(request, policy, deadline)
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
        return await self._retry(request, policy, outcome, start, budget, None)

    async def _within_deadline(
        self, request: httpx.Request, policy: RetryPolicy | None, deadline: float
    ) -> httpx.Response:
        """The same, with every attempt and wait inside one time budget."""
        start = self._clock()
        limit = _Deadline(deadline, start + deadline, request.extensions.get("timeout"))
        if policy is None or not is_replayable(request):
            return self._deliver(await self._send(request, limit, policy), _FIRST_TRY, limit)
        budget = self._lend_budget(request, policy)
        outcome = await self._send(request, limit, policy)
        try:
            reason = retry_reason(request, outcome, policy)
        except BaseException:
            await _abandon(outcome)
            raise
        if reason is not None:
            return await self._retry(request, policy, outcome, start, budget, limit)
        return self._deliver(outcome, _FIRST_TRY, limit)

    def _lend_budget(self, request: httpx.Request, policy: RetryPolicy) -> _Budget | None:
        """Count the request in its origin's retry budget, and lend the budget inward."""
        if policy.budget is None:
            return None
        # The layer's own policy keeps its book at hand: hashing the frozen
        # budget on every request costs more than the deposit itself.
        book = self._own_book if policy is self._policy else self._books.get(policy.budget)
        if book is None:
            make_room(self._books, MAX_BUDGET_BOOKS, lambda other: other is not self._own_book)
            book = self._books[policy.budget] = BudgetBook(policy.budget, clock=self._clock)
        elif book is not self._own_book:
            self._books.move_to_end(policy.budget)
        origin = origin_of(request.url)
        book.deposit(origin)
        # Hedging, inside this layer, draws on the same tokens.
        request.extensions[BUDGET_EXTENSION] = book
        return book, origin

    def _policy_for(self, options: Mapping[str, Any]) -> RetryPolicy | None:
        option = options.get("retry", True)  # checked by request_options()
        if option is True:
            return self._policy
        if option is False:
            return None
        return cast(RetryPolicy, option)

    async def _retry(
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
            except BaseException:
                await _abandon(outcome)
                raise
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
                outcome = await self._send(request, limit, policy)
                sends += 1
                self._resent_at_once(request, outcome)
                continue
            # The clocks, the user's strategies and the report may raise too.
            try:
                now = self._clock()
                _record(state, outcome, now)
                retry_after = None
                if isinstance(outcome, httpx.Response) and policy.respect_retry_after:
                    header = outcome.headers.get("Retry-After")
                    if header is not None:
                        retry_after = parse_retry_after(header, self._wall_clock())
                wait = policy.next_wait(state, retry_after)
                if wait is None or (limit is not None and now + wait >= limit.at):
                    break
                breaker = request.extensions.get(CIRCUIT_EXTENSION)
                if breaker is not None and breaker.retry_in(request.url) > wait:
                    break  # the failure opened the origin's circuit: waiting would only meet it
                if budget is not None and not budget[0].withdraw(
                    budget[1], timeout=isinstance(outcome, httpx.TimeoutException)
                ):
                    _log_budget_spent(request, reason)
                    break
                events.append(RetryEvent(state.attempt_number, reason, wait))
                self._report(request, state.attempt_number, reason, wait)
            except BaseException:
                await _abandon(outcome)
                raise
            if isinstance(outcome, httpx.Response):
                await _discard(outcome)
            await self._sleep(wait)
            state.idle_for += wait
            state.prepare_for_next_attempt()
            outcome = await self._send(request, limit, policy)
            sends += 1
        return self._deliver(outcome, RetryHistory(sends, tuple(events)), limit)

    #: Per origin, the re-sends at once of unprocessed requests (made on first use).
    _at_once: BudgetBook | None = None

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
        book = self._at_once
        if book is None:
            book = self._at_once = BudgetBook(AT_ONCE_ALLOWANCE, clock=self._clock)
        origin = origin_of(request.url)
        if first:
            book.deposit(origin)
        return book.withdraw(origin)

    def _resent_at_once(self, request: httpx.Request, outcome: httpx.Response | Exception) -> None:
        """An answer to a re-send at once: the server is processing, the allowance refills."""
        if isinstance(outcome, httpx.Response) and self._at_once is not None:
            self._at_once.deposit(origin_of(request.url))

    @staticmethod
    def _deliver(
        outcome: httpx.Response | Exception, history: RetryHistory, limit: _Deadline | None
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

    async def _send(
        self, request: httpx.Request, limit: _Deadline | None, policy: RetryPolicy | None
    ) -> httpx.Response | Exception:
        """One attempt: its response or the exception it raised; cancellation propagates."""
        if limit is None:
            try:
                return await self._async_next.handle_async_request(request)
            except Exception as exc:
                return exc
        left = limit.at - self._clock()
        if not left > 0:
            return limit.exceeded()
        # Each attempt gets what is left of the deadline, at most.
        request.extensions["timeout"] = limit.cut(left)
        header = None if policy is None else policy.deadline_header
        if header is not None:
            request.headers[header] = f"{left:.3f}"
        limit.attempts += 1
        # Per-read timeouts alone never end a server that keeps every read
        # busy (a status line a byte at a time, 1xx after 1xx, PINGs): the
        # scope bounds the attempt as a whole. It ends once the response is
        # returned; reading its body is the caller's business.
        with anyio.CancelScope(deadline=anyio.current_time() + left) as scope:
            try:
                return await self._async_next.handle_async_request(request)
            except Exception as exc:
                limit.ended_at = self._clock()
                if scope.cancel_called:
                    # A layer below turned our cancellation into an error.
                    return limit.exceeded(exc)
                return exc
        # Only our own deadline ends up here: the scope lets the caller's
        # cancellation go on up as it is.
        limit.ended_at = self._clock()
        return limit.exceeded()

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


class DeadlineExceeded(httpx.TimeoutException):
    """The request's deadline ran out: all attempts and waits took too long.

    A subclass of ``httpx.TimeoutException``, so ``except httpx.TimeoutException``
    (and ``except httpx.TransportError``) still catches it. Raised when an
    attempt is still waiting for its response at the deadline, however busy
    the server keeps the connection; never for the caller's own cancellation.
    """


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


def _log_budget_spent(request: httpx.Request, reason: str) -> None:
    if logger.isEnabledFor(logging.INFO):
        url = request.url.copy_with(username=None, password=None, query=None, fragment=None)
        logger.info(
            "not retrying %s %s after %s: the retry budget of %s is spent",
            request.method,
            url,
            reason,
            url.host,
            extra={"http_method": request.method, "url": str(url), "reason": reason},
        )


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


async def _discard(response: httpx.Response) -> None:
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
        await _abandon(response)


async def _abandon(outcome: httpx.Response | Exception) -> None:
    """Close a response on the way out of an error or a cancellation, whatever happens.

    Shielded: a cancelled caller must still give the connection back.
    """
    if not isinstance(outcome, httpx.Response):
        return
    # The error on its way out is the one to report, not one from closing.
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await outcome.aclose()


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


def _add_note(exc: BaseException, history: RetryHistory) -> None:
    reasons = ", ".join(event.reason for event in history.events)
    note = (
        f"httpx-resilience: gave up after {history.attempts} attempts (retried after: {reasons})"
    )
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:  # Python >= 3.11
        add_note(note)
