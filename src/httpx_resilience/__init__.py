"""Resilience middleware for httpx, built as composable transports.

>>> import httpx
>>> from httpx_resilience import RetryTransport
>>> client = httpx.AsyncClient(transport=RetryTransport(httpx.AsyncHTTPTransport(http2=True)))
"""

import logging

from ._breaker import CircuitBreakerPolicy, CircuitBreakerTransport
from ._budget import RetryBudget
from ._circuit import CircuitSnapshot, CircuitState
from ._dns import DNSCache, Resolver, default_resolver
from ._errors import CircuitOpenError, DeadlineExceeded, RateLimitExceeded
from ._hedging import HedgingPolicy, HedgingTransport
from ._idempotency import IdempotencyKeyTransport, new_idempotency_key
from ._layer import Layer
from ._network import TimedNetworkBackend
from ._ratelimit import RateLimitPolicy, RateLimitTransport
from ._records import HedgeHistory, RetryEvent, RetryHistory, Timings
from ._redact import SENSITIVE_QUERY_PARAMETERS
from ._redis import RedisState
from ._request_id import RequestIdTransport
from ._request_ids import current_request_id, new_request_id, request_id, uuid4_request_id
from ._retry import RetryTransport
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
from ._stack import PRODUCTION_LIMITS, resilient_transport
from ._state import MemoryState, StateBackend
from ._tracing import TracingTransport
from ._transport import HTTPTransport
from ._version import VERSION as __version__  # noqa: F401 - public, not in __all__

# A library logs; the application decides where it goes (and nothing reaches
# stderr through logging's last resort in an application without logging set up).
logging.getLogger("httpx_resilience").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_RETRY_EXCEPTIONS",
    "DEFAULT_RETRY_STATUSES",
    "IDEMPOTENT_METHODS",
    "PRODUCTION_LIMITS",
    "SENSITIVE_QUERY_PARAMETERS",
    "CircuitBreakerPolicy",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "CircuitSnapshot",
    "CircuitState",
    "DNSCache",
    "DeadlineExceeded",
    "HTTPTransport",
    "HedgeHistory",
    "HedgingPolicy",
    "HedgingTransport",
    "IdempotencyKeyTransport",
    "Layer",
    "MemoryState",
    "RateLimitExceeded",
    "RateLimitPolicy",
    "RateLimitTransport",
    "RedisState",
    "RequestIdTransport",
    "Resolver",
    "RetryBudget",
    "RetryEvent",
    "RetryHistory",
    "RetryPolicy",
    "RetryTransport",
    "StateBackend",
    "TimedNetworkBackend",
    "Timings",
    "TracingTransport",
    "current_request_id",
    "default_resolver",
    "is_idempotent",
    "is_replayable",
    "is_retryable",
    "new_idempotency_key",
    "new_request_id",
    "parse_retry_after",
    "request_id",
    "resilient_transport",
    "retry_reason",
    "uuid4_request_id",
]
