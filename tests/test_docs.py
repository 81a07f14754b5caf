"""The documentation site builds with `mkdocs build --strict` and has no broken internal link."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Page(HTMLParser):
    """The ids a page defines and the links (href/src) it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif (name == "href" and tag in ("a", "link")) or (name == "src" and tag in ("img", "script")):
                self.links.append(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``mkdocs build --strict`` (any warning fails the build)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _resolve(site: Path, page: Path, link: str) -> tuple[Path, str] | None:
    """The file and fragment an internal link points to; None for an external link."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("mailto:", "data:", "javascript:")):
        return None
    target, fragment = urldefrag(link)
    path = unquote(urlsplit(target).path)
    if not path:
        return page, fragment
    resolved = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    resolved = Path(os.path.normpath(resolved))
    if resolved.is_dir() or path.endswith("/"):
        resolved = resolved / "index.html"
    return resolved, fragment


def test_every_internal_link_resolves(site: Path) -> None:
    """Every href/src between the site's pages and assets names a file that exists, and an anchor on it."""
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(pages) >= 15
    parsed = {page: _parse(page) for page in pages}
    broken: list[str] = []
    checked = 0
    for page, info in parsed.items():
        for link in info.links:
            target = _resolve(site, page, link)
            if target is None:
                continue
            checked += 1
            path, fragment = target
            if not path.is_file():
                broken.append(f"{page.relative_to(site)}: {link} (no {path.relative_to(site)})")
            elif fragment and path.suffix == ".html":
                ids = parsed[path].ids if path in parsed else _parse(path).ids
                if fragment not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no #{fragment})")
    assert checked > 500
    assert broken == [], f"{len(broken)} broken links:\n" + "\n".join(broken[:50])


def test_pages_carry_their_content(site: Path) -> None:
    """The includes were expanded: README sections, the config reference, the CLI help, the report, the API."""

    def text(name: str) -> str:
        # What a reader sees (code blocks are split into highlighting spans).
        return html.unescape(re.sub(r"<[^>]+>", "", (site / name).read_text(encoding="utf-8")))

    assert "kvstore-sdk[all]" in text("index.html")
    assert "tools/dev.py demo" in text("getting-started/index.html")
    assert "max_entries" in text("configuration/index.html")  # the generated config reference
    assert "Busy is not down" in text("fallback/index.html")
    assert "kvstore copy" in text("cli/index.html")
    assert "--from" in text("cli/index.html")  # the help of `kvstore copy`, from the command itself
    assert "KVStoreSaver" in text("integrations/index.html")
    assert "assets/chart.png" in (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert (site / "assets" / "chart.png").is_file()
    assert "get_range" in text("api/stores/index.html")
    assert "MissingDependencyError" in text("api/errors/index.html")
    assert "Keep a Changelog" in text("changelog/index.html")
    for page in site.rglob("*.html"):
        assert "<!-- include:" not in page.read_text(encoding="utf-8"), page
