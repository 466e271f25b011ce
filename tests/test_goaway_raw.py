"""What HTTP/2 servers send that the GOAWAY guard must judge, scripted frame by frame.

Against tests/raw_server.py, through the whole stack: an invalid GOAWAY, an
upload answered early, a server allowing few streams at once.
"""

from __future__ import annotations

import anyio
import h2.errors
import h2.events
import h2.settings
import pytest

from .flavour import httpx, resilient_transport
from .raw_server import GOAWAY, RawConnection, RawServer, frame, goaway

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(goaway(0, stream_id=1), id="on-stream-1"),
        pytest.param(frame(GOAWAY, 0, 0), id="empty"),
    ],
)
async def test_an_invalid_goaway_fails_the_post_once_with_an_httpx_error(bad: bytes) -> None:
    """RFC 9113 §6.8: a connection error. The POST was processed; it is never re-sent."""
    streams: list[int] = []

    async def handler(conn: RawConnection) -> None:
        streams.extend(await conn.h2_requests())
        await conn.send(bad)
        await conn.drain()

    async with RawServer(handler, tls=True) as server:
        transport = resilient_transport(verify=server.ssl_context, tracing=False)
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            with anyio.fail_after(5), pytest.raises(httpx.ProtocolError):
                await client.post(server.url, json={"order": 1})
    assert (streams, server.connections) == ([1], 1)


async def _answer_early(conn: RawConnection) -> None:
    """Answer each request at once with 413 and RST_STREAM(NO_ERROR), as nginx does.

    The body that still arrives is not read, but its connection-level
    flow-control credit goes back to the client (RFC 9113 §6.9); h2 answers
    the DATA of the reset stream with RST_STREAM(STREAM_CLOSED).
    """
    while True:
        events = await conn.h2_events()
        if not events:
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                assert event.stream_id is not None
                if dict(event.headers or ())[b":method"] == b"GET":
                    continue  # answered when it ends
                await conn.h2_respond(event.stream_id, 413, b"too large")
                conn.h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            elif isinstance(event, h2.events.DataReceived):
                conn.h2.increment_flow_control_window(event.flow_controlled_length or 0)
            elif isinstance(event, h2.events.StreamEnded):
                assert event.stream_id is not None
                await conn.h2_respond(event.stream_id, 200, b"ok")
        await conn.h2_flush()


async def test_an_early_413_during_an_upload_reaches_the_caller_once() -> None:
    """RFC 9113 §8.1: the client must not discard the response; the PUT is not re-sent."""
    async with RawServer(_answer_early, tls=True) as server:
        transport = resilient_transport(verify=server.ssl_context, tracing=False)
        async with httpx.AsyncClient(transport=transport, timeout=2) as client:
            with anyio.fail_after(5):
                response = await client.put(server.url, content=b"x" * 1_000_000)
                assert (response.status_code, response.text) == (413, "too large")
                assert response.extensions["retry"].attempts == 1
                # The connection is whole: the next request goes on it.
                again = await client.get(server.url)
    assert (again.status_code, again.text) == (200, "ok")
    assert server.connections == 1


async def test_a_server_allowing_two_streams_at_once_gets_more_connections_not_a_queue() -> None:
    """httpcore's pool would queue every request on the first connection."""
    open_streams: list[int] = []

    async def handler(conn: RawConnection) -> None:
        conn.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
        pending: list[int] = []
        while True:  # until the client hangs up (EOFError)
            # Answer two requests at once, or what came after a quiet moment.
            with anyio.move_on_after(0.2) as quiet:
                pending += await conn.h2_requests()
            if len(pending) < 2 and not quiet.cancelled_caught:
                continue
            open_streams.append(len(pending))
            for stream_id in pending:
                await conn.h2_respond(stream_id, 200, b"ok")
            pending.clear()

    async with RawServer(handler, tls=True) as server:
        transport = resilient_transport(verify=server.ssl_context, tracing=False)
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            with anyio.fail_after(5):
                await client.get(server.url)  # the first connection learns the limit
                async with anyio.create_task_group() as tg:
                    for _ in range(4):
                        tg.start_soon(client.get, server.url)
    assert server.connections == 2
    assert max(open_streams) <= 2
