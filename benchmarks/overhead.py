"""Section 1: per-request overhead in process, no network.

Every configuration sends GETs through ``httpx.AsyncClient(transport=X)``
whose innermost transport is ``FixedTransport``: a minimal
``AsyncBaseTransport`` returning a fixed 200 response whose body is a
one-chunk stream, as a real transport's is (not yet read, so the tracing
layer wraps it as it would on the network). What is left is the client,
the layers and the request building: the cost users pay per request.

Configurations are interleaved (shuffled each round), each running for a
short slice of time, and every slice is paired with slices of bare httpx
right before and after it: on a shared machine the speed of the CPU
drifts by a third within seconds, and only a ratio taken between
neighbouring slices cancels that drift. The ratio reported is the median
of those paired ratios; "+µs" is (ratio - 1) x the median bare time. Time
is process CPU time; requests/s is from the wall clock.

    python benchmarks/overhead.py [--rounds 15] [--seconds 0.05] [--profile KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from _common import log, median, table
from _configs import Built, Sdk, otel_transport, ours_full, peers, uuid4_request_id

URL = "https://api.example.com/v1/items?page=2"
_BODY = b'{"id": 1, "name": "item"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"25")]


class _Body(httpx.AsyncByteStream):
    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _BODY

    async def aclose(self) -> None:
        pass


class FixedTransport(httpx.AsyncBaseTransport):
    """The innermost transport: a fixed 200 with a streamed body, no I/O."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers=_HEADERS, stream=_Body(), extensions={"http_version": b"HTTP/1.1"}
        )


def _layer(name: str, **options: Any) -> Callable[[httpx.AsyncBaseTransport], Built]:
    def build(inner: httpx.AsyncBaseTransport) -> Built:
        import httpx_resilience as hr

        if name == "TracingTransport" and options.get("sdk"):
            sdk = Sdk.create()
            return Built(
                hr.TracingTransport(
                    inner,
                    tracer_provider=sdk.tracer_provider,
                    meter_provider=sdk.meter_provider,
                ),
                sdk=sdk,
            )
        return Built(getattr(hr, name)(inner))

    return build


def _httpx_retries(inner: httpx.AsyncBaseTransport) -> Built:
    from httpx_retries import RetryTransport

    return Built(RetryTransport(transport=inner))


def _otel(sdk: bool) -> Callable[[httpx.AsyncBaseTransport], Built]:
    def build(inner: httpx.AsyncBaseTransport) -> Built:
        made = Sdk.create() if sdk else None
        return Built(otel_transport(inner, made), sdk=made)

    return build


#: key, label, builder. "bare" must come first.
CONFIGS: list[tuple[str, str, Callable[[httpx.AsyncBaseTransport], Built]]] = [
    ("bare", "bare httpx", Built),
    ("request_id", "ours: RequestIdTransport", _layer("RequestIdTransport")),
    ("idempotency", "ours: IdempotencyKeyTransport (GET)", _layer("IdempotencyKeyTransport")),
    ("retry", "ours: RetryTransport", _layer("RetryTransport")),
    ("tracing_noop", "ours: TracingTransport, no-op", _layer("TracingTransport")),
    ("tracing_sdk", "ours: TracingTransport, SDK", _layer("TracingTransport", sdk=True)),
    ("full_noop", "ours: full stack, no-op tracing", lambda inner: ours_full(inner, None)),
    ("full_sdk", "ours: full stack, SDK", lambda inner: ours_full(inner, Sdk.create())),
    ("httpx_retries", "peer: httpx-retries RetryTransport", _httpx_retries),
    ("otel_noop", "peer: OTel AsyncOpenTelemetryTransport, no-op", _otel(False)),
    ("otel_sdk", "peer: OTel AsyncOpenTelemetryTransport, SDK", _otel(True)),
    (
        "uuid4_hook",
        "peer: uuid4 request-ID event hook",
        lambda inner: Built(inner, {"request": [uuid4_request_id]}),
    ),
    ("peers_noop", "peers: httpx-retries + OTel + uuid4, no-op", lambda inner: peers(inner, None)),
    (
        "peers_sdk",
        "peers: httpx-retries + OTel + uuid4, SDK",
        lambda inner: peers(inner, Sdk.create()),
    ),
]


