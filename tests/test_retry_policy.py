"""The pure decisions: what may be re-sent, and after how long."""

from __future__ import annotations

import email.utils
import math
from collections.abc import AsyncIterator

import h2.errors
import h2.events
import h2.exceptions
import pytest
from tenacity import (
    RetryCallState,
    stop_after_attempt,
    stop_before_delay,
    wait_fixed,
)

from .flavour import (
    RetryPolicy,
    httpcore,
    httpx,
    is_idempotent,
    is_replayable,
    is_retryable,
    parse_retry_after,
    retry_reason,
)
from .flavour._classify import unprocessed_reason

URL = "https://api.example.com/things"
POLICY = RetryPolicy()


async def _chunks() -> AsyncIterator[bytes]:
    yield b"x"


def _request(method: str, **kwargs: object) -> httpx.Request:
    return httpx.Request(method, URL, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "headers", "extensions", "expected"),
    [
        ("GET", {}, {}, True),
        ("HEAD", {}, {}, True),
        ("OPTIONS", {}, {}, True),
        ("TRACE", {}, {}, True),
        ("PUT", {}, {}, True),
        ("DELETE", {}, {}, True),
        ("POST", {}, {}, False),
        ("PATCH", {}, {}, False),
        ("POST", {"Idempotency-Key": "k1"}, {}, True),
        ("PATCH", {"idempotency-key": "k1"}, {}, True),
        ("POST", {}, {"resilience": {"idempotent": True}}, True),
        ("GET", {}, {"resilience": {"idempotent": False}}, False),
        ("POST", {"Idempotency-Key": "k1"}, {"resilience": {"idempotent": False}}, False),
    ],
)
def test_is_idempotent(
    method: str, headers: dict[str, str], extensions: dict[str, object], expected: bool
) -> None:
    request = _request(method, headers=headers, extensions=extensions)
    assert is_idempotent(request, POLICY) is expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, True),
        ({"content": b"abc"}, True),
        ({"json": {"a": 1}}, True),
        ({"data": {"a": "1"}}, True),
        ({"content": _chunks()}, False),
    ],
)
def test_is_replayable(kwargs: dict[str, object], expected: bool) -> None:
    assert is_replayable(_request("POST", **kwargs)) is expected


GET = ("GET", {})
POST = ("POST", {})
POST_KEYED = ("POST", {"headers": {"Idempotency-Key": "k"}})
POST_STREAMED = ("POST", {"content": _chunks()})
GET_STREAMED = ("GET", {"content": _chunks()})


@pytest.mark.parametrize(
    ("request_", "outcome", "reason"),
    [
        # statuses: only the "try later" ones, and only when safe to repeat
        (GET, httpx.Response(503), "503"),
        (GET, httpx.Response(429), "429"),
        (GET, httpx.Response(502), "502"),
        (GET, httpx.Response(504), "504"),
        (GET, httpx.Response(500), None),
        (GET, httpx.Response(404), None),
        (GET, httpx.Response(408), None),
        (GET, httpx.Response(200), None),
        (POST, httpx.Response(503), None),
        (POST_KEYED, httpx.Response(503), "503"),
        # failures before the request left: safe for every method
        (POST, httpx.ConnectError("refused"), "ConnectError"),
        (POST, httpx.ConnectTimeout("slow"), "ConnectTimeout"),
        (POST, httpx.PoolTimeout("busy"), "PoolTimeout"),
        # failures after the request may have been acted on
        (POST, httpx.ReadTimeout("slow"), None),
        (POST, httpx.ReadError("reset"), None),
        (POST, httpx.WriteError("reset"), None),
        (POST, httpx.RemoteProtocolError("gone"), None),
        (POST_KEYED, httpx.ReadTimeout("slow"), "ReadTimeout"),
        (GET, httpx.ReadTimeout("slow"), "ReadTimeout"),
        (GET, httpx.WriteTimeout("slow"), "WriteTimeout"),
        (GET, httpx.RemoteProtocolError("gone"), "RemoteProtocolError"),
        # never: errors that another attempt cannot fix
        (GET, httpx.LocalProtocolError("bad"), None),
        (GET, httpx.UnsupportedProtocol("ftp"), None),
        (GET, ValueError("bug"), None),
        # a body that cannot be replayed is never re-sent
        (POST_STREAMED, httpx.ConnectError("refused"), None),
        (GET_STREAMED, httpx.Response(503), None),
    ],
)
def test_retry_reason(
    request_: tuple[str, dict[str, object]],
    outcome: httpx.Response | Exception,
    reason: str | None,
) -> None:
    method, kwargs = request_
    request = _request(method, **kwargs)
    assert retry_reason(request, outcome, POLICY) == reason
    assert is_retryable(request, outcome) is (reason is not None)


