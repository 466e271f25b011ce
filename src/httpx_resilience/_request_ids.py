"""Request IDs: new ones, and the one bound to the caller's context by ``request_id()``.

No httpx here: both flavours (httpx and httpx2) share this module, so one
``with request_id(...)`` block names the requests of every client inside it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

#: The ID bound by ``request_id()``; the transports read it per request.
bound_id: ContextVar[str | None] = ContextVar("httpx_resilience.request_id", default=None)

# A field value (RFC 9110 §5.5) that httpx can encode: visible ASCII, with
# spaces and tabs only inside, never at the ends.
_FIELD_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")


def new_request_id() -> str:
    """128 random bits as 32 hex digits, the shape of a W3C trace ID.

    >>> len(new_request_id())
    32

    ``os.urandom`` is the kernel's CSPRNG, several times cheaper than
    ``uuid.uuid4().hex`` (which builds a UUID object around the same bytes),
    and unique across processes, restarts and forks with no state to keep.
    On HTTP/2 any unique header value costs about the same to send, whatever
    its length (docs/observability.md, "The ID format, and UUID4").
    """
    return os.urandom(16).hex()


def uuid4_request_id() -> str:
    """A random UUID4 in its canonical form, for services that expect one.

    >>> len(uuid4_request_id())
    36

    Pass it as ``new_id=`` to ``RequestIdTransport``, or as
    ``request_id_factory=`` to ``resilient_transport``.
    """
    return str(uuid.uuid4())


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
    trio) inherit it and concurrent requests elsewhere do not see it. Threads
    do not inherit it: code that hands requests to a thread pool runs them
    in a copy of the context (``contextvars.copy_context().run``, which
    ``asyncio.to_thread`` and ``anyio.to_thread.run_sync`` do for you; a
    plain ``concurrent.futures`` executor does not). ``RequestIdTransport``
    sends it; a header the caller set on the request still wins.
    """
    return _bind(new_request_id() if value is None else check_request_id(value))


@contextmanager
def _bind(value: str) -> Iterator[str]:
    token = bound_id.set(value)
    try:
        yield value
    finally:
        bound_id.reset(token)


def current_request_id() -> str | None:
    """The request ID bound by the innermost :func:`request_id` block, or ``None``.

    >>> with request_id("abc"):
    ...     current_request_id()
    'abc'
    """
    return bound_id.get()
