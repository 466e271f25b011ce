"""The connection pool under bursts of HTTP/1.1 requests, in memory: deterministic.

A network backend of its own (``MemoryBackend``) answers every request at
once from memory, after one pass of the event loop, so 50 tasks really are
50 requests in flight: what the pool does with them (connections opened,
closed, kept, and the bookkeeping of its ``_assign_requests_to_connections``
on every request and every response closed) is the same on every run.
Nothing is timed here; counted under valgrind (``hotpath.py pool``) it
says, in CPU instructions per request, what each pool and limit costs:

    python benchmarks/pool.py                         # connections and calls per request
    python benchmarks/hotpath.py pool                 # instructions per request (valgrind)

Each workload is ``ROUNDS`` times: a burst (one request from each of 50
tasks, all at once), then ``STEADY`` requests from each task. The TLS
handshake a real new connection costs is not in these figures (the memory
streams have no TLS): ``opened`` says how many there would be.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

import anyio.lowlevel
import httpcore
import httpx

TASKS = 50
#: Passes of the event loop before a response can be read: enough that all
#: the tasks of a burst have sent their requests by then (a server farther
#: away than the client's own work per request, as most are).
LATENCY = 10
ROUNDS = 4
STEADY = 4
URL = "https://10.0.0.1/v1/items"  # an address: no DNS lookup
_RESPONSE = (
    b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok": true}'
)


class _SSLObject:
    """What httpcore and our guard ask of a TLS connection: the ALPN protocol."""

    def selected_alpn_protocol(self) -> str:
        return "http/1.1"


class MemoryStream(httpcore.AsyncNetworkStream):
    """One connection to a server that answers every complete request at once."""

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        # A socket for our pool to poll, as it polls a real connection's: the
        # server never writes to it, so it never reads as closed.
        self._socket, self._peer = socket.socketpair()
        self._inbound = bytearray()
        self._request = bytearray()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # The server's latency, in passes of the event loop: the other tasks
        # send their requests meanwhile, as they would while a socket waits.
        for _ in range(LATENCY):
            await anyio.lowlevel.checkpoint()
        data = bytes(self._inbound[:max_bytes])
        del self._inbound[:max_bytes]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._request += buffer
        while (end := self._request.find(b"\r\n\r\n")) >= 0:
            del self._request[: end + 4]
            self._inbound += _RESPONSE
            self._backend.requests += 1

    async def aclose(self) -> None:
        self._backend.closed += 1
        self._socket.close()
        self._peer.close()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return _SSLObject()
        if info == "socket":
            return self._socket
        if info == "is_readable":
            # An idle connection whose server has not closed it.
            return bool(self._inbound)
        return None


class MemoryBackend(httpcore.AsyncNetworkBackend):
    """Opens ``MemoryStream`` connections and counts them."""

    def __init__(self) -> None:
        self.opened = self.closed = self.requests = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.opened += 1
        return MemoryStream(self)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - not used
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _limits(max_connections: int, keepalive: int | None) -> httpx.Limits:
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive)


def _bare(limits: httpx.Limits) -> Callable[[MemoryBackend], httpx.AsyncBaseTransport]:
    def build(backend: MemoryBackend) -> httpx.AsyncBaseTransport:
        transport = httpx.AsyncHTTPTransport(limits=limits)
        # httpx takes no network backend: its pool, rebuilt with ours.
        transport._pool = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
        return transport

    return build


def _ours(
    limits: httpx.Limits | None, full: bool = False
) -> Callable[[MemoryBackend], httpx.AsyncBaseTransport]:
    def build(backend: MemoryBackend) -> httpx.AsyncBaseTransport:
        from httpx_resilience import HTTPTransport, resilient_transport

        options: dict[str, Any] = {"network_backend": backend, "http2": False}
        if limits is not None:
            options["limits"] = limits
        if full:
            return resilient_transport(**options)  # type: ignore[return-value]
        return HTTPTransport(**options)

    return build


def _production() -> httpx.Limits:
    from httpx_resilience import PRODUCTION_LIMITS

    return PRODUCTION_LIMITS


#: key -> (label, builder)
CONFIGS: dict[str, tuple[str, Callable[[MemoryBackend], httpx.AsyncBaseTransport]]] = {
    "bare": ("bare httpx, its default limits (100, keep 20)", _bare(_limits(100, 20))),
    "bare_50_20": ("bare httpx, 50 connections, keep 20", _bare(_limits(50, 20))),
    "bare_50_50": ("bare httpx, 50 connections, keep 50", _bare(_limits(50, 50))),
    "ours": ("ours: HTTPTransport, its default limits", _ours(None)),
    "ours_50_20": ("ours: HTTPTransport, 50 connections, keep 20", _ours(_limits(50, 20))),
    "ours_50_50": ("ours: HTTPTransport, 50 connections, keep 50", _ours(_limits(50, 50))),
    "full": (
        "ours: full stack, PRODUCTION_LIMITS",
        lambda backend: _ours(_production(), full=True)(backend),
    ),
}


async def workload(
    client: httpx.AsyncClient, rounds: int = ROUNDS, steady: int = STEADY, tasks: int = TASKS
) -> int:
    """Bursts and steady runs of GETs from ``tasks`` tasks; the requests sent."""
    sent = 0

    async def one(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            response = await client.get(URL)
            if response.status_code != 200:
                raise RuntimeError(response.status_code)
            sent += 1

    for _ in range(rounds):
        await asyncio.gather(*(one(1) for _ in range(tasks)))
        await asyncio.gather(*(one(steady) for _ in range(tasks)))
    return sent


def make(key: str) -> tuple[httpx.AsyncClient, MemoryBackend]:
    backend = MemoryBackend()
    return httpx.AsyncClient(transport=CONFIGS[key][1](backend)), backend


async def _calls(key: str) -> dict[str, Any]:
    """Connections opened, and the pool's calls to its connections per request."""
    import cProfile
    import pstats

    client, backend = make(key)
    await workload(client, rounds=1)  # warm up: the first connections
    opened = backend.opened
    ticks = 0
    done = False

    async def ticker() -> None:
        # Passes of the event loop until the workload is done: its latency,
        # in the unit of the server's (LATENCY passes per response).
        nonlocal ticks
        while not done:
            await anyio.lowlevel.checkpoint()
            ticks += 1

    async def measured() -> int:
        nonlocal done
        try:
            return await workload(client)
        finally:
            done = True

    profiler = cProfile.Profile()
    profiler.enable()
    sent, _ = await asyncio.gather(measured(), ticker())
    profiler.disable()
    stats = pstats.Stats(profiler)
    calls: collections.Counter[str] = collections.Counter()
    for (_filename, _line, func), (_cc, ncalls, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        if func in ("is_idle", "has_expired", "is_closed", "is_available", "can_handle_request"):
            calls[func] += ncalls
        elif func == "_assign_requests_to_connections":
            calls["assign"] += ncalls
    await client.aclose()
    # Only the outermost call of each method counts once per pool question:
    # a connection's own methods call their inner connection's.
    return {
        "opened": backend.opened - opened,
        "requests": sent,
        "loop_passes": ticks,
        "per_request": {k: v / sent for k, v in sorted(calls.items())},
    }


HEADERS = [
    "configuration",
    "connections opened",
    "requests",
    f"loop passes per request of a task (server: {LATENCY})",
    "pool passes /req",
    "is_idle /req",
    "has_expired /req",
    "is_available /req",
]


def run(keys: list[str] | None = None) -> dict[str, Any]:
    """The figures of every configuration (``run.py``'s pool section)."""
    rows = []
    for key in keys or list(CONFIGS):
        found = asyncio.run(_calls(key))
        rows.append({"key": key, "label": CONFIGS[key][0], **found})
    return {"tasks": TASKS, "rounds": ROUNDS, "steady": STEADY, "latency": LATENCY, "rows": rows}


def render(result: dict[str, Any]) -> str:
    from _common import table

    rows = []
    for row in result["rows"]:
        per = row["per_request"]
        rows.append(
            [
                row["label"],
                row["opened"],
                row["requests"],
                row["loop_passes"] / (ROUNDS * (1 + STEADY)),
                per.get("assign", 0),
                per.get("is_idle", 0),
                per.get("has_expired", 0),
                per.get("is_available", 0),
            ]
        )
    return (
        f"{ROUNDS} x (a burst of {TASKS} requests, then {STEADY} each from {TASKS} tasks), "
        "in memory, after a first such round; calls counted with every nested call "
        "(ours wrap httpcore's):\n" + table(HEADERS, rows)
    )


def count_child(key: str, n: int) -> None:
    """Under valgrind (``hotpath.py pool``): warm up, then ``n`` rounds of the workload."""
    import gc

    async def go() -> None:
        client, _backend = make(key)
        await workload(client, rounds=2)
        gc.collect()
        gc.freeze()
        if n:
            await workload(client, rounds=n)
        await client.aclose()

    asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", default=list(CONFIGS))
    args = parser.parse_args()
    print(render(run(args.keys)))


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    main()
