"""The GOAWAY guard's frame bookkeeping, driven by real h2 state machines."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

from .flavour._h2watch import (
    REFUSALS_BEFORE_DRAINING,
    GoawayState,
    H2Watch,
    OriginLimits,
)

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


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    header = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big")
    return header + payload


def _goaway(last_stream_id: int, error_code: int = 0, *, stream_id: int = 0) -> bytes:
    payload = last_stream_id.to_bytes(4, "big") + error_code.to_bytes(4, "big")
    return _frame(0x7, 0, stream_id, payload)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(_goaway(0, stream_id=1), id="on-stream-1"),
        pytest.param(_frame(0x7, 0, 0), id="empty"),
        pytest.param(_frame(0x7, 0, 0, b"\0\0\0"), id="short"),
    ],
)
def test_an_invalid_goaway_is_left_to_h2_which_fails_the_connection(frame: bytes) -> None:
    """RFC 9113 §6.8: a connection error, not a reason to refuse (and re-send) anything."""
    pair = Pair()
    s1 = pair.request()
    pair.flush()
    with pytest.raises(h2.exceptions.ProtocolError):
        pair.client.receive_data(pair.watch.received(frame))
    assert pair.state.last_stream_id is None
    assert not pair.state.draining
    assert pair.state.refused == set()
    assert s1 in pair.state.open


@pytest.mark.parametrize("code", [0x0, 0x2, 0xB])
def test_the_goaway_error_code_is_kept(code: int) -> None:
    pair = Pair()
    s1, s3 = pair.request(), pair.request()
    pair.flush()
    events = pair.client.receive_data(pair.watch.received(_goaway(s1, code)))
    assert _refused(events) == [s3]
    assert (pair.state.last_stream_id, pair.state.error_code) == (s1, code)


def test_the_servers_stream_limit_is_read_from_its_settings() -> None:
    pair = Pair()
    assert pair.state.max_streams == 100  # httpcore's own, as h2's SETTINGS say
    pair.server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 5})
    pair.flush()
    assert pair.state.max_streams == 5
    pair.server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 500})
    pair.flush()
    assert pair.state.max_streams == 100  # no more than the client lets the server open


def test_a_goaway_in_good_order_teaches_how_many_requests_a_connection_is_served() -> None:
    limits = OriginLimits()
    pair = Pair()
    pair.state.limits = limits
    streams = [pair.request() for _ in range(5)]
    pair.flush()
    pair.client.receive_data(pair.watch.received(_goaway(streams[2])))
    assert limits.served == 3  # streams 1, 3 and 5
    # An idle GOAWAY, or one that refused nothing, teaches nothing.
    quiet = Pair()
    quiet.state.limits = OriginLimits()
    quiet.flush()
    quiet.client.receive_data(quiet.watch.received(_goaway(0)))
    assert quiet.state.limits.served is None


def test_a_goaway_asking_to_calm_down_teaches_nothing() -> None:
    pair = Pair()
    pair.state.limits = limits = OriginLimits()
    streams = [pair.request() for _ in range(3)]
    pair.flush()
    pair.client.receive_data(pair.watch.received(_goaway(streams[0], 0xB)))
    assert limits.served is None


def test_a_connection_whose_server_refuses_stream_after_stream_drains() -> None:
    pair = Pair()
    for _ in range(REFUSALS_BEFORE_DRAINING - 1):
        stream_id = pair.request()
        pair.flush()
        pair.server.reset_stream(stream_id, REFUSED)
        assert _refused(pair.flush()) == [stream_id]
    assert not pair.state.draining
    # An answer resets the count.
    stream_id = pair.request()
    pair.flush()
    pair.respond(stream_id)
    pair.flush()
    for _ in range(REFUSALS_BEFORE_DRAINING):
        stream_id = pair.request()
        pair.flush()
        pair.server.reset_stream(stream_id, REFUSED)
        pair.flush()
    assert pair.state.draining


def _upload(pair: Pair) -> int:
    """A PUT whose body h2 sends until the stream's flow-control window is spent.

    The server does not read the body, but gives the connection its credit
    back, as a server must for data it discards (RFC 9113 §6.9).
    """
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        stream_id, [(":method", "PUT"), (":path", "/"), (":scheme", "https"), (":authority", "x")]
    )
    sent = 0
    while (window := pair.client.local_flow_control_window(stream_id)) > 0:
        pair.client.send_data(stream_id, b"x" * min(window, 16384))
        sent += min(window, 16384)
    pair.flush()
    pair.server.increment_flow_control_window(sent)
    pair.flush()
    return stream_id


def test_an_upload_answered_early_and_reset_with_no_error_keeps_its_answer() -> None:
    """RFC 9113 §8.1: the response stands; the rest of the body goes nowhere."""
    pair = Pair()
    stream_id = _upload(pair)
    pair.server.send_headers(stream_id, [(":status", "413")])
    pair.server.send_data(stream_id, b"too large", end_stream=True)
    pair.server.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
    events = pair.client.receive_data(pair.watch.received(pair.server.data_to_send()))
    assert [type(e).__name__ for e in events if not isinstance(e, h2.events.WindowUpdated)] == [
        "ResponseReceived",
        "DataReceived",
        "StreamEnded",
    ]
    # h2 may send the rest of the body at once; none of it reaches the server.
    assert pair.client.local_flow_control_window(stream_id) > 0
    for _ in range(100):  # 1.6 MB
        window = pair.client.local_flow_control_window(stream_id)
        pair.client.send_data(stream_id, b"x" * min(window, 16384))
        assert pair.watch.sent(pair.client.data_to_send()) == b""
        pair.client.receive_data(pair.watch.pending())  # the credit of what was dropped
    pair.client.end_stream(stream_id)
    assert pair.watch.sent(pair.client.data_to_send()) == b""
    # The server's resets of the stream it closed never reach h2.
    late = _frame(0x3, 0, stream_id, (0x5).to_bytes(4, "big"))  # STREAM_CLOSED
    assert pair.watch.received(late) == b""
    # The connection goes on.
    s3 = pair.request()
    pair.flush()
    pair.respond(s3)
    assert _ended(pair.flush()) == [s3]


def test_a_reset_other_than_no_error_still_fails_the_upload() -> None:
    pair = Pair()
    stream_id = _upload(pair)
    pair.server.send_headers(stream_id, [(":status", "413")], end_stream=True)
    pair.server.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
    events = pair.client.receive_data(pair.watch.received(pair.server.data_to_send()))
    assert [e.error_code for e in events if isinstance(e, h2.events.StreamReset)] == [
        h2.errors.ErrorCodes.CANCEL
    ]


def test_the_body_of_a_stream_above_the_goaway_is_dropped_and_credited() -> None:
    """So that httpcore finishes sending it at once, and is refused without waiting."""
    pair = Pair()
    s1 = pair.request()
    stream_id = _upload(pair)
    pair.server.close_connection(last_stream_id=s1)
    pair.flush()
    assert pair.client.local_flow_control_window(stream_id) > 0
    for _ in range(100):
        window = pair.client.local_flow_control_window(stream_id)
        pair.client.send_data(stream_id, b"x" * min(window, 16384))
        assert pair.watch.sent(pair.client.data_to_send()) == b""
        pair.client.receive_data(pair.watch.pending())
    pair.client.end_stream(stream_id)
    pair.watch.sent(pair.client.data_to_send())
    assert _refused(pair.client.receive_data(pair.watch.pending())) == [stream_id]


@pytest.mark.parametrize(
    ("handed", "inside", "served", "max_streams", "full"),
    [
        (0, 0, None, 100, False),
        (99, 99, None, 100, False),
        (100, 100, None, 100, True),
        (20, 1, 20, 100, True),  # as many as a connection is served, some in flight
        (20, 0, 20, 100, False),  # idle: it takes more (the server may serve more now)
        (19, 19, 20, 100, False),
        (5, 5, None, 5, True),
    ],
)
def test_when_a_connection_is_full(
    handed: int, inside: int, served: int | None, max_streams: int, full: bool
) -> None:
    limits = OriginLimits()
    limits.served = served
    state = GoawayState(limits)
    state.handed, state.inside, state.max_streams = handed, inside, max_streams
    assert state.full() is full
    state.http1 = True
    assert state.full() is False


def test_an_idle_connection_past_the_learned_number_unlearns_it() -> None:
    limits = OriginLimits()
    limits.served = 20
    state = GoawayState(limits)
    state.handed = 20
    state.take()
    assert limits.served is None
    assert (state.handed, state.inside) == (21, 1)
