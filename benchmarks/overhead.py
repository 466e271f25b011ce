"""Section 1: per-request overhead in process, no network.

Every configuration sends GETs through ``httpx.AsyncClient(transport=X)``
whose innermost transport is ``FixedTransport``: a minimal
``AsyncBaseTransport`` returning a fixed 200 response whose body is a
one-chunk stream, as a real transport's is (not yet read, so the tracing
layer wraps it as it would on the network). What is left is the client,
the layers and the request building: the cost users pay per request.

The other clients get rows of their own, each with a bare row of its own
and the same fixed response from a transport of its kind: ``httpx.Client``
(``SyncFixedTransport``; ours, and httpx-retries + OpenTelemetry's sync
transport + a uuid4 hook), and, when httpx2 is installed,
``httpx2.AsyncClient`` and ``httpx2.Client`` (ours from
``httpx_resilience.httpx2``; the peers support httpx only). A row's ratio
is always to the bare row of its own client.

Configurations are interleaved (shuffled each round), each running for a
short slice of time, and every slice is paired with slices of bare httpx
right before and after it: on a shared machine the speed of the CPU
drifts by a third within seconds, and only a ratio taken between
neighbouring slices cancels that drift. The ratio reported is the median
of those paired ratios; "+µs" is (ratio - 1) x the median bare time. Time
is process CPU time; requests/s is from the wall clock.

    python benchmarks/overhead.py [--rounds 15] [--seconds 0.05] [--profile KEY] [--only KEY ...]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.util
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from _common import log, median, table
from _configs import Built, Sdk, otel_transport, ours_full, peers, uuid4_request_id

#: httpx2 needs Python 3.11 or newer; without it its rows are left out.
HTTPX2 = importlib.util.find_spec("httpx2") is not None

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


class _SyncBody(httpx.SyncByteStream):
    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        yield _BODY

    def close(self) -> None:
        pass


class SyncFixedTransport(httpx.BaseTransport):
    """``FixedTransport`` for ``httpx.Client``: the same response, body and extensions."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers=_HEADERS, stream=_SyncBody(), extensions={"http_version": b"HTTP/1.1"}
        )


