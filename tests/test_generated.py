"""The generated files are checked: editing one by hand fails CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of the parts of the repo the generators read and write."""
    for name in ("kvstore", "tests", "tools", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_unasync_check_fails_on_a_hand_edited_sync_file(repo_copy: Path) -> None:
    """tools/unasync.py --check passes on the repo and fails once a generated file is edited."""
    assert _run(repo_copy, "tools/unasync.py", "--check").returncode == 0
    target = repo_copy / "kvstore" / "memory" / "_store.py"
    target.write_text(target.read_text() + "\n# a hand edit\n")
    result = _run(repo_copy, "tools/unasync.py", "--check")
    assert result.returncode == 1
    assert "stale: kvstore/memory/_store.py" in result.stdout


@pytest.mark.slow
def test_unasync_check_fails_on_a_stray_sync_file(repo_copy: Path) -> None:
    """A file in _sync/ with no async source is reported."""
    (repo_copy / "tests" / "_sync" / "test_orphan.py").write_text("")
    result = _run(repo_copy, "tools/unasync.py", "--check")
    assert result.returncode == 1
    assert "not generated from any source" in result.stdout


def test_schema_check_fails_on_a_hand_edited_schema(repo_copy: Path) -> None:
    """tools/gen_schema.py --check passes on the repo and fails once the schema is edited."""
    assert _run(repo_copy, "tools/gen_schema.py", "--check").returncode == 0
    schema = repo_copy / "schemas" / "storage-config.schema.json"
    schema.write_text(schema.read_text().replace('"default": 2.0', '"default": 3.0', 1))
    result = _run(repo_copy, "tools/gen_schema.py", "--check")
    assert result.returncode == 1
    assert "stale" in result.stdout


def test_conversion_rules() -> None:
    """The converter rewrites async tokens and keeps the else branch of ASYNC blocks."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import unasync
    finally:
        sys.path.pop(0)
    source = (
        "from __future__ import annotations\n"
        "import asyncio\n"
        "async def f(x: AsyncStore) -> None:\n"
        "    async with x:\n"
        "        await x.aclose()\n"
        "    if True:  # ASYNC\n"
        "        await asyncio.sleep(1)\n"
        "    else:\n"
        "        blocking()\n"
        "    await asyncio.sleep(0)\n"
    )
    out = unasync.convert(source, "x.py")
    assert "def f(x: Store) -> None:" in out
    assert "    with x:\n        x.close()" in out
    assert "    blocking()\n" in out
    assert "asyncio.sleep(1)" not in out
    assert "time.sleep(0)" in out
    assert "import time" in out


def test_schema_check_fails_on_a_hand_edited_config_reference(repo_copy: Path) -> None:
    """The README's generated config reference is checked too."""
    readme = repo_copy / "README.md"
    readme.write_text(readme.read_text().replace("Least recently used entries", "Oldest entries", 1))
    result = _run(repo_copy, "tools/gen_schema.py", "--check")
    assert result.returncode == 1
    assert "stale: README.md" in result.stdout
