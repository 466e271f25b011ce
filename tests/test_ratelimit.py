"""RateLimitTransport on local state: its rate, burst, cap in flight and pauses, over mocks."""

from __future__ import annotations

from typing import Any

import pytest

from .fakes import FakeSleep, Script
from .flavour import (
    RateLimitExceeded,
    RateLimitPolicy,
    RateLimitTransport,
    httpx,
    resilient_transport,
)
from .flavour._state import LocalRates

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/v1/things"
OTHER = "https://other.example.com/v1/things"


# --- the policy and the algorithm ---------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"rate": 0}, ValueError, "rate must be > 0"),
        ({"rate": float("nan")}, ValueError, "rate must be a finite number"),
        ({"period": 0}, ValueError, "period must be > 0"),
        ({"rate": 5, "burst": 0}, ValueError, "burst must be >= 1"),
        ({"rate": 5, "burst": 2.5}, TypeError, "burst must be an int"),
        ({"max_in_flight": 0}, ValueError, "max_in_flight must be >= 1"),
        ({"wait": 1}, TypeError, "wait must be True or False"),
        ({"pause_statuses": {99}}, ValueError, "HTTP status codes"),
        ({"key": "origin"}, TypeError, "key must be a function"),
    ],
)
def test_policy_rejects_bad_values(options: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        RateLimitPolicy(**options)


def test_policy_burst_defaults_to_the_rate_per_period() -> None:
    assert RateLimitPolicy(rate=49.5).burst == 50
    assert RateLimitPolicy(rate=500, period=60, burst=20).interval == pytest.approx(0.12)
    assert RateLimitPolicy().interval == 0.0  # no rate: pauses only


def test_gcra_lets_a_burst_go_then_one_per_interval() -> None:
    now = [0.0]
    rates = LocalRates(clock=lambda: now[0])
    assert [rates.acquire("k", 0.5, 3) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0 - 0.5]
    now[0] = 0.5
    assert rates.acquire("k", 0.5, 3) == 0.0
    assert rates.acquire("k", 0.5, 3) == 0.5
    # Idle for long: the bucket is full again, no more than a burst.
    now[0] = 100.0
    assert [rates.acquire("k", 0.5, 3) == 0.0 for _ in range(4)] == [True, True, True, False]
    # Keys are independent.
    assert rates.acquire("other", 0.5, 3) == 0.0


def test_a_pause_holds_every_request_of_its_key_and_a_shorter_one_does_not_cut_it() -> None:
    now = [0.0]
    rates = LocalRates(clock=lambda: now[0])
    rates.pause("k", 3.0)
    rates.pause("k", 1.0)
    assert rates.acquire("k", 0.0, 1) == 3.0
    assert rates.acquire("other", 0.0, 1) == 0.0
    now[0] = 3.0
    assert rates.acquire("k", 0.0, 1) == 0.0


def test_local_rates_forget_full_buckets_past_their_size() -> None:
    now = [0.0]
    rates = LocalRates(clock=lambda: now[0], size=4)
    for i in range(4):
        rates.acquire(f"k{i}", 1.0, 1)
    now[0] = 10.0  # every bucket is full again
    for i in range(4, 8):
        rates.acquire(f"k{i}", 1.0, 1)
    assert len(rates._tats) <= 4


# --- the layer, for async clients and (the twin below) sync ones --------------


class _Body(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A body that stays open until the client reads or closes it, for both call styles."""

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b"chunk"

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield b"chunk"


def _streamed(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=_Body())


# unasync: begin
def _async_client(
    script: Script, sleep: FakeSleep, policy: RateLimitPolicy, **options: Any
) -> httpx.AsyncClient:
    transport = RateLimitTransport(
        script.transport(), policy, sleep=sleep, sync_sleep=sleep, clock=sleep.clock
    )
    return httpx.AsyncClient(transport=transport, **options)


async def test_requests_past_the_burst_wait_their_turn() -> None:
    script, sleep = Script([200]), FakeSleep()
    async with _async_client(script, sleep, RateLimitPolicy(rate=2, burst=2)) as client:
        for _ in range(5):
            assert (await client.get(URL)).status_code == 200
    assert len(script.requests) == 5
    assert sleep.calls == [0.5, 0.5, 0.5]


async def test_without_waiting_a_request_over_the_rate_fails_unsent() -> None:
    script, sleep = Script([200]), FakeSleep()
    policy = RateLimitPolicy(rate=2, burst=2, wait=False)
    async with _async_client(script, sleep, policy) as client:
        await client.get(URL)
        await client.get(URL)
        with pytest.raises(RateLimitExceeded) as caught:
            await client.get(URL)
        # Another origin has a rate of its own.
        assert (await client.get(OTHER)).status_code == 200
    assert isinstance(caught.value, httpx.PoolTimeout)
    assert caught.value.key == "https://api.example.com"
    assert caught.value.retry_in == pytest.approx(0.5)
    assert "the policy does not wait" in str(caught.value)
    assert len(script.requests) == 3
    assert sleep.calls == []


async def test_a_wait_longer_than_the_pool_timeout_fails_at_once() -> None:
    script, sleep = Script([200]), FakeSleep()
    timeout = httpx.Timeout(5.0, pool=0.2)
    async with _async_client(
        script, sleep, RateLimitPolicy(rate=1, burst=1), timeout=timeout
    ) as client:
        await client.get(URL)
        with pytest.raises(RateLimitExceeded, match=r"more than the 0.20 s it may wait"):
            await client.get(URL)
    assert len(script.requests) == 1
    assert sleep.calls == []  # no wait that could not end in time


async def test_a_429_with_retry_after_pauses_the_origin_for_the_next_caller() -> None:
    script, sleep = Script([(429, {"Retry-After": "3"}), 200]), FakeSleep()
    async with _async_client(script, sleep, RateLimitPolicy()) as client:
        assert (await client.get(URL)).status_code == 429
        assert (await client.get(OTHER)).status_code == 200  # not paused
        assert (await client.get(URL)).status_code == 200
    assert sleep.calls == [3.0]


async def test_a_pause_is_capped_by_max_pause() -> None:
    script, sleep = Script([(503, {"Retry-After": "3600"}), 200]), FakeSleep()
    async with _async_client(script, sleep, RateLimitPolicy(max_pause=2)) as client:
        await client.get(URL)
        await client.get(URL)
    assert sleep.calls == [2.0]


async def test_limits_are_kept_per_key_the_policy_derives() -> None:
    script, sleep = Script([200]), FakeSleep()
    policy = RateLimitPolicy(rate=1, burst=1, wait=False, key=lambda request: request.url.path)
    async with _async_client(script, sleep, policy) as client:
        await client.get("https://a.example.com/shared")
        with pytest.raises(RateLimitExceeded) as caught:
            await client.get("https://b.example.com/shared")
        await client.get("https://a.example.com/other")
    assert caught.value.key == "/shared"
    assert len(script.requests) == 2


async def test_the_cap_in_flight_holds_until_the_body_is_closed() -> None:
    script, sleep = Script([_streamed]), FakeSleep()
    policy = RateLimitPolicy(max_in_flight=1, wait=False)
    async with _async_client(script, sleep, policy) as client:
        async with client.stream("GET", URL) as response:
            assert response.status_code == 200
            with pytest.raises(RateLimitExceeded, match="1 requests in flight"):
                await client.get(URL)
        # Closed: the slot is back.
        assert (await client.get(URL)).status_code == 200
        assert (await client.get(URL)).status_code == 200
    assert len(script.requests) == 3


async def test_a_failed_request_gives_its_slot_back() -> None:
    script, sleep = Script([httpx.ConnectError("refused"), 200]), FakeSleep()
    policy = RateLimitPolicy(max_in_flight=1, wait=False)
    async with _async_client(script, sleep, policy) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(URL)
        assert (await client.get(URL)).status_code == 200


async def test_the_stack_puts_the_limiter_inside_the_retry_layer() -> None:
    # Every attempt passes the limiter: the retry after the 503 is over the
    # rate (and so are the ones after it), and is never sent.
    script, sleep = Script([503, 200]), FakeSleep()
    transport = resilient_transport(
        base=script.transport(),
        rate_limit=RateLimitPolicy(rate=1, burst=1, wait=False),
        sleep=sleep,
        sync_sleep=sleep,
        tracing=False,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(RateLimitExceeded):
            await client.get(URL)
    assert len(script.requests) == 1
    assert len(sleep.calls) == 2  # the retry layer's backoffs, not the limiter's


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
def _client(
    script: Script, sleep: FakeSleep, policy: RateLimitPolicy, **options: Any
) -> httpx.Client:
    transport = RateLimitTransport(
        script.transport(), policy, sleep=sleep, sync_sleep=sleep, clock=sleep.clock
    )
    return httpx.Client(transport=transport, **options)


def test_sync_requests_past_the_burst_wait_their_turn() -> None:
    script, sleep = Script([200]), FakeSleep()
    with _client(script, sleep, RateLimitPolicy(rate=2, burst=2)) as client:
        for _ in range(5):
            assert (client.get(URL)).status_code == 200
    assert len(script.requests) == 5
    assert sleep.calls == [0.5, 0.5, 0.5]


def test_sync_without_waiting_a_request_over_the_rate_fails_unsent() -> None:
    script, sleep = Script([200]), FakeSleep()
    policy = RateLimitPolicy(rate=2, burst=2, wait=False)
    with _client(script, sleep, policy) as client:
        client.get(URL)
        client.get(URL)
        with pytest.raises(RateLimitExceeded) as caught:
            client.get(URL)
        # Another origin has a rate of its own.
        assert (client.get(OTHER)).status_code == 200
    assert isinstance(caught.value, httpx.PoolTimeout)
    assert caught.value.key == "https://api.example.com"
    assert caught.value.retry_in == pytest.approx(0.5)
    assert "the policy does not wait" in str(caught.value)
    assert len(script.requests) == 3
    assert sleep.calls == []


def test_sync_a_wait_longer_than_the_pool_timeout_fails_at_once() -> None:
    script, sleep = Script([200]), FakeSleep()
    timeout = httpx.Timeout(5.0, pool=0.2)
    with _client(script, sleep, RateLimitPolicy(rate=1, burst=1), timeout=timeout) as client:
        client.get(URL)
        with pytest.raises(RateLimitExceeded, match=r"more than the 0.20 s it may wait"):
            client.get(URL)
    assert len(script.requests) == 1
    assert sleep.calls == []  # no wait that could not end in time


def test_sync_a_429_with_retry_after_pauses_the_origin_for_the_next_caller() -> None:
    script, sleep = Script([(429, {"Retry-After": "3"}), 200]), FakeSleep()
    with _client(script, sleep, RateLimitPolicy()) as client:
        assert (client.get(URL)).status_code == 429
        assert (client.get(OTHER)).status_code == 200  # not paused
        assert (client.get(URL)).status_code == 200
    assert sleep.calls == [3.0]


def test_sync_a_pause_is_capped_by_max_pause() -> None:
    script, sleep = Script([(503, {"Retry-After": "3600"}), 200]), FakeSleep()
    with _client(script, sleep, RateLimitPolicy(max_pause=2)) as client:
        client.get(URL)
        client.get(URL)
    assert sleep.calls == [2.0]


def test_sync_limits_are_kept_per_key_the_policy_derives() -> None:
    script, sleep = Script([200]), FakeSleep()
    policy = RateLimitPolicy(rate=1, burst=1, wait=False, key=lambda request: request.url.path)
    with _client(script, sleep, policy) as client:
        client.get("https://a.example.com/shared")
        with pytest.raises(RateLimitExceeded) as caught:
            client.get("https://b.example.com/shared")
        client.get("https://a.example.com/other")
    assert caught.value.key == "/shared"
    assert len(script.requests) == 2


def test_sync_the_cap_in_flight_holds_until_the_body_is_closed() -> None:
    script, sleep = Script([_streamed]), FakeSleep()
    policy = RateLimitPolicy(max_in_flight=1, wait=False)
    with _client(script, sleep, policy) as client:
        with client.stream("GET", URL) as response:
            assert response.status_code == 200
            with pytest.raises(RateLimitExceeded, match="1 requests in flight"):
                client.get(URL)
        # Closed: the slot is back.
        assert (client.get(URL)).status_code == 200
        assert (client.get(URL)).status_code == 200
    assert len(script.requests) == 3


def test_sync_a_failed_request_gives_its_slot_back() -> None:
    script, sleep = Script([httpx.ConnectError("refused"), 200]), FakeSleep()
    policy = RateLimitPolicy(max_in_flight=1, wait=False)
    with _client(script, sleep, policy) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(URL)
        assert (client.get(URL)).status_code == 200


def test_sync_the_stack_puts_the_limiter_inside_the_retry_layer() -> None:
    # Every attempt passes the limiter: the retry after the 503 is over the
    # rate (and so are the ones after it), and is never sent.
    script, sleep = Script([503, 200]), FakeSleep()
    transport = resilient_transport(
        base=script.transport(),
        rate_limit=RateLimitPolicy(rate=1, burst=1, wait=False),
        sleep=sleep,
        sync_sleep=sleep,
        tracing=False,
    )
    with httpx.Client(transport=transport) as client:
        with pytest.raises(RateLimitExceeded):
            client.get(URL)
    assert len(script.requests) == 1
    assert len(sleep.calls) == 2  # the retry layer's backoffs, not the limiter's


# unasync: generated end
