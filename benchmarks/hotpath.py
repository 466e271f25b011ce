"""Where the per-request time of a configuration goes (in process, no network).

Two views, both against bare httpx in the same process:

``calls``: cProfile of N GETs per configuration, as function calls per
request grouped by package (exact, so immune to a noisy machine) and as
the functions of ours with the most time per request (profiled time is
inflated by cProfile itself: read it for proportions).

``steps``: each piece of our layers' happy path timed on its own, the
best of several repeats of a tight loop, in µs per call: what a fix
would save.

``instructions``: CPU instructions per request counted by valgrind
(cachegrind, user space), for bare httpx, our configurations and the full
stack with one layer switched off at a time (public options of
``resilient_transport``). Deterministic: on a shared machine, where timed
ratios wander by 5-10% from one minute to the next, this is the figure
that attributes the cost. Each configuration runs twice (0 and N
requests after the same warm-up) and the difference is divided by N.

    python benchmarks/hotpath.py                      # calls and steps, for full_noop
    python benchmarks/hotpath.py calls full_noop full_sdk
    python benchmarks/hotpath.py steps
    python benchmarks/hotpath.py instructions [KEY ...]
    python benchmarks/hotpath.py pieces               # each piece of the happy path, counted
    python benchmarks/hotpath.py loopback-instructions  # client instructions/request on loopback
    python benchmarks/hotpath.py loopback-instructions h1 1  # one cell (h1/h2, 1/50 tasks)
"""

from __future__ import annotations

import asyncio
import collections
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import overhead
from _common import table

URL = overhead.URL


def _owner(filename: str) -> str:
    for marker, name in (
        ("httpx_resilience", "httpx_resilience"),
        ("opentelemetry", "opentelemetry"),
        ("httpx_retries", "httpx_retries"),
        ("site-packages/httpx/", "httpx"),
        ("tenacity", "tenacity"),
        ("asyncio", "asyncio"),
        ("benchmarks", "benchmark harness"),
    ):
        if marker in filename:
            return name
    if filename.startswith(("~", "<")):
        return "builtins"
    return "stdlib/other"


def profile_calls(
    key: str, requests: int
) -> tuple[dict[str, tuple[float, float]], list[tuple[str, float, float]]]:
    """Per request: {owner: (calls, profiled µs)}, and our hottest functions."""

    stats = pstats.Stats(overhead.profiled(key, requests, warmup=300))
    by_owner: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    ours = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        owner = _owner(filename)
        by_owner[owner][0] += ncalls / requests
        by_owner[owner][1] += tottime / requests * 1e6
        if owner == "httpx_resilience":
            short = filename.rsplit("/", 1)[-1]
            ours.append(
                (
                    f"{short}:{line}({func})",
                    tottime / requests * 1e6,
                    cumtime / requests * 1e6,
                    ncalls / requests,
                )
            )
    ours.sort(key=lambda x: -x[1])
    return {k: (v[0], v[1]) for k, v in by_owner.items()}, ours


def calls_report(keys: list[str], requests: int = 5000) -> str:
    profiles = {key: profile_calls(key, requests) for key in ["bare", *keys]}
    owners = sorted(
        {o for p, _ in profiles.values() for o in p},
        key=lambda o: -profiles[keys[0]][0].get(o, (0, 0))[0],
    )
    rows = []
    for owner in owners:
        row: list[Any] = [owner]
        for key in ["bare", *keys]:
            calls, us = profiles[key][0].get(owner, (0.0, 0.0))
            row += [calls, us]
        rows.append(row)
    totals: list[Any] = ["total"]
    for key in ["bare", *keys]:
        totals += [
            sum(c for c, _ in profiles[key][0].values()),
            sum(u for _, u in profiles[key][0].values()),
        ]
    rows.append(totals)
    headers = ["package"]
    for key in ["bare", *keys]:
        headers += [f"{key} calls/req", f"{key} prof. µs/req"]
    out = [
        "Function calls per request by package (exact), and profiled time (inflated by cProfile):",
        table(headers, rows),
    ]
    for key in keys:
        out.append(f"\nOur functions in {key}, by own time per request (profiled µs):")
        out.append(
            table(
                ["function", "own µs/req", "cumulative µs/req", "calls/req"],
                [list(x) for x in profiles[key][1][:15]],
            )
        )
    return "\n".join(out)


