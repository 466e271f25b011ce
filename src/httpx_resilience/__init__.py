"""Resilience middleware for httpx, built as composable transports.

>>> import httpx
>>> from httpx_resilience import RetryTransport
>>> client = httpx.AsyncClient(transport=RetryTransport(httpx.AsyncHTTPTransport(http2=True)))
"""

from ._idempotency import IdempotencyKeyTransport, new_idempotency_key
from ._layer import Layer
from ._retry import RetryEvent, RetryHistory, RetryTransport
from ._retry_policy import (
    DEFAULT_RETRY_EXCEPTIONS,
    DEFAULT_RETRY_STATUSES,
    IDEMPOTENT_METHODS,
    RetryPolicy,
    is_idempotent,
    is_replayable,
    is_retryable,
    parse_retry_after,
    retry_reason,
)
from ._version import VERSION as __version__  # noqa: F401 - public, not in __all__

__all__ = [
    "DEFAULT_RETRY_EXCEPTIONS",
    "DEFAULT_RETRY_STATUSES",
    "IDEMPOTENT_METHODS",
    "IdempotencyKeyTransport",
    "Layer",
    "RetryEvent",
    "RetryHistory",
    "RetryPolicy",
    "RetryTransport",
    "is_idempotent",
    "is_replayable",
    "is_retryable",
    "new_idempotency_key",
    "parse_retry_after",
    "retry_reason",
]
