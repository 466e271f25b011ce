"""URLs fit for telemetry: no credentials, no signatures or tokens in the query."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_plus

import httpx

REDACTED = "REDACTED"

#: Query keys whose values :func:`redact_url` replaces by default: the list of
#: the OpenTelemetry URL conventions (``X-Amz-*``, ``sig``, ``X-Goog-Signature``),
#: the older one the OpenTelemetry instrumentations still use (``AWSAccessKeyId``,
#: ``Signature``), and common bearer secrets (RFC 6750 ``access_token``, API keys).
#: Matched case-sensitively, as the conventions ask.
SENSITIVE_QUERY_PARAMETERS = frozenset(
    {
        "AWSAccessKeyId",
        "Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
        "X-Goog-Credential",
        "X-Goog-Signature",
        "access_token",
        "api_key",
        "apikey",
        "sig",
        "signature",
        "token",
    }
)


def redact_url(
    url: httpx.URL, sensitive_query_parameters: Iterable[str] = SENSITIVE_QUERY_PARAMETERS
) -> str:
    """The URL as a string for ``url.full``, with its secrets replaced by ``REDACTED``.

    >>> redact_url(httpx.URL("https://user:pw@s3.example.com/f?X-Amz-Signature=ab12&v=2"))
    'https://REDACTED:REDACTED@s3.example.com/f?X-Amz-Signature=REDACTED&v=2'

    Credentials become ``REDACTED:REDACTED`` and the values of the sensitive
    query keys become ``REDACTED``; keys and everything else stay as sent.
    """
    userinfo = url.userinfo
    query = url.query
    if not userinfo and not query:
        return str(url)
    if userinfo:
        url = url.copy_with(username=REDACTED, password=REDACTED)
    if query:
        keys = (
            sensitive_query_parameters
            if isinstance(sensitive_query_parameters, frozenset)
            else frozenset(sensitive_query_parameters)
        )
        redacted = _redact_query(query.decode("ascii"), keys)
        if redacted is not None:
            url = url.copy_with(query=redacted.encode("ascii"))
    return str(url)


def _redact_query(query: str, keys: frozenset[str]) -> str | None:
    """The query with sensitive values replaced, or ``None`` when nothing is sensitive."""
    parts = query.split("&")
    changed = False
    for index, part in enumerate(parts):
        key, has_value, value = part.partition("=")
        if not has_value or value == REDACTED:
            continue
        # A key may arrive percent-encoded (``X%2DAmz%2DSignature``); the
        # redaction must not depend on how the caller spelled it.
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if key in keys:
            parts[index] = f"{part[: part.index('=')]}={REDACTED}"
            changed = True
    return "&".join(parts) if changed else None