# -- steps -------------------------------------------------------------------------


def best_us(fn: Callable[[], Any], n: int = 20_000, repeat: int = 7) -> float:
    """Best per-call µs of a synchronous ``fn`` over ``repeat`` loops of ``n``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


async def best_us_async(
    fn: Callable[[], Awaitable[Any]], n: int = 10_000, repeat: int = 7
) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


async def steps() -> list[tuple[str, Any]]:
    """Each piece of the no-op full stack's happy path, best µs per call."""
    import os

    import httpx_resilience as hr

    rows: list[tuple[str, Any]] = []
    fixed = overhead.FixedTransport()

    def request() -> httpx.Request:
        return httpx.Request("GET", URL, headers={"Host": "api.example.com"})

    async def through(transport: httpx.AsyncBaseTransport) -> None:
        response = await transport.handle_async_request(request())
        await response.aread()
        await response.aclose()

    # Whole requests and whole layers (request building included in each).
    client = httpx.AsyncClient(transport=fixed)
    rows.append(
        (
            "client.get() through bare httpx (reference)",
            await best_us_async(lambda: client.get(URL)),
        )
    )
    base = await best_us_async(lambda: through(fixed))
    rows.append(("build Request + innermost transport + read body (layer baseline)", base))
    for name, layer in (
        ("RequestIdTransport", hr.RequestIdTransport(fixed)),
        ("RetryTransport", hr.RetryTransport(fixed)),
        ("TracingTransport (no-op)", hr.TracingTransport(fixed)),
        ("full stack (no-op)", hr.resilient_transport(base=fixed)),
        ("Layer (pass-through)", hr.Layer(fixed)),
    ):
        us = await best_us_async(lambda layer=layer: through(layer))
        rows.append((f"+ {name}", us - base))

    # Pieces, each on its own.
    def attempt(label: str, fn: Callable[[], Any]) -> None:
        try:
            rows.append((label, best_us(fn)))
        except Exception as exc:  # internals move; report instead of failing
            rows.append((label, f"n/a ({type(exc).__name__}: {exc})"))

    req = request()
    req.headers["X-Request-ID"] = "abc"
    fresh = request()
    attempt(
        "request.headers.get('X-Request-ID'), absent", lambda: fresh.headers.get("X-Request-ID")
    )
    attempt(
        "request.headers.get('X-Request-ID'), present", lambda: req.headers.get("X-Request-ID")
    )
    attempt("'X-Request-ID' in request.headers, absent", lambda: "X-Request-ID" in fresh.headers)
    attempt("new_request_id() (os.urandom(16).hex())", hr.new_request_id)
    attempt("uuid.uuid4().hex", lambda: __import__("uuid").uuid4().hex)
    attempt("os.urandom(16).hex()", lambda: os.urandom(16).hex())

    def set_header() -> None:
        r = request()
        r.headers["X-Request-ID"] = "0123456789abcdef0123456789abcdef"

    build = best_us(request)
    rows.append(("httpx.Request(...) itself (subtracted below)", build))
    try:
        rows.append(("request.headers['X-Request-ID'] = value", best_us(set_header) - build))
    except Exception as exc:
        rows.append(("request.headers['X-Request-ID'] = value", f"n/a ({exc})"))
    attempt("request.url.host", lambda: req.url.host)
    attempt("request.url.port", lambda: req.url.port)
    attempt("request.url.scheme", lambda: req.url.scheme)
    attempt("time.monotonic()", time.monotonic)
    attempt("time.perf_counter()", time.perf_counter)
    try:
        from httpx_resilience._options import request_options

        attempt("_options.request_options(request)", lambda: request_options(req))
    except ImportError as exc:
        rows.append(("_options.request_options(request)", f"n/a ({exc})"))
    try:
        from httpx_resilience._origin import origin_of

        attempt("_budget.origin_of(request.url)", lambda: origin_of(req.url))
        retry = hr.RetryTransport(fixed)
        policy = retry.policy
        attempt(
            "RetryTransport._lend_budget(request, policy)", lambda: retry._lend_budget(req, policy)
        )
    except (ImportError, AttributeError) as exc:
        rows.append(("retry budget", f"n/a ({exc})"))
    attempt("is_replayable(request)", lambda: hr.is_replayable(req))

    # The tracing layer's no-op path.
    try:
        from httpx_resilience import _otel_context as oc
        from httpx_resilience import _tracing

        tracing = hr.TracingTransport(fixed)
        tracer = tracing._tracer
        attempt("otel context.get_current()", oc.get_current)
        ctx = oc.get_current()
        attempt(
            "tracer.start_span('GET', ctx, CLIENT) (global no-op)",
            lambda: tracer.start_span("GET", ctx, oc.SpanKind.CLIENT),
        )
        span = tracer.start_span("GET", ctx, oc.SpanKind.CLIENT)
        attempt("span.is_recording()", span.is_recording)
        attempt("span.end()", span.end)
        attempt("_Attempts()", _tracing._Attempts)
        # What the layer builds once per attempt: the span's and the duration's attributes.
        common = {
            "http.request.method": "GET",
            "server.address": "api.example.com",
            "server.port": 443,
        }
        attempt(
            "_Attempt(histogram, span, None, common)",
            lambda: _tracing._Attempt(tracing._duration, span, None, common),
        )
        response = httpx.Response(200, extensions={"http_version": b"HTTP/1.1"})
        a = _tracing._Attempt(tracing._duration, span, None, common)
        attempt("_Attempt.received(response) (not recording)", lambda: a.received(response))
        attempt("_Attempt._metric_attributes(None)", lambda: a._metric_attributes(None))
        attrs = a._metric_attributes(None)
        attempt(
            "histogram.record(x, attributes) (global no-op meter)",
            lambda: tracing._duration.record(0.001, attrs),
        )

        def end() -> None:
            b = _tracing._Attempt(tracing._duration, span, None, common)
            b.end(None)

        attempt("_Attempt(...) + end(None): span.end, attributes, record", end)
    except Exception as exc:
        rows.append(("tracing internals", f"n/a ({type(exc).__name__}: {exc})"))
    await client.aclose()
    return rows


