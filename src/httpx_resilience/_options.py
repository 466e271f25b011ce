"""Per-request options: ``extensions={"resilience": {...}}``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx

EXTENSION = "resilience"
KNOWN_OPTIONS = frozenset({"deadline", "hedge", "idempotent", "retry"})

_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


def request_options(request: httpx.Request) -> Mapping[str, Any]:
    """Return the request's resilience options, checked once for typos.

    >>> options = {"resilience": {"idempotent": True}}
    >>> request = httpx.Request("POST", "https://example.com", extensions=options)
    >>> request_options(request)["idempotent"]
    True
    """
    options = request.extensions.get(EXTENSION)
    if options is None:
        return _NO_OPTIONS
    if not isinstance(options, Mapping):
        raise TypeError(
            f'extensions["{EXTENSION}"] must be a mapping of options, got {type(options).__name__}'
        )
    unknown = options.keys() - KNOWN_OPTIONS
    if unknown:
        raise ValueError(
            f"unknown resilience option(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"known options are {', '.join(sorted(KNOWN_OPTIONS))}"
        )
    return options
