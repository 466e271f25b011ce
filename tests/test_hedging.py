"""HedgingTransport: decisions by tables, races over mocks, the tail against the fault server."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from httpx_resilience.testing import Delay, FaultPlan, FaultServer, Respond, Stall, Weighted

from .fakes import FakeSleep, TrackedStream
from .flavour import HTTPTransport, RetryPolicy, RetryTransport, httpx, is_replayable
from .flavour._breaker import CircuitBreakerTransport
from .flavour._budget import BudgetBook, RetryBudget
from .flavour._hedging import (
    HEDGES_METRIC,
    HedgeHistory,
    HedgingPolicy,
    HedgingTransport,
    LatencyWindow,
    copy_request,
    hedge_delay,
    may_hedge,
)
from .flavour._keys import BUDGET as BUDGET_EXTENSION
from .flavour._tracing import TracingTransport

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/v1/things"
FIXED = HedgingPolicy(delay=0.05, max_attempts=2)


# --- fakes -------------------------------------------------------------------------


async def settle() -> None:
    """Let every task run until it waits again.

    The mocks do no I/O, so a few scheduling rounds are enough; asyncio's
    ``wait_all_tasks_blocked`` polls every 0.1 s, which would make these
    tests slow.
    """
    for _ in range(50):
        await checkpoint()


class Timer:
    """An injected sleep that returns only when the test says the time has come.

    ``fire()`` ends the waits pending now (and lets the woken tasks run);
    ``calls`` records the delays asked for.
    """

    def __init__(self) -> None:
        self.calls: list[float] = []
        self._due = anyio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await self._due.wait()

    async def fire(self) -> None:
        due, self._due = self._due, anyio.Event()
        due.set()
        await settle()


class Origin:
    """A MockTransport handler: each attempt gets the next behaviour, and is watched.

    A behaviour is a status (answer at once), or an async function of the
    request. ``cancelled`` lists the attempts (numbered from 1) whose
    handler was cancelled.
    """

    def __init__(self, *behaviours: int | Callable[[httpx.Request], Awaitable[httpx.Response]]):
        self.behaviours = list(behaviours)
        self.requests: list[httpx.Request] = []
        self.cancelled: list[int] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        number = len(self.requests)
        behaviour = self.behaviours[min(number, len(self.behaviours)) - 1]
        try:
            if isinstance(behaviour, int):
                return httpx.Response(behaviour)
            return await behaviour(request)
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(number)
            raise

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def hang(status: int = 200) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """A behaviour that answers ``status`` only once its event is set (``.release``)."""
    event = anyio.Event()

    async def behaviour(request: httpx.Request) -> httpx.Response:
        await event.wait()
        return httpx.Response(status)

    behaviour.release = event.set  # type: ignore[attr-defined]
    return behaviour


def tracked(
    status: int, stream: TrackedStream
) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    async def behaviour(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, stream=stream)

    return behaviour


def hedging(
    origin: Origin, timer: Timer, policy: HedgingPolicy = FIXED, **options: Any
) -> HedgingTransport:
    return HedgingTransport(origin.transport(), policy, sleep=timer, **options)


async def race(
    transport: httpx.AsyncBaseTransport, timer: Timer, request: httpx.Request, fires: int = 1
) -> httpx.Response | Exception:
    """Send ``request``, firing the hedge timer ``fires`` times once it waits."""
    outcome: list[httpx.Response | Exception] = []

    async def send() -> None:
        try:
            outcome.append(await transport.handle_async_request(request))
        except Exception as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        for _ in range(fires):
            await settle()
            if outcome:
                break
            await timer.fire()
    return outcome[0]


def get(url: str = URL, **options: Any) -> httpx.Request:
    return httpx.Request("GET", url, **options)


# --- the policy and the pure decisions ----------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay must be >= 0"),
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"percentile": 1}, "percentile must be between 0 and 1"),
        ({"percentile": 0}, "percentile must be between 0 and 1"),
        ({"min_delay": 2, "max_delay": 1}, "min_delay <= max_delay"),
        ({"min_delay": -1}, "min_delay <= max_delay"),
        ({"window": 0}, "window must be >= 1"),
        ({"min_samples": 0}, "min_samples must be from 1"),
        ({"window": 10, "min_samples": 11}, "min_samples must be from 1"),
        ({"statuses": {600}}, "statuses must be HTTP status codes"),
        ({"methods": {"GET", "POST"}}, "cannot hedge POST"),
        ({"methods": {"patch"}}, "cannot hedge PATCH"),
    ],
)
def test_policy_rejects_bad_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HedgingPolicy(**options)


def test_policy_normalizes_collections() -> None:
    policy = HedgingPolicy(methods=["get", "put"], statuses=[503])
    assert policy.methods == frozenset({"GET", "PUT"})
    assert policy.statuses == frozenset({503})


async def body() -> Any:
    yield b"x"


@pytest.mark.parametrize(
    ("request_", "policy", "hedged"),
    [
        (get(), HedgingPolicy(), True),
        (httpx.Request("HEAD", URL), HedgingPolicy(), True),
        (httpx.Request("OPTIONS", URL), HedgingPolicy(), True),
        # Never a POST, with or without a key or the idempotent flag.
        (httpx.Request("POST", URL, json={}), HedgingPolicy(), False),
        (httpx.Request("POST", URL, headers={"Idempotency-Key": "k"}), HedgingPolicy(), False),
        (
            httpx.Request("POST", URL, extensions={"resilience": {"idempotent": True}}),
            HedgingPolicy(),
            False,
        ),
        (httpx.Request("PATCH", URL, json={}), HedgingPolicy(), False),
        # PUT and DELETE only when the policy says so.
        (httpx.Request("PUT", URL, json={}), HedgingPolicy(), False),
        (httpx.Request("PUT", URL, json={}), HedgingPolicy(methods={"GET", "PUT"}), True),
        # A GET marked as not idempotent (it has side effects).
        (get(extensions={"resilience": {"idempotent": False}}), HedgingPolicy(), False),
        # A body that cannot be replayed.
        (httpx.Request("PUT", URL, content=body()), HedgingPolicy(methods={"PUT"}), False),
    ],
)
def test_may_hedge(request_: httpx.Request, policy: HedgingPolicy, hedged: bool) -> None:
    assert may_hedge(request_, policy) is hedged


def filled(*latencies: float, size: int = 100) -> LatencyWindow:
    window = LatencyWindow(size)
    for latency in latencies:
        window.add(latency)
    return window


@pytest.mark.parametrize(
    ("window", "q", "expected"),
    [
        (filled(), 0.95, None),
        (filled(0.3), 0.95, 0.3),
        (filled(*(ms / 1000 for ms in range(1, 101))), 0.95, 0.095),
        (filled(*(ms / 1000 for ms in range(1, 101))), 0.5, 0.05),
        (filled(*(ms / 1000 for ms in range(100, 0, -1))), 0.99, 0.099),
        # Only the last `size` samples count: the slow ones have left.
        (filled(*[5.0] * 10, *[0.01] * 10, size=10), 0.95, 0.01),
    ],
)
def test_latency_window_quantile(window: LatencyWindow, q: float, expected: float | None) -> None:
    assert window.quantile(q) == expected


def test_latency_window_recomputes_once_a_tenth_is_new() -> None:
    window = filled(*[0.01] * 100)
    assert window.quantile(0.5) == 0.01
    for _ in range(9):
        window.add(1.0)
    assert window.quantile(0.5) == 0.01  # cached: 9 of 100 are new
    window.add(1.0)
    assert window.quantile(0.95) == 1.0  # another quantile is computed at once
    assert window.quantile(0.5) == 0.01
    assert len(window) == 100


@pytest.mark.parametrize(
    ("policy", "window", "delay"),
    [
        (HedgingPolicy(delay=0.05), None, 0.05),
        (HedgingPolicy(delay=0), filled(*[1.0] * 50), 0),
        # Learned: the ceiling until enough samples are in...
        (HedgingPolicy(), None, 1.0),
        (HedgingPolicy(min_samples=20), filled(*[0.1] * 19), 1.0),
        # ... then the percentile ...
        (HedgingPolicy(min_samples=20), filled(*[0.1] * 20), 0.1),
        # ... kept between the floor and the ceiling.
        (HedgingPolicy(min_delay=0.02), filled(*[0.001] * 50), 0.02),
        (HedgingPolicy(max_delay=0.5), filled(*[3.0] * 50), 0.5),
    ],
)
def test_hedge_delay(policy: HedgingPolicy, window: LatencyWindow | None, delay: float) -> None:
    assert hedge_delay(policy, window) == delay


def test_copy_request_is_the_same_request_with_its_own_headers_and_extensions() -> None:
    marker = object()
    original = httpx.Request(
        "PUT",
        URL,
        json={"a": 1},
        headers={"X-Request-ID": "r1"},
        extensions={"timeout": {"read": 1.0}, "httpx_resilience.attempts": marker},
    )
    copy = copy_request(original)
    assert (copy.method, copy.url, copy.headers) == (
        original.method,
        original.url,
        original.headers,
    )
    assert copy.read() == original.read() == b'{"a":1}'
    assert is_replayable(copy)
    assert copy.extensions == original.extensions
    assert copy.extensions["httpx_resilience.attempts"] is marker
    copy.headers["traceparent"] = "x"
    copy.extensions["k"] = "v"
    assert "traceparent" not in original.headers
    assert "k" not in original.extensions


# --- the races, over MockTransport ----------------------------------------------------


async def test_a_prompt_answer_is_not_hedged() -> None:
    origin, timer = Origin(200), Timer()
    response = await race(hedging(origin, timer), timer, get(), fires=0)
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    assert response.extensions["hedging"] == HedgeHistory(attempts=1, winner=1)
    assert len(origin.requests) == 1
    assert timer.calls == [0.05]  # the timer was set, then cancelled


async def test_a_late_answer_is_hedged_and_the_hedge_wins() -> None:
    slow = hang()
    origin, timer = Origin(slow, 200), Timer()
    response = await race(hedging(origin, timer), timer, get())
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    assert response.extensions["hedging"] == HedgeHistory(attempts=2, winner=2)
    assert len(origin.requests) == 2
    assert origin.cancelled == [1]  # the loser was cancelled
    assert origin.requests[1] is not origin.requests[0]  # a copy per attempt


async def test_the_first_attempt_may_still_win_and_the_hedge_is_cancelled() -> None:
    first, second = hang(), hang()
    origin, timer = Origin(first, second), Timer()
    transport = hedging(origin, timer)
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(get()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()
        first.release()  # type: ignore[attr-defined]
    assert outcome[0].extensions["hedging"] == HedgeHistory(attempts=2, winner=1)
    assert origin.cancelled == [2]


async def test_a_loser_that_got_a_response_has_it_closed_unread() -> None:
    first = hang()
    loser_body = TrackedStream(b"busy")
    origin, timer = Origin(first, tracked(503, loser_body)), Timer()
    transport = hedging(origin, timer)
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(get()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()  # the hedge answers 503 at once: kept, in case
        assert not outcome
        first.release()  # type: ignore[attr-defined]
    assert outcome[0].status_code == 200
    assert outcome[0].extensions["hedging"] == HedgeHistory(attempts=2, winner=1)
    assert loser_body.closed
    assert not loser_body.read


async def test_a_response_arriving_after_the_winner_is_closed() -> None:
    late_body = TrackedStream()
    release = anyio.Event()

    async def stubborn(request: httpx.Request) -> httpx.Response:
        # Answers even though cancelled, as a transport may in the instant
        # between its headers arriving and the cancellation.
        with anyio.CancelScope(shield=True):
            await release.wait()
        return httpx.Response(200, stream=late_body)

    async def winner(request: httpx.Request) -> httpx.Response:
        release.set()
        return httpx.Response(200)

    origin, timer = Origin(stubborn, winner), Timer()
    response = await race(hedging(origin, timer), timer, get())
    assert isinstance(response, httpx.Response)
    assert response.extensions["hedging"] == HedgeHistory(attempts=2, winner=2)
    assert late_body.closed
    assert not late_body.read


async def test_a_post_is_never_hedged() -> None:
    slow = hang()
    origin, timer = Origin(slow, 200), Timer()
    transport = hedging(origin, timer)
    request = httpx.Request("POST", URL, json={}, headers={"Idempotency-Key": "k"})
    async with anyio.create_task_group() as group:
        group.start_soon(transport.handle_async_request, request)
        await settle()
        assert timer.calls == []  # no timer at all
        slow.release()  # type: ignore[attr-defined]
    assert len(origin.requests) == 1


async def test_up_to_max_attempts_each_a_delay_after_the_last() -> None:
    attempts = [hang(), hang(), hang()]
    origin, timer = Origin(*attempts), Timer()
    transport = hedging(origin, timer, HedgingPolicy(delay=0.02, max_attempts=3))
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(get()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        for _ in range(5):
            await settle()
            await timer.fire()
        assert len(origin.requests) == 3
        attempts[1].release()  # type: ignore[attr-defined]
    assert timer.calls == [0.02, 0.02]
    assert outcome[0].extensions["hedging"] == HedgeHistory(attempts=3, winner=2)
    assert sorted(origin.cancelled) == [1, 3]


async def test_a_fast_failure_comes_back_at_once_for_the_retry_layer() -> None:
    origin, timer = Origin(503), Timer()
    response = await race(hedging(origin, timer), timer, get(), fires=0)
    assert isinstance(response, httpx.Response)
    assert response.status_code == 503
    assert response.extensions["hedging"] == HedgeHistory(attempts=1, winner=1)
    assert len(origin.requests) == 1


async def test_after_a_failure_no_new_hedge_starts_but_those_out_may_win() -> None:
    first = hang()
    origin, timer = Origin(first, 503, 200), Timer()
    transport = hedging(origin, timer, HedgingPolicy(delay=0.02, max_attempts=3))
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(get()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()  # attempt 2: 503
        await timer.fire()  # no attempt 3
        assert len(origin.requests) == 2
        first.release()  # type: ignore[attr-defined]
    assert outcome[0].status_code == 200
    assert outcome[0].extensions["hedging"] == HedgeHistory(attempts=2, winner=1)


async def test_when_nothing_is_acceptable_the_last_outcome_comes_back() -> None:
    first, second = hang(503), hang(502)
    origin, timer = Origin(first, second), Timer()
    transport = hedging(origin, timer)
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(get()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()
        second.release()  # type: ignore[attr-defined]
        await settle()
        first.release()  # type: ignore[attr-defined]
    assert outcome[0].status_code == 503
    assert outcome[0].extensions["hedging"] == HedgeHistory(attempts=2, winner=None)


async def test_when_every_attempt_raises_the_last_exception_is_raised() -> None:
    async def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gate = anyio.Event()

    async def slow_reset(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        raise httpx.ReadError("reset")

    origin, timer = Origin(slow_reset, refused), Timer()
    transport = hedging(origin, timer)
    caught: list[BaseException] = []

    async def send() -> None:
        try:
            await transport.handle_async_request(get())
        except httpx.TransportError as exc:
            caught.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()
        gate.set()
    assert isinstance(caught[0], httpx.ReadError)
    if sys.version_info >= (3, 11):
        assert caught[0].__notes__ == ["httpx-resilience: none of 2 hedged attempts succeeded"]


async def test_an_exception_does_not_win_over_a_later_answer() -> None:
    async def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset")

    first = hang()
    origin, timer = Origin(first, refused), Timer()
    transport = hedging(origin, timer)
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(get()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()
        first.release()  # type: ignore[attr-defined]
    assert outcome[0].status_code == 200


async def test_each_hedge_draws_from_the_retry_budget() -> None:
    book = BudgetBook(RetryBudget(ratio=0, max_tokens=1, min_per_second=0))
    origin_key = ("https", "api.example.com", None)
    slow = [hang(), hang(), hang(), hang()]
    origin, timer = Origin(slow[0], 200, slow[1], 200), Timer()
    transport = hedging(origin, timer)

    def budgeted() -> httpx.Request:
        return get(extensions={BUDGET_EXTENSION: book})

    first = await race(transport, timer, budgeted())
    assert isinstance(first, httpx.Response)
    assert first.extensions["hedging"] == HedgeHistory(attempts=2, winner=2)
    assert book.tokens(origin_key) == 0
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(budgeted()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()  # no token: no hedge
        await settle()
        assert len(origin.requests) == 3
        slow[1].release()  # type: ignore[attr-defined]
    assert outcome[0].extensions["hedging"] == HedgeHistory(attempts=1, winner=1)


async def test_in_the_stack_hedges_draw_from_the_budget_the_retry_layer_lends() -> None:
    # RetryTransport -> CircuitBreakerTransport -> HedgingTransport, as resilient_transport()
    # is to stack them; one token in the bucket and no refill.
    budget = RetryBudget(ratio=0, max_tokens=1, min_per_second=0)
    slow = [hang(), hang()]
    origin, timer = Origin(slow[0], 200, slow[1]), Timer()
    transport = RetryTransport(
        CircuitBreakerTransport(hedging(origin, timer)),
        RetryPolicy(budget=budget),
        sleep=FakeSleep(),
    )
    first = await race(transport, timer, get())
    assert isinstance(first, httpx.Response)
    assert first.extensions["hedging"] == HedgeHistory(attempts=2, winner=2)
    assert first.extensions["retry"].attempts == 1
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(get()))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()  # the token is spent: no hedge
        await settle()
        assert len(origin.requests) == 3
        slow[1].release()  # type: ignore[attr-defined]
    assert outcome[0].extensions["hedging"] == HedgeHistory(attempts=1, winner=1)


@pytest.mark.parametrize(
    ("option", "hedged"),
    [
        (True, True),
        (False, False),
        (HedgingPolicy(delay=0.3), True),
        (HedgingPolicy(max_attempts=1), False),
    ],
)
async def test_per_request_option(option: Any, hedged: bool) -> None:
    slow = hang()
    origin, timer = Origin(slow, 200), Timer()
    transport = hedging(origin, timer)
    request = get(extensions={"resilience": {"hedge": option}})
    outcome: list[httpx.Response] = []

    async def send() -> None:
        outcome.append(await transport.handle_async_request(request))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        await settle()
        await timer.fire()
        await settle()
        slow.release()  # type: ignore[attr-defined]
    assert len(origin.requests) == (2 if hedged else 1)
    if isinstance(option, HedgingPolicy) and hedged:
        assert timer.calls == [0.3]


async def test_a_bad_option_is_a_type_error() -> None:
    transport = hedging(Origin(200), Timer())
    with pytest.raises(TypeError, match='"hedge" option must be'):
        await transport.handle_async_request(get(extensions={"resilience": {"hedge": 1}}))


async def test_the_delay_is_learned_per_origin_from_recent_answers() -> None:
    now = [0.0]

    async def answer(request: httpx.Request) -> httpx.Response:
        now[0] += 0.2 if request.url.host == "slow.example.com" else 0.03
        await checkpoint()
        return httpx.Response(200)

    origin, timer = Origin(answer), Timer()
    policy = HedgingPolicy(min_samples=5, window=10, min_delay=0.01, max_delay=1.0)
    transport = HedgingTransport(origin.transport(), policy, sleep=timer, clock=lambda: now[0])
    for _ in range(6):
        await race(transport, timer, get("https://fast.example.com/"), fires=0)
        await race(transport, timer, get("https://slow.example.com/"), fires=0)
    assert timer.calls[:10] == [1.0] * 10  # nothing known yet: the ceiling
    assert timer.calls[10:] == [pytest.approx(0.03), pytest.approx(0.2)]


async def test_a_cancelled_caller_leaves_nothing_open() -> None:
    first = hang()
    held = TrackedStream()
    origin, timer = Origin(first, tracked(503, held)), Timer()
    transport = hedging(origin, timer)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(transport.handle_async_request, get())
            await settle()
            await timer.fire()
            scope.cancel()
    assert held.closed
    assert origin.cancelled == [1]


async def test_hedges_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    slow = hang()
    origin, timer = Origin(slow, 200), Timer()
    transport = hedging(origin, timer, meter_provider=provider)
    with caplog.at_level(logging.DEBUG, logger="httpx_resilience"):
        await race(transport, timer, get("https://user:pw@api.example.com/x?token=s"))
    assert [r.getMessage() for r in caplog.records] == [
        "hedging GET https://api.example.com/x: no answer after 0.050 s, sending attempt 2"
    ]
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        (dict(point.attributes), point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == HEDGES_METRIC
        for point in metric.data.data_points
    ]
    assert points == [
        (
            {
                "http.request.method": "GET",
                "server.address": "api.example.com",
                "server.port": 443,
            },
            1,
        )
    ]
    provider.shutdown()


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_each_hedge_is_its_own_span_with_its_resend_count(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    slow = hang()
    origin, timer = Origin(slow, 200), Timer()
    traced = TracingTransport(
        origin.transport(), tracer_provider=provider, meter_provider=MeterProvider()
    )
    transport = HedgingTransport(traced, FIXED, sleep=timer)
    response = await race(transport, timer, get())
    assert isinstance(response, httpx.Response)
    await response.aclose()
    finished = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [dict(s.attributes or {}).get("http.request.resend_count") for s in finished] == [
        None,
        1,
    ]
    # The cancelled attempt is not an error; each attempt carried its own traceparent.
    assert [s.status.is_ok for s in finished] == [True, True]
    parents = [request.headers["traceparent"] for request in origin.requests]
    assert len(set(parents)) == 2
    assert [span.context.span_id for span in finished] == [
        int(parent.split("-")[2], 16) for parent in parents
    ]


# --- the tail, against the fault server ------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def test_fault_server_hedging_cuts_the_tail_of_an_origin_that_stalls() -> None:
    # 5% of attempts stall for a second; a hedge after 50 ms gets around them.
    stall = 1.0
    plan = FaultPlan(
        routes={"/warm-up": Respond()},
        default=Weighted((95, Respond()), (5, Stall(stall))),
        seed=8,
    )
    policy = HedgingPolicy(delay=0.05, max_attempts=3)
    latencies: list[float] = []
    failures: list[Exception] = []
    async with FaultServer(plan) as server:
        base = HTTPTransport(
            verify=server.ssl_context,
        )
        transport = HedgingTransport(base, policy)
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            await client.get("/warm-up")  # the TLS handshake is not the tail we measure
            # A few at a time: client and server share one thread, and more
            # would queue them behind each other past the hedge delay.
            limit = anyio.Semaphore(4)

            async def one(number: int) -> None:
                async with limit:
                    start = anyio.current_time()
                    try:
                        response = await client.get(f"/r/{number}")
                        assert response.status_code == 200
                    except httpx.RemoteProtocolError as exc:  # every attempt stalled
                        failures.append(exc)
                    latencies.append(anyio.current_time() - start)

            async with anyio.create_task_group() as group:
                for number in range(200):
                    group.start_soon(one, number)
        received = [record for record in server.received if record.path.startswith("/r/")]
    by_request: dict[str, list[Any]] = {}
    for record in received:
        by_request.setdefault(record.path, []).append(record)
    stalled_first = sum(isinstance(records[0].outcome, Stall) for records in by_request.values())
    attempts = [len(records) for records in by_request.values()]
    # Without hedging these requests would have waited the whole stall, more
    # than 1% of them: the p99 would have been the stall itself.
    assert stalled_first >= 3
    assert quantile(latencies, 0.99) < stall / 4
    assert len(failures) <= 1  # 3 stalls in a row for one request: 1 chance in 8,000
    assert max(attempts) <= policy.max_attempts
    assert sum(attempts) / len(attempts) < 1.25


async def test_fault_server_a_slow_post_is_sent_once() -> None:
    plan = FaultPlan(routes={"/pay": Delay(0.05, then=Respond(201))})
    policy = HedgingPolicy(delay=0.01, max_attempts=3)
    async with FaultServer(plan, tls=False) as server:
        transport = HedgingTransport(HTTPTransport(), policy)
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            response = await client.post("/pay", json={"amount": 1})
            assert response.status_code == 201
            slow_get = await client.get("/pay")
        assert [r.method for r in server.received] == ["POST", "GET", "GET", "GET"]
    assert slow_get.extensions["hedging"].attempts == 3


async def test_a_cancellation_while_a_hedge_connects_reaches_the_first_attempt_at_once() -> None:
    """A hedge copies the request while the first attempt runs, and once copied
    the first attempt's trace callbacks with it: the hedge's events then went
    through them, and a cancellation that came while the hedge's connection
    was being set up was held back for the first attempt until its answer came.
    """
    plan = FaultPlan(routes={"/slow": Delay(3.0)})
    handshakes = 0
    async with FaultServer(plan) as server:
        base = HTTPTransport(verify=server.ssl_context, http2=False)  # a connection each
        transport = HedgingTransport(base, HedgingPolicy(delay=0.05, max_attempts=2))
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            with anyio.fail_after(2.0), anyio.CancelScope() as scope:

                async def trace(name: str, info: object) -> None:
                    nonlocal handshakes
                    if name == "connection.start_tls.complete":
                        handshakes += 1
                        if handshakes == 2:  # the hedge's connection is up
                            scope.cancel()

                await client.get("/slow", extensions={"trace": trace})
    assert scope.cancelled_caught
    assert handshakes == 2
