"""Every example in examples/ runs as-is on a fresh machine (no server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    """The example exits 0 in an empty directory, with no KVSTORE_* configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    result = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


def test_demo_command_persists_across_runs(tmp_path: Path) -> None:
    """`python -m kvstore demo` (the README's first command) keeps the history across two runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    outputs = [
        subprocess.run(
            [sys.executable, "-m", "kvstore", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert "now holds 1 message(s)" in outputs[0]
    assert "now holds 2 message(s)" in outputs[1]
    assert (tmp_path / ".kvstore" / "kvstore.db").exists()
