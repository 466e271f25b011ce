"""HTTPTransport: httpx's own transport, async and sync, HTTP/2 on, DNS/connect/TLS timed."""

from __future__ import annotations

import importlib.util
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from itertools import chain
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.lowlevel
import httpcore
import httpx

from ._dns import DNSCache, Resolver, SyncResolver, default_resolver, default_sync_resolver
from ._goaway import GuardedConnectionPool, SyncGuardedConnectionPool
from ._network import SyncTimedNetworkBackend, TimedNetworkBackend
from ._timings import AsyncTimingsRecorder, Clock, ConnectionMetrics, TimingsRecorder

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

CertTypes = str | tuple[str, str] | tuple[str, str, str]
ProxyTypes = httpx.URL | str | httpx.Proxy

#: httpx's own default (``httpx.AsyncHTTPTransport(limits=...)``).
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


# Both of httpx's transports keep their pool in ``_pool``; here it is one
# object that holds an async pool and a sync one.
class HTTPTransport(httpx.AsyncHTTPTransport, httpx.HTTPTransport):
    """httpx's transport for async and sync clients, with HTTP/2 on and DNS, connect, TLS timed.

    >>> client = httpx.AsyncClient(transport=HTTPTransport())
    >>> client = httpx.Client(transport=HTTPTransport())
    >>> response = client.get("https://example.com")  # doctest: +SKIP
    >>> response.extensions["timings"]  # doctest: +SKIP
    Timings(dns=0.012, connect=0.021, tls=0.034, queue=0.0001, send=0.0002, wait=0.08, ...)

    It is an ``httpx.AsyncHTTPTransport`` and an ``httpx.HTTPTransport``, takes
    their arguments and sends each request through their own code, so it
    raises the same httpx exceptions, and tools that patch those classes
    (pytest-httpx, vcrpy, OpenTelemetry's httpx instrumentation) see its
    requests. ``http2`` defaults to ``True``. What it adds sits in its
    connection pools, one for async clients and one for sync ones:

    - Host names are looked up by ``resolver`` (any ``async`` function of a
      host name returning IP addresses; for sync clients ``sync_resolver``,
      a plain one; the system's ``getaddrinfo`` by default), cached for
      ``dns_cache_ttl`` seconds if given, and the addresses are tried in
      turn (raced, Happy Eyeballs, for async clients).
    - Each response carries ``extensions["timings"]``, a ``Timings``; with
      OpenTelemetry installed, ``meter_provider`` (or the global one)
      receives ``dns.lookup.duration``,
      ``httpx_resilience.connection.setup.duration`` and
      ``httpx_resilience.connection.opened``.
    - HTTP/2 survives GOAWAY: the answers a closing server still sends are
      kept, and requests it never processed fail in a way the retry layer
      re-sends at once (``_goaway.py``).
    - A header with CR, LF or NUL is refused before anything is sent, on
      every protocol.

    ``network_backend`` (``sync_network_backend``) replaces the httpcore
    backend that does the connecting, by address; ``clock`` the monotonic
    clock the timings are read from. The sync pool is thread-safe: one
    transport may serve many threads.
    """

    _pool: _Pools  # type: ignore[assignment]

    def __init__(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: ProxyTypes | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
        *,
        resolver: Resolver = default_resolver,
        sync_resolver: SyncResolver = default_sync_resolver,
        dns_cache_ttl: float | None = None,
        dns_cache_size: int = 256,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        sync_network_backend: httpcore.NetworkBackend | None = None,
        meter_provider: MeterProvider | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        # httpx's own __init__ is not called: it would build a pool of its own.
        proxy = httpx.Proxy(url=proxy) if isinstance(proxy, (str, httpx.URL)) else proxy
        ssl_context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        dns_cache = (
            None if dns_cache_ttl is None else DNSCache(dns_cache_ttl, dns_cache_size, clock=clock)
        )
        self._dns_cache = dns_cache
        backends = (
            TimedNetworkBackend(
                network_backend,
                resolver=resolver,
                dns_cache=dns_cache,
                meter_provider=meter_provider,
                clock=clock,
            ),
            SyncTimedNetworkBackend(
                sync_network_backend,
                resolver=sync_resolver,
                dns_cache=dns_cache,
                meter_provider=meter_provider,
                clock=clock,
            ),
        )
        options: dict[str, Any] = {
            "ssl_context": ssl_context,
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "http1": http1,
            "http2": http2,
        }
        pools: tuple[Any, Any]
        if proxy is None:
            # Keeps the answers of an HTTP/2 server that sends GOAWAY, and
            # takes the connection out of rotation (see _goaway.py).
            options.update(
                uds=uds,
                local_address=local_address,
                retries=retries,
                socket_options=socket_options,
            )
            pools = (
                GuardedConnectionPool(network_backend=backends[0], **options),
                SyncGuardedConnectionPool(network_backend=backends[1], **options),
            )
        elif proxy.url.scheme in ("http", "https"):
            options.update(
                proxy_url=_proxy_url(proxy),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                proxy_ssl_context=proxy.ssl_context,
                socket_options=socket_options,
            )
            pools = (
                httpcore.AsyncHTTPProxy(network_backend=backends[0], **options),
                httpcore.HTTPProxy(network_backend=backends[1], **options),
            )
        elif proxy.url.scheme in ("socks5", "socks5h"):
            if importlib.util.find_spec("socksio") is None:
                raise ImportError(
                    "Using SOCKS proxy, but the 'socksio' package is not installed. "
                    "Make sure to install httpx using `pip install httpx[socks]`."
                )
            options.update(proxy_url=_proxy_url(proxy), proxy_auth=proxy.raw_auth)
            pools = (
                httpcore.AsyncSOCKSProxy(network_backend=backends[0], **options),
                httpcore.SOCKSProxy(network_backend=backends[1], **options),
            )
        else:  # pragma: no cover - httpx.Proxy refuses other schemes first
            raise ValueError(
                "Proxy protocol must be either 'http', 'https', 'socks5', or 'socks5h',"
                f" but got {proxy.url.scheme!r}."
            )
        # The one private attribute of httpx's we set: the pool its request
        # path sends through (tests/test_transport.py pins it for httpx and httpx2).
        self._pool = _Pools(
            pools[0],
            pools[1],
            clock=clock,
            metrics=ConnectionMetrics.create(meter_provider),
            direct=proxy is None,
        )

    @property
    def connections(self) -> list[httpcore.AsyncConnectionInterface]:
        """The async pool's connections now, as httpcore's ``AsyncConnectionPool`` lists them.

        For inspection: each says whether it is idle (``is_idle()``) and
        what it is doing (``info()``). ``sync_connections`` lists the sync pool's.
        """
        return self._pool._async_pool.connections

    @property
    def sync_connections(self) -> list[httpcore.ConnectionInterface]:
        """The sync pool's connections now."""
        return self._pool._pool.connections

    @property
    def dns_cache(self) -> DNSCache | None:
        """The DNS cache, when ``dns_cache_ttl`` turned it on (one for both pools)."""
        return self._dns_cache


class _Pools:
    """What httpx's transports call their pool: an async pool and a sync one.

    Each request's trip through a pool is timed (``extensions["timings"]``),
    and its headers checked for CR, LF and NUL before anything is sent.
    """

    def __init__(
        self,
        async_pool: httpcore.AsyncConnectionPool,
        pool: httpcore.ConnectionPool,
        *,
        clock: Clock,
        metrics: ConnectionMetrics | None,
        direct: bool,
    ) -> None:
        self._async_pool = async_pool
        self._pool = pool
        self._clock = clock
        self._metrics = metrics
        # Through a proxy, httpcore first sends a CONNECT that shares the
        # request's extensions: the timings then listen to the end.
        self._direct = direct

    # unasync: begin
    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        _check_headers(request.headers)
        chained = request.extensions.get("trace")
        recorder = AsyncTimingsRecorder(self._clock, request, chained, self._metrics)
        # httpx hands over the caller's own extensions, which a hedge copies
        # while this attempt runs, and later attempts send again: this
        # attempt's trace callbacks go in a dict of its own.
        extensions = request.extensions = {**request.extensions, "trace": recorder}
        if self._direct:
            # The recorder may stop listening once the request is sent.
            recorder.extensions = extensions
        try:
            response = await self._async_pool.handle_async_request(request)
        except Exception:
            await _async_cancellation_first()
            raise
        finally:
            # The body's events (read, close) are the caller's business: they
            # go straight to the caller's own callback, if any, not through us.
            extensions["trace"] = chained
        response.extensions["timings"] = recorder.finish(self._clock())
        response.stream = _AsyncClosing(response.stream)
        return response

    async def aclose(self) -> None:
        await self._async_pool.aclose()

    async def __aenter__(self) -> _Pools:
        await self._async_pool.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._async_pool.__aexit__(exc_type, exc_value, traceback)

    # unasync: end
    # unasync: generated from the block above by scripts/generate.py; do not edit
    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        _check_headers(request.headers)
        chained = request.extensions.get("trace")
        recorder = TimingsRecorder(self._clock, request, chained, self._metrics)
        # httpx hands over the caller's own extensions, which a hedge copies
        # while this attempt runs, and later attempts send again: this
        # attempt's trace callbacks go in a dict of its own.
        extensions = request.extensions = {**request.extensions, "trace": recorder}
        if self._direct:
            # The recorder may stop listening once the request is sent.
            recorder.extensions = extensions
        try:
            response = self._pool.handle_request(request)
        except Exception:
            _cancellation_first()
            raise
        finally:
            # The body's events (read, close) are the caller's business: they
            # go straight to the caller's own callback, if any, not through us.
            extensions["trace"] = chained
        response.extensions["timings"] = recorder.finish(self._clock())
        response.stream = _Closing(response.stream)
        return response

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> _Pools:
        self._pool.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._pool.__exit__(exc_type, exc_value, traceback)

    # unasync: generated end


# unasync: begin
class _AsyncClosing:
    """httpcore's response body, whose close raises httpx's errors, not httpcore's.

    httpx maps httpcore's errors while the body is read, not when it is
    closed; iterating is left to the stream itself, frame-free.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return cast(AsyncIterator[bytes], self._stream.__aiter__())

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is None:
            return
        try:
            await aclose()
        except Exception as exc:
            mapped = _as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
class _Closing:
    """httpcore's response body, whose close raises httpx's errors, not httpcore's.

    httpx maps httpcore's errors while the body is read, not when it is
    closed; iterating is left to the stream itself, frame-free.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        return cast(Iterator[bytes], self._stream.__iter__())

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception as exc:
            mapped = _as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc


# unasync: generated end


async def _async_cancellation_first() -> None:
    """Raise the caller's cancellation, if any, in place of the error being raised.

    httpcore may raise an error with no checkpoint after the caller was
    cancelled: on a shared HTTP/2 connection, a request handed the write
    lock just as its cancellation came re-raises the error another
    request's write stored. The caller asked to stop; that is what it sees.
    """
    await anyio.lowlevel.checkpoint_if_cancelled()


def _cancellation_first() -> None:
    """Nothing cancels a sync request."""


# httpcore's exceptions as httpx raises them. Looked up along the raised
# class's MRO, so the most specific match wins (ConnectTimeout before
# TimeoutException), as in httpx.
_EXCEPTIONS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


def _as_httpx_error(exc: Exception) -> httpx.TransportError | None:
    """The httpx exception httpx would raise for an httpcore one, else ``None``."""
    for cls in type(exc).__mro__:
        mapped = _EXCEPTIONS.get(cls)
        if mapped is not None:
            return mapped(str(exc))
    return None


# What no header name or value may hold: h11 refuses them for HTTP/1.1, h2
# sends them as they are (RFC 9113 §8.2.1 calls such a field malformed).
_FORBIDDEN = b"\r\n\0"


def _check_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse a header with CR, LF or NUL, on every protocol, before anything is sent.

    One pass over all the bytes at once. The message names the header but
    never quotes its value: a pasted ``Bearer <token>\\n`` is a secret.
    """
    joined = b"".join(chain.from_iterable(headers))
    if len(joined.translate(None, _FORBIDDEN)) != len(joined):
        raise httpcore.LocalProtocolError(f"{_which(headers)}; not sent")


def _which(headers: list[tuple[bytes, bytes]]) -> str:
    for number, (name, value) in enumerate(headers, 1):
        if len(name.translate(None, _FORBIDDEN)) != len(name):
            # A name this broken may be a value pasted in the wrong place: not quoted either.
            return f"the name of header number {number} holds a CR, LF or NUL character"
        if len(value.translate(None, _FORBIDDEN)) != len(value):
            name_text = name.decode("ascii", "replace")
            return f"the value of header {name_text!r} holds a CR, LF or NUL character"
    return "a header holds a CR, LF or NUL character"  # pragma: no cover - found above


def _proxy_url(proxy: httpx.Proxy) -> httpcore.URL:
    return httpcore.URL(
        scheme=proxy.url.raw_scheme,
        host=proxy.url.raw_host,
        port=proxy.url.port,
        target=proxy.url.raw_path,
    )
