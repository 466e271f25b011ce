"""Resilience middleware for httpx, built as composable transports."""

__version__ = "0.1.0"

__all__: list[str] = []
