"""The built wheel and sdist: named kvstore-sdk, one version, every source file shipped."""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import kvstore

ROOT = Path(__file__).resolve().parent.parent
DIST_NAME = "kvstore-sdk"
WHEEL_PREFIX = DIST_NAME.replace("-", "_")


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$KVSTORE_DIST_DIR`` (what ``tools/dev.py package`` built), else a fresh ``python -m build``."""
    given = os.environ.get("KVSTORE_DIST_DIR")
    if given:
        yield Path(given)
        return
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=600
    )
    yield out


def _one(dist_dir: Path, pattern: str) -> Path:
    found = sorted(dist_dir.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def _source_files() -> set[str]:
    """Every file of the kvstore package in the source tree (what the wheel must hold)."""
    package = ROOT / "kvstore"
    return {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_wheel_holds_every_package_file(dist_dir: Path) -> None:
    """Each file under kvstore/ (modules, generated sync twins, py.typed) is in the wheel, nothing else at top level."""
    wheel = _one(dist_dir, f"{WHEEL_PREFIX}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = _source_files() - names
    assert not missing, f"missing from {wheel.name}: {sorted(missing)}"
    assert "kvstore/py.typed" in names
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"kvstore", f"{WHEEL_PREFIX}-{kvstore.__version__}.dist-info"}


def test_wheel_metadata_names_the_distribution_and_the_version(dist_dir: Path) -> None:
    """The metadata says kvstore-sdk, kvstore.__version__, the extras, and the `kvstore` command."""
    wheel = _one(dist_dir, f"{WHEEL_PREFIX}-*.whl")
    info = f"{WHEEL_PREFIX}-{kvstore.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert metadata["Name"] == DIST_NAME
    assert metadata["Version"] == kvstore.__version__
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"redis", "postgres", "sqlite", "yaml", "cli", "otel", "all", "langchain", "langgraph"} <= extras
    requires = metadata.get_all("Requires-Dist") or []
    # `all` is this distribution's own extras (flattened by hatchling), never the unrelated "kvstore" on PyPI.
    assert any(r.startswith("redis[hiredis]") and "extra == 'all'" in r for r in requires), requires
    assert not any(r.split("[")[0].split(";")[0].strip() == "kvstore" for r in requires), requires
    assert "kvstore = kvstore.cli:main" in entry_points
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_sdist_holds_the_package_tests_and_docs(dist_dir: Path) -> None:
    """The sdist rebuilds the wheel: it holds the package, pyproject, README, CHANGELOG, tests and examples."""
    sdist = _one(dist_dir, f"{WHEEL_PREFIX}-*.tar.gz")
    base = f"{WHEEL_PREFIX}-{kvstore.__version__}"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(base + "/") for name in archive.getnames()}
    missing = _source_files() - names
    assert not missing, f"missing from {sdist.name}: {sorted(missing)}"
    for required in ("pyproject.toml", "README.md", "CHANGELOG.md", "tests/conftest.py", "examples/quickstart.py"):
        assert required in names


def test_version_has_one_home() -> None:
    """pyproject.toml takes the version from kvstore/__init__.py and states none of its own."""
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text
    assert '[tool.hatch.version]\npath = "kvstore/__init__.py"' in text
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert "\nversion =" not in project


def test_install_lines_name_the_distribution() -> None:
    """README and the docs tell users to install kvstore-sdk, never the unrelated "kvstore" on PyPI."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = 0
    for path in texts:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "pip install" in line and "kvstore" in line and "--group" not in line:
                found += 1
                assert 'pip install "kvstore[' not in line, f"{path.name}: {line}"
                assert "pip install kvstore " not in line + " ", f"{path.name}: {line}"
    assert found >= 5
    assert 'pip install "kvstore-sdk[all]"' in (ROOT / "README.md").read_text(encoding="utf-8")
