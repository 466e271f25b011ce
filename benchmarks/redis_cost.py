"""What shared state costs per request: each stateful layer on MemoryState and on RedisState.

In process, as ``overhead.py`` measures: ``httpx.AsyncClient`` (or
``httpx.Client``) over a transport that answers a fixed 200 with a streamed
body, no network; only Redis is real, a redis-server on 127.0.0.1 started
here (``--redis URL`` to use one of your own). For each layer (circuit
breaker, retry budget, rate limiter) and for the three together:

- µs per request, wall time (Redis is I/O: its round trip is what the caller
  waits), median of slices paired with bare httpx right before and after;
- Redis calls per request, from ``INFO commandstats`` (scripts run with
  EVALSHA; a call that has to load its script counts twice): the happy path
  makes at most one per layer.

    python benchmarks/redis_cost.py                 # about a minute
    python benchmarks/redis_cost.py --requests 500 --slices 5
    python benchmarks/redis_cost.py --memory-only   # no Redis: runs on a checkout
                                                    # without RedisState, for "before"

Only 127.0.0.1 is used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

import httpx_resilience as hr

URL = "http://127.0.0.1:1/v1/things"


class _Body(httpx.AsyncByteStream, httpx.SyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"ok"

    def __iter__(self) -> Iterator[bytes]:
        yield b"ok"


class Fixed(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """A fixed 200 with a streamed body, no I/O, for both call styles."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Body())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Body())


def configurations(state: Any) -> dict[str, Callable[[], Any]]:
    """Name -> a function building the transport; ``state`` None: the layers' defaults."""
    extra = {} if state is None else {"state": state}
    # Never waits: a rate far above what one client sends.
    rate = (
        hr.RateLimitPolicy(rate=1_000_000, burst=1_000_000)
        if hasattr(hr, "RateLimitPolicy")
        else None
    )
    configs: dict[str, Callable[[], Any]] = {
        "breaker": lambda: hr.CircuitBreakerTransport(Fixed(), **extra),
        "retry + budget": lambda: hr.RetryTransport(Fixed(), **extra),
    }
    if rate is not None:
        configs["rate limit"] = lambda: hr.RateLimitTransport(Fixed(), rate, **extra)
        configs["all three"] = lambda: hr.RetryTransport(
            hr.CircuitBreakerTransport(hr.RateLimitTransport(Fixed(), rate, **extra), **extra),
            **extra,
        )
    return configs


async def _async_run(transport: Any, requests: int) -> float:
    async with httpx.AsyncClient(transport=transport) as client:
        start = time.perf_counter()
        for _ in range(requests):
            response = await client.get(URL)
            assert response.status_code == 200
        return (time.perf_counter() - start) / requests * 1e6


def _sync_run(transport: Any, requests: int) -> float:
    with httpx.Client(transport=transport) as client:
        start = time.perf_counter()
        for _ in range(requests):
            response = client.get(URL)
            assert response.status_code == 200
        return (time.perf_counter() - start) / requests * 1e6


def measure(
    style: str, build: Callable[[], Any], requests: int, slices: int
) -> tuple[float, float]:
    """(median µs/request, median added µs vs bare), slices paired with bare before and after."""
    run: Callable[[Any, int], float]
    if style == "sync":
        run = _sync_run
    else:
        loop = asyncio.new_event_loop()

        def run(transport: Any, n: int) -> float:
            return loop.run_until_complete(_async_run(transport, n))

    transport = build()
    run(transport, min(200, requests))  # warm-up: scripts loaded, connections open
    times, added = [], []
    for _ in range(slices):
        before = run(Fixed(), requests)
        mine = run(transport, requests)
        after = run(Fixed(), requests)
        times.append(mine)
        added.append(mine - (before + after) / 2)
    if style != "sync":
        loop.close()
    return statistics.median(times), statistics.median(added)


def evalsha_calls(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval")
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis() -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(
            "redis-server is not installed (apt-get install redis-server), or pass --redis URL"
        )
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", process
        except OSError:  # noqa: PERF203 - not yet listening
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not answer PING")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per slice")
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--redis", help="a Redis URL (default: start a redis-server here)")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()

    backends: list[tuple[str, Any, str | None]] = [("memory (default)", None, None)]
    process = None
    if not args.memory_only:
        url = args.redis
        if url is None:
            url, process = _start_redis()
        backends.append(("redis", hr.RedisState(url, prefix="bench"), url))
    rows = []
    try:
        for style in ("asyncio", "sync"):
            for backend, state, url in backends:
                for name, build in configurations(state).items():
                    calls_before = evalsha_calls(url) if url else 0
                    median, added = measure(style, build, args.requests, args.slices)
                    calls = 0.0
                    if url:
                        # Every request of the measured slices and the warm-up.
                        sent = args.requests * args.slices + min(200, args.requests)
                        calls = (evalsha_calls(url) - calls_before) / sent
                    rows.append((style, backend, name, median, added, calls))
                    print(
                        f"{style:8} {backend:17} {name:15} {median:8.1f} µs/req  {added:+8.1f} µs vs bare  {calls:4.2f} Redis calls/req",
                        flush=True,
                    )
    finally:
        for _, state, _ in backends:
            if state is not None:
                state.close()
        if process is not None:
            process.kill()
            process.wait()
    print()
    print(
        "| client | state | layers | µs/request | added vs bare (paired) | Redis calls/request |"
    )
    print("|---|---|---|---:|---:|---:|")
    for style, backend, name, median, added, calls in rows:
        print(f"| {style} | {backend} | {name} | {median:.1f} | {added:+.1f} | {calls:.2f} |")


if __name__ == "__main__":
    main()
