"""Origins: what budgets, circuits and learned delays are kept per."""

from __future__ import annotations

from typing import Protocol

#: (scheme, host, port), the port ``None`` for the scheme's default.
Origin = tuple[str, str, int | None]


class URLLike(Protocol):
    """What of a URL the pure decisions read: ``httpx.URL`` and ``httpx2.URL`` both fit."""

    @property
    def scheme(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int | None: ...


def origin_of(url: URLLike) -> Origin:
    """(scheme, host, port): what a budget or a circuit is kept per."""
    return (url.scheme, url.host, url.port)


def format_origin(origin: Origin) -> str:
    """``https://api.example.com:8443`` from ``("https", "api.example.com", 8443)``."""
    scheme, host, port = origin
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"
