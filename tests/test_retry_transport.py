"""RetryTransport's exact sequences, over httpx.MockTransport."""

from __future__ import annotations

import email.utils
import logging
import ssl
import sys
from collections.abc import AsyncIterator

import h2.errors
import h2.events
import h2.exceptions
import pytest
from tenacity import stop_after_attempt, stop_before_delay, wait_exponential, wait_fixed

from .fakes import FakeSleep, Script, TrackedStream
from .flavour import (
    FLAVOUR,
    IdempotencyKeyTransport,
    RetryEvent,
    RetryHistory,
    RetryPolicy,
    RetryTransport,
    httpcore,
    httpx,
)
from .flavour._retry import DRAIN_LIMIT

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/v1/things"
FAST = RetryPolicy(wait=wait_exponential(multiplier=1, max=30), stop=stop_after_attempt(3))


# Each test of this block runs again for a sync client: its twin follows the block.
# unasync: begin
def _async_client(
    script: Script, sleep: FakeSleep, policy: RetryPolicy = FAST, *, keys: bool = False
) -> httpx.AsyncClient:
    transport: httpx.AsyncBaseTransport = RetryTransport(
        script.transport(), policy, sleep=sleep, sync_sleep=sleep, clock=sleep.clock
    )
    if keys:
        transport = IdempotencyKeyTransport(transport)
    return httpx.AsyncClient(transport=transport)


