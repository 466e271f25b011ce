"""Section 2: overhead against a real server on 127.0.0.1, over TLS.

The server is the fault server (``httpx_resilience.testing``) with a plan
that answers every request 200, in a process of its own (``_server.py``),
so that its work runs on the other core instead of inside the client's
measurement. Four cells: HTTP/1.1 and HTTP/2 (ALPN), sequential and 50
concurrent tasks. Each configuration keeps one client for the whole run;
every slice of a configuration is paired with slices of bare httpx right
before and after it, as in the in-process section, and the ratio reported
is the median of those paired throughput ratios. Connections opened are
counted by the server, per slice, and over the client's whole life.

Then the fresh-install detail: httpcore imports ``sniffio`` each time it
builds a lock, and without it installed the failed import walks
``sys.path`` every time. Two worker processes that differ only in whether
``sniffio`` can be found (a symlinked copy of site-packages without it,
so the failed import costs what it costs on a real fresh install) are
driven in alternation: bare httpx without sniffio (a fresh ``pip install
httpx`` with anyio >= 4.12), bare httpx with it, and our full stack (which
depends on sniffio, so always has it).

    python benchmarks/loopback.py [--rounds 4] [--seconds 0.25] [--sdk] [--sniffio-only]
    python benchmarks/loopback.py --compare-servers   # why the fault server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import HERE, ServerProcess, log, median, table
from _configs import Built, Sdk, peers

CONCURRENCY = 50


def _limits_label() -> str:
    from httpx_resilience import PRODUCTION_LIMITS as limits

    return f"bare, our pool limits ({limits.max_connections}/{limits.max_keepalive_connections})"


def build(key: str, context: Any, http2: bool) -> Built:
    if key == "bare":
        # Nothing of ours imported: the fresh-install worker has no sniffio.
        return Built(httpx.AsyncHTTPTransport(verify=context, http2=http2))
    if key.endswith("_httpx2"):
        # The same configuration on httpx2 (for the instruction counts; Client
        # then takes an httpx2.AsyncClient).
        import httpx2

        from httpx_resilience import httpx2 as ours2

        if key == "bare_httpx2":
            return Built(httpx2.AsyncHTTPTransport(verify=context, http2=http2))
        if key == "http_transport_httpx2":
            return Built(ours2.HTTPTransport(verify=context, http2=http2))
        raise KeyError(key)
    from httpx_resilience import PRODUCTION_LIMITS, HTTPTransport, resilient_transport

    if key == "bare_limits50":
        return Built(
            httpx.AsyncHTTPTransport(verify=context, http2=http2, limits=PRODUCTION_LIMITS)
        )
    if key == "http_transport":
        return Built(HTTPTransport(verify=context, http2=http2))
    if key == "full_noop":
        return Built(resilient_transport(verify=context, http2=http2))
    if key == "full_noop_no_rid":
        return Built(resilient_transport(verify=context, http2=http2, request_id_header=None))
    if key == "full_sdk":
        sdk = Sdk.create()
        return Built(
            resilient_transport(
                verify=context,
                http2=http2,
                tracer_provider=sdk.tracer_provider,
                meter_provider=sdk.meter_provider,
            ),
            sdk=sdk,
        )
    if key == "peers_noop":
        return peers(httpx.AsyncHTTPTransport(verify=context, http2=http2), None)
    if key == "peers_sdk":
        return peers(httpx.AsyncHTTPTransport(verify=context, http2=http2), Sdk.create())
    raise KeyError(key)


LABELS = {
    "bare": "bare httpx.AsyncHTTPTransport",
    "bare_limits50": "bare, with our PRODUCTION_LIMITS",
    "http_transport": "ours: HTTPTransport",
    "full_noop": "ours: full stack, no-op tracing",
    "full_noop_no_rid": "ours: full stack, no-op tracing, no request ID",
    "full_sdk": "ours: full stack, SDK",
    "peers_noop": "peers: httpx-retries + OTel + uuid4, no-op",
    "peers_sdk": "peers: httpx-retries + OTel + uuid4, SDK",
}
#: Measured on loopback (the SDK configurations are compared in process,
#: where nothing else dilutes them; ``--sdk`` adds them here).
KEYS = ["bare", "bare_limits50", "http_transport", "full_noop", "peers_noop"]
#: (name, http2, concurrency)
CELLS = [
    ("HTTP/1.1 sequential", False, 1),
    ("HTTP/1.1 50 concurrent", False, CONCURRENCY),
    ("HTTP/2 sequential", True, 1),
    ("HTTP/2 50 concurrent", True, CONCURRENCY),
]


def slice_minimum(concurrency: int) -> int:
    """Requests a timed slice needs at least: with 50 tasks, 4 requests each, so
    that a slice measures a steady state rather than one burst."""
    return 1 if concurrency == 1 else 4 * concurrency


class Client:
    """One configuration's client, kept for the whole run."""

    def __init__(self, key: str, url: str, context: Any, http2: bool) -> None:
        self.built = build(key, context, http2)
        client_class: Any = httpx.AsyncClient
        if key.endswith("_httpx2"):
            import httpx2

            client_class = httpx2.AsyncClient
        self.client = client_class(transport=self.built.transport, event_hooks=self.built.hooks)
        self.url = url + "/"
        self.errors = 0
        self.last_error = ""
        self.versions: set[str] = set()

    async def run(
        self, seconds: float, concurrency: int, min_requests: int = 0, max_requests: int = 100_000
    ) -> tuple[int, float, float]:
        """GETs from ``concurrency`` tasks for about ``seconds`` and at least
        ``min_requests``: (requests, wall seconds, CPU seconds)."""
        count = 0
        get, url = self.client.get, self.url
        gc.collect()
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while count < max_requests and (
                count < min_requests or time.perf_counter() < deadline
            ):
                try:
                    response = await get(url)
                except httpx.HTTPError as exc:
                    self.errors += 1
                    self.last_error = repr(exc)
                    if self.errors > 1000:
                        raise
                    continue
                count += 1
                if response.status_code != 200:
                    self.errors += 1
                if count % 64 == 0:
                    self.versions.add(response.http_version)

        wall0, cpu0 = time.perf_counter(), time.process_time()
        if concurrency == 1:
            await worker()
        else:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if self.built.sdk:
            self.built.sdk.clear()
        if count == 0:
            raise RuntimeError(f"no request succeeded: {self.last_error}")
        return count, wall, cpu

    async def burst(self, concurrency: int) -> None:
        """Exactly one request per task, all started at once (not timed)."""
        responses = await asyncio.gather(
            *(self.client.get(self.url) for _ in range(concurrency)), return_exceptions=True
        )
        for response in responses:
            if isinstance(response, BaseException):
                self.errors += 1
                self.last_error = repr(response)
                if not isinstance(response, httpx.HTTPError):
                    raise response

    async def slice(self, seconds: float, concurrency: int) -> tuple[int, float, float]:
        """One timed slice, after a burst that reopens what the pool let expire
        since this client's previous slice (not timed)."""
        await self.burst(concurrency)
        return await self.run(seconds, concurrency, min_requests=slice_minimum(concurrency))

    async def aclose(self) -> None:
        await self.client.aclose()


