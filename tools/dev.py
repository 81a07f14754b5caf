"""One entry point for a fresh clone: ``python3 tools/dev.py demo|test|check|package|docs``.

It creates ``.venv`` on first use (kvstore with every extra, plus the dev
group) and reinstalls when ``pyproject.toml`` changes, so the README's two
commands work on a machine that has nothing but Python 3.11+.

``package`` builds the wheel and sdist into ``dist/``, runs ``twine check``, installs
the wheel (not the source tree) into a clean venv and runs the examples and the
contract suite against it from outside the source tree. ``docs`` builds the site
with ``mkdocs build --strict`` and checks its internal links.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".kvstore-install-stamp"
# The distribution name on the package index (the import name stays ``kvstore``).
DIST_NAME = "kvstore-sdk"
# Extras the wheel check installs: every backend, the integrations the examples use, telemetry.
CHECK_EXTRAS = "all,langchain,langgraph,llama-index,otel"
# What the wheel check runs against the installed wheel, from outside the source tree.
CHECK_TESTS = [
    "tests/test_examples.py",
    "tests/test_public_api.py",
    "tests/_async/test_contract.py",
    "tests/_sync/test_contract.py",
]


def _run(*cmd: str | Path, check: bool = True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check).returncode


def ensure_venv() -> None:
    """Create or refresh .venv so it matches pyproject.toml."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    # A half-made .venv (e.g. created before python3-venv was installed) has no pip: rebuild it.
    has_pip = PY.exists() and subprocess.run([str(PY), "-m", "pip", "--version"], capture_output=True).returncode == 0
    if not has_pip:
        print(f"creating {VENV.relative_to(ROOT)} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=PY.exists()).create(VENV)
    # pip >= 25.1 understands [dependency-groups] (--group).
    _run(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-U", "pip>=25.1")
    # The project was called "kvstore" before; an old editable install of it would own the same files.
    if subprocess.run([str(PY), "-m", "pip", "show", "-q", "kvstore"], capture_output=True).returncode == 0:
        _run(PY, "-m", "pip", "uninstall", "-q", "-y", "kvstore")
    _run(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[all]", "--group", "dev")
    STAMP.write_text(wanted)


def package() -> int:
    """Build, check, install the wheel into a clean venv and test it from outside the tree."""
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    # Without --sdist/--wheel, build makes the sdist and then the wheel *from the sdist*:
    # a file the sdist lacks fails here too.
    _run(PY, "-m", "build", "--outdir", dist)
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in dist/, found {[p.name for p in dist.iterdir()]}")
        return 1
    _run(PY, "-m", "twine", "check", "--strict", *wheels, *sdists)
    # The wheel's contents and metadata against the source tree.
    os.environ["KVSTORE_DIST_DIR"] = str(dist)
    if _run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_packaging.py", check=False) != 0:
        return 1
    with tempfile.TemporaryDirectory(prefix="kvstore-wheel-check-") as tmp:
        work = Path(tmp)
        env_dir = work / "venv"
        venv.EnvBuilder(with_pip=False).create(env_dir)
        vpy = env_dir / "bin" / "python"
        # This venv's pip installs into the clean one (--python): the wheel with its extras,
        # and the test group's tools (never the project itself).
        _run(
            PY,
            "-m",
            "pip",
            "--python",
            vpy,
            "install",
            "-q",
            "--disable-pip-version-check",
            f"{wheels[0]}[{CHECK_EXTRAS}]",
            "--group",
            f"{ROOT / 'pyproject.toml'}:test",
        )
        run_dir = work / "run"
        run_dir.mkdir()
        shutil.copytree(ROOT / "tests", run_dir / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "examples", run_dir / "examples", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(ROOT / "pyproject.toml", run_dir / "pyproject.toml")  # the pytest settings only
        where = subprocess.run(
            [str(vpy), "-c", "import kvstore; print(kvstore.__file__)"],
            cwd=run_dir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print("import kvstore ->", where, flush=True)
        if not Path(where).resolve().is_relative_to(env_dir.resolve()):
            print(f"kvstore was imported from {where}, not from the wheel installed in {env_dir}")
            return 1
        version = subprocess.run(
            [str(vpy), "-c", f"from importlib.metadata import version; print(version({DIST_NAME!r}))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"{DIST_NAME} {version} installed from {wheels[0].name}", flush=True)
        if subprocess.run([str(env_dir / "bin" / "kvstore"), "--help"], cwd=run_dir, capture_output=True).returncode:
            print("the installed `kvstore` command failed")
            return 1
        print("+ (in", run_dir, ") pytest", " ".join(CHECK_TESTS), flush=True)
        code = subprocess.run(
            [str(vpy), "-m", "pytest", "-q", "-p", "no:cacheprovider", *CHECK_TESTS], cwd=run_dir, check=False
        ).returncode
        return 1 if code == 5 else code


def docs(rest: list[str]) -> int:
    """Build the site with ``mkdocs build --strict`` and check its internal links (tests/test_docs.py).

    ``docs --screenshots DIR`` also builds the site into ``DIR/site`` and renders the home
    page and an API page to PNGs with headless Chromium (not part of CI).
    """
    code = _run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_docs.py", check=False)
    if code or not rest:
        return code
    if rest[0] != "--screenshots" or len(rest) != 2:
        print("usage: docs [--screenshots DIR]")
        return 2
    out = Path(rest[1]).resolve()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("no chromium on PATH (Debian: apt-get install -y chromium)")
        return 1
    os.environ["NO_MKDOCS_2_WARNING"] = "1"
    _run(PY, "-m", "mkdocs", "build", "--strict", "--site-dir", out / "site")
    for name, page in (("home", "index.html"), ("api-stores", "api/stores/index.html")):
        with tempfile.TemporaryDirectory(prefix="kvstore-chromium-") as profile:
            _run(
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                f"--user-data-dir={profile}",
                "--window-size=1280,1400",
                "--hide-scrollbars",
                f"--screenshot={out / f'{name}.png'}",
                (out / "site" / page).as_uri(),
            )
    print(f"screenshots: {out / 'home.png'}, {out / 'api-stores.png'}")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "check", "setup", "package", "docs"):
        print(__doc__)
        print("commands: demo [args], test [pytest args], check, setup, package, docs")
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv()
    if command == "setup":
        return 0
    if command == "package":
        return package()
    if command == "docs":
        return docs(rest)
    if command == "demo":
        return _run(PY, "-m", "kvstore", "demo", *rest, check=False)
    if command == "check":
        steps: list[list[str | Path]] = [
            [PY, "-m", "ruff", "check", "kvstore", "tests", "tools", "benchmarks", "examples"],
            [PY, "-m", "ruff", "format", "--check", "kvstore", "tests", "tools", "benchmarks", "examples"],
            [PY, "tools/unasync.py", "--check"],
            [PY, "tools/gen_schema.py", "--check"],
            [PY, "-m", "mypy", "kvstore"],
        ]
        failed = [" ".join(map(str, s[1:4])) for s in steps if _run(*s, check=False) != 0]
        if failed:
            print("FAILED:", "; ".join(failed))
            return 1
        return 0
    if not rest:
        # The default run stays within minutes; CI also runs the long fault runs (``test -m slow``).
        rest = ["-m", "not slow"]
    env_code = _run(PY, "-m", "pytest", *rest, check=False)
    if env_code == 5:
        print("pytest collected no tests: that is a failure here")
        return 1
    return env_code


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
