"""A fleet as one client: breaker, retry budget and rate limits shared through a real Redis.

Every test here runs against a redis-server of its own on 127.0.0.1
(tests/redis_server.py); the fleet tests start real processes
(tests/fleet_worker.py) against the Hypercorn harness.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tenacity import stop_after_attempt, wait_fixed

from .fakes import FakeSleep, Script
from .flavour import (
    CircuitBreakerPolicy,
    CircuitOpenError,
    MemoryState,
    RateLimitExceeded,
    RateLimitPolicy,
    RedisState,
    RetryBudget,
    RetryPolicy,
    httpx,
    resilient_transport,
)
from .redis_server import RedisServer, redis_binary
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
URL = "https://api.example.com/v1/things"
ORIGIN = "https://api.example.com"
# Opens after 4 failures among at least 4 calls; a break longer than any test.
BREAKER = CircuitBreakerPolicy(failure_ratio=0.5, min_calls=4, break_duration=60)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(redis_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _answers(request: httpx.Request) -> httpx.Response:
    """200, except where the path asks for a status (``/status/503``)."""
    path = request.url.path
    if path.startswith("/status/"):
        status = int(path.removeprefix("/status/"))
        return httpx.Response(status, headers={"Retry-After": "30"} if status == 429 else {})
    return httpx.Response(200)


# --- the scripts, on Redis itself -------------------------------------------------


def test_concurrent_withdrawals_never_spend_a_token_twice(
    redis_server: RedisServer, prefix: str
) -> None:
    state = RedisState(redis_server.url, prefix=prefix)
    _, store = state.budgets(RetryBudget(ratio=0, max_tokens=5, min_per_second=0))
    results: list[bool | None] = []
    lock = threading.Lock()

    def withdraw() -> None:
        for _ in range(5):
            taken = store.settle(ORIGIN, 0.0, 1.0)
            with lock:
                results.append(taken)

    threads = [threading.Thread(target=withdraw) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    state.close()
    assert len(results) == 40
    assert results.count(True) == 5  # the bucket's 5 tokens, once each
    assert results.count(None) == 0  # Redis answered every call


def test_concurrent_failures_open_a_shared_circuit_once(
    redis_server: RedisServer, prefix: str
) -> None:
    state = RedisState(redis_server.url, prefix=prefix)
    _, store = state.circuits(BREAKER)
    replies = []
    lock = threading.Lock()

    def fail() -> None:
        for _ in range(5):
            reply = store.acquire(ORIGIN, 0, 0)
            if reply is not None and reply.permit is not None:
                ended = store.record(ORIGIN, reply.permit, True)
                with lock:
                    replies.append(ended)

    threads = [threading.Thread(target=fail) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    state.close()
    openings = [
        r for r in replies if r is not None and (r.previous, r.state) == ("closed", "open")
    ]
    assert len(openings) == 1
    # Calls that were given a permit before the circuit opened report under an
    # old generation: counted by no one, they cannot reopen it.
    assert store is not None


def test_keys_follow_the_documented_layout_and_expire(
    redis_server: RedisServer, prefix: str
) -> None:
    import redis

    state = RedisState(redis_server.url, prefix=prefix)
    state.circuits(BREAKER)[1].acquire(ORIGIN, 0, 0)
    state.budgets(RetryBudget())[1].settle(ORIGIN, 0.2, 1.0)
    rates = state.rates(_rate(RateLimitPolicy(rate=10)))[1]
    rates.acquire(ORIGIN)
    rates.pause(ORIGIN, 5)
    state.close()
    with redis.Redis.from_url(redis_server.url) as client:
        keys = sorted(key.decode() for key in client.keys(f"{prefix}:*"))
        assert keys == [
            f"{prefix}:breaker:{{{ORIGIN}}}",
            f"{prefix}:budget:{{{ORIGIN}}}",
            f"{prefix}:pause:{{{ORIGIN}}}",
            f"{prefix}:rate:{{{ORIGIN}}}",
        ]
        assert all(client.pttl(key) > 0 for key in keys)


def _rate(policy: RateLimitPolicy) -> Any:
    from .flavour._ratelimit import _Settings

    return _Settings(policy)


def test_redis_state_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="prefix must be a non-empty str"):
        RedisState(prefix="")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        RedisState(timeout=0)
    state = RedisState("redis://user:secret@127.0.0.1:1/0")
    assert "secret" not in repr(state)
    assert "secret" not in state.health.name
    with pytest.raises(TypeError, match="state must be a MemoryState or RedisState"):
        resilient_transport(state="redis://127.0.0.1")  # type: ignore[arg-type]


# --- the layers on shared state, in one process (two transports, two states) -------


# unasync: begin
def _async_client(state: RedisState, **layers: Any) -> httpx.AsyncClient:
    sleep = FakeSleep()
    transport = resilient_transport(
        base=Script([_answers]).transport(),
        state=state,
        sleep=sleep,
        sync_sleep=sleep,
        tracing=False,
        **layers,
    )
    return httpx.AsyncClient(transport=transport)


async def test_a_breaker_opened_by_one_transport_fails_the_other_fast(
    redis_server: RedisServer, prefix: str
) -> None:
    one = RedisState(redis_server.url, prefix=prefix)
    two = RedisState(redis_server.url, prefix=prefix)
    failing = f"{ORIGIN}/status/503"
    try:
        async with _async_client(one, retry=False, circuit_breaker=BREAKER) as a:
            async with _async_client(two, retry=False, circuit_breaker=BREAKER) as b:
                for _ in range(3):
                    assert (await a.get(failing)).status_code == 503
                assert (await b.get(failing)).status_code == 503  # the 4th: it opens
                with pytest.raises(CircuitOpenError) as caught:
                    await a.get(failing)
                assert caught.value.retry_in > 50
                assert a._transport.transport.state(failing).value == "open"
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_retry_budget_spent_by_one_transport_is_spent_for_the_other(
    redis_server: RedisServer, prefix: str
) -> None:
    one = RedisState(redis_server.url, prefix=prefix)
    two = RedisState(redis_server.url, prefix=prefix)
    policy = RetryPolicy(
        wait=wait_fixed(0),
        stop=stop_after_attempt(5),
        budget=RetryBudget(ratio=0, max_tokens=2, min_per_second=0),
    )
    failing = f"{ORIGIN}/status/503"
    try:
        async with _async_client(one, retry=policy) as a, _async_client(two, retry=policy) as b:
            first = await a.get(failing)
            assert first.extensions["retry"].attempts == 3  # two retries: the two tokens
            second = await b.get(failing)
            assert second.extensions["retry"].attempts == 1  # none left in the fleet
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_rate_and_a_pause_are_shared(redis_server: RedisServer, prefix: str) -> None:
    one = RedisState(redis_server.url, prefix=prefix)
    two = RedisState(redis_server.url, prefix=prefix)
    rate = RateLimitPolicy(rate=1, burst=1, wait=False)
    try:
        async with _async_client(one, retry=False, rate_limit=rate) as a:
            async with _async_client(two, retry=False, rate_limit=rate) as b:
                assert (await a.get(URL)).status_code == 200
                with pytest.raises(RateLimitExceeded):
                    await b.get(URL)  # the fleet's one request a second is spent
                other = "https://other.example.com/status/429"
                assert (await a.get(other)).status_code == 429  # Retry-After: 30
                with pytest.raises(RateLimitExceeded) as caught:
                    await b.get("https://other.example.com/")
                assert 29 < caught.value.retry_in <= 30
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_down_the_layers_go_on_locally_then_share_again(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(redis_binary())
    server.start()
    # retry_after=0: ask Redis again on every call, so the test need not wait.
    one = RedisState(server.url, prefix=prefix, retry_after=0)
    two = RedisState(server.url, prefix=prefix, retry_after=0)
    layers: dict[str, Any] = {
        "retry": False,
        "circuit_breaker": BREAKER,
        "rate_limit": RateLimitPolicy(rate=10_000, wait=False),
    }
    caplog.set_level(logging.INFO, logger="httpx_resilience")
    try:
        async with _async_client(one, **layers) as a, _async_client(two, **layers) as b:
            assert (await a.get(URL)).status_code == 200
            server.stop()
            # Requests keep flowing on local state; nothing of Redis reaches the caller.
            for _ in range(10):
                assert (await a.get(URL)).status_code == 200
                assert (await b.get(URL)).status_code == 200
            assert one.health.down
            assert two.health.down
            warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(warnings) == 2  # once per state, not once per request
            server.start()  # the same port
            assert (await a.get(f"{ORIGIN}/status/429")).status_code == 429
            assert not one.health.down
            with pytest.raises(RateLimitExceeded):
                await b.get(URL)  # the pause one saw reaches two through Redis again
            assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await one.aclose()
        await two.aclose()
        server.stop()


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
def _client(state: RedisState, **layers: Any) -> httpx.Client:
    sleep = FakeSleep()
    transport = resilient_transport(
        base=Script([_answers]).transport(),
        state=state,
        sleep=sleep,
        sync_sleep=sleep,
        tracing=False,
        **layers,
    )
    return httpx.Client(transport=transport)


def test_sync_a_breaker_opened_by_one_transport_fails_the_other_fast(
    redis_server: RedisServer, prefix: str
) -> None:
    one = RedisState(redis_server.url, prefix=prefix)
    two = RedisState(redis_server.url, prefix=prefix)
    failing = f"{ORIGIN}/status/503"
    try:
        with _client(one, retry=False, circuit_breaker=BREAKER) as a:
            with _client(two, retry=False, circuit_breaker=BREAKER) as b:
                for _ in range(3):
                    assert (a.get(failing)).status_code == 503
                assert (b.get(failing)).status_code == 503  # the 4th: it opens
                with pytest.raises(CircuitOpenError) as caught:
                    a.get(failing)
                assert caught.value.retry_in > 50
                assert a._transport.transport.state(failing).value == "open"
    finally:
        one.close()
        two.close()


def test_sync_a_retry_budget_spent_by_one_transport_is_spent_for_the_other(
    redis_server: RedisServer, prefix: str
) -> None:
    one = RedisState(redis_server.url, prefix=prefix)
    two = RedisState(redis_server.url, prefix=prefix)
    policy = RetryPolicy(
        wait=wait_fixed(0),
        stop=stop_after_attempt(5),
        budget=RetryBudget(ratio=0, max_tokens=2, min_per_second=0),
    )
    failing = f"{ORIGIN}/status/503"
    try:
        with _client(one, retry=policy) as a, _client(two, retry=policy) as b:
            first = a.get(failing)
            assert first.extensions["retry"].attempts == 3  # two retries: the two tokens
            second = b.get(failing)
            assert second.extensions["retry"].attempts == 1  # none left in the fleet
    finally:
        one.close()
        two.close()


def test_sync_a_rate_and_a_pause_are_shared(redis_server: RedisServer, prefix: str) -> None:
    one = RedisState(redis_server.url, prefix=prefix)
    two = RedisState(redis_server.url, prefix=prefix)
    rate = RateLimitPolicy(rate=1, burst=1, wait=False)
    try:
        with _client(one, retry=False, rate_limit=rate) as a:
            with _client(two, retry=False, rate_limit=rate) as b:
                assert (a.get(URL)).status_code == 200
                with pytest.raises(RateLimitExceeded):
                    b.get(URL)  # the fleet's one request a second is spent
                other = "https://other.example.com/status/429"
                assert (a.get(other)).status_code == 429  # Retry-After: 30
                with pytest.raises(RateLimitExceeded) as caught:
                    b.get("https://other.example.com/")
                assert 29 < caught.value.retry_in <= 30
    finally:
        one.close()
        two.close()


def test_sync_redis_down_the_layers_go_on_locally_then_share_again(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(redis_binary())
    server.start()
    # retry_after=0: ask Redis again on every call, so the test need not wait.
    one = RedisState(server.url, prefix=prefix, retry_after=0)
    two = RedisState(server.url, prefix=prefix, retry_after=0)
    layers: dict[str, Any] = {
        "retry": False,
        "circuit_breaker": BREAKER,
        "rate_limit": RateLimitPolicy(rate=10_000, wait=False),
    }
    caplog.set_level(logging.INFO, logger="httpx_resilience")
    try:
        with _client(one, **layers) as a, _client(two, **layers) as b:
            assert (a.get(URL)).status_code == 200
            server.stop()
            # Requests keep flowing on local state; nothing of Redis reaches the caller.
            for _ in range(10):
                assert (a.get(URL)).status_code == 200
                assert (b.get(URL)).status_code == 200
            assert one.health.down
            assert two.health.down
            warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(warnings) == 2  # once per state, not once per request
            server.start()  # the same port
            assert (a.get(f"{ORIGIN}/status/429")).status_code == 429
            assert not one.health.down
            with pytest.raises(RateLimitExceeded):
                b.get(URL)  # the pause one saw reaches two through Redis again
            assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        one.close()
        two.close()
        server.stop()


# unasync: generated end


def test_sync_a_stalled_redis_costs_a_timeout_not_a_failure(prefix: str) -> None:
    server = RedisServer(redis_binary())
    server.start()
    state = RedisState(server.url, prefix=prefix, timeout=0.2, retry_after=60)
    try:
        with _client(state, circuit_breaker=BREAKER, rate_limit=RateLimitPolicy(rate=100)) as c:
            assert c.get(URL).status_code == 200
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)  # alive, answering nothing
            try:
                for _ in range(5):
                    assert c.get(URL).status_code == 200
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert state.health.down
            # One timeout, then local state until retry_after: not one per request.
            assert state.health.failures == 1
    finally:
        state.close()
        server.stop()


def test_memory_state_keeps_each_transport_to_itself() -> None:
    # The control for the tests above: without a shared backend, the second
    # transport knows nothing of the first one's failures.
    clients = [_client(MemoryState(), retry=False, circuit_breaker=BREAKER) for _ in range(2)]
    failing = f"{ORIGIN}/status/503"
    with clients[0] as a, clients[1] as b:
        for _ in range(3):
            a.get(failing)
        b.get(failing)
        assert a.get(failing).status_code == 503  # its own 4th call: sent
        with pytest.raises(CircuitOpenError):
            a.get(failing)


# --- processes: the fleet itself ----------------------------------------------------


class Worker:
    """One process of the fleet: tests/fleet_worker.py."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet_worker", json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )

    def ready(self) -> None:
        assert self.line(timeout=60) == "ready"

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = 30) -> Any:
        return json.loads(self.line(timeout))

    def ask(self, command: str) -> Any:
        self.send(command)
        return self.answer()

    def line(self, timeout: float) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], timeout)
        if not readable:
            raise TimeoutError(f"the worker said nothing in {timeout} s")
        return stdout.readline().strip()

    def stop(self) -> None:
        try:
            self.send("quit")
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()