def test_configured_statuses_and_exceptions() -> None:
    policy = RetryPolicy(statuses={500, 408}, exceptions=[httpx.ReadTimeout])
    get = _request("GET")
    assert retry_reason(get, httpx.Response(500), policy) == "500"
    assert retry_reason(get, httpx.Response(408), policy) == "408"
    assert retry_reason(get, httpx.Response(503), policy) is None
    assert retry_reason(get, httpx.ConnectError("refused"), policy) is None


def test_per_request_options_are_checked() -> None:
    typo = _request("POST", extensions={"resilience": {"idempotnet": True}})
    with pytest.raises(ValueError, match=r"unknown resilience option.*'idempotnet'"):
        is_idempotent(typo, POLICY)
    not_bool = _request("POST", extensions={"resilience": {"idempotent": "yes"}})
    with pytest.raises(TypeError, match="True or False"):
        is_idempotent(not_bool, POLICY)
    not_mapping = _request("POST", extensions={"resilience": True})
    with pytest.raises(TypeError, match="mapping"):
        is_idempotent(not_mapping, POLICY)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("007", 7.0),
        # RFC 9110's other two date forms, both in the past here
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),
        ("Sun Nov  6 08:49:37 1994", 0.0),
        # Only ASCII digits are delta-seconds (str.isdigit() takes more)
        ("²", None),
        ("1²", None),
        ("١٢", None),
        ("\uff11\uff10", None),  # fullwidth 10
        ("½", None),
        ("1 2", None),
        ("+1", None),
        ("0x10", None),
        # Too long for a float: longer than any max_retry_after
        ("9" * 5000, math.inf),
        # Not an HTTP-date: a zone other than GMT, a day that does not exist
        ("Wed, 21 Oct 2026 07:28:00 +0100", None),
        ("Wed, 31 Feb 2026 07:28:00 GMT", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT²", None),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
        ("Wed, 21 Oct 2026 25:28:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def _state(attempt: int, elapsed: float = 0.0) -> RetryCallState:
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.start_time = 0.0
    state.outcome_timestamp = elapsed
    return state


def test_default_waits_grow_and_stop_after_three_attempts() -> None:
    first = POLICY.next_wait(_state(1))
    second = POLICY.next_wait(_state(2))
    assert first is not None
    assert second is not None
    assert 0.5 <= first <= 1.0
    assert 1.0 <= second <= 1.5
    assert POLICY.next_wait(_state(3)) is None


def test_retry_after_is_the_floor_and_capped() -> None:
    policy = RetryPolicy(wait=wait_fixed(1), stop=stop_after_attempt(5), max_retry_after=60)
    assert policy.next_wait(_state(1), retry_after=2.0) == 2.0
    assert policy.next_wait(_state(1), retry_after=0.5) == 1.0
    assert policy.next_wait(_state(1), retry_after=60.0) == 60.0
    assert policy.next_wait(_state(1), retry_after=86400.0) is None
    ignoring = RetryPolicy(wait=wait_fixed(1), max_retry_after=0)
    assert ignoring.next_wait(_state(1), retry_after=1.0) is None


def test_stop_strategies_see_the_upcoming_wait() -> None:
    policy = RetryPolicy(wait=wait_fixed(3), stop=stop_before_delay(10))
    assert policy.next_wait(_state(1, elapsed=6.0)) == 3.0
    # 8 s spent + 3 s of wait would pass the 10 s budget: give up now.
    assert policy.next_wait(_state(2, elapsed=8.0)) is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"statuses": {200}}, ValueError, "status 200"),
        ({"statuses": {503, 999}}, ValueError, "status 999"),
        ({"statuses": {"503"}}, ValueError, "status '503'"),
        ({"stop": stop_after_attempt(0)}, ValueError, "at least 1 attempt"),
        ({"wait": wait_fixed(-1)}, ValueError, "negative wait"),
        ({"wait": wait_fixed(1) + wait_fixed(-2)}, ValueError, "negative wait"),
        ({"max_retry_after": -1}, ValueError, "max_retry_after"),
        ({"exceptions": [KeyboardInterrupt]}, TypeError, "Exception subclasses"),
        ({"stop": 3}, TypeError, "stop strategy"),
        ({"wait": 1.0}, TypeError, "wait strategy"),
        ({"idempotency_header": ""}, ValueError, "header"),
    ],
)
def test_bad_configuration_fails_at_construction(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen_and_normalised() -> None:
    policy = RetryPolicy(statuses=[503, 503], idempotent_methods=["get"])
    assert policy.statuses == frozenset({503})
    assert policy.idempotent_methods == frozenset({"GET"})
    with pytest.raises(AttributeError):
        policy.max_retry_after = 1  # type: ignore[misc]


REMOTE = (httpx.RemoteProtocolError, httpcore.RemoteProtocolError)
LOCAL = (httpx.LocalProtocolError, httpcore.LocalProtocolError)


def _chained(
    errors: tuple[type[httpx.TransportError], type[Exception]], detail: object
) -> httpx.TransportError:
    """An httpx exception chained to httpcore's, as httpx's mapping makes them."""
    httpx_error, httpcore_error = errors
    mapped = httpx_error(str(detail))
    mapped.__cause__ = httpcore_error(detail)
    return mapped


def _after_goaway(h2_error: Exception) -> httpx.TransportError:
    """httpx's error for a request that met a connection closed by GOAWAY.

    httpcore raises ``RemoteProtocolError(ConnectionTerminated)`` while
    handling h2's refusal, which so becomes its ``__context__``.
    """
    mapped = _chained(REMOTE, h2.events.ConnectionTerminated())
    assert mapped.__cause__ is not None
    mapped.__cause__.__context__ = h2_error
    return mapped


def _closed_state_error(input_name: str) -> h2.exceptions.ProtocolError:
    return h2.exceptions.ProtocolError(
        f"Invalid input ConnectionInputs.{input_name} in state ConnectionState.CLOSED"
    )


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            _chained(
                REMOTE,
                h2.events.StreamReset(stream_id=3, error_code=h2.errors.ErrorCodes.REFUSED_STREAM),
            ),
            "REFUSED_STREAM",
        ),
        (
            _chained(
                REMOTE,
                h2.events.StreamReset(stream_id=3, error_code=h2.errors.ErrorCodes.CANCEL),
            ),
            None,
        ),
        (
            _chained(
                LOCAL,
                h2.exceptions.TooManyStreamsError("Max outbound streams is 100, 100 open"),
            ),
            "STREAM_LIMIT",
        ),
        (
            _chained(
                LOCAL,
                _closed_state_error("SEND_HEADERS"),
            ),
            "CONNECTION_CLOSED",
        ),
        # The headers went out: the server may have acted on them.
        (
            _chained(
                LOCAL,
                _closed_state_error("SEND_DATA"),
            ),
            None,
        ),
        (
            _chained(
                LOCAL,
                _closed_state_error("RECV_HEADERS"),
            ),
            None,
        ),
        (_chained(REMOTE, h2.events.ConnectionTerminated()), None),
        (_after_goaway(_closed_state_error("SEND_HEADERS")), "CONNECTION_CLOSED"),
        (_after_goaway(_closed_state_error("SEND_DATA")), None),
        (
            _chained(REMOTE, "Server disconnected"),
            None,
        ),
        (httpx.RemoteProtocolError("no cause"), None),
        (httpx.ConnectError("refused"), None),
    ],
)
def test_unprocessed_reason(exc: BaseException, reason: str | None) -> None:
    assert unprocessed_reason(exc) == reason
