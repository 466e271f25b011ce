"""What the fault server does with each request: outcomes, routes, plans. No I/O."""

from __future__ import annotations

import email.utils
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from types import MappingProxyType
from typing import Literal, TypeAlias, cast

#: What a reset tears down on HTTP/2: the TCP connection with every stream on
#: it, or only the request's stream (``RST_STREAM INTERNAL_ERROR``). HTTP/1.1
#: has no streams; both reset the connection there.
ResetScope: TypeAlias = Literal["connection", "stream"]

Headers: TypeAlias = tuple[tuple[str, str], ...]


# RFC 9110 §5.1 and §5.5, as h11 checks them: a name is a token; a value is
# visible Latin-1 characters, with spaces and tabs only inside.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_FIELD_VALUE = re.compile(
    r"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)


def _header_tuple(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = tuple((str(name).lower(), str(value)) for name, value in items)
    for name, value in pairs:
        # Checked here, or the server would send what no server may (h2 is
        # told not to check what we send) or fail on it mid-response.
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"Respond.headers: not a header name: {name!r}")
        if not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                f"Respond.headers: the value of {name!r} is not a header value: {value!r} "
                "(control characters, CR, LF, characters beyond Latin-1, or spaces at "
                "either end)"
            )
    return pairs


def _check_retry_after(value: object) -> None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 0:
            return
    elif isinstance(value, str) and _FIELD_VALUE.fullmatch(value):
        if value.isascii() and value.isdigit():
            return
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            pass
        else:
            if when.tzinfo is not None:  # HTTP-dates are GMT; "-0000" says "unknown"
                return
    raise ValueError(
        "Respond.retry_after must be seconds (a whole number >= 0) or an HTTP-date such as "
        f"'Wed, 21 Oct 2026 07:28:00 GMT', got {value!r}; headers= sends any other value"
    )


def _check_status(owner: object, status: int) -> None:
    if not 200 <= status <= 599:
        # 1xx are interim answers, never the response itself.
        raise ValueError(f"{type(owner).__name__}.status must be from 200 to 599, got {status}")


