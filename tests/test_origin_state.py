"""Per-origin state under churn: the least recently used idle entries go, busy ones stay.

The circuit breaker's and the retry budget's maps are tested with their
layers (test_breaker.py, test_budget_deadline.py).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
from anyio.lowlevel import checkpoint

from .flavour import httpx
from .flavour._hedging import HedgingPolicy, HedgingTransport
from .flavour._lru import SCAN, make_room
from .test_hedging import Origin, Timer, get, race

pytestmark = pytest.mark.anyio


def test_make_room_drops_idle_entries_least_recently_used_first() -> None:
    entries = OrderedDict((name, "idle") for name in "abcd")
    entries["b"] = "busy"
    entries.move_to_end("a")  # used last
    make_room(entries, 4, lambda state: state == "idle")  # room for one more
    # "c" went (the least recently used idle); "b" is busy, so it stayed.
    assert list(entries) == ["d", "a", "b"]


def test_make_room_grows_rather_than_drop_a_busy_entry_and_looks_only_so_far() -> None:
    entries = OrderedDict((number, "busy") for number in range(100))
    make_room(entries, 10, lambda state: state == "idle")
    assert len(entries) == 100
    # Busy entries looked at move to the back: the next call looks further on.
    assert list(entries)[:2] == [SCAN, SCAN + 1]
    entries[SCAN + 1] = "idle"
    make_room(entries, 100, lambda state: state == "idle")
    assert SCAN + 1 not in entries


async def test_hedging_forgets_the_least_recently_used_origin_not_the_oldest() -> None:
    now = [0.0]

    async def answer(request: httpx.Request) -> httpx.Response:
        now[0] += 0.03
        await checkpoint()
        return httpx.Response(200)

    origin, timer = Origin(answer), Timer()
    policy = HedgingPolicy(min_samples=5, window=10, min_delay=0.01, max_delay=1.0)
    transport = HedgingTransport(
        origin.transport(), policy, sleep=timer, clock=lambda: now[0], max_origins=2
    )
    for _ in range(6):
        await race(transport, timer, get("https://fast.example.com/"), fires=0)
    assert timer.calls[-1] == pytest.approx(0.03)  # learned
    for host in ("other", "fast", "third", "fast"):
        await race(transport, timer, get(f"https://{host}.example.com/"), fires=0)
    # "fast" came first but was used since: "other" was forgotten for "third".
    assert timer.calls[-1] == pytest.approx(0.03)
    await race(transport, timer, get("https://other.example.com/"), fires=0)
    assert timer.calls[-1] == 1.0  # forgotten: nothing known, the ceiling
