from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import pytest

from . import servers as harness
from .servers import ScriptedApp, ServerThread


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
