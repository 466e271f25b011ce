"""The public names users and docs rely on."""

from __future__ import annotations

import subprocess
import sys

import httpx_resilience


def test_all_is_sorted_and_exported() -> None:
    exported = httpx_resilience.__all__
    assert exported == sorted(exported)
    public = {name for name in vars(httpx_resilience) if not name.startswith("_")}
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
