"""Bounded per-origin state: the least recently used idle entries go first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: Entries one eviction looks at, at most: with many busy entries in front,
#: a new origin costs a few steps, not a walk through all of them.
SCAN = 16


def make_room(entries: OrderedDict[K, V], limit: int, idle: Callable[[V], bool]) -> None:
    """Drop idle entries, least recently used first, until fewer than ``limit`` remain.

    >>> entries = OrderedDict(a=0, b=1, c=0)  # 0: idle; "a" used least recently
    >>> make_room(entries, 3, idle=lambda value: value == 0)
    >>> list(entries)
    ['b', 'c']

    Call it before adding an entry, which then never competes with the
    others. An entry that is not idle is moved to the most recently used
    end (it is in use, after all) and kept: when the entries looked at
    (``SCAN`` at most) are all busy, the map grows past ``limit`` rather
    than forget one, and shrinks back as later additions find idle ones.
    """
    looked = 0
    while len(entries) >= limit and looked < SCAN:
        looked += 1
        key, value = next(iter(entries.items()))
        if idle(value):
            del entries[key]
        else:
            entries.move_to_end(key)
