from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest

from . import servers as harness
from .flavour import FLAVOUR
from .servers import ScriptedApp, ServerThread

# Tests of what no flavour changes (the command line, which uses httpx; the
# fault server, the test servers) and tests that name both flavours (the
# SDKs, which need httpx2; httpx and httpx2 side by side; the docs' examples,
# which import the flavour they are about) run once.
collect_ignore_glob = (
    [
        "test_cli*.py",
        "test_docs.py",
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


DOC_BLOCK = "test_docs.py::test_doc_block["


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_doc_blocks] = sum(DOC_BLOCK in item.nodeid for item in session.items)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if FLAVOUR == "httpx":
        return
    skip = pytest.mark.skip(reason=f"the tool it uses knows httpx only, not {FLAVOUR}")
    for item in items:
        if item.get_closest_marker("httpx_only"):
            item.add_marker(skip)


_doc_blocks = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say how many examples of the docs ran (tests/test_docs.py), when any were collected."""
    collected = config.stash.get(_doc_blocks, 0)
    if not collected:
        return
    outcomes: dict[str, set[str]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if DOC_BLOCK in getattr(report, "nodeid", ""):
                outcomes.setdefault(outcome, set()).add(report.nodeid)
    # A test that failed at teardown after passing counts once, as failed.
    passed = outcomes.get("passed", set()) - outcomes.get("failed", set())
    counts = ", ".join(
        f"{len(nodes)} {outcome}"
        for outcome, nodes in (("passed", passed), *sorted(outcomes.items()))
        if nodes and outcome != "passed"
    )
    counts = f"{len(passed)} passed" + (f", {counts}" if counts else "")
    terminalreporter.write_line(
        f"docs: {collected} Python blocks collected from README.md and docs/*.md; {counts}"
    )


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
