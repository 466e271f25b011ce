"""``httpx-resilience demo``: its numbers against what the fault servers recorded.

The stack's waits are cut to a tenth (``Retry-After: 1`` waits 0.1 s) so the
tests are quick; the subprocess test runs the real thing.
"""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from httpx_resilience.cli import main
from httpx_resilience.cli._demo import (
    BARE,
    STACK,
    DemoOptions,
    DemoResult,
    RunSummary,
    format_verdict,
    percentile,
    run_demo,
    workload,
)
from httpx_resilience.cli._main import ProgressPrinter
from httpx_resilience.testing import FaultServer

BACKENDS = ["asyncio", "trio"]

# Bare httpx 0.28.1 / httpcore 1.0.9 under trio: an HTTP/2 POST that fails while
# its body is being sent (GOAWAY, refused stream) leaves httpx's request-body
# async generator suspended; trio closes it when it is garbage collected, with
# this ResourceWarning. It happens in the demo's bare-httpx run, not in ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
    ":ResourceWarning"
)


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Finalise abandoned generators while the filter above still applies."""
    yield
    gc.collect()


async def quick_sleep(seconds: float) -> None:
    await anyio.sleep(seconds / 10)


def check_against_records(summary: RunSummary, server: FaultServer, result: DemoResult) -> None:
    """Every server-side figure of a column, recomputed from the server's own records."""
    key = BARE if summary is result.bare else STACK
    records = server.received
    methods = {work.request_id(key): work.method for work in result.work}
    assert summary.server_received == len(records)
    assert summary.server_processed == sum(r.processed for r in records)
    assert summary.connections == server.connections
    assert summary.goaways == len(server.goaways)
    processed = Counter(r.request_id for r in records if r.processed)
    assert set(processed) <= set(methods)
    assert summary.duplicate_posts == sum(
        1 for rid, count in processed.items() if count > 1 and methods[rid] == "POST"
    )
    outcomes = result.runs[key].outcomes
    assert len(outcomes) == summary.requests == len(result.work)
    failed = [o for o in outcomes if not o.ok]
    assert summary.failed == len(failed) == sum(summary.failures.values())
    assert summary.succeeded == summary.requests - summary.failed
    assert sum(summary.failed_processed.values()) == sum(
        1 for o in failed if processed[o.request_id]
    )
    # Every success was answered by the server, in full, with that status.
    for outcome in outcomes:
        if outcome.ok:
            answers = [
                r.status
                for r in records
                if r.request_id == outcome.request_id and r.processed and r.complete
            ]
            assert outcome.status in answers


