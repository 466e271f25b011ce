"""The flavour under test: httpx (default) or httpx2, with our package bound to it.

Tests import httpx, httpcore and the library's names from here::

    from .flavour import RetryTransport, httpx
    from .flavour._retry import DRAIN_LIMIT

so that the same tests run against either flavour: ``python -m pytest`` tests
httpx, ``HTTPX_RESILIENCE_FLAVOUR=httpx2 python -m pytest`` tests httpx2 with
``httpx_resilience.httpx2``. Nothing is aliased process-wide: the library
under test imports httpx2 itself, as it does for users.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

FLAVOUR = os.environ.get("HTTPX_RESILIENCE_FLAVOUR", "httpx")
if FLAVOUR not in ("httpx", "httpx2"):
    raise RuntimeError(f"HTTPX_RESILIENCE_FLAVOUR must be httpx or httpx2, not {FLAVOUR!r}")

#: The package bound to the flavour under test.
PACKAGE = "httpx_resilience" if FLAVOUR == "httpx" else "httpx_resilience.httpx2"

httpx: Any = importlib.import_module(FLAVOUR)
httpcore: Any = importlib.import_module("httpcore" if FLAVOUR == "httpx" else "httpcore2")
package: ModuleType = importlib.import_module(PACKAGE)

globals().update({name: getattr(package, name) for name in package.__all__})
__version__ = package.__version__


class _Loader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system stamped ours on it


class _Finder(importlib.abc.MetaPathFinder):
    """``tests.flavour._retry`` is the flavour's ``_retry`` module itself."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        prefix = f"{__name__}."
        if not fullname.startswith(prefix):
            return None
        name = fullname.removeprefix(prefix)
        # Modules both flavours share (no httpx in them) live in the main package only.
        target = f"{PACKAGE}.{name}"
        if importlib.util.find_spec(target) is None:
            target = f"httpx_resilience.{name}"
        return importlib.machinery.ModuleSpec(fullname, _Loader(target))


sys.meta_path.insert(0, _Finder())
