"""The errors the library raises itself, each a subclass of the fitting httpx class.

An existing ``except httpx.TransportError`` (or ``except
httpx.TimeoutException``) still catches them.
"""

from __future__ import annotations

import httpx

from ._origin import Origin


class CircuitOpenError(httpx.TransportError):
    """The origin's circuit is open: the request was failed fast, never sent.

    A subclass of ``httpx.TransportError``, so ``except httpx.TransportError``
    catches it. ``origin`` is the ``(scheme, host, port)`` of the circuit and
    ``retry_in`` the seconds until it lets a probe through (0 while probes
    are already in flight).

    >>> try:  # doctest: +SKIP
    ...     await client.get("https://api.example.com/things")
    ... except CircuitOpenError as exc:
    ...     print(exc.origin, exc.retry_in)
    ('https', 'api.example.com', None) 7.5
    """

    def __init__(
        self,
        message: str,
        *,
        origin: Origin,
        retry_in: float,
        request: httpx.Request | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.origin = origin
        self.retry_in = retry_in


class DeadlineExceeded(httpx.TimeoutException):
    """The request's deadline ran out: all attempts and waits took too long.

    A subclass of ``httpx.TimeoutException``, so ``except httpx.TimeoutException``
    (and ``except httpx.TransportError``) still catches it. Raised when an
    attempt is still waiting for its response at the deadline, however busy
    the server keeps the connection; never for the caller's own cancellation.
    """


class RateLimitExceeded(httpx.PoolTimeout):
    """The client-side rate limit kept the request back longer than it may wait; never sent.

    A subclass of ``httpx.PoolTimeout`` (waiting for the rate limit is
    waiting for a slot, as for a pooled connection), so ``except
    httpx.TimeoutException`` and ``except httpx.TransportError`` still catch
    it. ``key`` is the rate limiter's key (the origin, by default) and
    ``retry_in`` the seconds until a request for it may go (0 when the cap on
    requests in flight was the limit).

    >>> try:  # doctest: +SKIP
    ...     await client.get("https://api.example.com/things")
    ... except RateLimitExceeded as exc:
    ...     print(exc.key, exc.retry_in)
    https://api.example.com 0.8
    """

    def __init__(
        self, message: str, *, key: str, retry_in: float, request: httpx.Request | None = None
    ) -> None:
        super().__init__(message, request=request)
        self.key = key
        self.retry_in = retry_in
