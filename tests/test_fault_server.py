"""The fault server against a plain httpx client, over HTTP/2, HTTP/1.1 and h2c.

What bare httpx 0.28.1 raises for each fault is asserted exactly: the retry
layer builds on these shapes. The GOAWAY tests also read the raw frames, so
"the server answered" is checked on the wire, not through h2's client.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpcore
import httpx
import pytest
from hpack import Decoder
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame

from httpx_resilience.testing import (
    Delay,
    FaultPlan,
    FaultServer,
    GoAway,
    GoAwaySent,
    Received,
    Refuse,
    Reset,
    ResetMidBody,
    Respond,
    SlowBody,
    Stall,
    Weighted,
)

pytestmark = pytest.mark.anyio

#: "h2" and "h1" over TLS (ALPN picks), "plain": HTTP/1.1 without TLS.
PROTOCOLS = ["h2", "h1", "plain"]


@asynccontextmanager
async def serve_and_connect(
    plan: FaultPlan | None, protocol: str, **client_options: object
) -> AsyncIterator[tuple[FaultServer, httpx.AsyncClient]]:
    """A fault server and a bare httpx client; the client closes first."""
    async with FaultServer(plan, tls=protocol != "plain") as server:
        verify = server.ssl_context if server.tls else True
        async with httpx.AsyncClient(
            http2=protocol == "h2",
            verify=verify,
            **client_options,  # type: ignore[arg-type]
        ) as client:
            yield server, client


def version(protocol: str) -> str:
    return "2" if protocol == "h2" else "1.1"


# -- plans ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_sequence_is_served_in_order_then_repeats(protocol: str) -> None:
    plan = FaultPlan(
        routes={
            "/flaky": [Respond(503, b"busy", retry_after=3), Respond(503), Respond(201, b"done")]
        }
    )
    async with serve_and_connect(plan, protocol) as (server, client):
        responses = [
            await client.post(f"{server.url}/flaky", content=f"attempt {i}".encode())
            for i in range(4)
        ]

    assert [r.status_code for r in responses] == [503, 503, 201, 201]
    assert responses[0].headers["retry-after"] == "3"
    assert "retry-after" not in responses[1].headers
    assert responses[0].content == b"busy"
    assert responses[1].json() == {
        "method": "POST",
        "path": "/flaky",
        "http_version": version(protocol),
    }
    assert responses[2].content == b"done"
    assert [(r.body, r.status, r.processed, r.complete) for r in server.received] == [
        (b"attempt 0", 503, True, True),
        (b"attempt 1", 503, True, True),
        (b"attempt 2", 201, True, True),
        (b"attempt 3", 201, True, True),
    ]
    assert {r.http_version for r in server.received} == {version(protocol)}


async def test_weighted_plan_repeats_with_its_seed() -> None:
    route = Weighted((3, Respond(200)), (1, Respond(503)), (1, Respond(429)))

    async def statuses(seed: int) -> list[int]:
        plan = FaultPlan(routes={"/r": route}, seed=seed)
        async with serve_and_connect(plan, "h2") as (server, client):
            return [(await client.get(f"{server.url}/r")).status_code for _ in range(30)]

    first = await statuses(11)
    assert first == await statuses(11)
    assert first != await statuses(12)
    assert set(first) == {200, 429, 503}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unplanned_paths_echo_and_bytes_streams(protocol: str) -> None:
    async with serve_and_connect(None, protocol) as (server, client):
        echo = await client.delete(f"{server.url}/some/where?x=1")
        size = 1_000_000
        received = 0
        async with client.stream("GET", f"{server.url}/bytes?size={size}") as response:
            assert response.headers["content-length"] == str(size)
            async for chunk in response.aiter_raw():
                received += len(chunk)
        head = await client.head(f"{server.url}/bytes?size=10")

    assert echo.status_code == 200
    assert echo.json() == {
        "method": "DELETE",
        "path": "/some/where",
        "http_version": version(protocol),
    }
    assert received == size
    assert head.status_code == 200
    assert head.content == b""
    echo_record, bytes_record, head_record = server.received
    assert echo_record.query == "x=1"
    assert (bytes_record.path, bytes_record.body_sent, bytes_record.complete) == (
        "/bytes",
        size,
        True,
    )
    assert head_record.body_sent == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_records_headers_and_the_whole_body(protocol: str) -> None:
    body = bytes(range(256)) * 400  # larger than HTTP/2's initial window
    headers = {
        "X-Request-ID": "req-1",
        "Idempotency-Key": "key-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Multi": "a",
    }
    async with serve_and_connect(None, protocol) as (server, client):
        await client.post(f"{server.url}/pay", content=body, headers=headers)
        await client.post(f"{server.url}/pay", content=b"again", headers=headers)
        await client.post(f"{server.url}/pay", headers={"X-Request-ID": "req-2"})

    first = server.received[0]
    assert isinstance(first, Received)
    assert (first.method, first.path, first.body) == ("POST", "/pay", body)
    assert first.request_id == "req-1"
    assert first.idempotency_key == "key-1"
    assert first.traceparent == headers["traceparent"]
    assert first.headers["x-multi"] == "a"
    assert all(name == name.lower() for name in first.headers)
    assert first.outcome == Respond()
    assert first.connection == 1
    assert (first.stream_id is None) == (protocol != "h2")
    assert server.processed_count("req-1") == 2
    assert server.processed_count("key-1", header="Idempotency-Key") == 2
    assert server.processed_count("req-2") == 1
    assert server.duplicates() == {"req-1": 2}
    assert server.duplicates("idempotency-key") == {"key-1": 2}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_delay_and_slow_body(protocol: str) -> None:
    plan = FaultPlan(
        routes={
            "/late": Delay(0.05, then=Respond(202, b"late")),
            "/slow": SlowBody(chunks=3, chunk_size=100, interval=0.02),
        }
    )
    async with serve_and_connect(plan, protocol) as (server, client):
        start = anyio.current_time()
        late = await client.get(f"{server.url}/late")
        late_after = anyio.current_time() - start
        start = anyio.current_time()
        slow = await client.get(f"{server.url}/slow")
        slow_after = anyio.current_time() - start

    assert (late.status_code, late.content) == (202, b"late")
    assert late_after >= 0.05
    assert len(slow.content) == 300
    assert slow_after >= 0.04
    assert [(r.status, r.body_sent, r.complete) for r in server.received] == [
        (202, 4, True),
        (200, 300, True),
    ]


# -- resets and refusals -----------------------------------------------------------


async def read_body(client: httpx.AsyncClient, url: str, chunks: list[bytes]) -> None:
    """Stream a GET's body into ``chunks``, so the bytes before a failure count."""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == "100000"
        # A loop, not a comprehension: the chunks before the failure must stay.
        async for chunk in response.aiter_raw():
            chunks.append(chunk)  # noqa: PERF401


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reset_before_response_is_a_read_error(protocol: str) -> None:
    plan = FaultPlan(routes={"/reset": Reset()})
    async with serve_and_connect(plan, protocol) as (server, client):
        before = await client.get(f"{server.url}/")
        with pytest.raises(httpx.ReadError):
            await client.post(f"{server.url}/reset", content=b"charge")
        after = await client.get(f"{server.url}/")

    assert before.status_code == after.status_code == 200
    _, reset, fine = server.received
    assert (reset.body, reset.processed, reset.status, reset.complete) == (
        b"charge",
        True,  # the server did the work; only the answer is lost
        None,
        False,
    )
    assert fine.connection == reset.connection + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reset_mid_body_is_a_read_error_after_the_bytes_sent(protocol: str) -> None:
    plan = FaultPlan(routes={"/cut": ResetMidBody(after=5000, size=100_000)})
    chunks: list[bytes] = []
    async with serve_and_connect(plan, protocol) as (server, client):
        with pytest.raises(httpx.ReadError):
            await read_body(client, f"{server.url}/cut", chunks)

    assert len(b"".join(chunks)) == 5000
    (record,) = server.received
    assert (record.status, record.body_sent, record.complete) == (200, 5000, False)


