"""The GOAWAY guard's frame bookkeeping, driven by real h2 state machines."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest

from .flavour._goaway import GoawayState, H2Watch

REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM


class Pair:
    """An h2 client and server joined through the watch, bytes moved by hand."""

    def __init__(self, chunk: int | None = None) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.state = GoawayState()
        self.watch = H2Watch(self.state)
        self.chunk = chunk
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.flush()

    def flush(self) -> list[h2.events.Event]:
        """Deliver all pending bytes both ways; return the client's events."""
        events: list[h2.events.Event] = []
        while True:
            outbound = self.client.data_to_send()
            if outbound:
                outbound = self.watch.sent(outbound)
                # h2's server side cannot take frames after its own GOAWAY;
                # a real server reads and ignores them.
                if self.server.state_machine.state != h2.connection.ConnectionState.CLOSED:
                    self.server.receive_data(outbound)
            inbound = self.server.data_to_send()
            pending = self.watch.pending()
            if pending:
                events += self.client.receive_data(pending)
            if inbound:
                step = self.chunk or len(inbound)
                for start in range(0, len(inbound), step):
                    events += self.client.receive_data(
                        self.watch.received(inbound[start : start + step])
                    )
            if not outbound and not inbound and not pending:
                return events

    def request(self) -> int:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(
            stream_id,
            [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "x")],
            end_stream=True,
        )
        return stream_id

    def respond(self, stream_id: int, body: bytes = b"ok") -> None:
        self.server.send_headers(stream_id, [(":status", "200")])
        self.server.send_data(stream_id, body, end_stream=True)


def _ended(events: list[h2.events.Event]) -> list[int]:
    return [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)]


def _refused(events: list[h2.events.Event]) -> list[int]:
    return [
        e.stream_id
        for e in events
        if isinstance(e, h2.events.StreamReset) and e.error_code == REFUSED
    ]


def _terminated(events: list[h2.events.Event]) -> list[h2.events.ConnectionTerminated]:
    return [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_streams_below_goaway_finish_and_the_rest_are_refused(chunk: int | None) -> None:
    pair = Pair(chunk)
    s1, s3, s5, s7 = (pair.request() for _ in range(4))
    pair.flush()
    pair.respond(s1)
    pair.server.close_connection(last_stream_id=s5)
    events = pair.flush()
    assert _ended(events) == [s1]
    assert _refused(events) == [s7]
    assert _terminated(events) == []  # never handed to h2
    assert pair.state.draining
    assert pair.state.last_stream_id == s5

    # The server answers the streams it accepted. h2's server side will not
    # send after its own GOAWAY (Hypercorn's trap), so the frames are built
    # by hand.
    frames = _response_frames(s3) + _response_frames(s5)
    events = pair.client.receive_data(pair.watch.received(frames))
    assert _ended(events) == [s3, s5]
    assert _terminated(events) == []


def test_a_stream_opened_after_goaway_is_refused_at_once() -> None:
    pair = Pair()
    s1 = pair.request()
    pair.flush()
    pair.server.close_connection(last_stream_id=s1)
    assert _terminated(pair.flush()) == []
    s3 = pair.request()
    events = pair.flush()
    assert _refused(events) == [s3]
    events = pair.client.receive_data(pair.watch.received(_response_frames(s1)))
    assert _ended(events) == [s1]
    assert _terminated(events) == []


def test_goaway_is_kept_from_h2_and_drains_the_connection() -> None:
    pair = Pair()
    s1 = pair.request()
    pair.flush()
    pair.respond(s1)
    pair.flush()
    pair.server.close_connection(last_stream_id=s1)
    assert _terminated(pair.flush()) == []
    assert pair.state.draining
    assert pair.state.last_stream_id == s1


def test_streams_still_waiting_to_be_refused_are_refused_when_the_server_closes() -> None:
    pair = Pair()
    pair.request()
    s3 = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        s3, [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", "x")]
    )
    pair.flush()
    pair.server.close_connection(last_stream_id=1)
    pair.flush()
    events = pair.client.receive_data(pair.watch.eof())
    assert _refused(events) == [s3]


def _response_frames(stream_id: int) -> bytes:
    """HEADERS(:status 200) + DATA(END_STREAM) for a stream, encoded by hand.

    The HEADERS block is the HPACK static-table entry 8, ``:status: 200``.
    """
    headers = bytes([0x88])
    body = b"ok"
    return (
        len(headers).to_bytes(3, "big")
        + bytes([0x1, 0x4])  # HEADERS, END_HEADERS
        + stream_id.to_bytes(4, "big")
        + headers
        + len(body).to_bytes(3, "big")
        + bytes([0x0, 0x1])  # DATA, END_STREAM
        + stream_id.to_bytes(4, "big")
        + body
    )


def test_a_request_still_sending_its_body_is_refused_once_it_is_sent() -> None:
    """Reset earlier, h2 would fail the body's remaining writes."""
    pair = Pair()
    s1 = pair.request()
    s3 = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        s3, [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", "x")]
    )
    pair.flush()
    pair.server.close_connection(last_stream_id=s1)
    assert _refused(pair.flush()) == []
    pair.client.send_data(s3, b"body", end_stream=True)
    assert _refused(pair.flush()) == [s3]
    events = pair.client.receive_data(pair.watch.received(_response_frames(s1)))
    assert _ended(events) == [s1]
    assert _terminated(events) == []
    assert pair.state.refused == {s3}
