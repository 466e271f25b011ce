"""200 random cancellations through one resilient_transport(): it keeps working, holds nothing.

A seeded ``random.Random`` picks, for each request, where it is when the
caller gives up: connecting (a listener whose accept queue is full, so the
SYN goes unanswered), in the TLS handshake (a server that waits before
answering it), connected but nothing sent yet (cancelled from httpx's
``trace`` callback the moment the handshake completes), uploading a large
body to a server that reads a little and pauses, downloading a slow body,
waiting in the retry layer's backoff (a sleep that only ends when
cancelled), or racing hedged attempts against a slow server. The caller
gives up after a random delay, by a cancel scope's deadline or by another
task calling ``cancel()``, eight requests at a time on the one transport,
on asyncio and trio.

What a user relies on afterwards:

- each cancelled call returns promptly, and as a cancellation: never as
  another exception;
- the same transport still serves a GET and a POST, over HTTP/1.1 and
  HTTP/2;
- no pooled connection is left in use, no span left open, no socket left
  for the garbage collector to close, no file descriptor left open;
- no POST was processed twice.
"""

from __future__ import annotations

import random
import socket
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio
import h2.events
import h2.exceptions
import h2.settings
import pytest

from httpx_resilience.testing import Delay, FaultPlan, FaultServer, Respond, SlowBody

from .flavour import HedgingPolicy, httpx, resilient_transport
from .flavour._goaway import CANCEL_GRACE
from .leaks import (
    UNFINISHED_BODIES,
    Recording,
    collect_unclosed,
    connections_in_use,
    describe,
    fds_left_open,
    open_fds,
)
from .raw_server import RawConnection, RawServer
from .servers import LOOPBACK, closed_port
from .servers import _shared_ca as shared_ca

pytestmark = [pytest.mark.anyio, UNFINISHED_BODIES]

CANCELLATIONS = 200
#: Requests in flight at once, all on the one transport.
CONCURRENCY = 8
SEED = 1_129
#: The caller gives up after up to this many seconds.
MAX_DELAY = 0.25
#: A cancelled call must be back within this long of the cancellation: an
#: HTTP/2 write cut by it may take the guard's grace to finish, then a margin.
PROMPT = CANCEL_GRACE + 0.25
#: Long enough that a cancellation always comes first, short enough that a
#: write stuck past a cancellation shows as late rather than hanging.
TIMEOUT = httpx.Timeout(5.0, write=1.0)

#: An upload no server here reads in full before the caller gives up.
LARGE_BODY = b"u" * (8 * 1024 * 1024)
#: The slow reader reads this much, then pauses.
READ_PAUSE = 0.5
#: Flow-control windows the slow HTTP/2 reader grants: the client's writes
#: stall on the socket, not on flow control.
WIDE_WINDOW = 2**30

KINDS = ("connect", "tls", "connected", "upload", "download", "backoff", "hedging")
#: The trace event after which a "connected" case is cancelled: connected,
#: TLS done, not a byte of the request sent.
CONNECTED = "connection.start_tls.complete"

PLAN = FaultPlan(
    routes={
        "/slow-body": SlowBody(chunks=40, chunk_size=1024, interval=0.02),
        "/unavailable": Respond(503, retry_after=1),
        "/hedged": Delay(1.0),
    }
)


ONE_PER_CONNECTION = FaultPlan(goaway_every=1)


async def _sleep_until_cancelled(seconds: float) -> None:
    """The retry layer's sleep: a backoff only a cancellation ends."""
    await anyio.sleep_forever()


@dataclass
class Uploads:
    """What the slow readers saw."""

    completed: list[str | None] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)


async def _slow_reader(conn: RawConnection, uploads: Uploads) -> None:
    """Read requests a little at a time, pausing between reads; answer each one read in full."""
    if conn.alpn == "h2":
        await _slow_reader_h2(conn, uploads)
        return
    while True:
        head = await conn.read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
        left = int(headers.get("content-length", "0"))
        while left > 0:
            data = await conn.receive()
            if not data:
                return
            left -= len(data)
            await anyio.sleep(READ_PAUSE)
        uploads.completed.append(headers.get("x-request-id"))
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


async def _slow_reader_h2(conn: RawConnection, uploads: Uploads) -> None:
    state = conn.h2
    state.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WIDE_WINDOW - 1})
    state.increment_flow_control_window(WIDE_WINDOW - 1 - 65535)
    await conn.h2_flush()
    streams: dict[int, str | None] = {}
    while True:
        data = await conn.receive()
        if not data:
            return
        try:
            events = state.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # A client that cuts a frame short must not go on using the
            # connection: what follows is garbage to the server.
            uploads.protocol_errors.append(repr(exc))
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                request_id = dict(event.headers or []).get(b"x-request-id")
                streams[event.stream_id] = None if request_id is None else request_id.decode()
            elif isinstance(event, h2.events.StreamEnded):
                uploads.completed.append(streams.pop(event.stream_id, None))
                await conn.h2_respond(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                streams.pop(event.stream_id, None)
        await conn.h2_flush()
        await anyio.sleep(READ_PAUSE)


async def _after_handshake(conn: RawConnection) -> None:
    await conn.drain()


@asynccontextmanager
async def _unanswered_listener() -> AsyncIterator[int]:
    """A port whose accept queue is full: a client's SYN goes unanswered, so it stays connecting.

    Nothing is accepted; one connection fills the queue of a backlog of 0.
    """
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]
    finally:
        filler.close()
        listener.close()


