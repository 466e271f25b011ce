"""Section 3: behaviour under faults, against the fault server in its own process.

Scenario "mixed faults" (HTTP/1.1 over TLS): every request draws, from a
seeded generator, 20% ``503`` (no ``Retry-After``), 5% a TCP reset before
any byte of the response (the server did the work; the answer is lost),
2% a 0.1 s delay, the rest ``200``. A fixed workload of GETs and POSTs,
shuffled with a seed, goes through each configuration from 10 concurrent
tasks. Each logical request has a route of its own in the plan, whose
generator is seeded from its path: attempt k of request i meets the same
outcome in every configuration, whatever the order of arrival, so the
configurations are compared on identical faults. Every logical request
carries its own ``X-Request-ID`` (set by the caller; our request-ID layer
keeps it), so the server's records tell how many times each was received
and processed.

Scenario "GOAWAY" (HTTP/2 over TLS): the server ends every connection
with a GOAWAY after 20 requests (as nginx does after
``keepalive_requests``) and answers every stream up to it; 600 GETs and
600 POSTs from 200 concurrent tasks.

All retrying configurations wait the same small backoff (5 ms, then
10 ms, no jitter); nothing is injected: the waits are real and small.

    python benchmarks/faults.py [--scale 1.0]
    python benchmarks/faults.py --only goaway --configs bare,ours,ours_no_budget --rounds 3

Each row also says where the wall time went: the client's CPU time, the
time it waited for a CPU (Linux: ``/proc/self/schedstat``; on a busy
machine the wall time is about their sum), the server's CPU time, and, for
our configurations, the re-sends at once (unprocessed, free of the retry
budget) and the re-sends after a wait (each one spent from the budget).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import os
import random
import time
from typing import Any

import httpx
from _common import ServerProcess, log, percentile, table
from _configs import Built

WORKERS = 10
GOAWAY_WORKERS = 200


def build(key: str, context: Any, http2: bool) -> Built:
    from httpx_retries import Retry, RetryTransport
    from tenacity import wait_exponential

    from httpx_resilience import RetryPolicy, resilient_transport

    def base() -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(verify=context, http2=http2)

    # 5 ms then 10 ms for every retrying configuration.
    ours_policy = RetryPolicy(wait=wait_exponential(multiplier=0.005, max=0.05))
    if key == "bare":
        return Built(base())
    if key == "httpx_retries_default":
        return Built(RetryTransport(transport=base()))
    if key == "httpx_retries_3":
        retry = Retry(total=2, backoff_factor=0.0025, backoff_jitter=0.0)
        return Built(RetryTransport(transport=base(), retry=retry))
    if key == "ours":
        return Built(resilient_transport(verify=context, http2=http2, retry=ours_policy))
    if key == "ours_no_budget":
        # The retry budget (on by default) caps retries at ~20% of requests;
        # without it, what the retry decisions alone achieve.
        policy = dataclasses.replace(ours_policy, budget=None)
        return Built(resilient_transport(verify=context, http2=http2, retry=policy))
    if key == "ours_keys":
        return Built(
            resilient_transport(
                verify=context, http2=http2, retry=ours_policy, idempotency_keys=True
            )
        )
    raise KeyError(key)


LABELS = {
    "bare": "bare httpx",
    "httpx_retries_default": "httpx-retries, default Retry() (10 retries, no backoff)",
    "httpx_retries_3": "httpx-retries, 3 attempts, 5/10 ms backoff",
    "ours": "ours: resilient_transport(), 3 attempts, 5/10 ms",
    "ours_no_budget": "ours, retry budget off (budget=None)",
    "ours_keys": "ours + idempotency_keys=True",
}


async def workload(
    built: Built,
    url: str,
    jobs: list[tuple[str, str]],
    workers: int,
    timeout: float,
    per_request_paths: bool,
) -> dict[str, dict[str, Any]]:
    """Send every (method, request ID) in ``jobs``; outcome and latency of each.

    With ``per_request_paths`` the i-th job goes to ``/r/i``, the route of
    its own in the server's plan.
    """
    results: dict[str, dict[str, Any]] = {}
    queue: collections.deque[tuple[int, tuple[str, str]]] = collections.deque(enumerate(jobs))
    async with httpx.AsyncClient(
        transport=built.transport, event_hooks=built.hooks, timeout=5.0
    ) as client:

        async def worker() -> None:
            while queue:
                index, (method, rid) = queue.popleft()
                headers = {"X-Request-ID": rid}
                if per_request_paths:
                    target = f"{url}/r/{index}"
                else:
                    target = f"{url}/items" if method == "GET" else f"{url}/payments"
                start = time.perf_counter()
                try:
                    if method == "GET":
                        response = await client.get(target, headers=headers)
                    else:
                        response = await client.post(
                            target, headers=headers, json={"amount": 10, "id": rid}
                        )
                    outcome = str(response.status_code)
                    history = response.extensions.get("retry")
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                    history = None
                events = getattr(history, "events", ())
                results[rid] = {
                    "method": method,
                    "outcome": outcome,
                    "seconds": time.perf_counter() - start,
                    "at_once": sum(1 for e in events if e.unprocessed),
                    "waited": sum(1 for e in events if not e.unprocessed),
                }

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), timeout)
    return results


def cpu_and_wait() -> tuple[float, float | None]:
    """This process's CPU seconds, and seconds it waited for a CPU (Linux only)."""
    cpu = time.process_time()
    try:
        tasks = os.listdir("/proc/self/task")
        waited = 0
        for task in tasks:
            with open(f"/proc/self/task/{task}/schedstat") as stats:
                waited += int(stats.read().split()[1])
    except (OSError, IndexError, ValueError):
        return cpu, None
    return cpu, waited / 1e9


