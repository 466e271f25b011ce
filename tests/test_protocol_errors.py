"""A server that breaks the protocol is retried like one that says so; a bad request is not.

httpcore raises every error of h2 as ``LocalProtocolError``, also the ones
the server causes: frames h2 refuses, or a connection the server's error
closed under a request still sending ("Invalid input
ConnectionInputs.SEND_DATA in state ConnectionState.CLOSED"). Those are
retried for idempotent requests, as ``RemoteProtocolError`` is; a header
the caller set and h11 or h2 refuses is not.
"""

from __future__ import annotations

import contextlib
import functools

import anyio
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
import pytest

from .fakes import FakeSleep
from .flavour import FLAVOUR, HTTPTransport, RetryPolicy, RetryTransport, httpcore, httpx
from .flavour._classify import server_broke_protocol
from .raw_server import DATA, RawConnection, RawServer, frame, rst_stream

pytestmark = pytest.mark.anyio

REQUEST_HEADERS = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "x")]


def _as_httpx(detail: Exception) -> httpx.LocalProtocolError:
    """The exception httpx raises for httpcore's ``LocalProtocolError(detail)``."""
    exc = httpx.LocalProtocolError(str(detail))
    exc.__cause__ = httpcore.LocalProtocolError(detail)
    return exc


def _h2_error(steps: str) -> Exception:
    """The exception a client-side h2 connection raises at the end of ``steps``."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    try:
        if steps == "server sends DATA on stream 0":
            conn.receive_data(frame(DATA, 0, 0, b"x"))
        elif steps == "request after the server broke the connection":
            with contextlib.suppress(h2.exceptions.ProtocolError):
                conn.receive_data(frame(DATA, 0, 0, b"x"))
            conn.send_headers(1, REQUEST_HEADERS)
        elif steps == "body after the server reset the stream":
            conn.send_headers(1, REQUEST_HEADERS)
            conn.receive_data(rst_stream(1, 0x2))
            conn.send_data(1, b"x")
        elif steps == "caller sets a TE header":
            conn.send_headers(1, [*REQUEST_HEADERS, ("te", "gzip")])
    except h2.exceptions.ProtocolError as exc:
        return exc
    raise AssertionError(f"h2 raised nothing for {steps!r}")


def _h11_error() -> Exception:
    try:
        h11.Request(method="GET", target="/", headers=[("Host", "x"), ("X-Token", "Bearer x\n")])
    except h11.LocalProtocolError as exc:
        return exc
    raise AssertionError("h11 raised nothing")


@pytest.mark.parametrize(
    ("steps", "server_caused"),
    [
        ("server sends DATA on stream 0", True),
        ("request after the server broke the connection", True),
        ("body after the server reset the stream", True),
        ("caller sets a TE header", False),
    ],
)
def test_h2_errors_are_told_apart(steps: str, server_caused: bool) -> None:
    assert server_broke_protocol(_as_httpx(_h2_error(steps))) is server_caused


def test_an_illegal_header_value_is_the_callers() -> None:
    assert server_broke_protocol(_as_httpx(_h11_error())) is False


def test_other_exceptions_are_not_server_protocol_errors() -> None:
    remote = httpx.RemoteProtocolError("bad frame")
    remote.__cause__ = httpcore.RemoteProtocolError(_h2_error("server sends DATA on stream 0"))
    assert server_broke_protocol(remote) is False
    assert server_broke_protocol(httpx.LocalProtocolError("no cause")) is False
    assert server_broke_protocol(httpx.ReadError("reset")) is False


# Against a server that breaks HTTP/2 on its first connection.


class BreaksFirstConnection:
    """Sends a DATA frame on stream 0 (a connection error) once ``requests`` requests arrived.

    Later connections answer every request with 200 once its body is in.
    """

    def __init__(self, requests: int = 1) -> None:
        self.requests = requests
        self.connections = 0
        self.answered = 0

    async def __call__(self, conn: RawConnection) -> None:
        self.connections += 1
        if self.connections == 1:
            await conn.h2_requests(self.requests)
            await conn.send(frame(DATA, 0, 0, b"x"))
            await conn.drain()
            return
        while events := await conn.h2_events():
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    conn.h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    await conn.h2_respond(event.stream_id, 200, b"ok")
                    self.answered += 1


class Failures(httpx.AsyncBaseTransport):
    """Records the exceptions its inner transport raises."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport
        self.raised: list[Exception] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._transport.handle_async_request(request)
        except Exception as exc:
            self.raised.append(exc)
            raise

    async def aclose(self) -> None:
        await self._transport.aclose()


