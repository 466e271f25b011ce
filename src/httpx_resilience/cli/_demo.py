"""``httpx-resilience demo``: the same workload through bare httpx and through the stack.

Both clients meet the same faults, drawn from the same seeded plan, each
against a fault server of its own on 127.0.0.1 (TLS, HTTP/2). The summary
comes from what the clients saw and from what the servers recorded.

>>> result = await run_demo(DemoOptions(requests=100, seed=3))  # doctest: +SKIP
>>> result.ok, result.stack.succeeded, result.stack.duplicate_posts  # doctest: +SKIP
(True, 100, 0)
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import h2.errors
import h2.events
import httpcore
import httpx
from tenacity import stop_after_attempt, wait_exponential_jitter

from .._budget import RetryBudget
from .._classify import unprocessed_reason
from .._dns import default_resolver
from .._records import RetryHistory, Timings
from .._retry import RETRIES_METRIC, Sleep
from .._retry_policy import RetryPolicy
from .._stack import resilient_transport
from ..testing import (
    Delay,
    FaultPlan,
    FaultServer,
    Received,
    Refuse,
    Reset,
    Respond,
    SlowBody,
    Weighted,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Tracer

#: Faults of ``GET /items/N``: every kind a GET can recover from by a re-send.
GET_ROUTE = Weighted(
    (70, Respond()),
    (8, Respond(503, retry_after=1)),
    (5, Reset(scope="stream")),
    (5, Refuse()),
    (7, Delay(0.2)),
    (5, SlowBody(chunks=5, chunk_size=1024, interval=0.05)),
)
#: Faults of ``POST /orders``: only those that prove the server did not act
#: on the request. A POST the server may have processed (a 503, a reset after
#: it arrived) cannot be re-sent safely without an Idempotency-Key: the
#: stack would hand that failure to the caller, as it should.
POST_ROUTE = Weighted(
    (85, Respond(201)),
    (10, Refuse()),
    (5, Delay(0.2, then=Respond(201))),
)
#: Each connection ends with a GOAWAY after this many requests (nginx's
#: ``keepalive_requests``, lowered so that a short run meets a few).
GOAWAY_EVERY = 100
ORDERS = "/orders"

#: Short waits so the demo is quick; ``Retry-After: 1`` still makes a 503 wait 1 s.
#: The retry budget is spelled out although it is the default (retries up to
#: 20% of requests, a bucket of 50 tokens): 150 requests started at once with
#: 5-10% of them failing ask for a burst of retries, which a much smaller
#: bucket would refuse, and the demo must not change if the default does.
DEMO_POLICY = RetryPolicy(
    stop=stop_after_attempt(6),
    wait=wait_exponential_jitter(multiplier=0.05, max=0.5, jitter=0.05),
    budget=RetryBudget(ratio=0.2, max_tokens=50),
)
TIMEOUT = httpx.Timeout(10.0)
POST_SHARE = 0.4

BARE = "bare"
STACK = "stack"
LABELS = {BARE: "bare httpx", STACK: "resilient_transport()"}

#: ``(client key, requests done, requests in all)``, after each request.
Progress = Callable[[str, int, int], None]


def demo_plan(seed: int | str = 0) -> FaultPlan:
    """The demo's fault plan; ``httpx-resilience fault-server --plan demo`` serves it too."""
    return FaultPlan(
        routes={ORDERS: POST_ROUTE}, default=GET_ROUTE, seed=seed, goaway_every=GOAWAY_EVERY
    )


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 300
    concurrency: int = 150
    seed: int = 1

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"requests must be at least 1, got {self.requests}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")


@dataclass(frozen=True)
class Work:
    """One logical request of the workload."""

    index: int
    method: str
    path: str
    body: Mapping[str, int] | None

    def request_id(self, client: str) -> str:
        return f"demo-{client}-{self.index:05d}"


