"""What may be re-sent, and after how long: pure decisions, no I/O."""

from __future__ import annotations

import datetime
import re
import ssl
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from tenacity import Future, RetryCallState, stop_after_attempt, wait_exponential_jitter
from tenacity.stop import StopBaseT
from tenacity.wait import WaitBaseT

from . import _checks
from ._budget import RetryBudget
from ._classify import server_broke_protocol, unprocessed_reason
from ._errors import CircuitOpenError
from ._options import request_options

#: Safe to repeat by RFC 9110 §9.2.2.
IDEMPOTENT_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PUT", "TRACE"})

#: Statuses that say "try again later" rather than "your request is wrong".
DEFAULT_RETRY_STATUSES = frozenset({429, 502, 503, 504})

#: Transport failures worth another attempt.
DEFAULT_RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.RemoteProtocolError,
    httpx.WriteError,
    httpx.WriteTimeout,
)

#: Failures that happen before any byte of the request leaves, so the server
#: cannot have acted on it: re-sending is safe whatever the method.
NOT_SENT_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to re-send a request and how long to wait first.

    Built once and shared by every request; change it with
    ``dataclasses.replace``.

    >>> from tenacity import stop_after_attempt, wait_exponential
    >>> policy = RetryPolicy(
    ...     stop=stop_after_attempt(5),
    ...     wait=wait_exponential(multiplier=0.2, max=5),
    ...     statuses={500, 502, 503, 504},
    ... )

    ``stop`` and ``wait`` are Tenacity strategies; any of Tenacity's (or a
    callable taking a ``tenacity.RetryCallState``) works, combined with
    ``|`` and ``+`` as usual. The default is 3 attempts in all, waiting
    0.5 s then 1 s (plus up to 0.5 s of jitter), never more than 10 s.
    """

    stop: StopBaseT = field(default_factory=lambda: stop_after_attempt(3))
    wait: WaitBaseT = field(
        default_factory=lambda: wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5)
    )
    statuses: Collection[int] = DEFAULT_RETRY_STATUSES
    exceptions: Iterable[type[Exception]] = DEFAULT_RETRY_EXCEPTIONS
    idempotent_methods: Collection[str] = IDEMPOTENT_METHODS
    idempotency_header: str = "Idempotency-Key"
    respect_retry_after: bool = True
    max_retry_after: float = 60.0
    unprocessed_resends: int = 10
    budget: RetryBudget | None = field(default_factory=RetryBudget)
    deadline: float | None = None
    deadline_header: str | None = None

    def __post_init__(self) -> None:
        statuses = _checks.statuses("statuses", self.statuses, low=400, high=599)
        exceptions = _checks.exception_types("exceptions", self.exceptions)
        methods = _checks.methods("idempotent_methods", self.idempotent_methods)
        _checks.header_name("idempotency_header", self.idempotency_header)
        _checks.flag("respect_retry_after", self.respect_retry_after)
        _checks.number("max_retry_after", self.max_retry_after)
        # A float or NaN here never counted down: re-sends without end.
        resends = _checks.count("unprocessed_resends", self.unprocessed_resends)
        _checks.optional_number("deadline", self.deadline, above_minimum=True)
        if self.deadline_header is not None:
            _checks.header_name("deadline_header", self.deadline_header)
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {self.budget!r}")
        _check_stop(self.stop)
        _check_wait(self.wait)
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "exceptions", exceptions)
        object.__setattr__(self, "idempotent_methods", methods)
        object.__setattr__(self, "unprocessed_resends", resends)

    def next_wait(self, state: RetryCallState, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up.

        ``state`` describes the attempt that just failed. A server asking for
        more than ``max_retry_after`` is answered at once instead of waited for.
        """
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        wait = max(0.0, float(self.wait(state)))
        if retry_after is not None and retry_after > wait:
            wait = retry_after
        state.upcoming_sleep = wait
        if self.stop(state):
            return None
        return wait


def _check_stop(stop: StopBaseT) -> None:
    if not callable(stop):
        raise TypeError(f"stop must be a Tenacity stop strategy, got {stop!r}")
    if isinstance(stop, stop_after_attempt) and stop.max_attempt_number < 1:
        raise ValueError(
            f"stop_after_attempt({stop.max_attempt_number}): at least 1 attempt is needed"
        )


def _check_wait(wait: WaitBaseT) -> None:
    if not callable(wait):
        raise TypeError(f"wait must be a Tenacity wait strategy, got {wait!r}")
    # Tenacity strategies do not validate their numbers; ask for the first
    # waits once so that a negative setting fails here, not mid-request.
    state = RetryCallState(cast(Any, None), None, (), {})
    state.outcome = Future(1)
    state.outcome.set_result(None)
    state.outcome_timestamp = state.start_time
    for attempt in (1, 2, 3):
        state.attempt_number = attempt
        try:
            value = wait(state)
        except Exception:
            return
        if value < 0:
            raise ValueError(
                f"wait strategy gives a negative wait ({value} s) after attempt {attempt}"
            )


