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


def test_the_new_store_operations_are_registered_once_on_every_backend() -> None:
    """incr, delete_many 100 and store get + touch: one kvstore setup, a floor and both flavours on every backend."""
    from benchmarks.backends import NEW_OPS
    from benchmarks.registry import REGISTRY, new_op, workloads

    for section in ("memory", "sqlite", "postgres", "redis"):
        assert set(NEW_OPS) <= set(workloads(section)), section
        for workload in NEW_OPS:
            ours = [e for e in REGISTRY if e.section == section and e.workload == workload and e.role == "kvstore"]
            assert {e.setup for e in ours} == {new_op}
            assert sorted(e.is_async for e in ours) == [False, True]
    assert workloads("memory")[:7] == [
        "get",
        "set",
        "mget 100",
        "mset 100",
        "chat append",
        "last 20 of 100,000 messages",
        "session get + touch (TTL 1800 s)",
    ]  # the existing tables keep their names and order; the new ones come after


def test_the_new_store_operations_run_on_memory(tmp_path: Path) -> None:
    """On memory (the one backend that has them on this branch) kvstore's incr, delete_many and get(touch=) run."""
    from benchmarks.backends import NEW_OPS
    from benchmarks.registry import run
    from benchmarks.report import Report
    from benchmarks.runner import Context

    report = Report(quick=True, command="test")
    ctx = Context(report, True, tmp_path, "", "")
    try:
        run(ctx, "memory", ["incr", "delete_many", "store"])
    finally:
        ctx.loop.close()
    assert [t.workload for t in report.tables] == list(NEW_OPS)
    for table in report.tables:
        ours = [r for r in table.rows if r.role == "kvstore"]
        assert sorted(r.is_async for r in ours) == [False, True], table.workload
        assert all(r.ops_per_s > 0 for r in ours)
    names = {r.name for t in report.tables for r in t.rows}
    assert {"kvstore MemoryCache.incr", "kvstore AsyncMemoryCache.delete_many"} <= names
    assert "kvstore MemoryCache.get(touch=1800)" in names


def test_a_backend_without_an_operation_yet_skips_kvstores_rows_with_a_note(tmp_path: Path) -> None:
    """A backend whose raw hook is missing (awaiting its merge) keeps its floor and says why kvstore did not run."""
    from benchmarks.backends import INCR, MemoryTier
    from benchmarks.registry import new_op
    from benchmarks.report import Report
    from benchmarks.runner import Context

    class Missing:
        def incr(self, key: str, by: int = 1) -> int:
            raise NotImplementedError("Missing does not implement the raw hook _incr")

    ctx = Context(Report(quick=True, command="test"), True, tmp_path, "", "")
    try:
        tier = MemoryTier(ctx)
        tier.stores = (Missing(), Missing())
        assert new_op(tier, 0, INCR) is None
        assert "awaits the memory backend merge" in tier.notes[INCR][0]
    finally:
        ctx.loop.close()


LANGGRAPH_ROWS = [
    {
        "section": "langgraph",
        "workload": "checkpointer: chat turn",
        "name": name,
        "role": role,
        "backend": backend,
        "messages": 200,
        "turn_ms": {20: turn, 200: turn * 2},
        "saver_ms": {20: turn - 2, 200: turn * 2 - 4},
        "payload_bytes": payload,
        "bytes_per_1000_messages": payload and payload * 5,
        "x_own_json": payload and payload / 50_000,
        "own_json_bytes": 50_000,
        "disk_bytes": disk,
        "get_state_last20_ms": turn / 10,
        "tail20_ms": 0.2 if role == "kvstore" else None,
    }
    for name, role, backend, turn, payload, disk in (
        ("no saver: values kept by reference (floor)", "floor", "memory", 2.0, None, None),
        ("langgraph InMemorySaver", "peer", "memory", 2.5, None, None),
        ("kvstore KVStoreSaver, memory", "kvstore", "memory", 3.0, 140_000, None),
        ("kvstore KVStoreSaver, SQLite", "kvstore", "sqlite", 4.0, 140_000, 4_000_000),
        ("langgraph SqliteSaver", "peer", "sqlite", 8.0, 9_000_000, 10_000_000),
        ("kvstore KVStoreSaver, PostgreSQL", "kvstore", "postgres", 7.0, 140_000, 500_000),
        ("langgraph PostgresSaver", "peer", "postgres", 12.0, 6_000_000, 1_800_000),
    )
] + [
    {
        "section": "langgraph",
        "workload": "store: search(namespace prefix + filter, limit 10) of 2,000 items",
        "name": name,
        "role": role,
        "backend": backend,
        "ops_per_s": rate,
        "us_per_op": 1e6 / rate,
        "vs_floor": rate / 20_000,
        "expired_item_returned": expired,
    }
    for name, role, backend, rate, expired in (
        ("InMemoryStore (floor)", "floor", "memory", 20_000, "no TTL support"),
        ("kvstore KVStoreStore, SQLite", "kvstore", "sqlite", 4_000, "no"),
        ("langgraph SqliteStore", "peer", "sqlite", 8_000, "**yes**"),
        ("kvstore KVStoreStore, PostgreSQL", "kvstore", "postgres", 2_000, "no"),
        ("langgraph PostgresStore", "peer", "postgres", 2_500, "**yes**"),
    )
]


def test_the_langgraph_section_renders_its_tables_and_joins_the_summary() -> None:
    """bench_langgraph's rows become the LangGraph section (turns, bytes, vs savers, store) and summary rows."""
    from benchmarks.report import Report

    report = Report(quick=True, command="test")
    report.add_langgraph(LANGGRAPH_ROWS, "turns=100")
    text = report.markdown({}, {}, None)
    for heading in (
        "## LangGraph",
        "### Checkpointer: time per turn",
        "### Checkpointer: bytes stored after 200 messages",
        "### kvstore vs LangGraph's own savers",
        "### Store: search(namespace prefix + filter, limit 10) of 2,000 items",
    ):
        assert heading in text
    assert "| **kvstore KVStoreSaver, SQLite** | SQLite | kvstore | 4.00 (+2.00) | 8.00 (+4.00) | 0.40 | 0.20 |" in text
    assert "| SQLite | kvstore KVStoreSaver, SQLite | langgraph SqliteSaver | 2x | 2x | 2x | 64.3x | 2.5x |" in text
    assert "| langgraph SqliteStore | SQLite | peer | 8,000 | 125 | 0.4 | 0.5x | **yes** |" in text
    summary = {(v.workload, v.peer.name): round(v.ratio, 3) for v in report.verdicts()}
    assert summary[("checkpointer turn @ 200 messages (SQLite)", "langgraph SqliteSaver")] == 2.0
    assert summary[("store search(prefix + filter, limit 10) (PostgreSQL)", "langgraph PostgresStore")] == 0.8
    assert "| LangGraph | checkpointer turn @ 20 messages (Memory) |" in text


def test_langgraph_section_is_skipped_with_the_reason_when_langgraph_is_missing() -> None:
    """`--only langgraph` without LangGraph installed: skipped with why, before any PostgreSQL is needed."""
    code = (
        "import runpy, sys\n"
        "sys.modules['langgraph'] = None\n"
        "sys.argv = ['benchmarks', '--quick', '--only', 'langgraph', '--postgres-url', 'postgresql://nobody@127.0.0.1:1/x']\n"
        "runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "langgraph: skipped: not installed (langgraph" in proc.stdout