def workload(options: DemoOptions) -> list[Work]:
    """The requests both clients send: a function of the seed."""
    rng = random.Random(f"workload\x00{options.seed}")
    work = []
    for index in range(options.requests):
        if rng.random() < POST_SHARE:
            order = {"order": index, "item": rng.randrange(1000), "quantity": rng.randint(1, 5)}
            work.append(Work(index, "POST", ORDERS, order))
        else:
            work.append(Work(index, "GET", f"/items/{rng.randrange(1000)}", None))
    return work


@dataclass(frozen=True)
class Outcome:
    """What one client got for one logical request."""

    work: Work
    request_id: str
    status: int | None
    failure: str | None  # None: a response with status < 400
    seconds: float
    history: RetryHistory | None = None
    timings: Timings | None = None
    span_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class RunSummary:
    """One column of the demo's summary."""

    client: str
    requests: int
    succeeded: int
    failed: int
    failures: dict[str, int]
    #: Failed requests the server had processed, by method: a blind retry would repeat them.
    failed_processed: dict[str, int]
    server_received: int
    server_processed: int
    retries: dict[str, int]
    duplicate_posts: int
    latency_ms: dict[str, float]
    connections: int
    goaways: int
    seconds: float
    timings: Timings | None

    @property
    def retried(self) -> int:
        return sum(self.retries.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["success_rate"] = self.succeeded / self.requests
        data["retries_total"] = self.retried
        return data


@dataclass(frozen=True)
class SpanNode:
    """A finished span, its times relative to the root's start, and its children."""

    name: str
    start_ms: float
    duration_ms: float
    status: str
    attributes: dict[str, Any]
    events: tuple[tuple[float, str, dict[str, Any]], ...] = ()
    children: tuple[SpanNode, ...] = ()


@dataclass
class ClientRun:
    """Everything one client's run left behind, for the summary and for tests."""

    client: str
    outcomes: list[Outcome]
    server: FaultServer
    seconds: float
    retries: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoResult:
    options: DemoOptions
    work: list[Work]
    bare: RunSummary
    stack: RunSummary
    span_tree: SpanNode | None
    runs: dict[str, ClientRun]

    @property
    def ok(self) -> bool:
        """The stack's promise: every request answered, no POST processed twice."""
        return self.stack.succeeded == self.stack.requests and self.stack.duplicate_posts == 0

    def records(self, client: str) -> list[Received]:
        return self.runs[client].server.received

    def to_json(self) -> dict[str, Any]:
        methods = Counter(work.method for work in self.work)
        return {
            "ok": self.ok,
            "seed": self.options.seed,
            "requests": self.options.requests,
            "concurrency": self.options.concurrency,
            "workload": dict(sorted(methods.items())),
            "plan": plan_description(),
            "runs": {BARE: self.bare.to_json(), STACK: self.stack.to_json()},
            "span_tree": None if self.span_tree is None else asdict(self.span_tree),
        }


class _Telemetry:
    """The OpenTelemetry SDK, recording in memory for one run of the stack."""

    def __init__(self) -> None:
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
        except ImportError as exc:
            raise ImportError(
                "the demo needs the OpenTelemetry SDK and trustme: "
                "pip install 'httpx-resilience[demo]'"
            ) from exc
        self.spans: InMemorySpanExporter = InMemorySpanExporter()
        self.tracer_provider: TracerProvider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader: InMemoryMetricReader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.tracer: Tracer = self.tracer_provider.get_tracer("httpx_resilience.demo")

    def retries(self) -> dict[str, int]:
        """``http.client.request.retries``, summed by reason (``error.type``)."""
        counts: Counter[str] = Counter()
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != RETRIES_METRIC:
                        continue
                    for point in metric.data.data_points:
                        reason = str(point.attributes.get("error.type", "?"))  # type: ignore[union-attr]
                        counts[reason] += int(point.value)  # type: ignore[union-attr]
        return dict(counts.most_common())

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


async def run_demo(
    options: DemoOptions = DemoOptions(),
    *,
    progress: Progress | None = None,
    sleep: Sleep | None = None,
) -> DemoResult:
    """Run the workload through bare httpx, then through the stack; summarise both.

    ``sleep`` replaces the stack's wait between attempts (tests make it shorter).
    """
    telemetry = _Telemetry()
    try:
        work = workload(options)
        host = await _loopback_name()
        bare = await _run_client(BARE, work, options, host, progress)
        stack = await _run_client(STACK, work, options, host, progress, telemetry, sleep)
        stack.retries = telemetry.retries()
        span_tree = _span_tree(stack.outcomes, telemetry.spans.get_finished_spans())
    finally:
        telemetry.shutdown()
    return DemoResult(
        options=options,
        work=work,
        bare=summarise(bare),
        stack=summarise(stack),
        span_tree=span_tree,
        runs={BARE: bare, STACK: stack},
    )


async def _loopback_name() -> str:
    """``localhost`` if it names 127.0.0.1 here (so there is a DNS lookup to time)."""
    try:
        addresses = await default_resolver("localhost")
    except OSError:
        return "127.0.0.1"
    return "localhost" if "127.0.0.1" in addresses else "127.0.0.1"


async def _run_client(
    client_key: str,
    work: Sequence[Work],
    options: DemoOptions,
    host: str,
    progress: Progress | None,
    telemetry: _Telemetry | None = None,
    sleep: Sleep | None = None,
) -> ClientRun:
    outcomes: list[Outcome | None] = [None] * len(work)
    done = 0
    async with FaultServer(demo_plan(options.seed), max_lifetime=600) as server:
        base = f"https://{host}:{server.port}"
        client = _client(server, telemetry, sleep)
        tracer = None if telemetry is None else telemetry.tracer
        pending = iter(work)

        async def worker() -> None:
            nonlocal done
            for item in pending:
                outcomes[item.index] = await _send(client, base, item, client_key, tracer)
                done += 1
                if progress is not None:
                    progress(client_key, done, len(work))

        start = time.perf_counter()
        async with client, anyio.create_task_group() as tasks:
            for _ in range(min(options.concurrency, len(work))):
                tasks.start_soon(worker)
        seconds = time.perf_counter() - start
    return ClientRun(client_key, [o for o in outcomes if o is not None], server, seconds)


def _client(
    server: FaultServer, telemetry: _Telemetry | None, sleep: Sleep | None
) -> httpx.AsyncClient:
    if telemetry is None:
        return httpx.AsyncClient(http2=True, verify=server.ssl_context, timeout=TIMEOUT)
    options: dict[str, Any] = {}
    if sleep is not None:
        options["sleep"] = sleep
    transport = resilient_transport(
        verify=server.ssl_context,
        retry=DEMO_POLICY,
        idempotency_keys=False,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        **options,
    )
    return httpx.AsyncClient(transport=transport, timeout=TIMEOUT)


async def _send(
    client: httpx.AsyncClient, base: str, work: Work, client_key: str, tracer: Tracer | None
) -> Outcome:
    request_id = work.request_id(client_key)
    headers = {"X-Request-ID": request_id}
    what = "fetch item" if work.method == "GET" else "place order"
    span: AbstractContextManager[Any] = (
        nullcontext()
        if tracer is None
        else tracer.start_as_current_span(
            f"{what} {work.index}", record_exception=False, set_status_on_exception=False
        )
    )
    start = time.perf_counter()
    with span as current:
        try:
            response = await client.request(
                work.method, base + work.path, json=work.body, headers=headers
            )
        except Exception as exc:
            # A demo shows every failure as a row of the summary, whatever it is.
            return Outcome(work, request_id, None, failure_label(exc), time.perf_counter() - start)
        seconds = time.perf_counter() - start
        span_id = None if current is None else current.get_span_context().span_id
    status = response.status_code
    return Outcome(
        work,
        request_id,
        status,
        str(status) if status >= 400 else None,
        seconds,
        history=response.extensions.get("retry"),
        timings=response.extensions.get("timings"),
        span_id=span_id,
    )


def failure_label(exc: BaseException) -> str:
    """A short name for a failure, precise about HTTP/2: what the client can tell."""
    unprocessed = unprocessed_reason(exc)
    if unprocessed == "CONNECTION_CLOSED":
        return "GOAWAY (never sent)"
    if unprocessed is not None:
        return unprocessed
    cause = exc.__cause__
    if isinstance(exc, httpx.RemoteProtocolError) and isinstance(cause, httpcore.ProtocolError):
        detail = cause.args[0] if cause.args else None
        if isinstance(detail, h2.events.StreamReset):
            return f"RST_STREAM {_error_code(detail.error_code)}"
        if isinstance(detail, h2.events.ConnectionTerminated):
            return "GOAWAY (sent)"
    return type(exc).__name__


def _error_code(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


# -- the summary -------------------------------------------------------------


def summarise(run: ClientRun) -> RunSummary:
    """One column of the summary, from the client's outcomes and the server's records."""
    outcomes = run.outcomes
    records = run.server.received
    processed_ids = {r.request_id for r in records if r.processed}
    failed = [o for o in outcomes if not o.ok]
    failed_processed = Counter(o.work.method for o in failed if o.request_id in processed_ids)
    posts = {o.request_id for o in outcomes if o.work.method == "POST"}
    duplicates = run.server.duplicates()
    latencies = sorted(o.seconds for o in outcomes)
    opened = next(
        (o.timings for o in outcomes if o.timings is not None and not o.timings.connection_reused),
        None,
    )
    return RunSummary(
        client=LABELS[run.client],
        requests=len(outcomes),
        succeeded=len(outcomes) - len(failed),
        failed=len(failed),
        failures=dict(Counter(o.failure for o in failed if o.failure).most_common()),
        failed_processed=dict(sorted(failed_processed.items())),
        server_received=len(records),
        server_processed=sum(1 for r in records if r.processed),
        retries=dict(run.retries),
        duplicate_posts=sum(1 for rid in duplicates if rid in posts),
        latency_ms={
            name: round(percentile(latencies, p) * 1000, 1)
            for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
        connections=run.server.connections,
        goaways=len(run.server.goaways),
        seconds=round(run.seconds, 3),
        timings=opened,
    )


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (0 for none)."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def _span_tree(outcomes: Sequence[Outcome], spans: Sequence[ReadableSpan]) -> SpanNode | None:
    """The spans of one retried request: a 503 and another fault if there is one."""
    retried = [o for o in outcomes if o.ok and o.history is not None and o.history.events]
    if not retried:
        return None

    def interest(outcome: Outcome) -> tuple[int, int, int]:
        assert outcome.history is not None
        reasons = {event.reason for event in outcome.history.events}
        # Several kinds of fault, a Retry-After wait among them, and short enough to read.
        return (len(reasons), int("503" in reasons), -abs(outcome.history.attempts - 3))

    chosen = max(retried, key=interest)
    roots = [s for s in spans if s.context is not None and s.context.span_id == chosen.span_id]
    if not roots:
        return None
    root = roots[0]
    children = sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == chosen.span_id),
        key=lambda s: s.start_time or 0,
    )
    return _node(root, root.start_time or 0, children)


_SHOWN = (
    "http.request.method",
    "http.response.status_code",
    "error.type",
    "http.request.resend_count",
    "network.protocol.version",
    "http.request.header.x-request-id",
)


def _node(span: ReadableSpan, origin: int, children: Sequence[ReadableSpan] = ()) -> SpanNode:
    start = span.start_time or origin
    end = span.end_time or start
    attributes = span.attributes or {}
    return SpanNode(
        name=span.name,
        start_ms=round((start - origin) / 1e6, 3),
        duration_ms=round((end - start) / 1e6, 3),
        status=span.status.status_code.name,
        attributes={
            key: (list(value) if isinstance(value, tuple) else value)
            for key in _SHOWN
            if (value := attributes.get(key)) is not None
        },
        events=tuple(
            (round((event.timestamp - origin) / 1e6, 3), event.name, dict(event.attributes or {}))
            for event in span.events
        ),
        children=tuple(_node(child, origin) for child in children),
    )


def plan_description() -> dict[str, str]:
    return {
        "GET /items/N": describe_route(GET_ROUTE),
        f"POST {ORDERS}": describe_route(POST_ROUTE),
        "every connection": f"GOAWAY after {GOAWAY_EVERY} requests",
    }


def describe_route(route: Weighted) -> str:
    total = sum(weight for weight, _ in route.choices)
    return ", ".join(
        f"{describe_outcome(outcome)} {weight / total:.0%}" for weight, outcome in route.choices
    )


def describe_outcome(outcome: object) -> str:
    """An outcome in a few words, for people."""
    if isinstance(outcome, Respond):
        headers = dict(outcome.headers)
        retry_after = headers.get("retry-after")
        return str(outcome.status) + (
            "" if retry_after is None else f" Retry-After: {retry_after}"
        )
    if isinstance(outcome, Delay):
        return f"{describe_outcome(outcome.then)} after {outcome.seconds:g} s"
    if isinstance(outcome, SlowBody):
        seconds = outcome.chunks * outcome.interval
        return f"{outcome.status} slow body ({seconds:g} s)"
    if isinstance(outcome, Reset):
        return "RST_STREAM" if outcome.scope == "stream" else "connection reset"
    if isinstance(outcome, Refuse):
        return "REFUSED_STREAM"
    return type(outcome).__name__


# -- text output -------------------------------------------------------------


def format_header(options: DemoOptions, work: Sequence[Work]) -> list[str]:
    methods = Counter(item.method for item in work)
    plan = plan_description()
    width = max(len(name) for name in plan)
    return [
        f"httpx-resilience demo: {options.requests} requests ({methods['GET']} GET, "
        f"{methods['POST']} POST), {options.concurrency} at a time, HTTP/2 over TLS, "
        f"seed {options.seed}",
        "each client gets a fault server of its own on 127.0.0.1, with the same plan:",
        *(f"  {name:<{width}}  {text}" for name, text in plan.items()),
    ]


def format_summary(result: DemoResult) -> list[str]:
    bare, stack = result.bare, result.stack
    rows: list[tuple[str, str, str]] = [
        ("", bare.client, stack.client),
        ("succeeded", _share(bare), _share(stack)),
        ("failed", str(bare.failed), str(stack.failed)),
    ]
    rows.extend(
        (f"  {reason}", _count(bare.failures, reason), _count(stack.failures, reason))
        for reason in _keys(bare.failures, stack.failures)
    )
    rows += [
        (
            "failed after the server processed it",
            _processed(bare.failed_processed),
            _processed(stack.failed_processed),
        ),
        ("requests the server received", str(bare.server_received), str(stack.server_received)),
        ("  processed", str(bare.server_processed), str(stack.server_processed)),
        ("retries", str(bare.retried) if bare.retries else "none", str(stack.retried)),
    ]
    rows.extend(
        (f"  {reason}", _count(bare.retries, reason), _count(stack.retries, reason))
        for reason in _keys(bare.retries, stack.retries)
    )
    rows += [
        (
            "duplicate POSTs the server processed",
            str(bare.duplicate_posts),
            str(stack.duplicate_posts),
        ),
        ("latency p50 / p95 / p99", _latency(bare), _latency(stack)),
        ("connections opened", str(bare.connections), str(stack.connections)),
        ("GOAWAYs sent by the server", str(bare.goaways), str(stack.goaways)),
        ("wall time", f"{bare.seconds:.1f} s", f"{stack.seconds:.1f} s"),
    ]
    first = max(len(row[0]) for row in rows) + 2
    second = max(len(row[1]) for row in rows) + 3
    lines = [f"{a:<{first}}{b:<{second}}{c}".rstrip() for a, b, c in rows]
    if stack.timings is not None:
        from ._probe import format_timings

        lines += [
            "",
            'timings of one request that opened a connection (response.extensions["timings"]):',
            f"  {format_timings(stack.timings)}",
        ]
    if result.span_tree is not None:
        lines += ["", *format_span_tree(result.span_tree)]
    lines += ["", *format_verdict(result)]
    return lines


def format_verdict(result: DemoResult) -> list[str]:
    bare, stack = result.bare, result.stack
    lost = sum(bare.failed_processed.values())
    lost_posts = bare.failed_processed.get("POST", 0)
    lines = []
    if bare.failed:
        lines.append(
            f"bare httpx: {bare.failed} of {bare.requests} requests failed; the server had "
            f"processed {lost} of them ({lost_posts} POSTs), so retrying blindly would have "
            "repeated those."
        )
    if result.ok:
        lines.append(
            f"OK: resilient_transport() got an answer for all {stack.requests} requests "
            "and the server processed no POST twice."
        )
    else:
        lines.append(
            f"FAILED: resilient_transport() answered {stack.succeeded} of {stack.requests} "
            f"requests, {stack.duplicate_posts} POSTs were processed twice."
        )
    return lines


def format_span_tree(root: SpanNode) -> list[str]:
    request_id = root.children[0].attributes.get("http.request.header.x-request-id", ["?"])[0]
    lines = [
        "span tree of one retried request (OpenTelemetry SDK, in memory), "
        f"X-Request-ID {request_id}:",
        f"  {root.name}  {root.duration_ms:.1f} ms",
    ]
    items = [(child.start_ms, 0, _describe_span(child)) for child in root.children]
    items += [(at, 1, _describe_event(at, name, attrs)) for at, name, attrs in root.events]
    items.sort()
    for number, (_, kind, text) in enumerate(items):
        last = number == len(items) - 1
        if kind == 0:
            lines.append(f"  {'└──' if last else '├──'} {text}")
        else:
            lines.append(f"  {'   ' if last else '│  '}   {text}")
    return lines


def _describe_span(span: SpanNode) -> str:
    attributes = span.attributes
    status = attributes.get("http.response.status_code")
    error = attributes.get("error.type")
    parts = [f"{span.name:<5}", f"+{span.start_ms:7.1f} ms", f"{span.duration_ms:6.1f} ms"]
    parts.append(f"status {status}" if status is not None else "no response")
    if error is not None:
        parts.append(f"error.type={error}")
    resend = attributes.get("http.request.resend_count")
    if resend is not None:
        parts.append(f"resend_count={resend}")
    if span.status != "UNSET":
        parts.append(span.status)
    return "  ".join(parts)


def _describe_event(at: float, name: str, attributes: Mapping[str, Any]) -> str:
    wait = attributes.get("httpx_resilience.retry.wait")
    reason = attributes.get("error.type")
    if name == "httpx_resilience.retry" and wait is not None:
        then = f"wait {wait:.3f} s" if wait else "re-send at once"
        return f"· +{at:7.1f} ms  event {name}: {reason}, {then}"
    return f"· +{at:7.1f} ms  event {name}"


def _share(summary: RunSummary) -> str:
    return f"{summary.succeeded}/{summary.requests} ({summary.succeeded / summary.requests:.1%})"


def _keys(*counts: Mapping[str, int]) -> list[str]:
    totals: Counter[str] = Counter()
    for count in counts:
        totals.update(count)
    return [key for key, _ in totals.most_common()]


def _count(counts: Mapping[str, int], key: str) -> str:
    return str(counts[key]) if key in counts else "-"


def _processed(by_method: Mapping[str, int]) -> str:
    total = sum(by_method.values())
    posts = by_method.get("POST", 0)
    return f"{total} ({posts} POST)" if total else "0"


def _latency(summary: RunSummary) -> str:
    latency = summary.latency_ms
    return f"{latency['p50']:.0f} / {latency['p95']:.0f} / {latency['p99']:.0f} ms"
