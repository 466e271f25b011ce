"""Every Python example in README.md and docs/*.md runs, as written.

Each ```` ```python ```` block runs as a module and each ```` ```pycon ````
block as a doctest, in a process of its own, inside a network namespace of
its own where every host name resolves to a local server that answers
every request (tests/docs_runner.py says how). An HTML comment right before
a block changes how it runs (docs/contributing.md lists these directives):

- ``<!-- docs: continue -->``: the block continues the page's previous
  python block; it runs after the blocks it continues, as one module;
- ``<!-- docs: pytest -->``: the block is a test module; pytest runs it;
- ``<!-- docs: interrupt -->``: the block serves until stopped; Ctrl-C
  (SIGINT) stops it once it has printed its first line, and it must then
  end cleanly.

A block that uses Redis gets a redis-server of its own at ``REDIS_URL``
(skipped where redis-server is not installed). A block that imports httpx2,
openai, anthropic or vcrpy is skipped where they are not installed (Python
3.10). The count of blocks is printed at the end of the
run (conftest.py).
"""

from __future__ import annotations

import ast
import doctest
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python", "pycon"}
#: Blocks may use these only where they are installed (each needs Python 3.11+).
OPTIONAL = {"httpx2", "httpcore2", "openai", "anthropic", "vcr"}
#: The SDKs talk to these hosts on their own.
SDK_HOSTS = ("api.openai.com", "api.anthropic.com")
DIRECTIVES = {"continue", "pytest", "interrupt"}
TIMEOUT = 60

_FENCE = re.compile(
    r"(?:<!-- docs: (?P<directive>[\w-]+) -->\n)?"  # a directive on the line before
    r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```\s*$",
    re.MULTILINE | re.DOTALL,
)
_HOST = re.compile(r"\bhttps?://([A-Za-z0-9.-]+)")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the block's first line of code
    lang: str
    code: str
    directive: str | None
    chain: tuple[Block, ...] = field(default=(), repr=False)  # the blocks it continues

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def collect() -> list[Block]:
    blocks: list[Block] = []
    for page in PAGES:
        text = page.read_text()
        relative = page.relative_to(ROOT).as_posix()
        chain: tuple[Block, ...] = ()
        for match in _FENCE.finditer(text):
            lang, directive = match["lang"], match["directive"]
            if lang not in RUNNABLE:
                continue
            if directive is not None and directive not in DIRECTIVES:
                raise ValueError(f"{relative}: unknown directive {directive!r}")
            line = text.count("\n", 0, match.start("code")) + 1
            if directive == "continue":
                if lang != "python" or not chain:
                    raise ValueError(f"{relative}:{line}: nothing before it to continue")
                block = Block(relative, line, lang, match["code"], directive, chain)
            else:
                block = Block(relative, line, lang, match["code"], directive)
            blocks.append(block)
            if lang == "python" and directive in (None, "continue"):
                chain = (*block.chain, block)
    return blocks


BLOCKS = collect()


def imported(block: Block) -> set[str]:
    """Top-level names of the modules a block imports (httpx2 for our httpx2 flavour)."""
    code = block.code
    if block.lang == "pycon":
        code = "".join(example.source for example in doctest.DocTestParser().get_examples(code))
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            names.add(module.split(".")[0])
            if module.startswith("httpx_resilience.httpx2"):
                names.add("httpx2")
    return names


@pytest.fixture(scope="session")
def docs_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA for the docs' servers, and a check that network namespaces can be had."""
    if shutil.which("unshare") is None:
        pytest.skip("the docs run in a network namespace of their own: needs `unshare`")
    probe = subprocess.run(
        ["unshare", "--net", "--map-root-user", "true"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            "the docs run in a network namespace of their own, and "
            f"`unshare --net --map-root-user` failed here: {probe.stderr.strip()}"
        )
    world = tmp_path_factory.mktemp("docs")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(world / "ca.pem"))
    ca.private_key_pem.write_to_path(str(world / "ca-key.pem"))
    return world


def identities() -> list[str]:
    names = {"localhost", "127.0.0.1", *SDK_HOSTS}
    for block in BLOCKS:
        names.update(_HOST.findall(block.code))
    return sorted(names)


def child(block: Block, world: Path, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run `block` in a namespace of its own."""
    # The page's files as a user has them: the CA an example loads by name.
    shutil.copy(world / "ca.pem", workdir / "internal-ca.pem")
    spec = workdir / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "blocks": [
                    {"path": b.path, "line": b.line, "lang": b.lang, "code": b.code}
                    for b in (*block.chain, block)
                ],
                "mode": block.directive or "run",
                "identities": identities(),
                "redis": shutil.which("redis-server") if needs_redis(block) else None,
                "ca_cert": str(world / "ca.pem"),
                "ca_key": str(world / "ca-key.pem"),
            }
        )
    )
    # The machine's settings that would change what an example does are left out.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "HTTPX_RESILIENCE_", "PYTEST_"))
        and key.upper() not in ("SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    }
    env.update(
        SSL_CERT_FILE=str(world / "ca.pem"),
        # This checkout's package, even where the installed one is another's.
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        PYTHONUNBUFFERED="1",
        # What a user of the SDKs has in their environment.
        OPENAI_API_KEY="sk-docs-example",
        ANTHROPIC_API_KEY="sk-ant-docs-example",
    )
    command = [
        "unshare",
        "--net",
        "--map-root-user",
        sys.executable,
        "-W",
        "error",
        # A long-lived client left open at exit, as applications leave theirs.
        "-W",
        "ignore::ResourceWarning",
        "-m",
        "tests.docs_runner",
        str(spec),
    ]
    return command, env


def interrupted(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run until the first line of output, then press Ctrl-C; the exit code and output."""
    with subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        # An example that never prints would hold readline() for ever.
        watchdog = threading.Timer(TIMEOUT, process.kill)
        watchdog.start()
        try:
            first = process.stdout.readline()
            if first and process.poll() is None:
                process.send_signal(signal.SIGINT)
            rest, _ = process.communicate()
        finally:
            watchdog.cancel()
        return process.returncode, first + rest


def needs_redis(block: Block) -> bool:
    return any(
        "redis" in imported(part) or "RedisState" in part.code for part in (*block.chain, block)
    )


def _skip_reason(block: Block) -> str | None:
    if needs_redis(block) and shutil.which("redis-server") is None:
        return f"{block.id} uses Redis, and redis-server is not installed (.ci/run installs it)"
    for part in (*block.chain, block):
        for name in sorted(imported(part) & OPTIONAL):
            if importlib.util.find_spec(name) is None:
                return f"{part.id} imports {name}, which is not installed (Python 3.11+)"
    return None


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, docs_world: Path, tmp_path: Path) -> None:
    reason = _skip_reason(block)
    if reason is not None:
        pytest.skip(reason)
    command, env = child(block, docs_world, tmp_path)
    if block.directive == "interrupt":
        returncode, output = interrupted(command, env, tmp_path)
    else:
        result = subprocess.run(
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        returncode, output = result.returncode, result.stdout
    print(output, end="")  # what the example printed: pytest -rA shows it
    assert returncode == 0, f"{block.id} failed (exit {returncode}):\n{output}"


def test_every_block_is_collected() -> None:
    # The collector's own check: a fence it misreads would silently drop examples.
    fences = sum(
        len(re.findall(r"^```(?:python|pycon)\s*$", page.read_text(), re.MULTILINE))
        for page in PAGES
    )
    assert len(BLOCKS) == fences
    assert all(block.code.strip() for block in BLOCKS)


