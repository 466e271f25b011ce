"""The OpenTelemetry context and propagation pieces ``TracingTransport`` uses.

An extension of ``_otel``: this module imports ``opentelemetry`` at the top,
so only code that has passed ``_otel.require_otel`` imports it (lazily).
"""

from __future__ import annotations

from opentelemetry import context as _context
from opentelemetry.context import (
    Context,
    attach,
    create_key,
    detach,
    get_current,
    get_value,
    set_value,
)
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

__all__ = [
    "SUPPRESS_HTTP_INSTRUMENTATION_KEY",
    "SUPPRESS_INSTRUMENTATION_KEYS",
    "Context",
    "SpanKind",
    "Status",
    "StatusCode",
    "attach",
    "detach",
    "get_current",
    "get_value",
    "inject",
    "set_span_in_context",
    "set_value",
]

# The context keys the OpenTelemetry instrumentations check before tracing
# (``opentelemetry.instrumentation.utils.is_http_instrumentation_enabled``).
# ``create_key`` gives them a random suffix, so only these very objects work.
# They are private to opentelemetry-api: should one go away, a key of our own
# stands in, which still keeps stacked tracing layers from tracing twice.
SUPPRESS_HTTP_INSTRUMENTATION_KEY: str = getattr(
    _context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None
) or create_key("suppress_http_instrumentation")
_SUPPRESS_INSTRUMENTATION_KEY: str = getattr(
    _context, "_SUPPRESS_INSTRUMENTATION_KEY", None
) or create_key("suppress_instrumentation")

#: Keys that, set in the caller's context, switch our tracing off too: the
#: general one, its plain-string twin (``suppress_instrumentation``, still
#: honoured by the instrumentations) and the HTTP one, so that two tracing
#: layers stacked by mistake trace each attempt once.
SUPPRESS_INSTRUMENTATION_KEYS = (
    _SUPPRESS_INSTRUMENTATION_KEY,
    "suppress_instrumentation",
    SUPPRESS_HTTP_INSTRUMENTATION_KEY,
)
