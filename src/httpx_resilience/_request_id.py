"""RequestIdTransport: one ID per logical request, carried by each of its attempts."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

import httpx

from ._layer import Layer

#: ``request.extensions`` and ``response.extensions`` key holding the ID sent.
#: On the request it is also what the retry log and the tracing layer record,
#: so ``RequestIdTransport(sensitive=True)`` leaves it off the request.
REQUEST_ID = "request_id"
#: ``request.extensions`` key naming the header the ID travels in (lower case).
REQUEST_ID_HEADER = "request_id_header"

_bound: ContextVar[str | None] = ContextVar("httpx_resilience.request_id", default=None)

# A field value (RFC 9110 §5.5) that httpx can encode: visible ASCII, with
# spaces and tabs only inside, never at the ends.
_FIELD_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def new_request_id() -> str:
    """128 random bits as 32 hex digits, the shape of a W3C trace ID.

    >>> len(new_request_id())
    32

    ``os.urandom`` is the kernel's CSPRNG, several times cheaper than
    ``uuid.uuid4().hex`` (which builds a UUID object around the same bytes).
    """
    return os.urandom(16).hex()


def check_request_id(value: str) -> str:
    """Return ``value`` if it can be sent as a header value, else raise ``ValueError``.

    >>> check_request_id("req-42")
    'req-42'
    """
    if not isinstance(value, str):
        raise TypeError(f"a request ID must be a str, got {type(value).__name__}")
    if _FIELD_VALUE.fullmatch(value) is None:
        raise ValueError(
            f"request ID {value!r} cannot be sent as a header value: use visible ASCII "
            "characters, with spaces or tabs only between them"
        )
    return value


def request_id(value: str | None = None) -> AbstractContextManager[str]:
    """Send ``value`` as the request ID of every request made inside the block.

    >>> async def handler(inbound_id: str) -> None:  # doctest: +SKIP
    ...     with request_id(inbound_id):
    ...         await client.get("https://api.example.com/things")

    Without a value a new random ID is bound; ``with request_id() as rid:``
    gives it to the block. A value that cannot be a header value raises
    ``ValueError`` here, at the call. The binding lives in a
    ``contextvars.ContextVar``, so tasks started inside the block (asyncio or
    trio) inherit it and concurrent requests elsewhere do not see it.
    ``RequestIdTransport`` sends it; a header the caller set on the request
    still wins.
    """
    return _bind(new_request_id() if value is None else check_request_id(value))


@contextmanager
def _bind(value: str) -> Iterator[str]:
    token = _bound.set(value)
    try:
        yield value
    finally:
        _bound.reset(token)


def current_request_id() -> str | None:
    """The request ID bound by the innermost :func:`request_id` block, or ``None``.

    >>> with request_id("abc"):
    ...     current_request_id()
    'abc'
    """
    return _bound.get()


class RequestIdTransport(Layer):
    """Give every request an ID that all of its attempts share.

    >>> transport = RequestIdTransport(RetryTransport(httpx.AsyncHTTPTransport()))
    >>> client = httpx.AsyncClient(transport=transport)

    The ID is, in order: the header the caller set on the request, the ID
    bound by :func:`request_id`, or a new one from ``new_id``. Place the layer
    outside ``RetryTransport`` so that every attempt carries the same value.
    ``response.extensions["request_id"]`` tells which ID was sent.

    The retry log and ``TracingTransport`` record the ID; with
    ``sensitive=True`` they do not (for IDs that are credentials or personal
    data), while the header is still sent.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
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
        self._new_id = new_id if new_id is new_request_id else _checked(new_id)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # "in" first: headers.get() of an absent header costs a KeyError in httpx.
        headers = request.headers
        if self._header in headers:
            value = headers[self._header]
        else:
            bound = _bound.get()
            value = self._new_id() if bound is None else bound
            headers[self._header] = value
        if not self._sensitive:
            request.extensions[REQUEST_ID] = value
            request.extensions[REQUEST_ID_HEADER] = self._header_key
        response = await self._transport.handle_async_request(request)
        response.extensions[REQUEST_ID] = value
        return response


def _checked(new_id: Callable[[], str]) -> Callable[[], str]:
    def checked_new_id() -> str:
        return check_request_id(new_id())

    return checked_new_id
