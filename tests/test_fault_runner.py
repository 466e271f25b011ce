"""run_fault_server: the blocking entry point a command line calls."""

from __future__ import annotations

import threading

import anyio.from_thread
import anyio.lowlevel
import httpx
import pytest

from httpx_resilience.testing import FaultPlan, FaultServer, Refuse, run_fault_server


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serves_until_stopped_and_returns_the_records(backend: str) -> None:
    statuses: list[int] = []

    def on_ready(server: FaultServer) -> None:
        # Called on the server's loop: a client in a thread, then a stop from it.
        token = anyio.lowlevel.current_token()

        def client() -> None:
            with httpx.Client(verify=server.ssl_context) as http:
                statuses.append(http.get(f"{server.url}/hello").status_code)
            anyio.from_thread.run_sync(server.stop, token=token)

        threading.Thread(target=client, daemon=True).start()

    records = run_fault_server(max_lifetime=10, on_ready=on_ready, backend=backend)

    assert statuses == [200]
    assert [(r.method, r.path, r.processed) for r in records] == [("GET", "/hello", True)]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_stops_by_itself_after_max_lifetime(backend: str) -> None:
    urls: list[str] = []
    records = run_fault_server(
        FaultPlan(default=Refuse()),
        tls=False,
        max_lifetime=0.05,
        on_ready=lambda server: urls.append(server.url),
        backend=backend,
    )
    assert records == []
    assert urls[0].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_ends_it_quietly(backend: str) -> None:
    def interrupt(server: FaultServer) -> None:
        raise KeyboardInterrupt

    assert run_fault_server(tls=False, on_ready=interrupt, backend=backend) == []