async def test_h2_stream_resets_leave_the_connection_up() -> None:
    plan = FaultPlan(
        routes={
            "/rst": Reset(scope="stream"),
            "/cut": ResetMidBody(after=5000, size=100_000, scope="stream"),
        }
    )
    chunks: list[bytes] = []
    async with serve_and_connect(plan, "h2") as (server, client):
        with pytest.raises(httpx.RemoteProtocolError) as reset:
            await client.get(f"{server.url}/rst")
        with pytest.raises(httpx.RemoteProtocolError) as cut:
            await read_body(client, f"{server.url}/cut", chunks)
        assert (await client.get(f"{server.url}/")).status_code == 200

    for failure in (reset, cut):
        event = failure.value.__cause__.args[0]  # type: ignore[union-attr]
        assert isinstance(event, h2.events.StreamReset)
        assert event.error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert len(b"".join(chunks)) == 5000
    assert {r.connection for r in server.received} == {1}
    assert [r.processed for r in server.received] == [True, True, True]


async def test_refused_stream_reaches_httpx_as_stream_reset_and_is_not_processed() -> None:
    plan = FaultPlan(routes={"/pay": [Refuse(), Respond(201)]})
    async with serve_and_connect(plan, "h2") as (server, client):
        with pytest.raises(httpx.RemoteProtocolError) as failure:
            await client.post(f"{server.url}/pay", content=b"charge")
        again = await client.post(f"{server.url}/pay", content=b"charge")

    # The exact shape the retry layer reads to know the request was not processed.
    cause = failure.value.__cause__
    assert isinstance(cause, httpcore.RemoteProtocolError)
    event = cause.args[0]
    assert isinstance(event, h2.events.StreamReset)
    assert event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
    assert event.remote_reset
    assert again.status_code == 201
    refused, served = server.received
    assert (refused.outcome, refused.processed, refused.status, refused.body) == (
        Refuse(),
        False,
        None,
        b"charge",
    )
    assert served.processed
    assert served.connection == refused.connection  # a refusal keeps the connection
    assert server.processed_count("charge", header="x-none") == 0


