"""What a run may leave behind: pooled connections in use, open file descriptors, open spans.

Shared by the soak and the cancellation tests: each measures before, runs,
closes, and asserts nothing is left.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from typing import Any

import anyio
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .flavour import HTTPTransport, Layer, httpx

#: Under trio, a body left unread or cut short by a cancellation leaves the
#: async generators of httpx and httpcore (or httpx2 and httpcore2) suspended,
#: one inside the other, as bare httpx does: trio finalizes each when it is
#: garbage collected, with this warning. Nothing leaks (the pool closes the
#: connections); tests that mark themselves with this collect them
#: (``collect_unclosed``) before they end, while the filter applies.
UNFINISHED_BODIES = pytest.mark.filterwarnings(
    r"ignore:Async generator '(httpx2?|httpcore2?)\.[\w.]+' "
    r"was garbage collected before it had been exhausted:ResourceWarning"
)


def base_of(transport: httpx.AsyncBaseTransport) -> HTTPTransport:
    """The ``HTTPTransport`` under a stack of layers."""
    while isinstance(transport, Layer):
        transport = transport.transport
    assert isinstance(transport, HTTPTransport), f"no HTTPTransport at the base: {transport!r}"
    return transport


def connections_in_use(transport: httpx.AsyncBaseTransport) -> list[str]:
    """``info()`` of each pooled connection that is neither idle nor closed.

    Once every response is closed and no request is in flight, a connection
    in this list is one nothing will ever release: it counts against
    ``max_connections`` for good. A connection still connecting
    (``CONNECTING``) with no request waiting on it is such a one too.
    """
    return [
        f"{connection!r}: {connection.info()}"
        for connection in base_of(transport).connections
        if not (connection.is_idle() or connection.is_closed())
    ]


def open_fds() -> set[str]:
    """What this process's file descriptors point at: ``"socket:[inode]"``, paths (Linux).

    Compared as a set, not counted: a server thread of an earlier test may
    close its own sockets while a test runs, and a number freed may be
    taken again by something else.
    """
    return {target for fd in os.listdir("/proc/self/fd") if (target := _target(fd))}


def _target(fd: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # closed between the listing and the look (the listing's own, say)


async def fds_left_open(before: set[str], *, within: float = 3.0) -> list[str]:
    """File descriptors opened since ``before`` and still open, once none are or ``within`` passed.

    Sockets are closed by tasks that finish a little after the block that
    cancelled them, and a TLS close may take a round trip: poll, bounded,
    rather than sleep a fixed time.
    """
    deadline = time.monotonic() + within
    left = open_fds() - before
    while left and time.monotonic() < deadline:
        await anyio.sleep(0.01)
        left = open_fds() - before
    return sorted(left)


def collect_unclosed() -> list[str]:
    """Run the garbage collector; what it found open: sockets and transports never closed.

    Such a socket held its file descriptor (and the server's connection)
    until now. Other warnings the collection raises go on to the usual
    filters.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    unclosed = []
    for warning in caught:
        message = str(warning.message)
        if issubclass(warning.category, ResourceWarning) and message.startswith("unclosed"):
            unclosed.append(message)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return unclosed


class SpanCounter(SpanProcessor):
    """Counts spans started and ended, and keeps the ones still open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = 0
        self.ended = 0
        self._open: dict[int, Span] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        with self._lock:
            self.started += 1
            self._open[span.context.span_id] = span

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.ended += 1
            if span.context is not None:
                self._open.pop(span.context.span_id, None)

    def open_spans(self) -> list[str]:
        """Name and attributes of each span started and never ended."""
        with self._lock:
            spans = list(self._open.values())
        return [f"{span.name} {dict(span.attributes or {})}" for span in spans]

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Recording:
    """SDK tracer and meter providers that record in memory, counting span starts and ends.

    Passed to the stack explicitly (``tracer_provider=``, ``meter_provider=``),
    never set globally.
    """

    def __init__(self) -> None:
        self.counter = SpanCounter()
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(self.counter)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``resilient_transport()``."""
        return {
            "tracing": True,
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
        }

    def exported(self) -> int:
        return len(self.exporter.get_finished_spans())

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def describe(summary: str, problems: dict[str, list[str]], limit: int = 10) -> str:
    """A failure message: the run's summary, then each problem with its first few cases."""
    lines = [summary]
    for name, found in problems.items():
        lines.append(f"{name}:")
        lines += [f"  {item}" for item in found[:limit]]
        if len(found) > limit:
            lines.append(f"  ... and {len(found) - limit} more")
    return "\n".join(lines)
