"""The shape every layer shares: wrap one transport, forward its lifecycle."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import httpx

_L = TypeVar("_L", bound="Layer")


class Layer(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that wraps another one.

    ``async with``, ``__aexit__`` and ``aclose()`` reach the inner transport,
    so a client closing the outermost layer closes the connection pool.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"{type(self).__name__} wraps an httpx.AsyncBaseTransport, "
                f"got {type(transport).__name__}"
            )
        self._transport = transport

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The transport this layer wraps."""
        return self._transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self: _L) -> _L:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc_value, traceback)