@pytest.mark.parametrize("protocol", ["h1", "plain"])
async def test_refused_stream_on_http11_is_a_reset_and_not_processed(protocol: str) -> None:
    plan = FaultPlan(routes={"/pay": Refuse()})
    async with serve_and_connect(plan, protocol) as (server, client):
        with pytest.raises(httpx.ReadError):
            await client.post(f"{server.url}/pay", content=b"charge")

    (record,) = server.received
    assert (record.processed, record.status) == (False, None)


# -- stalls ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stall_outlasts_the_read_timeout_but_not_the_server(protocol: str) -> None:
    plan = FaultPlan(routes={"/stall": Stall(seconds=30)})
    async with serve_and_connect(plan, protocol, timeout=httpx.Timeout(5, read=0.05)) as (
        server,
        client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{server.url}/stall")
        closing = anyio.current_time()
    # Leaving the server ends the stall at once, not after 30 s.
    assert anyio.current_time() - closing < 2
    (record,) = server.received
    assert (record.outcome, record.processed, record.status) == (Stall(30), True, None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stall_gives_up_after_its_seconds(protocol: str) -> None:
    plan = FaultPlan(routes={"/stall": Stall(seconds=0.05)})
    async with serve_and_connect(plan, protocol) as (server, client):
        with pytest.raises(httpx.RemoteProtocolError) as failure:
            await client.get(f"{server.url}/stall")

    if protocol == "h2":
        event = failure.value.__cause__.args[0]  # type: ignore[union-attr]
        assert isinstance(event, h2.events.StreamReset)
        assert event.error_code == h2.errors.ErrorCodes.CANCEL
    else:
        assert str(failure.value) == "Server disconnected without sending a response."


# -- GOAWAY -----------------------------------------------------------------------------


async def fetch_all(
    client: httpx.AsyncClient, url: str, count: int, method: str = "GET"
) -> dict[str, httpx.Response | httpx.HTTPError]:
    """Send ``count`` requests at once, each with its own X-Request-ID."""
    results: dict[str, httpx.Response | httpx.HTTPError] = {}

    async def one(request_id: str) -> None:
        try:
            content = request_id.encode() if method == "POST" else None
            results[request_id] = await client.request(
                method, url, content=content, headers={"X-Request-ID": request_id}
            )
        except httpx.HTTPError as exc:
            results[request_id] = exc

    async with anyio.create_task_group() as task_group:
        for number in range(count):
            task_group.start_soon(one, f"r{number}")
    return results


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_goaway_every_answers_the_streams_it_covers(method: str) -> None:
    plan = FaultPlan(goaway_every=5)
    async with serve_and_connect(plan, "h2") as (server, client):
        results = await fetch_all(client, f"{server.url}/work", 20, method)

    assert server.goaways, "the server never sent GOAWAY"
    last_ids = {goaway.connection: goaway.last_stream_id for goaway in server.goaways}
    for connection, last in last_ids.items():
        on_it = [r for r in server.received if r.connection == connection]
        processed = [r for r in on_it if r.processed]
        assert len(processed) == 5
        # Every processed request got its whole response, all of them up to last.
        assert all(r.stream_id is not None and r.stream_id <= last for r in processed)
        assert all(r.complete and r.status == 200 for r in processed)
        ignored = [r for r in on_it if not r.processed]
        assert all(r.stream_id is not None and r.stream_id > last for r in ignored)
        assert all(r.outcome is None and r.status is None for r in ignored)
    assert all(
        len([r for r in server.received if r.connection == c and r.processed]) <= 5
        for c in range(1, server.connections + 1)
    )
    # Nothing reached a handler twice; a response means exactly one processing.
    assert server.duplicates() == {}
    for request_id, result in results.items():
        if isinstance(result, httpx.Response):
            assert result.status_code == 200
            assert server.processed_count(request_id) == 1
        else:
            assert isinstance(result, httpx.RemoteProtocolError | httpx.LocalProtocolError)


async def test_bare_httpx_loses_the_response_that_follows_a_goaway() -> None:
    """The h2 4.x trap: the stream at last_stream_id is answered, yet httpx fails it.

    The GOAWAY precedes that stream's response; h2 moves the client
    connection to CLOSED on it, and httpcore fails every stream with no
    event queued yet with the ConnectionTerminated event, processed or not.
    """
    plan = FaultPlan(goaway_every=5)
    async with serve_and_connect(plan, "h2") as (server, client):
        results = await fetch_all(client, f"{server.url}/work", 20)

    for goaway in server.goaways:
        (last,) = [
            r
            for r in server.received
            if r.connection == goaway.connection and r.stream_id == goaway.last_stream_id
        ]
        assert last.processed
        assert last.complete
        assert last.request_id is not None
        failure = results[last.request_id]
        assert isinstance(failure, httpx.RemoteProtocolError | httpx.LocalProtocolError)


async def test_goaway_outcome_reaches_httpx_as_connection_terminated() -> None:
    plan = FaultPlan(routes={"/bye": GoAway(then=Respond(200, b"bye"))})
    async with serve_and_connect(plan, "h2") as (server, client):
        assert (await client.get(f"{server.url}/")).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError) as failure:
            await client.get(f"{server.url}/bye")
        assert (await client.get(f"{server.url}/")).status_code == 200

    cause = failure.value.__cause__
    assert isinstance(cause, httpcore.RemoteProtocolError)
    event = cause.args[0]
    assert isinstance(event, h2.events.ConnectionTerminated)
    assert (event.last_stream_id, event.error_code) == (3, 0)
    assert server.goaways == [GoAwaySent(connection=1, last_stream_id=3, error_code=0)]
    _, bye, after = server.received
    assert (bye.stream_id, bye.processed, bye.status, bye.body_sent, bye.complete) == (
        3,
        True,
        200,
        3,
        True,
    )
    assert after.connection == 2


async def test_coalesced_goaway_makes_h2_reject_the_response() -> None:
    plan = FaultPlan(routes={"/bye": GoAway(coalesce=True)})
    async with serve_and_connect(plan, "h2") as (server, client):
        with pytest.raises(httpx.LocalProtocolError) as failure:
            await client.get(f"{server.url}/bye")

    assert str(failure.value) == (
        "Invalid input ConnectionInputs.RECV_HEADERS in state ConnectionState.CLOSED"
    )
    (record,) = server.received
    assert (record.processed, record.complete) == (True, True)


async def test_goaway_with_last_stream_id_zero_processes_nothing() -> None:
    plan = FaultPlan(routes={"/bye": GoAway(last_stream_id=0)})
    async with serve_and_connect(plan, "h2") as (server, client):
        with pytest.raises(httpx.RemoteProtocolError) as failure:
            await client.post(f"{server.url}/bye", content=b"x")

    # httpcore re-sends streams above last_stream_id itself, but tests
    # `last_stream_id` for truth: with 0 it gives up instead.
    event = failure.value.__cause__.args[0]  # type: ignore[union-attr]
    assert isinstance(event, h2.events.ConnectionTerminated)
    assert event.last_stream_id == 0
    (record,) = server.received
    assert (record.processed, record.status, record.outcome) == (
        False,
        None,
        GoAway(last_stream_id=0),
    )


@pytest.mark.parametrize("protocol", ["h1", "plain"])
async def test_goaway_on_http11_is_connection_close(protocol: str) -> None:
    plan = FaultPlan(routes={"/bye": GoAway(then=Respond(200, b"bye"))}, goaway_every=3)
    async with serve_and_connect(plan, protocol) as (server, client):
        responses = [
            await client.get(f"{server.url}/{path}") for path in ["a", "b", "c", "bye", "d"]
        ]

    assert [r.headers.get("connection") for r in responses] == [None, None, "close", "close", None]
    assert all(r.status_code == 200 for r in responses)
    assert [r.connection for r in server.received] == [1, 1, 1, 2, 3]
    assert server.goaways == []


async def test_goaway_on_the_wire_answers_streams_up_to_last_then_closes() -> None:
    """Read the raw frames: h2's own client would reject them after the GOAWAY."""
    plan = FaultPlan(goaway_every=3)
    async with FaultServer(plan, tls=False) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            for stream_id in (1, 3, 5, 7, 9, 11):
                client.send_headers(stream_id, request_headers(server), end_stream=True)
            await stream.send(client.data_to_send())
            frames = await read_frames_until_eof(stream)

    goaway_at = next(i for i, frame in enumerate(frames) if isinstance(frame, GoAwayFrame))
    goaway = frames[goaway_at]
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.last_stream_id, goaway.error_code) == (5, 0)
    decoder = Decoder()
    statuses = {}
    ended = set()
    for frame in frames:
        if isinstance(frame, HeadersFrame):
            statuses[frame.stream_id] = dict(decoder.decode(frame.data, raw=True))[b":status"]
        if isinstance(frame, DataFrame | HeadersFrame) and "END_STREAM" in frame.flags:
            ended.add(frame.stream_id)
    assert statuses == {1: b"200", 3: b"200", 5: b"200"}
    assert ended == {1, 3, 5}
    # The response of stream 5 follows the GOAWAY, as nginx orders them.
    assert any(
        isinstance(frame, HeadersFrame) and frame.stream_id == 5 for frame in frames[goaway_at:]
    )
    assert [(r.stream_id, r.processed) for r in server.received] == [
        (1, True),
        (3, True),
        (5, True),
        (7, False),
        (9, False),
        (11, False),
    ]