@functools.cache
def httpx2_fixed_transports() -> tuple[type, type]:
    """``FixedTransport`` and ``SyncFixedTransport`` for httpx2, on its own base
    classes (imported only when httpx2 rows run)."""
    import httpx2

    class Body2(httpx2.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield _BODY

        async def aclose(self) -> None:
            pass

    class SyncBody2(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield _BODY

        def close(self) -> None:
            pass

    class FixedTransport2(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(
                200, headers=_HEADERS, stream=Body2(), extensions={"http_version": b"HTTP/1.1"}
            )

    class SyncFixedTransport2(httpx2.BaseTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(
                200,
                headers=_HEADERS,
                stream=SyncBody2(),
                extensions={"http_version": b"HTTP/1.1"},
            )

    return FixedTransport2, SyncFixedTransport2


@dataclass(frozen=True)
class Kind:
    """A client of this section: its rows are paired with its own bare row."""

    title: str  # "httpx.AsyncClient", ...
    package: str  # "httpx" or "httpx2"
    sync: bool

    def fixed(self) -> Any:
        if self.package == "httpx":
            return SyncFixedTransport() if self.sync else FixedTransport()
        async_cls, sync_cls = httpx2_fixed_transports()
        return sync_cls() if self.sync else async_cls()

    def client(self, built: Built) -> Any:
        module = importlib.import_module(self.package)
        cls = module.Client if self.sync else module.AsyncClient
        return cls(transport=built.transport, event_hooks=built.hooks)


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

#: The bare row of each client (the rows above are httpx.AsyncClient's).
KINDS: dict[str, Kind] = {
    "bare": Kind("httpx.AsyncClient", "httpx", sync=False),
    "sync_bare": Kind("httpx.Client", "httpx", sync=True),
    "httpx2_bare": Kind("httpx2.AsyncClient", "httpx2", sync=False),
    "httpx2_sync_bare": Kind("httpx2.Client", "httpx2", sync=True),
}

#: The rows of the other clients, each group's bare row first.
OTHER_CLIENTS: list[list[tuple[str, str, Callable[[Any], Built]]]] = [
    [
        ("sync_bare", "bare httpx.Client", Built),
        (
            "sync_full_noop",
            "httpx.Client, ours: full stack, no-op tracing",
            lambda inner: ours_full(inner, None),
        ),
        (
            "sync_full_sdk",
            "httpx.Client, ours: full stack, SDK",
            lambda inner: ours_full(inner, Sdk.create()),
        ),
        (
            "sync_peers_noop",
            "httpx.Client, peers: httpx-retries + OTel sync + uuid4, no-op",
            lambda inner: peers(inner, None, sync=True),
        ),
        (
            "sync_peers_sdk",
            "httpx.Client, peers: httpx-retries + OTel sync + uuid4, SDK",
            lambda inner: peers(inner, Sdk.create(), sync=True),
        ),
    ]
]
if HTTPX2:
    OTHER_CLIENTS += [
        [
            ("httpx2_bare", "bare httpx2.AsyncClient", Built),
            (
                "httpx2_full_noop",
                "httpx2.AsyncClient, ours (httpx_resilience.httpx2): full stack, no-op tracing",
                lambda inner: ours_full(inner, None, "httpx_resilience.httpx2"),
            ),
        ],
        [
            ("httpx2_sync_bare", "bare httpx2.Client", Built),
            (
                "httpx2_sync_full_noop",
                "httpx2.Client, ours (httpx_resilience.httpx2): full stack, no-op tracing",
                lambda inner: ours_full(inner, None, "httpx_resilience.httpx2"),
            ),
        ],
    ]

#: Each configuration's bare row, when it is not "bare" (httpx.AsyncClient).
BARE_OF: dict[str, str] = {}
for _group in OTHER_CLIENTS:
    CONFIGS += _group
    BARE_OF.update((key, _group[0][0]) for key, _, _ in _group)


def bare_of(key: str) -> str:
    """The bare row of ``key``'s client, the one its ratio is taken to."""
    return BARE_OF.get(key, "bare")


def kind_of(key: str) -> Kind:
    return KINDS[bare_of(key)]


def make_client(key: str) -> tuple[Any, Built]:
    """A client of ``key``'s kind (httpx or httpx2, async or sync) around its configuration."""
    builder = {k: b for k, _, b in CONFIGS}[key]
    kind = kind_of(key)
    built = builder(kind.fixed())
    return kind.client(built), built


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


def timed_slice_sync(client: Any, seconds: float, max_requests: int) -> tuple[int, float, float]:
    """``timed_slice`` for a sync client."""
    get = client.get
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    deadline = wall0 + seconds
    while n < max_requests:
        for _ in range(32):
            response = get(URL)
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
    the mean of the bare slices just before and just after it.

    Each client (httpx or httpx2, async or sync) has its bare row; a round takes
    the clients in a random order, and each client's configurations as above,
    paired with that client's bare slices. ``only``: these keys (and their bare
    rows); all when ``None``."""
    wanted = None if only is None else {*only, *(bare_of(k) for k in only)}
    keys = [k for k, _, _ in CONFIGS if wanted is None or k in wanted]
    labels = {k: label for k, label, _ in CONFIGS}
    clients = {k: make_client(k) for k in keys}
    for key, (client, built) in clients.items():
        for _ in range(300):  # warm up: imports, caches, first-call paths
            if kind_of(key).sync:
                client.get(URL)
            else:
                await client.get(URL)
        if built.sdk:
            built.sdk.clear()
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key not in KINDS:
            groups.setdefault(bare_of(key), []).append(key)
    cpu_us: dict[str, list[float]] = {k: [] for k in keys}
    rps: dict[str, list[float]] = {k: [] for k in keys}
    ratios: dict[str, list[float]] = {k: [] for k in keys if k not in KINDS}
    rng = random.Random(7)

    async def measure(key: str) -> float:
        client, built = clients[key]
        gc.collect()
        if kind_of(key).sync:
            n, cpu, wall = timed_slice_sync(client, seconds, 200_000)
        else:
            n, cpu, wall = await timed_slice(client, seconds, 200_000)
        if built.sdk:
            built.sdk.clear()
        us = cpu / n * 1e6
        cpu_us[key].append(us)
        rps[key].append(n / wall)
        return us

    for round_number in range(rounds):
        bares = list(groups)
        rng.shuffle(bares)
        for bare_key in bares:
            order = groups[bare_key][:]
            rng.shuffle(order)
            before = await measure(bare_key)
            for key in order:
                us = await measure(key)
                after = await measure(bare_key)
                ratios[key].append(us / ((before + after) / 2))
                before = after
        if (round_number + 1) % 5 == 0 or round_number + 1 == rounds:
            log(f"  overhead: round {round_number + 1}/{rounds}")
    for key, (client, _) in clients.items():
        if kind_of(key).sync:
            client.close()
        else:
            await client.aclose()

    rows = []
    for key in keys:
        ratio = 1.0 if key in KINDS else median(ratios[key])
        rows.append(
            {
                "key": key,
                "label": labels[key],
                "client": kind_of(key).title,
                "bare_key": bare_of(key),
                "us_per_request": median(cpu_us[key]),
                "requests_per_s": median(rps[key]),
                "ratio": ratio,
                "added_us": (ratio - 1.0) * median(cpu_us[bare_of(key)]),
                "ratios": [round(r, 4) for r in ratios.get(key, [])],
            }
        )
    return {
        "rounds": rounds,
        "seconds_per_slice": seconds,
        "url": URL,
        "bare_us_spread": {
            k: [min(cpu_us[k]), max(cpu_us[k])] for k in keys if k in KINDS and cpu_us[k]
        },
        "rows": rows,
    }


def render(result: dict[str, Any]) -> str:
    """One table per client, httpx.AsyncClient's first; ratios to that client's bare row."""
    by_client: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        by_client.setdefault(row.get("client", "httpx.AsyncClient"), []).append(row)
    out = []
    for title, rows in by_client.items():
        if out:
            out.append(f"\n`{title}`: ratios to bare `{title}`, paired the same way\n")
        out.append(
            table(
                [
                    "configuration",
                    "µs/req (CPU)",
                    "req/s (wall)",
                    "x bare (paired)",
                    "+µs vs bare",
                ],
                [
                    [
                        r["label"],
                        r["us_per_request"],
                        r["requests_per_s"],
                        r["ratio"],
                        r["added_us"],
                    ]
                    for r in rows
                ],
            )
        )
    return "\n".join(out)


def profiled(key: str, requests: int, warmup: int = 200) -> Any:
    """A ``cProfile.Profile`` of ``requests`` GETs through configuration ``key``, warmed up."""
    import cProfile

    if kind_of(key).sync:
        client, _built = make_client(key)
        for _ in range(warmup):
            client.get(URL)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            client.get(URL)
        profiler.disable()
        client.close()
        return profiler

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
    parser.add_argument(
        "--only",
        metavar="KEY",
        action="append",
        choices=[k for k, _, _ in CONFIGS],
        help="time only these configurations (and their clients' bare rows); repeatable",
    )
    args = parser.parse_args()
    if args.profile:
        print(profile(args.profile))
        return
    only = set(args.only) if args.only else None
    print(render(asyncio.run(run(args.rounds, args.seconds, only))))


if __name__ == "__main__":
    main()
