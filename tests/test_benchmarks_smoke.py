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
    assert "histories filled in" in out
    report = (tmp_path / "REPORT.md").read_text()
    assert "| **kvstore MemoryCache.get** |" in report
    assert "not installed" in report
    assert not (tmp_path / "chart.png").exists()  # matplotlib blocked: no chart, no crash


def test_every_registered_workload_has_one_floor_and_a_sync_and_an_async_kvstore_case() -> None:
    """Each (section, workload) of the benchmark registry has one floor, kvstore sync and async, unique case names."""
    from benchmarks.registry import REGISTRY, workloads

    sections = {e.section for e in REGISTRY}
    assert sections == {"memory", "sqlite", "postgres", "redis"}
    for section in sections:
        for workload in workloads(section):
            cases = [e for e in REGISTRY if e.section == section and e.workload == workload]
            assert [e.role for e in cases].count("floor") == 1, (section, workload)
            ours = {e.is_async for e in cases if e.role == "kvstore"}
            assert ours == {False, True}, (section, workload)
            names = [e.case for e in cases]
            assert len(names) == len(set(names)), (section, workload)


def test_the_kvstore_grid_is_written_once_and_registered_on_every_backend() -> None:
    """get/set/mget 100/mset 100 run on every backend through the same kvstore setup, named by the backend's class."""
    from benchmarks.registry import REGISTRY, grid

    for workload, method in (("get", "get"), ("set", "set"), ("mget 100", "mget"), ("mset 100", "mset")):
        ours = [e for e in REGISTRY if e.workload == workload and e.role == "kvstore"]
        assert {e.setup for e in ours} == {grid}
        assert {e.section for e in ours} == {"memory", "sqlite", "postgres", "redis"}
        assert all(e.case.startswith("kvstore ") and e.case.endswith(f".{method}") for e in ours)


def test_a_quick_run_of_one_workload_records_its_table(tmp_path: Path) -> None:
    """The registry's run function times one memory workload and records a table of ratios to its floor."""
    from benchmarks.registry import run
    from benchmarks.report import Report
    from benchmarks.runner import Context

    report = Report(quick=True, command="test")
    ctx = Context(report, True, tmp_path, "", "")
    try:
        run(ctx, "memory", ["get"])
    finally:
        ctx.loop.close()
    (table,) = report.tables
    assert (table.section, table.workload, table.floor) == ("memory", "get", "dict + orjson.loads (floor)")
    rows = {r.name: r for r in table.rows}
    assert rows["dict + orjson.loads (floor)"].ratio == 1
    assert rows["kvstore MemoryCache.get"].ops_per_s > 0
    assert rows["kvstore AsyncMemoryCache.get"].is_async
