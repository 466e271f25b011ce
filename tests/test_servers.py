"""The real-server harness itself: scripting, protocols, streaming, failures."""

from __future__ import annotations

import ssl
import time
import uuid

import anyio
import httpx
import pytest

from .servers import Reply, ScriptedApp, ServerThread, start_servers

pytestmark = pytest.mark.anyio


def make_client(servers: ServerThread) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=servers.ssl_context, http2=True)


async def test_script_is_served_in_order_and_recorded(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(503, body=b"busy"), Reply(503), Reply(200, body=b"done")])
    async with make_client(servers) as client:
        responses = [
            await client.post(servers.tls_url + unique_path, content=f"attempt {i}".encode())
            for i in range(3)
        ]
        again = await client.get(servers.tls_url + unique_path)

    assert [r.status_code for r in responses] == [503, 503, 200]
    assert [r.content for r in responses] == [b"busy", b"", b"done"]
    assert again.status_code == 200  # the last reply repeats
    received = app.received(unique_path)
    assert [(r.method, r.body) for r in received] == [
        ("POST", b"attempt 0"),
        ("POST", b"attempt 1"),
        ("POST", b"attempt 2"),
        ("GET", b""),
    ]


async def test_tls_negotiates_http2_and_plain_stays_http11(servers: ServerThread) -> None:
    async with make_client(servers) as client:
        over_tls = await client.get(f"{servers.tls_url}/echo")
        plain = await client.get(f"{servers.http_url}/echo")

    assert over_tls.http_version == "HTTP/2"
    assert over_tls.json()["http_version"] == "2"
    assert plain.http_version == "HTTP/1.1"
    assert plain.json()["http_version"] == "1.1"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_certificate_is_verified(servers: ServerThread, host: str) -> None:
    url = f"https://{host}:{servers.tls_port}/status/204"
    async with make_client(servers) as client:
        assert (await client.get(url)).status_code == 204
    # Without the test CA the same request must fail, or verification proves nothing.
    async with httpx.AsyncClient() as untrusting:
        with pytest.raises(httpx.ConnectError) as failure:
            await untrusting.get(url)
    # Under trio the message is empty; the TLS error sits further down the chain.
    chain: list[BaseException] = []
    error: BaseException | None = failure.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain)


async def test_echo_returns_request(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    headers = [("X-Test", "yes"), ("X-Multi", "a"), ("X-Multi", "b")]
    async with make_client(servers) as client:
        for base in (servers.tls_url, servers.http_url):
            response = await client.put(
                f"{base}/echo?probe={unique_path}", headers=headers, content=b"\x00payload\xff"
            )
            echoed = response.json()
            assert response.status_code == 200
            assert echoed["method"] == "PUT"
            assert echoed["path"] == "/echo"
            assert echoed["query"] == f"probe={unique_path}"
            assert echoed["headers"]["x-test"] == "yes"
            assert echoed["headers"]["x-multi"] == "a, b"
            assert echoed["body"].encode("latin-1") == b"\x00payload\xff"

    mine = [r for r in app.received("/echo") if r.query == f"probe={unique_path}"]
    assert [r.http_version for r in mine] == ["2", "1.1"]
    assert all(r.body == b"\x00payload\xff" for r in mine)


async def test_stream_yields_every_byte_without_buffering(
    servers: ServerThread, app: ScriptedApp
) -> None:
    size = 5_000_000
    token = uuid.uuid4().hex
    total = 0
    produced_at_first_chunk = None
    async with (
        make_client(servers) as client,
        client.stream("GET", f"{servers.tls_url}/stream/{token}?size={size}") as response,
    ):
        assert response.http_version == "HTTP/2"
        async for chunk in response.aiter_bytes():
            if produced_at_first_chunk is None:
                produced_at_first_chunk = app.produced(token)
            total += len(chunk)

    assert total == size
    # Over HTTP/2 httpcore opens a 16 MiB stream window, so this bound is timing,
    # not flow control: the server could send all 5 MB unasked. It held with a
    # margin of several MB in hundreds of runs; the test below has the hard bound.
    assert produced_at_first_chunk is not None
    assert produced_at_first_chunk < size


async def test_http11_stream_is_held_back_by_flow_control(
    servers: ServerThread, app: ScriptedApp
) -> None:
    size = 50_000_000
    token = uuid.uuid4().hex
    total = 0
    right_after = after_pause = None
    async with (
        make_client(servers) as client,
        client.stream("GET", f"{servers.http_url}/stream/{token}?size={size}") as response,
    ):
        assert response.http_version == "HTTP/1.1"
        # Read to the end: under trio, leaving httpx's chain of async generators
        # half-consumed makes each one warn when it is collected.
        async for chunk in response.aiter_bytes():
            if right_after is None:
                right_after = app.produced(token)
                # Time enough to write everything if nothing held the server back;
                # loopback socket buffers take a few MB, far from 50.
                await anyio.sleep(0.1)
                after_pause = app.produced(token)
            total += len(chunk)

    assert total == size
    assert right_after is not None
    assert after_pause is not None
    assert right_after < size
    assert after_pause < size // 2


async def test_server_stops_streaming_when_client_hangs_up(
    servers: ServerThread, app: ScriptedApp
) -> None:
    size = 50_000_000
    token = uuid.uuid4().hex
    async with (
        make_client(servers) as client,
        client.stream("GET", f"{servers.http_url}/stream/{token}?size={size}"),
    ):
        await anyio.sleep(0.05)
    # Closing an unread HTTP/1.1 response closes its connection.

    with anyio.fail_after(2):
        before = app.produced(token)
        while True:
            await anyio.sleep(0.05)
            now = app.produced(token)
            if now == before:
                break
            before = now
    assert 0 < now < size


async def test_delayed_reply_waits(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    app.script(unique_path, [Reply(delay=0.2, body=b"late")])
    async with make_client(servers) as client:
        started = time.monotonic()
        response = await client.get(servers.tls_url + unique_path)
        elapsed = time.monotonic() - started

    assert response.content == b"late"
    assert elapsed >= 0.2


async def test_builtin_status_delay_and_missing_routes(servers: ServerThread) -> None:
    async with make_client(servers) as client:
        assert (await client.get(f"{servers.http_url}/status/418")).status_code == 418
        delayed = await client.get(f"{servers.http_url}/delay?seconds=0.05")
        missing = await client.get(f"{servers.tls_url}/nothing/here")

    assert (delayed.status_code, delayed.content) == (200, b"ok")
    assert missing.status_code == 404


async def test_closed_port_refuses(closed_port: int) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port}/")


async def test_own_server_takes_hypercorn_overrides(unique_path: str) -> None:
    app = ScriptedApp()
    with start_servers(app, keep_alive_max_requests=2, keep_alive_timeout=1.0) as server:
        async with httpx.AsyncClient() as client:
            first = await client.get(server.http_url + unique_path)
            second = await client.get(server.http_url + unique_path)

    # Hypercorn announces the end of a connection's request budget on HTTP/1.1.
    assert "connection" not in first.headers
    assert second.headers["connection"] == "close"
    assert len(app.received(unique_path)) == 2
    assert server.problems == []