def is_idempotent(request: httpx.Request, policy: RetryPolicy) -> bool:
    """Whether the server may safely see this request more than once.

    The per-request option ``{"idempotent": bool}`` wins; otherwise the method
    decides (RFC 9110), and a POST or PATCH carrying an idempotency key
    counts as idempotent.
    """
    flag = request_options(request).get("idempotent")  # a bool or None once checked
    if flag is not None:
        return flag is True
    return (
        request.method in policy.idempotent_methods or policy.idempotency_header in request.headers
    )


def is_replayable(request: httpx.Request) -> bool:
    """Whether the request body can be sent again byte for byte.

    Only an in-memory body (``content=bytes``, ``json=``, ``data=``, or none)
    is; generators and files could be re-sent partial or empty.
    """
    return isinstance(request.stream, httpx.ByteStream)


def retry_reason(
    request: httpx.Request,
    outcome: httpx.Response | BaseException,
    policy: RetryPolicy,
) -> str | None:
    """Why this outcome may be re-sent, or ``None`` when it goes to the caller.

    The reason is the status code (``"503"``) or the exception class name
    (``"ConnectError"``), as in OpenTelemetry's ``error.type``, or the
    ``unprocessed_reason`` of an HTTP/2 failure the server provably never
    processed, which is safe to re-send whatever the method.
    """
    if isinstance(outcome, CircuitOpenError):
        return None  # the breaker decides when the origin is tried again
    if isinstance(outcome, httpx.Response):
        if outcome.status_code not in policy.statuses:
            return None
        reason = str(outcome.status_code)
        safe = is_idempotent(request, policy)
    elif (unprocessed := unprocessed_reason(outcome)) is not None:
        # Provably never processed: safe whatever the method.
        reason, safe = unprocessed, True
    elif isinstance(
        outcome, cast(tuple[type[Exception], ...], policy.exceptions)
    ) or _server_broke_protocol(outcome, policy):
        if _certificate_refused(outcome):
            return None  # the same certificate will be refused again
        reason = type(outcome).__name__
        safe = isinstance(outcome, NOT_SENT_EXCEPTIONS) or is_idempotent(request, policy)
    else:
        return None
    if safe and is_replayable(request):
        return reason
    return None


def _server_broke_protocol(exc: BaseException, policy: RetryPolicy) -> bool:
    """A LocalProtocolError the server caused, retried wherever a RemoteProtocolError is."""
    exceptions = cast(tuple[type[Exception], ...], policy.exceptions)
    return issubclass(httpx.RemoteProtocolError, exceptions) and server_broke_protocol(exc)


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a TLS certificate check failed somewhere down the exception's chain."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def is_retryable(
    request: httpx.Request,
    outcome: httpx.Response | BaseException,
    policy: RetryPolicy | None = None,
) -> bool:
    """Whether the policy allows re-sending ``request`` after ``outcome``.

    >>> request = httpx.Request("POST", "https://example.com/pay", json={"amount": 1})
    >>> is_retryable(request, httpx.Response(503))
    False
    >>> is_retryable(request, httpx.ConnectError("refused"))
    True
    """
    return retry_reason(request, outcome, policy or DEFAULT_POLICY) is not None


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds asked for by a ``Retry-After`` header, or ``None`` if it is not valid.

    Both forms of RFC 9110 §10.2.3 are read: delta-seconds (``"120"``, ASCII
    digits only) and an HTTP-date (any of the three forms of §5.6.7, GMT),
    taken relative to ``now`` (a POSIX timestamp). A date in the past means
    "now"; a delay too long for a float is ``math.inf``. Anything else is
    ``None``: the header is ignored.

    >>> parse_retry_after("120", now=0.0)
    120.0
    >>> parse_retry_after("²", now=0.0) is None  # str.isdigit() would say yes
    True
    """
    value = value.strip(" \t")
    # isdigit() alone accepts "²" or "١٢", which float() then refuses.
    if value.isascii() and value.isdigit():
        return float(value)  # inf when too long, never an error
    when = _http_date(value, now)
    if when is None:
        return None
    return max(0.0, when - now)


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 §5.6.7: IMF-fixdate, then the obsolete RFC 850 and asctime forms.
_IMF_FIXDATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT"
)
_RFC850_DATE = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rf"([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME_DATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MONTH} ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})"
)


def _http_date(value: str, now: float) -> float | None:
    """The POSIX time of an HTTP-date, or ``None`` if ``value`` is not one."""
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _ASCTIME_DATE.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    elif match := _RFC850_DATE.fullmatch(value):
        day, month, short_year, hour, minute, second = match.groups()
        # §5.6.7: a two-digit year more than 50 years ahead is in the past century.
        this_year = time.gmtime(now).tm_year
        full = this_year - this_year % 100 + int(short_year)
        year = str(full - 100 if full > this_year + 50 else full)
    else:
        return None
    try:
        when = datetime.datetime(
            int(year),
            _MONTHS[month],
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # a leap second
            tzinfo=datetime.timezone.utc,
        )
    except ValueError:  # 31 February, hour 25, year 0
        return None
    return when.timestamp()


DEFAULT_POLICY = RetryPolicy()