@contextmanager
def fleet(*configs: dict[str, Any]) -> Iterator[list[Worker]]:
    workers = [Worker(config) for config in configs]  # they start side by side
    try:
        for worker in workers:
            worker.ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def _config(style: str, redis: RedisServer | None, prefix: str, **layers: Any) -> dict[str, Any]:
    return {"style": style, "redis": redis.url if redis else None, "prefix": prefix, **layers}


BREAKER_CONFIG = {"failure_ratio": 0.5, "min_calls": 4, "break_duration": 60}


@pytest.mark.parametrize("styles", [("sync", "asyncio"), ("trio", "sync")])
def test_processes_sharing_a_breaker_all_stop_once_the_fleet_reaches_the_threshold(
    redis_server: RedisServer,
    servers: ServerThread,
    app: ScriptedApp,
    unique_path: str,
    prefix: str,
    styles: tuple[str, str],
) -> None:
    app.script(unique_path, [Reply(status=503)])
    url = servers.http_url + unique_path
    configs = [_config(style, redis_server, prefix, breaker=BREAKER_CONFIG) for style in styles]
    with fleet(*configs) as (a, b):
        assert a.ask(f"get {url} 3") == [503, 503, 503]  # 3 failures: under the threshold
        assert b.ask(f"get {url} 1") == [503]  # the fleet's 4th: the circuit opens
        # A never saw 4 failures itself: its first request after the trip fails fast.
        [refused] = a.ask(f"get {url} 1")
        assert refused["error"] == "CircuitOpenError"
        assert refused["retry_in"] > 50
        assert b.ask(f"get {url} 2") == [refused | {"retry_in": pytest.approx(60, abs=10)}] * 2
    assert len(app.received(unique_path)) == 4  # nothing after the trip reached the server