async def test_h2_flow_control_waits_for_window_updates() -> None:
    size = 200_000  # three times the default window
    async with (
        FaultServer(tls=False) as server,
        await anyio.connect_tcp("127.0.0.1", server.port) as stream,
    ):
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, request_headers(server, f"/bytes?size={size}"), end_stream=True)
        await stream.send(client.data_to_send())
        received = 0
        unacknowledged: list[h2.events.DataReceived] = []
        # Read without acknowledging anything until the server goes quiet.
        while True:
            with anyio.move_on_after(0.05) as idle:
                data = await stream.receive()
            if idle.cancelled_caught:
                break
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data)
                    unacknowledged.append(event)
            await stream.send(client.data_to_send())
        stalled_at, sent_then = received, server.received[0].body_sent
        # Now acknowledge as we read, to the end of the body.
        for event in unacknowledged:
            client.acknowledge_received_data(event.flow_controlled_length, 1)
        await stream.send(client.data_to_send())
        ended = False
        with anyio.fail_after(5):
            while not ended:
                for event in client.receive_data(await stream.receive()):
                    if isinstance(event, h2.events.DataReceived):
                        received += len(event.data)
                        client.acknowledge_received_data(event.flow_controlled_length, 1)
                    ended = ended or isinstance(event, h2.events.StreamEnded)
                await stream.send(client.data_to_send())

    assert stalled_at == sent_then == 65535
    assert received == size
    assert server.received[0].complete


