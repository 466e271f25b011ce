"""Checks for the numbers and names policies and layers are built with.

Each raises ``TypeError`` for a value of the wrong type and ``ValueError``
for one out of range, NaN or infinite, with a message that names the field
and shows the value: a bad setting fails where it is made, not mid-request.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable
from typing import SupportsIndex

# RFC 9110 §5.6.2: what a header name or a method may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def count(field: str, value: object, *, minimum: int = 0) -> int:
    """An ``int`` of at least ``minimum``: no bool, no float (2.5 or NaN never counts down)."""
    # bool is an int to Python, never a count to a user.
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise TypeError(f"{field} must be an int, got {value!r}")
    number = operator.index(value)
    if number < minimum:
        raise ValueError(f"{field} must be >= {minimum}, got {value!r}")
    return number


def real(field: str, value: object, *, unit: str = "seconds") -> float:
    """A finite ``int`` or ``float`` (not a bool, not NaN, not infinite)."""
    of = f" of {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field} must be a number{of}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number{of}, got {value!r}")
    return value


def number(
    field: str,
    value: object,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
    above_minimum: bool = False,
    below_maximum: bool = False,
    unit: str = "seconds",
) -> float:
    """A finite ``int`` or ``float`` from ``minimum`` to ``maximum`` (each excluded if asked)."""
    value = real(field, value, unit=unit)
    low = value > minimum if above_minimum else value >= minimum
    high = value < maximum if below_maximum else value <= maximum
    if not (low and high):
        bounds = f"{'>' if above_minimum else '>='} {minimum:g}"
        if maximum != math.inf:
            bounds += f" and {'<' if below_maximum else '<='} {maximum:g}"
        raise ValueError(f"{field} must be {bounds} {unit}".rstrip() + f", got {value!r}")
    return value


def optional_number(field: str, value: object, **limits: object) -> float | None:
    """``None``, or a number as ``number()`` checks it."""
    return None if value is None else number(field, value, **limits)  # type: ignore[arg-type]


def flag(field: str, value: object) -> bool:
    """``True`` or ``False``, nothing merely truthy."""
    if not isinstance(value, bool):
        raise TypeError(f"{field} must be True or False, got {value!r}")
    return value


def header_name(field: str, value: object) -> str:
    """An HTTP header name (an RFC 9110 token)."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a header name (a str), got {value!r}")
    if _TOKEN.fullmatch(value) is None:
        raise ValueError(f"{field} must be an HTTP header name, got {value!r}")
    return value


def methods(field: str, value: object) -> frozenset[str]:
    """A collection of HTTP methods, upper-cased; a bare string is refused."""
    names = _collection(field, value, "HTTP methods")
    checked = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{field} must hold method names (str), got {name!r}")
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(f"{field} must hold HTTP method names, got {name!r}")
        checked.add(name.upper())
    return frozenset(checked)


def statuses(field: str, value: object, *, low: int, high: int) -> frozenset[int]:
    """A collection of status codes from ``low`` to ``high``."""
    codes = set()
    for code in _collection(field, value, "status codes"):
        if isinstance(code, bool) or not isinstance(code, int) or not low <= code <= high:
            raise ValueError(
                f"{field} must be HTTP status codes from {low} to {high}, got status {code!r}"
            )
        codes.add(code)
    return frozenset(codes)


def exception_types(field: str, value: object) -> tuple[type[Exception], ...]:
    """A collection of ``Exception`` subclasses."""
    if isinstance(value, type):
        raise TypeError(
            f"{field} must be a collection of exception classes, got the class {value!r} "
            f"alone; write ({value.__name__},)"
        )
    types = []
    for exc in _collection(field, value, "exception classes"):
        if not (isinstance(exc, type) and issubclass(exc, Exception)):
            raise TypeError(f"{field} must be Exception subclasses, got {exc!r}")
        types.append(exc)
    return tuple(types)


def _collection(field: str, value: object, what: str) -> Iterable[object]:
    # A str is iterable: "GET" would become {"G", "E", "T"}.
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{field} must be a collection of {what}, got {value!r}")
    return value
