"""MkDocs hooks (mkdocs.yml): the repository's own pages on the site, with working links.

The pages are written for the repository: README.md links to docs/retries.md,
docs/production.md to ../benchmarks/RESULTS.md. The site serves docs/ as its
root, README.md as its home page and benchmarks/*.md beside the docs, so each
relative link is resolved against the page's place in the repository and
pointed at the target's place on the site. Nothing is copied or edited.

Docstrings show examples as doctest sessions (``>>> ...``), which Markdown
would read as nested block quotes: a session at the start of a line becomes a
``pycon`` code block, in the pages and in the API reference alike.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
DOCS = "docs/"
#: Pages from outside docs/: their path in the repository, and on the site.
EXTRA_PAGES = {
    "README.md": "index.md",
    "benchmarks/README.md": "benchmarks/README.md",
    "benchmarks/RESULTS.md": "benchmarks/RESULTS.md",
}
_ON_SITE = {site: repo for repo, site in EXTRA_PAGES.items()}
# [text](target) and [text]: target; not images' sources nor absolute URLs.
_LINK = re.compile(r"(\]\(|^\[[^\]]+\]:\s*)(?P<target>[^)\s#:]+\.md)(?P<anchor>#[^)\s]*)?", re.M)


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


class _Sessions(Preprocessor):
    """Fence each doctest session (lines from one starting ``>>>`` to a blank line)."""

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        fence: str | None = None
        index = 0
        while index < len(lines):
            line = lines[index]
            opening = _FENCE.match(line)
            if fence is not None:
                if opening and opening[1].startswith(fence):
                    fence = None
            elif opening:
                fence = opening[1]
            elif line.startswith(">>>"):
                session = []
                while index < len(lines) and lines[index].strip():
                    session.append(lines[index])
                    index += 1
                out += ["", "```pycon", *session, "```", ""]
                continue
            out.append(line)
            index += 1
        return out


class _SessionsExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        # Before the fenced-code preprocessor (priority 25), which then renders it.
        md.preprocessors.register(_Sessions(md), "doctest_sessions", 30)


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.markdown_extensions.append(_SessionsExtension())  # type: ignore[arg-type]
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for repo, site in EXTRA_PAGES.items():
        files.append(File.generated(config, site, abs_src_path=str(ROOT / repo)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, **_: Any) -> str:
    site_path = page.file.src_uri
    repo_path = _ON_SITE.get(site_path, DOCS + site_path)

    def relink(match: re.Match[str]) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), match["target"]))
        if target.startswith(DOCS):
            on_site = target.removeprefix(DOCS)
        elif target in EXTRA_PAGES:
            on_site = EXTRA_PAGES[target]
        else:
            return match[0]  # not a page of the site: left for mkdocs to report
        link = posixpath.relpath(on_site, posixpath.dirname(site_path) or ".")
        return f"{match[1]}{link}{match['anchor'] or ''}"

    return _LINK.sub(relink, markdown)