def test_unshared_processes_each_need_their_own_failures(
    servers: ServerThread, app: ScriptedApp, unique_path: str, prefix: str
) -> None:
    # The control: the same fleet without Redis.
    app.script(unique_path, [Reply(status=503)])
    url = servers.http_url + unique_path
    configs = [_config("sync", None, prefix, breaker=BREAKER_CONFIG) for _ in range(2)]
    with fleet(*configs) as (a, b):
        assert a.ask(f"get {url} 3") == [503, 503, 503]
        assert b.ask(f"get {url} 1") == [503]
        assert a.ask(f"get {url} 1") == [503]  # A's own 4th failure: sent
    assert len(app.received(unique_path)) == 5


def test_four_processes_sharing_50_a_second_send_at_most_150_plus_burst_in_3_s(
    redis_server: RedisServer, servers: ServerThread, app: ScriptedApp, prefix: str
) -> None:
    rate = {"rate": 50, "burst": 5}
    styles = ("sync", "asyncio", "trio", "sync")
    shared_path, alone_path = f"/t/{prefix}-shared", f"/t/{prefix}-alone"
    configs = [_config(style, redis_server, prefix, rate=rate) for style in styles]
    configs += [_config(style, None, prefix, rate=rate) for style in styles]
    with fleet(*configs) as workers:
        results = {}
        for path, group in ((shared_path, workers[:4]), (alone_path, workers[4:])):
            start_at = time.time() + 0.5  # the fleet starts together
            for worker in group:
                worker.send(f"run {servers.http_url}{path} 3 {start_at}")
            results[path] = [worker.answer(timeout=60) for worker in group]
    shared = sum(result["sent"] for result in results[shared_path])
    alone = sum(result["sent"] for result in results[alone_path])
    assert shared == len(app.received(shared_path))
    assert alone == len(app.received(alone_path))
    # GCRA's bound: the burst, then 50 a second over the time the fleet sent
    # in (3 s, and the last request's own time past it).
    spans = [result["span"] for result in results[shared_path]]
    seconds = max(last for _, last in spans) - min(first for first, _ in spans)
    print(f"shared: {shared} requests in {seconds:.3f} s; unshared: {alone}")
    assert 3 <= seconds < 4
    assert shared <= 5 + 50 * seconds + 1
    assert shared >= 130  # the quota was used, not starved
    assert alone > 2.5 * shared  # each unshared limiter lets its own 155 go
    for result in results[shared_path] + results[alone_path]:
        assert result["errors"] == {}  # waiting, never failing: 1/50 s is well within 5 s


def test_a_429_with_retry_after_seen_by_one_process_pauses_the_others(
    redis_server: RedisServer,
    servers: ServerThread,
    app: ScriptedApp,
    unique_path: str,
    prefix: str,
) -> None:
    app.script(unique_path, [Reply(status=429, headers={"Retry-After": "1"}), Reply()])
    url = servers.http_url + unique_path
    no_wait = {"wait": False}
    configs = [
        _config("asyncio", redis_server, prefix, rate={}),
        _config("sync", redis_server, prefix, rate=no_wait),
        _config("trio", None, prefix, rate=no_wait),  # the control: not sharing
    ]
    with fleet(*configs) as (a, b, alone):
        assert a.ask(f"get {url} 1") == [429]
        [refused] = b.ask(f"get {url} 1")
        assert refused["error"] == "RateLimitExceeded"
        assert 0 < refused["retry_in"] <= 1
        assert alone.ask(f"get {url} 1") == [200]  # it knows of no pause
        assert len(app.received(unique_path)) == 2
        # The pause ends when Retry-After said: bounded polling, not a timed assertion.
        for _ in range(30):
            answer = b.ask(f"get {url} 1")
            if answer == [200]:
                break
            threading.Event().wait(0.1)
        assert answer == [200]
