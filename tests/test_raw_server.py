"""The raw server answers what its handler writes, on asyncio and trio."""

from __future__ import annotations

import httpx
import pytest

from .raw_server import RawConnection, RawServer

pytestmark = pytest.mark.anyio


async def test_http11_bytes_as_written() -> None:
    async def handler(conn: RawConnection) -> None:
        await conn.read_until(b"\r\n\r\n")
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with RawServer(handler) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert (response.status_code, response.text, server.connections) == (200, "ok", 1)


async def test_http2_over_tls_through_h2() -> None:
    async def handler(conn: RawConnection) -> None:
        assert conn.alpn == "h2"
        (stream_id,) = await conn.h2_requests()
        await conn.h2_respond(stream_id, 201, b"made")
        await conn.drain()

    async with (
        RawServer(handler, tls=True) as server,
        httpx.AsyncClient(http2=True, verify=server.ssl_context) as client,
    ):
        response = await client.get(server.url)
    assert (response.status_code, response.text, response.http_version) == (201, "made", "HTTP/2")
