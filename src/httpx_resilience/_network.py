"""Network backends that resolve names themselves, so DNS is timed apart from TCP and TLS."""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import httpcore
import sniffio

from . import _checks, _otel, _semconv
from ._clock import seconds
from ._dns import (
    DNS_LOOKUP_DURATION,
    DNS_QUESTION_NAME,
    HAPPY_EYEBALLS_DELAY,
    DNSCache,
    Resolver,
    SyncResolver,
    attempt_order,
    default_resolver,
    default_sync_resolver,
    dns_error_type,
    is_ip_address,
    some_addresses,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

Clock = Callable[[], float]

#: ``get_extra_info`` key under which a ``TimedStream`` gives itself.
TIMED_STREAM = "httpx_resilience.timed_stream"


class _Lookups:
    """What the async and sync backends share: the resolver's settings and its metric."""

    def __init__(
        self,
        *,
        dns_cache: DNSCache | None,
        happy_eyeballs_delay: float,
        meter_provider: MeterProvider | None,
        clock: Clock,
    ) -> None:
        self._cache = dns_cache
        self._delay = _checks.number("happy_eyeballs_delay", happy_eyeballs_delay)
        self._clock = clock
        meter = _otel.get_meter(meter_provider)
        self._dns_duration = (
            None
            if meter is None
            else meter.create_histogram(
                DNS_LOOKUP_DURATION,
                unit="s",
                description="Measures the time taken to perform a DNS lookup.",
                explicit_bucket_boundaries_advisory=_otel.DURATION_BUCKETS,
            )
        )

    @property
    def dns_cache(self) -> DNSCache | None:
        return self._cache

    def _record_lookup(self, host: str, start: float, error_type: str | None) -> None:
        if self._dns_duration is None:  # pragma: no cover - without OpenTelemetry
            return
        attributes = {DNS_QUESTION_NAME: host}
        if error_type is not None:
            attributes[_semconv.ERROR_TYPE] = error_type
        self._dns_duration.record(seconds(self._clock() - start), attributes)

    def _lookup_failed(self, host: str, start: float, exc: Exception) -> Exception:
        """The httpcore error a failed resolver call is raised as, recorded."""
        if isinstance(exc, TimeoutError):
            self._record_lookup(host, start, "timeout")
            return httpcore.ConnectTimeout(f"DNS lookup of {host!r} timed out")
        if isinstance(exc, OSError):
            self._record_lookup(host, start, dns_error_type(exc))
            return httpcore.ConnectError(str(exc))
        return exc


# unasync: begin
class TimedStream(httpcore.AsyncNetworkStream):
    """A new connection's stream, carrying how long DNS, TCP connect and TLS took.

    Forwards everything to the stream it wraps. ``start_tls`` returns the
    inner backend's TLS stream itself, so an HTTPS connection pays nothing
    for the wrapper once the handshake is done.
    """

    __slots__ = ("_clock", "_stream", "connect", "dns", "tls")

    def __init__(
        self,
        stream: httpcore.AsyncNetworkStream,
        *,
        dns: float | None,
        connect: float,
        clock: Clock,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self.dns = dns
        self.connect = connect
        self.tls: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # httpcore passes the URL's host name (or the sni_hostname extension)
        # even though we connected to an IP address: SNI and the certificate
        # check stay on the name.
        start = self._clock()
        try:
            return await self._stream.start_tls(ssl_context, server_hostname, timeout)
        finally:
            self.tls = self._clock() - start

    def get_extra_info(self, info: str) -> Any:
        # Found through any stream wrapped around this one (the GOAWAY guard).
        if info == TIMED_STREAM:
            return self
        return self._stream.get_extra_info(info)


class TimedNetworkBackend(_Lookups, httpcore.AsyncNetworkBackend):
    """An httpcore network backend that looks names up itself, then connects by address.

    >>> pool = httpcore.AsyncConnectionPool(network_backend=TimedNetworkBackend())

    The inner ``backend`` (default: httpcore's own for the running event loop)
    connects to the addresses the ``resolver`` gives, families interleaved;
    the connect timeout covers the lookup and all attempts. Streams come back
    as ``TimedStream`` with their ``dns`` and ``connect`` durations. A failed
    lookup raises ``httpcore.ConnectError``, one past the timeout
    ``httpcore.ConnectTimeout``, as httpcore's own backends do. With
    OpenTelemetry, every resolver call is recorded in the
    ``dns.lookup.duration`` histogram (answers from ``dns_cache`` are not).

    Async clients race the addresses (Happy Eyeballs, RFC 8305: a new attempt
    every ``happy_eyeballs_delay`` seconds or as soon as the previous one
    fails); sync clients try them in turn.
    """

    def __init__(
        self,
        backend: httpcore.AsyncNetworkBackend | None = None,
        *,
        resolver: Resolver = default_resolver,
        dns_cache: DNSCache | None = None,
        happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY,
        meter_provider: MeterProvider | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__(
            dns_cache=dns_cache,
            happy_eyeballs_delay=happy_eyeballs_delay,
            meter_provider=meter_provider,
            clock=clock,
        )
        self._backend = backend
        self._resolver = resolver

    @property
    def backend(self) -> httpcore.AsyncNetworkBackend:
        """The backend that connects: given, or httpcore's own for the running event loop."""
        if self._backend is None:
            self._backend = _async_default_backend()
        return self._backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        start = self._clock()
        if is_ip_address(host):
            addresses: Sequence[str] = (host,)
            dns = None
        else:
            addresses = await _async_resolve(self, host, deadline)
            dns = self._clock() - start
        connecting = self._clock()
        addresses = attempt_order(addresses, local_address)
        if len(addresses) == 1:
            stream = await self._async_connect_one(
                addresses[0], port, deadline, local_address, socket_options
            )
        else:
            stream = await _async_connect_any(
                self, host, addresses, port, deadline, local_address, socket_options
            )
        return TimedStream(stream, dns=dns, connect=self._clock() - connecting, clock=self._clock)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        start = self._clock()
        stream = await self.backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return TimedStream(stream, dns=None, connect=self._clock() - start, clock=self._clock)

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)

    async def _async_connect_one(
        self,
        address: str,
        port: int,
        deadline: float,
        local_address: str | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = None
        if deadline != math.inf:
            timeout = deadline - anyio.current_time()
            if timeout <= 0:
                raise httpcore.ConnectTimeout(f"no time left to connect to {address}")
        return await self.backend.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
class SyncTimedStream(httpcore.NetworkStream):
    """A new connection's stream, carrying how long DNS, TCP connect and TLS took.

    Forwards everything to the stream it wraps. ``start_tls`` returns the
    inner backend's TLS stream itself, so an HTTPS connection pays nothing
    for the wrapper once the handshake is done.
    """

    __slots__ = ("_clock", "_stream", "connect", "dns", "tls")

    def __init__(
        self,
        stream: httpcore.NetworkStream,
        *,
        dns: float | None,
        connect: float,
        clock: Clock,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self.dns = dns
        self.connect = connect
        self.tls: float | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # httpcore passes the URL's host name (or the sni_hostname extension)
        # even though we connected to an IP address: SNI and the certificate
        # check stay on the name.
        start = self._clock()
        try:
            return self._stream.start_tls(ssl_context, server_hostname, timeout)
        finally:
            self.tls = self._clock() - start

    def get_extra_info(self, info: str) -> Any:
        # Found through any stream wrapped around this one (the GOAWAY guard).
        if info == TIMED_STREAM:
            return self
        return self._stream.get_extra_info(info)


class SyncTimedNetworkBackend(_Lookups, httpcore.NetworkBackend):
    """An httpcore network backend that looks names up itself, then connects by address.

    >>> pool = httpcore.ConnectionPool(network_backend=SyncTimedNetworkBackend())

    The inner ``backend`` (default: httpcore's own for the running event loop)
    connects to the addresses the ``resolver`` gives, families interleaved;
    the connect timeout covers the lookup and all attempts. Streams come back
    as ``SyncTimedStream`` with their ``dns`` and ``connect`` durations. A failed
    lookup raises ``httpcore.ConnectError``, one past the timeout
    ``httpcore.ConnectTimeout``, as httpcore's own backends do. With
    OpenTelemetry, every resolver call is recorded in the
    ``dns.lookup.duration`` histogram (answers from ``dns_cache`` are not).

    Async clients race the addresses (Happy Eyeballs, RFC 8305: a new attempt
    every ``happy_eyeballs_delay`` seconds or as soon as the previous one
    fails); sync clients try them in turn.
    """

    def __init__(
        self,
        backend: httpcore.NetworkBackend | None = None,
        *,
        resolver: SyncResolver = default_sync_resolver,
        dns_cache: DNSCache | None = None,
        happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY,
        meter_provider: MeterProvider | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__(
            dns_cache=dns_cache,
            happy_eyeballs_delay=happy_eyeballs_delay,
            meter_provider=meter_provider,
            clock=clock,
        )
        self._backend = backend
        self._resolver = resolver

    @property
    def backend(self) -> httpcore.NetworkBackend:
        """The backend that connects: given, or httpcore's own for the running event loop."""
        if self._backend is None:
            self._backend = _default_backend()
        return self._backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        start = self._clock()
        if is_ip_address(host):
            addresses: Sequence[str] = (host,)
            dns = None
        else:
            addresses = _resolve(self, host, deadline)
            dns = self._clock() - start
        connecting = self._clock()
        addresses = attempt_order(addresses, local_address)
        if len(addresses) == 1:
            stream = self._connect_one(addresses[0], port, deadline, local_address, socket_options)
        else:
            stream = _connect_any(
                self, host, addresses, port, deadline, local_address, socket_options
            )
        return SyncTimedStream(
            stream, dns=dns, connect=self._clock() - connecting, clock=self._clock
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        start = self._clock()
        stream = self.backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return SyncTimedStream(stream, dns=None, connect=self._clock() - start, clock=self._clock)

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)

    def _connect_one(
        self,
        address: str,
        port: int,
        deadline: float,
        local_address: str | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.NetworkStream:
        timeout = None
        if deadline != math.inf:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise httpcore.ConnectTimeout(f"no time left to connect to {address}")
        return self.backend.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )


# unasync: generated end

# Where the async and sync backends differ: how the backend is chosen, how a
# lookup is bounded by the connect timeout, and how several addresses are tried.


def _async_default_backend() -> httpcore.AsyncNetworkBackend:
    # What httpcore's (private) AutoBackend does: its trio backend under trio,
    # its anyio one otherwise; chosen once, on first use.
    if sniffio.current_async_library() == "trio":
        return httpcore.TrioBackend()
    return httpcore.AnyIOBackend()


def _default_backend() -> httpcore.NetworkBackend:
    return httpcore.SyncBackend()


async def _async_resolve(
    backend: TimedNetworkBackend, host: str, deadline: float
) -> Sequence[str]:
    """The addresses of ``host``, looked up (or cached) within the connect timeout."""
    with anyio.CancelScope(deadline=deadline) as scope:

        async def lookup() -> Sequence[str]:
            start = backend._clock()
            try:
                addresses = some_addresses(await backend._resolver(host))
            except anyio.get_cancelled_exc_class():
                # Cancelled by the connect deadline is a DNS timeout; by
                # anything else, the caller has gone and there is nothing to report.
                if scope.cancel_called:
                    backend._record_lookup(host, start, "timeout")
                raise
            except Exception as exc:
                failure = backend._lookup_failed(host, start, exc)
                if failure is exc:
                    raise
                raise failure from exc
            backend._record_lookup(host, start, None)
            return addresses

        cache = backend.dns_cache
        return await (lookup() if cache is None else cache.resolve(host, lookup))
    # Only the deadline leaves the block without a return.
    raise httpcore.ConnectTimeout(f"DNS lookup of {host!r} timed out")


def _resolve(backend: SyncTimedNetworkBackend, host: str, deadline: float) -> Sequence[str]:
    """The addresses of ``host``, looked up (or cached); getaddrinfo has no timeout."""

    def lookup() -> Sequence[str]:
        start = backend._clock()
        try:
            addresses = some_addresses(backend._resolver(host))
        except Exception as exc:
            failure = backend._lookup_failed(host, start, exc)
            if failure is exc:
                raise
            raise failure from exc
        backend._record_lookup(host, start, None)
        return addresses

    cache = backend.dns_cache
    return lookup() if cache is None else cache.resolve_sync(host, lookup)


async def _async_connect_any(
    backend: TimedNetworkBackend,
    host: str,
    addresses: Sequence[str],
    port: int,
    deadline: float,
    local_address: str | None,
    socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> httpcore.AsyncNetworkStream:
    """Happy Eyeballs: staggered attempts, the first to connect wins."""
    winner: httpcore.AsyncNetworkStream | None = None
    errors: list[tuple[str, Exception]] = []

    async def attempt(address: str, failed: anyio.Event) -> None:
        nonlocal winner
        try:
            stream = await backend._async_connect_one(
                address, port, deadline, local_address, socket_options
            )
        except Exception as exc:
            errors.append((address, exc))
            failed.set()
            return
        if winner is None:
            winner = stream
            tg.cancel_scope.cancel()
        else:  # connected at the same moment as the winner
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    try:
        async with anyio.create_task_group() as tg:
            for address in addresses:
                failed = anyio.Event()
                tg.start_soon(attempt, address, failed)
                with anyio.move_on_after(backend._delay):
                    await failed.wait()
    except BaseException:
        if winner is not None:
            with anyio.CancelScope(shield=True):
                await winner.aclose()
        raise
    if winner is not None:
        return winner
    raise _none_connected(host, port, errors)


def _connect_any(
    backend: SyncTimedNetworkBackend,
    host: str,
    addresses: Sequence[str],
    port: int,
    deadline: float,
    local_address: str | None,
    socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> httpcore.NetworkStream:
    """Each address in turn until one connects (a sync client cannot race them)."""
    errors: list[tuple[str, Exception]] = []
    for address in addresses:
        try:
            return backend._connect_one(address, port, deadline, local_address, socket_options)
        except httpcore.ConnectTimeout as exc:  # noqa: PERF203 - a connect costs far more
            errors.append((address, exc))
            if deadline != math.inf and time.monotonic() >= deadline:
                break
        except Exception as exc:
            errors.append((address, exc))
    raise _none_connected(host, port, errors)


def _none_connected(host: str, port: int, errors: list[tuple[str, Exception]]) -> Exception:
    summary = "; ".join(f"{address}: {exc}" for address, exc in errors)
    message = f"could not connect to {host!r} port {port} ({summary})"
    first = errors[0][1]
    error: Exception
    if any(isinstance(exc, httpcore.ConnectTimeout) for _, exc in errors):
        error = httpcore.ConnectTimeout(message)
    else:
        error = httpcore.ConnectError(message)
    error.__cause__ = first
    return error
