"""One entry point for a fresh clone: ``python3 tools/dev.py demo|test|check``.

It creates ``.venv`` on first use (kvstore with every extra, plus the dev
group) and reinstalls when ``pyproject.toml`` changes, so the README's two
commands work on a machine that has nothing but Python 3.11+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".kvstore-install-stamp"


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
    _run(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[all]", "--group", "dev")
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "check", "setup"):
        print(__doc__)
        print("commands: demo [args], test [pytest args], check, setup")
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv()
    if command == "setup":
        return 0
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
    env_code = _run(PY, "-m", "pytest", *rest, check=False)
    if env_code == 5:
        print("pytest collected no tests: that is a failure here")
        return 1
    return env_code


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
