"""Command line: ``httpx-resilience`` / ``python -m httpx_resilience``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import VERSION

LAYERS = (
    ("RequestIdTransport", "one X-Request-ID per logical request, shared by its attempts"),
    ("IdempotencyKeyTransport", "one Idempotency-Key per POST/PATCH, shared by its attempts"),
    ("RetryTransport", "re-sends what is safe to re-send, Tenacity backoff, Retry-After"),
    ("TracingTransport", "one OpenTelemetry span and duration point per attempt"),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="httpx-resilience",
        description="Resilience middleware for httpx, built as composable transports.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.parse_args(argv)
    print(f"httpx-resilience {VERSION}")
    print("layers, outermost first:")
    width = max(len(name) for name, _ in LAYERS)
    for name, job in LAYERS:
        print(f"  {name:<{width}}  {job}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
