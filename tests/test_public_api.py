"""The public names users and docs rely on."""

from __future__ import annotations

import subprocess
import sys
import types

import httpx_resilience


def test_all_is_sorted_and_exported() -> None:
    exported = httpx_resilience.__all__
    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions.
    assert exported == sorted(
        exported, key=lambda name: (not name.isupper(), not name[0].isupper(), name)
    )
    public = {
        name
        for name, value in vars(httpx_resilience).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(exported)


def test_module_entry_point_prints_version_and_layers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "httpx_resilience"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert f"httpx-resilience {httpx_resilience.__version__}" in result.stdout
    assert "RetryTransport" in result.stdout