def steps_report() -> str:
    rows = asyncio.run(steps())
    return (
        "Happy path pieces, best of 7 loops (µs per call; '+' rows are what a layer adds to a request):\n"
        + table(["what", "µs"], [[label, value] for label, value in rows])
    )


# -- instructions ------------------------------------------------------------------

#: The full stack with one layer or feature switched off, by public options.
VARIANTS: dict[str, tuple[str, Callable[[httpx.AsyncBaseTransport], Any]]] = {
    "full_no_tracing": ("full stack, tracing=False", lambda inner: _full(inner, tracing=False)),
    "full_no_request_id": (
        "full stack, request_id_header=None",
        lambda inner: _full(inner, request_id_header=None),
    ),
    "full_no_retry": ("full stack, retry=False", lambda inner: _full(inner, retry=False)),
    "full_no_budget": (
        "full stack, RetryPolicy(budget=None)",
        lambda inner: _full(inner, budget=None),
    ),
    "retry_no_budget": (
        "RetryTransport(policy=RetryPolicy(budget=None))",
        lambda inner: _retry_no_budget(inner),
    ),
}


def _full(inner: httpx.AsyncBaseTransport, budget: Any = "default", **options: Any) -> Any:
    from _configs import Built

    from httpx_resilience import RetryPolicy, resilient_transport

    if budget is None:
        options["retry"] = RetryPolicy(budget=None)
    return Built(resilient_transport(base=inner, **options))


def _retry_no_budget(inner: httpx.AsyncBaseTransport) -> Any:
    from _configs import Built

    from httpx_resilience import RetryPolicy, RetryTransport

    return Built(RetryTransport(inner, RetryPolicy(budget=None)))


