"""Clocks that step back or give NaN: no layer stretches a wait, nor fails a response.

A step back counts as no time passed, and NaN is rejected where it enters
(``SteadyClock``); figures taken from two readings are never negative or NaN.
The circuit breaker's and the retry budget's clocks are tested with them
(test_breaker.py, test_budget_deadline.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .flavour import HTTPTransport, Timings, TracingTransport, httpx
from .flavour._clock import SteadyClock, seconds
from .flavour._hedging import LatencyWindow
from .flavour._network import DNSCache
from .servers import ServerThread
from .test_network import FakeClock, FakeResolver

pytestmark = pytest.mark.anyio

NAN = float("nan")


def test_steady_clock_counts_the_steps_of_the_clock() -> None:
    readings = iter([5.0, 7.0, -893.0, NAN, -890.0, math.inf, -math.inf, -889.0])
    clock = SteadyClock(lambda: next(readings))
    assert [clock() for _ in range(8)] == [5.0, 7.0, 7.0, 7.0, 10.0, 10.0, 10.0, 11.0]


def test_steady_clock_guards_readings_given_to_it() -> None:
    steady = SteadyClock()
    assert steady.at(NAN) == 0.0  # nothing read yet: the start of time
    assert [steady.at(r) for r in (100.0, 100.5, 50.0, 51.0)] == [100.0, 100.5, 100.5, 101.5]
    with pytest.raises(TypeError, match="no clock of its own"):
        steady()


def test_durations_no_clock_could_give_are_zero() -> None:
    assert [seconds(d) for d in (0.0, 1.5, -0.1, NAN, math.inf)] == [0.0, 1.5, 0.0, 0.0, 0.0]


async def test_dns_cache_entries_expire_after_their_ttl_when_the_clock_steps_back() -> None:
    # The expiry used to be a reading of the clock: stepped back 900 s, a
    # 60 s entry lived 960 s.
    clock, resolver = FakeClock(), FakeResolver({"api.test": ["192.0.2.7"]})
    cache = DNSCache(ttl=60, clock=clock)
    clock.advance(1000)
    await cache.resolve("api.test", lambda: resolver("api.test"))
    clock.advance(-900)
    await cache.resolve("api.test", lambda: resolver("api.test"))
    assert resolver.calls == ["api.test"]
    clock.advance(60.5)
    await cache.resolve("api.test", lambda: resolver("api.test"))
    assert resolver.calls == ["api.test", "api.test"]


async def test_dns_cache_with_a_nan_clock_still_answers() -> None:
    resolver = FakeResolver({"api.test": ["192.0.2.7"]})
    cache = DNSCache(ttl=60, clock=lambda: NAN)
    for _ in range(3):
        assert await cache.resolve("api.test", lambda: resolver("api.test")) == ("192.0.2.7",)
    assert resolver.calls == ["api.test"]  # no time passes: the entry stays fresh


def test_latency_window_leaves_out_what_no_clock_could_measure() -> None:
    window = LatencyWindow(size=10)
    for sample in (0.02, NAN, -5.0, math.inf, 0.04):
        window.add(sample)
    assert len(window) == 2
    assert window.quantile(0.5) == 0.02
    assert window.quantile(0.99) == 0.04


class SteppingClock:
    """Reads ``readings`` in turn, then repeats the last."""

    def __init__(self, readings: Sequence[float]) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def figures(timings: Timings) -> list[float]:
    values = [timings.queue, timings.send, timings.wait, timings.total]
    return values + [v for v in (timings.dns, timings.connect, timings.tls) if v is not None]


@pytest.mark.parametrize(
    "make_clock",
    [lambda: lambda: NAN, lambda: SteppingClock([1000.0, 100.0, 50.0, 1.0, 0.5])],
    ids=["nan", "steps-back"],
)
async def test_a_clock_gone_wrong_never_fails_a_response_nor_gives_bad_figures(
    servers: ServerThread, make_clock: Callable[[], Callable[[], float]]
) -> None:
    # NaN timings used to raise ValueError in the tracing layer (as span event
    # timestamps) after the response had arrived.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    base = HTTPTransport(verify=servers.ssl_context, clock=make_clock())
    transport = TracingTransport(base, tracer_provider=provider)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"https://localhost:{servers.tls_port}/echo")
    assert response.status_code == 200
    timings = response.extensions["timings"]
    assert not timings.connection_reused
    assert all(0.0 <= value < math.inf for value in figures(timings))
    [span] = exporter.get_finished_spans()
    assert [event.name for event in span.events] == [
        "httpx_resilience.dns",
        "httpx_resilience.connect",
        "httpx_resilience.tls",
    ]
    provider.shutdown()
