"""Retry budget and total deadline, inside RetryTransport."""

from __future__ import annotations

import httpx
import pytest
from tenacity import stop_after_attempt, wait_fixed

from httpx_resilience import DeadlineExceeded, RetryBudget, RetryPolicy, RetryTransport
from httpx_resilience._budget import BudgetBook

from .fakes import FakeSleep, Script
from .servers import ServerThread

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/items"
NO_WAIT = RetryPolicy(wait=wait_fixed(0), stop=stop_after_attempt(3))


def _transport(script: Script, policy: RetryPolicy, sleep: FakeSleep) -> RetryTransport:
    return RetryTransport(script.transport(), policy, sleep=sleep, clock=sleep.clock)


async def _send_many(transport: RetryTransport, count: int, url: str = URL) -> list[int]:
    async with httpx.AsyncClient(transport=transport) as client:
        return [(await client.get(url)).status_code for _ in range(count)]


async def test_budget_caps_retries_against_an_origin_that_always_fails() -> None:
    script, sleep = Script([503]), FakeSleep()
    budget = RetryBudget(ratio=0.1, max_tokens=10)
    await _send_many(_transport(script, RetryPolicy(**_no_wait(), budget=budget), sleep), 1000)
    # Without a budget: 3,000 attempts. With it: each request earns 0.1 retry.
    assert 1000 < len(script.requests) <= 1000 * 1.1 + 10


async def test_without_a_budget_every_request_uses_all_its_attempts() -> None:
    script, sleep = Script([503]), FakeSleep()
    await _send_many(_transport(script, RetryPolicy(**_no_wait(), budget=None), sleep), 100)
    assert len(script.requests) == 300


async def test_budget_still_retries_occasional_failures() -> None:
    failures = iter(range(10_000))

    def every_tenth_fails_once(request: httpx.Request) -> httpx.Response:
        number = next(failures)
        return httpx.Response(503 if number % 11 == 0 else 200)

    script, sleep = Script([every_tenth_fails_once]), FakeSleep()
    statuses = await _send_many(_transport(script, NO_WAIT, sleep), 1000)
    assert statuses == [200] * 1000


async def test_budgets_are_per_origin() -> None:
    script, sleep = Script([503]), FakeSleep()
    transport = _transport(script, RetryPolicy(**_no_wait(), budget=RetryBudget(ratio=0)), sleep)
    await _send_many(transport, 20, "https://a.example.com/")
    spent = len(script.requests)
    await _send_many(transport, 1, "https://b.example.com/")
    # b's bucket is full: its one request gets both retries.
    assert len(script.requests) - spent == 3


def test_budget_book_refills_over_time_and_charges_timeouts_more() -> None:
    now = [0.0]
    book = BudgetBook(RetryBudget(ratio=0.5, max_tokens=2, min_per_second=1), clock=lambda: now[0])
    origin = ("https", "a.example.com", None)
    assert book.withdraw(origin, timeout=True)  # costs 2
    assert not book.withdraw(origin)
    book.deposit(origin)
    book.deposit(origin)
    assert book.withdraw(origin)
    now[0] = 1.5
    assert book.tokens(origin) == 1.5
    assert book.withdraw(origin)
    now[0] = 100.0
    assert book.tokens(origin) == 2  # never above max_tokens


def test_budget_book_forgets_the_oldest_origin() -> None:
    book = BudgetBook(RetryBudget(min_per_second=0), size=2)
    for host in ("a", "b", "c"):
        book.withdraw(("https", host, None))
    # "a" was evicted: it comes back with a full bucket.
    full = RetryBudget().max_tokens
    assert book.tokens(("https", "a", None)) == full
    assert book.tokens(("https", "c", None)) == full - 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"max_tokens": 0.5}, "max_tokens"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"timeout_cost": -1}, "timeout_cost"),
    ],
)
def test_bad_budgets_fail_at_construction(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryBudget(**kwargs)


async def test_a_deadline_returns_a_503_rather_than_wait_past_it() -> None:
    script, sleep = Script([(503, {"Retry-After": "5"}), 200]), FakeSleep()
    policy = RetryPolicy(deadline=1.0)
    async with httpx.AsyncClient(transport=_transport(script, policy, sleep)) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert sleep.calls == []
    assert sleep.now <= 1.0


async def test_a_backoff_that_would_pass_the_deadline_is_not_slept() -> None:
    script, sleep = Script([503]), FakeSleep()
    policy = RetryPolicy(wait=wait_fixed(1), stop=stop_after_attempt(10), deadline=2.5)
    async with httpx.AsyncClient(transport=_transport(script, policy, sleep)) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert sleep.calls == [1.0, 1.0]
    assert len(script.requests) == 3


async def test_each_attempt_gets_what_is_left_of_the_deadline() -> None:
    seen: list[dict[str, float]] = []
    headers: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        headers.append(request.headers["X-Deadline"])
        return httpx.Response(503)

    script, sleep = Script([record]), FakeSleep()
    policy = RetryPolicy(wait=wait_fixed(1), deadline_header="X-Deadline")
    transport = _transport(script, policy, sleep)
    timeout = httpx.Timeout(5.0, connect=0.5)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        await client.get(URL, extensions={"resilience": {"deadline": 2.5}})
    assert seen == [
        {"connect": 0.5, "read": 2.5, "write": 2.5, "pool": 2.5},
        {"connect": 0.5, "read": 1.5, "write": 1.5, "pool": 1.5},
        {"connect": 0.5, "read": 0.5, "write": 0.5, "pool": 0.5},
    ]
    assert headers == ["2.500", "1.500", "0.500"]


async def test_a_slow_origin_gives_the_deadline_error_not_a_hang(servers: ServerThread) -> None:
    policy = RetryPolicy(deadline=0.3)
    transport = RetryTransport(httpx.AsyncHTTPTransport(), policy)
    async with httpx.AsyncClient(transport=transport, base_url=servers.http_url) as client:
        with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.3 s ran out") as caught:
            await client.get("/delay", params={"seconds": 3})
    assert isinstance(caught.value, httpx.TimeoutException)
    # Cut by the deadline's cancel scope, or by the read timeout cut to it.
    assert caught.value.__cause__ is None or isinstance(caught.value.__cause__, httpx.ReadTimeout)


async def test_a_deadline_applies_without_retries_too(servers: ServerThread) -> None:
    transport = RetryTransport(httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport, base_url=servers.http_url) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get(
                "/delay",
                params={"seconds": 3},
                extensions={"resilience": {"retry": False, "deadline": 0.2}},
            )


@pytest.mark.parametrize(
    ("deadline", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)]
)
async def test_bad_deadlines_are_refused(deadline: object, error: type[Exception]) -> None:
    script, sleep = Script([200]), FakeSleep()
    async with httpx.AsyncClient(transport=_transport(script, NO_WAIT, sleep)) as client:
        with pytest.raises(error, match="deadline"):
            await client.get(URL, extensions={"resilience": {"deadline": deadline}})
    assert script.requests == []
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)


def _no_wait() -> dict[str, object]:
    return {"wait": wait_fixed(0), "stop": stop_after_attempt(3)}
