"""CircuitBreakerTransport: the state machine by tables, the layer over mocks, a fault server."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from tenacity import stop_after_attempt, wait_fixed

from httpx_resilience.testing import FaultPlan, FaultServer, InOrder, Respond

from .fakes import FakeSleep, Script, TrackedStream
from .flavour import (
    CircuitBreakerPolicy,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitSnapshot,
    CircuitState,
    RetryPolicy,
    RetryTransport,
    httpx,
)
from .flavour._breaker import REJECTIONS_METRIC, TRANSITIONS_METRIC
from .flavour._circuit import Circuit
from .flavour._keys import CIRCUIT as CIRCUIT_EXTENSION
from .flavour._origin import format_origin

pytestmark = pytest.mark.anyio

BASE = "https://api.example.com"
URL = f"{BASE}/v1/things"
ORIGIN = ("https", "api.example.com", None)
CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

# Opens after 4 failures among at least 4 calls in 10 s; breaks for 5 s.
SMALL = CircuitBreakerPolicy(failure_ratio=0.5, min_calls=4, window=10, break_duration=5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the policy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"failure_ratio": 0}, "failure_ratio must be in"),
        ({"failure_ratio": 1.5}, "failure_ratio must be in"),
        ({"min_calls": 0}, "min_calls must be >= 1"),
        ({"window": 0}, "window must be > 0"),
        ({"break_duration": -1}, "break_duration must be >= 0"),
        ({"probes": 0}, "probes must be >= 1"),
        ({"statuses": {99}}, "HTTP status codes"),
    ],
)
def test_policy_rejects_bad_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreakerPolicy(**options)


def test_policy_rejects_non_exceptions_and_normalizes_collections() -> None:
    with pytest.raises(TypeError, match="Exception subclasses"):
        CircuitBreakerPolicy(exceptions=[int])  # type: ignore[list-item]
    policy = CircuitBreakerPolicy(statuses=[503, 503], exceptions=[httpx.ReadError])
    assert policy.statuses == frozenset({503})
    assert policy.exceptions == (httpx.ReadError,)


def test_default_failures_are_5xx_429_and_transport_errors_about_the_origin() -> None:
    policy = CircuitBreakerPolicy()
    assert {429, 500, 503, 599} <= set(policy.statuses)
    assert not {200, 404, 408, 499} & set(policy.statuses)
    for exc in (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError):
        assert issubclass(exc, tuple(policy.exceptions))
    assert not issubclass(httpx.UnsupportedProtocol, tuple(policy.exceptions))
    assert not issubclass(CircuitOpenError, tuple(policy.exceptions))


# --- the state machine, by tables ------------------------------------------------

# A script is a sequence of (time, event); an event is "ok" or "fail" (a call
# that acquires and ends at that time), or "?" (a call that only asks).
# The table gives the state after the script and whether one more call at
# the script's last time may go out.


def play(circuit: Circuit, script: list[tuple[float, str]]) -> list[bool]:
    admitted = []
    for now, event in script:
        permit = circuit.acquire(now)
        admitted.append(permit is not None)
        if permit is not None and event != "?":
            circuit.record(permit, event == "fail", now)
    return admitted


def calls(start: float, *events: str, step: float = 0.1) -> list[tuple[float, str]]:
    return [(start + i * step, event) for i, event in enumerate(events)]


@pytest.mark.parametrize(
    ("script", "state"),
    [
        # Fewer calls than min_calls never open, whatever fails.
        (calls(0, "fail", "fail", "fail"), CLOSED),
        # 4 failures of 4 calls: opens on the 4th.
        (calls(0, "fail", "fail", "fail", "fail"), OPEN),
        # 2 of 4 is the ratio (0.5): opens on the failure that reaches it.
        (calls(0, "ok", "ok", "fail", "fail"), OPEN),
        # 2 of 5 is below the ratio.
        (calls(0, "ok", "ok", "ok", "fail", "fail"), CLOSED),
        # Successes never open, however many.
        (calls(0, *["ok"] * 50), CLOSED),
        # Failures older than the window (10 s) have aged out.
        (calls(0, "fail", "fail", "fail") + calls(11, "fail"), CLOSED),
        # ... but those inside it count.
        (calls(0, "fail", "fail", "fail") + calls(9, "fail"), OPEN),
        # Aging is in tenths of the window: a call 9.95 s later may still
        # share the window with one in the same first second.
        (calls(0.5, "fail", "fail", "fail") + calls(9.95, "fail"), OPEN),
    ],
)
def test_closed_circuit_opens_on_the_failure_ratio_over_the_window(
    script: list[tuple[float, str]], state: CircuitState
) -> None:
    circuit = Circuit(ORIGIN, SMALL)
    play(circuit, script)
    assert circuit.state is state


OPENED = calls(0, "fail", "fail", "fail", "fail")  # opens at t=0.3, break until 5.3


@pytest.mark.parametrize(
    ("after", "admitted", "state"),
    [
        # Open: every call fails fast until the break is over.
        (calls(1, "?", "?", "?"), [False, False, False], OPEN),
        (calls(5.29, "?"), [False], OPEN),
        # The break is over: one probe goes out, the next call is refused
        # while it is in flight.
        ([(5.3, "?"), (5.31, "?")], [True, False], HALF_OPEN),
        # The probe succeeds: closed, calls flow.
        ([(6, "ok"), (6.1, "ok"), (6.2, "ok")], [True, True, True], CLOSED),
        # The probe fails: open for another break, from the failure on.
        ([(6, "fail"), (10, "?"), (11, "?")], [True, False, True], HALF_OPEN),
        ([(6, "fail"), (10.99, "?")], [True, False], OPEN),
    ],
)
def test_open_circuit_fails_fast_then_probes(
    after: list[tuple[float, str]], admitted: list[bool], state: CircuitState
) -> None:
    circuit = Circuit(ORIGIN, SMALL)
    play(circuit, OPENED)
    assert circuit.state is OPEN
    assert play(circuit, after) == admitted
    assert circuit.state is state


def test_a_closed_circuit_starts_a_fresh_window() -> None:
    circuit = Circuit(ORIGIN, SMALL)
    play(circuit, [*OPENED, (6, "ok")])
    assert circuit.state is CLOSED
    assert circuit.counts(6) == (0, 0)
    play(circuit, calls(6.1, "fail", "fail", "fail"))
    assert circuit.state is CLOSED  # 3 < min_calls: the old failures are gone


def test_bounded_probes_and_the_first_verdict_decides() -> None:
    circuit = Circuit(ORIGIN, CircuitBreakerPolicy(min_calls=1, break_duration=1, probes=2))
    circuit.record(circuit.acquire(0) or 0, True, 0)
    assert circuit.state is OPEN
    first, second, third = circuit.acquire(2), circuit.acquire(2), circuit.acquire(2)
    assert first is not None
    assert second is not None
    assert third is None
    circuit.record(first, False, 2.5)
    assert circuit.state is CLOSED
    # The other probe's verdict came from a state that is over: ignored.
    circuit.record(second, True, 2.6)
    assert circuit.state is CLOSED


def test_a_probe_without_a_verdict_gives_its_slot_back() -> None:
    circuit = Circuit(ORIGIN, CircuitBreakerPolicy(min_calls=1, break_duration=1))
    circuit.record(circuit.acquire(0) or 0, True, 0)
    probe = circuit.acquire(2)
    assert probe is not None
    assert circuit.acquire(2) is None
    circuit.release(probe)  # cancelled, or an error that says nothing of the origin
    assert circuit.state is HALF_OPEN
    assert circuit.acquire(2) is not None


def test_calls_in_flight_when_the_circuit_opened_cannot_close_it_or_keep_it_open() -> None:
    circuit = Circuit(ORIGIN, SMALL)
    late = [circuit.acquire(0) for _ in range(3)]
    play(circuit, OPENED)
    assert circuit.state is OPEN
    circuit.record(late[0] or 0, False, 0.5)  # a success from before: not a probe
    assert circuit.state is OPEN
    probe = circuit.acquire(5.3)
    circuit.record(late[1] or 0, True, 5.4)  # a failure from before: not a probe's verdict
    assert circuit.state is HALF_OPEN
    circuit.release(late[2] or 0)
    assert circuit.acquire(5.5) is None  # the probe still holds the only slot
    circuit.record(probe or 0, False, 5.6)
    assert circuit.state is CLOSED


def test_every_change_is_heard_in_order() -> None:
    changes: list[tuple[CircuitState, CircuitState]] = []
    circuit = Circuit(ORIGIN, SMALL, lambda c, old, new: changes.append((old, new)))
    play(circuit, [*OPENED, (6, "fail"), (11, "ok")])
    assert changes == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_snapshot_and_state_at_read_without_changing_anything() -> None:
    changes: list[CircuitState] = []
    circuit = Circuit(ORIGIN, SMALL, lambda c, old, new: changes.append(new))
    play(circuit, calls(0, "ok", "fail"))
    assert circuit.snapshot(1) == CircuitSnapshot(ORIGIN, CLOSED, 2, 1, None)
    play(circuit, calls(1, "fail", "fail"))
    assert circuit.snapshot(2) == CircuitSnapshot(ORIGIN, OPEN, 4, 3, pytest.approx(4.1))
    assert circuit.state_at(6.1) is HALF_OPEN  # the break is over; the next call probes
    assert circuit.state is OPEN
    assert changes == [OPEN]


def test_zero_break_duration_probes_on_the_next_call() -> None:
    circuit = Circuit(ORIGIN, CircuitBreakerPolicy(min_calls=1, break_duration=0))
    circuit.record(circuit.acquire(0) or 0, True, 0)
    assert circuit.state is OPEN
    assert circuit.acquire(0) is not None
    assert circuit.state is HALF_OPEN


@pytest.mark.parametrize(
    ("origin", "text"),
    [
        (("https", "api.example.com", None), "https://api.example.com"),
        (("http", "127.0.0.1", 8080), "http://127.0.0.1:8080"),
        (("https", "::1", 8443), "https://[::1]:8443"),
    ],
)
def test_format_origin(origin: tuple[str, str, int | None], text: str) -> None:
    assert format_origin(origin) == text


# --- the layer, over MockTransport -------------------------------------------------


def breaker(
    handler: Any, clock: FakeClock, policy: CircuitBreakerPolicy = SMALL, **options: Any
) -> CircuitBreakerTransport:
    return CircuitBreakerTransport(httpx.MockTransport(handler), policy, clock=clock, **options)


async def test_after_the_threshold_requests_fail_fast_without_reaching_the_origin() -> None:
    script, clock = Script([503]), FakeClock()
    transport = breaker(script, clock)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            assert (await client.get(URL)).status_code == 503
        assert transport.state(URL) is OPEN
        clock.now += 1.5
        for _ in range(100):
            with pytest.raises(httpx.TransportError) as caught:
                await client.get(URL)
    assert len(script.requests) == 4
    error = caught.value
    assert isinstance(error, CircuitOpenError)
    assert error.origin == ORIGIN
    assert error.retry_in == pytest.approx(3.5)
    assert str(error) == (
        "circuit breaker open for https://api.example.com: 4 of the last 4 calls failed; "
        "the next probe goes out in 3.5 s"
    )
    assert error.request.url == URL


async def test_a_rejection_costs_microseconds() -> None:
    clock = FakeClock()
    transport = breaker(Script([503]), clock)
    request = httpx.Request("GET", URL)
    for _ in range(4):
        await transport.handle_async_request(request)
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        with pytest.raises(CircuitOpenError):
            await transport.handle_async_request(request)
        timings.append(time.perf_counter() - start)
    # About 5 µs here; a generous bound for slow CI machines.
    assert statistics.median(timings) < 100e-6


async def test_after_the_break_one_probe_goes_through_and_a_recovered_origin_closes_it() -> None:
    clock = FakeClock()
    arrived, release = anyio.Event(), anyio.Event()
    seen: list[str] = []

    async def origin(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/probe":
            arrived.set()
            await release.wait()
            return httpx.Response(200)
        return httpx.Response(200 if len(seen) > 5 else 500)

    transport = breaker(origin, clock)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        for _ in range(4):
            await client.get("/fail")
        assert transport.state(URL) is OPEN
        clock.now += SMALL.break_duration
        assert transport.state(URL) is HALF_OPEN
        rejected = []

        async def other() -> None:
            with pytest.raises(CircuitOpenError) as caught:
                await client.get("/other")
            rejected.append(caught.value)

        async with anyio.create_task_group() as group:
            group.start_soon(client.get, "/probe")
            await arrived.wait()
            for _ in range(5):
                group.start_soon(other)
            await anyio.wait_all_tasks_blocked()
            release.set()
        assert [str(e).split(":")[0] for e in rejected] == [
            "circuit breaker half-open for https"
        ] * 5
        assert {e.retry_in for e in rejected} == {0.0}
        assert transport.state(URL) is CLOSED
        assert (await client.get("/after")).status_code == 200
    assert seen == ["/fail"] * 4 + ["/probe", "/after"]


async def test_a_failed_probe_opens_the_circuit_for_another_break() -> None:
    script, clock = Script([503]), FakeClock()
    transport = breaker(script, clock)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            await client.get(URL)
        clock.now += 5
        assert (await client.get(URL)).status_code == 503  # the probe
        with pytest.raises(CircuitOpenError) as caught:
            await client.get(URL)
    assert caught.value.retry_in == pytest.approx(5)
    assert len(script.requests) == 5


async def test_circuits_are_per_origin() -> None:
    def origin(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.host == "down.example.com" else 200)

    transport = breaker(origin, FakeClock())
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            await client.get("https://down.example.com/")
            await client.get("https://up.example.com/")
        with pytest.raises(CircuitOpenError):
            await client.get("https://down.example.com/")
        assert (await client.get("https://up.example.com/")).status_code == 200
        # Another port or scheme is another origin.
        assert (await client.get("https://down.example.com:8443/")).status_code == 503
    assert transport.state("https://down.example.com/x") is OPEN
    assert transport.state(("https", "up.example.com", None)) is CLOSED
    assert transport.state(httpx.URL("http://never.example.com")) is CLOSED
    states = transport.states()
    assert {format_origin(o): s.state for o, s in states.items()} == {
        "https://down.example.com": OPEN,
        "https://up.example.com": CLOSED,
        "https://down.example.com:8443": CLOSED,
    }
    down = states[("https", "down.example.com", None)]
    assert (down.calls, down.failures, down.retry_in) == (4, 4, 5.0)


async def test_what_counts_as_failure_is_configurable() -> None:
    script = Script([404, 404, 404, 404, httpx.UnsupportedProtocol("x"), 200])
    transport = breaker(script, FakeClock())
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            await client.get(URL)
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get(URL)
    assert transport.state(URL) is CLOSED
    script = Script([404])
    policy = CircuitBreakerPolicy(min_calls=2, statuses={404}, exceptions=[])
    transport = breaker(script, FakeClock(), policy)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        await client.get(URL)
    assert transport.state(URL) is OPEN


async def test_transport_errors_count_and_pass_through_unchanged() -> None:
    script = Script([httpx.ConnectError("refused")])
    transport = breaker(script, FakeClock())
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            with pytest.raises(httpx.ConnectError, match="refused"):
                await client.get(URL)
        with pytest.raises(CircuitOpenError):
            await client.get(URL)


async def test_failed_responses_are_returned_unread() -> None:
    body = TrackedStream(b"busy")
    transport = breaker(lambda request: httpx.Response(503, stream=body), FakeClock())
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        assert response.status_code == 503
        assert not body.read
        assert await response.aread() == b"busy"


async def test_a_cancelled_probe_gives_its_slot_back() -> None:
    clock, hang = FakeClock(), anyio.Event()
    calls = 0

    async def origin(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 5:
            await hang.wait()  # the first probe never answers
        return httpx.Response(503 if calls <= 4 else 200)

    transport = breaker(origin, clock)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            await client.get(URL)
        clock.now += 5
        with anyio.move_on_after(0.01):
            await client.get(URL)
        assert transport.state(URL) is HALF_OPEN
        assert (await client.get(URL)).status_code == 200  # the next call probes
    assert transport.state(URL) is CLOSED


def retrying(
    transport: CircuitBreakerTransport, sleep: FakeSleep, **options: Any
) -> RetryTransport:
    """The retry layer around the breaker, as resilient_transport() stacks them."""
    policy = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(1), budget=None, **options)
    return RetryTransport(transport, policy, sleep=sleep)


async def open_circuit(transport: CircuitBreakerTransport, calls: int = 4) -> None:
    for _ in range(calls):
        await transport.handle_async_request(httpx.Request("GET", URL))


async def test_retry_layer_neither_waits_on_nor_retries_an_open_circuit() -> None:
    script, sleep = Script([503]), FakeSleep()
    transport = breaker(script, FakeClock())
    await open_circuit(transport)
    async with httpx.AsyncClient(transport=retrying(transport, sleep)) as client:
        with pytest.raises(CircuitOpenError):
            await client.get(URL)
    assert sleep.calls == []
    assert len(script.requests) == 4


async def test_circuit_open_error_is_not_retried_even_when_transport_errors_are() -> None:
    script, sleep = Script([503]), FakeSleep()
    transport = breaker(script, FakeClock())
    await open_circuit(transport)
    retry = retrying(transport, sleep, exceptions=(httpx.TransportError,))
    async with httpx.AsyncClient(transport=retry) as client:
        with pytest.raises(CircuitOpenError):
            await client.get(URL)
    assert sleep.calls == []


async def test_retry_layer_does_not_wait_for_a_circuit_its_failure_just_opened() -> None:
    script, sleep = Script([503]), FakeSleep()
    transport = breaker(script, FakeClock())
    await open_circuit(transport, calls=3)
    async with httpx.AsyncClient(transport=retrying(transport, sleep)) as client:
        response = await client.get(URL)  # the 4th failure opens the circuit
    # The retry would meet the open circuit after its 1 s wait: the 503 comes back now.
    assert response.status_code == 503
    assert sleep.calls == []
    assert response.extensions["retry"].attempts == 1


async def test_a_failed_call_leaves_the_breaker_for_the_retry_layer_to_ask() -> None:
    clock, hang, status = FakeClock(), anyio.Event(), [200]

    async def origin(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/hang":
            await hang.wait()
        return httpx.Response(status[0])

    transport = breaker(origin, clock)
    ok, failed = httpx.Request("GET", URL), httpx.Request("GET", URL)
    await transport.handle_async_request(ok)
    assert CIRCUIT_EXTENSION not in ok.extensions  # nothing on the happy path
    status[0] = 503
    await transport.handle_async_request(failed)
    assert failed.extensions[CIRCUIT_EXTENSION] is transport
    assert transport.retry_in(URL) == 0.0
    await open_circuit(transport, calls=2)  # 3 failures in 4 calls
    clock.now += 1
    assert transport.retry_in(URL) == pytest.approx(4.0)
    assert transport.retry_in("https://elsewhere.example.com") == 0.0
    clock.now += 4
    assert transport.retry_in(URL) == 0.0  # the break is over: a probe may go
    status[0] = 200
    async with anyio.create_task_group() as group:
        group.start_soon(transport.handle_async_request, httpx.Request("GET", f"{BASE}/hang"))
        await anyio.wait_all_tasks_blocked()
        # While the only probe is out, the wait is unknown: at most another break.
        assert transport.retry_in(URL) == SMALL.break_duration
        hang.set()
    assert transport.state(URL) is CLOSED


async def test_state_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    script = Script([503, 503, 503, 503, 200])
    transport = breaker(script, clock)
    with caplog.at_level(logging.INFO, logger="httpx_resilience"):
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(4):
                await client.get(URL)
            clock.now += 5
            await client.get(URL)
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert records == [
        (
            "WARNING",
            "circuit breaker opened for https://api.example.com: 4 of the last 4 calls "
            "failed; failing calls fast for 5.0 s",
        ),
        ("INFO", "circuit breaker half-open for https://api.example.com: probing"),
        ("INFO", "circuit breaker closed for https://api.example.com: a probe succeeded"),
    ]
    assert caplog.records[0].__dict__["circuit_state"] == "open"


@pytest.fixture
def metrics() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[Any, ...], int]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        tuple(sorted(point.attributes.items())): point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    }


async def test_state_changes_and_rejections_are_counted(
    metrics: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metrics
    clock = FakeClock()
    transport = breaker(Script([503]), clock, meter_provider=provider)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            await client.get(URL)
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                await client.get(URL)
        clock.now += 5
        await client.get(URL)  # a failed probe
    server = (("server.address", "api.example.com"), ("server.port", 443))
    assert points(reader, TRANSITIONS_METRIC) == {
        (("httpx_resilience.circuit.state", "half_open"), *server): 1,
        (("httpx_resilience.circuit.state", "open"), *server): 2,
    }
    assert points(reader, REJECTIONS_METRIC) == {server: 3}


async def test_the_least_recently_used_closed_circuit_is_forgotten_past_max_origins() -> None:
    transport = breaker(Script([200]), FakeClock(), max_origins=2)
    async with httpx.AsyncClient(transport=transport) as client:
        for host in ("a", "b", "a", "c"):
            await client.get(f"https://{host}.example.com/")
    # "b" was used least recently: "a" was used again after it.
    assert sorted(o[1] for o in transport.states()) == ["a.example.com", "c.example.com"]
    with pytest.raises(ValueError, match="max_origins"):
        CircuitBreakerTransport(httpx.MockTransport(Script([200])), max_origins=0)


def open_then_healthy(failing: str) -> Any:
    """503 from the ``failing`` host, 200 from every other."""

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.host == failing else 200)

    return reply


async def test_an_open_circuit_outlives_5000_other_origins() -> None:
    # Origins used to be forgotten in the order they came: past 1,024 others,
    # an open circuit was forgotten and the failing origin called again.
    script, clock = Script([open_then_healthy("down.example.com")]), FakeClock()
    transport = breaker(script, clock)
    for _ in range(4):
        await transport.handle_async_request(httpx.Request("GET", "https://down.example.com/"))
    assert transport.state("https://down.example.com") is OPEN
    for number in range(5000):
        request = httpx.Request("GET", f"https://host-{number}.example.com/")
        assert (await transport.handle_async_request(request)).status_code == 200
    with pytest.raises(CircuitOpenError):
        await transport.handle_async_request(httpx.Request("GET", "https://down.example.com/"))
    assert transport.state("https://down.example.com") is OPEN
    assert len(script.requests) == 4 + 5000
    # The closed circuits of the others were forgotten as they came.
    assert len(transport.states()) <= 1024


async def test_past_max_origins_open_circuits_are_kept_and_closed_ones_make_room() -> None:
    status = 503
    clock = FakeClock()
    transport = breaker(lambda request: httpx.Response(status), clock, max_origins=2)
    downs = [f"https://down-{number}.example.com/" for number in range(3)]
    for url in downs:
        for _ in range(4):
            await transport.handle_async_request(httpx.Request("GET", url))
    # Three open circuits, two allowed: the map grew rather than forget one.
    assert [transport.state(url) for url in downs] == [OPEN, OPEN, OPEN]
    status = 200
    clock.now += 5  # the breaks end; the probes succeed and close the circuits
    for url in downs:
        await transport.handle_async_request(httpx.Request("GET", url))
    assert [transport.state(url) for url in downs] == [CLOSED, CLOSED, CLOSED]
    await transport.handle_async_request(httpx.Request("GET", "https://new.example.com/"))
    assert len(transport.states()) == 2


# --- the clock ----------------------------------------------------------------------


async def test_a_clock_that_jumps_back_900_s_still_ends_the_break_after_its_10_s() -> None:
    policy = CircuitBreakerPolicy(min_calls=4, window=10, break_duration=10)
    script, clock = Script([503, 503, 503, 503, 200]), FakeClock()
    transport = breaker(script, clock, policy)
    for _ in range(4):
        await transport.handle_async_request(httpx.Request("GET", URL))
    assert transport.state(URL) is OPEN  # at 1000 s, until 1010 s
    clock.now -= 900  # the clock steps back: no time passed
    assert transport.retry_in(URL) == pytest.approx(10)
    clock.now += 9.5
    with pytest.raises(CircuitOpenError) as caught:
        await transport.handle_async_request(httpx.Request("GET", URL))
    assert caught.value.retry_in == pytest.approx(0.5)
    clock.now += 0.5  # 10 s of the clock's steps: the break is over
    assert transport.state(URL) is HALF_OPEN
    response = await transport.handle_async_request(httpx.Request("GET", URL))
    assert response.status_code == 200
    assert transport.state(URL) is CLOSED
    assert len(script.requests) == 5


def test_circuit_counts_steps_of_the_clock_not_its_readings() -> None:
    circuit = Circuit(ORIGIN, SMALL)
    for now in (100.0, 100.1, 100.2, 100.3):
        circuit.record(circuit.acquire(now), failed=True, now=now)
    assert circuit.state is OPEN  # at 100.3, for 5 s
    assert circuit.break_left(50.0) == pytest.approx(5)  # a step back: nothing passed
    assert circuit.state_at(54.9) is OPEN
    assert circuit.state_at(float("nan")) is OPEN
    assert circuit.state_at(float("inf")) is OPEN
    assert circuit.snapshot(54.9).retry_in == pytest.approx(0.1)
    assert circuit.acquire(55.0) is not None  # 5 s of steps after the step back


async def test_a_nan_from_the_clock_never_fails_a_response() -> None:
    # NaN used to reach int() when the outcome was counted, after the response.
    script = Script([503, 200])
    transport = CircuitBreakerTransport(
        httpx.MockTransport(script), SMALL, clock=lambda: float("nan")
    )
    async with httpx.AsyncClient(transport=transport) as client:
        statuses = [(await client.get(URL)).status_code for _ in range(6)]
    assert statuses == [503, 200, 200, 200, 200, 200]
    assert transport.state(URL) is CLOSED
    [snapshot] = transport.states().values()
    assert (snapshot.calls, snapshot.failures) == (6, 1)


# --- against the fault server -----------------------------------------------------


async def test_fault_server_dead_origin_is_cut_off_then_probed_back() -> None:
    # 503 four times, then healthy for good.
    plan = FaultPlan(routes={"/api": InOrder(*[Respond(503)] * 4, Respond(200))})
    clock = FakeClock()
    async with FaultServer(plan, tls=False) as server:
        transport = CircuitBreakerTransport(httpx.AsyncHTTPTransport(), SMALL, clock=clock)
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            for _ in range(4):
                assert (await client.get("/api")).status_code == 503
            start = time.perf_counter()
            for _ in range(50):
                with pytest.raises(CircuitOpenError):
                    await client.get("/api")
            elapsed = time.perf_counter() - start
            assert len(server.received) == 4  # none of the 50 reached the server
            clock.now += SMALL.break_duration
            assert (await client.get("/api")).status_code == 200  # the one probe
            assert transport.state(server.url) is CLOSED
            for _ in range(5):
                assert (await client.get("/api")).status_code == 200
        assert len(server.received) == 4 + 1 + 5
    # Through the whole client (about 80 µs of httpx itself per request).
    assert elapsed / 50 < 1e-3