@dataclass
class Case:
    number: int
    kind: str
    protocol: str
    method: str
    url: str
    delay: float
    by_deadline: bool
    streamed: bool


@dataclass
class Servers:
    fault: dict[str, FaultServer]
    #: Servers that end each connection after one request, so every request
    #: opens a new one.
    fresh: dict[str, FaultServer]
    upload: dict[str, RawServer]
    handshake: RawServer
    unanswered: int
    closed: int


def _ports(servers: Servers) -> str:
    """Which server listens where, to read the failures by."""
    named = {
        **{f"{p} fault server": s.port for p, s in servers.fault.items()},
        **{f"{p} one request per connection": s.port for p, s in servers.fresh.items()},
        **{f"{p} slow reader": s.port for p, s in servers.upload.items()},
        "TLS handshake held": servers.handshake.port,
        "accept queue full": servers.unanswered,
        "closed": servers.closed,
    }
    return ", ".join(f"{name} {port}" for name, port in named.items())


def _cases(rng: random.Random, servers: Servers) -> list[Case]:
    cases = []
    for number in range(CANCELLATIONS):
        kind = rng.choice(KINDS)
        protocol = rng.choice(("http1", "http2"))
        fault = servers.fault[protocol].url
        method = rng.choice(("GET", "POST"))
        if kind == "connect":
            url = f"https://{LOOPBACK}:{servers.unanswered}/connect"
        elif kind == "tls":
            url = f"{servers.handshake.url}/tls"
        elif kind == "connected":
            url = f"{servers.fresh[protocol].url}/connected"
        elif kind == "upload":
            method, url = "POST", f"{servers.upload[protocol].url}/upload"
        elif kind == "download":
            url = f"{fault}/slow-body"
        elif kind == "backoff":
            # A 503 the retry layer waits to retry (GET), or a refused
            # connection, which it retries whatever the method.
            refused = method == "POST" or rng.random() < 0.3
            refused_url = f"http://{LOOPBACK}:{servers.closed}/refused"
            url = refused_url if refused else f"{fault}/unavailable"
        else:
            method, url = "GET", f"{fault}/hedged"
        cases.append(
            Case(
                number,
                kind,
                "any" if kind in ("connect", "tls") else protocol,
                method,
                url,
                delay=rng.uniform(0.0, MAX_DELAY),
                by_deadline=rng.random() < 0.5,
                streamed=rng.random() < 0.5,
            )
        )
    return cases


class Report:
    """How each call ended, and what went wrong."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.converted: list[str] = []
        self.late: list[str] = []


async def _send(
    client: httpx.AsyncClient, case: Case, trace: Callable[[str, object], Awaitable[None]]
) -> None:
    extensions: dict[str, object] = {"trace": trace}
    if case.kind != "hedging":
        extensions["resilience"] = {"hedge": False}
    content = LARGE_BODY if case.kind == "upload" else None
    json = {"case": case.number} if case.method == "POST" and content is None else None
    if case.streamed:
        async with client.stream(
            case.method, case.url, content=content, json=json, extensions=extensions
        ) as response:
            async for _ in response.aiter_raw():
                pass
        return
    await client.request(case.method, case.url, content=content, json=json, extensions=extensions)


async def _cancel_one(client: httpx.AsyncClient, case: Case, report: Report) -> None:
    """Send the case's request and give up after its delay; report how the call ended."""
    if case.kind == "connected":
        how = "cancel() once connected"
    else:
        how = f"{'deadline' if case.by_deadline else 'cancel()'} after {case.delay:.3f} s"
    label = f"case {case.number} ({case.kind}, {case.protocol}, {case.method} {case.url}, {how})"
    cancelled_at: float | None = None
    outcome = "completed"
    # "connected" cases are cancelled by the trace callback below.
    by_deadline = case.by_deadline and case.kind != "connected"
    scope = anyio.move_on_after(case.delay) if by_deadline else anyio.CancelScope()

    async def trace(event: str, info: object) -> None:
        nonlocal cancelled_at
        if case.kind == "connected" and event == CONNECTED and cancelled_at is None:
            cancelled_at = anyio.current_time()
            scope.cancel()

    async with anyio.create_task_group() as tg:
        if case.kind != "connected" and not case.by_deadline:

            async def cancel() -> None:
                nonlocal cancelled_at
                await anyio.sleep(case.delay)
                cancelled_at = anyio.current_time()
                scope.cancel()

            tg.start_soon(cancel)
        try:
            with scope:
                await _send(client, case, trace)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
            if scope.cancel_called:
                at = cancelled_at if cancelled_at is not None else scope.deadline
                after = "" if at is None else f" {anyio.current_time() - at:.2f} s later"
                report.converted.append(f"{label}: cancelled, raised {exc!r}{after}")
        except Exception as exc:
            outcome = f"UNEXPECTED {type(exc).__name__}"
            if len(report.unexpected) < 3:  # the first few in full; the count says the rest
                text = "".join(traceback.format_exception(exc))
                report.unexpected.append(f"{label}: {text}")
        returned_at = anyio.current_time()
        tg.cancel_scope.cancel()  # the canceller, if the call ended first
    if scope.cancelled_caught:
        outcome = "cancelled"
        if cancelled_at is None:
            cancelled_at = scope.deadline
        assert cancelled_at is not None
        late = returned_at - cancelled_at
        if late > PROMPT:
            report.late.append(f"{label}: returned {late:.2f} s after the cancellation")
    report.outcomes[f"{case.kind} {outcome}"] += 1


