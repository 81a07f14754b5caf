"""Generate the sync code from the async source.

Usage: python tools/unasync.py [--check]

Library code is written in file pairs, psycopg style: ``kvstore/x/_store_async.py``
(the source) beside ``kvstore/x/_store.py`` (generated). The tests keep a directory
pair, ``tests/_async`` -> ``tests/_sync``.

The async code is the single source. This converter rewrites tokens
(``async def`` -> ``def``, ``await x`` -> ``x``, ``AsyncFoo`` -> ``Foo``,
``aclose`` -> ``close``, ``_async`` -> ``_sync``...) and resolves blocks written as

    if True:  # ASYNC
        <async-only code>
    else:
        <sync-only code>

to their ``else`` branch. The output is fixed and formatted with ruff, so it
passes the same lint as the source. ``--check`` writes nothing and exits 1 when a
generated file is stale, missing or left over.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Directory pairs: every file of the first is the source of the same path in the second.
DIR_PAIRS = [(ROOT / "tests" / "_async", ROOT / "tests" / "_sync")]
#: Where file pairs live: ``name_async.py`` is the source of ``name.py`` beside it.
PACKAGE = ROOT / "kvstore"
HEADER = "# Generated from {source} by tools/unasync.py: do not edit; edit the async source.\n"

# Order matters: longer and more specific patterns first.
SUBSTITUTIONS: list[tuple[str, str]] = [
    # An await of a hook that may be a plain function (kvstore/base_async.py): nothing to await in sync code.
    (r"\n[ \t]*if (\w+)\.__class__ is _Coroutine:\n[ \t]+(?:\1 = )?await \1(?=\n)", ""),
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait\s+", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\baclose\b", "close"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncRetrying\b", "Retrying"),
    (r"\bAwaitable\[(\w+)\]", r"\1"),
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\basyncio\.Lock\b", "threading.Lock"),
    (r"\bredis\.asyncio\b", "redis"),
    (r"(?<=\w)_async\b", ""),
    (r"\b_async\b", "_sync"),
]
_COMPILED = [(re.compile(p), r) for p, r in SUBSTITUTIONS]
#: Which substitutions changed some file in this run (every one must: a dead rule hides a typo).
_FIRED: set[str] = set()
_ASYNC_BLOCK = re.compile(r"^(?P<indent>[ \t]*)if True:\s+# ASYNC\s*$")


def _block_end(lines: list[str], start: int, indent: str) -> int:
    """Index of the first line after ``start`` that is not inside the block."""
    i = start
    while i < len(lines):
        line = lines[i]
        if line.strip() and not (line.startswith(indent) and len(line) - len(line.lstrip()) > len(indent)):
            break
        i += 1
    return i


def _resolve_blocks(text: str) -> str:
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _ASYNC_BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        end = _block_end(lines, i + 1, indent)
        if end < len(lines) and re.match(rf"^{re.escape(indent)}else:\s*(#.*)?$", lines[end]):
            else_end = _block_end(lines, end + 1, indent)
            body = lines[end + 1 : else_end]
            depth = min(len(ln) - len(ln.lstrip()) for ln in body if ln.strip()) - len(indent)
            out.extend(ln[depth:] if ln.strip() else ln for ln in body)
            i = else_end
        else:
            i = end
    return "".join(out)


def convert(text: str, source: str) -> str:
    """The sync twin of one async source file, before formatting."""
    text = _resolve_blocks(text)
    for pattern, replacement in _COMPILED:
        text, count = pattern.subn(replacement, text)
        if count:
            _FIRED.add(pattern.pattern)
    for module in ("time", "threading"):  # modules the substitutions may have introduced
        if re.search(rf"\b{module}\.", text) and not re.search(rf"^import {module}$", text, re.MULTILINE):
            future = "from __future__ import annotations\n"
            text = text.replace(future, f"{future}\nimport {module}\n", 1)
    return HEADER.format(source=source) + text


def _ruff(args: list[str], text: str, filename: Path) -> str:
    exe = Path(sys.executable).with_name("ruff")
    cmd = [str(exe) if exe.exists() else "ruff", *args, "--stdin-filename", str(filename), "-"]
    result = subprocess.run(cmd, input=text, capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode not in (0, 1) or not result.stdout:
        raise SystemExit(f"ruff failed on {filename}: {result.stderr}")
    return result.stdout


def pairs() -> list[tuple[Path, Path]]:
    """Every (async source, generated sync file) pair."""
    found = [
        (src, dst_dir / src.relative_to(src_dir))
        for src_dir, dst_dir in DIR_PAIRS
        for src in sorted(src_dir.rglob("*.py"))
    ]
    found += [
        (src, src.with_name(src.name.removesuffix("_async.py") + ".py")) for src in sorted(PACKAGE.rglob("*_async.py"))
    ]
    return found


def generated_files() -> set[Path]:
    """The files on disk that say they were generated (to find those left without a source)."""
    found = {p for _, dst_dir in DIR_PAIRS if dst_dir.exists() for p in dst_dir.rglob("*.py")}
    marker = HEADER.split("{", 1)[0]
    found |= {p for p in PACKAGE.rglob("*.py") if p.read_text(encoding="utf-8").startswith(marker)}
    return found


def generate() -> dict[Path, str]:
    """Every generated file's path and expected content; fails when a substitution never fires."""
    outputs: dict[Path, str] = {}
    for src, dst in pairs():
        text = convert(src.read_text(encoding="utf-8"), src.relative_to(ROOT).as_posix())
        text = _ruff(["check", "--fix", "--unsafe-fixes", "--quiet", "--select", "F401,I,UP"], text, dst)
        outputs[dst] = _ruff(["format", "--quiet"], text, dst)
    unused = [pattern for pattern, _ in SUBSTITUTIONS if pattern not in _FIRED]
    if unused:
        raise SystemExit(f"substitutions that never fire (remove them): {', '.join(unused)}")
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale; write nothing")
    args = parser.parse_args()
    outputs = generate()
    existing = generated_files()
    stale = sorted(p for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text)
    extra = sorted(existing - outputs.keys())
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}")
        for path in extra:
            print(f"not generated from any source: {path.relative_to(ROOT)}")
        if stale or extra:
            print("generated sync code is out of date: run python tools/unasync.py")
            return 1
        print(f"generated sync code is up to date ({len(outputs)} files)")
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outputs[path], encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    for path in extra:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