def summarize(
    results: dict[str, dict[str, Any]], records: list[list[Any]], max_attempts: int = 3
) -> dict[str, Any]:
    """Success, duplicates and amplification, from the client's and the server's view."""
    per_id: dict[str, list[list[Any]]] = collections.defaultdict(list)
    for rid, method, processed, status, complete in records:
        per_id[rid].append([method, processed, status, complete])
    summary: dict[str, Any] = {}
    for method in ("GET", "POST"):
        mine = {rid: r for rid, r in results.items() if r["method"] == method}
        if not mine:
            continue
        ok = [rid for rid, r in mine.items() if r["outcome"] == "200"]
        failed = [rid for rid in mine if rid not in set(ok)]

        def attempt_failed(record: list[Any]) -> bool:
            _, _, status, complete = record
            return status != 200 or not complete

        # A failed request a 3-attempt policy could still have saved: fewer
        # than 3 of its attempts reached the server, or one of its first 3
        # did not fail there.
        recoverable_failures = [
            rid
            for rid in failed
            if len(per_id[rid]) < max_attempts
            or not all(attempt_failed(r) for r in per_id[rid][:max_attempts])
        ]
        # Failed at the client although the server acted on it: the answer
        # was lost; re-sending such a POST is what would duplicate it.
        failed_processed = sum(1 for rid in failed if any(r[1] for r in per_id[rid]))
        received = sum(len(per_id[rid]) for rid in mine)
        processed = sum(1 for rid in mine for r in per_id[rid] if r[1])
        processed_twice = sum(1 for rid in mine if sum(1 for r in per_id[rid] if r[1]) > 1)
        seconds = [r["seconds"] for r in mine.values()]
        summary[method] = {
            "requests": len(mine),
            "succeeded": len(ok),
            "success_rate": len(ok) / len(mine),
            "failed_recoverable": len(recoverable_failures),
            "succeeded_of_recoverable": len(ok)
            / max(1, len(mine) - len(failed) + len(recoverable_failures)),
            "processed_more_than_once": processed_twice,
            "failed_but_processed": failed_processed,
            "amplification": received / len(mine),
            "processed_per_request": processed / len(mine),
            "received_per_success": received / max(1, len(ok)),
            "p50_ms": percentile(seconds, 50) * 1000,
            "p99_ms": percentile(seconds, 99) * 1000,
            "outcomes": dict(collections.Counter(r["outcome"] for r in mine.values())),
        }
    all_seconds = [r["seconds"] for r in results.values()]
    summary["ALL"] = {
        "requests": len(results),
        "amplification": len(records) / len(results),
        "p50_ms": percentile(all_seconds, 50) * 1000,
        "p99_ms": percentile(all_seconds, 99) * 1000,
    }
    return summary