#: Imported by every counted process, whichever configuration it runs: the
#: cyclic garbage collector's full passes walk every live object, so a process
#: that imported more pays more per request (about 13k instructions for
#: importing httpx_resilience and OpenTelemetry), which is not the cost of the
#: code under test. The timed sections get the same fairness from running
#: every configuration in one process.
COMMON_IMPORTS = (
    "httpx_resilience",
    "httpx_resilience._tracing",
    "httpx_retries",
    "opentelemetry.instrumentation.httpx",
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk.trace",
) + (
    ("httpx2", "httpx_resilience.httpx2", "httpx_resilience.httpx2._tracing")
    if overhead.HTTPX2
    else ()
)


def _settle_heap() -> None:
    """Set aside every object alive after the warm-up from the garbage collector.

    Its full passes walk every tracked object, so whether one falls inside
    the counted requests, and how long it takes, depends on all the process
    has imported and built, not on the code under test: a few million
    instructions that land in one configuration's window and not in
    another's. Frozen, the passes see only what the counted requests
    allocate, which is the collector's share of their cost.
    """
    import gc

    gc.collect()
    gc.freeze()


def _count_child(key: str, n: int) -> None:
    """Run under valgrind: the same imports and warm-up, then ``n`` GETs through ``key``."""
    import importlib

    for module in COMMON_IMPORTS:
        importlib.import_module(module)

    if key not in VARIANTS and overhead.kind_of(key).sync:  # httpx.Client, httpx2.Client
        client, built = overhead.make_client(key)
        for _ in range(200):
            client.get(URL)
        _settle_heap()
        for _ in range(n):
            client.get(URL)
        if built.sdk:
            built.sdk.clear()
        return

    async def go() -> None:
        if key in VARIANTS:
            built = VARIANTS[key][1](overhead.FixedTransport())
            client = httpx.AsyncClient(transport=built.transport, event_hooks=built.hooks)
        else:
            client, built = overhead.make_client(key)
        for _ in range(200):
            await client.get(URL)
        _settle_heap()
        for _ in range(n):
            await client.get(URL)
        if built.sdk:
            built.sdk.clear()

    asyncio.run(go())


def counted(args: list[str], n: int, timeout: float = 900) -> float:
    """Instructions per unit of work: this script run under valgrind with ``args``
    and a count of 0, then of ``n``, the difference divided by ``n``."""
    from _common import valgrind_instructions

    zero, full = (
        valgrind_instructions(__file__, [*args, str(count)], timeout) for count in (0, n)
    )
    return (full - zero) / n


def instructions(key: str, n: int) -> float:
    return counted(["--count", key], n)


DEFAULT_INSTRUCTION_KEYS = [
    "bare",
    "request_id",
    "retry",
    "retry_no_budget",
    "tracing_noop",
    "full_noop",
    "full_no_tracing",
    "full_no_request_id",
    "full_no_retry",
    "full_no_budget",
    "httpx_retries",
    "uuid4_hook",
    "otel_noop",
    "peers_noop",
    "tracing_sdk",
    "full_sdk",
    "otel_sdk",
    "peers_sdk",
]


