"""IdempotencyKeyTransport: one key per logical POST/PATCH, shared by its attempts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import httpx

from . import _checks
from ._layer import Layer, Transport


def new_idempotency_key() -> str:
    """A random UUID4, as the IETF httpapi Idempotency-Key draft suggests."""
    return str(uuid.uuid4())


class IdempotencyKeyTransport(Layer):
    """Give each POST and PATCH an ``Idempotency-Key`` header unless it has one.

    Place it outside ``RetryTransport``: every attempt then carries the same
    key, and the retry layer treats the request as safe to re-send. Only do
    this for servers that honour the header (they store the first outcome
    under the key and replay it for a repeat).

    >>> transport = IdempotencyKeyTransport(RetryTransport(httpx.AsyncHTTPTransport()))
    """

    def __init__(
        self,
        transport: Transport,
        *,
        header: str = "Idempotency-Key",
        methods: Iterable[str] = ("POST", "PATCH"),
        new_key: Callable[[], str] = new_idempotency_key,
    ) -> None:
        _checks.header_name("header", header)
        super().__init__(transport)
        self._header = header
        self._methods = _checks.methods("methods", methods)  # "POST" alone is refused
        self._new_key = new_key

    # unasync: begin
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in self._methods and self._header not in request.headers:
            request.headers[self._header] = self._new_key()
        return await self._async_next.handle_async_request(request)

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in self._methods and self._header not in request.headers:
            request.headers[self._header] = self._new_key()
        return self._next.handle_request(request)

    # unasync: generated end