async def test_get_retried_through_503s_with_policy_waits() -> None:
    script, sleep = Script([503, 503, 200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert len(script.requests) == 3
    assert sleep.calls == [1.0, 2.0]
    assert response.extensions["retry"] == RetryHistory(
        attempts=3, events=(RetryEvent(1, "503", 1.0), RetryEvent(2, "503", 2.0))
    )


async def test_first_try_success_reports_one_attempt_and_never_sleeps() -> None:
    script, sleep = Script([200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.get(URL)
    assert response.extensions["retry"] == RetryHistory(attempts=1)
    assert sleep.calls == []


async def test_exhausted_status_retries_return_the_last_response() -> None:
    script, sleep = Script([503]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.get(URL)
        assert response.status_code == 503
        with pytest.raises(httpx.HTTPStatusError):
            response.raise_for_status()
    assert len(script.requests) == 3
    assert response.extensions["retry"].attempts == 3


async def test_post_without_key_is_sent_once() -> None:
    script, sleep = Script([503, 200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.post(URL, json={"amount": 10})
    assert response.status_code == 503
    assert len(script.requests) == 1
    assert sleep.calls == []


async def test_post_with_idempotency_key_layer_is_retried_with_one_key() -> None:
    script, sleep = Script([503, 503, 201]), FakeSleep()
    async with _async_client(script, sleep, keys=True) as client:
        response = await client.post(URL, json={"amount": 10})
    assert response.status_code == 201
    keys = {request.headers["Idempotency-Key"] for request in script.requests}
    assert len(script.requests) == 3
    assert len(keys) == 1
    assert script.bodies == [b'{"amount":10}'] * 3


async def test_post_marked_idempotent_per_request_is_retried() -> None:
    script, sleep = Script([503, 200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.post(
            URL, content=b"x", extensions={"resilience": {"idempotent": True}}
        )
    assert response.status_code == 200
    assert len(script.requests) == 2


async def test_connect_error_retried_for_post_then_raised_as_is() -> None:
    script, sleep = Script([httpx.ConnectError("refused")]), FakeSleep()
    async with _async_client(script, sleep) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post(URL, json={})
    assert len(script.requests) == 3
    if sys.version_info >= (3, 11):
        assert caught.value.__notes__ == [
            "httpx-resilience: gave up after 3 attempts "
            "(retried after: ConnectError, ConnectError)"
        ]


async def test_post_read_timeout_is_not_resent() -> None:
    script, sleep = Script([httpx.ReadTimeout("slow"), 200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(URL, json={})
    assert len(script.requests) == 1


async def test_non_retryable_error_is_raised_at_once() -> None:
    script, sleep = Script([httpx.LocalProtocolError("bad header"), 200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(URL)
    assert len(script.requests) == 1


async def test_recovery_after_transport_errors() -> None:
    script = Script([httpx.ReadError("reset"), httpx.ConnectTimeout("slow"), 200])
    sleep = FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    reasons = [event.reason for event in response.extensions["retry"].events]
    assert reasons == ["ReadError", "ConnectTimeout"]


async def test_retry_after_seconds_is_honoured() -> None:
    policy = RetryPolicy(wait=wait_fixed(0.1))
    script, sleep = Script([(503, {"Retry-After": "2"}), 200]), FakeSleep()
    async with _async_client(script, sleep, policy) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert sleep.calls == [2.0]


async def test_retry_after_http_date_is_honoured() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    script, sleep = Script([(429, {"Retry-After": date}), 200]), FakeSleep()
    transport = RetryTransport(
        script.transport(),
        RetryPolicy(wait=wait_fixed(0.1)),
        sleep=sleep,
        sync_sleep=sleep,
        wall_clock=lambda: now,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert sleep.calls == [7.0]


async def test_retry_after_beyond_the_cap_returns_at_once() -> None:
    script, sleep = Script([(503, {"Retry-After": "86400"}), 200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "86400"
    assert sleep.calls == []
    assert len(script.requests) == 1


async def test_wait_past_the_stop_budget_is_not_slept() -> None:
    policy = RetryPolicy(wait=wait_fixed(1), stop=stop_before_delay(10) | stop_after_attempt(9))
    script, sleep = Script([(503, {"Retry-After": "4"})]), FakeSleep()
    async with _async_client(script, sleep, policy) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    # 4 s + 4 s fit in 10 s; a third wait would end past it.
    assert sleep.calls == [4.0, 4.0]
    assert sleep.now <= 10


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
def _client(
    script: Script, sleep: FakeSleep, policy: RetryPolicy = FAST, *, keys: bool = False
) -> httpx.Client:
    transport: httpx.BaseTransport = RetryTransport(
        script.transport(), policy, sleep=sleep, sync_sleep=sleep, clock=sleep.clock
    )
    if keys:
        transport = IdempotencyKeyTransport(transport)
    return httpx.Client(transport=transport)


def test_sync_get_retried_through_503s_with_policy_waits() -> None:
    script, sleep = Script([503, 503, 200]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.get(URL)
    assert response.status_code == 200
    assert len(script.requests) == 3
    assert sleep.calls == [1.0, 2.0]
    assert response.extensions["retry"] == RetryHistory(
        attempts=3, events=(RetryEvent(1, "503", 1.0), RetryEvent(2, "503", 2.0))
    )


def test_sync_first_try_success_reports_one_attempt_and_never_sleeps() -> None:
    script, sleep = Script([200]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.get(URL)
    assert response.extensions["retry"] == RetryHistory(attempts=1)
    assert sleep.calls == []


def test_sync_exhausted_status_retries_return_the_last_response() -> None:
    script, sleep = Script([503]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.get(URL)
        assert response.status_code == 503
        with pytest.raises(httpx.HTTPStatusError):
            response.raise_for_status()
    assert len(script.requests) == 3
    assert response.extensions["retry"].attempts == 3


def test_sync_post_without_key_is_sent_once() -> None:
    script, sleep = Script([503, 200]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.post(URL, json={"amount": 10})
    assert response.status_code == 503
    assert len(script.requests) == 1
    assert sleep.calls == []


def test_sync_post_with_idempotency_key_layer_is_retried_with_one_key() -> None:
    script, sleep = Script([503, 503, 201]), FakeSleep()
    with _client(script, sleep, keys=True) as client:
        response = client.post(URL, json={"amount": 10})
    assert response.status_code == 201
    keys = {request.headers["Idempotency-Key"] for request in script.requests}
    assert len(script.requests) == 3
    assert len(keys) == 1
    assert script.bodies == [b'{"amount":10}'] * 3


def test_sync_post_marked_idempotent_per_request_is_retried() -> None:
    script, sleep = Script([503, 200]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.post(URL, content=b"x", extensions={"resilience": {"idempotent": True}})
    assert response.status_code == 200
    assert len(script.requests) == 2


def test_sync_connect_error_retried_for_post_then_raised_as_is() -> None:
    script, sleep = Script([httpx.ConnectError("refused")]), FakeSleep()
    with _client(script, sleep) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            client.post(URL, json={})
    assert len(script.requests) == 3
    if sys.version_info >= (3, 11):
        assert caught.value.__notes__ == [
            "httpx-resilience: gave up after 3 attempts "
            "(retried after: ConnectError, ConnectError)"
        ]


def test_sync_post_read_timeout_is_not_resent() -> None:
    script, sleep = Script([httpx.ReadTimeout("slow"), 200]), FakeSleep()
    with _client(script, sleep) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(URL, json={})
    assert len(script.requests) == 1


def test_sync_non_retryable_error_is_raised_at_once() -> None:
    script, sleep = Script([httpx.LocalProtocolError("bad header"), 200]), FakeSleep()
    with _client(script, sleep) as client:
        with pytest.raises(httpx.LocalProtocolError):
            client.get(URL)
    assert len(script.requests) == 1


def test_sync_recovery_after_transport_errors() -> None:
    script = Script([httpx.ReadError("reset"), httpx.ConnectTimeout("slow"), 200])
    sleep = FakeSleep()
    with _client(script, sleep) as client:
        response = client.get(URL)
    assert response.status_code == 200
    reasons = [event.reason for event in response.extensions["retry"].events]
    assert reasons == ["ReadError", "ConnectTimeout"]


def test_sync_retry_after_seconds_is_honoured() -> None:
    policy = RetryPolicy(wait=wait_fixed(0.1))
    script, sleep = Script([(503, {"Retry-After": "2"}), 200]), FakeSleep()
    with _client(script, sleep, policy) as client:
        response = client.get(URL)
    assert response.status_code == 200
    assert sleep.calls == [2.0]


def test_sync_retry_after_http_date_is_honoured() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    script, sleep = Script([(429, {"Retry-After": date}), 200]), FakeSleep()
    transport = RetryTransport(
        script.transport(),
        RetryPolicy(wait=wait_fixed(0.1)),
        sleep=sleep,
        sync_sleep=sleep,
        wall_clock=lambda: now,
    )
    with httpx.Client(transport=transport) as client:
        response = client.get(URL)
    assert response.status_code == 200
    assert sleep.calls == [7.0]


def test_sync_retry_after_beyond_the_cap_returns_at_once() -> None:
    script, sleep = Script([(503, {"Retry-After": "86400"}), 200]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.get(URL)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "86400"
    assert sleep.calls == []
    assert len(script.requests) == 1


def test_sync_wait_past_the_stop_budget_is_not_slept() -> None:
    policy = RetryPolicy(wait=wait_fixed(1), stop=stop_before_delay(10) | stop_after_attempt(9))
    script, sleep = Script([(503, {"Retry-After": "4"})]), FakeSleep()
    with _client(script, sleep, policy) as client:
        response = client.get(URL)
    assert response.status_code == 503
    # 4 s + 4 s fit in 10 s; a third wait would end past it.
    assert sleep.calls == [4.0, 4.0]
    assert sleep.now <= 10


# unasync: generated end


async def test_discarded_responses_are_closed_and_the_last_is_left_unread() -> None:
    big = b"x" * (DRAIN_LIMIT + 1)
    streams = [TrackedStream(b"busy"), TrackedStream(big), TrackedStream(b"ok")]
    responses = iter(streams)

    def reply(request: httpx.Request) -> httpx.Response:
        stream = next(responses)
        headers = {"Content-Length": str(len(stream.body))}
        return httpx.Response(200 if stream.body == b"ok" else 503, headers=headers, stream=stream)

    script, sleep = Script([reply]), FakeSleep()
    transport = RetryTransport(script.transport(), FAST, sleep=sleep)
    request = httpx.Request("GET", URL)
    response = await transport.handle_async_request(request)
    assert response.status_code == 200
    # A small discarded body is read out so its connection can be reused; a
    # large one is only closed; the caller's response is untouched.
    assert [(s.read, s.closed) for s in streams] == [(True, True), (False, True), (False, False)]
    await response.aclose()


def _refused(request: httpx.Request) -> httpx.Response:
    """What httpx raises for an HTTP/2 stream reset with REFUSED_STREAM."""
    reset = h2.events.StreamReset(stream_id=1, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
    raise httpx.RemoteProtocolError(str(reset)) from httpcore.RemoteProtocolError(reset)


def _closed_by_goaway(request: httpx.Request) -> httpx.Response:
    error = h2.exceptions.ProtocolError(
        "Invalid input ConnectionInputs.SEND_HEADERS in state ConnectionState.CLOSED"
    )
    raise httpx.LocalProtocolError(str(error)) from httpcore.LocalProtocolError(error)


# unasync: begin
async def test_unprocessed_post_is_resent_at_once_without_spending_attempts() -> None:
    script, sleep = Script([_refused, _closed_by_goaway, 201]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.post(URL, json={"amount": 10})
    assert response.status_code == 201
    assert sleep.calls == []
    assert response.extensions["retry"] == RetryHistory(
        attempts=3,
        events=(
            RetryEvent(1, "REFUSED_STREAM", 0.0, unprocessed=True),
            RetryEvent(1, "CONNECTION_CLOSED", 0.0, unprocessed=True),
        ),
    )


async def test_unprocessed_resends_are_capped_then_follow_the_policy() -> None:
    script, sleep = Script([_closed_by_goaway]), FakeSleep()
    async with _async_client(script, sleep) as client:
        with pytest.raises(httpx.LocalProtocolError) as caught:
            await client.post(URL, json={})
    # 1 + 10 at once, then 2 more policy attempts after a backoff each.
    assert len(script.requests) == 13
    assert sleep.calls == [1.0, 2.0]
    message = str(caught.value)
    assert "ConnectionInputs" not in message
    assert "before the request could be sent" in message


async def test_unprocessed_resends_can_be_turned_off() -> None:
    policy = RetryPolicy(stop=stop_after_attempt(2), wait=wait_fixed(1), unprocessed_resends=0)
    script, sleep = Script([_refused, 200]), FakeSleep()
    async with _async_client(script, sleep, policy) as client:
        response = await client.post(URL, json={})
    assert response.status_code == 200
    assert sleep.calls == [1.0]


async def test_per_request_retry_false_and_policy_override() -> None:
    script, sleep = Script([503]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.get(URL, extensions={"resilience": {"retry": False}})
        assert response.status_code == 503
        assert len(script.requests) == 1
        five = RetryPolicy(wait=wait_fixed(0), stop=stop_after_attempt(5))
        response = await client.get(URL, extensions={"resilience": {"retry": five}})
        assert len(script.requests) == 1 + 5
        with pytest.raises(TypeError, match="RetryPolicy"):
            await client.get(URL, extensions={"resilience": {"retry": 5}})


async def test_a_refused_certificate_is_not_retried() -> None:
    def untrusted(request: httpx.Request) -> httpx.Response:
        cause = ssl.SSLCertVerificationError("certificate verify failed")
        raise httpx.ConnectError("certificate verify failed") from cause

    script, sleep = Script([untrusted]), FakeSleep()
    async with _async_client(script, sleep) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(URL)
    assert len(script.requests) == 1


async def test_a_retried_exception_does_not_carry_the_earlier_ones() -> None:
    script, sleep = Script([httpx.ReadError("first"), httpx.ReadError("second")]), FakeSleep()
    async with _async_client(script, sleep) as client:
        with pytest.raises(httpx.ReadError) as caught:
            await client.get(URL)
    assert caught.value.__context__ is None


async def test_each_retry_is_logged_without_query_or_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script, sleep = Script([503, 200]), FakeSleep()
    caplog.set_level(logging.INFO, logger="httpx_resilience")
    async with _async_client(script, sleep) as client:
        await client.get("https://user:secret@api.example.com/v1/things?token=abc")
    [record] = caplog.records
    message = record.getMessage()
    assert "GET https://api.example.com/v1/things " in message
    assert "secret" not in message
    assert "token" not in message
    assert (record.attempt, record.reason, record.wait) == (1, "503", 1.0)  # type: ignore[attr-defined]


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
def test_sync_unprocessed_post_is_resent_at_once_without_spending_attempts() -> None:
    script, sleep = Script([_refused, _closed_by_goaway, 201]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.post(URL, json={"amount": 10})
    assert response.status_code == 201
    assert sleep.calls == []
    assert response.extensions["retry"] == RetryHistory(
        attempts=3,
        events=(
            RetryEvent(1, "REFUSED_STREAM", 0.0, unprocessed=True),
            RetryEvent(1, "CONNECTION_CLOSED", 0.0, unprocessed=True),
        ),
    )


def test_sync_unprocessed_resends_are_capped_then_follow_the_policy() -> None:
    script, sleep = Script([_closed_by_goaway]), FakeSleep()
    with _client(script, sleep) as client:
        with pytest.raises(httpx.LocalProtocolError) as caught:
            client.post(URL, json={})
    # 1 + 10 at once, then 2 more policy attempts after a backoff each.
    assert len(script.requests) == 13
    assert sleep.calls == [1.0, 2.0]
    message = str(caught.value)
    assert "ConnectionInputs" not in message
    assert "before the request could be sent" in message


def test_sync_unprocessed_resends_can_be_turned_off() -> None:
    policy = RetryPolicy(stop=stop_after_attempt(2), wait=wait_fixed(1), unprocessed_resends=0)
    script, sleep = Script([_refused, 200]), FakeSleep()
    with _client(script, sleep, policy) as client:
        response = client.post(URL, json={})
    assert response.status_code == 200
    assert sleep.calls == [1.0]


def test_sync_per_request_retry_false_and_policy_override() -> None:
    script, sleep = Script([503]), FakeSleep()
    with _client(script, sleep) as client:
        response = client.get(URL, extensions={"resilience": {"retry": False}})
        assert response.status_code == 503
        assert len(script.requests) == 1
        five = RetryPolicy(wait=wait_fixed(0), stop=stop_after_attempt(5))
        response = client.get(URL, extensions={"resilience": {"retry": five}})
        assert len(script.requests) == 1 + 5
        with pytest.raises(TypeError, match="RetryPolicy"):
            client.get(URL, extensions={"resilience": {"retry": 5}})


def test_sync_a_refused_certificate_is_not_retried() -> None:
    def untrusted(request: httpx.Request) -> httpx.Response:
        cause = ssl.SSLCertVerificationError("certificate verify failed")
        raise httpx.ConnectError("certificate verify failed") from cause

    script, sleep = Script([untrusted]), FakeSleep()
    with _client(script, sleep) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(URL)
    assert len(script.requests) == 1


def test_sync_a_retried_exception_does_not_carry_the_earlier_ones() -> None:
    script, sleep = Script([httpx.ReadError("first"), httpx.ReadError("second")]), FakeSleep()
    with _client(script, sleep) as client:
        with pytest.raises(httpx.ReadError) as caught:
            client.get(URL)
    assert caught.value.__context__ is None


def test_sync_each_retry_is_logged_without_query_or_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script, sleep = Script([503, 200]), FakeSleep()
    caplog.set_level(logging.INFO, logger="httpx_resilience")
    with _client(script, sleep) as client:
        client.get("https://user:secret@api.example.com/v1/things?token=abc")
    [record] = caplog.records
    message = record.getMessage()
    assert "GET https://api.example.com/v1/things " in message
    assert "secret" not in message
    assert "token" not in message
    assert (record.attempt, record.reason, record.wait) == (1, "503", 1.0)  # type: ignore[attr-defined]


# unasync: generated end


async def _body() -> AsyncIterator[bytes]:
    yield b"chunk-1"
    yield b"chunk-2"


async def test_async_generator_body_is_never_resent() -> None:
    script, sleep = Script([503, 200]), FakeSleep()
    async with _async_client(script, sleep) as client:
        response = await client.put(URL, content=_body())
    assert response.status_code == 503
    assert len(script.requests) == 1


async def test_layers_forward_the_transport_lifecycle() -> None:
    class Recorder(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.events: list[str] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200)

        async def __aenter__(self) -> Recorder:
            self.events.append("enter")
            return self

        async def __aexit__(self, *args: object) -> None:
            self.events.append("exit")

        async def aclose(self) -> None:
            self.events.append("close")

    inner = Recorder()
    async with httpx.AsyncClient(transport=IdempotencyKeyTransport(RetryTransport(inner))):
        pass
    await RetryTransport(inner).aclose()
    assert inner.events == ["enter", "exit", "close"]
    with pytest.raises(TypeError, match=rf"wraps an {FLAVOUR}\.AsyncBaseTransport"):
        RetryTransport(object())  # type: ignore[arg-type]
