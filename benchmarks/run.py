"""Run the benchmarks: overhead in process and on loopback, faults, memory.

    python benchmarks/run.py                 # everything, a few minutes on 2 cores
    python benchmarks/run.py --quick         # smaller: a smoke test of the suite
    python benchmarks/run.py --only overhead # or loopback, sniffio, faults, memory
    python benchmarks/run.py --instructions  # also count instructions (valgrind)

Prints the tables and the targets of issues 7, 13 and 14, writes
``benchmarks/results/latest.json`` and, when every section ran,
``benchmarks/RESULTS.md``. See ``benchmarks/README.md`` for how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults
import loopback
import memory
import overhead
import pool
from _common import HERE, ROOT, log, machine, table, versions

SECTIONS = ("overhead", "loopback", "pool", "sniffio", "faults", "memory")
#: Run only when asked (--instructions): valgrind, a few minutes more.
OPTIONAL = ("instructions",)
INSTRUCTION_KEYS = [
    "bare",
    "request_id",
    "retry",
    "tracing_noop",
    "full_noop",
    "full_sdk",
    "peers_noop",
    "peers_sdk",
    # httpx.Client (issue 14) and httpx2 (issue 13), each x its own bare client.
    "sync_bare",
    "sync_full_noop",
    "sync_full_sdk",
    "sync_peers_noop",
    "sync_peers_sdk",
    *(
        ["httpx2_bare", "httpx2_full_noop", "httpx2_sync_bare", "httpx2_sync_full_noop"]
        if overhead.HTTPX2
        else []
    ),
]

#: The full stack (no-op tracing) of each other client and its bare row: <= 1.15x.
OTHER_CLIENTS = [
    ("httpx.Client (sync)", "sync_bare", "sync_full_noop"),
    ("httpx2.AsyncClient (httpx_resilience.httpx2)", "httpx2_bare", "httpx2_full_noop"),
    ("httpx2.Client (httpx_resilience.httpx2)", "httpx2_sync_bare", "httpx2_sync_full_noop"),
]

FULL = {
    "overhead": {"rounds": 15, "seconds": 0.05},
    "loopback": {"rounds": 4, "seconds": 0.25},
    "sniffio": {"rounds": 4, "seconds": 0.25},
    "faults": {"scale": 1.0},
    "memory": {"mb": 500, "repeat": 1},
    "pool": {},
    "instructions": {"n": 1000},
}
QUICK = {
    "overhead": {"rounds": 5, "seconds": 0.03},
    "loopback": {"rounds": 2, "seconds": 0.1},
    "sniffio": {"rounds": 2, "seconds": 0.1},
    "faults": {"scale": 0.3},
    "memory": {"mb": 50, "repeat": 1},
    "pool": {},
    "instructions": {"n": 300},
}


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except OSError:
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_modified": [line[3:] for line in git("status", "--porcelain", "src").splitlines()],
    }


def run_section(name: str, params: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    if name == "overhead":
        result = asyncio.run(overhead.run(**params))
    elif name == "loopback":
        result = asyncio.run(loopback.run(**params))
    elif name == "sniffio":
        result = loopback.run_sniffio(**params)
    elif name == "faults":
        result = asyncio.run(faults.run(**params))
    elif name == "memory":
        result = memory.run(**params)
    elif name == "pool":
        result = pool.run(**params)
    elif name == "instructions":
        import hotpath

        text, result = hotpath.instructions_report(INSTRUCTION_KEYS, **params)
        # And the client's instructions against a real server, HTTP/1.1 sequential.
        cases = [(key, False, 1) for key in ("bare", "http_transport", "full_noop")]
        loopback_counts = hotpath.loopback_instructions(cases, n=max(100, params["n"] // 3))
        result["loopback_h1_sequential"] = {key: v for (key, _, _), v in loopback_counts.items()}
        bare_h1 = loopback_counts[("bare", False, 1)]
        text += (
            "\n\nClient CPU instructions per request on loopback, HTTP/1.1 sequential "
            "(valgrind; the server is not counted):\n"
            + table(
                ["configuration", "k instr/req", "x bare"],
                [[key, v / 1000, v / bare_h1] for (key, _, _), v in loopback_counts.items()],
            )
        )
        # What the GOAWAY guard and the request ID cost on HTTP/2 (issue 17).
        h2_counts = hotpath.loopback_instructions(hotpath.H2_CASES, n=max(100, params["n"] // 3))
        result["loopback_h2_sequential"] = {key: v for (key, _, _), v in h2_counts.items()}
        result["h2_costs"] = hotpath.h2_costs(h2_counts)
        text += (
            "\n\nClient CPU instructions per request on loopback, HTTP/2 sequential, and what "
            "the GOAWAY guard (before any GOAWAY) and the request ID add:\n"
            + table(
                ["configuration", "k instr/req"],
                [[key, v / 1000] for (key, _, _), v in h2_counts.items()]
                + [[f"= {name}", v / 1000] for name, v in result["h2_costs"].items()],
            )
        )
        result["text"] = text
    else:
        raise KeyError(name)
    result["params"] = params
    result["seconds"] = time.perf_counter() - start
    return result


RENDER = {
    "instructions": lambda result: result["text"],
    "overhead": overhead.render,
    "loopback": loopback.render,
    "sniffio": loopback.render_sniffio,
    "faults": faults.render,
    "memory": memory.render,
    "pool": pool.render,
}

TITLES = {
    "instructions": "1b. CPU instructions per request in process (valgrind; deterministic)",
    "overhead": "1. Overhead in process (innermost: a fixed in-memory response)",
    "loopback": "2. Overhead on loopback (TLS, the fault server in its own process)",
    "sniffio": "2b. Fresh install: httpcore with and without sniffio (loopback)",
    "faults": "3. Under faults (the fault server in its own process)",
    "memory": "4. Memory while streaming",
    "pool": "2c. The pool under bursts of HTTP/1.1 requests (in memory; deterministic)",
}


# -- targets ---------------------------------------------------------------------


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issues 7, 13 and 14: what was measured, and met or missed."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append(
            {
                "target": target,
                "measured": measured,
                "status": {True: "met", False: "MISSED", None: "n/a"}[met],
            }
        )

    if "overhead" in results:
        rows = results["overhead"]["rows"]
        bare, full, sdk, peers = (
            _row(rows, key=k) for k in ("bare", "full_noop", "full_sdk", "peers_sdk")
        )
        if bare and full:
            add(
                "full stack, no-op tracing: <= 1.15x bare in process (about +12 µs at 80 µs bare)",
                f"{full['ratio']:.3f}x, +{full['added_us']:.1f} µs at {bare['us_per_request']:.0f} µs bare",
                full["ratio"] <= 1.15,
            )
        if bare and sdk and peers:
            add(
                "full stack, SDK: added cost <= 1/2 of httpx-retries + OTel + uuid4 (SDK)",
                f"+{sdk['added_us']:.0f} µs vs +{peers['added_us']:.0f} µs "
                f"({sdk['added_us'] / peers['added_us']:.2f} of it)",
                sdk["added_us"] <= 0.5 * peers["added_us"],
            )
        for client, bare_key, full_key in OTHER_CLIENTS:
            bare, full = _row(rows, key=bare_key), _row(rows, key=full_key)
            if bare and full:
                add(
                    f"{client}: full stack, no-op tracing: <= 1.15x bare in process",
                    f"{full['ratio']:.3f}x, +{full['added_us']:.1f} µs at "
                    f"{bare['us_per_request']:.0f} µs bare",
                    full["ratio"] <= 1.15,
                )
        sdk, peers = _row(rows, key="sync_full_sdk"), _row(rows, key="sync_peers_sdk")
        if sdk and peers:
            noop = _row(rows, key="sync_peers_noop")
            add(
                "httpx.Client (sync): full stack, SDK: added cost <= 1/2 of httpx-retries "
                "+ OTel sync + uuid4 (SDK)",
                f"+{sdk['added_us']:.0f} µs vs +{peers['added_us']:.0f} µs "
                f"({sdk['added_us'] / peers['added_us']:.2f} of it)"
                + (f"; peers no-op: {noop['ratio']:.2f}x bare" if noop else ""),
                sdk["added_us"] <= 0.5 * peers["added_us"],
            )
    if "instructions" in results:
        counts = results["instructions"]["instructions_per_request"]
        bare = counts["bare"]
        if "full_noop" in counts:
            add(
                "(deterministic) full stack, no-op: <= 1.15x bare in CPU instructions, in process",
                f"{counts['full_noop'] / bare:.3f}x ({(counts['full_noop'] - bare) / 1000:+.0f}k "
                f"instructions on {bare / 1000:.0f}k)",
                counts["full_noop"] / bare <= 1.15,
            )
        if "full_sdk" in counts and "peers_sdk" in counts:
            mine, theirs = counts["full_sdk"] - bare, counts["peers_sdk"] - bare
            add(
                "(deterministic) full stack, SDK: <= 1/2 the added instructions of the peers (SDK)",
                f"{mine / 1000:+.0f}k vs {theirs / 1000:+.0f}k ({mine / theirs:.2f} of it)",
                mine <= 0.5 * theirs,
            )
        for client, bare_key, full_key in OTHER_CLIENTS:
            if bare_key in counts and full_key in counts:
                ratio = counts[full_key] / counts[bare_key]
                add(
                    f"(deterministic) {client}: full stack, no-op: <= 1.15x bare in CPU "
                    "instructions, in process",
                    f"{ratio:.3f}x ({(counts[full_key] - counts[bare_key]) / 1000:+.0f}k "
                    f"instructions on {counts[bare_key] / 1000:.0f}k)",
                    ratio <= 1.15,
                )
        if all(k in counts for k in ("sync_bare", "sync_full_sdk", "sync_peers_sdk")):
            sync_bare = counts["sync_bare"]
            mine, theirs = (
                counts["sync_full_sdk"] - sync_bare,
                counts["sync_peers_sdk"] - sync_bare,
            )
            add(
                "(deterministic) httpx.Client (sync): full stack, SDK: <= 1/2 the added "
                "instructions of the peers (SDK)",
                f"{mine / 1000:+.0f}k vs {theirs / 1000:+.0f}k ({mine / theirs:.2f} of it)",
                mine <= 0.5 * theirs,
            )
        h1_counts = results["instructions"].get("loopback_h1_sequential", {})
        if "bare" in h1_counts and "full_noop" in h1_counts:
            ratio = h1_counts["full_noop"] / h1_counts["bare"]
            add(
                "(deterministic) full stack, no-op: <= 1.05x bare client CPU instructions, "
                "loopback HTTP/1.1",
                f"{ratio:.3f}x ({(h1_counts['full_noop'] - h1_counts['bare']) / 1000:+.0f}k on "
                f"{h1_counts['bare'] / 1000:.0f}k; our base transport alone "
                f"{h1_counts['http_transport'] / h1_counts['bare']:.3f}x)",
                ratio <= 1.05,
            )
    if "loopback" in results:
        rows = results["loopback"]["rows"]
        full = _row(rows, cell="HTTP/1.1 sequential", key="full_noop")
        if full:
            time_ratio = 1 / full["ratio"]
            add(
                "full stack, no-op tracing: <= 1.05x bare per request on loopback HTTP/1.1",
                f"{time_ratio:.3f}x time per request (throughput {full['ratio']:.3f}x bare)",
                time_ratio <= 1.05,
            )
        h2 = _row(rows, cell="HTTP/2 50 concurrent", key="full_noop")
        h1 = _row(rows, cell="HTTP/1.1 50 concurrent", key="full_noop")
        if h2 and h1:
            gain = h2["requests_per_s"] / h1["requests_per_s"]
            add(
                "HTTP/2, 50 concurrent: 1 connection (1-2 allowed), throughput >= 1.6x HTTP/1.1 (ours)",
                f"{h2['opened_cold_burst']} connection(s) for 50 concurrent requests on a new "
                f"client, {h2['opened_per_1k']:.1f} opened per 1k requests in steady state; "
                f"{h2['requests_per_s']:.0f} vs {h1['requests_per_s']:.0f} req/s = {gain:.2f}x",
                h2["opened_cold_burst"] <= 2 and h2["opened_per_1k"] == 0 and gain >= 1.6,
            )
    if "sniffio" in results:
        rows = results["sniffio"]["rows"]
        parts, ok = [], True
        for cell in ("HTTP/1.1 sequential", "HTTP/2 50 concurrent"):
            ours = _row(rows, cell=cell, key="full_noop")
            if ours:
                parts.append(f"{cell}: {ours['ratio_vs_fresh_bare']:.2f}x")
                ok = ok and ours["ratio_vs_fresh_bare"] >= 1.0
        add(
            "fresh install of ours not slower than fresh bare httpx (no sniffio) on loopback",
            "throughput of ours / fresh bare: " + "; ".join(parts),
            ok if parts else None,
        )
    if "faults" in results:
        for name in ("mixed", "goaway"):
            rows = results["faults"][name]["rows"]
            ours = _row(rows, key="ours")
            peer3 = _row(rows, key="httpx_retries_3")
            peer_default = _row(rows, key="httpx_retries_default")
            if not ours:
                continue
            get = ours["GET"]
            add(
                f"faults ({name}): 100% of GETs succeed where 3 attempts can",
                f"{get['succeeded']}/{get['requests']} ok, {get['failed_recoverable']} failed "
                "that 3 attempts could have saved",
                get["failed_recoverable"] == 0,
            )
            add(
                f"faults ({name}): 0 duplicate POSTs",
                f"{ours['POST']['processed_more_than_once']} POSTs processed twice "
                f"({ours['POST']['succeeded']}/{ours['POST']['requests']} POSTs ok)",
                ours["POST"]["processed_more_than_once"] == 0,
            )
            if peer3 and peer_default:
                # GETs: what both retry (httpx-retries never re-sends a
                # POST, so counting POSTs would reward giving up on them),
                # per GET that succeeded, as success rates differ.
                mine = get["received_per_success"]
                add(
                    f"faults ({name}): amplification no worse than httpx-retries, 3 attempts "
                    "(server-received per successful GET)",
                    f"ours {mine:.2f} vs httpx-retries {peer3['GET']['received_per_success']:.2f} "
                    f"(3 attempts), {peer_default['GET']['received_per_success']:.2f} (default); "
                    f"per GET sent: {get['amplification']:.2f} ({get['succeeded']} ok) vs "
                    f"{peer3['GET']['amplification']:.2f} ({peer3['GET']['succeeded']} ok) / "
                    f"{peer_default['GET']['amplification']:.2f} ({peer_default['GET']['succeeded']} ok)",
                    # Against the comparable configuration (3 attempts).
                    mine <= peer3["GET"]["received_per_success"] + 0.005,
                )
    if "memory" in results:
        rows = results["memory"]["rows"]
        worst = max((r["growth_vs_bare_mb"] for r in rows if r["key"] != "bare"), default=None)
        if worst is not None:
            add(
                f"streaming {results['memory']['body_mb']:g} MB: peak RSS growth within 10 MB of bare",
                "; ".join(
                    f"{r['cell']}: {r['growth_mb']:.1f} MB ({r['growth_vs_bare_mb']:+.1f} vs bare)"
                    for r in rows
                    if r["key"] != "bare"
                ),
                worst <= 10 and all(r["complete"] for r in rows),
            )
    out += targets_17(results)
    return out


#: Measured before issue 17, on this machine (valgrind, loopback HTTP/2
#: sequential, 300 requests; ``hotpath.py h2-instructions`` at commit cfc995e):
#: the guard's instructions per request before any GOAWAY, and the request ID's.
GUARD_BEFORE = 148_300
REQUEST_ID_BEFORE = 211_000
#: The GOAWAY scenario's p50 / p99 (ms) when issue 17 was filed.
GOAWAY_BEFORE_MS = (643.0, 3300.0)


def targets_17(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of issue 17: bursts, GOAWAY latency, the HTTP/2 hot path."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        status = {True: "met", False: "MISSED", None: "n/a"}[met]
        out.append({"target": target, "measured": measured, "status": status})

    if "loopback" in results:
        rows = results["loopback"]["rows"]
        cells = sorted({row["cell"] for row in rows})
        parts, ok = [], True
        for cell in cells:
            ours, full = (_row(rows, cell=cell, key=k) for k in ("http_transport", "full_noop"))
            if ours and full:
                parts.append(f"{cell}: {ours['ratio']:.2f} / {full['ratio']:.2f}")
                ok = ok and ours["ratio"] >= 1.0 and full["ratio"] >= 0.97
        add(
            "(17) every loopback cell: HTTPTransport >= 1.0x bare, full stack >= 0.97x",
            "HTTPTransport / full stack, x bare throughput: " + "; ".join(parts),
            ok if parts else None,
        )
        full, bare = (
            _row(rows, cell="HTTP/1.1 50 concurrent", key=k) for k in ("full_noop", "bare")
        )
        if full and bare:
            add(
                "(17) HTTP/1.1 50 concurrent: full stack opens <= 60 connections and beats bare",
                f"{full['opened_total']} connections opened over the run (bare: "
                f"{bare['opened_total']}); {full['ratio']:.2f}x bare throughput",
                full["opened_total"] <= 60 and full["ratio"] > 1.0,
            )
    if "pool" in results:
        rows = {row["key"]: row for row in results["pool"]["rows"]}
        if "full" in rows and "bare" in rows:
            full, bare = rows["full"], rows["bare"]
            add(
                "(17) bursts of 50 in memory: the full stack reopens no connection",
                f"{full['opened']} opened after the first burst, "
                f"{full['per_request'].get('assign', 0):.1f} pool passes per request "
                f"(bare httpx: {bare['opened']}, {bare['per_request'].get('assign', 0):.1f})",
                full["opened"] == 0,
            )
    if "faults" in results:
        ours = _row(results["faults"]["goaway"]["rows"], key="ours")
        if ours:
            p50, p99 = ours["ALL"]["p50_ms"], ours["ALL"]["p99_ms"]
            add(
                "(17) GOAWAY scenario: p50 and p99 at most half of issue 17's "
                f"({GOAWAY_BEFORE_MS[0]:.0f} / {GOAWAY_BEFORE_MS[1]:.0f} ms, an earlier run)",
                f"{p50:.0f} / {p99:.0f} ms ({p50 / GOAWAY_BEFORE_MS[0]:.2f} / "
                f"{p99 / GOAWAY_BEFORE_MS[1]:.2f} of it); {ours['GET']['succeeded']}/"
                f"{ours['GET']['requests']} GETs ok, "
                f"{ours['POST']['processed_more_than_once']} POSTs processed twice",
                p50 <= GOAWAY_BEFORE_MS[0] / 2
                and p99 <= GOAWAY_BEFORE_MS[1] / 2
                and ours["GET"]["succeeded"] == ours["GET"]["requests"]
                and ours["POST"]["processed_more_than_once"] == 0,
            )
    costs = results.get("instructions", {}).get("h2_costs")
    if costs:
        add(
            "(17, deterministic) HTTP/2: the guard's instructions per request before any GOAWAY halved",
            f"{costs['guard'] / 1000:+.0f}k vs {GUARD_BEFORE / 1000:+.0f}k before "
            f"({costs['guard'] / GUARD_BEFORE:.2f} of it)",
            costs["guard"] <= GUARD_BEFORE / 2,
        )
        add(
            "(17, deterministic) HTTP/2: the request ID's instructions at most 1/3 of before",
            f"{costs['request_id'] / 1000:+.0f}k vs {REQUEST_ID_BEFORE / 1000:+.0f}k before "
            f"({costs['request_id'] / REQUEST_ID_BEFORE:.2f} of it; a fixed ID: "
            f"{costs['fixed_request_id'] / 1000:+.0f}k)",
            costs["request_id"] <= REQUEST_ID_BEFORE / 3,
        )
    return out


def render_targets(rows: list[dict[str, Any]]) -> str:
    return table(
        ["target", "measured", "status"], [[t["target"], t["measured"], t["status"]] for t in rows]
    )


def results_md(payload: dict[str, Any]) -> str:
    m, v, g = payload["machine"], payload["versions"], payload["git"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run.py`"
        + (
            " --quick (smaller, a smoke test: do not compare with full runs)"
            if payload["quick"]
            else ""
        )
        + "; how to read it: [README.md](README.md). Only ratios taken in the same run compare.",
        "",
        f"- date: {m['date']}; the run took {payload['seconds']:.0f} s",
        f"- machine: {m['cores']} cores, {m['cpu']}, {m['platform']}",
        f"- load average before / after: {m['load']} / {payload['load_after']}",
        f"- Python {m['python']} ({m['implementation']})",
        f"- httpx-resilience at commit {g['commit']}"
        + (
            f", with uncommitted changes in {', '.join(g['src_modified'])}"
            if g["src_modified"]
            else ""
        ),
        "- " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        "## Targets (issues 7, 13, 14 and 17)",
        "",
        render_targets(payload["targets"]),
        "",
    ]
    for name in ("overhead", "instructions", *SECTIONS[1:]):
        if name in payload["results"]:
            section = payload["results"][name]
            lines += [
                f"## {TITLES[name]}",
                "",
                f"({section['seconds']:.0f} s; {section['params']})",
                "",
            ]
            lines += [RENDER[name](section), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer rounds")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS + OPTIONAL, help="run only these sections"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count CPU instructions per request under valgrind (deterministic; minutes)",
    )
    args = parser.parse_args()
    chosen = [s for s in SECTIONS if not args.only or s in args.only]
    if args.instructions or (args.only and "instructions" in args.only):
        chosen.insert(1 if chosen and chosen[0] == "overhead" else 0, "instructions")
    params = QUICK if args.quick else FULL
    start = time.perf_counter()
    info = machine()
    if info["load"][0] > 0.5 * (os.cpu_count() or 1):
        log(f"note: load average {info['load']}: the machine is busy, expect noisy figures")
    results: dict[str, Any] = {}
    for name in chosen:
        log(f"{TITLES[name]} ...")
        results[name] = run_section(name, params[name])
        print(f"\n## {TITLES[name]}\n\n{RENDER[name](results[name])}\n", flush=True)
    payload = {
        "quick": args.quick,
        "sections": chosen,
        "machine": info,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
        "git": git_state(),
        "seconds": time.perf_counter() - start,
        "results": results,
    }
    payload["targets"] = targets(results)
    print(f"## Targets\n\n{render_targets(payload['targets'])}\n")
    print(f"total: {payload['seconds']:.0f} s")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if all(name in chosen for name in SECTIONS):
        (HERE / "RESULTS.md").write_text(results_md(payload))
        log("wrote benchmarks/results/latest.json and benchmarks/RESULTS.md")
    else:
        log("wrote benchmarks/results/latest.json (RESULTS.md only after a run of every section)")


if __name__ == "__main__":
    main()
