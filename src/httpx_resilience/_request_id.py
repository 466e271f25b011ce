"""RequestIdTransport: one ID per logical request, carried by each of its attempts."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from ._keys import REQUEST_ID, REQUEST_ID_HEADER
from ._layer import Layer, Transport
from ._request_ids import bound_id, check_request_id, new_request_id, uuid4_request_id

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class RequestIdTransport(Layer):
    """Give every request an ID that all of its attempts share.

    >>> transport = RequestIdTransport(RetryTransport(httpx.AsyncHTTPTransport()))
    >>> client = httpx.AsyncClient(transport=transport)

    The ID is, in order: the header the caller set on the request, the ID
    bound by :func:`request_id`, or a new one from ``new_id``. Place the layer
    outside ``RetryTransport`` so that every attempt carries the same value.
    ``response.extensions["request_id"]`` tells which ID was sent.
    New IDs are 32 hex digits (:func:`new_request_id`);
    ``new_id=uuid4_request_id`` sends UUID4s instead.

    The retry log and ``TracingTransport`` record the ID; with
    ``sensitive=True`` they do not (for IDs that are credentials or personal
    data), while the header is still sent.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        header: str = "X-Request-ID",
        new_id: Callable[[], str] = new_request_id,
        sensitive: bool = False,
    ) -> None:
        if not isinstance(header, str) or _TOKEN.fullmatch(header) is None:
            raise ValueError(f"header must be an HTTP header name, got {header!r}")
        super().__init__(transport)
        self._header = header
        self._header_key = header.lower()
        self._sensitive = sensitive
        # Our own IDs are valid by construction; check a custom factory's.
        trusted = new_id is new_request_id or new_id is uuid4_request_id
        self._new_id = new_id if trusted else _checked(new_id)

    # unasync: begin
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        value = self._stamp(request)
        response = await self._async_next.handle_async_request(request)
        response.extensions[REQUEST_ID] = value
        return response

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        value = self._stamp(request)
        response = self._next.handle_request(request)
        response.extensions[REQUEST_ID] = value
        return response

    # unasync: generated end

    def _stamp(self, request: httpx.Request) -> str:
        """Give the request its ID, unless the caller did; return the ID sent."""
        # "in" first: headers.get() of an absent header costs a KeyError in httpx.
        headers = request.headers
        if self._header in headers:
            value = headers[self._header]
        else:
            bound = bound_id.get()
            value = self._new_id() if bound is None else bound
            headers[self._header] = value
        if not self._sensitive:
            request.extensions[REQUEST_ID] = value
            request.extensions[REQUEST_ID_HEADER] = self._header_key
        return value


def _checked(new_id: Callable[[], str]) -> Callable[[], str]:
    def checked_new_id() -> str:
        return check_request_id(new_id())

    return checked_new_id
