"""One process of a fleet for tests/test_fleet.py: a client driven over stdin, answering on stdout.

    python -m tests.fleet_worker '{"style": "trio", "redis": "redis://...", ...}'

It builds ``resilient_transport(...)`` from the JSON configuration (the
flavour is the one under test: HTTPX_RESILIENCE_FLAVOUR), prints ``ready``,
then runs one command per line of stdin and prints one JSON line per
command:

- ``get URL N``: N GETs one after the other; the outcomes: a status, or the
  exception's class name (with ``retry_in`` for our own errors);
- ``run URL SECONDS AT``: from the wall-clock time AT (so that the fleet
  starts together), GETs one after the other for SECONDS; how many got an
  answer, the errors by class, and the wall-clock time before the first
  send and after the last answer;
- ``quit``.

The client is sync or async (``style``: sync, asyncio, trio).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio
import anyio.to_thread

from .flavour import (
    CircuitBreakerPolicy,
    RateLimitPolicy,
    RedisState,
    httpx,
    resilient_transport,
)


def build(config: dict[str, Any]) -> tuple[Any, RedisState | None]:
    state = None
    if config.get("redis"):
        state = RedisState(config["redis"], prefix=config["prefix"], retry_after=0.2)
    breaker = config.get("breaker")
    rate = config.get("rate")
    transport = resilient_transport(
        retry=False,
        circuit_breaker=False if breaker is None else CircuitBreakerPolicy(**breaker),
        rate_limit=False if rate is None else RateLimitPolicy(**rate),
        state=state,
        tracing=False,
        http2=False,
    )
    return transport, state


def outcome(exc: Exception) -> dict[str, Any]:
    result: dict[str, Any] = {"error": type(exc).__name__}
    if hasattr(exc, "retry_in"):
        result["retry_in"] = exc.retry_in
    return result


def run_sync(config: dict[str, Any]) -> None:
    transport, state = build(config)
    with httpx.Client(transport=transport, timeout=10) as client:
        print("ready", flush=True)
        for line in sys.stdin:
            command, *args = line.split()
            if command == "quit":
                break
            if command == "get":
                results: list[Any] = []
                for _ in range(int(args[1])):
                    try:
                        results.append(client.get(args[0]).status_code)
                    except httpx.TransportError as exc:  # noqa: PERF203 - what is measured
                        results.append(outcome(exc))
                print(json.dumps(results), flush=True)
            elif command == "run":
                time.sleep(max(0.0, float(args[2]) - time.time()))
                first, end = time.time(), time.monotonic() + float(args[1])
                sent, errors = 0, {}
                while time.monotonic() < end:
                    try:
                        client.get(args[0])
                        sent += 1
                    except httpx.TransportError as exc:  # noqa: PERF203 - what is measured
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                last = time.time()
                print(
                    json.dumps({"sent": sent, "errors": errors, "span": [first, last]}), flush=True
                )
    if state is not None:
        state.close()


async def run_async(config: dict[str, Any]) -> None:
    transport, state = build(config)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        print("ready", flush=True)
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            command, *args = line.split() or ["quit"]
            if command == "quit":
                break
            if command == "get":
                results: list[Any] = []
                for _ in range(int(args[1])):
                    try:
                        results.append((await client.get(args[0])).status_code)
                    except httpx.TransportError as exc:  # noqa: PERF203 - what is measured
                        results.append(outcome(exc))
                print(json.dumps(results), flush=True)
            elif command == "run":
                await anyio.sleep(max(0.0, float(args[2]) - time.time()))
                first, end = time.time(), time.monotonic() + float(args[1])
                sent, errors = 0, {}
                while time.monotonic() < end:
                    try:
                        await client.get(args[0])
                        sent += 1
                    except httpx.TransportError as exc:  # noqa: PERF203 - what is measured
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                last = time.time()
                print(
                    json.dumps({"sent": sent, "errors": errors, "span": [first, last]}), flush=True
                )
    if state is not None:
        await state.aclose()


def main() -> None:
    config = json.loads(sys.argv[1])
    if config["style"] == "sync":
        run_sync(config)
    else:
        anyio.run(run_async, config, backend=config["style"])


if __name__ == "__main__":
    main()