async def _run(client: httpx.AsyncClient, cases: list[Case], report: Report) -> None:
    pending = iter(cases)

    async def worker() -> None:
        for case in pending:
            await _cancel_one(client, case, report)

    async with anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(worker)


async def _still_serves(client: httpx.AsyncClient, servers: Servers) -> list[str]:
    """A GET and a POST on each protocol, as after a fresh start; what failed, if any."""
    failures = []
    for protocol, server in servers.fault.items():
        for method in ("GET", "POST"):
            json = {"after": "cancellations"} if method == "POST" else None
            try:
                response = await client.request(method, f"{server.url}/after", json=json)
            except httpx.HTTPError as exc:
                failures.append(f"{method} over {protocol}: {exc!r}")
            else:
                if response.status_code != 200:
                    failures.append(f"{method} over {protocol}: {response.status_code}")
    return failures


def _posts_processed_twice(server: FaultServer) -> dict[str, int]:
    counts = Counter(r.request_id for r in server.received if r.method == "POST" and r.processed)
    return {str(key): count for key, count in counts.items() if count > 1}


async def _enter_servers(stack: AsyncExitStack, uploads: Uploads) -> Servers:
    async def slow_reader(conn: RawConnection) -> None:
        await _slow_reader(conn, uploads)

    enter = stack.enter_async_context
    ca = shared_ca()  # the raw servers' CA: one client context trusts every server here
    return Servers(
        fault={
            "http1": await enter(FaultServer(PLAN, http2=False, ca=ca)),
            "http2": await enter(FaultServer(PLAN, ca=ca)),
        },
        fresh={
            "http1": await enter(FaultServer(ONE_PER_CONNECTION, http2=False, ca=ca)),
            "http2": await enter(FaultServer(ONE_PER_CONNECTION, ca=ca)),
        },
        upload={
            "http1": await enter(RawServer(slow_reader, tls=True, alpn=("http/1.1",))),
            "http2": await enter(RawServer(slow_reader, tls=True, alpn=("h2",))),
        },
        handshake=await enter(RawServer(_after_handshake, tls=True, tls_delay=2.0)),
        unanswered=await enter(_unanswered_listener()),
        closed=closed_port(),
    )


async def test_random_cancellations_leave_the_transport_working_and_nothing_held() -> None:
    collect_unclosed()  # what earlier tests left to the garbage collector is not ours
    fds_before = open_fds()
    recording = Recording()
    report = Report()
    uploads = Uploads()
    try:
        async with AsyncExitStack() as stack:
            servers = await _enter_servers(stack, uploads)
            ports = _ports(servers)
            verify = servers.fault["http2"].ssl_context
            transport = resilient_transport(
                verify=verify,
                hedging=HedgingPolicy(delay=0.05),
                sleep=_sleep_until_cancelled,
                **recording.options(),
            )
            async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
                await _run(client, _cases(random.Random(SEED), servers), report)
                failures = await _still_serves(client, servers)
                in_use = connections_in_use(transport)
            duplicates = {
                protocol: _posts_processed_twice(server)
                for protocol, server in servers.fault.items()
            }
            uploaded_twice = [
                key for key, count in Counter(uploads.completed).items() if key and count > 1
            ]
        fds_left = await fds_left_open(fds_before)
        unclosed = collect_unclosed()
    finally:
        recording.shutdown()

    summary = f"outcomes {dict(sorted(report.outcomes.items()))}\nports {ports}"
    print(summary)
    problems = {
        "non-httpx exceptions": report.unexpected,
        "cancellations turned into other exceptions": report.converted,
        f"cancellations not back within {PROMPT} s": report.late,
        "requests failing after the cancellations": failures,
        "connections in use after every call returned": in_use,
        "POSTs processed more than once": [f"{p}: {d}" for p, d in duplicates.items() if d],
        "uploads processed more than once": uploaded_twice,
        "connections used after a frame was cut short": uploads.protocol_errors,
        "spans never ended": recording.counter.open_spans(),
        "spans started, ended, exported": (
            []
            if recording.counter.started == recording.counter.ended == recording.exported()
            else [
                f"{recording.counter.started}, {recording.counter.ended}, {recording.exported()}"
            ]
        ),
        "sockets only the garbage collector closed": unclosed,
        "file descriptors opened and never closed": fds_left,
    }
    problems = {name: found for name, found in problems.items() if found}
    assert problems == {}, describe(summary, problems)