@pytest.mark.anyio
async def test_the_summary_matches_the_servers_records() -> None:
    result = await run_demo(DemoOptions(requests=150, concurrency=75, seed=3), sleep=quick_sleep)
    check_against_records(result.bare, result.runs[BARE].server, result)
    check_against_records(result.stack, result.runs[STACK].server, result)

    stack, bare = result.stack, result.bare
    assert result.ok
    assert stack.succeeded == 150
    assert stack.failed == 0
    assert stack.duplicate_posts == 0
    assert bare.failed > 0  # the plan has faults bare httpx does not survive
    assert bare.retries == {}
    # Every retry the metric counted is in some response's history, and the
    # server saw every attempt that left the client (a few never did: streams
    # refused locally after a GOAWAY).
    histories = [o.history for o in result.runs[STACK].outcomes]
    assert all(h is not None for h in histories)
    reasons = Counter(e.reason for h in histories if h is not None for e in h.events)
    assert stack.retries == dict(reasons)
    attempts = sum(h.attempts for h in histories if h is not None)
    assert attempts == stack.requests + stack.retried
    assert stack.requests <= stack.server_processed <= stack.server_received <= attempts
    # The POSTs met only faults that prove the server did not act on them.
    for record in result.records(STACK):
        if record.method == "POST" and record.processed:
            assert record.status == 201
    timings = stack.timings
    assert timings is not None
    assert not timings.connection_reused
    assert timings.tls is not None
    assert timings.connect is not None

    tree = result.span_tree
    assert tree is not None
    assert tree.name.startswith(("fetch item", "place order"))
    attempts_spans = tree.children
    assert len(attempts_spans) >= 2
    resend = [c.attributes.get("http.request.resend_count") for c in attempts_spans]
    assert resend == [None, *range(1, len(attempts_spans))]
    assert attempts_spans[-1].attributes["http.response.status_code"] in (200, 201)
    assert all(c.status == "ERROR" for c in attempts_spans[:-1])
    assert len(tree.events) == len(attempts_spans) - 1  # one retry event per re-send
    starts = [c.start_ms for c in attempts_spans]
    assert starts == sorted(starts)
    assert starts[0] >= 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_json(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--json", "--requests", "80", "--concurrency", "40", "--seed", "2"]
    code = main([*argv, "--backend", backend], sleep=quick_sleep)
    out, err = capsys.readouterr()
    assert code == 0
    summary = json.loads(out)
    check_json(summary, requests=80)
    assert summary["concurrency"] == 40
    assert summary["seed"] == 2
    # Progress went to stderr, as plain lines (not a terminal here).
    assert err.splitlines()[-1].startswith("resilient_transport()  80/80 in ")


def check_json(summary: dict[str, Any], *, requests: int) -> None:
    assert summary["ok"] is True
    assert summary["requests"] == requests
    assert sum(summary["workload"].values()) == requests
    stack, bare = summary["runs"]["stack"], summary["runs"]["bare"]
    assert stack["succeeded"] == requests
    assert stack["success_rate"] == 1.0
    assert stack["failed"] == 0
    assert stack["duplicate_posts"] == 0
    assert stack["retries_total"] == sum(stack["retries"].values()) > 0
    assert bare["succeeded"] + bare["failed"] == requests
    assert bare["retries"] == {}
    for run in (stack, bare):
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert run["server_received"] >= run["server_processed"] > 0
    assert set(stack["timings"]) >= {"dns", "connect", "tls", "queue", "wait", "total"}
    assert summary["span_tree"]["children"]


def test_demo_text(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["demo", "--requests", "60", "--concurrency", "30", "--seed", "4"], sleep=quick_sleep
    )
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("httpx-resilience demo: 60 requests (")
    rows = {line.split("  ")[0]: line for line in lines}
    assert "succeeded" in rows
    assert "60/60 (100.0%)" in rows["succeeded"]
    assert "duplicate POSTs the server processed" in rows
    assert any(line.startswith("span tree of one retried request") for line in lines)
    assert any("resend_count=1" in line for line in lines)
    assert any(line.strip().startswith("dns ") for line in lines)
    assert lines[-1].startswith("OK: resilient_transport() got an answer for all 60 requests")
    assert "bare httpx             60/60 in " in err


def summary(**changes: Any) -> RunSummary:
    values: dict[str, Any] = {
        "client": "resilient_transport()",
        "requests": 10,
        "succeeded": 10,
        "failed": 0,
        "failures": {},
        "failed_processed": {},
        "server_received": 12,
        "server_processed": 11,
        "retries": {"503": 2},
        "duplicate_posts": 0,
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 3.0},
        "connections": 1,
        "goaways": 0,
        "seconds": 0.1,
        "timings": None,
    }
    values.update(changes)
    return RunSummary(**values)


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"succeeded": 9, "failed": 1, "failures": {"503": 1}}, False),
        ({"duplicate_posts": 1}, False),
    ],
)
def test_the_verdict_needs_every_answer_and_no_duplicate_post(
    changes: dict[str, Any], ok: bool
) -> None:
    bare = summary(client="bare httpx", succeeded=7, failed=3, failed_processed={"POST": 1})
    result = DemoResult(DemoOptions(requests=10), [], bare, summary(**changes), None, {})
    assert result.ok is ok
    verdict = format_verdict(result)
    assert verdict[0].startswith("bare httpx: 3 of 10 requests failed; the server had processed 1")
    assert verdict[-1].startswith("OK: " if ok else "FAILED: ")


def test_python_m_demo_in_a_subprocess() -> None:
    command = [sys.executable, "-m", "httpx_resilience", "demo", "--requests", "100", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    check_json(json.loads(done.stdout), requests=100)


def test_workload_is_a_function_of_the_seed() -> None:
    one = workload(DemoOptions(requests=50, seed=9))
    assert one == workload(DemoOptions(requests=50, seed=9))
    assert one != workload(DemoOptions(requests=50, seed=10))
    assert {w.method for w in one} == {"GET", "POST"}
    assert all((w.body is None) == (w.method == "GET") for w in one)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="requests must be at least 1"):
        DemoOptions(requests=0)
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        DemoOptions(concurrency=0)


@pytest.mark.parametrize(
    ("p", "expected"), [(0, 1.0), (50, 5.0), (90, 9.0), (95, 10.0), (99, 10.0), (100, 10.0)]
)
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    assert percentile([float(n) for n in range(1, 11)], p) == expected
    assert percentile([], p) == 0.0


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_bar() -> None:
    stream = FakeTerminal()
    progress = ProgressPrinter(stream)
    for done in range(1, 11):
        progress("stack", done, 10)
    text = stream.getvalue()
    assert text.startswith("\rresilient_transport()  [")
    assert text.endswith("] 10/10  " + text.rsplit("10/10  ", 1)[1])
    assert text.count("\n") == 1
    assert "#" * 30 in text


def test_progress_elsewhere_is_a_few_lines() -> None:
    stream = io.StringIO()
    progress = ProgressPrinter(stream)
    for done in range(1, 9):
        progress("bare", done, 8)
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["2/8", "4/8", "6/8", "8/8"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_in_the_middle_of_the_run_is_one_line(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C lands in one of many tasks; trio then wraps it in an exception group."""

    async def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    code = main(
        ["demo", "--backend", backend, "--requests", "40", "--concurrency", "20"],
        sleep=interrupted,
    )
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.endswith("\nhttpx-resilience demo: interrupted\n")
