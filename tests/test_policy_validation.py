"""Every number and name a policy or layer takes is checked when it is built.

A NaN, an infinity, a float where a count is meant or a bare string where a
collection of names is meant used to slip through and misbehave later (a
re-send count that never reached zero, a budget that was silently off, a
hedge delay that broke every GET). Each must fail at construction, with a
message naming the field and the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from .flavour import (
    CircuitBreakerPolicy,
    CircuitBreakerTransport,
    DNSCache,
    HedgingPolicy,
    HedgingTransport,
    HTTPTransport,
    IdempotencyKeyTransport,
    RetryBudget,
    RetryPolicy,
    RetryTransport,
    TimedNetworkBackend,
    httpx,
    resilient_transport,
)

NAN, INF = math.nan, math.inf
BASE = httpx.MockTransport(lambda _: httpx.Response(200))

Case = tuple[Callable[..., object], dict[str, Any], type[Exception], str]

CASES: list[Case] = [
    # RetryPolicy
    (RetryPolicy, {"unprocessed_resends": 2.5}, TypeError, "unprocessed_resends"),
    (RetryPolicy, {"unprocessed_resends": NAN}, TypeError, "unprocessed_resends"),
    (RetryPolicy, {"unprocessed_resends": INF}, TypeError, "unprocessed_resends"),
    (RetryPolicy, {"unprocessed_resends": True}, TypeError, "unprocessed_resends"),
    (RetryPolicy, {"unprocessed_resends": "3"}, TypeError, "unprocessed_resends"),
    (RetryPolicy, {"unprocessed_resends": -1}, ValueError, "unprocessed_resends"),
    (RetryPolicy, {"max_retry_after": NAN}, ValueError, "max_retry_after"),
    (RetryPolicy, {"max_retry_after": INF}, ValueError, "max_retry_after"),
    (RetryPolicy, {"max_retry_after": "60"}, TypeError, "max_retry_after"),
    (RetryPolicy, {"max_retry_after": False}, TypeError, "max_retry_after"),
    (RetryPolicy, {"deadline": NAN}, ValueError, "deadline"),
    (RetryPolicy, {"deadline": INF}, ValueError, "deadline"),
    (RetryPolicy, {"deadline": "1"}, TypeError, "deadline"),
    (RetryPolicy, {"deadline": True}, TypeError, "deadline"),
    (RetryPolicy, {"idempotent_methods": "GET"}, TypeError, "idempotent_methods"),
    (RetryPolicy, {"idempotent_methods": ["GET", "BAD METHOD"]}, ValueError, "idempotent_methods"),
    (RetryPolicy, {"idempotent_methods": ["GET", 1]}, TypeError, "idempotent_methods"),
    (RetryPolicy, {"idempotent_methods": ["GET", ""]}, ValueError, "idempotent_methods"),
    (RetryPolicy, {"statuses": 503}, TypeError, "statuses"),
    (RetryPolicy, {"statuses": "503"}, TypeError, "statuses"),
    (RetryPolicy, {"statuses": {True}}, ValueError, "status True"),
    (RetryPolicy, {"exceptions": httpx.ConnectError}, TypeError, "exceptions"),
    (RetryPolicy, {"idempotency_header": "Idempotency Key"}, ValueError, "idempotency_header"),
    (RetryPolicy, {"idempotency_header": None}, TypeError, "idempotency_header"),
    (RetryPolicy, {"deadline_header": "X-Deadline\n"}, ValueError, "deadline_header"),
    (RetryPolicy, {"deadline_header": 1}, TypeError, "deadline_header"),
    (RetryPolicy, {"respect_retry_after": "no"}, TypeError, "respect_retry_after"),
    (RetryPolicy, {"budget": 0.2}, TypeError, "budget"),
    # RetryBudget
    (RetryBudget, {"max_tokens": NAN}, ValueError, "max_tokens"),
    (RetryBudget, {"max_tokens": INF}, ValueError, "max_tokens"),
    (RetryBudget, {"ratio": NAN}, ValueError, "ratio"),
    (RetryBudget, {"ratio": "0.1"}, TypeError, "ratio"),
    (RetryBudget, {"min_per_second": NAN}, ValueError, "min_per_second"),
    (RetryBudget, {"min_per_second": INF}, ValueError, "min_per_second"),
    (RetryBudget, {"timeout_cost": NAN}, ValueError, "timeout_cost"),
    (RetryBudget, {"timeout_cost": True}, TypeError, "timeout_cost"),
    # CircuitBreakerPolicy
    (CircuitBreakerPolicy, {"failure_ratio": NAN}, ValueError, "failure_ratio"),
    (CircuitBreakerPolicy, {"min_calls": 2.5}, TypeError, "min_calls"),
    (CircuitBreakerPolicy, {"min_calls": NAN}, TypeError, "min_calls"),
    (CircuitBreakerPolicy, {"min_calls": True}, TypeError, "min_calls"),
    (CircuitBreakerPolicy, {"window": NAN}, ValueError, "window"),
    (CircuitBreakerPolicy, {"window": INF}, ValueError, "window"),
    (CircuitBreakerPolicy, {"break_duration": NAN}, ValueError, "break_duration"),
    (CircuitBreakerPolicy, {"break_duration": INF}, ValueError, "break_duration"),
    (CircuitBreakerPolicy, {"probes": 1.5}, TypeError, "probes"),
    (CircuitBreakerPolicy, {"statuses": 503}, TypeError, "statuses"),
    (CircuitBreakerPolicy, {"exceptions": httpx.ReadError}, TypeError, "exceptions"),
    # HedgingPolicy
    (HedgingPolicy, {"delay": NAN}, ValueError, "delay"),
    (HedgingPolicy, {"delay": INF}, ValueError, "delay"),
    (HedgingPolicy, {"delay": "0.1"}, TypeError, "delay"),
    (HedgingPolicy, {"max_attempts": 2.5}, TypeError, "max_attempts"),
    (HedgingPolicy, {"max_attempts": INF}, TypeError, "max_attempts"),
    (HedgingPolicy, {"max_attempts": True}, TypeError, "max_attempts"),
    (HedgingPolicy, {"percentile": NAN}, ValueError, "percentile"),
    (HedgingPolicy, {"min_delay": NAN}, ValueError, "min_delay"),
    (HedgingPolicy, {"max_delay": NAN}, ValueError, "max_delay"),
    (HedgingPolicy, {"max_delay": INF}, ValueError, "max_delay"),
    (HedgingPolicy, {"window": 10.5}, TypeError, "window"),
    (HedgingPolicy, {"min_samples": 2.0}, TypeError, "min_samples"),
    (HedgingPolicy, {"methods": "GET"}, TypeError, "methods"),
    (HedgingPolicy, {"statuses": 503}, TypeError, "statuses"),
    # Layers
    (lambda **kw: HedgingTransport(BASE, **kw), {"max_origins": 2.5}, TypeError, "max_origins"),
    (lambda **kw: HedgingTransport(BASE, **kw), {"max_origins": NAN}, TypeError, "max_origins"),
    (lambda **kw: HedgingTransport(BASE, **kw), {"max_origins": 0}, ValueError, "max_origins"),
    (lambda **kw: HedgingTransport(BASE, **kw), {"policy": "x"}, TypeError, "policy"),
    (
        lambda **kw: CircuitBreakerTransport(BASE, **kw),
        {"max_origins": True},
        TypeError,
        "max_origins",
    ),
    (lambda **kw: CircuitBreakerTransport(BASE, **kw), {"max_origins": INF}, TypeError, "max_"),
    (DNSCache, {"ttl": NAN}, ValueError, "ttl"),
    (DNSCache, {"ttl": INF}, ValueError, "ttl"),
    (DNSCache, {"ttl": 60, "max_size": 2.5}, TypeError, "max_size"),
    (DNSCache, {"ttl": 60, "max_size": NAN}, TypeError, "max_size"),
    (TimedNetworkBackend, {"happy_eyeballs_delay": NAN}, ValueError, "happy_eyeballs_delay"),
    (TimedNetworkBackend, {"happy_eyeballs_delay": INF}, ValueError, "happy_eyeballs_delay"),
    (HTTPTransport, {"dns_cache_ttl": NAN}, ValueError, "ttl"),
    (HTTPTransport, {"dns_cache_ttl": 60, "dns_cache_size": 1.5}, TypeError, "size"),
    (lambda **kw: RetryTransport(BASE, **kw), {"policy": RetryBudget()}, TypeError, "policy"),
    (lambda **kw: CircuitBreakerTransport(BASE, **kw), {"policy": 0.5}, TypeError, "policy"),
    (lambda **kw: IdempotencyKeyTransport(BASE, **kw), {"methods": "POST"}, TypeError, "methods"),
    (lambda **kw: IdempotencyKeyTransport(BASE, **kw), {"header": "Key\n"}, ValueError, "header"),
    (resilient_transport, {"retry": "yes"}, TypeError, "retry"),
    (resilient_transport, {"retry": RetryBudget()}, TypeError, "retry"),
    (resilient_transport, {"retry": 3}, TypeError, "retry"),
    (resilient_transport, {"hedging": 0.05}, TypeError, "hedging"),
    (resilient_transport, {"circuit_breaker": "on"}, TypeError, "circuit_breaker"),
    (resilient_transport, {"idempotency_keys": "yes"}, TypeError, "idempotency_keys"),
    (resilient_transport, {"tracing": "yes"}, TypeError, "tracing"),
    (resilient_transport, {"request_id_header": 1}, TypeError, "request_id_header"),
    (resilient_transport, {"request_id_factory": "uuid4"}, TypeError, "request_id_factory"),
]


def _id(case: Case) -> str:
    make, kwargs, _, _ = case
    name = getattr(make, "__name__", "layer")
    return f"{name}-{'-'.join(f'{k}={v!r}' for k, v in kwargs.items())}"[:80]


@pytest.mark.parametrize(("make", "kwargs", "error", "field"), CASES, ids=map(_id, CASES))
def test_bad_values_fail_at_construction_naming_the_field(
    make: Callable[..., object], kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field) as caught:
        make(**kwargs)
    # The message shows the value (or the bad item of a collection) too.
    value = list(kwargs.values())[-1]
    message = str(caught.value)
    items = value if isinstance(value, (set, list)) else [value]
    assert any(repr(item) in message for item in [value, *items]), message


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (RetryPolicy, {"unprocessed_resends": 0, "max_retry_after": 0, "deadline": 0.001}),
        (RetryPolicy, {"max_retry_after": 30, "deadline": 2}),
        (RetryPolicy, {"idempotent_methods": ["get", "put"], "deadline_header": "X-Deadline"}),
        (RetryBudget, {"ratio": 0, "max_tokens": 1, "min_per_second": 0, "timeout_cost": 0}),
        (CircuitBreakerPolicy, {"failure_ratio": 1, "window": 0.5, "break_duration": 0}),
        (HedgingPolicy, {"delay": 0, "max_attempts": 1, "min_delay": 0, "max_delay": 0}),
        (HedgingPolicy, {"methods": ["get"], "percentile": 0.5, "window": 1, "min_samples": 1}),
    ],
)
def test_edge_values_are_accepted(make: Callable[..., object], kwargs: dict[str, Any]) -> None:
    make(**kwargs)


def test_names_are_normalised_to_upper_case() -> None:
    assert RetryPolicy(idempotent_methods=["get"]).idempotent_methods == frozenset({"GET"})
    assert HedgingPolicy(methods=("get", "Head")).methods == frozenset({"GET", "HEAD"})
    assert RetryPolicy(unprocessed_resends=3).unprocessed_resends == 3