async def test_client_resets_end_waiting_streams_and_client_goaway_ends_the_connection() -> None:
    plan = FaultPlan(
        routes={
            "/stall": Stall(30),
            "/delay": Delay(30),
            "/slow": SlowBody(chunks=100, chunk_size=10, interval=0.01),
        }
    )
    async with (
        FaultServer(plan, tls=False) as server,
        await anyio.connect_tcp("127.0.0.1", server.port) as stream,
    ):
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        for stream_id, path in [(1, "/stall"), (3, "/delay"), (5, "/slow")]:
            client.send_headers(stream_id, request_headers(server, path), end_stream=True)
        await stream.send(client.data_to_send())
        with anyio.fail_after(2):
            # Polling: the server has no event for "sent some of the body".
            while len(server.received) < 3 or server.received[2].body_sent < 20:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        for stream_id in (1, 3, 5):
            client.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        client.send_headers(7, request_headers(server, "/after"), end_stream=True)
        await stream.send(client.data_to_send())
        statuses: dict[int, bytes] = {}
        with anyio.fail_after(2):
            while 7 not in statuses:
                for event in client.receive_data(await stream.receive()):
                    if isinstance(event, h2.events.ResponseReceived):
                        assert event.stream_id is not None
                        assert event.headers is not None
                        statuses[event.stream_id] = dict(event.headers)[b":status"]
        # The slow body stopped at the reset (give a write already under way
        # time to land); the connection still served stream 7.
        await anyio.sleep(0.05)
        slow_sent = server.received[2].body_sent
        await anyio.sleep(0.05)
        assert server.received[2].body_sent == slow_sent < 1000
        assert statuses == {7: b"200"}  # h2 drops what arrives for streams it reset
        # A client GOAWAY: the server closes once nothing is left to answer.
        client.close_connection()
        await stream.send(client.data_to_send())
        with anyio.fail_after(2):
            async for _ in stream:
                pass

    assert [(r.path, r.status, r.complete) for r in server.received] == [
        ("/stall", None, False),
        ("/delay", None, False),
        ("/slow", 200, False),
        ("/after", 200, True),
    ]


