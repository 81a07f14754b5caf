"""MkDocs hook: pages include README sections and repository files, so the site never drifts from them.

``<!-- include: README.md#Heading -->`` is replaced by the body of the README's
``## Heading`` section; ``<!-- include: path -->`` by a whole file (its first
heading dropped). Links into the repository are rewritten to the site's pages and
assets. An include that names no section or file fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"<!-- include: (?P<path>[^#\s]+)(?:#(?P<section>[^>]+?))? -->")

# Repository files the site serves, at these paths.
ASSETS = {
    "benchmarks/results/chart.png": "assets/chart.png",
    "benchmarks/results/concurrency.png": "assets/concurrency.png",
    "benchmarks/results/scaling.png": "assets/scaling.png",
    "schemas/storage-config.schema.json": "assets/storage-config.schema.json",
}
# Links in included text (relative to the repository root, or to REPORT.md's folder) -> site paths.
LINKS = {
    "benchmarks/results/REPORT.md": "benchmarks.md",
    "benchmarks/results/chart.png": "assets/chart.png",
    "chart.png": "assets/chart.png",
    "concurrency.png": "assets/concurrency.png",
    "scaling.png": "assets/scaling.png",
    "schemas/storage-config.schema.json": "assets/storage-config.schema.json",
    "CHANGELOG.md": "changelog.md",
}


def _section(text: str, heading: str, source: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"## {heading}"), None)
    if start is None:
        raise PluginError(f"{source} has no '## {heading}' section to include")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1 : end]).strip("\n")


def _whole(text: str) -> str:
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n")


def _rewrite_links(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"{match.group(1)}({LINKS.get(target, target)})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", replace, text)


def _include(match: re.Match[str]) -> str:
    path, section = match.group("path"), match.group("section")
    file = ROOT / path
    if not file.is_file():
        raise PluginError(f"include: no file {path}")
    text = file.read_text(encoding="utf-8")
    body = _section(text, section.strip(), path) if section else _whole(text)
    return _rewrite_links(body)


def _cli_help() -> str:
    """The `kvstore` command's help, and each subcommand's, from the (typer/click) command itself."""
    import typer

    from kvstore._cli_app import app

    root: Any = typer.main.get_command(app)
    parts = []
    with root.context_class(root, info_name="kvstore", terminal_width=100, max_content_width=100) as ctx:
        parts.append(f"## `kvstore`\n\n```text\n{root.get_help(ctx)}\n```")
        for name in root.list_commands(ctx):
            command = root.get_command(ctx, name)
            with command.context_class(command, info_name=name, parent=ctx, terminal_width=100) as sub:
                parts.append(f"## `kvstore {name}`\n\n```text\n{command.get_help(sub)}\n```")
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Expand the include markers of one page."""
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", _cli_help())
    return INCLUDE.sub(_include, markdown)


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Serve the repository's charts and JSON Schema as site assets (a chart the committed report lacks is skipped)."""
    for source, dest in ASSETS.items():
        if source.endswith(("concurrency.png", "scaling.png")) and not (ROOT / source).is_file():
            continue
        files.append(File.generated(config, dest, abs_src_path=str(ROOT / source)))
    return files
