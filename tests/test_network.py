"""TimedNetworkBackend and DNSCache: lookups, Happy Eyeballs, timing, over fakes.

No test here touches the network: the fake backend connects to nothing, so
the addresses the fake resolvers answer with are never dialled.
"""

from __future__ import annotations

import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from .flavour import DNSCache, TimedNetworkBackend, default_resolver, httpcore
from .flavour._network import TimedStream

pytestmark = pytest.mark.anyio

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Answer = Sequence[str] | BaseException


class FakeResolver:
    """Answers from a table (an answer may be an exception to raise) and counts calls.

    ``delay`` is real time (``math.inf`` hangs); ``cost`` moves a fake clock.
    """

    def __init__(
        self,
        answers: Mapping[str, Answer],
        *,
        delay: float = 0.0,
        clock: FakeClock | None = None,
        cost: float = 0.0,
    ) -> None:
        self.answers = answers
        self.delay = delay
        self.clock = clock
        self.cost = cost
        self.calls: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.calls.append(host)
        if self.delay == math.inf:
            await anyio.sleep_forever()
        elif self.delay:
            await anyio.sleep(self.delay)
        if self.clock is not None:
            self.clock.advance(self.cost)
        answer = self.answers[host]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeStream(httpcore.AsyncNetworkStream):
    """A connection that answers every read with one canned HTTP/1.1 response."""

    def __init__(
        self,
        address: str,
        port: int,
        *,
        clock: FakeClock | None = None,
        tls_cost: float = 0.0,
        read_cost: float = 0.0,
        tls_error: Exception | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self.clock = clock
        self.tls_cost = tls_cost
        self.read_cost = read_cost
        self.tls_error = tls_error
        self.server_hostname: str | None = None
        self.written = bytearray()
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.clock is not None:
            self.clock.advance(self.read_cost)
        return RESPONSE

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written += buffer

    async def aclose(self) -> None:
        self.closed = True

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.server_hostname = server_hostname
        if self.clock is not None:
            self.clock.advance(self.tls_cost)
        if self.tls_error is not None:
            raise self.tls_error
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "server_addr":
            return (self.address, self.port)
        return None


class FakeBackend(httpcore.AsyncNetworkBackend):
    """Connects to nothing; each address refuses, hangs, or "connects" as scripted.

    An outcome is ``"ok"`` (the default), ``"refuse"``, ``"hang"`` (until the
    timeout, then ``ConnectTimeout``) or an async function awaited before
    "connecting".
    """

    def __init__(
        self,
        outcomes: Mapping[str, str | Callable[[], Awaitable[None]]] | None = None,
        *,
        clock: FakeClock | None = None,
        connect_cost: float = 0.0,
        tls_cost: float = 0.0,
        read_cost: float = 0.0,
        tls_error: Exception | None = None,
    ) -> None:
        self.outcomes = outcomes or {}
        self.clock = clock
        self.connect_cost = connect_cost
        self.stream_options: dict[str, Any] = {
            "clock": clock,
            "tls_cost": tls_cost,
            "read_cost": read_cost,
            "tls_error": tls_error,
        }
        self.attempts: list[str] = []
        self.timeouts: list[float | None] = []
        self.local_addresses: list[str | None] = []
        self.cancelled: list[str] = []
        self.streams: list[FakeStream] = []
        self.unix_paths: list[str] = []
        self.sleeps: list[float] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append(host)
        self.timeouts.append(timeout)
        self.local_addresses.append(local_address)
        outcome = self.outcomes.get(host, "ok")
        if outcome == "refuse":
            raise httpcore.ConnectError(f"[Errno 111] Connection refused ({host})")
        if outcome == "hang":
            try:
                with anyio.fail_after(timeout):
                    await anyio.sleep_forever()
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"timed out ({host})") from exc
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(host)
                raise
        if callable(outcome):
            await outcome()
        return self._connected(host, port)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.unix_paths.append(path)
        return self._connected(path, 0)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def _connected(self, address: str, port: int) -> FakeStream:
        if self.clock is not None:
            self.clock.advance(self.connect_cost)
        stream = FakeStream(address, port, **self.stream_options)
        self.streams.append(stream)
        return stream


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """The data points of one metric, collected now."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


@pytest.fixture
def metric_reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider, reader
    provider.shutdown()


# --- lookups and timing ------------------------------------------------------


async def test_resolves_then_connects_by_address_and_times_both() -> None:
    clock = FakeClock()
    resolver = FakeResolver({"api.test": ["192.0.2.7"]}, clock=clock, cost=0.2)
    inner = FakeBackend(clock=clock, connect_cost=0.03)
    backend = TimedNetworkBackend(inner, resolver=resolver, clock=clock)

    stream = await backend.connect_tcp("api.test", 443, timeout=5.0)

    assert resolver.calls == ["api.test"]
    assert inner.attempts == ["192.0.2.7"]
    assert isinstance(stream, TimedStream)
    assert stream.dns == pytest.approx(0.2)
    assert stream.connect == pytest.approx(0.03)
    assert stream.tls is None
    assert stream.get_extra_info("server_addr") == ("192.0.2.7", 443)


async def test_ip_address_is_not_looked_up() -> None:
    resolver = FakeResolver({})
    inner = FakeBackend()
    backend = TimedNetworkBackend(inner, resolver=resolver)

    for host in ("192.0.2.1", "2001:db8::1"):
        stream = await backend.connect_tcp(host, 80)
        assert isinstance(stream, TimedStream)
        assert stream.dns is None

    assert resolver.calls == []
    assert inner.attempts == ["192.0.2.1", "2001:db8::1"]
    assert inner.timeouts == [None, None]


async def test_start_tls_keeps_the_host_name_and_is_timed() -> None:
    clock = FakeClock()
    inner = FakeBackend(clock=clock, tls_cost=0.04)
    backend = TimedNetworkBackend(
        inner, resolver=FakeResolver({"api.test": ["192.0.2.7"]}), clock=clock
    )
    stream = await backend.connect_tcp("api.test", 443)
    assert isinstance(stream, TimedStream)

    tls_stream = await stream.start_tls(ssl.create_default_context(), "api.test", 1.0)

    assert inner.streams[0].server_hostname == "api.test"
    assert stream.tls == pytest.approx(0.04)
    # Past the handshake, reads and writes go straight to the inner stream.
    assert tls_stream is inner.streams[0]


async def test_failed_handshake_is_timed_and_raised() -> None:
    clock = FakeClock()
    inner = FakeBackend(clock=clock, tls_cost=0.01, tls_error=httpcore.ConnectError("bad cert"))
    backend = TimedNetworkBackend(inner, resolver=FakeResolver({}), clock=clock)
    stream = await backend.connect_tcp("192.0.2.7", 443)
    assert isinstance(stream, TimedStream)

    with pytest.raises(httpcore.ConnectError, match="bad cert"):
        await stream.start_tls(ssl.create_default_context(), "api.test")
    assert stream.tls == pytest.approx(0.01)


async def test_stream_forwards_reads_writes_and_close() -> None:
    inner = FakeBackend()
    backend = TimedNetworkBackend(inner)
    stream = await backend.connect_tcp("192.0.2.7", 80)

    await stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await stream.read(65536) == RESPONSE
    await stream.aclose()

    assert inner.streams[0].written == b"GET / HTTP/1.1\r\n\r\n"
    assert inner.streams[0].closed
    assert stream.get_extra_info("ssl_object") is None


async def test_unix_socket_and_sleep_are_forwarded() -> None:
    clock = FakeClock()
    inner = FakeBackend(clock=clock, connect_cost=0.002)
    backend = TimedNetworkBackend(inner, clock=clock)

    stream = await backend.connect_unix_socket("/run/api.sock", timeout=1.0)
    await backend.sleep(0.5)

    assert inner.unix_paths == ["/run/api.sock"]
    assert isinstance(stream, TimedStream)
    assert stream.dns is None
    assert stream.connect == pytest.approx(0.002)
    assert inner.sleeps == [0.5]


async def test_default_backend_is_httpcores_own_for_the_running_loop(anyio_backend: str) -> None:
    expected = httpcore.TrioBackend if anyio_backend == "trio" else httpcore.AnyIOBackend
    assert isinstance(TimedNetworkBackend().backend, expected)


async def test_default_resolver_reads_the_hosts_file() -> None:
    # "localhost" comes from /etc/hosts: no DNS server is asked.
    assert "127.0.0.1" in await default_resolver("localhost")


# --- failures -----------------------------------------------------------------


async def test_unknown_name_is_a_connect_error_and_recorded(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    backend = TimedNetworkBackend(
        FakeBackend(), resolver=FakeResolver({"nope.test": error}), meter_provider=provider
    )

    with pytest.raises(httpcore.ConnectError, match="Name or service not known") as caught:
        await backend.connect_tcp("nope.test", 80)

    assert caught.value.__cause__ is error
    [point] = metric_points(reader, "dns.lookup.duration")
    assert point.attributes == {"dns.question.name": "nope.test", "error.type": "EAI_NONAME"}


async def test_lookup_error_without_a_known_code_is_named_by_class(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    resolver = FakeResolver({"api.test": socket.gaierror(-12345, "odd resolver")})
    backend = TimedNetworkBackend(FakeBackend(), resolver=resolver, meter_provider=provider)

    with pytest.raises(httpcore.ConnectError, match="odd resolver"):
        await backend.connect_tcp("api.test", 80)

    [point] = metric_points(reader, "dns.lookup.duration")
    assert point.attributes["error.type"] == "gaierror"


async def test_empty_answer_is_a_connect_error() -> None:
    backend = TimedNetworkBackend(FakeBackend(), resolver=FakeResolver({"empty.test": []}))
    with pytest.raises(httpcore.ConnectError, match="no addresses"):
        await backend.connect_tcp("empty.test", 80)


async def test_other_resolver_errors_are_connect_errors_named_by_class(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    resolver = FakeResolver({"api.test": ConnectionResetError("DNS server hung up")})
    backend = TimedNetworkBackend(FakeBackend(), resolver=resolver, meter_provider=provider)

    with pytest.raises(httpcore.ConnectError, match="hung up"):
        await backend.connect_tcp("api.test", 80)

    [point] = metric_points(reader, "dns.lookup.duration")
    assert point.attributes["error.type"] == "ConnectionResetError"


async def test_lookup_past_the_connect_timeout_is_a_connect_timeout(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    inner = FakeBackend()
    resolver = FakeResolver({"slow.test": ["192.0.2.7"]}, delay=math.inf)
    backend = TimedNetworkBackend(inner, resolver=resolver, meter_provider=provider)

    with anyio.fail_after(2):
        with pytest.raises(httpcore.ConnectTimeout, match=r"DNS lookup of 'slow\.test'"):
            await backend.connect_tcp("slow.test", 80, timeout=0.05)

    assert inner.attempts == []
    [point] = metric_points(reader, "dns.lookup.duration")
    assert point.attributes == {"dns.question.name": "slow.test", "error.type": "timeout"}
    assert point.sum >= 0.04


async def test_resolver_timing_out_by_itself_is_a_connect_timeout() -> None:
    resolver = FakeResolver({"api.test": TimeoutError()})
    backend = TimedNetworkBackend(FakeBackend(), resolver=resolver)
    with pytest.raises(httpcore.ConnectTimeout):
        await backend.connect_tcp("api.test", 80)


async def test_lookup_cancelled_by_the_caller_is_not_recorded(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    resolver = FakeResolver({"slow.test": ["192.0.2.7"]}, delay=math.inf)
    backend = TimedNetworkBackend(FakeBackend(), resolver=resolver, meter_provider=provider)

    with anyio.move_on_after(0.02):
        await backend.connect_tcp("slow.test", 80, timeout=10)

    assert resolver.calls == ["slow.test"]
    assert metric_points(reader, "dns.lookup.duration") == []


async def test_successful_lookup_is_recorded_with_its_name(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    clock = FakeClock()
    resolver = FakeResolver({"api.test": ["192.0.2.7"]}, clock=clock, cost=0.2)
    backend = TimedNetworkBackend(
        FakeBackend(), resolver=resolver, meter_provider=provider, clock=clock
    )

    await backend.connect_tcp("api.test", 80)

    [point] = metric_points(reader, "dns.lookup.duration")
    assert point.attributes == {"dns.question.name": "api.test"}
    assert (point.count, point.sum) == (1, pytest.approx(0.2))


# --- every address, Happy Eyeballs ------------------------------------------------


async def test_dead_address_first_then_the_live_one() -> None:
    inner = FakeBackend({"192.0.2.1": "refuse"})
    resolver = FakeResolver({"api.test": ["192.0.2.1", "192.0.2.2"]})
    backend = TimedNetworkBackend(inner, resolver=resolver)

    with anyio.fail_after(1):  # a refusal starts the next attempt at once
        stream = await backend.connect_tcp("api.test", 80, timeout=5)

    assert inner.attempts == ["192.0.2.1", "192.0.2.2"]
    assert stream.get_extra_info("server_addr") == ("192.0.2.2", 80)


async def test_silent_address_is_raced_after_the_attempt_delay() -> None:
    inner = FakeBackend({"2001:db8::1": "hang"})
    resolver = FakeResolver({"api.test": ["2001:db8::1", "192.0.2.2"]})
    backend = TimedNetworkBackend(inner, resolver=resolver, happy_eyeballs_delay=0.05)

    with anyio.fail_after(2):
        stream = await backend.connect_tcp("api.test", 80, timeout=30)

    assert stream.get_extra_info("server_addr") == ("192.0.2.2", 80)
    # The attempt still waiting is cancelled once another one has connected.
    assert inner.cancelled == ["2001:db8::1"]


async def test_families_alternate_starting_with_the_first_answer() -> None:
    addresses = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "192.0.2.1", "192.0.2.2"]
    inner = FakeBackend(dict.fromkeys(addresses, "refuse"))
    backend = TimedNetworkBackend(inner, resolver=FakeResolver({"api.test": addresses}))

    with pytest.raises(httpcore.ConnectError) as caught:
        await backend.connect_tcp("api.test", 80)

    assert inner.attempts == [
        "2001:db8::1",
        "192.0.2.1",
        "2001:db8::2",
        "192.0.2.2",
        "2001:db8::3",
    ]
    message = str(caught.value)
    assert message.startswith("could not connect to 'api.test' port 80")
    assert all(address in message for address in addresses)


async def test_local_address_keeps_its_own_family_only() -> None:
    inner = FakeBackend()
    resolver = FakeResolver({"api.test": ["2001:db8::1", "192.0.2.1"]})
    backend = TimedNetworkBackend(inner, resolver=resolver)

    await backend.connect_tcp("api.test", 80, local_address="127.0.0.1")

    assert inner.attempts == ["192.0.2.1"]
    assert inner.local_addresses == ["127.0.0.1"]


async def test_attempts_share_the_connect_timeout() -> None:
    inner = FakeBackend({"192.0.2.1": "hang", "192.0.2.2": "hang"})
    resolver = FakeResolver({"api.test": ["192.0.2.1", "192.0.2.2"]})
    backend = TimedNetworkBackend(inner, resolver=resolver, happy_eyeballs_delay=0.02)

    with anyio.fail_after(2):
        with pytest.raises(httpcore.ConnectTimeout) as caught:
            await backend.connect_tcp("api.test", 80, timeout=0.1)

    assert "192.0.2.1" in str(caught.value)
    assert "192.0.2.2" in str(caught.value)
    first, second = inner.timeouts
    assert first is not None
    assert second is not None
    assert first <= 0.1
    assert second < first  # started later, with what was left


async def test_no_time_left_is_a_connect_timeout_without_an_attempt() -> None:
    inner = FakeBackend()

    async def resolve_too_late(host: str) -> list[str]:
        # Answers after the deadline, deaf to the cancellation meant to stop it.
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.06)
        return ["192.0.2.1"]

    backend = TimedNetworkBackend(inner, resolver=resolve_too_late)

    with pytest.raises(httpcore.ConnectTimeout, match="no time left"):
        await backend.connect_tcp("api.test", 80, timeout=0.05)
    assert inner.attempts == []


async def test_a_connection_that_loses_the_race_is_closed() -> None:
    both_connected = anyio.Event()

    async def connect_late() -> None:
        # Finishes even though the winner cancels it: both attempts connect.
        with anyio.CancelScope(shield=True):
            await both_connected.wait()

    async def connect_now() -> None:
        both_connected.set()

    inner = FakeBackend({"192.0.2.1": connect_late, "192.0.2.2": connect_now})
    resolver = FakeResolver({"api.test": ["192.0.2.1", "192.0.2.2"]})
    backend = TimedNetworkBackend(inner, resolver=resolver, happy_eyeballs_delay=0.01)

    with anyio.fail_after(2):
        stream = await backend.connect_tcp("api.test", 80)

    assert stream.get_extra_info("server_addr") == ("192.0.2.2", 80)
    late = next(s for s in inner.streams if s.address == "192.0.2.1")
    assert late.closed


async def test_winner_is_closed_when_the_caller_is_cancelled_meanwhile() -> None:
    inner = FakeBackend({"192.0.2.1": "hang"})
    resolver = FakeResolver({"api.test": ["192.0.2.1", "192.0.2.2"]})
    backend = TimedNetworkBackend(inner, resolver=resolver, happy_eyeballs_delay=0.01)

    with anyio.CancelScope() as scope:
        original = inner._connected

        def connected_then_cancelled(address: str, port: int) -> FakeStream:
            scope.cancel()
            return original(address, port)

        inner._connected = connected_then_cancelled  # type: ignore[method-assign]
        await backend.connect_tcp("api.test", 80)

    assert scope.cancelled_caught
    assert [s.closed for s in inner.streams] == [True]


async def test_attempts_are_cancelled_with_the_caller() -> None:
    inner = FakeBackend({"192.0.2.1": "hang", "192.0.2.2": "hang"})
    resolver = FakeResolver({"api.test": ["192.0.2.1", "192.0.2.2"]})
    backend = TimedNetworkBackend(inner, resolver=resolver, happy_eyeballs_delay=0.01)

    with anyio.move_on_after(0.05) as scope:
        await backend.connect_tcp("api.test", 80)

    assert scope.cancelled_caught
    assert sorted(inner.cancelled) == ["192.0.2.1", "192.0.2.2"]


def test_invalid_attempt_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="happy_eyeballs_delay"):
        TimedNetworkBackend(happy_eyeballs_delay=-1)


# --- the DNS cache -------------------------------------------------------------


async def test_cache_answers_until_the_ttl_is_over() -> None:
    clock = FakeClock()
    resolver = FakeResolver({"api.test": ["192.0.2.7"]})
    cache = DNSCache(ttl=30, clock=clock)

    assert await cache.resolve("api.test", lambda: resolver("api.test")) == ("192.0.2.7",)
    clock.advance(29.9)
    assert await cache.resolve("api.test", lambda: resolver("api.test")) == ("192.0.2.7",)
    assert resolver.calls == ["api.test"]

    clock.advance(0.2)
    await cache.resolve("api.test", lambda: resolver("api.test"))
    assert resolver.calls == ["api.test", "api.test"]


async def test_cache_drops_the_least_recently_used_host() -> None:
    resolver = FakeResolver({name: ["192.0.2.7"] for name in ("a.test", "b.test", "c.test")})
    cache = DNSCache(ttl=60, max_size=2)

    async def resolve(host: str) -> None:
        await cache.resolve(host, lambda: resolver(host))

    for host in ("a.test", "b.test", "a.test", "c.test", "a.test", "b.test"):
        await resolve(host)

    # b.test was dropped for c.test (a.test had just been used), then looked up again.
    assert resolver.calls == ["a.test", "b.test", "c.test", "b.test"]
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0


async def test_concurrent_lookups_of_one_host_share_one_call() -> None:
    resolver = FakeResolver({"api.test": ["192.0.2.7"]}, delay=0.02)
    cache = DNSCache(ttl=60)
    answers: list[Sequence[str]] = []

    async def resolve() -> None:
        answers.append(await cache.resolve("api.test", lambda: resolver("api.test")))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(resolve)

    assert resolver.calls == ["api.test"]
    assert answers == [("192.0.2.7",)] * 50


async def test_failure_is_shared_by_waiters_but_not_cached() -> None:
    error = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    resolver = FakeResolver({"api.test": error}, delay=0.02)
    cache = DNSCache(ttl=60)
    errors: list[BaseException] = []

    async def resolve() -> None:
        try:
            await cache.resolve("api.test", lambda: resolver("api.test"))
        except socket.gaierror as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(resolve)
    assert resolver.calls == ["api.test"]
    assert errors == [error] * 5

    await resolve()
    assert len(resolver.calls) == 2


async def test_a_waiter_takes_over_a_lookup_its_caller_abandoned() -> None:
    resolver = FakeResolver({"api.test": ["192.0.2.7"]}, delay=0.05)
    cache = DNSCache(ttl=60)
    answers: list[Sequence[str]] = []

    async def impatient() -> None:
        with anyio.move_on_after(0.01):
            await cache.resolve("api.test", lambda: resolver("api.test"))

    async def patient() -> None:
        answers.append(await cache.resolve("api.test", lambda: resolver("api.test")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(impatient)
        await anyio.lowlevel.checkpoint()
        for _ in range(3):
            tg.start_soon(patient)

    assert resolver.calls == ["api.test", "api.test"]
    assert answers == [("192.0.2.7",)] * 3


@pytest.mark.parametrize(("ttl", "max_size"), [(0, 10), (-1, 10), (60, 0)])
def test_cache_settings_are_checked(ttl: float, max_size: int) -> None:
    with pytest.raises(ValueError, match=r"ttl|max_size"):
        DNSCache(ttl, max_size)


async def test_backend_with_cache_looks_up_once_and_records_real_lookups_only(
    metric_reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = metric_reader
    resolver = FakeResolver({"api.test": ["192.0.2.7"]}, delay=0.02)
    backend = TimedNetworkBackend(
        FakeBackend(), resolver=resolver, dns_cache=DNSCache(ttl=60), meter_provider=provider
    )
    streams: list[httpcore.AsyncNetworkStream] = []

    async def connect() -> None:
        streams.append(await backend.connect_tcp("api.test", 80, timeout=5))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(connect)
    await connect()  # answered from the cache

    assert resolver.calls == ["api.test"]
    assert len(streams) == 51
    [point] = metric_points(reader, "dns.lookup.duration")
    assert point.count == 1


async def test_waiters_for_a_lookup_keep_their_own_deadline() -> None:
    resolver = FakeResolver({"slow.test": ["192.0.2.7"]}, delay=math.inf)
    backend = TimedNetworkBackend(FakeBackend(), resolver=resolver, dns_cache=DNSCache(ttl=60))
    outcomes: list[str] = []

    async def connect(seconds: float) -> None:
        try:
            await backend.connect_tcp("slow.test", 80, timeout=seconds)
        except httpcore.ConnectTimeout:
            outcomes.append(f"timeout after {seconds}")

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(connect, 0.05)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(connect, 0.1)

    # The second waited for the first's lookup, then led its own until its deadline.
    assert outcomes == ["timeout after 0.05", "timeout after 0.1"]
    assert resolver.calls == ["slow.test", "slow.test"]
