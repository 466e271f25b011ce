"""RequestIdTransport, request_id() and current_request_id()."""

from __future__ import annotations

import logging
import re
import uuid

import anyio
import pytest
from tenacity import stop_after_attempt, wait_fixed

from .fakes import FakeSleep, Script
from .flavour import (
    RequestIdTransport,
    RetryPolicy,
    RetryTransport,
    current_request_id,
    httpx,
    new_request_id,
    request_id,
    uuid4_request_id,
)
from .flavour._request_id import check_request_id
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/v1/things"
#: What new_request_id() makes: 128 random bits as lowercase hex.
NEW_ID = re.compile(r"[0-9a-f]{32}")
FAST = RetryPolicy(wait=wait_fixed(1), stop=stop_after_attempt(3))


class Snapshots:
    """A MockTransport handler that plays statuses in order and copies each attempt's headers.

    RetryTransport re-sends the same ``httpx.Request``; its headers are only
    worth comparing as they were at each send.
    """

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.headers: list[httpx.Headers] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(httpx.Headers(request.headers))
        self.requests.append(request)
        return httpx.Response(self.statuses[min(len(self.headers), len(self.statuses)) - 1])

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


# Each test of this block runs again for a sync client: its twin follows the block.
# unasync: begin
def _async_client(script: Script | Snapshots, **options: object) -> httpx.AsyncClient:
    sleep = FakeSleep()
    retry = RetryTransport(script.transport(), FAST, sleep=sleep, sync_sleep=sleep)
    return httpx.AsyncClient(transport=RequestIdTransport(retry, **options))  # type: ignore[arg-type]


async def test_new_id_is_128_random_bits_shared_by_every_attempt() -> None:
    script = Snapshots([503, 503, 200])
    async with _async_client(script) as client:
        response = await client.get(URL)
        other = await client.get(URL)
    sent = [headers["X-Request-ID"] for headers in script.headers]
    assert len(sent) == 4
    assert len(set(sent[:3])) == 1
    assert NEW_ID.fullmatch(sent[0])
    assert sent[3] != sent[0]
    assert response.extensions["request_id"] == sent[0]
    assert other.extensions["request_id"] == sent[3]
    assert script.requests[0].extensions["request_id"] == sent[0]
    assert script.requests[0].extensions["request_id_header"] == "x-request-id"


async def test_bound_id_is_sent_on_every_attempt() -> None:
    script = Snapshots([503, 503, 200])
    async with _async_client(script) as client:
        with request_id("inbound-42"):
            response = await client.get(URL)
    assert [headers["X-Request-ID"] for headers in script.headers] == ["inbound-42"] * 3
    assert response.extensions["request_id"] == "inbound-42"


async def test_header_set_by_the_caller_wins() -> None:
    script = Script([200])
    async with _async_client(script, header="X-Correlation-ID") as client:
        with request_id("bound"):
            response = await client.get(URL, headers={"x-correlation-id": "mine"})
    assert script.requests[0].headers.get_list("X-Correlation-ID") == ["mine"]
    assert "X-Request-ID" not in script.requests[0].headers
    assert response.extensions["request_id"] == "mine"


async def test_custom_factory_is_used_and_checked() -> None:
    script = Script([200])
    async with _async_client(script, new_id=lambda: "req-1") as client:
        await client.get(URL)
    assert script.requests[0].headers["X-Request-ID"] == "req-1"
    async with _async_client(script, new_id=lambda: "bad\r\nInjected: yes") as client:
        with pytest.raises(ValueError, match="cannot be sent as a header value"):
            await client.get(URL)


async def test_uuid4_ids_on_request() -> None:
    script = Script([200, 200])
    async with _async_client(script, new_id=uuid4_request_id) as client:
        await client.get(URL)
        await client.get(URL)
    sent = [r.headers["X-Request-ID"] for r in script.requests]
    assert [str(uuid.UUID(value, version=4)) for value in sent] == sent
    assert sent[0] != sent[1]


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
def _client(script: Script | Snapshots, **options: object) -> httpx.Client:
    sleep = FakeSleep()
    retry = RetryTransport(script.transport(), FAST, sleep=sleep, sync_sleep=sleep)
    return httpx.Client(transport=RequestIdTransport(retry, **options))  # type: ignore[arg-type]


def test_sync_new_id_is_128_random_bits_shared_by_every_attempt() -> None:
    script = Snapshots([503, 503, 200])
    with _client(script) as client:
        response = client.get(URL)
        other = client.get(URL)
    sent = [headers["X-Request-ID"] for headers in script.headers]
    assert len(sent) == 4
    assert len(set(sent[:3])) == 1
    assert NEW_ID.fullmatch(sent[0])
    assert sent[3] != sent[0]
    assert response.extensions["request_id"] == sent[0]
    assert other.extensions["request_id"] == sent[3]
    assert script.requests[0].extensions["request_id"] == sent[0]
    assert script.requests[0].extensions["request_id_header"] == "x-request-id"


def test_sync_bound_id_is_sent_on_every_attempt() -> None:
    script = Snapshots([503, 503, 200])
    with _client(script) as client:
        with request_id("inbound-42"):
            response = client.get(URL)
    assert [headers["X-Request-ID"] for headers in script.headers] == ["inbound-42"] * 3
    assert response.extensions["request_id"] == "inbound-42"


