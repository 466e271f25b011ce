"""The servers the benchmarks talk to, each in a process of its own.

A benchmark client and its server in one process would share one CPU (and
the GIL): the server's work would count as the client's. So every server
runs here, in a child process, and the parent drives it over stdin/stdout,
one JSON line each way:

    python benchmarks/_server.py --plan ok            # the fault server, every request 200
    python benchmarks/_server.py --plan faults --routes 800  # ~20% 503, 5% resets, 2% slow
    python benchmarks/_server.py --plan goaway        # HTTP/2 GOAWAY after every 20 requests
    python benchmarks/_server.py --hypercorn          # tests/servers.py (Hypercorn), for comparison

On start it prints ``{"url": ..., "ca": <CA file>}``. Commands: ``stats``,
``clear`` (forget the records; only once the client is idle), ``records``
(one compact row per request: X-Request-ID, method, processed, status,
complete), ``quit``. Every server stops by itself after ``--lifetime``
seconds, and when its stdin closes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

ROOT = Path(__file__).resolve().parent.parent

#: What the "faults" plan answers, in percent. Retry-After is absent: no
#: config sleeps longer than the small backoff every config is given.
FAULT_MIX = {"503": 20, "reset": 5, "slow": 2}
SLOW_SECONDS = 0.1


def make_plan(name: str, routes: int = 0) -> Any:
    from httpx_resilience.testing import Delay, FaultPlan, Reset, Respond, Weighted

    if name == "ok":
        return FaultPlan()
    if name == "faults":
        ok = 100 - sum(FAULT_MIX.values())
        mix = Weighted(
            (ok, Respond()),
            (FAULT_MIX["503"], Respond(503)),
            (FAULT_MIX["reset"], Reset()),  # TCP RST before any byte of the response
            (FAULT_MIX["slow"], Delay(SLOW_SECONDS)),
        )
        # One route per logical request (/r/0, /r/1, ...): each route draws
        # from a generator of its own, seeded from the path, so attempt k of
        # request i meets the same outcome in every configuration, whatever
        # the order in which concurrent requests arrive.
        return FaultPlan(
            routes={f"/r/{i}": mix for i in range(routes)}, default=mix, seed=20240607
        )
    if name == "goaway":
        return FaultPlan(goaway_every=20)
    raise SystemExit(f"unknown plan {name!r}")


def emit(payload: object) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def serve_fault(args: argparse.Namespace) -> None:
    from httpx_resilience.testing import FaultServer

    async with FaultServer(
        make_plan(args.plan, args.routes), http2=True, tls=True, max_lifetime=args.lifetime
    ) as server:
        emit({"url": server.url, "ca": str(server.ca_path), "server": "fault server"})
        async with anyio.create_task_group() as tg:

            async def lifetime() -> None:
                await server.wait_stopped()
                tg.cancel_scope.cancel()

            tg.start_soon(lifetime)
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                command = line.strip()
                if command in ("", "quit"):
                    break
                if command == "stats":
                    emit(
                        {
                            "connections": server.connections,
                            "received": len(server.received),
                            "goaways": len(server.goaways),
                        }
                    )
                elif command == "clear":
                    # A record is rewritten by its index when its response
                    # ends; clear only once every response has ended.
                    with anyio.move_on_after(2.0):
                        while any(r.status is None and r.processed for r in server.received):  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                    server.received.clear()
                    emit({"cleared": True})
                elif command == "records":
                    emit(
                        [
                            [r.request_id, r.method, r.processed, r.status, r.complete]
                            for r in server.received
                        ]
                    )
                else:
                    emit({"error": f"unknown command {command!r}"})
            tg.cancel_scope.cancel()


def serve_hypercorn(args: argparse.Namespace) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_test_servers", ROOT / "tests" / "servers.py"
    )
    assert spec is not None
    assert spec.loader is not None
    servers = importlib.util.module_from_spec(spec)
    sys.modules["bench_test_servers"] = servers
    spec.loader.exec_module(servers)
    app = servers.ScriptedApp()
    app.script(
        "/", [servers.Reply(body=b'{"ok": true}', headers={"content-type": "application/json"})]
    )
    with servers.start_servers(app) as server, tempfile.TemporaryDirectory() as tmp:
        ca = Path(tmp) / "ca.pem"
        server.ca.cert_pem.write_to_path(str(ca))
        emit({"url": f"https://127.0.0.1:{server.tls_port}", "ca": str(ca), "server": "hypercorn"})
        timer = threading.Timer(args.lifetime, lambda: sys.stdin.close())
        timer.daemon = True
        timer.start()
        for line in sys.stdin:
            command = line.strip()
            if command in ("", "quit"):
                break
            if command == "stats":
                emit({"connections": None, "received": None})
            elif command == "clear":
                emit({"cleared": True})
            else:
                emit({"error": f"unsupported command {command!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="ok", choices=["ok", "faults", "goaway"])
    parser.add_argument("--routes", type=int, default=0, help="faults: one route per request")
    parser.add_argument("--hypercorn", action="store_true")
    parser.add_argument("--lifetime", type=float, default=900.0)
    args = parser.parse_args()
    if args.hypercorn:
        serve_hypercorn(args)
    else:
        anyio.run(serve_fault, args)


if __name__ == "__main__":
    main()