_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR"}
_LEVELS["exception"] = "ERROR"


def log_calls() -> list[tuple[str, str, str, set[str]]]:
    """(where, level, message format, extra= keys) of every record the package logs."""
    package = ROOT / "src" / "httpx_resilience"
    calls = []
    for path in sorted(package.rglob("*.py")):
        if "httpx2" in path.relative_to(package).parts:
            continue  # generated from the modules read here
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            # `extra = {...}` built before the call, as the breaker does.
            extras = {
                target.id: node.value
                for node in ast.walk(function)
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(function):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "logger"
                    and node.func.attr in _LEVELS
                ):
                    continue
                message = node.args[0]
                assert isinstance(message, ast.Constant), f"{path}:{node.lineno}"
                keys: set[str] = set()
                for keyword in node.keywords:
                    if keyword.arg != "extra":
                        continue
                    value = keyword.value
                    if isinstance(value, ast.Name):
                        value = extras[value.id]
                    assert isinstance(value, ast.Dict), f"{path}:{node.lineno}"
                    keys = {k.value for k in value.keys if isinstance(k, ast.Constant)}
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                calls.append((where, _LEVELS[node.func.attr], message.value, keys))
    return calls


def test_observability_lists_every_log_record() -> None:
    # docs/observability.md promises the list is complete: each record's
    # message, level and attributes are on one row of its table.
    rows = [
        line
        for line in (ROOT / "docs" / "observability.md").read_text().splitlines()
        if line.startswith("|")
    ]
    calls = log_calls()
    assert len(calls) >= 7
    for where, level, message, keys in calls:
        pattern = ".*?".join(re.escape(part) for part in re.split(r"%[-.\d]*[sdfr]", message))
        matching = [row for row in rows if re.search(pattern, row)]
        assert matching, f"{where}: no row of the logs table shows {message!r}"
        [row] = matching
        assert f"`{level}`" in row, f"{where}: the row does not say {level}"
        missing = {key for key in keys if f"`{key}`" not in row}
        assert not missing, f"{where}: the row does not list {sorted(missing)}"
