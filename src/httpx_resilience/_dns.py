"""Name lookups: resolvers, the DNS cache, and the order addresses are tried in.

No httpcore here: both flavours share it, and so one ``DNSCache`` can serve
the async and the sync pools of one transport.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import ip_address
from typing import Protocol

import anyio

from . import _checks
from ._clock import SteadyClock

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


class SyncResolver(Protocol):
    """A ``Resolver`` for sync clients: a plain function of one host name.

    >>> def resolve(host: str) -> list[str]:
    ...     if host == "api.internal":
    ...         return ["10.0.0.7", "10.0.0.8"]
    ...     return default_sync_resolver(host)
    >>> transport = HTTPTransport(sync_resolver=resolve)
    """

    def __call__(self, host: str, /) -> Sequence[str]: ...


async def default_resolver(host: str) -> list[str]:
    """The system's ``getaddrinfo`` (hosts file, then DNS) in a worker thread.

    >>> await default_resolver("localhost")  # doctest: +SKIP
    ['127.0.0.1']
    """
    infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def default_sync_resolver(host: str) -> list[str]:
    """The system's ``getaddrinfo`` (hosts file, then DNS), for sync clients.

    >>> default_sync_resolver("localhost")  # doctest: +SKIP
    ['127.0.0.1']
    """
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


Lookup = Callable[[], Awaitable[Sequence[str]]]
SyncLookup = Callable[[], Sequence[str]]


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
    every entry lives ``ttl`` seconds. One cache serves async and sync
    clients, from any thread; sync lookups of one host are not shared (each
    thread that finds no entry looks the host up itself).
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
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry (lookups in flight still complete)."""
        self._entries.clear()

    async def resolve(self, host: str, lookup: Lookup) -> Sequence[str]:
        """The cached addresses of ``host``, or those ``lookup()`` finds."""
        while True:
            addresses = self._fresh(host)
            if addresses is not None:
                return addresses
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
            self._store(host, addresses)
            return addresses
        finally:
            del self._pending[host]
            pending.done.set()

    def resolve_sync(self, host: str, lookup: SyncLookup) -> Sequence[str]:
        """``resolve`` for sync clients: the cached addresses, or those ``lookup()`` finds."""
        addresses = self._fresh(host)
        if addresses is None:
            addresses = tuple(lookup())
            self._store(host, addresses)
        return addresses

    def _fresh(self, host: str) -> tuple[str, ...] | None:
        with self._lock:
            entry = self._entries.get(host)
            if entry is None:
                return None
            if entry[0] > self._clock():
                self._entries.move_to_end(host)
                return entry[1]
            del self._entries[host]
            return None

    def _store(self, host: str, addresses: tuple[str, ...]) -> None:
        with self._lock:
            self._entries[host] = (self._clock() + self.ttl, addresses)
            self._entries.move_to_end(host)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)


def some_addresses(addresses: Sequence[str]) -> Sequence[str]:
    """A resolver's answer, or the error of a name without addresses."""
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "the resolver returned no addresses")
    return addresses


def is_ip_address(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def attempt_order(addresses: Sequence[str], local_address: str | None) -> Sequence[str]:
    """Addresses in the order to try: usable families only, families interleaved.

    Bound to a local address, only that address's family can connect. The
    families alternate, starting with the resolver's first choice (RFC 8305
    §4), so that a broken IPv6 path costs one attempt delay, not a timeout.
    """
    if local_address is not None and is_ip_address(local_address):
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


def dns_error_type(exc: OSError) -> str:
    """``error.type`` of a failed lookup: getaddrinfo's name for it (``EAI_NONAME``), if any."""
    if isinstance(exc, socket.gaierror):
        name = _EAI_NAMES.get(exc.errno)
        if name is not None:
            return name
    return type(exc).__name__