def jobs_for(key: str, gets: int, posts: int, seed: int) -> list[tuple[str, str]]:
    methods = ["GET"] * gets + ["POST"] * posts
    random.Random(seed).shuffle(methods)
    return [(m, f"{key}-{i:05d}") for i, m in enumerate(methods)]


async def scenario(
    plan: str,
    http2: bool,
    keys: list[str],
    gets: int,
    posts: int,
    workers: int,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """One row per configuration and round; rounds go round the configurations in turn,
    so that a busy moment of the machine falls on all of them alike."""
    rows = []
    for round_ in range(rounds):
        for key in keys:
            rows.append(await one_config(plan, http2, key, gets, posts, workers))
            rows[-1]["round"] = round_ + 1
    return rows


async def one_config(
    plan: str, http2: bool, key: str, gets: int, posts: int, workers: int
) -> dict[str, Any]:
    per_request_paths = plan == "faults"
    routes = ["--routes", str(gets + posts)] if per_request_paths else []
    with ServerProcess("--plan", plan, *routes) as server:
        built = build(key, server.ssl_context(), http2)
        jobs = jobs_for(key, gets, posts, seed=99)
        server_cpu = server.cpu_seconds()
        cpu, waited = cpu_and_wait()
        wall = time.perf_counter()
        results = await workload(
            built,
            server.url,
            jobs,
            workers,
            timeout=120.0,
            per_request_paths=per_request_paths,
        )
        wall = time.perf_counter() - wall
        cpu_after, waited_after = cpu_and_wait()
        server_cpu = server.cpu_seconds() - server_cpu
        await asyncio.sleep(0.2)  # let the server finish its records
        stats = server.command("stats")
        records = server.command("records")
    summary = summarize(results, records)
    log(
        f"  faults ({plan}): {key}: GET {summary['GET']['success_rate']:.1%} "
        f"POST {summary['POST']['success_rate']:.1%} in {wall:.1f} s"
    )
    return {
        "key": key,
        "label": LABELS[key],
        "wall_s": wall,
        "server_connections": stats["connections"],
        "server_goaways": stats.get("goaways"),
        "client_cpu_s": cpu_after - cpu,
        "client_cpu_wait_s": None
        if waited is None or waited_after is None
        else waited_after - waited,
        "server_cpu_s": server_cpu,
        "resends_at_once": sum(r["at_once"] for r in results.values()),
        "resends_waited": sum(r["waited"] for r in results.values()),
        **summary,
    }


SCENARIOS = ("mixed", "goaway")


async def run(
    scale: float = 1.0,
    only: str | None = None,
    configs: list[str] | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    keys = list(LABELS) if configs is None else configs
    result: dict[str, Any] = {}
    if only in (None, "mixed"):
        result["mixed"] = {
            "protocol": "HTTP/1.1 over TLS",
            "plan": "20% 503 (no Retry-After), 5% TCP reset before the response, 2% 0.1 s delay",
            "workers": WORKERS,
            "rows": await scenario(
                "faults",
                False,
                keys,
                gets=round(600 * scale),
                posts=round(200 * scale),
                workers=WORKERS,
                rounds=rounds,
            ),
        }
    if only in (None, "goaway"):
        result["goaway"] = {
            "protocol": "HTTP/2 over TLS",
            "plan": "GOAWAY after every 20 requests per connection (goaway_every=20)",
            "workers": GOAWAY_WORKERS,
            "rows": await scenario(
                "goaway",
                True,
                keys,
                gets=round(600 * scale),
                posts=round(600 * scale),
                workers=GOAWAY_WORKERS,
                rounds=rounds,
            ),
        }
    return result


def render(result: dict[str, Any]) -> str:
    parts = []
    for name in SCENARIOS:
        if name not in result:
            continue
        scenario_result = result[name]
        parts.append(
            f"{name}: {scenario_result['protocol']}; {scenario_result['plan']}; "
            f"{scenario_result['workers']} concurrent tasks"
        )
        parts.append(
            table(
                [
                    "configuration",
                    "GET ok",
                    "GET failed, 3 attempts could have saved",
                    "POST ok",
                    "POST failed, server had processed it",
                    "POSTs processed twice",
                    "received per request GET / POST",
                    "processed per request GET / POST",
                    "p50 / p99 ms",
                ],
                [
                    [
                        r["label"],
                        f"{r['GET']['succeeded']}/{r['GET']['requests']}",
                        r["GET"]["failed_recoverable"],
                        f"{r['POST']['succeeded']}/{r['POST']['requests']}",
                        r["POST"]["failed_but_processed"],
                        r["POST"]["processed_more_than_once"],
                        f"{r['GET']['amplification']:.2f} / {r['POST']['amplification']:.2f}",
                        f"{r['GET']['processed_per_request']:.2f} / "
                        f"{r['POST']['processed_per_request']:.2f}",
                        f"{r['ALL']['p50_ms']:.1f} / {r['ALL']['p99_ms']:.1f}",
                    ]
                    for r in scenario_result["rows"]
                ],
            )
        )
        parts.append(
            table(
                [
                    "configuration",
                    "round",
                    "wall s",
                    "connections",
                    "client CPU s",
                    "client waiting for a CPU s",
                    "server CPU s",
                    "re-sends at once",
                    "re-sends after a wait",
                ],
                [
                    [
                        r["label"],
                        r.get("round", 1),
                        r["wall_s"],
                        r["server_connections"],
                        r["client_cpu_s"],
                        r["client_cpu_wait_s"],
                        r["server_cpu_s"],
                        r["resends_at_once"],
                        r["resends_waited"],
                    ]
                    for r in scenario_result["rows"]
                ],
            )
        )
        failures = []
        for r in scenario_result["rows"]:
            for method in ("GET", "POST"):
                bad = {k: v for k, v in r[method]["outcomes"].items() if k != "200"}
                if bad:
                    failures.append(f"  {r['label']}, {method}: {bad}")
        if failures:
            parts.append("failures by outcome:\n" + "\n".join(failures))
    parts.append(
        "Received: requests the server read (amplification); processed: those it acted on "
        "(HTTP/2 streams above a GOAWAY's last_stream_id are received, never processed). "
        "With idempotency_keys=True a POST is retried with the same Idempotency-Key: a "
        "server that honours keys answers the repeat from its store; the fault server does "
        "not, so it counts them as processed twice."
    )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="workload size factor")
    parser.add_argument("--only", choices=SCENARIOS, help="run one scenario")
    parser.add_argument(
        "--configs", help=f"comma-separated configurations (default: all of {', '.join(LABELS)})"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of each configuration, taken in turn"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    configs = None if args.configs is None else args.configs.split(",")
    for key in configs or ():
        if key not in LABELS:
            parser.error(f"unknown configuration {key!r}; known: {', '.join(LABELS)}")
    print(render(asyncio.run(run(args.scale, args.only, configs, args.rounds))))


if __name__ == "__main__":
    main()