async def run(rounds: int, seconds: float, sdk: bool = False) -> dict[str, Any]:
    chosen = KEYS + (["full_sdk", "peers_sdk"] if sdk else [])
    with ServerProcess("--plan", "ok") as server:
        log(f"  loopback: {server.kind} at {server.url} (own process)")
        cells = []
        for name, http2, concurrency in CELLS:
            keys = [k for k in chosen if k != "bare_limits50" or (not http2 and concurrency > 1)]
            cells.append((name, http2, concurrency, keys))
        clients: dict[tuple[str, str], Client] = {}
        opened_life: dict[tuple[str, str], int] = {}
        cold: dict[tuple[str, str], int] = {}
        for name, http2, concurrency, keys in cells:
            for key in keys:
                before = server.command("stats")["connections"]
                client = clients[name, key] = Client(key, server.url, server.ssl_context(), http2)
                # Cold start: one request per task on a new client, all at once.
                await client.burst(concurrency)
                cold[name, key] = server.command("stats")["connections"] - before
                await client.run(0.0, concurrency, min_requests=4 * concurrency + 20)  # warm up
                opened_life[name, key] = server.command("stats")["connections"] - before
        server.command("clear")

        samples: dict[tuple[str, str], list[dict[str, float]]] = {k: [] for k in clients}
        ratios: dict[tuple[str, str], list[float]] = {k: [] for k in clients}
        rng = random.Random(11)

        async def measure(name: str, key: str, concurrency: int) -> float:
            client = clients[name, key]
            # A burst first (untimed): it reopens what the pool let expire or
            # closed since this client's last slice, as a burst of traffic
            # after a pause does; then the timed slice, in steady state.
            start = server.command("stats")["connections"]
            await client.burst(concurrency)
            before = server.command("stats")["connections"]
            n, wall, cpu = await client.run(
                seconds, concurrency, min_requests=slice_minimum(concurrency)
            )
            opened = server.command("stats")["connections"] - before
            opened_life[name, key] += opened + before - start
            samples[name, key].append(
                {
                    "rps": n / wall,
                    "cpu_us": cpu / n * 1e6,
                    "opened": opened,
                    "burst_opened": before - start,
                    "n": n,
                }
            )
            return n / wall

        for round_number in range(rounds):
            for name, _http2, concurrency, keys in cells:
                order = [k for k in keys if k != "bare"]
                rng.shuffle(order)
                before = await measure(name, "bare", concurrency)
                for key in order:
                    rps = await measure(name, key, concurrency)
                    after = await measure(name, "bare", concurrency)
                    ratios[name, key].append(rps / ((before + after) / 2))
                    before = after
            server.command("clear")
            log(f"  loopback: round {round_number + 1}/{rounds}")

        # The connection counter of our own transport, read from the SDK.
        metric_opened = {}
        for (name, key), client in clients.items():
            if client.built.sdk is not None:
                metric_opened[name, key] = client.built.sdk.counter(
                    "httpx_resilience.connection.opened"
                )
        for client in clients.values():
            await client.aclose()

    rows = []
    for name, http2, concurrency, keys in cells:
        for key in keys:
            s = samples[name, key]
            requests = sum(x["n"] for x in s)
            rows.append(
                {
                    "cell": name,
                    "http2": http2,
                    "concurrency": concurrency,
                    "key": key,
                    "label": _limits_label() if key == "bare_limits50" else LABELS[key],
                    "requests_per_s": median([x["rps"] for x in s]),
                    "ratio": 1.0 if key == "bare" else median(ratios[name, key]),
                    "client_cpu_us": median([x["cpu_us"] for x in s]),
                    "opened_per_1k": 1000 * sum(x["opened"] for x in s) / requests,
                    "opened_per_burst": sum(x["burst_opened"] for x in s) / len(s),
                    "opened_total": opened_life[name, key],
                    "opened_cold_burst": cold[name, key],
                    "opened_metric": metric_opened.get((name, key)),
                    "errors": clients[name, key].errors,
                    "http_versions": sorted(clients[name, key].versions),
                    "ratios": [round(r, 4) for r in ratios[name, key]],
                }
            )
    return {
        "server": "fault server, own process, plan: every request 200 (small JSON body)",
        "rounds": rounds,
        "seconds_per_slice": seconds,
        "rows": rows,
    }


