from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import pytest

from . import servers as harness
from .flavour import FLAVOUR
from .servers import ScriptedApp, ServerThread

# Tests of what no flavour changes (the command line, which uses httpx; the
# fault server, the test servers) and tests that name both flavours (the
# SDKs, which need httpx2; httpx and httpx2 side by side) run once.
collect_ignore_glob = (
    [
        "test_cli*.py",
        "test_fault_*.py",
        "test_flavours.py",
        "test_raw_server.py",
        "test_sdks.py",
        "test_servers.py",
    ]
    if FLAVOUR != "httpx"
    else []
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "httpx_only: the test uses a tool that knows httpx only (not httpx2)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if FLAVOUR == "httpx":
        return
    skip = pytest.mark.skip(reason=f"the tool it uses knows httpx only, not {FLAVOUR}")
    for item in items:
        if item.get_closest_marker("httpx_only"):
            item.add_marker(skip)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return cast(str, request.param)


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerThread]:
    server = harness.start_servers(ScriptedApp())
    yield server
    server.stop()
    # Server-side errors never reach a test on their own; fail the session on them.
    assert server.problems == [], "\n".join(server.problems)


@pytest.fixture
def app(servers: ServerThread) -> ScriptedApp:
    return servers.app


@pytest.fixture
def unique_path() -> str:
    return f"/t/{uuid.uuid4().hex}"


@pytest.fixture
def closed_port() -> int:
    return harness.closed_port()