def instructions_report(keys: list[str], n: int = 1000) -> tuple[str, dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    if "bare" not in keys:
        keys = ["bare", *keys]
    # Each client's rows after its bare row (other clients: sync, httpx2), x its bare.
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(overhead.bare_of(key), []).append(key)
    keys = [k for bare_key, ks in groups.items() for k in dict.fromkeys([bare_key, *ks])]
    labels = {k: label for k, label, _ in overhead.CONFIGS}
    labels.update({k: label for k, (label, _) in VARIANTS.items()})
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = dict(zip(keys, pool.map(lambda k: instructions(k, n), keys), strict=True))
    rows = []
    for k, v in found.items():
        bare = found[overhead.bare_of(k)]
        rows.append([labels.get(k, k), v / 1000, v / bare, (v - bare) / 1000])
    text = f"CPU instructions per request (valgrind, {n} requests, user space):\n" + table(
        ["configuration", "k instr/req", "x bare", "+k instr vs bare"], rows
    )
    return text, {"requests": n, "instructions_per_request": found}


# -- pieces, counted ---------------------------------------------------------------

_PIECES_SETUP = """
import asyncio, contextvars, os, time, uuid
import httpx, overhead
import httpx_resilience as hr
from httpx_resilience import _tracing, _otel_context as oc
from httpx_resilience._options import request_options
from httpx_resilience._origin import origin_of
URL = overhead.URL
F = overhead.FixedTransport()
req = httpx.Request("GET", URL)
common = {"http.request.method": "GET", "server.address": "api.example.com", "server.port": 443}
h = req.headers
cv = contextvars.ContextVar("x", default=None)
retry = hr.RetryTransport(F)
policy = retry.policy
tracing = hr.TracingTransport(F)
tracer = tracing._tracer
ctx = oc.get_current()
span = tracer.start_span("GET", ctx, oc.SpanKind.CLIENT)
response = httpx.Response(200, extensions={"http_version": b"HTTP/1.1"})
layers = {
    "inner": F,
    "Layer": hr.Layer(F),
    "RequestIdTransport": hr.RequestIdTransport(F),
    "RetryTransport": hr.RetryTransport(F),
    "RetryTransport, no budget": hr.RetryTransport(F, hr.RetryPolicy(budget=None)),
    "TracingTransport": tracing,
}
async def through(t):
    r = await t.handle_async_request(httpx.Request("GET", URL))
    await r.aread()
    await r.aclose()
"""

#: label, statement; "await ..." statements run inside one event loop.
PIECES: list[tuple[str, str]] = [
    (
        "build Request + innermost + read body (baseline of the layer rows)",
        "await through(layers['inner'])",
    ),
    ("  + Layer (pass-through hop)", "await through(layers['Layer'])"),
    ("  + RequestIdTransport", "await through(layers['RequestIdTransport'])"),
    ("  + RetryTransport", "await through(layers['RetryTransport'])"),
    ("  + RetryTransport, budget=None", "await through(layers['RetryTransport, no budget'])"),
    ("  + TracingTransport (no-op)", "await through(layers['TracingTransport'])"),
    ("headers.get('X-Request-ID'), absent (KeyError inside)", "h.get('X-Request-ID')"),
    ("'X-Request-ID' in headers, absent", "'X-Request-ID' in h"),
    (
        "headers['X-Request-ID'] = v; del headers['X-Request-ID']",
        "h['X-Request-ID'] = 'ab'; del h['X-Request-ID']",
    ),
    ("new_request_id()", "hr.new_request_id()"),
    ("uuid.uuid4().hex", "uuid.uuid4().hex"),
    ("ContextVar.get()", "cv.get()"),
    ("request.extensions[k] = v", "req.extensions['request_id'] = 'ab'"),
    ("request_options(request)", "request_options(req)"),
    ("origin_of(request.url)", "origin_of(req.url)"),
    ("RetryTransport._lend_budget(request, policy)", "retry._lend_budget(req, policy)"),
    ("request.url", "req.url"),
    ("request.url.host", "req.url.host"),
    ("time.monotonic()", "time.monotonic()"),
    ("oc.get_current()", "oc.get_current()"),
    (
        "tracer.start_span('GET', ctx, CLIENT), global no-op",
        "tracer.start_span('GET', ctx, oc.SpanKind.CLIENT)",
    ),
    ("_tracing._Attempts()", "_tracing._Attempts()"),
    (
        "_Attempt(...) + received(response)",
        "_tracing._Attempt(tracing._duration, span, None, common).received(response)",
    ),
    (
        "_Attempt(...) + end(None)",
        "_tracing._Attempt(tracing._duration, span, None, common).end(None)",
    ),
    ("_Attempt._metric_attributes(None)", "a._metric_attributes(None)"),
    ("histogram.record(0.1, attrs), global no-op meter", "tracing._duration.record(0.1, attrs)"),
]


def _piece_child(index: int, n: int) -> None:
    _label, stmt = PIECES[index]
    namespace: dict[str, Any] = {}
    exec(_PIECES_SETUP, namespace)
    exec(
        "a = _tracing._Attempt(tracing._duration, span, None, common)\n"
        "attrs = a._metric_attributes(None)",
        namespace,
    )
    if stmt.startswith("await "):
        code = f"async def _loop(n):\n    for _ in range(n):\n        {stmt}\n"
        exec(code, namespace)
        asyncio.run(namespace["_loop"](200))
        asyncio.run(namespace["_loop"](n))
    else:
        code = f"def _loop(n):\n    for _ in range(n):\n        {stmt}\n"
        exec(code, namespace)
        namespace["_loop"](200)
        namespace["_loop"](n)


def pieces_report(n: int = 5000) -> str:
    from concurrent.futures import ThreadPoolExecutor

    def count(index: int) -> float:
        return counted(["--piece", str(index)], n, timeout=600)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = list(pool.map(count, range(len(PIECES))))
    baseline = counts[0]
    rows = []
    for (label, _), value in zip(PIECES, counts, strict=True):
        shown = value - baseline if label.startswith("  + ") else value
        rows.append([label, shown / 1000])
    return (
        f"Instructions per call (valgrind, {n} calls; '+' rows: what the layer adds to the "
        "baseline above them), in thousands:\n" + table(["piece", "k instr"], rows)
    )


# -- loopback, counted -------------------------------------------------------------

#: (key, http2, concurrency) counted by ``loopback-instructions``.
LOOPBACK_CASES = [
    (key, http2, concurrency)
    for http2, concurrency in ((False, 1), (True, 1), (True, 50), (False, 50))
    for key in ("bare", "http_transport", "full_noop")
]


#: A request ID every request of a ``..._fixed_rid`` case carries (bound by ``request_id()``).
FIXED_ID = "0123456789abcdef0123456789abcdef"


def _without_guard() -> None:
    """Our transport with the GOAWAY guard taken out of HTTP/2 connections (what it costs).

    Only for counting: HTTP/2 connections then get httpcore's TLS stream itself,
    as HTTP/1.1 ones always do.
    """
    from httpx_resilience import _goaway

    async def start_tls(
        self: Any, ssl_context: Any, server_hostname: Any = None, timeout: Any = None
    ) -> Any:
        return await self._stream.start_tls(ssl_context, server_hostname, timeout)

    _goaway.GoawayGuardStream.start_tls = start_tls  # type: ignore[method-assign]


def _loopback_child(url: str, ca: str, key: str, http2: bool, concurrency: int, n: int) -> None:
    import contextlib
    import importlib
    import ssl

    import loopback

    from httpx_resilience import request_id

    for module in COMMON_IMPORTS:
        importlib.import_module(module)
    bind: Any = contextlib.nullcontext()
    if key.endswith("_unguarded"):
        key = key.removesuffix("_unguarded")
        _without_guard()
    if key.endswith("_fixed_rid"):
        key = key.removesuffix("_fixed_rid")
        bind = request_id(FIXED_ID)

    async def go() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(ca)
        client = loopback.Client(key, url, context, http2)
        await client.run(0.0, concurrency, min_requests=100)
        _settle_heap()
        if n:
            await client.run(0.0, concurrency, min_requests=n)
        await client.aclose()

    with bind:
        asyncio.run(go())


#: HTTP/2 sequential on loopback: what the GOAWAY guard and the request ID
#: cost, and both transports on httpx2 (whose httpcore2 takes an uncontended
#: lock without a pass of the event loop; httpcore 1.0 does not).
H2_CASES = [
    (key, True, 1)
    for key in (
        "bare",
        "http_transport",
        "http_transport_unguarded",
        "full_noop",
        "full_noop_no_rid",
        "full_noop_fixed_rid",
        "bare_httpx2",
        "http_transport_httpx2",
    )
]


def h2_costs(found: dict[tuple[str, bool, int], float]) -> dict[str, float]:
    """The guard's and the request ID's instructions per request, from ``H2_CASES`` counts."""
    count = {key: value for (key, _, _), value in found.items()}
    return {
        "guard": count["http_transport"] - count["http_transport_unguarded"],
        "request_id": count["full_noop"] - count["full_noop_no_rid"],
        "fixed_request_id": count["full_noop_fixed_rid"] - count["full_noop_no_rid"],
    }


def loopback_instructions(
    cases: list[tuple[str, bool, int]] = LOOPBACK_CASES, n: int = 400
) -> dict[tuple[str, bool, int], float]:
    """Client instructions per request against the fault server (its own
    process, not counted), one case after another; bare first in each cell."""
    from _common import ServerProcess

    found: dict[tuple[str, bool, int], float] = {}
    with ServerProcess("--plan", "ok") as server:
        for key, http2, concurrency in cases:
            found[key, http2, concurrency] = counted(
                [
                    "--loopback-count",
                    server.url,
                    server.ca,
                    key,
                    "1" if http2 else "0",
                    str(concurrency),
                ],
                n,
            )
    return found


def loopback_instructions_report(
    cases: list[tuple[str, bool, int]] = LOOPBACK_CASES, n: int = 400
) -> str:
    rows = []
    found = loopback_instructions(cases, n)
    for (key, http2, concurrency), value in found.items():
        bare = found[("bare", http2, concurrency)]
        cell = f"HTTP/{'2' if http2 else '1.1'}, {'sequential' if concurrency == 1 else f'{concurrency} concurrent'}"
        rows.append([cell, key, value / 1000, value / bare])
    return (
        f"Client CPU instructions per request on loopback (valgrind, {n} requests; the server "
        "is not counted):\n" + table(["cell", "configuration", "k instr/req", "x bare"], rows)
    )


# -- the pool under bursts, in memory, counted ----------------------------------------


def pool_report(keys: list[str], rounds: int = 4) -> tuple[str, dict[str, Any]]:
    """Instructions per request of ``pool.py``'s workload (bursts of 50), per configuration."""
    from concurrent.futures import ThreadPoolExecutor

    import pool

    keys = keys or list(pool.CONFIGS)
    per_round = pool.TASKS * (1 + pool.STEADY)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as executor:
        counts = list(
            executor.map(lambda k: counted(["--pool-count", k], rounds) / per_round, keys)
        )
    found = dict(zip(keys, counts, strict=True))
    bare = found.get("bare")
    rows = [
        [pool.CONFIGS[k][0], v / 1000, None if bare is None else v / bare]
        for k, v in found.items()
    ]
    text = (
        f"CPU instructions per request, HTTP/1.1 bursts of {pool.TASKS} in memory (valgrind, "
        f"{rounds} x {per_round} requests; no TLS, no network):\n"
        + table(["configuration", "k instr/req", "x bare"], rows)
    )
    return text, {"instructions_per_request": found}


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "--pool-count":
        import pool

        pool.count_child(args[1], int(args[2]))
        return
    if args and args[0] == "pool":
        print(pool_report(args[1:])[0])
        return
    if len(args) == 3 and args[0] == "--count":
        _count_child(args[1], int(args[2]))
        return
    if len(args) == 3 and args[0] == "--piece":
        _piece_child(int(args[1]), int(args[2]))
        return
    if len(args) == 7 and args[0] == "--loopback-count":
        _, url, ca, key, http2, concurrency, n = args
        _loopback_child(url, ca, key, http2 == "1", int(concurrency), int(n))
        return
    if args and args[0] == "h2-instructions":
        found = loopback_instructions(H2_CASES, n=int(args[1]) if len(args) > 1 else 400)
        for (key, _, _), value in found.items():
            print(f"{key:32} {value / 1000:10.1f} k instr/req")
        for name, value in h2_costs(found).items():
            print(f"{name:32} {value / 1000:+10.1f} k instr/req")
        return
    if args and args[0] == "loopback-instructions":
        # Optionally one cell: "h1" or "h2", then the concurrency (1 or 50).
        cases = LOOPBACK_CASES
        if len(args) == 3:
            http2, concurrency = args[1] == "h2", int(args[2])
            cases = [c for c in LOOPBACK_CASES if c[1:] == (http2, concurrency)]
        print(loopback_instructions_report(cases))
        return
    if args and args[0] == "pieces":
        print(pieces_report())
        return
    if args and args[0] == "instructions":
        print(instructions_report(args[1:] or DEFAULT_INSTRUCTION_KEYS)[0])
        return
    mode = args[0] if args and args[0] in ("calls", "steps") else "both"
    keys = [a for a in args if a not in ("calls", "steps")] or ["full_noop"]
    if mode in ("calls", "both"):
        print(calls_report(keys))
        print()
    if mode in ("steps", "both"):
        print(steps_report())


if __name__ == "__main__":
    main()