def request_headers(server: FaultServer, path: str = "/") -> list[tuple[str, str]]:
    return [
        (":method", "GET"),
        (":path", path),
        (":scheme", "http"),
        (":authority", f"127.0.0.1:{server.port}"),
    ]


async def read_frames_until_eof(stream: anyio.abc.ByteStream) -> list[Frame]:
    buffer = b""
    with anyio.fail_after(5):
        async for data in stream:  # until the server closes
            buffer += data
    frames = []
    while len(buffer) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
        frame.parse_body(memoryview(buffer[9 : 9 + length]))
        frames.append(frame)
        buffer = buffer[9 + length :]
    return frames


# -- TLS, h2c, lifecycle --------------------------------------------------------------


async def test_tls_certificate_and_ca_file() -> None:
    async with FaultServer() as server:
        ca_path = server.ca_path
        from_file = ssl.create_default_context(cafile=str(ca_path))
        for url in (server.url, f"https://localhost:{server.port}"):
            async with httpx.AsyncClient(verify=from_file) as client:
                assert (await client.get(url)).status_code == 200
        async with httpx.AsyncClient() as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(server.url)
        assert server.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
        assert server.url == f"https://127.0.0.1:{server.port}"
    assert not ca_path.exists()

    async with FaultServer(tls=False) as plain:
        assert plain.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="no TLS"):
            _ = plain.ssl_context


async def test_plain_http_serves_h2c_by_prior_knowledge_and_http11() -> None:
    async with FaultServer(tls=False) as server:
        async with httpx.AsyncClient(http1=False, http2=True) as h2c:
            over_h2c = await h2c.get(f"{server.url}/x")
        async with httpx.AsyncClient() as http11:
            over_http11 = await http11.get(f"{server.url}/x")

    assert over_h2c.http_version == "HTTP/2"
    assert json.loads(over_h2c.content)["http_version"] == "2"
    assert over_http11.http_version == "HTTP/1.1"
    assert [r.http_version for r in server.received] == ["2", "1.1"]


async def test_max_lifetime_stops_the_server_and_its_connections() -> None:
    async with FaultServer(tls=False, max_lifetime=0.05) as server:
        # Connected before the end (the kernel accepts it even if the loop is slow).
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            with anyio.fail_after(2):
                await server.wait_stopped()
                # The open connection was closed, or refused if never accepted.
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()
        with pytest.raises(OSError, match="connection attempts failed"):
            await anyio.connect_tcp("127.0.0.1", server.port)


async def test_leaving_closes_connections_with_requests_in_flight() -> None:
    plan = FaultPlan(routes={"/stall": Stall(30), "/slow": SlowBody(chunks=100, interval=0.02)})
    failures: list[BaseException] = []
    async with FaultServer(plan) as server:
        client = httpx.AsyncClient(http2=True, verify=server.ssl_context)

        async def doomed(path: str) -> None:
            try:
                async with client.stream("GET", f"{server.url}{path}") as response:
                    async for _ in response.aiter_raw():
                        pass
            except httpx.HTTPError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(doomed, "/stall")
            task_group.start_soon(doomed, "/slow")
            with anyio.fail_after(2):
                # Polling: the server has no event for "request arrived".
                while len(server.received) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            server.stop()
        await client.aclose()

    assert len(failures) == 2
    assert all(isinstance(f, httpx.TransportError) for f in failures)


async def test_a_server_runs_once() -> None:
    server = FaultServer(tls=False)
    async with server:
        pass
    with pytest.raises(RuntimeError, match="runs once"):
        async with server:
            pass
    with pytest.raises(ValueError, match="max_lifetime"):
        FaultServer(max_lifetime=0)