def render(result: dict[str, Any]) -> str:
    return table(
        [
            "cell",
            "configuration",
            "req/s",
            "x bare (paired)",
            "client CPU µs/req",
            "conns for a cold burst",
            "opened /1k req steady",
            "conns opened (life)",
            "errors",
        ],
        [
            [
                r["cell"],
                r["label"],
                r["requests_per_s"],
                r["ratio"],
                r["client_cpu_us"],
                r["opened_cold_burst"],
                r["opened_per_1k"],
                r["opened_total"],
                r["errors"],
            ]
            for r in result["rows"]
        ],
    )


# -- the fresh-install detail: sniffio -----------------------------------------


def _site_farm(tmp: Path, with_sniffio: bool) -> Path:
    """A copy of site-packages made of symlinks, with or without sniffio."""
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp / ("with-sniffio" if with_sniffio else "without-sniffio")
    farm.mkdir()
    for entry in site.iterdir():
        if not with_sniffio and entry.name.lower().startswith("sniffio"):
            continue
        (farm / entry.name).symlink_to(entry)
    return farm


class Worker:
    """A client process (``--worker``) whose site-packages is ``farm``."""

    def __init__(self, farm: Path, server: ServerProcess) -> None:
        bootstrap = (
            "import runpy, site, sys; "
            f"site.addsitedir({str(farm)!r}); "
            f"sys.path.insert(0, {str(HERE)!r}); "
            f"sys.argv = [{str(HERE / 'loopback.py')!r}, '--worker', {server.url!r}, {server.ca!r}]; "
            f"runpy.run_path({str(HERE / 'loopback.py')!r}, run_name='__main__')"
        )
        # -S: no site-packages of the venv; the farm stands in for it, so
        # sys.path has as many entries as in a normal run.
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", bootstrap],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.hello = self._read()

    def _read(self) -> Any:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker ended (exit code {self._proc.wait(5)})")
        return json.loads(line)

    def measure(self, key: str, http2: bool, concurrency: int, seconds: float) -> dict[str, Any]:
        assert self._proc.stdin is not None
        command = {"key": key, "http2": http2, "concurrency": concurrency, "seconds": seconds}
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


