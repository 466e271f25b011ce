"""A network backend that resolves names itself, so DNS is timed apart from TCP and TLS."""

from __future__ import annotations

import math
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpcore
import sniffio

from . import _checks, _otel, _semconv
from ._clock import SteadyClock, seconds

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

Clock = Callable[[], float]

#: RFC 8305's "Connection Attempt Delay", as anyio and trio use.
HAPPY_EYEBALLS_DELAY = 0.25

DNS_LOOKUP_DURATION = "dns.lookup.duration"
DNS_QUESTION_NAME = "dns.question.name"

# getaddrinfo's error codes by number: the DNS conventions' preferred error.type.
# dir() is sorted, so where two names share a number (EAI_NODATA, EAI_NONAME on
# some systems) the later one wins.
_EAI_NAMES = {
    getattr(socket, name): name
    for name in dir(socket)
    if name.startswith("EAI_") and isinstance(getattr(socket, name), int)
}


class Resolver(Protocol):
    """Turns a host name into IP addresses, best first.

    Any ``async`` function of one host name will do; raise
    ``socket.gaierror`` for a name that does not resolve.

    >>> async def resolve(host: str) -> list[str]:
    ...     if host == "api.internal":
    ...         return ["10.0.0.7", "10.0.0.8"]
    ...     return await default_resolver(host)
    >>> transport = HTTPTransport(resolver=resolve)
    """

    async def __call__(self, host: str, /) -> Sequence[str]: ...


async def default_resolver(host: str) -> list[str]:
    """The system's ``getaddrinfo`` (hosts file, then DNS) in a worker thread.

    >>> await default_resolver("localhost")  # doctest: +SKIP
    ['127.0.0.1']
    """
    infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


Lookup = Callable[[], Awaitable[Sequence[str]]]


