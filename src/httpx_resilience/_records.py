"""What the layers report in ``response.extensions``: plain records both flavours share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timings:
    """How long each phase of one attempt took, in seconds: ``response.extensions["timings"]``.

    >>> timings = response.extensions["timings"]  # doctest: +SKIP
    >>> if not timings.connection_reused:  # doctest: +SKIP
    ...     print(f"dns {timings.dns:.3f} connect {timings.connect:.3f} tls {timings.tls}")
    >>> ttfb = timings.queue + timings.send + timings.wait  # doctest: +SKIP

    ``dns``, ``connect`` and ``tls`` are ``None`` when the attempt did not
    open a connection (``connection_reused``), when the host is an IP
    address (no lookup) and, for ``tls``, over plain HTTP. ``total`` ends
    when the response headers are in: reading the body is the caller's time.
    """

    dns: float | None
    """Name lookup: the resolver call, or the DNS cache."""
    connect: float | None
    """TCP connect (every address tried, until one answers)."""
    tls: float | None
    """TLS handshake."""
    queue: float
    """Waiting for a connection or an HTTP/2 stream, setup not included."""
    send: float
    """Writing the request headers and body."""
    wait: float
    """From the end of the request to the response headers: time to first byte."""
    total: float
    """From the start of the attempt until the response headers were in."""
    connection_reused: bool
    """Whether the attempt ran on a connection that some earlier request opened."""


@dataclass(frozen=True, slots=True)
class HedgeHistory:
    """What the hedging layer did for a response: ``response.extensions["hedging"]``.

    ``attempts`` were sent; ``winner`` is the number (from 1) of the one
    whose answer this is, ``None`` when none was acceptable and this is the
    last to come back.

    >>> response.extensions["hedging"]  # doctest: +SKIP
    HedgeHistory(attempts=2, winner=2)
    """

    attempts: int
    winner: int | None


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One decision to re-send: after which attempt, why, and the wait.

    ``unprocessed`` marks a re-send at once of a request the server provably
    never processed (HTTP/2 ``REFUSED_STREAM``, a connection closed by
    GOAWAY before the request went out): it is not counted as an attempt of
    the policy and waits for nothing.
    """

    attempt: int
    reason: str
    wait: float
    unprocessed: bool = False


@dataclass(frozen=True, slots=True)
class RetryHistory:
    """What the retry layer did for a response: ``response.extensions["retry"]``.

    ``attempts`` counts every time the request was sent, unprocessed
    re-sends included.

    >>> history = response.extensions["retry"]  # doctest: +SKIP
    >>> history.attempts, [(e.reason, e.wait) for e in history.events]  # doctest: +SKIP
    (3, [('503', 0.61), ('503', 1.2)])
    """

    attempts: int
    events: tuple[RetryEvent, ...] = ()
