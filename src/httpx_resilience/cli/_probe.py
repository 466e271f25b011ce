"""``httpx-resilience get URL``: one request through the stack, and what happened to it."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import stop_after_attempt

from .._dns import Resolver
from .._records import RetryEvent, RetryHistory, Timings
from .._retry import Sleep
from .._retry_policy import RetryPolicy
from .._stack import resilient_transport

#: Exit codes of ``get``.
EXIT_OK = 0
EXIT_HTTP_ERROR = 1  # a response with status >= 400
EXIT_USAGE = 2  # the command line or the URL is wrong (argparse uses 2 too)
EXIT_FAILED = 3  # no response: DNS, refused, TLS, timeout, protocol error


class ProbeError(Exception):
    """A request that failed, in one line: ``kind`` is a short word for scripts."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def exit_code(self) -> int:
        return EXIT_USAGE if self.kind in ("url", "usage") else EXIT_FAILED


@dataclass(frozen=True)
class ProbeOptions:
    """What ``get`` was asked to do."""

    url: str
    http1: bool = False
    retries: int = 2
    timeout: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()
    insecure: bool = False
    cacert: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """One response, as ``get`` reports it."""

    url: str
    status: int
    reason: str
    http_version: str
    history: RetryHistory
    request_id: str | None
    timings: Timings | None
    body_bytes: int
    content_type: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "reason": self.reason,
            "http_version": self.http_version,
            "attempts": self.history.attempts,
            "retries": [dataclasses.asdict(event) for event in self.history.events],
            "request_id": self.request_id,
            "timings": None if self.timings is None else dataclasses.asdict(self.timings),
            "body_bytes": self.body_bytes,
            "content_type": self.content_type,
        }


def parse_header(value: str) -> tuple[str, str]:
    """``"Name: value"`` as a pair; ``ValueError`` when it is not a header."""
    name, colon, rest = value.partition(":")
    name = name.strip()
    if not colon or not name or any(c.isspace() for c in name):
        raise ValueError(f"not a header: {value!r} (expected 'Name: value')")
    return name, rest.strip()


def check_url(url: str) -> httpx.URL:
    """The URL, if ``get`` can send to it; else ``ProbeError("url", ...)``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ProbeError("url", f"invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        guess = _with_scheme(url)
        if guess is not None:
            raise ProbeError(
                "url", f"invalid URL {url!r}: no http:// or https://; did you mean {guess}?"
            )
        given = f"'{parsed.scheme}://'" if parsed.scheme else "none"
        raise ProbeError(
            "url", f"invalid URL {url!r}: the scheme must be http or https, not {given}"
        )
    if not parsed.host:
        raise ProbeError("url", f"invalid URL {url!r}: no host name")
    return parsed


def _with_scheme(url: str) -> str | None:
    """``https://`` and the URL, when it was given without a scheme (``example.com/x``)."""
    if "://" in url:
        return None
    rest = url.removeprefix("//")
    try:
        parsed = httpx.URL(f"https://{rest}")
    except httpx.InvalidURL:
        return None
    # "mailto:me@host" would parse too, as user "mailto" at "host": no guess then.
    if not parsed.host or not rest.lower().startswith(parsed.netloc.decode("ascii").lower()):
        return None
    return f"https://{rest}"


def _verify(options: ProbeOptions) -> ssl.SSLContext | bool:
    if options.insecure:
        return False
    if options.cacert is None:
        return True
    try:
        return ssl.create_default_context(cafile=options.cacert)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProbeError("usage", f"cannot use --cacert {options.cacert}: {reason}") from None


async def probe(
    options: ProbeOptions,
    *,
    resolver: Resolver | None = None,
    sleep: Sleep | None = None,
) -> ProbeResult:
    """Send one GET through ``resilient_transport()``; raise ``ProbeError`` if no response came.

    ``resolver`` and ``sleep`` replace the system's name lookup and the wait
    between attempts (tests pass fakes).
    """
    url = check_url(options.url)
    transport_options: dict[str, Any] = {
        "verify": _verify(options),
        "http2": not options.http1,
        "retry": RetryPolicy(stop=stop_after_attempt(options.retries + 1)),
    }
    if resolver is not None:
        transport_options["resolver"] = resolver
    if sleep is not None:
        transport_options["sleep"] = sleep
    transport = resilient_transport(**transport_options)
    async with httpx.AsyncClient(transport=transport, timeout=options.timeout) as client:
        started = time.perf_counter()
        try:
            response = await client.get(url, headers=list(options.headers))
        except httpx.HTTPError as exc:
            raise describe_error(
                exc,
                url,
                options.timeout,
                attempts=attempts_made(exc),
                elapsed=time.perf_counter() - started,
            ) from exc
    extensions: Mapping[str, Any] = response.extensions
    version = response.http_version
    return ProbeResult(
        url=str(url),
        status=response.status_code,
        # HTTP/2 has no reason phrase, and a server may send none over HTTP/1.1.
        reason=response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code),
        http_version=version,
        history=extensions.get("retry", RetryHistory(attempts=1)),
        request_id=extensions.get("request_id"),
        timings=extensions.get("timings"),
        body_bytes=len(response.content),
        content_type=response.headers.get("content-type"),
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, depth first: causes, contexts, and the
    members of exception groups (trio reports failed connection attempts as one)."""
    chain: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        members = getattr(current, "exceptions", None)
        if isinstance(members, tuple):
            stack.extend(reversed([m for m in members if isinstance(m, BaseException)]))
        linked = current.__cause__ or current.__context__
        if linked is not None:
            stack.append(linked)
    return chain


def _find(exc: BaseException, kind: type[BaseException]) -> Any:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


_GAVE_UP = "httpx-resilience: gave up after "


def attempts_made(exc: BaseException) -> int:
    """How many times a failed request was sent, by the retry layer's note on the exception."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(_GAVE_UP):
            with contextlib.suppress(ValueError):
                return int(note.removeprefix(_GAVE_UP).split(" ")[0])
    return 1