class _Pending:
    """A lookup in flight, which concurrent requests for the same host wait for."""

    __slots__ = ("addresses", "done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.addresses: tuple[str, ...] | None = None
        self.error: Exception | None = None


class DNSCache:
    """Remembers resolved addresses for ``ttl`` seconds; one lookup per host at a time.

    >>> transport = HTTPTransport(dns_cache_ttl=60, dns_cache_size=1000)

    Holds at most ``max_size`` hosts, dropping the least recently used.
    Concurrent requests for a host that is being looked up wait for that
    lookup instead of starting their own. A failed lookup is not cached, but
    the requests that waited for it share its error; a lookup abandoned by
    its caller (cancelled, or past its connect timeout) is taken over by one
    of the waiters. ``getaddrinfo`` does not tell the record's own TTL, so
    every entry lives ``ttl`` seconds.
    """

    def __init__(self, ttl: float, max_size: int = 256, *, clock: Clock = time.monotonic) -> None:
        ttl = _checks.number("ttl", ttl, above_minimum=True)
        max_size = _checks.count("max_size", max_size, minimum=1)
        self.ttl = ttl
        self.max_size = max_size
        # A clock that steps back would keep entries past their TTL.
        self._clock = SteadyClock(clock)
        self._entries: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry (lookups in flight still complete)."""
        self._entries.clear()

    async def resolve(self, host: str, lookup: Lookup) -> Sequence[str]:
        """The cached addresses of ``host``, or those ``lookup()`` finds."""
        while True:
            entry = self._entries.get(host)
            if entry is not None:
                if entry[0] > self._clock():
                    self._entries.move_to_end(host)
                    return entry[1]
                del self._entries[host]
            pending = self._pending.get(host)
            if pending is None:
                break
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            if pending.addresses is not None:
                return pending.addresses
            # The lookup was abandoned: look again, one waiter leading.

        pending = self._pending[host] = _Pending()
        try:
            addresses = tuple(await lookup())
        except Exception as exc:
            pending.error = exc
            raise
        else:
            pending.addresses = addresses
            self._entries[host] = (self._clock() + self.ttl, addresses)
            self._entries.move_to_end(host)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
            return addresses
        finally:
            del self._pending[host]
            pending.done.set()


#: ``get_extra_info`` key under which a ``TimedStream`` gives itself.
TIMED_STREAM = "httpx_resilience.timed_stream"


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

    async def read(
        self,
        max_bytes: int,
        timeout: float | None = None,
    ) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(
        self,
        buffer: bytes,
        timeout: float | None = None,
    ) -> None:
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


class TimedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that looks names up itself, then connects by address.

    >>> pool = httpcore.AsyncConnectionPool(network_backend=TimedNetworkBackend())

    The inner ``backend`` (default: httpcore's trio backend under trio, its
    anyio one otherwise) connects to each address the ``resolver`` gives, families
    interleaved, a new attempt starting every ``happy_eyeballs_delay``
    seconds or as soon as the previous one fails (RFC 8305), until one
    connects. The connect timeout covers the lookup and all attempts.
    Streams come back as ``TimedStream`` with their ``dns`` and ``connect``
    durations. A failed lookup raises ``httpcore.ConnectError``, one past
    the timeout ``httpcore.ConnectTimeout``, as httpcore's own backends do.

    With OpenTelemetry, every resolver call is recorded in the
    ``dns.lookup.duration`` histogram (answers from ``dns_cache`` are not).
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
        happy_eyeballs_delay = _checks.number("happy_eyeballs_delay", happy_eyeballs_delay)
        self._backend = backend
        self._resolver = resolver
        self._cache = dns_cache
        self._delay = happy_eyeballs_delay
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

    @property
    def backend(self) -> httpcore.AsyncNetworkBackend:
        """The backend that connects: given, or httpcore's own for the running event loop."""
        if self._backend is None:
            # What httpcore's (private) AutoBackend does: its trio backend
            # under trio, its anyio one otherwise; chosen once, on first use.
            if sniffio.current_async_library() == "trio":
                self._backend = httpcore.TrioBackend()
            else:
                self._backend = httpcore.AnyIOBackend()
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
        if _is_ip_address(host):
            addresses: Sequence[str] = (host,)
            dns = None
        else:
            addresses = await self._resolve(host, deadline)
            dns = self._clock() - start
        connecting = self._clock()
        addresses = _attempt_order(addresses, local_address)
        if len(addresses) == 1:
            stream = await self._connect_one(
                addresses[0], port, deadline, local_address, socket_options
            )
        else:
            stream = await self._connect_any(
                host, addresses, port, deadline, local_address, socket_options
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

    async def _resolve(self, host: str, deadline: float) -> Sequence[str]:
        with anyio.CancelScope(deadline=deadline) as scope:
            if self._cache is None:
                return await self._lookup(host, scope)
            return await self._cache.resolve(host, lambda: self._lookup(host, scope))
        # Only the deadline leaves the block without a return.
        raise httpcore.ConnectTimeout(f"DNS lookup of {host!r} timed out")

    async def _lookup(self, host: str, scope: anyio.CancelScope) -> Sequence[str]:
        """One call of the resolver, recorded in ``dns.lookup.duration``."""
        start = self._clock()
        try:
            addresses = await self._resolver(host)
            if not addresses:
                raise socket.gaierror(socket.EAI_NONAME, "the resolver returned no addresses")
        except anyio.get_cancelled_exc_class():
            # Cancelled by the connect deadline is a DNS timeout; by anything
            # else, the caller has gone and there is nothing to report.
            if scope.cancel_called:
                self._record_lookup(host, start, "timeout")
            raise
        except TimeoutError as exc:
            self._record_lookup(host, start, "timeout")
            raise httpcore.ConnectTimeout(f"DNS lookup of {host!r} timed out") from exc
        except OSError as exc:
            self._record_lookup(host, start, _dns_error_type(exc))
            raise httpcore.ConnectError(str(exc)) from exc
        self._record_lookup(host, start, None)
        return addresses

    def _record_lookup(self, host: str, start: float, error_type: str | None) -> None:
        if self._dns_duration is None:  # pragma: no cover - without OpenTelemetry
            return
        attributes = {DNS_QUESTION_NAME: host}
        if error_type is not None:
            attributes[_semconv.ERROR_TYPE] = error_type
        self._dns_duration.record(seconds(self._clock() - start), attributes)

    async def _connect_one(
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

    async def _connect_any(
        self,
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
                stream = await self._connect_one(
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
                    with anyio.move_on_after(self._delay):
                        await failed.wait()
        except BaseException:
            if winner is not None:
                with anyio.CancelScope(shield=True):
                    await winner.aclose()
            raise
        if winner is not None:
            return winner
        summary = "; ".join(f"{address}: {exc}" for address, exc in errors)
        message = f"could not connect to {host!r} port {port} ({summary})"
        first = errors[0][1]
        if any(isinstance(exc, httpcore.ConnectTimeout) for _, exc in errors):
            raise httpcore.ConnectTimeout(message) from first
        raise httpcore.ConnectError(message) from first


def _is_ip_address(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def _attempt_order(addresses: Sequence[str], local_address: str | None) -> Sequence[str]:
    """Addresses in the order to try: usable families only, families interleaved.

    Bound to a local address, only that address's family can connect. The
    families alternate, starting with the resolver's first choice (RFC 8305
    §4), so that a broken IPv6 path costs one attempt delay, not a timeout.
    """
    if local_address is not None and _is_ip_address(local_address):
        want_v6 = ":" in local_address
        usable = [address for address in addresses if (":" in address) == want_v6]
        # None usable: let the attempts fail with the system's own error.
        addresses = usable or addresses
    if len(addresses) < 2:
        return addresses
    first_v6 = ":" in addresses[0]
    same = [address for address in addresses if (":" in address) == first_v6]
    other = [address for address in addresses if (":" in address) != first_v6]
    if not other:
        return addresses
    ordered: list[str] = []
    for index in range(max(len(same), len(other))):
        ordered.extend(family[index] for family in (same, other) if index < len(family))
    return ordered


def _dns_error_type(exc: OSError) -> str:
    """``error.type`` of a failed lookup: getaddrinfo's name for it (``EAI_NONAME``), if any."""
    if isinstance(exc, socket.gaierror):
        name = _EAI_NAMES.get(exc.errno)
        if name is not None:
            return name
    return type(exc).__name__
