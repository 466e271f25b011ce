"""The retry layer against hostile headers, bad options and raising strategies.

Whatever goes wrong while the layer holds a response, the response is closed
first (its connection goes back to the pool), and options are checked before
a byte is sent.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from tenacity import RetryCallState, stop_after_attempt, wait_fixed

from .fakes import FakeSleep, TrackedStream
from .flavour import (
    HedgingPolicy,
    HedgingTransport,
    RetryPolicy,
    RetryTransport,
    httpx,
    resilient_transport,
)
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/v1/things"
NO_WAIT = RetryPolicy(wait=wait_fixed(0), stop=stop_after_attempt(3), budget=None)
# One connection: a response that is never closed holds it, and the next
# request meets PoolTimeout after a second.
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


def _pooled(servers: ServerThread, policy: RetryPolicy, sleep: FakeSleep) -> httpx.AsyncClient:
    base = httpx.AsyncHTTPTransport(limits=ONE_CONNECTION)
    transport = RetryTransport(base, policy, sleep=sleep)
    return httpx.AsyncClient(
        transport=transport, base_url=servers.http_url, timeout=httpx.Timeout(5, pool=1)
    )


# Defect 3: `Retry-After: ²` (byte 0xB2) passed str.isdigit() and float()
# raised ValueError out of client.get(), leaving the 503 open.


@pytest.mark.parametrize("value", ["²", "³", "1²", "½"])
async def test_a_non_ascii_retry_after_is_ignored_and_the_request_retried(
    servers: ServerThread, app: ScriptedApp, unique_path: str, value: str
) -> None:
    # Hypercorn sends the value's latin-1 bytes; httpx reads 0xB2 back as "²".
    app.script(unique_path, [Reply(503, headers={"Retry-After": value}), Reply(200, body=b"ok")])
    sleep = FakeSleep()
    async with _pooled(servers, NO_WAIT, sleep) as client:
        response = await client.get(unique_path)
    # Retried as if there were no Retry-After.
    assert (response.status_code, response.content, sleep.calls) == (200, b"ok", [0.0])


async def test_a_huge_retry_after_returns_the_response_at_once(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503, headers={"Retry-After": "9" * 5000}), Reply(200)])
    sleep = FakeSleep()
    async with _pooled(servers, NO_WAIT, sleep) as client:
        response = await client.get(unique_path)
    # Far longer than max_retry_after: the 503 comes back, nothing is slept.
    assert (response.status_code, sleep.calls) == (503, [])


async def test_many_unreadable_retry_afters_never_drain_the_pool(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503, headers={"Retry-After": "²"}, body=b"busy")])
    async with _pooled(servers, NO_WAIT, FakeSleep()) as client:
        for _ in range(10):
            response = await client.get(unique_path)
            assert response.status_code == 503
    assert len(app.received(unique_path)) == 30


# Whatever raises while the layer holds a response closes it first.


def _raising_wait(state: RetryCallState) -> float:
    if state.outcome is not None and state.outcome.failed is False:
        result = state.outcome.result()
        if isinstance(result, httpx.Response):
            raise RuntimeError("a wait strategy of the user's own failed")
    return 0.0


class _Clock:
    """A monotonic clock that fails on the call given."""

    def __init__(self, fail_on: int) -> None:
        self.calls = 0
        self.fail_on = fail_on

    def __call__(self) -> float:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("the clock failed")
        return 0.0


def _tracked_503(streams: list[TrackedStream]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        stream = TrackedStream(b"busy")
        streams.append(stream)
        return httpx.Response(503, headers={"Retry-After": "1"}, stream=stream)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda streams: RetryTransport(
                _tracked_503(streams), RetryPolicy(wait=_raising_wait), sleep=FakeSleep()
            ),
            id="wait-strategy",
        ),
        pytest.param(
            lambda streams: RetryTransport(
                _tracked_503(streams), NO_WAIT, sleep=FakeSleep(), clock=_Clock(fail_on=2)
            ),
            id="clock",
        ),
        pytest.param(
            lambda streams: RetryTransport(
                _tracked_503(streams), NO_WAIT, sleep=FakeSleep(), wall_clock=_Clock(fail_on=1)
            ),
            id="wall-clock",
        ),
        pytest.param(
            lambda streams: RetryTransport(
                _tracked_503(streams),
                RetryPolicy(wait=wait_fixed(0), stop=lambda state: 1 / 0),  # type: ignore[arg-type,misc]
                sleep=FakeSleep(),
            ),
            id="stop-strategy",
        ),
    ],
)
async def test_a_failing_strategy_or_clock_closes_the_response_it_held(make: Any) -> None:
    streams: list[TrackedStream] = []
    transport = make(streams)
    request = httpx.Request("GET", URL)
    with pytest.raises((RuntimeError, ZeroDivisionError)):
        await transport.handle_async_request(request)
    assert len(streams) == 1
    assert streams[0].closed


async def test_a_failing_wait_strategy_does_not_drain_a_real_pool(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503, body=b"busy")])
    policy = RetryPolicy(wait=_raising_wait, budget=None)
    async with _pooled(servers, policy, FakeSleep()) as client:
        for _ in range(3):
            with pytest.raises(RuntimeError, match="wait strategy"):
                await client.get(unique_path)
    assert len(app.received(unique_path)) == 3


# Defect 6: bad per-request options were found only after the request went
# out (and the 503 it met was left open).


BAD_OPTIONS: list[tuple[dict[str, object], type[Exception], str]] = [
    ({"idempotent": "yes"}, TypeError, "idempotent"),
    ({"idempotent": 1}, TypeError, "idempotent"),
    ({"retry": "no"}, TypeError, "retry"),
    ({"retry": None}, TypeError, "retry"),
    ({"hedge": "no"}, TypeError, "hedge"),
    ({"hedge": RetryPolicy()}, TypeError, "hedge"),
    ({"deadline": "1"}, TypeError, "deadline"),
    ({"deadline": True}, TypeError, "deadline"),
    ({"deadline": math.nan}, ValueError, "deadline"),
    ({"deadline": math.inf}, ValueError, "deadline"),
    ({"deadline": 0}, ValueError, "deadline"),
    ({"deadline": -1}, ValueError, "deadline"),
    ({"idempotnet": True}, ValueError, "idempotnet"),
]


@pytest.mark.parametrize(("options", "error", "name"), BAD_OPTIONS)
@pytest.mark.parametrize("stack", ["retry", "resilient", "hedging"])
async def test_bad_options_fail_before_the_request_is_sent(
    servers: ServerThread,
    app: ScriptedApp,
    unique_path: str,
    options: dict[str, object],
    error: type[Exception],
    name: str,
    stack: str,
) -> None:
    app.script(unique_path, [Reply(503)])
    base = httpx.AsyncHTTPTransport()
    transport: httpx.AsyncBaseTransport
    if stack == "retry":
        transport = RetryTransport(base, NO_WAIT, sleep=FakeSleep())
    elif stack == "resilient":
        transport = resilient_transport(base=base, retry=NO_WAIT, hedging=True, sleep=FakeSleep())
    else:
        transport = HedgingTransport(base, HedgingPolicy(delay=1))
    async with httpx.AsyncClient(transport=transport, base_url=servers.http_url) as client:
        for method in ("POST", "GET"):
            with pytest.raises(error, match=name):
                await client.request(method, unique_path, extensions={"resilience": options})
    assert app.received(unique_path) == []


@pytest.mark.parametrize(
    "options",
    [
        {"idempotent": True, "retry": False, "hedge": False, "deadline": 5},
        {"retry": True, "hedge": True, "deadline": 0.5, "idempotent": False},
        {"retry": RetryPolicy(), "hedge": HedgingPolicy(delay=1)},
        {},
    ],
)
async def test_good_options_are_accepted(options: dict[str, object]) -> None:
    transport = resilient_transport(base=httpx.MockTransport(lambda _: httpx.Response(204)))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL, extensions={"resilience": options})
    assert response.status_code == 204
