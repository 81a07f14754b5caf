"""Smoke test of the benchmark report entry point (`python -m benchmarks`): no servers, no peers needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Import names of every optional peer and of matplotlib: blocked, as on a machine without the bench group.
PEERS = ("aiocache", "key_value", "langgraph", "langchain_core", "langchain_community", "litestar", "matplotlib")


def test_quick_memory_run_prints_ratios_without_peers(tmp_path: Path) -> None:
    """`python -m benchmarks --quick --only memory` prints ratios and reports missing peers as not installed."""
    code = (
        "import runpy, sys\n"
        f"for name in {PEERS!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        f"sys.argv = ['benchmarks', '--quick', '--only', 'memory', '--out', {str(tmp_path)!r}]\n"
        "runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "ratio = ops/s ÷ dict + orjson.loads (floor)" in out
    assert "kvstore MemoryCache.get" in out
    assert "last 20 of 100,000 messages" in out
    assert "aiocache SimpleMemoryCache: not installed" in out
    report = (tmp_path / "REPORT.md").read_text()
    assert "| **kvstore MemoryCache.get** |" in report
    assert "not installed" in report
    assert not (tmp_path / "chart.png").exists()  # matplotlib blocked: no chart, no crash
