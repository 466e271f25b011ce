"""Section 4: peak memory while streaming a large body.

Each measurement is a fresh Python process (``--child``) that imports
everything, sends one small request to warm up, resets the kernel's peak
RSS mark (``/proc/self/clear_refs``), then streams ``/bytes?size=N`` from
the fault server (its own process; it never holds the body) through
``client.stream()``, reading chunks and dropping them. Growth is the peak
RSS during the download minus the RSS just before it. Bare httpx and our
full stack (SDK tracing, the heaviest) run alternately, over HTTP/1.1 and
HTTP/2.

    python benchmarks/memory.py [--mb 500] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import HERE, ServerProcess, log, median, table

CASES = [
    ("HTTP/1.1", False, "bare"),
    ("HTTP/1.1", False, "full_sdk"),
    ("HTTP/2", True, "bare"),
    ("HTTP/2", True, "full_sdk"),
]
LABELS = {"bare": "bare httpx", "full_sdk": "ours: full stack, SDK tracing"}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def child(url: str, ca: str, key: str, http2: bool, size: int) -> dict[str, Any]:
    import ssl

    import httpx
    from _configs import Sdk

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    sdk = None
    if key == "bare":
        transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(verify=context, http2=http2)
    else:
        from httpx_resilience import resilient_transport

        sdk = Sdk.create()
        transport = resilient_transport(
            verify=context,
            http2=http2,
            tracer_provider=sdk.tracer_provider,
            meter_provider=sdk.meter_provider,
        )
    async with httpx.AsyncClient(transport=transport, timeout=60.0) as client:
        await client.get(f"{url}/bytes?size=65536")  # warm up: imports, connection
        import gc

        gc.collect()
        peak_reset = _reset_peak()
        before = _status_kb("VmRSS")
        received = chunks = largest = 0
        start = time.perf_counter()
        async with client.stream("GET", f"{url}/bytes?size={size}") as response:
            version = response.http_version
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                chunks += 1
                if len(chunk) > largest:
                    largest = len(chunk)
        seconds = time.perf_counter() - start
        peak = _status_kb("VmHWM")
        if not peak_reset:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spans = len(sdk.exporter.get_finished_spans()) if sdk else None
    return {
        "received": received,
        "complete": received == size,
        "http_version": version,
        "rss_before_kb": before,
        "peak_kb": peak,
        "growth_kb": peak - before,
        "peak_reset": peak_reset,
        "chunks": chunks,
        "largest_chunk": largest,
        "seconds": seconds,
        "mb_per_s": received / seconds / 1e6,
        "spans": spans,
    }


def run(mb: float, repeat: int) -> dict[str, Any]:
    size = int(mb * 1_000_000)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with ServerProcess("--plan", "ok") as server:
        for round_number in range(repeat):
            for cell, http2, key in CASES:
                proc = subprocess.run(
                    [
                        sys.executable,
                        str(HERE / "memory.py"),
                        "--child",
                        server.url,
                        server.ca,
                        key,
                        "1" if http2 else "0",
                        str(size),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"memory child failed:\n{proc.stderr}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                samples.setdefault((cell, key), []).append(result)
                log(
                    f"  memory: {cell} {key}: +{result['growth_kb'] / 1024:.1f} MB peak, "
                    f"{result['mb_per_s']:.0f} MB/s (round {round_number + 1}/{repeat})"
                )
    rows = []
    for cell, _, key in CASES:
        s = samples[cell, key]
        rows.append(
            {
                "cell": cell,
                "key": key,
                "label": LABELS[key],
                "growth_mb": median([x["growth_kb"] for x in s]) / 1024,
                "rss_before_mb": median([x["rss_before_kb"] for x in s]) / 1024,
                "mb_per_s": median([x["mb_per_s"] for x in s]),
                "complete": all(x["complete"] for x in s),
                "chunks": s[-1]["chunks"],
                "largest_chunk": s[-1]["largest_chunk"],
                "samples": s,
            }
        )
    by = {(r["cell"], r["key"]): r for r in rows}
    for r in rows:
        r["growth_vs_bare_mb"] = r["growth_mb"] - by[r["cell"], "bare"]["growth_mb"]
    return {"body_mb": mb, "repeat": repeat, "rows": rows}


def render(result: dict[str, Any]) -> str:
    return table(
        [
            "protocol",
            "configuration",
            "RSS before MB",
            "peak growth MB",
            "vs bare MB",
            "MB/s",
            "complete",
        ],
        [
            [
                r["cell"],
                r["label"],
                r["rss_before_mb"],
                r["growth_mb"],
                r["growth_vs_bare_mb"],
                r["mb_per_s"],
                "yes" if r["complete"] else "NO",
            ]
            for r in result["rows"]
        ],
    )


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        _, _, url, ca, key, http2, size = sys.argv
        result = asyncio.run(child(url, ca, key, http2 == "1", int(size)))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=500)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(render(run(args.mb, args.repeat)))


if __name__ == "__main__":
    main()
