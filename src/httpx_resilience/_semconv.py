"""Attribute names and values of the stable OpenTelemetry HTTP client conventions.

Plain strings and pure functions, no OpenTelemetry import: the retry layer
labels its counter with them whether or not the tracing layer is in use.
"""

from __future__ import annotations

from ._origin import URLLike

HTTP_REQUEST_METHOD = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL = "http.request.method_original"
HTTP_REQUEST_RESEND_COUNT = "http.request.resend_count"
HTTP_REQUEST_HEADER = "http.request.header"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_FULL = "url.full"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
NETWORK_PEER_ADDRESS = "network.peer.address"
NETWORK_PEER_PORT = "network.peer.port"
ERROR_TYPE = "error.type"

#: The methods the conventions know; any other is reported as ``_OTHER``.
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
OTHER_METHOD = "_OTHER"

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# httpcore reports the version as bytes; the conventions want the bare number.
_PROTOCOL_VERSIONS = {b"HTTP/1.0": "1.0", b"HTTP/1.1": "1.1", b"HTTP/2": "2", b"HTTP/3": "3"}


def method_attribute(method: str) -> str:
    """``http.request.method``: the method if the conventions know it, else ``_OTHER``."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


def server_port(url: URLLike) -> int | None:
    """``server.port``, the scheme's default included (httpx leaves it out of ``url.port``)."""
    port = url.port
    return port if port is not None else DEFAULT_PORTS.get(url.scheme)


def protocol_version(http_version: object) -> str | None:
    """``network.protocol.version`` from ``response.extensions["http_version"]``."""
    if not isinstance(http_version, bytes):
        return None
    known = _PROTOCOL_VERSIONS.get(http_version)
    if known is not None:
        return known
    return http_version.decode("ascii", "replace").removeprefix("HTTP/") or None


def error_type(exc: BaseException) -> str:
    """``error.type`` for an exception: its class name, the same as the retry reasons."""
    return type(exc).__name__
