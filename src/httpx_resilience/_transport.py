"""HTTPTransport: httpx's AsyncHTTPTransport with HTTP/2 on and timed DNS, connect and TLS."""

from __future__ import annotations

import importlib.util
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from itertools import chain
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, cast

import httpcore
import httpx

from ._dns import DNSCache, Resolver, default_resolver
from ._goaway import GuardedConnectionPool
from ._network import TimedNetworkBackend
from ._timings import Clock, ConnectionMetrics, TimingsRecorder

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

_T = TypeVar("_T", bound="HTTPTransport")

CertTypes = str | tuple[str, str] | tuple[str, str, str]
ProxyTypes = httpx.URL | str | httpx.Proxy

#: httpx's own default (``httpx.AsyncHTTPTransport(limits=...)``).
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

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


def as_httpx_error(exc: Exception) -> httpx.TransportError | None:
    """The httpx exception httpx would raise for an httpcore one, else ``None``."""
    for cls in type(exc).__mro__:
        mapped = _EXCEPTIONS.get(cls)
        if mapped is not None:
            return mapped(str(exc))
    return None


class _ResponseStream(httpx.AsyncByteStream):
    """httpcore's response body with httpcore's exceptions raised as httpx's."""

    __slots__ = ("_stream",)

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is None:
            return
        try:
            await aclose()
        except Exception as exc:
            mapped = as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc


class HTTPTransport(httpx.AsyncBaseTransport):
    """httpx's ``AsyncHTTPTransport`` with HTTP/2 on and DNS, connect and TLS timed apart.

    >>> client = httpx.AsyncClient(transport=HTTPTransport())
    >>> response = await client.get("https://example.com")  # doctest: +SKIP
    >>> response.extensions["timings"]  # doctest: +SKIP
    Timings(dns=0.012, connect=0.021, tls=0.034, queue=0.0001, send=0.0002, wait=0.08, ...)

    Takes ``httpx.AsyncHTTPTransport``'s arguments and raises the same httpx
    exceptions, ``http2`` defaulting to ``True``. Host names are looked up by
    ``resolver`` (any ``async`` function of a host name returning IP
    addresses; the system's ``getaddrinfo`` by default), cached for
    ``dns_cache_ttl`` seconds if given, and every address is tried in turn
    (Happy Eyeballs). Each response carries ``extensions["timings"]``, a
    ``Timings``. With OpenTelemetry installed, ``meter_provider`` (or the
    global one) receives ``dns.lookup.duration``,
    ``httpx_resilience.connection.setup.duration`` and
    ``httpx_resilience.connection.opened``. ``network_backend`` replaces the
    httpcore backend that does the connecting, by address; ``clock`` the
    monotonic clock the timings are read from.
    """

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
        dns_cache_ttl: float | None = None,
        dns_cache_size: int = 256,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        meter_provider: MeterProvider | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        proxy = httpx.Proxy(url=proxy) if isinstance(proxy, (str, httpx.URL)) else proxy
        ssl_context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        dns_cache = (
            None if dns_cache_ttl is None else DNSCache(dns_cache_ttl, dns_cache_size, clock=clock)
        )
        self._clock = clock
        self._backend = TimedNetworkBackend(
            network_backend,
            resolver=resolver,
            dns_cache=dns_cache,
            meter_provider=meter_provider,
            clock=clock,
        )
        self._metrics = ConnectionMetrics.create(meter_provider)
        self._direct = proxy is None
        self._pool: httpcore.AsyncConnectionPool
        if proxy is None:
            # Keeps the answers of an HTTP/2 server that sends GOAWAY, and
            # takes the connection out of rotation (see _goaway.py).
            self._pool = GuardedConnectionPool(
                ssl_context=ssl_context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http1=http1,
                http2=http2,
                uds=uds,
                local_address=local_address,
                retries=retries,
                network_backend=self._backend,
                socket_options=socket_options,
            )
        elif proxy.url.scheme in ("http", "https"):
            self._pool = httpcore.AsyncHTTPProxy(
                proxy_url=_proxy_url(proxy),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                proxy_ssl_context=proxy.ssl_context,
                ssl_context=ssl_context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http1=http1,
                http2=http2,
                network_backend=self._backend,
                socket_options=socket_options,
            )
        elif proxy.url.scheme in ("socks5", "socks5h"):
            if importlib.util.find_spec("socksio") is None:
                raise ImportError(
                    "Using SOCKS proxy, but the 'socksio' package is not installed. "
                    "Make sure to install httpx using `pip install httpx[socks]`."
                )
            self._pool = httpcore.AsyncSOCKSProxy(
                proxy_url=_proxy_url(proxy),
                proxy_auth=proxy.raw_auth,
                ssl_context=ssl_context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http1=http1,
                http2=http2,
                network_backend=self._backend,
            )
        else:  # pragma: no cover - httpx.Proxy refuses other schemes first
            raise ValueError(
                "Proxy protocol must be either 'http', 'https', 'socks5', or 'socks5h',"
                f" but got {proxy.url.scheme!r}."
            )

    @property
    def connections(self) -> list[httpcore.AsyncConnectionInterface]:
        """The connections in the pool now, as httpcore's ``AsyncConnectionPool`` lists them.

        For inspection: each says whether it is idle (``is_idle()``) and
        what it is doing (``info()``).
        """
        return self._pool.connections

    @property
    def dns_cache(self) -> DNSCache | None:
        """The DNS cache, when ``dns_cache_ttl`` turned it on."""
        return self._backend.dns_cache

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = request.headers.raw
        _check_headers(headers, request)
        recorder = TimingsRecorder(
            self._clock, request, request.extensions.get("trace"), self._metrics
        )
        # A copy: the caller's request may be sent again (retries), and must
        # not carry this attempt's recorder.
        extensions = {**request.extensions, "trace": recorder}
        if self._direct:
            # The recorder may stop listening once the request is sent. Not
            # through a proxy: httpcore sends a CONNECT with these same
            # extensions first.
            recorder.extensions = extensions
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme,
                host=url.raw_host,
                port=url.port,
                target=url.raw_path,
            ),
            headers=headers,
            content=cast(httpx.AsyncByteStream, request.stream),
            extensions=extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            # The body's events (read, close) are the caller's business: they
            # go straight to the caller's own callback, if any, not through us.
            extensions["trace"] = recorder.chained
        response.extensions["timings"] = recorder.finish(self._clock())
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(cast(AsyncIterable[bytes], response.stream)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self: _T) -> _T:
        await self._pool.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        try:
            await self._pool.__aexit__(exc_type, exc_value, traceback)
        except Exception as exc:
            mapped = as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc


# What no header name or value may hold: h11 refuses them for HTTP/1.1, h2
# sends them as they are (RFC 9113 §8.2.1 calls such a field malformed).
_FORBIDDEN = b"\r\n\0"


def _check_headers(headers: list[tuple[bytes, bytes]], request: httpx.Request) -> None:
    """Refuse a header with CR, LF or NUL, on every protocol, before anything is sent.

    One pass over all the bytes at once. The message names the header but
    never quotes its value: a pasted ``Bearer <token>\\n`` is a secret.
    """
    joined = b"".join(chain.from_iterable(headers))
    if len(joined.translate(None, _FORBIDDEN)) != len(joined):
        raise httpx.LocalProtocolError(f"{_which(headers)}; not sent", request=request)


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
