"""Command line: ``httpx-resilience`` / ``python -m httpx_resilience``.

``httpx-resilience demo``, ``httpx-resilience get URL``,
``httpx-resilience fault-server``; without a command, the version and the
layers. See ``docs/cli.md``.
"""

from __future__ import annotations

import sys

from .cli import main as main

if __name__ == "__main__":
    sys.exit(main())
