"""Write the code nobody edits by hand: sync twins of async code, and the httpx2 flavour.

One source serves four clients: httpx and httpx2, async and sync
(docs/contributing.md says why it is done this way).

- Sync from async. In a module of the package or of the tests, the async code
  between ``# unasync: begin`` and ``# unasync: end`` is the source of the sync
  code right after it, between ``# unasync: generated ...`` and
  ``# unasync: generated end``: the same text with ``async``/``await``
  dropped and async names replaced by their sync counterparts (``UNASYNC``).
- httpx2 from httpx. ``src/httpx_resilience/httpx2/`` is the package again,
  bound to httpx2 and httpcore2: each module that imports httpx or httpcore
  (or such a module of ours) is copied with the two module names replaced.
  Modules that import neither (pure decisions, OpenTelemetry, the request-ID
  context) are not copied: the httpx2 flavour imports them from the main
  package, so both flavours share them (one ``request_id()`` binding, one
  ``Timings`` class).

    python scripts/generate.py          # rewrite what is generated
    python scripts/generate.py --check  # exit 1 if anything generated is stale (CI)

Generated text is formatted with ruff, as the rest of the code is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "httpx_resilience"
FLAVOUR_DIR = PACKAGE / "httpx2"
#: Where unasync regions may be, besides the package.
REGION_ROOTS = (PACKAGE, ROOT / "tests")
#: Subpackages that serve the httpx flavour only (the command line, the fault
#: server) or are generated.
NOT_COPIED = {"cli", "testing", "httpx2", "__main__.py"}

BEGIN = "# unasync: begin"
END = "# unasync: end"
GENERATED = "# unasync: generated from the block above by scripts/generate.py; do not edit"
GENERATED_END = "# unasync: generated end"

#: (pattern, replacement) applied in order to every line of an unasync region.
UNASYNC: list[tuple[str, str]] = [
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\bhandle_async_request\b", "handle_request"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\bAsyncByteStream\b", "SyncByteStream"),
    # A method that hands back the inner transport's coroutine returns its response.
    (r"\bCoroutine\[Any, Any, ([\w.]+)\]", r"\1"),
    (r"\b(_?)Async([A-Z]\w*)", r"\1\2"),
    # Our own async helpers are named _async_x; their twins _x.
    (r"\b_async_(\w+)", r"_\1"),
    (r"\bAnyIOBackend\b", "SyncBackend"),
    (r"\bself\._sleep\b", "self._sync_sleep"),
    (r"\banyio\.current_time\(\)", "time.monotonic()"),
    (r"\bResolver\b", "SyncResolver"),
    (r"\bdefault_resolver\b", "default_sync_resolver"),
    # A test's twin runs for a sync client, under a name of its own.
    (r"\bdef test_", "def test_sync_"),
    (r"\bTimedNetworkBackend\b", "SyncTimedNetworkBackend"),
    (r"\bTimedStream\b", "SyncTimedStream"),
    (r"\bGoawayGuardStream\b", "SyncGoawayGuardStream"),
    (r"\bGuardedConnectionPool\b", "SyncGuardedConnectionPool"),
    (r"\bGuardedConnection\b", "SyncGuardedConnection"),
    (r"\b_GuardingBackend\b", "_SyncGuardingBackend"),
]
_UNASYNC = [(re.compile(pattern), repl) for pattern, repl in UNASYNC]

#: The two module names the httpx2 flavour replaces, as whole words: not
#: ``opentelemetry.instrumentation.httpx`` nor ``httpx-resilience``, and not
#: a string that is the bare name (``"httpx"``: code that tells flavours apart).
FLAVOUR_NAMES = re.compile(r'(?<![\w.\-])(httpx|httpcore)(?![\w\-])|"(httpx|httpcore)"')
_IMPORTS_FLAVOUR = re.compile(r"^\s*(?:import|from)\s+(?:httpx|httpcore)\b", re.MULTILINE)
_RELATIVE = re.compile(r"^(\s*)from \.(\w*) import (.+)$", re.MULTILINE)


def unasync(lines: list[str], used: set[int]) -> list[str]:
    """The sync twin of async source lines."""
    out = []
    for line in lines:
        for index, (pattern, repl) in enumerate(_UNASYNC):
            new = pattern.sub(repl, line)
            if new != line:
                used.add(index)
                line = new
        if line:
            out.append(line)
    return out


def with_twins(text: str, path: Path, used: set[int]) -> str:
    """``text`` with every unasync region followed by its freshly generated twin."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        if line.strip() != BEGIN:
            continue
        indent = line[: len(line) - len(line.lstrip())]
        start = index
        while index < len(lines) and lines[index].strip() != END:
            if lines[index].strip() == BEGIN:
                sys.exit(f"{path}:{index + 1}: unasync regions do not nest")
            index += 1
        if index == len(lines):
            sys.exit(f"{path}:{start}: '{BEGIN}' without '{END}'")
        source = lines[start:index]
        out += source
        out.append(lines[index])
        index += 1
        # Drop the twin generated last time.
        if index < len(lines) and lines[index].strip() == GENERATED:
            while index < len(lines) and lines[index].strip() != GENERATED_END:
                index += 1
            index += 1
        out.append(f"{indent}{GENERATED}\n")
        out += unasync(source, used)
        out.append(f"{indent}{GENERATED_END}\n")
    return "".join(out)