async def _worker_main(url: str, ca: str) -> None:
    """Answer measurement commands on stdin, one JSON line each way."""
    import importlib.util
    import ssl

    clients: dict[tuple[str, bool, int], Client] = {}

    def reply(payload: object) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    reply(
        {
            "sniffio": importlib.util.find_spec("sniffio") is not None,
            "sys_path_entries": len(sys.path),
        }
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        command = json.loads(line)
        slot = (command["key"], command["http2"], command["concurrency"])
        if slot not in clients:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(ca)
            clients[slot] = Client(command["key"], url, context, command["http2"])
            await clients[slot].run(0.0, command["concurrency"], 4 * command["concurrency"] + 20)
        n, wall, cpu = await clients[slot].slice(command["seconds"], command["concurrency"])
        reply({"rps": n / wall, "cpu_us": cpu / n * 1e6, "n": n, "errors": clients[slot].errors})
    for client in clients.values():
        await client.aclose()


#: (label, with sniffio, configuration)
SNIFFIO_CASES = [
    ("bare httpx, sniffio missing (fresh install)", False, "bare"),
    ("bare httpx, sniffio installed", True, "bare"),
    ("ours: full stack, no-op tracing (sniffio is our dependency)", True, "full_noop"),
]
SNIFFIO_CELLS = [("HTTP/1.1 sequential", False, 1), ("HTTP/2 50 concurrent", True, CONCURRENCY)]


def run_sniffio(rounds: int, seconds: float) -> dict[str, Any]:
    """Fresh-install check: bare httpx without sniffio against the others."""
    with tempfile.TemporaryDirectory() as tmp, ServerProcess("--plan", "ok") as server:
        workers = {flag: Worker(_site_farm(Path(tmp), flag), server) for flag in (False, True)}
        try:
            for flag, worker in workers.items():
                if worker.hello["sniffio"] != flag:
                    raise RuntimeError(f"worker with_sniffio={flag} sees {worker.hello}")
            samples: dict[tuple[str, int], list[float]] = {}
            cpu: dict[tuple[str, int], list[float]] = {}
            # The reference: bare without sniffio, paired with each other case.
            ratios: dict[tuple[str, int], list[float]] = {}
            rng = random.Random(5)
            for round_number in range(rounds):
                for cell, http2, concurrency in SNIFFIO_CELLS:
                    order = list(range(1, len(SNIFFIO_CASES)))
                    rng.shuffle(order)

                    def one(
                        i: int,
                        cell: str = cell,
                        http2: bool = http2,
                        concurrency: int = concurrency,
                    ) -> float:
                        _, flag, key = SNIFFIO_CASES[i]
                        result = workers[flag].measure(key, http2, concurrency, seconds)
                        samples.setdefault((cell, i), []).append(result["rps"])
                        cpu.setdefault((cell, i), []).append(result["cpu_us"])
                        return float(result["rps"])

                    before = one(0)
                    for i in order:
                        rps = one(i)
                        after = one(0)
                        ratios.setdefault((cell, i), []).append(rps / ((before + after) / 2))
                        before = after
                log(f"  sniffio: round {round_number + 1}/{rounds}")
            hello = {str(flag): worker.hello for flag, worker in workers.items()}
        finally:
            for worker in workers.values():
                worker.close()
    rows = []
    for cell, _, _ in SNIFFIO_CELLS:
        for i, (label, flag, key) in enumerate(SNIFFIO_CASES):
            rows.append(
                {
                    "cell": cell,
                    "label": label,
                    "sniffio": flag,
                    "key": key,
                    "requests_per_s": median(samples[cell, i]),
                    "client_cpu_us": median(cpu[cell, i]),
                    "ratio_vs_fresh_bare": 1.0 if i == 0 else median(ratios[cell, i]),
                }
            )
    return {"workers": hello, "rounds": rounds, "seconds_per_slice": seconds, "rows": rows}


def render_sniffio(result: dict[str, Any]) -> str:
    return table(
        ["cell", "configuration", "req/s", "x fresh bare (paired)", "client CPU µs/req"],
        [
            [
                r["cell"],
                r["label"],
                r["requests_per_s"],
                r["ratio_vs_fresh_bare"],
                r["client_cpu_us"],
            ]
            for r in result["rows"]
        ],
    )


async def compare_servers(rounds: int = 5, seconds: float = 0.5) -> str:
    """The fault server against the Hypercorn harness of tests/servers.py: the
    server's own CPU per request, and bare httpx's throughput against it."""
    rows = []
    for args in (["--plan", "ok"], ["--hypercorn"]):
        with ServerProcess(*args) as server:
            for cell, http2, concurrency in (CELLS[0], CELLS[3]):
                client = Client("bare", server.url, server.ssl_context(), http2)
                await client.run(0.0, concurrency, min_requests=4 * concurrency + 20)
                rps, cpu = [], []
                for _ in range(rounds):
                    cpu0 = server.cpu_seconds()
                    n, wall, _ = await client.run(seconds, concurrency, min_requests=concurrency)
                    rps.append(n / wall)
                    cpu.append((server.cpu_seconds() - cpu0) / n * 1e6)
                await client.aclose()
                rows.append([server.kind, cell, median(rps), min(rps), max(rps), median(cpu)])
    return table(
        ["server", "cell", "bare req/s (median)", "min", "max", "server CPU µs/req"], rows
    )


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1] == "--compare-servers":
        print(asyncio.run(compare_servers()))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        asyncio.run(_worker_main(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--sniffio-only", action="store_true")
    parser.add_argument("--sdk", action="store_true", help="also the SDK configurations")
    args = parser.parse_args()
    if not args.sniffio_only:
        print(render(asyncio.run(run(args.rounds, args.seconds, args.sdk))))
    print(render_sniffio(run_sniffio(args.rounds, args.seconds)))


if __name__ == "__main__":
    main()
