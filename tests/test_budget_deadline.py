"""Retry budget and total deadline, inside RetryTransport."""

from __future__ import annotations

import pytest
from tenacity import stop_after_attempt, wait_fixed

from .fakes import FakeSleep, Script
from .flavour import DeadlineExceeded, RetryBudget, RetryPolicy, RetryTransport, httpx
from .flavour._budget import MAX_BUDGET_BOOKS, BudgetBook
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


def test_budget_book_forgets_full_buckets_and_keeps_drained_ones() -> None:
    now = [0.0]
    budget = RetryBudget(ratio=0.1, max_tokens=2, min_per_second=1)
    book = BudgetBook(budget, clock=lambda: now[0], size=4)
    drained = ("https", "down.example.com", None)
    assert book.withdraw(drained)
    assert book.withdraw(drained)
    # Origins used to be forgotten in the order they came: past `size` others,
    # the drained bucket came back full.
    for number in range(5000):
        book.deposit(("https", f"host-{number}.example.com", None))
    assert book.tokens(drained) == pytest.approx(0.0)
    assert len(book) <= 4  # the full buckets of the others made room
    # Refilled (2 tokens at 1 a second), it holds nothing a new bucket would
    # not, and may go like any other.
    now[0] = 2.0
    for number in range(10):
        book.deposit(("https", f"later-{number}.example.com", None))
    assert len(book) <= 4
    assert book.tokens(drained) == 2


def test_budget_book_grows_past_its_size_rather_than_forget_a_drained_bucket() -> None:
    book = BudgetBook(RetryBudget(min_per_second=0), size=2)
    for host in ("a", "b", "c"):
        book.withdraw(("https", host, None))
    full = RetryBudget().max_tokens
    # Nothing refills by time: all three stay below full, all three are kept.
    assert [book.tokens(("https", host, None)) for host in "abc"] == [full - 1] * 3


async def test_a_drained_budget_survives_5000_other_origins() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.host == "down.example.com" else 200)

    script, sleep = Script([reply]), FakeSleep()
    budget = RetryBudget(ratio=0.0, max_tokens=2, min_per_second=0)
    policy = RetryPolicy(wait=wait_fixed(0), stop=stop_after_attempt(3), budget=budget)
    transport = _transport(script, policy, sleep)
    down = httpx.Request("GET", "https://down.example.com/")
    await transport.handle_async_request(down)  # 1 attempt + 2 retries: the budget is spent
    assert len(script.requests) == 3
    for number in range(5000):
        request = httpx.Request("GET", f"https://host-{number}.example.com/")
        await transport.handle_async_request(request)
    assert len(script.requests) == 3 + 5000
    await transport.handle_async_request(down)
    assert len(script.requests) == 3 + 5000 + 1  # still spent: no retry


async def test_per_request_budgets_share_books_by_value_and_are_bounded() -> None:
    script, sleep = Script([200]), FakeSleep()
    transport = _transport(script, NO_WAIT, sleep)

    def options(budget: RetryBudget) -> dict[str, object]:
        return {"resilience": {"retry": RetryPolicy(budget=budget)}}

    for _ in range(5000):  # equal budgets, new objects each time
        request = httpx.Request("GET", URL, extensions=options(RetryBudget(ratio=0.1)))
        await transport.handle_async_request(request)
    assert len(transport._books) == 2  # the layer's own and the per-request one
    for number in range(5000):  # all different
        budget = RetryBudget(ratio=number / 5000)
        await transport.handle_async_request(httpx.Request("GET", URL, extensions=options(budget)))
    assert len(transport._books) <= MAX_BUDGET_BOOKS
    # The layer's own book is never the one that goes.
    assert transport.policy.budget in transport._books


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


# --- clocks that step back or give NaN ----------------------------------------------


def test_a_nan_from_the_clock_neither_refills_a_bucket_nor_stops_its_refill() -> None:
    now = [0.0]
    book = BudgetBook(RetryBudget(max_tokens=2, min_per_second=1), clock=lambda: now[0])
    origin = ("https", "a.example.com", None)
    assert book.withdraw(origin)
    assert book.withdraw(origin)
    now[0] = float("nan")
    assert not book.withdraw(origin)
    # A NaN used to become the bucket's last refill time, and it never refilled again.
    now[0] = 1.0
    assert book.withdraw(origin)


async def test_a_clock_that_steps_back_does_not_stretch_the_deadline() -> None:
    seen: list[float] = []
    sleep = FakeSleep()

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        if len(seen) == 1:
            sleep.now -= 900  # the clock steps back during the first attempt
        return httpx.Response(503)

    policy = RetryPolicy(wait=wait_fixed(1), stop=stop_after_attempt(10))
    transport = _transport(Script([record]), policy, sleep)
    async with httpx.AsyncClient(transport=transport, timeout=None) as client:
        response = await client.get(URL, extensions={"resilience": {"deadline": 2.5}})
    assert response.status_code == 503
    # What is left of 2.5 s, by the clock's steps; it used to be 901.5 s at the second.
    assert seen == [2.5, 1.5, 0.5]