def _client(server: RawServer, sleep: FakeSleep) -> tuple[httpx.AsyncClient, Failures]:
    failures = Failures(HTTPTransport(verify=server.ssl_context))
    transport = RetryTransport(failures, RetryPolicy(), sleep=sleep)
    return httpx.AsyncClient(transport=transport, timeout=5), failures


async def test_a_get_that_meets_a_broken_connection_is_retried() -> None:
    handler = BreaksFirstConnection()
    sleep = FakeSleep()
    async with RawServer(handler, tls=True, alpn=("h2",)) as server:
        client, failures = _client(server, sleep)
        async with client:
            response = await client.get(server.url)
    assert (response.status_code, response.text) == (200, "ok")
    assert [type(exc) for exc in failures.raised] == [httpx.LocalProtocolError]
    assert [(e.reason, e.unprocessed) for e in response.extensions["retry"].events] == [
        ("LocalProtocolError", False)
    ]
    assert len(sleep.calls) == 1  # waited like any retry: never processed is not proven
    assert handler.connections == 2


# httpcore leaves the body's iterator unfinished when its connection fails
# under it; trio reports that when the iterator is collected.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_an_upload_refused_by_a_closed_connection_is_retried() -> None:
    """A GET reads the bad frame; the PUT sending its body meets h2's CLOSED state."""
    handler = BreaksFirstConnection(requests=2)
    sleep = FakeSleep()
    responses: dict[str, httpx.Response] = {}

    async def send(client: httpx.AsyncClient, method: str, url: str, body: bytes) -> None:
        responses[method] = await client.request(method, url, content=body or None)

    async with RawServer(handler, tls=True, alpn=("h2",)) as server:
        client, failures = _client(server, sleep)
        async with client, anyio.create_task_group() as group:
            group.start_soon(send, client, "GET", server.url, b"")
            await anyio.sleep(0.05)  # the GET's stream first, on the same connection
            group.start_soon(functools.partial(send, client, "PUT", server.url, b"x" * 5_000_000))
    assert {method: r.status_code for method, r in responses.items()} == {"GET": 200, "PUT": 200}
    reasons = [e.reason for e in responses["PUT"].extensions["retry"].events]
    if FLAVOUR == "httpx":
        assert any(
            "ConnectionInputs.SEND_DATA in state ConnectionState.CLOSED" in str(exc)
            for exc in failures.raised
        )
        assert reasons == ["LocalProtocolError"]
    else:
        # httpcore2 leaves the PUT waiting for flow control on the dead
        # connection until its read timeout, which is retried as well.
        assert reasons in (["LocalProtocolError"], ["ReadTimeout"])
    assert handler.answered == 2


async def test_a_post_that_meets_a_broken_connection_is_not_retried() -> None:
    handler = BreaksFirstConnection()
    sleep = FakeSleep()
    async with RawServer(handler, tls=True, alpn=("h2",)) as server:
        client, _ = _client(server, sleep)
        async with client:
            with pytest.raises(httpx.LocalProtocolError):
                await client.post(server.url, json={"amount": 10})
    assert sleep.calls == []
    assert handler.connections == 1


class Answers:
    """Answers every request with 200 (HTTP/1.1 or HTTP/2, as ALPN settled)."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, conn: RawConnection) -> None:
        if conn.alpn == "h2":
            while events := await conn.h2_events():
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests += 1
                        await conn.h2_respond(event.stream_id, 200, b"ok")
            return
        while True:
            await conn.read_until(b"\r\n\r\n")
            self.requests += 1
            await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


@pytest.mark.parametrize(
    ("alpn", "headers"),
    [("http/1.1", {"X-Token": "Bearer x\n"}), ("h2", {"TE": "gzip"})],
    ids=["h11-illegal-value", "h2-te-header"],
)
async def test_a_header_the_caller_set_wrong_is_not_retried(
    alpn: str, headers: dict[str, str]
) -> None:
    handler = Answers()
    sleep = FakeSleep()
    async with RawServer(handler, tls=True, alpn=(alpn,)) as server:
        client, _ = _client(server, sleep)
        async with client:
            with pytest.raises(httpx.LocalProtocolError):
                await client.get(server.url, headers=headers)
    assert sleep.calls == []
    assert handler.requests == 0
