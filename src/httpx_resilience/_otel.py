"""OpenTelemetry, when installed: the one place that imports it.

Every other layer works without ``opentelemetry-api``; the layers that
emit telemetry ask for it here and get ``None`` (or a clear ImportError)
when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _version

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Meter, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised by the no-otel install test
    _metrics = None  # type: ignore[assignment]
    _trace = None  # type: ignore[assignment]

OTEL_AVAILABLE = _trace is not None

_NOOP_INSTRUMENTS: tuple[type, ...] = (
    ()
    if _metrics is None
    else (_metrics.NoOpCounter, _metrics.NoOpHistogram, _metrics.NoOpUpDownCounter)
)

SCOPE = "httpx_resilience"

#: Bucket boundaries (seconds) the HTTP and DNS semantic conventions advise.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def require_otel(feature: str) -> None:
    """Raise a helpful ImportError when ``feature`` needs OpenTelemetry."""
    if not OTEL_AVAILABLE:
        raise ImportError(
            f"{feature} needs the OpenTelemetry API: pip install 'httpx-resilience[otel]'"
        )


def get_tracer(tracer_provider: TracerProvider | None = None) -> Tracer:
    require_otel("tracing")
    return _trace.get_tracer(SCOPE, _version.VERSION, tracer_provider)


def get_meter(meter_provider: MeterProvider | None = None) -> Meter | None:
    """The library's meter, or ``None`` when OpenTelemetry is not installed."""
    if _metrics is None:
        return None
    return _metrics.get_meter(SCOPE, _version.VERSION, meter_provider)


def counter(
    meter_provider: MeterProvider | None, name: str, unit: str, description: str
) -> Counter | None:
    """A counter of the library's meter, or ``None`` without OpenTelemetry."""
    meter = get_meter(meter_provider)
    if meter is None:
        return None
    return meter.create_counter(name, unit=unit, description=description)


def may_record(instrument: Any) -> bool:
    """Whether a measurement on ``instrument`` can reach a meter that keeps it.

    ``False`` for the API's no-op instruments, and for the instruments of the
    global meter provider while none is set: OpenTelemetry's proxy holds the
    real instrument, once a provider is set, in ``_real_instrument``. Should
    that name ever change, the answer is ``True`` (measure as usual), never
    a lost measurement.
    """
    real = getattr(instrument, "_real_instrument", instrument)
    return real is not None and not isinstance(real, _NOOP_INSTRUMENTS)


def current_span() -> Any:
    """The caller's current span, or ``None`` without OpenTelemetry."""
    if _trace is None:
        return None
    return _trace.get_current_span()