def test_sync_header_set_by_the_caller_wins() -> None:
    script = Script([200])
    with _client(script, header="X-Correlation-ID") as client:
        with request_id("bound"):
            response = client.get(URL, headers={"x-correlation-id": "mine"})
    assert script.requests[0].headers.get_list("X-Correlation-ID") == ["mine"]
    assert "X-Request-ID" not in script.requests[0].headers
    assert response.extensions["request_id"] == "mine"


def test_sync_custom_factory_is_used_and_checked() -> None:
    script = Script([200])
    with _client(script, new_id=lambda: "req-1") as client:
        client.get(URL)
    assert script.requests[0].headers["X-Request-ID"] == "req-1"
    with _client(script, new_id=lambda: "bad\r\nInjected: yes") as client:
        with pytest.raises(ValueError, match="cannot be sent as a header value"):
            client.get(URL)


def test_sync_uuid4_ids_on_request() -> None:
    script = Script([200, 200])
    with _client(script, new_id=uuid4_request_id) as client:
        client.get(URL)
        client.get(URL)
    sent = [r.headers["X-Request-ID"] for r in script.requests]
    assert [str(uuid.UUID(value, version=4)) for value in sent] == sent
    assert sent[0] != sent[1]


# unasync: generated end


@pytest.mark.parametrize("value", ["", " padded", "padded ", "new\nline", "naïve", "nul\x00"])
def test_values_that_cannot_be_header_values_are_rejected_at_the_call(value: str) -> None:
    with pytest.raises(ValueError, match="cannot be sent as a header value"):
        request_id(value)


def test_valid_values_and_wrong_types() -> None:
    assert check_request_id("a b\tc") == "a b\tc"
    assert check_request_id("~!#$%&'*+-.^_`|0123456789") == "~!#$%&'*+-.^_`|0123456789"
    with pytest.raises(TypeError, match="must be a str"):
        check_request_id(42)  # type: ignore[arg-type]
    for header in ("", "X Request", "X-Request-ID:"):
        with pytest.raises(ValueError, match="header name"):
            RequestIdTransport(httpx.MockTransport(lambda r: httpx.Response(200)), header=header)


def test_binding_nests_and_unbinds() -> None:
    assert current_request_id() is None
    with request_id("outer"):
        assert current_request_id() == "outer"
        with request_id() as inner:
            assert NEW_ID.fullmatch(inner)
            assert current_request_id() == inner
        assert current_request_id() == "outer"
    assert current_request_id() is None


def test_new_ids_are_unique_and_plain_lowercase_hex() -> None:
    ids = [new_request_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(NEW_ID.fullmatch(value) for value in ids)
    # Random in every position: no per-process prefix or counter.
    assert len({value[:4] for value in ids[:1000]}) > 900
    assert len({value[-4:] for value in ids[:1000]}) > 900


async def test_binding_follows_child_tasks_and_stays_out_of_others() -> None:
    script = Script([200])
    seen: dict[str, str | None] = {}
    both_bound = anyio.Event()
    bound = 0

    async def handler(name: str, value: str) -> None:
        nonlocal bound
        with request_id(value):
            bound += 1
            if bound == 2:
                both_bound.set()
            # Both bindings are live at once: each task must see its own.
            await both_bound.wait()
            async with anyio.create_task_group() as children:
                children.start_soon(child, name)

    async def child(name: str) -> None:
        seen[name] = current_request_id()
        async with _async_client(script) as client:
            await client.get(URL, headers={"X-Task": name})

    async with anyio.create_task_group() as tg:
        tg.start_soon(handler, "a", "id-a")
        tg.start_soon(handler, "b", "id-b")
    assert seen == {"a": "id-a", "b": "id-b"}
    sent = {r.headers["X-Task"]: r.headers["X-Request-ID"] for r in script.requests}
    assert sent == {"a": "id-a", "b": "id-b"}
    assert current_request_id() is None


async def test_retry_log_carries_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx_resilience")
    script = Script([503, 200])
    async with _async_client(script) as client:
        with request_id("log-me"):
            await client.get(URL)
    [record] = caplog.records
    assert record.request_id == "log-me"  # type: ignore[attr-defined]
    assert record.getMessage().endswith("(request ID log-me)")


async def test_sensitive_id_is_sent_but_kept_out_of_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="httpx_resilience")
    script = Snapshots([503, 200])
    async with _async_client(script, sensitive=True) as client:
        with request_id("secret-session-id"):
            response = await client.get(URL)
    assert [h["X-Request-ID"] for h in script.headers] == ["secret-session-id"] * 2
    assert response.extensions["request_id"] == "secret-session-id"
    assert "request_id" not in script.requests[0].extensions
    [record] = caplog.records
    assert record.request_id is None  # type: ignore[attr-defined]
    assert "secret-session-id" not in record.getMessage()


async def test_bound_id_arrives_at_a_real_server_on_every_attempt(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(200, body=b"done")])
    base = httpx.AsyncHTTPTransport(verify=servers.ssl_context, http2=True)
    transport = RequestIdTransport(RetryTransport(base, FAST, sleep=FakeSleep()))
    async with httpx.AsyncClient(transport=transport) as client:
        with request_id("from-the-inbound-request"):
            response = await client.get(servers.tls_url + unique_path)
    assert response.status_code == 200
    received = app.received(unique_path)
    assert [r.headers["x-request-id"] for r in received] == ["from-the-inbound-request"] * 3
