"""What every benchmark section shares: server processes, clocks, medians, tables."""

from __future__ import annotations

import json
import os
import platform
import queue
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Versions reported with every run.
PACKAGES = (
    "httpx-resilience",
    "httpx",
    "httpcore",
    "h2",
    "h11",
    "anyio",
    "sniffio",
    "tenacity",
    "httpx-retries",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-httpx",
    "hypercorn",
)


class ServerProcess:
    """A server of ``_server.py`` in a child process, driven by JSON lines.

    >>> with ServerProcess("--plan", "ok") as server:  # doctest: +SKIP
    ...     server.url, server.command("stats")
    """

    def __init__(self, *args: str, timeout: float = 30.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(HERE / "_server.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        ready = self._next(timeout)
        self.url: str = ready["url"]
        self.ca: str = ready["ca"]
        self.kind: str = ready["server"]

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _next(self, timeout: float) -> Any:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise RuntimeError("the server process did not answer in time") from None
        if not line:
            raise RuntimeError(f"the server process ended (exit code {self._proc.wait(5)})")
        return json.loads(line)

    def command(self, command: str, timeout: float = 30.0) -> Any:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._next(timeout)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the server's CA only (one per client: httpcore
        sets ALPN on the context it is given)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(self.ca)
        return context

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
                self._proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # noqa: PERF203 - once per package
            found[name] = "-"
    return found


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "load": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def valgrind_instructions(script: str, args: Sequence[str], timeout: float = 900) -> int:
    """User-space CPU instructions of ``python script *args`` under valgrind.

    Cachegrind without its cache simulation counts every instruction the
    process runs: the same figure on every run of the same work, however
    busy the machine is.
    """
    import re

    proc = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            script,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=False,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"valgrind run failed for {list(args)}:\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))
