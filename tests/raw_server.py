"""A raw TCP/TLS server on loopback whose connections a test scripts byte by byte.

For what real servers must not send (invalid frames, a status line a byte at a
time, trickled 1xx responses, PINGs instead of an answer): the test writes the
bytes itself. Runs in the test's own event loop through anyio (asyncio or trio).

>>> async def handler(conn: RawConnection) -> None:
...     await conn.read_until(b"\\r\\n\\r\\n")
...     await conn.send(b"HTTP/1.1 200 OK\\r\\ncontent-length: 0\\r\\n\\r\\n")
>>> async with RawServer(handler) as server:  # doctest: +SKIP
...     await client.get(server.url)
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
from anyio.streams.tls import TLSStream

from .servers import LOOPBACK, _shared_ca

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame as bytes, whatever its content: valid or not."""
    size = len(payload)
    return struct.pack(">BHBBL", size >> 16, size & 0xFFFF, kind, flags, stream_id) + payload


def goaway(last_stream_id: int, error_code: int = 0, *, stream_id: int = 0) -> bytes:
    """A GOAWAY frame (``stream_id`` other than 0 makes it invalid)."""
    return frame(GOAWAY, 0, stream_id, struct.pack(">LL", last_stream_id, error_code))


def rst_stream(stream_id: int, error_code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">L", error_code))


class RawConnection:
    """One accepted connection: read and write bytes, or speak HTTP/2 through ``h2``."""

    def __init__(self, stream: anyio.abc.ByteStream, alpn: str | None) -> None:
        self.stream = stream
        #: The protocol ALPN settled on (TLS only).
        self.alpn = alpn
        self.buffer = bytearray()
        self._h2: h2.connection.H2Connection | None = None

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def receive(self) -> bytes:
        """The next bytes from the client (b"" once it has closed)."""
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        try:
            return await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return b""

    async def read_until(self, marker: bytes) -> bytes:
        """Bytes up to and including ``marker`` (what came after stays buffered)."""
        while marker not in self.buffer:
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise EOFError(f"client closed before sending {marker!r}") from None
            self.buffer += data
        end = self.buffer.index(marker) + len(marker)
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return head

    async def drain(self) -> None:
        """Read until the client closes."""
        while await self.receive():
            pass

    # HTTP/2, with h2 doing the well-formed part.

    @property
    def h2(self) -> h2.connection.H2Connection:
        if self._h2 is None:
            config = h2.config.H2Configuration(client_side=False, header_encoding=None)
            self._h2 = h2.connection.H2Connection(config)
            self._h2.initiate_connection()
        return self._h2

    async def h2_flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.send(data)

    async def h2_events(self) -> list[h2.events.Event]:
        """Send what h2 has queued, then read until h2 reports events (none at EOF)."""
        await self.h2_flush()
        while True:
            data = await self.receive()
            if not data:
                return []
            events = self.h2.receive_data(data)
            await self.h2_flush()
            if events:
                return list(events)

    async def h2_requests(self, count: int = 1) -> list[int]:
        """Stream IDs of the next ``count`` requests whose headers have arrived."""
        streams: list[int] = []
        while len(streams) < count:
            events = await self.h2_events()
            if not events:
                raise EOFError("client closed before sending its requests")
            streams += [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)]
        return streams

    async def h2_respond(
        self, stream_id: int, status: int = 200, body: bytes = b"", end: bool = True
    ) -> None:
        headers = [(b":status", str(status).encode()), (b"content-length", b"%d" % len(body))]
        self.h2.send_headers(stream_id, headers, end_stream=end and not body)
        if body:
            self.h2.send_data(stream_id, body, end_stream=end)
        await self.h2_flush()


Handler = Callable[[RawConnection], Awaitable[None]]


class RawServer:
    """Accepts connections on 127.0.0.1 and runs ``handler`` for each, then closes it.

    With ``tls=True`` the certificate comes from the test CA (``ssl_context``
    trusts it) and ALPN offers ``alpn``, so ``("h2",)`` makes a client speak
    HTTP/2; ``tls_delay`` seconds pass between accepting a connection and
    answering its TLS handshake, which holds a client in its handshake.
    ``connections`` counts the connections accepted.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        tls: bool = False,
        alpn: Sequence[str] = ("h2", "http/1.1"),
        tls_delay: float = 0.0,
    ) -> None:
        self._handler = handler
        self._tls = tls
        self._tls_delay = tls_delay
        self._alpn = list(alpn)
        self.connections = 0
        self.port = 0
        ca = _shared_ca()
        #: A client context that trusts this server's certificate.
        self.ssl_context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", LOOPBACK).configure_cert(self._server_context)
        self._server_context.set_alpn_protocols(self._alpn)
        self._group: anyio.abc.TaskGroup | None = None
        self._listener: anyio.abc.SocketListener | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{LOOPBACK}:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
        self.port = self._listener.extra(anyio.abc.SocketAttribute.local_port)
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._listener.serve, self._serve)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self._listener is not None
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(exc_type, exc, tb)
        await self._listener.aclose()

    async def _serve(self, sock: anyio.abc.SocketStream) -> None:
        self.connections += 1
        stream: anyio.abc.ByteStream = sock
        alpn = None
        try:
            if self._tls:
                if self._tls_delay:
                    await anyio.sleep(self._tls_delay)
                tls = await TLSStream.wrap(
                    sock, server_side=True, ssl_context=self._server_context
                )
                alpn = tls.extra(anyio.streams.tls.TLSAttribute.alpn_protocol)
                stream = tls
            await self._handler(RawConnection(stream, alpn))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, EOFError):
            pass  # the client went away: what a test provokes
        except ssl.SSLError:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
