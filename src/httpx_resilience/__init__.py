"""Resilience middleware for httpx, built as composable transports.

>>> import httpx
>>> from httpx_resilience import RetryTransport
>>> client = httpx.AsyncClient(transport=RetryTransport(httpx.AsyncHTTPTransport(http2=True)))
"""

from ._idempotency import IdempotencyKeyTransport, new_idempotency_key
from ._layer import Layer
from ._redact import SENSITIVE_QUERY_PARAMETERS
from ._request_id import RequestIdTransport, current_request_id, new_request_id, request_id
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
from ._tracing import TracingTransport
from ._version import VERSION as __version__  # noqa: F401 - public, not in __all__

__all__ = [
    "DEFAULT_RETRY_EXCEPTIONS",
    "DEFAULT_RETRY_STATUSES",
    "IDEMPOTENT_METHODS",
    "SENSITIVE_QUERY_PARAMETERS",
    "IdempotencyKeyTransport",
    "Layer",
    "RequestIdTransport",
    "RetryEvent",
    "RetryHistory",
    "RetryPolicy",
    "RetryTransport",
    "TracingTransport",
    "current_request_id",
    "is_idempotent",
    "is_replayable",
    "is_retryable",
    "new_idempotency_key",
    "new_request_id",
    "parse_retry_after",
    "request_id",
    "retry_reason",
]