def flavoured_modules(modules: dict[str, str]) -> set[str]:
    """Names of the modules bound to httpx: they import it, or such a module of ours."""
    flavoured = {name for name, text in modules.items() if _IMPORTS_FLAVOUR.search(text)}
    while True:
        more = {
            name
            for name, text in modules.items()
            if name not in flavoured and any(dep in flavoured for dep in _relative_deps(text))
        }
        if not more:
            return flavoured
        flavoured |= more


def _relative_deps(text: str) -> Iterable[str]:
    for match in _RELATIVE.finditer(text):
        module, names = match.group(2), match.group(3)
        if module:
            yield module
        else:
            yield from (n.strip().split(" as ")[0] for n in names.strip("()").split(","))


def for_httpx2(text: str, name: str, flavoured: set[str]) -> str:
    """A module of the main package, bound to httpx2 and httpcore2."""

    def relative(match: re.Match[str]) -> str:
        indent, module, names = match.groups()
        if module:
            level = "." if module in flavoured else ".."
            return f"{indent}from {level}{module} import {names}"
        deps = [n.strip() for n in names.strip("()").split(",") if n.strip()]
        own = [dep for dep in deps if dep.split(" as ")[0] in flavoured]
        shared = [dep for dep in deps if dep not in own]
        lines = [f"{indent}from .. import {', '.join(shared)}"] if shared else []
        lines += [f"{indent}from . import {', '.join(own)}"] if own else []
        return "\n".join(lines)

    text = FLAVOUR_NAMES.sub(lambda m: m.group(0) if m.group(2) else m.group(1) + "2", text)
    text = _RELATIVE.sub(relative, text)
    header = (
        f"# Generated by scripts/generate.py from src/httpx_resilience/{name}.py, for httpx2.\n"
        "# Edit that file, then run the script: this one is overwritten.\n"
    )
    return header + text


def ruff(text: str, path: Path) -> str:
    """``text`` with its imports sorted and formatted, as ruff leaves the rest of the code."""
    for command in (
        ["ruff", "check", "--select", "I", "--fix", "--quiet", "--exit-zero"],
        ["ruff", "format", "--quiet"],
    ):
        result = subprocess.run(
            [*command, "--stdin-filename", str(path), "-"],
            input=text,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"ruff failed on {path}:\n{result.stderr}")
        text = result.stdout
    return text


def expected_files() -> tuple[dict[Path, str], set[int]]:
    """Every file the generator writes, with its content."""
    used: set[int] = set()
    files: dict[Path, str] = {}
    for root in REGION_ROOTS:
        for path in sorted(root.rglob("*.py")):
            if FLAVOUR_DIR in path.parents:
                continue
            text = path.read_text()
            if BEGIN in text:
                files[path] = ruff(with_twins(text, path, used), path)

    sources = {
        path.stem: files.get(path, path.read_text())
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name not in NOT_COPIED
    }
    flavoured = flavoured_modules(sources)
    for name in sorted(flavoured):
        target = FLAVOUR_DIR / f"{name}.py"
        files[target] = ruff(for_httpx2(sources[name], name, flavoured), target)
    return files, used


def main(argv: list[str]) -> int:
    check = "--check" in argv
    files, used = expected_files()
    unused = [UNASYNC[i][0] for i in range(len(UNASYNC)) if i not in used]
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    extra = sorted(set(FLAVOUR_DIR.glob("*.py")) - set(files))
    if check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}")
        for path in extra:
            print(f"not generated any more: {path.relative_to(ROOT)}")
        if unused:
            print(f"unasync patterns no region uses: {unused}")
        if stale or extra or unused:
            print("run: python scripts/generate.py")
            return 1
        return 0
    FLAVOUR_DIR.mkdir(exist_ok=True)
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    for path in extra:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    if unused:
        print(f"warning: unasync patterns no region uses: {unused}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
