"""The command line: ``httpx-resilience demo``, ``get URL`` and ``fault-server``.

See ``docs/cli.md``. ``main()`` is the console script's entry point.
"""

from ._main import main

__all__ = ["main"]
