"""Per-request options: ``extensions={"resilience": {...}}``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx

EXTENSION = "resilience"
KNOWN_OPTIONS = frozenset({"deadline", "hedge", "idempotent", "retry"})

_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class _Checked(dict[str, Any]):
    """Options already checked: the layers after the first read them as they are."""

    __slots__ = ()


def request_options(request: httpx.Request) -> Mapping[str, Any]:
    """Return the request's resilience options, all checked the first time they are read.

    >>> options = {"resilience": {"idempotent": True}}
    >>> request = httpx.Request("POST", "https://example.com", extensions=options)
    >>> request_options(request)["idempotent"]
    True

    The first layer to read them is the outermost (``RetryTransport``), before
    anything is sent: a typo or a wrong type raises ``ValueError`` or
    ``TypeError`` naming the option, and the server sees nothing.
    """
    options = request.extensions.get(EXTENSION)
    if options is None:
        return _NO_OPTIONS
    if type(options) is _Checked:
        return options
    checked = _Checked(check_options(options))
    # Kept in the request (whose extensions dict is its own), so that the
    # layers inside, and every attempt, skip the checks.
    request.extensions[EXTENSION] = checked
    return checked


def check_options(options: object) -> Mapping[str, Any]:
    """Check every option: its name, its type, its range."""
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
    # Imported here: the policies' modules import this one.
    from ._hedging import HedgingPolicy
    from ._retry_policy import RetryPolicy

    for name, value in options.items():
        if name == "idempotent":
            # None: decided by the method, as without the option.
            if value is not None and not isinstance(value, bool):
                raise TypeError(f'the "idempotent" option must be True or False, got {value!r}')
        elif name == "deadline":
            if value is not None:  # None: no deadline, whatever the policy says
                check_deadline(value)
        elif name == "retry":
            if not isinstance(value, (bool, RetryPolicy)):
                raise TypeError(
                    f'the "retry" option must be True, False or a RetryPolicy, got {value!r}'
                )
        elif not isinstance(value, (bool, HedgingPolicy)):  # "hedge"
            raise TypeError(
                f'the "hedge" option must be True, False or a HedgingPolicy, got {value!r}'
            )
    return options


def check_deadline(value: object) -> float:
    """A deadline: a finite number of seconds above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'the "deadline" option must be a number of seconds, got {value!r}')
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f'the "deadline" option must be a finite number of seconds > 0, got {value!r}'
        )
    return float(value)
