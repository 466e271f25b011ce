"""The shape every layer shares: wrap one transport, forward its lifecycle, in both call styles."""

from __future__ import annotations

from types import TracebackType
from typing import Any, NoReturn, TypeVar

import httpx

_L = TypeVar("_L", bound="Layer")

Transport = httpx.AsyncBaseTransport | httpx.BaseTransport


class Layer(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """A transport that wraps another one, for async and sync clients alike.

    ``handle_async_request`` serves ``httpx.AsyncClient`` and ``handle_request``
    ``httpx.Client``; ``async with`` / ``aclose()`` and ``with`` / ``close()``
    reach the inner transport, so a client closing the outermost layer closes
    the connection pool. The inner transport may serve one call style only
    (``httpx.AsyncHTTPTransport``, say): the other then raises ``TypeError``
    saying so.
    """

    def __init__(self, transport: Transport) -> None:
        if not isinstance(transport, (httpx.AsyncBaseTransport, httpx.BaseTransport)):
            raise TypeError(wrong_transport(type(self).__name__, transport))
        self._transport = transport
        # The inner transport as each call style reaches it.
        self._async_next: httpx.AsyncBaseTransport = (
            transport
            if isinstance(transport, httpx.AsyncBaseTransport)
            else _Missing(type(self).__name__, transport, "async")
        )
        self._next: httpx.BaseTransport = (
            transport
            if isinstance(transport, httpx.BaseTransport)
            else _Missing(type(self).__name__, transport, "sync")
        )

    @property
    def transport(self) -> Transport:
        """The transport this layer wraps."""
        return self._transport

    # unasync: begin
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._async_next.handle_async_request(request)

    async def aclose(self) -> None:
        await self._async_next.aclose()

    async def __aenter__(self: _L) -> _L:
        await self._async_next.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._async_next.__aexit__(exc_type, exc_value, traceback)

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._next.handle_request(request)

    def close(self) -> None:
        self._next.close()

    def __enter__(self: _L) -> _L:
        self._next.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._next.__exit__(exc_type, exc_value, traceback)

    # unasync: generated end


def wrong_transport(layer: str, transport: object) -> str:
    """Why ``transport`` cannot be wrapped: one of the other httpx flavour names its module."""
    for cls in type(transport).__mro__:
        module = cls.__module__.partition(".")[0]
        if module in ("httpx", "httpx2"):
            other = "httpx_resilience.httpx2" if module == "httpx2" else "httpx_resilience"
            return (
                f"{layer} wraps an httpx transport, got {type(transport).__name__}, a "
                f"{module} transport: for {module} clients, import the layers from {other}"
            )
    return (
        f"{layer} wraps an httpx.AsyncBaseTransport or httpx.BaseTransport, "
        f"got {type(transport).__name__}"
    )


def wrong_policy(expected: type, policy: object) -> str:
    """Why ``policy`` is refused: a policy of the other httpx flavour names both modules."""
    kind = expected.__name__
    theirs = type(policy).__module__.rpartition(".")[0]
    ours = expected.__module__.rpartition(".")[0]
    if type(policy).__name__ == kind and theirs.startswith("httpx_resilience") and theirs != ours:
        return (
            f"policy is a {kind} from {theirs}, which serves the other httpx flavour: "
            f"take the {kind} from {ours}, where this layer comes from"
        )
    return f"policy must be a {kind} or None, got {policy!r}"


class _Missing(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Stands in for the call style the inner transport lacks, and says so when used."""

    def __init__(self, layer: str, transport: object, style: str) -> None:
        self._message = (
            f"{layer} wraps {type(transport).__name__}, which serves only "
            f"{'sync' if style == 'async' else 'async'} clients: give {layer} a transport "
            f"that serves {style} clients too (such as httpx_resilience.HTTPTransport)"
        )

    def _fail(self, *args: Any) -> NoReturn:
        raise TypeError(self._message)

    handle_request = handle_async_request = close = aclose = _fail  # type: ignore[assignment]
    __enter__ = __aenter__ = __exit__ = __aexit__ = _fail  # type: ignore[assignment]
