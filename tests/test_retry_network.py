"""RetryTransport against real servers on 127.0.0.1 (HTTP/1.1 and HTTP/2 over TLS)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from tenacity import stop_after_attempt, wait_exponential, wait_fixed

from .fakes import FakeSleep
from .flavour import IdempotencyKeyTransport, RetryPolicy, RetryTransport, httpx
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio

POLICY = RetryPolicy(wait=wait_exponential(multiplier=1, max=30), stop=stop_after_attempt(3))


def _client(
    servers: ServerThread,
    sleep: FakeSleep,
    policy: RetryPolicy = POLICY,
    *,
    keys: bool = False,
    base_url: str | None = None,
) -> httpx.AsyncClient:
    base = httpx.AsyncHTTPTransport(http2=True, verify=servers.ssl_context)
    transport: httpx.AsyncBaseTransport = RetryTransport(base, policy, sleep=sleep)
    if keys:
        transport = IdempotencyKeyTransport(transport)
    return httpx.AsyncClient(transport=transport, base_url=base_url or servers.tls_url)


@pytest.fixture(params=["h2-tls", "http1"])
def base_url(request: pytest.FixtureRequest, servers: ServerThread) -> str:
    return servers.tls_url if request.param == "h2-tls" else servers.http_url


async def test_get_meets_503_503_200(
    servers: ServerThread, app: ScriptedApp, unique_path: str, base_url: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(200, body=b"done")])
    sleep = FakeSleep()
    async with _client(servers, sleep, base_url=base_url) as client:
        response = await client.get(unique_path)
    assert (response.status_code, response.content) == (200, b"done")
    assert response.extensions["retry"].attempts == 3
    assert sleep.calls == [1.0, 2.0]
    assert len(app.received(unique_path)) == 3


async def test_post_without_key_is_sent_once(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(200)])
    sleep = FakeSleep()
    async with _client(servers, sleep) as client:
        response = await client.post(unique_path, json={"amount": 10})
    assert response.status_code == 503
    assert len(app.received(unique_path)) == 1
    assert sleep.calls == []


async def test_post_with_key_layer_is_retried_with_the_same_key(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(503), Reply(201)])
    async with _client(servers, FakeSleep(), keys=True) as client:
        response = await client.post(unique_path, json={"amount": 10})
    assert response.status_code == 201
    received = app.received(unique_path)
    assert len(received) == 3
    assert len({r.headers["idempotency-key"] for r in received}) == 1
    assert {r.body for r in received} == {b'{"amount":10}'}


async def test_refused_connection_is_retried_for_post_then_raises_connect_error(
    servers: ServerThread, closed_port: int
) -> None:
    sleep = FakeSleep()
    async with _client(servers, sleep, base_url=f"http://127.0.0.1:{closed_port}") as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("/pay", json={"amount": 10})
    assert sleep.calls == [1.0, 2.0]


async def test_retry_after_seconds(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503, headers={"Retry-After": "2"}), Reply(200)])
    sleep = FakeSleep()
    async with _client(servers, sleep, RetryPolicy(wait=wait_fixed(0.1))) as client:
        response = await client.get(unique_path)
    assert response.status_code == 200
    assert sleep.calls == [2.0]


async def test_retry_after_http_date(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    date = email.utils.formatdate(time.time() + 3, usegmt=True)
    app.script(unique_path, [Reply(429, headers={"Retry-After": date}), Reply(200)])
    sleep = FakeSleep()
    async with _client(servers, sleep, RetryPolicy(wait=wait_fixed(0.1))) as client:
        response = await client.get(unique_path)
    assert response.status_code == 200
    [wait] = sleep.calls
    # The date has whole seconds and the clock moved on a little since.
    assert 1.5 <= wait <= 3.0


async def test_retry_after_a_day_returns_at_once(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503, headers={"Retry-After": "86400"}), Reply(200)])
    sleep = FakeSleep()
    async with _client(servers, sleep) as client:
        response = await client.get(unique_path)
    assert response.status_code == 503
    assert sleep.calls == []
    assert len(app.received(unique_path)) == 1


async def test_a_50_mb_body_streams_through_the_layer(
    servers: ServerThread, app: ScriptedApp
) -> None:
    size = 50_000_000
    token = f"big-{id(app)}-{time.monotonic_ns()}"
    client = _client(servers, FakeSleep(), base_url=servers.http_url)
    async with client, client.stream("GET", f"/stream/{token}", params={"size": size}) as response:
        assert response.status_code == 200
        assert response.extensions["retry"].attempts == 1
        chunks = response.aiter_raw()
        received = len(await chunks.__anext__())
        # Had anything buffered the body before handing the response over,
        # the server would have produced all of it by now.
        assert app.produced(token) < size // 2
        async for chunk in chunks:
            received += len(chunk)
    assert received == size


async def _generated_body() -> AsyncIterator[bytes]:
    yield b"part-1;"
    yield b"part-2"


async def test_async_generator_body_is_sent_once(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503), Reply(200)])
    sleep = FakeSleep()
    async with _client(servers, sleep) as client:
        response = await client.put(unique_path, content=_generated_body())
    assert response.status_code == 503
    assert [r.body for r in app.received(unique_path)] == [b"part-1;part-2"]
    assert sleep.calls == []


async def test_http2_over_tls_20_concurrent_requests_share_one_connection(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(200, body=b"ok", delay=0.05)])
    client_ports: list[int] = []
    versions: set[str] = set()

    async def one(client: httpx.AsyncClient) -> None:
        response = await client.get(unique_path)
        assert response.status_code == 200
        versions.add(response.http_version)
        stream = response.extensions["network_stream"]
        client_ports.append(stream.get_extra_info("client_addr")[1])

    async with _client(servers, FakeSleep()) as client, anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one, client)
    assert versions == {"HTTP/2"}
    assert len(client_ports) == 20
    assert len(set(client_ports)) == 1
    assert len(app.received(unique_path)) == 20
