"""The transports compared: ours, the peers users assemble today, and bare httpx.

Each builder takes the innermost transport (or ``None`` with loopback
keyword arguments) and returns ``(transport, event_hooks, sdk)`` so that
every section builds a configuration the same way. ``sdk`` holds the
OpenTelemetry SDK providers of that configuration, if any, to be cleared
between rounds. No provider is ever installed globally: "no-op" means the
OpenTelemetry API with no SDK behind it, what a user gets by default.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Sdk:
    """An OpenTelemetry SDK tracer and meter provider, recording in memory."""

    tracer_provider: Any
    meter_provider: Any
    exporter: Any
    reader: Any

    @classmethod
    def create(cls) -> Sdk:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        return cls(tracer_provider, meter_provider, exporter, reader)

    def clear(self) -> None:
        self.exporter.clear()

    def counter(self, name: str) -> float:
        """The sum of a counter (all attribute sets) read from the metric reader."""
        data = self.reader.get_metrics_data()
        total = 0.0
        if data is None:
            return total
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        total += sum(point.value for point in metric.data.data_points)
        return total


async def uuid4_request_id(request: httpx.Request) -> None:
    """What users write today: an event hook setting a uuid4 request ID."""
    if "X-Request-ID" not in request.headers:
        request.headers["X-Request-ID"] = uuid.uuid4().hex


def uuid4_request_id_sync(request: httpx.Request) -> None:
    """The same hook for ``httpx.Client`` (whose event hooks are plain functions)."""
    if "X-Request-ID" not in request.headers:
        request.headers["X-Request-ID"] = uuid.uuid4().hex


@dataclass
class Built:
    #: An httpx or httpx2 transport, async or sync (ours serve both).
    transport: Any
    hooks: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)
    sdk: Sdk | None = None


def otel_transport(inner: Any, sdk: Sdk | None, sync: bool = False) -> Any:
    """OpenTelemetry's ``AsyncOpenTelemetryTransport`` around ``inner``, or with
    ``sync`` its ``SyncOpenTelemetryTransport`` (for ``httpx.Client``)."""
    from opentelemetry.instrumentation.httpx import (
        AsyncOpenTelemetryTransport,
        SyncOpenTelemetryTransport,
    )

    cls = SyncOpenTelemetryTransport if sync else AsyncOpenTelemetryTransport
    if sdk is None:
        return cls(inner)
    return cls(inner, tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider)


def peers(inner: Any, sdk: Sdk | None, retry: Any = None, sync: bool = False) -> Built:
    """httpx-retries around OpenTelemetry's transport (a span per attempt), plus a
    uuid4 request-ID hook: what a user assembles today. ``sync``: the same for
    ``httpx.Client`` (OTel's sync transport, a plain-function hook; httpx-retries'
    ``RetryTransport`` serves both). httpx only: neither peer supports httpx2."""
    from httpx_retries import RetryTransport

    return Built(
        RetryTransport(transport=otel_transport(inner, sdk, sync), retry=retry),
        {"request": [uuid4_request_id_sync if sync else uuid4_request_id]},
        sdk,
    )


def ours_full(
    inner: Any, sdk: Sdk | None, module: str = "httpx_resilience", **options: Any
) -> Built:
    """``resilient_transport(base=inner)`` of ``module``: ``httpx_resilience`` for
    httpx, ``httpx_resilience.httpx2`` for httpx2 (async and sync clients alike)."""
    import importlib

    resilient_transport = importlib.import_module(module).resilient_transport

    if sdk is None:
        return Built(resilient_transport(base=inner, **options))
    return Built(
        resilient_transport(
            base=inner,
            tracer_provider=sdk.tracer_provider,
            meter_provider=sdk.meter_provider,
            **options,
        ),
        sdk=sdk,
    )