def describe_error(
    exc: httpx.HTTPError,
    url: httpx.URL,
    timeout: float,
    *,
    attempts: int = 1,
    elapsed: float | None = None,
) -> ProbeError:
    """The one line a user needs to see for a failed request.

    ``attempts``: how many times it was sent; ``elapsed``: seconds from the
    first attempt to the failure of the last, waits included.
    """
    host = url.host
    where = f"{host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ProbeError("url", f"invalid URL {str(url)!r}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "waiting for the response of",
            httpx.WriteTimeout: "sending the request to",
            httpx.PoolTimeout: "waiting for a free connection to",
        }.get(type(exc), "talking to")
        if attempts == 1:
            return ProbeError("timeout", f"timed out {phase} {where} after {timeout:g} s")
        # --timeout bounds each phase of each attempt, not the whole command:
        # say so, and how long the attempts and the waits between them took.
        total = "" if elapsed is None else f", {elapsed:.2f} s in all"
        return ProbeError(
            "timeout",
            f"timed out {phase} {where} after {timeout:g} s (--timeout, per attempt); "
            f"{attempts} attempts{total}",
        )
    gaierror = _find(exc, socket.gaierror)
    if gaierror is not None:
        reason = gaierror.strerror or str(gaierror)
        return ProbeError("dns", f"cannot resolve host {host!r}: {reason}{tries}")
    cert_error = _find(exc, ssl.SSLCertVerificationError)
    if cert_error is not None:
        reason = cert_error.verify_message or cert_error.reason or str(cert_error)
        return ProbeError(
            "tls",
            f"TLS certificate of {where} not trusted: {reason}{tries}; "
            "pass --cacert FILE (or --insecure)",
        )
    tls_error = _find(exc, ssl.SSLError)
    if tls_error is not None:
        reason = tls_error.reason or str(tls_error)
        return ProbeError("tls", f"TLS handshake with {where} failed: {reason}{tries}")
    if _find(exc, ConnectionRefusedError) is not None:
        return ProbeError(
            "refused", f"connection refused by {where}: nothing listens there{tries}"
        )
    if isinstance(exc, httpx.ConnectError):
        return ProbeError(
            "connect", f"cannot connect to {where}: {exc or type(exc).__name__}{tries}"
        )
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        reset = _find(exc, ConnectionResetError) is not None or not str(exc)
        what = "the connection was reset" if reset else str(exc)
        return ProbeError("network", f"{where}: {what} ({type(exc).__name__}){tries}")
    if isinstance(exc, httpx.ProtocolError):
        return ProbeError("protocol", f"{where}: {exc} ({type(exc).__name__}){tries}")
    return ProbeError("error", f"{where}: {type(exc).__name__}: {exc}{tries}")


# -- output ------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    """Milliseconds with one decimal, ``-`` for a phase that did not happen."""
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def format_timings(timings: Timings) -> str:
    phases = (
        ("dns", timings.dns),
        ("connect", timings.connect),
        ("tls", timings.tls),
        ("queue", timings.queue),
        ("send", timings.send),
        ("wait", timings.wait),
        ("total", timings.total),
    )
    text = "  ".join(f"{name} {ms(value)}" for name, value in phases)
    return text + ("  (reused connection)" if timings.connection_reused else "  (new connection)")


def format_retry(event: RetryEvent) -> str:
    if event.unprocessed:
        return f"{event.reason} (never processed: re-sent at once)"
    return f"{event.reason} (waited {event.wait:.2f} s)"


def format_attempts(history: RetryHistory, status: int) -> str:
    if not history.events:
        return "1 (no retries)" if history.attempts == 1 else str(history.attempts)
    steps = ", ".join(format_retry(event) for event in history.events)
    return f"{history.attempts}: {steps}, then {status}"


def format_result(result: ProbeResult) -> list[str]:
    rows: list[tuple[str, str]] = [
        ("status", f"{result.status} {result.reason}".rstrip()),
        ("http", result.http_version),
        ("attempts", format_attempts(result.history, result.status)),
        ("request id", result.request_id or "-"),
        ("timings", "-" if result.timings is None else format_timings(result.timings)),
        ("body", f"{result.body_bytes} bytes" + _content_type(result.content_type)),
    ]
    return [f"GET {result.url}"] + [f"  {name:<12}{value}" for name, value in rows]


def _content_type(value: str | None) -> str:
    return "" if not value else f", {value}"


def exit_code(result: ProbeResult) -> int:
    return EXIT_HTTP_ERROR if result.status >= 400 else EXIT_OK


def error_json(options: ProbeOptions, error: ProbeError) -> dict[str, Any]:
    return {"url": options.url, "error": {"kind": error.kind, "message": error.message}}


def headers_from(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple(parse_header(value) for value in values)