def make_client(key: str) -> tuple[httpx.AsyncClient, Built]:
    builder = {k: b for k, _, b in CONFIGS}[key]
    built = builder(FixedTransport())
    return httpx.AsyncClient(transport=built.transport, event_hooks=built.hooks), built


async def timed_slice(
    client: httpx.AsyncClient, seconds: float, max_requests: int
) -> tuple[int, float, float]:
    """Send GETs for about ``seconds``; (requests, CPU seconds, wall seconds)."""
    get = client.get
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    deadline = wall0 + seconds
    while n < max_requests:
        for _ in range(32):
            response = await get(URL)
        n += 32
        if time.perf_counter() >= deadline:
            break
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if response.status_code != 200:
        raise RuntimeError(f"unexpected status {response.status_code}")
    return n, cpu, wall


async def run(rounds: int, seconds: float, only: set[str] | None = None) -> dict[str, Any]:
    """Each round: every configuration once, in a new random order, each slice
    preceded by a slice of bare httpx; a configuration's ratio is its time over
    the mean of the bare slices just before and just after it."""
    keys = [k for k, _, _ in CONFIGS if only is None or k in only or k == "bare"]
    labels = {k: label for k, label, _ in CONFIGS}
    clients = {k: make_client(k) for k in keys}
    for client, built in clients.values():
        for _ in range(300):  # warm up: imports, caches, first-call paths
            await client.get(URL)
        if built.sdk:
            built.sdk.clear()
    others = [k for k in keys if k != "bare"]
    cpu_us: dict[str, list[float]] = {k: [] for k in keys}
    rps: dict[str, list[float]] = {k: [] for k in keys}
    ratios: dict[str, list[float]] = {k: [] for k in others}
    rng = random.Random(7)

    async def measure(key: str) -> float:
        client, built = clients[key]
        gc.collect()
        n, cpu, wall = await timed_slice(client, seconds, 200_000)
        if built.sdk:
            built.sdk.clear()
        us = cpu / n * 1e6
        cpu_us[key].append(us)
        rps[key].append(n / wall)
        return us

    for round_number in range(rounds):
        order = others[:]
        rng.shuffle(order)
        before = await measure("bare")
        for key in order:
            us = await measure(key)
            after = await measure("bare")
            ratios[key].append(us / ((before + after) / 2))
            before = after
        if (round_number + 1) % 5 == 0 or round_number + 1 == rounds:
            log(f"  overhead: round {round_number + 1}/{rounds}")
    for client, _ in clients.values():
        await client.aclose()

    bare = median(cpu_us["bare"])
    rows = []
    for key in keys:
        ratio = 1.0 if key == "bare" else median(ratios[key])
        rows.append(
            {
                "key": key,
                "label": labels[key],
                "us_per_request": median(cpu_us[key]),
                "requests_per_s": median(rps[key]),
                "ratio": ratio,
                "added_us": (ratio - 1.0) * bare,
                "ratios": [round(r, 4) for r in ratios.get(key, [])],
            }
        )
    return {
        "rounds": rounds,
        "seconds_per_slice": seconds,
        "url": URL,
        "bare_us_spread": [min(cpu_us["bare"]), max(cpu_us["bare"])],
        "rows": rows,
    }


def render(result: dict[str, Any]) -> str:
    return table(
        ["configuration", "µs/req (CPU)", "req/s (wall)", "x bare (paired)", "+µs vs bare"],
        [
            [r["label"], r["us_per_request"], r["requests_per_s"], r["ratio"], r["added_us"]]
            for r in result["rows"]
        ],
    )


def profiled(key: str, requests: int, warmup: int = 200) -> Any:
    """A ``cProfile.Profile`` of ``requests`` GETs through configuration ``key``, warmed up."""
    import cProfile

    async def go() -> cProfile.Profile:
        client, _built = make_client(key)
        for _ in range(warmup):
            await client.get(URL)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            await client.get(URL)
        profiler.disable()
        await client.aclose()
        return profiler

    return asyncio.run(go())


def profile(key: str, requests: int = 20_000, top: int = 30) -> str:
    """cProfile of ``requests`` GETs through configuration ``key``; the hottest functions."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiled(key, requests), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.05)
    parser.add_argument("--profile", metavar="KEY", help="cProfile one configuration instead")
    args = parser.parse_args()
    if args.profile:
        print(profile(args.profile))
        return
    print(render(asyncio.run(run(args.rounds, args.seconds))))


if __name__ == "__main__":
    main()
