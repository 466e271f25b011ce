"""SteadyClock: a monotonic clock's readings with its misreadings taken out."""

from __future__ import annotations

import math
from collections.abc import Callable

Clock = Callable[[], float]

_INF = math.inf


def _no_clock() -> float:
    raise TypeError("this SteadyClock has no clock of its own: pass readings to at()")


class SteadyClock:
    """Time that never goes back: a step back, NaN or infinity counts as no time passed.

    >>> readings = iter([10.0, 12.0, 3.0, float("nan"), 5.0])
    >>> clock = SteadyClock(lambda: next(readings))
    >>> [clock() for _ in range(5)]
    [10.0, 12.0, 12.0, 12.0, 14.0]

    A clock that is meant to be monotonic may still step back (a fake or a
    virtual clock reset, a misbehaving one) or give NaN. Left alone, a step
    back of 900 s keeps an open circuit open 900 s too long, and a NaN fails
    whatever computes with it. Here a step back moves nothing: time goes on
    from the new reading, by the steps the clock takes from there. Readings
    stay the clock's own until it first steps back.

    ``SteadyClock()`` without a clock guards readings passed to ``at()``;
    each object remembers its own last reading.
    """

    __slots__ = ("_clock", "_last", "_offset")

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = _no_clock if clock is None else clock
        self._last = -_INF
        self._offset = 0.0

    def __call__(self) -> float:
        reading = self._clock()
        # The usual case, inline: a reading at or past the last one.
        if self._last <= reading < _INF:
            self._last = reading
            return reading + self._offset
        return self._misread(reading)

    def at(self, reading: float) -> float:
        """The steady time of one reading of the clock."""
        if self._last <= reading < _INF:
            self._last = reading
            return reading + self._offset
        return self._misread(reading)

    def _misread(self, reading: float) -> float:
        last = self._last
        if -_INF < reading < last:
            # A step back: no time passed; later steps count from here.
            self._offset += last - reading
            self._last = reading
            return reading + self._offset
        # NaN or infinite: no time passed, and the reading is not remembered.
        return last + self._offset if last > -_INF else 0.0


def seconds(duration: float) -> float:
    """A duration as reported: 0 for one no clock could give (negative, NaN, infinite).

    >>> seconds(0.25), seconds(-3.0), seconds(float("nan"))
    (0.25, 0.0, 0.0)

    For figures taken from two readings of a raw clock (timings, metrics),
    where a ``SteadyClock`` per reading would cost more than the figure.
    """
    return duration if 0.0 <= duration < _INF else 0.0
