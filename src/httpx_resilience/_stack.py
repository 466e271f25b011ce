"""resilient_transport(): the recommended stack in one call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from . import _checks, _otel
from ._breaker import CircuitBreakerPolicy, CircuitBreakerTransport
from ._hedging import HedgingPolicy, HedgingTransport
from ._idempotency import IdempotencyKeyTransport
from ._layer import Layer, Transport
from ._ratelimit import RateLimitPolicy, RateLimitTransport
from ._request_id import RequestIdTransport
from ._request_ids import new_request_id
from ._retry import RetryTransport, Sleep, SyncSleep
from ._retry_policy import RetryPolicy
from ._state import StateBackend
from ._transport import HTTPTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

#: The production stack's pool: HTTP/2 multiplexes many requests on few
#: connections; for HTTP/1.1 origins 50 connections bound the fan-out, and
#: all 50 stay alive until idle for ``keepalive_expiry``: a burst of 50
#: requests then finds its connections open, where keeping 20 reopened 30 of
#: them (a TLS handshake each) at every burst (benchmarks/RESULTS.md, pool).
#: 30 s rather than httpx's 5 s, so that bursts a few seconds apart keep
#: them too: past 5 s a connection is reused only while its socket shows
#: the server has not closed it (``_goaway.QUIET_AFTER``).
PRODUCTION_LIMITS = httpx.Limits(
    max_connections=50, max_keepalive_connections=50, keepalive_expiry=30
)


def resilient_transport(
    *,
    base: Transport | None = None,
    retry: RetryPolicy | bool = True,
    circuit_breaker: CircuitBreakerPolicy | bool = False,
    hedging: HedgingPolicy | bool = False,
    rate_limit: RateLimitPolicy | bool = False,
    state: StateBackend | None = None,
    idempotency_keys: bool = False,
    request_id_header: str | None = "X-Request-ID",
    request_id_factory: Callable[[], str] = new_request_id,
    tracing: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    sleep: Sleep | None = None,
    sync_sleep: SyncSleep | None = None,
    **transport_options: Any,
) -> Layer | HTTPTransport:
    """The recommended stack, outermost first: request ID, idempotency keys,
    retry, circuit breaker, hedging, rate limit, tracing, and the HTTP/2 base
    transport with connection timings.

    >>> client = httpx.AsyncClient(transport=resilient_transport(), base_url="https://api.example.com")
    >>> client = httpx.Client(transport=resilient_transport(), base_url="https://api.example.com")

    The transport serves async and sync clients alike (hedging, if on, only
    async ones).

    Keyword arguments not listed here go to ``HTTPTransport`` and mean what
    they mean for ``httpx.AsyncHTTPTransport`` (``verify=``, ``cert=``,
    ``limits=``, ``http2=``, ``proxy=``, ...); ``base=`` replaces it with any
    transport of your own. Each layer can be configured or left out:

    - ``retry``: a ``RetryPolicy``, ``True`` for the default one, ``False``
      for none;
    - ``circuit_breaker``, ``hedging``: a ``CircuitBreakerPolicy`` or
      ``HedgingPolicy`` (``True`` for the default one); both off by default;
    - ``rate_limit``: a ``RateLimitPolicy`` (``True`` for the default one,
      which only pauses an origin that answers 429 or 503 with
      ``Retry-After``); off by default. Inside the retry layer, so every
      attempt counts against the rate, and inside the breaker, so an open
      circuit spends none of it;
    - ``state``: where the breaker, the retry budget and the rate limiter
      keep their state: ``MemoryState()`` (the default, per process) or a
      ``RedisState`` shared by a fleet (docs/fleet.md);
    - ``idempotency_keys``: give every POST and PATCH an ``Idempotency-Key``
      (only for servers that honour it), which makes them safe to retry;
    - ``request_id_header``: the header of the request ID, ``None`` for none;
    - ``request_id_factory``: what makes a new request ID (32 hex digits by
      default; ``uuid4_request_id`` for UUID4s);
    - ``tracing``: spans and metrics through OpenTelemetry; by default on
      when ``opentelemetry-api`` is installed (it costs next to nothing
      without an SDK);
    - ``sleep``, ``sync_sleep``: what the retry layer waits with, for async
      and sync clients (fakes in tests).
    """
    _check_layer("retry", retry, RetryPolicy)
    _check_layer("circuit_breaker", circuit_breaker, CircuitBreakerPolicy)
    _check_layer("hedging", hedging, HedgingPolicy)
    _check_layer("rate_limit", rate_limit, RateLimitPolicy)
    if state is not None and not isinstance(state, StateBackend):
        raise TypeError(f"state must be a MemoryState or RedisState, got {state!r}")
    _checks.flag("idempotency_keys", idempotency_keys)
    if tracing is not None:
        _checks.flag("tracing", tracing)
    if request_id_header is not None:
        _checks.header_name("request_id_header", request_id_header)
    if not callable(request_id_factory):
        raise TypeError(
            f"request_id_factory must be a function that returns a str, got {request_id_factory!r}"
        )
    if base is not None and transport_options:
        raise TypeError(
            f"{', '.join(sorted(transport_options))}: these options configure the built-in "
            "base transport, which base= replaces; configure your own transport instead"
        )
    transport: Transport
    if base is not None:
        transport = base
    else:
        transport_options.setdefault("limits", PRODUCTION_LIMITS)
        transport = HTTPTransport(meter_provider=meter_provider, **transport_options)
    if tracing is None:
        tracing = _otel.OTEL_AVAILABLE
    if tracing:
        from ._tracing import TracingTransport

        transport = TracingTransport(
            transport, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    if rate_limit is not False:
        rate_options: dict[str, Any] = {"state": state}
        if sleep is not None:
            rate_options["sleep"] = sleep
        if sync_sleep is not None:
            rate_options["sync_sleep"] = sync_sleep
        transport = RateLimitTransport(
            transport,
            rate_limit if isinstance(rate_limit, RateLimitPolicy) else None,
            **rate_options,
        )
    if hedging is not False:
        transport = HedgingTransport(
            transport,
            hedging if isinstance(hedging, HedgingPolicy) else None,
            meter_provider=meter_provider,
        )
    if circuit_breaker is not False:
        transport = CircuitBreakerTransport(
            transport,
            circuit_breaker if isinstance(circuit_breaker, CircuitBreakerPolicy) else None,
            meter_provider=meter_provider,
            state=state,
        )
    if retry is not False:
        policy = retry if isinstance(retry, RetryPolicy) else None
        retry_options: dict[str, Any] = {"meter_provider": meter_provider, "state": state}
        if sleep is not None:
            retry_options["sleep"] = sleep
        if sync_sleep is not None:
            retry_options["sync_sleep"] = sync_sleep
        transport = RetryTransport(transport, policy, **retry_options)
    if idempotency_keys:
        transport = IdempotencyKeyTransport(transport)
    if request_id_header is not None:
        transport = RequestIdTransport(
            transport, header=request_id_header, new_id=request_id_factory
        )
    if not isinstance(transport, (Layer, HTTPTransport)):
        transport = Layer(transport)  # a base of the caller's own, and no layer on it
    return transport


def _check_layer(name: str, value: object, policy: type) -> None:
    """A layer's switch: a bool, or its policy (a RetryBudget given as ``retry=`` is a mistake)."""
    if not isinstance(value, (bool, policy)):
        raise TypeError(f"{name} must be True, False or a {policy.__name__}, got {value!r}")