def _check_non_negative(owner: object, **values: float) -> None:
    for name, value in values.items():
        if not value >= 0:  # NaN too
            raise ValueError(f"{type(owner).__name__}.{name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer with a status, headers and body.

    >>> Respond(503, headers={"X-Reason": "busy"}, retry_after=1).headers
    (('x-reason', 'busy'), ('retry-after', '1'))

    ``body=None`` gives the built-in body of the path: ``/bytes?size=N``
    streams N bytes, any other path a small JSON object echoing the method
    and path. Header names are lower-cased; pass a mapping or pairs.
    """

    status: int = 200
    body: bytes | None = None
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    retry_after: int | str | None = None

    def __post_init__(self) -> None:
        _check_status(self, self.status)
        headers = _header_tuple(self.headers)
        if self.retry_after is not None:
            _check_retry_after(self.retry_after)
            headers += (("retry-after", str(self.retry_after)),)
        object.__setattr__(self, "headers", headers)


_OK = Respond()


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` before sending the headers of ``then``.

    >>> Delay(0.5, then=Respond(200, b"late"))
    Delay(seconds=0.5, then=Respond(status=200, body=b'late', headers=(), retry_after=None))
    """

    seconds: float
    then: Respond = _OK

    def __post_init__(self) -> None:
        _check_non_negative(self, seconds=self.seconds)


@dataclass(frozen=True, slots=True)
class SlowBody:
    """Send the headers at once, then the body in ``chunks`` pieces, one per ``interval``.

    >>> SlowBody(chunks=4, chunk_size=16, interval=0.01)
    SlowBody(chunks=4, chunk_size=16, interval=0.01, status=200)

    ``Content-Length`` announces the whole body, so a client's read timeout
    (the gap between two reads) can fire while its total wait grows.
    """

    chunks: int = 10
    chunk_size: int = 1024
    interval: float = 0.05
    status: int = 200

    def __post_init__(self) -> None:
        _check_non_negative(self, chunks=self.chunks, interval=self.interval)
        _check_status(self, self.status)
        if self.chunk_size < 1:
            raise ValueError(f"SlowBody.chunk_size must be >= 1, got {self.chunk_size}")


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset before any byte of the response: the server did the work, the answer is lost.

    >>> Reset(), Reset(scope="stream")
    (Reset(scope='connection'), Reset(scope='stream'))

    ``"connection"`` closes the TCP connection with ``SO_LINGER`` 0, so the
    client gets a RST; on HTTP/2 that kills every stream on the connection.
    ``"stream"`` resets only this HTTP/2 stream (``INTERNAL_ERROR``).
    The request counts as processed.
    """

    scope: ResetScope = "connection"


@dataclass(frozen=True, slots=True)
class ResetMidBody:
    """Announce ``size`` bytes of body, send ``after`` of them, then reset.

    >>> ResetMidBody(after=100, size=1000)
    ResetMidBody(after=100, size=1000, scope='connection')

    ``scope`` as for ``Reset``. The request counts as processed.
    """

    after: int = 1024
    size: int = 65536
    scope: ResetScope = "connection"

    def __post_init__(self) -> None:
        _check_non_negative(self, after=self.after)
        if self.size <= self.after:
            raise ValueError(
                f"ResetMidBody.size ({self.size}) must be larger than after ({self.after})"
            )


@dataclass(frozen=True, slots=True)
class Stall:
    """Send nothing, so the client's read timeout fires; give up after ``seconds``.

    >>> Stall(seconds=5)
    Stall(seconds=5)

    Giving up resets the stream (``CANCEL``) on HTTP/2 and closes the
    connection on HTTP/1.1. A client that hangs up first ends the stall
    early. The request counts as processed.
    """

    seconds: float = 30.0

    def __post_init__(self) -> None:
        _check_non_negative(self, seconds=self.seconds)


@dataclass(frozen=True, slots=True)
class GoAway:
    """Send HTTP/2 ``GOAWAY`` when this request arrives, answer what it covers, then close.

    >>> GoAway(then=Respond(503, retry_after=1)).last_stream_id is None
    True

    ``last_stream_id`` defaults to this request's stream. The server never
    announces less than the highest stream it has already handed to a
    handler, since those may have been processed (RFC 9113 §6.8). Streams up
    to it get their full responses (this one gets ``then``); streams above
    it are ignored and recorded as not processed; the connection closes once
    the covered streams are done. On HTTP/1.1 this is ``then`` with
    ``Connection: close``.

    The GOAWAY goes in a write of its own, as nginx sends it, so a client
    usually reads it alone. ``coalesce=True`` puts it in the same write as
    the response that follows it, so the client reads both at once: h2 then
    fails on the response and the GOAWAY itself never reaches httpcore.
    """

    last_stream_id: int | None = None
    error_code: int = 0
    then: Respond = _OK
    coalesce: bool = False

    def __post_init__(self) -> None:
        if self.last_stream_id is not None and not 0 <= self.last_stream_id < 2**31:
            raise ValueError(
                f"last_stream_id must be from 0 to 2**31-1, got {self.last_stream_id}"
            )
        if not 0 <= self.error_code < 2**32:
            raise ValueError(f"GoAway.error_code must be from 0 to 2**32-1, got {self.error_code}")


@dataclass(frozen=True, slots=True)
class Refuse:
    """Reset the HTTP/2 stream with ``REFUSED_STREAM``: not processed, safe to re-send.

    >>> Refuse()
    Refuse()

    On HTTP/1.1, which has no such signal, the connection is reset before
    the response (as ``Reset()``); the request is still recorded as not
    processed, although the client cannot tell.
    """


Outcome: TypeAlias = Respond | Delay | SlowBody | Reset | ResetMidBody | Stall | GoAway | Refuse
OUTCOME_TYPES = (Respond, Delay, SlowBody, Reset, ResetMidBody, Stall, GoAway, Refuse)


def _check_outcome(outcome: object) -> Outcome:
    if not isinstance(outcome, OUTCOME_TYPES):
        raise TypeError(f"expected a fault outcome (Respond, Reset, ...), got {outcome!r}")
    return outcome


@dataclass(frozen=True, slots=True, init=False)
class InOrder:
    """Serve outcomes in order; the last one then repeats.

    >>> route = InOrder(Respond(503), Reset(), Respond(200))
    >>> [type(route.choose(n, random.Random())).__name__ for n in range(4)]
    ['Respond', 'Reset', 'Respond', 'Respond']
    """

    outcomes: tuple[Outcome, ...]

    def __init__(self, *outcomes: Outcome) -> None:
        if not outcomes:
            raise ValueError("InOrder needs at least one outcome")
        object.__setattr__(self, "outcomes", tuple(_check_outcome(o) for o in outcomes))

    def choose(self, index: int, rng: random.Random) -> Outcome:
        """The outcome for the route's request number ``index`` (from 0)."""
        return self.outcomes[min(index, len(self.outcomes) - 1)]


@dataclass(frozen=True, slots=True, init=False)
class Weighted:
    """Draw each outcome at random with the given weights, from the plan's seeded generator.

    >>> route = Weighted((8, Respond()), (1, Refuse()), (1, Reset()))
    """

    choices: tuple[tuple[float, Outcome], ...]
    _outcomes: tuple[Outcome, ...] = field(repr=False, compare=False)
    _cumulative: tuple[float, ...] = field(repr=False, compare=False)

    def __init__(self, *choices: tuple[float, Outcome]) -> None:
        if not choices:
            raise ValueError("Weighted needs at least one (weight, outcome) pair")
        checked = []
        for weight, outcome in choices:
            if not weight >= 0 or math.isinf(weight):
                raise ValueError(f"weights must be finite and >= 0, got {weight!r}")
            checked.append((weight, _check_outcome(outcome)))
        cumulative = tuple(accumulate(weight for weight, _ in checked))
        if cumulative[-1] <= 0:
            raise ValueError("at least one weight must be positive")
        object.__setattr__(self, "choices", tuple(checked))
        object.__setattr__(self, "_outcomes", tuple(outcome for _, outcome in checked))
        object.__setattr__(self, "_cumulative", cumulative)

    def choose(self, index: int, rng: random.Random) -> Outcome:
        """One draw from ``rng``; ``index`` plays no part."""
        return rng.choices(self._outcomes, cum_weights=self._cumulative)[0]


Route: TypeAlias = InOrder | Weighted
#: What a plan accepts for a route: a route, one outcome (always), or a list (in order).
RouteLike: TypeAlias = Route | Outcome | Sequence[Outcome]


def as_route(value: RouteLike) -> Route:
    """Normalise what a plan accepts for a route into a route."""
    if isinstance(value, InOrder | Weighted):
        return value
    if isinstance(value, OUTCOME_TYPES):
        return InOrder(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return InOrder(*value)
    raise TypeError(f"expected InOrder, Weighted, an outcome or a list of outcomes, got {value!r}")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Per path, what the fault server does with each request.

    >>> plan = FaultPlan(
    ...     routes={
    ...         "/flaky": [Respond(503, retry_after=1), Respond(200)],
    ...         "/chaos": Weighted((6, Respond()), (2, Refuse()), (1, Reset()), (1, Stall(2))),
    ...     },
    ...     default=Respond(),
    ...     seed=42,
    ...     goaway_every=20,
    ... )

    ``routes`` match the exact path (no query). ``default`` serves every
    other path as one route (one counter, one generator); without it they
    get ``Respond()``. Each route draws from its own ``random.Random``
    seeded from ``seed`` and the path, so the outcomes of a route repeat from
    run to run whatever the traffic on other routes. ``goaway_every=N``
    ends each connection after N processed requests, as nginx's
    ``keepalive_requests`` does: GOAWAY on HTTP/2, ``Connection: close`` on
    HTTP/1.1.
    """

    routes: Mapping[str, RouteLike] = field(default_factory=dict)
    default: RouteLike | None = None
    seed: int | str = 0
    goaway_every: int | None = None

    def __post_init__(self) -> None:
        routes = {}
        for path, route in self.routes.items():
            if not path.startswith("/"):
                raise ValueError(f"route paths start with '/', got {path!r}")
            routes[path] = as_route(route)
        object.__setattr__(self, "routes", MappingProxyType(routes))
        if self.default is not None:
            object.__setattr__(self, "default", as_route(self.default))
        if self.goaway_every is not None and self.goaway_every < 1:
            raise ValueError(f"goaway_every must be >= 1, got {self.goaway_every}")

    def route(self, path: str) -> tuple[str | None, Route | None]:
        """The key that counts the path's requests (``None`` for the default) and its route."""
        route = cast(Mapping[str, Route], self.routes).get(path)
        if route is not None:
            return path, route
        return None, cast(Route | None, self.default)

    def new_rng(self, key: str | None) -> random.Random:
        """The generator of one route: a function of the seed and the route's path."""
        return random.Random(f"{self.seed}\x00{'' if key is None else key}")


class Chooser:
    """The mutable half of a plan: request counters and generators, one set per server."""

    __slots__ = ("_counts", "_plan", "_rngs")

    def __init__(self, plan: FaultPlan) -> None:
        self._plan = plan
        self._counts: dict[str | None, int] = {}
        self._rngs: dict[str | None, random.Random] = {}

    def next(self, path: str) -> Outcome:
        """The outcome for the next request to ``path``."""
        key, route = self._plan.route(path)
        if route is None:
            return _OK
        index = self._counts.get(key, 0)
        self._counts[key] = index + 1
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = self._plan.new_rng(key)
        return route.choose(index, rng)
