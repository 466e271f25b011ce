"""A 5,000-request soak with 30% faults through the whole stack, tracing recording.

The fault server draws, from one seeded ``Weighted`` route, a reset (of the
connection or, on HTTP/2, of the stream) before the response, in the middle
of the body or right after the headers, a 503 with and without
``Retry-After``, or a stall past the client's read timeout. GETs (some streamed and closed after
the first chunk) and POSTs without idempotency keys go through
``resilient_transport()`` 50 at a time, on asyncio and trio, over HTTP/1.1
and HTTP/2 (TLS, ALPN). Backoff costs no time: the injected sleep only
yields.

What a user relies on after such a run:

- every request ended with a response or an httpx exception, nothing else;
- no POST was processed twice;
- once every response is closed, no pooled connection is still in use;
- every span started was ended, and exported;
- the process holds as many file descriptors as before, once the client
  and the server are closed, and no socket was left for the garbage
  collector to close.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest

from httpx_resilience.testing import (
    FaultPlan,
    FaultServer,
    Reset,
    ResetMidBody,
    Respond,
    Stall,
    Weighted,
)

from .flavour import httpx, resilient_transport
from .leaks import (
    UNFINISHED_BODIES,
    Recording,
    collect_unclosed,
    connections_in_use,
    describe,
    fds_left_open,
    open_fds,
)

pytestmark = [pytest.mark.anyio, UNFINISHED_BODIES]

#: Requests per combination of event loop and protocol: 5,000 over the four.
#: (5,000 per combination took 26 s for asyncio and HTTP/1.1 alone on a
#: 2-core machine, TLS handshakes of the reset connections most of it.)
SOAK_REQUESTS = 1_250
#: Requests in flight at once.
CONCURRENCY = 50
SEED = 20_261_129
#: A stalled response meets this read timeout; the stall itself lasts longer.
READ_TIMEOUT = 0.2
#: A run that has not finished by then stops sending, and fails: something
#: holds requests up (a pinned pool, say). About 6 s is usual.
TIME_LIMIT = 20.0

#: 70 answers in 100; the other 30 are faults. Resets come in both scopes:
#: on HTTP/2 a connection reset fails every stream in flight on it, a stream
#: reset only its own (on HTTP/1.1 both are a TCP reset).
PLAN = FaultPlan(
    default=Weighted(
        (70, Respond()),
        # before any byte of the response
        (3, Reset()),
        (2, Reset(scope="stream")),
        # during the body
        (2, ResetMidBody(after=4096, size=32768)),
        (2, ResetMidBody(after=4096, size=32768, scope="stream")),
        # right after the headers
        (3, ResetMidBody(after=0, size=1024)),
        (2, ResetMidBody(after=0, size=1024, scope="stream")),
        (5, Respond(503, retry_after=1)),
        (5, Respond(503)),
        # past the read timeout
        (6, Stall(seconds=2.0)),
    ),
    seed=SEED,
)


async def _zero_wait(seconds: float) -> None:
    """The retry layer's sleep: lets other tasks run, waits no time."""
    await anyio.lowlevel.checkpoint()


class Tally:
    """How each request ended."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.sent = 0

    def ended(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def failed(self, number: int, kind: str, exc: BaseException) -> None:
        self.outcomes[f"UNEXPECTED {type(exc).__name__}"] += 1
        if len(self.unexpected) < 3:  # the first few in full; the count says the rest
            text = "".join(traceback.format_exception(exc))
            self.unexpected.append(f"request {number} ({kind}): {text}")


async def _one(client: httpx.AsyncClient, number: int, kind: str, tally: Tally) -> None:
    try:
        if kind == "stream":
            # Closed after the first chunk: the rest of the body is never read.
            async with client.stream("GET", "/bytes", params={"size": 32768}) as response:
                async for _ in response.aiter_raw():
                    break
        elif kind == "post":
            response = await client.post("/orders", json={"order": number})
        else:
            response = await client.get(f"/items/{number}")
    except httpx.HTTPError as exc:
        tally.ended(type(exc).__name__)
    except Exception as exc:
        tally.failed(number, kind, exc)
    else:
        tally.ended(str(response.status_code))


def _kinds(rng: random.Random, count: int) -> Iterator[tuple[int, str]]:
    for number in range(count):
        yield number, rng.choices(("get", "stream", "post"), weights=(4, 2, 4))[0]


async def _soak(client: httpx.AsyncClient, tally: Tally) -> None:
    requests = _kinds(random.Random(SEED), SOAK_REQUESTS)
    stop_at = time.monotonic() + TIME_LIMIT

    async def worker() -> None:
        for number, kind in requests:
            if time.monotonic() > stop_at:
                return
            tally.sent += 1
            await _one(client, number, kind, tally)

    async with anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(worker)


def _posts_processed_twice(server: FaultServer) -> dict[str, int]:
    """X-Request-IDs of POSTs the server processed more than once (GETs may be re-sent)."""
    counts = Counter(
        record.request_id
        for record in server.received
        if record.method == "POST" and record.processed
    )
    return {str(key): count for key, count in counts.items() if count > 1}


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_soak_with_faults_leaves_nothing_behind(http2: bool) -> None:
    collect_unclosed()  # what earlier tests left to the garbage collector is not ours
    fds_before = open_fds()
    recording = Recording()
    tally = Tally()
    started = time.monotonic()
    try:
        async with FaultServer(PLAN, http2=http2) as server:
            transport = resilient_transport(
                verify=server.ssl_context, http2=http2, sleep=_zero_wait, **recording.options()
            )
            timeout = httpx.Timeout(5.0, read=READ_TIMEOUT)
            async with httpx.AsyncClient(
                transport=transport, base_url=server.url, timeout=timeout
            ) as client:
                await _soak(client, tally)
                # Every response is closed by now, and nothing is in flight.
                in_use = connections_in_use(transport)
            duplicates = _posts_processed_twice(server)
            versions = Counter(record.http_version for record in server.received)
        elapsed = time.monotonic() - started
        fds_left = await fds_left_open(fds_before)
        unclosed = collect_unclosed()
    finally:
        recording.shutdown()

    summary = (
        f"{tally.sent} requests in {elapsed:.1f} s; versions {dict(versions)}; "
        f"outcomes {dict(tally.outcomes.most_common())}"
    )
    print(summary)
    counter = recording.counter
    problems = {
        "non-httpx exceptions (the first few)": tally.unexpected,
        f"not all sent within {TIME_LIMIT:g} s": (
            [] if tally.sent == SOAK_REQUESTS else [f"{tally.sent} of {SOAK_REQUESTS}"]
        ),
        "requests that did not end": (
            [] if sum(tally.outcomes.values()) == tally.sent else [f"of {tally.sent}"]
        ),
        "HTTP versions other than the one offered": [
            version for version in versions if version != ("2" if http2 else "1.1")
        ],
        "POSTs processed more than once": [f"{key}: {n}" for key, n in duplicates.items()],
        "connections in use after every response was closed": in_use,
        "spans never ended": counter.open_spans(),
        "spans started, ended, exported": (
            []
            if counter.started == counter.ended == recording.exported()
            else [f"{counter.started}, {counter.ended}, {recording.exported()}"]
        ),
        "sockets only the garbage collector closed": unclosed,
        "file descriptors opened and never closed": fds_left,
    }
    problems = {name: found for name, found in problems.items() if found}
    assert problems == {}, describe(summary, problems)
