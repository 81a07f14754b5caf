"""Smoke test of the benchmark report entry point (`python -m benchmarks`): no servers, no peers needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_redis import RedisServer

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
    from benchmarks.backends import GATHER
    from benchmarks.registry import REGISTRY, workloads

    sections = {e.section for e in REGISTRY}
    assert sections == {"memory", "sqlite", "postgres", "redis"}
    for section in sections:
        for workload in workloads(section):
            cases = [e for e in REGISTRY if e.section == section and e.workload == workload]
            assert [e.role for e in cases].count("floor") == 1, (section, workload)
            ours = {e.is_async for e in cases if e.role == "kvstore"}
            # 100 concurrent gets is async by nature: one sync caller has no concurrent gets.
            assert ours == ({True} if workload == GATHER else {False, True}), (section, workload)
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


def test_a_section_that_crashes_is_written_into_the_report_and_fails_the_run(tmp_path: Path) -> None:
    """A full run that lost a section (the watch section once crashed on a dropped trigger and the report went out
    without it) exits 1 and names it, with the report still written and saying why."""
    code = (
        "import runpy, sys\n"
        "import benchmarks.watch as watch\n"
        "def crash(ctx, only=None):\n"
        "    raise RuntimeError('the watch section broke')\n"
        "watch.run = crash\n"
        f"sys.argv = ['benchmarks', '--quick', '--only', 'watch', '--out', {str(tmp_path)!r}]\n"
        "runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED sections: watch" in proc.stdout
    assert "the watch section broke" in (tmp_path / "REPORT.md").read_text()


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


# --- issue 14: concurrent gets, many clients, cost vs size, the must-show ratios -----------------------------------


def test_concurrent_gets_are_registered_against_one_mget_on_sqlite_postgres_and_redis() -> None:
    """100 gets at once (asyncio.gather) and one mget(100) of the same keys share a table on the three backends."""
    from benchmarks.backends import GATHER
    from benchmarks.registry import REGISTRY, gather_gets, grid, workloads

    for section, cls in (
        ("sqlite", "AsyncSqliteDatabase"),
        ("postgres", "AsyncPostgresDatabase"),
        ("redis", "AsyncRedisCache"),
    ):
        assert GATHER in workloads(section)
        cases = {e.case: e for e in REGISTRY if e.section == section and e.workload == GATHER}
        gather = cases[f"kvstore asyncio.gather(100 x {cls}.get)"]
        assert (gather.role, gather.setup, gather.is_async) == ("kvstore", gather_gets, True)
        mget = cases[f"kvstore {cls}.mget(100)"]
        assert (mget.role, mget.setup, mget.args) == ("variant", grid, (1, "mget 100"))
    assert GATHER not in workloads("memory")
    lg = {
        e.case: e.role for e in REGISTRY if e.section == "postgres" and e.workload == GATHER and "LangGraph" in e.case
    }
    assert lg == {
        "LangGraph AsyncPostgresStore: asyncio.gather(100 x aget)": "peer",
        "LangGraph AsyncPostgresStore.abatch(100 GetOp)": "info",
    }


def test_concurrent_gets_run_on_sqlite_and_give_the_same_values_as_one_mget(tmp_path: Path) -> None:
    """The gather case and the mget case run on SQLite (no server needed) and read the same 100 values."""
    from benchmarks.backends import GATHER, SqliteTier
    from benchmarks.registry import gather_floor, gather_futures_floor, gather_gets, grid, run
    from benchmarks.report import Report
    from benchmarks.runner import Context

    report = Report(quick=True, command="test")
    (tmp_path / "probe").mkdir()
    ctx = Context(report, True, tmp_path / "probe", "", "")
    tier = SqliteTier(ctx)
    try:
        tier.open()
        values = ctx.wait(gather_gets(tier, 1)(0))  # type: ignore[arg-type]
        assert len(values) == 100
        assert values == ctx.wait(grid(tier, 1, "mget 100")(0))  # type: ignore[arg-type]
        # asyncio's own cost row: the floor's batch read, whose values it returns, plus 100 no-op coroutines
        assert ctx.wait(gather_floor(tier)(0)) == values  # type: ignore[arg-type]
        # and with 100 bare futures answered at once instead (no task per get)
        assert ctx.wait(gather_futures_floor(tier)(0)) == values  # type: ignore[arg-type]
        tier.close()
        ctx.tmp = tmp_path
        run(ctx, "sqlite", ["100"])
    finally:
        ctx.loop.close()
    (table,) = report.tables
    assert table.workload == GATHER
    assert {r.role for r in table.rows} == {"floor", "info", "kvstore", "variant"}
    assert all(r.ops_per_s > 0 for r in table.rows)
    # The section's end probes the event loop with another connection holding the write lock (the probe itself
    # fails unless the async sets really waited for that lock).
    worst, idle = report.stalls["sqlite"]
    assert worst > 0
    assert idle > 0
    assert any("worst stall" in n for n in report.notes["sqlite"])


def _table(report: object, section: str, workload: str, rates: dict[str, tuple[str, float]]) -> None:
    from benchmarks._common import Case, Result

    cases = [Case(name, lambda i: None, role=role) for name, (role, _) in rates.items()]
    results = {name: Result(name, rate, [rate]) for name, (_, rate) in rates.items()}
    report.add(section, workload, cases, results)  # type: ignore[attr-defined]


def test_must_show_ratios_are_read_from_the_same_table_with_targets_and_gaps() -> None:
    """Throughput ratios, time ratios (gather ÷ mget), concurrency's worst level and last(20)'s flatness; a check
    whose rows did not run says "not measured", never OK."""
    from benchmarks.report import Report
    from benchmarks.targets import must_show, must_show_md

    report = Report(quick=True, command="test")
    _table(
        report,
        "sqlite",
        "get",
        {
            "raw apsw SELECT + orjson.loads (floor)": ("floor", 100_000.0),
            "kvstore SqliteDatabase.get": ("kvstore", 80_000.0),
            "kvstore AsyncSqliteDatabase.get": ("kvstore", 60_000.0),
        },
    )
    _table(
        report,
        "redis",
        "100 concurrent gets vs mget 100",
        {
            "redis.asyncio MGET 100 + loads (floor)": ("floor", 4_000.0),
            "kvstore asyncio.gather(100 x AsyncRedisCache.get)": ("kvstore", 1_000.0),
            "kvstore AsyncRedisCache.mget(100)": ("variant", 3_000.0),
        },
    )
    level = {"ops_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0, "first_error": "", "name": "x", "ops": 1}
    report.add_concurrency(
        [
            {
                "backend": "redis",
                "workload": "get/set 90/10",
                "level": "1 async task",
                "tasks": 1,
                "mode": "async",
                "ours": level,
                "bare": level,
                "ratio": 1.02,
            },
            {
                "backend": "redis",
                "workload": "get/set 90/10",
                "level": "8 threads (sync)",
                "tasks": 8,
                "mode": "threads",
                "ours": level,
                "bare": level,
                "ratio": 0.85,
            },
        ]
    )
    report.add_scaling(
        "last",
        [
            {"backend": "sqlite", "size": 100, "floor_us": 10.0, "ours_us": 20.0, "async_us": 30.0},
            {
                "backend": "sqlite",
                "size": 10_000_000,
                "floor_us": 12.0,
                "ours_us": 25.0,
                "async_us": 31.0,
                "small_us": 12.5,
            },
        ],
    )
    report.stalls["sqlite"] = (25.0, 3.0)
    got = {o.label: o for o in must_show(report)}
    stall = got["SQLite async: worst event-loop stall, another connection holding the write lock"]
    assert (stall.shown, stall.status) == ("25.0 ms", "MISS")
    get = got["async SQLite get ÷ raw apsw"]
    assert (round(get.ratio or 0, 2), get.status) == (0.6, "OK")
    gather = got["Redis: 100 concurrent gets, time ÷ one mget(100)"]
    assert (gather.ratio, gather.status, gather.shown) == (3.0, "MISS", "3.00x the time")
    assert got["async SQLite set ÷ raw apsw"].status == "not measured"
    conc = got["concurrency redis get/set 90/10: kvstore ÷ bare pool throughput, worst level"]
    assert (conc.ratio, conc.status) == (0.85, "MISS")
    assert "8 threads (sync)" in conc.detail
    flat = got["sqlite last(20) at 10,000,000 messages, time ÷ on 100 messages"]
    assert (flat.ratio, flat.status) == (2.0, "MISS")  # ÷ the reference conversation timed in the same rounds
    assert got["postgres last(20) at the largest history, time ÷ on 100 messages"].status == "not measured"
    text = "\n".join(must_show_md(report))
    assert "| Redis: 100 concurrent gets, time ÷ one mget(100) | 3.00x the time | <= 1.3 | **MISS** |" in text


def test_the_curve_sections_render_tables_and_charts(tmp_path: Path) -> None:
    """Concurrency and scaling rows become their report sections (tables, targets) and two charts."""
    from benchmarks.report import Report

    report = Report(quick=True, command="test")
    side = {"ops_per_s": 900.0, "p50_ms": 1.5, "p99_ms": 9.0, "errors": 0, "first_error": "", "name": "kv", "ops": 9}
    bare = {**side, "ops_per_s": 1000.0, "name": "bare"}
    report.add_concurrency(
        [
            {
                "backend": "postgres",
                "workload": "chat append",
                "level": f"{n} async tasks",
                "tasks": n,
                "mode": "async",
                "ours": side,
                "bare": bare,
                "ratio": 0.9,
            }
            for n in (1, 8)
        ],
        "pool 8",
    )
    report.add_scaling(
        "last",
        [
            {"backend": "postgres", "size": s, "floor_us": 100.0, "ours_us": 200.0, "async_us": 210.0}
            for s in (100, 1000)
        ],
    )
    report.add_scaling(
        "keys",
        [
            {
                "backend": "sqlite",
                "kind": "total",
                "shape": "prefix",
                "total": 1000,
                "pattern": "k:000001*",
                "matches": 100,
                "ms": 0.2,
            },
            {
                "backend": "sqlite",
                "kind": "matches",
                "shape": "prefix",
                "total": 1000,
                "pattern": "k:0000001?",
                "matches": 10,
                "ms": 0.1,
            },
        ],
    )
    report.add_scaling("copy", [{"keys": 1000, "ours_s": 0.5, "raw_s": 0.1}])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_matplotlib = False
    else:
        has_matplotlib = True
    made = report.curve_charts(tmp_path)
    assert made == (["concurrency.png", "scaling.png"] if has_matplotlib else [])
    text = report.markdown({}, {}, None)
    assert "## Many clients at once" in text
    assert "| 8 async tasks | 900 | 1,000 | 0.90 | 1.50 / 9.00 | 1.50 / 9.00 | OK |" in text
    assert "## Cost vs size" in text
    assert "| PostgreSQL | 1,000 | 100.0 | 200.0 | 210.0 | 0.50 |" in text
    assert "| SQLite | 1,000 | `k:0000001?` | 10 | 0.10 | 10.0 |" in text
    assert "| 1,000 | 0.50 | 2,000 | 0.10 | 10,000 | 0.2 |" in text
    assert ("![cost vs size](scaling.png)" in text) == has_matplotlib


def test_scaling_runs_on_sqlite_without_servers(tmp_path: Path) -> None:
    """Tiny sizes: last(20) and keys() curves on SQLite; the copy needs PostgreSQL and says so."""
    from benchmarks import bench_scaling
    from benchmarks.report import Report
    from benchmarks.runner import Context

    report = Report(quick=True, command="test")
    ctx = Context(report, True, tmp_path, "", "")
    settings = bench_scaling.Settings((100, 1_000), (1_000,), (1_000,), 500, 1, 0.005)
    try:
        out = bench_scaling.run(ctx, settings)
    finally:
        ctx.loop.close()
    assert [(r["backend"], r["size"]) for r in out["last"]] == [("sqlite", 100), ("sqlite", 1_000)]
    assert all(r["ours_us"] > 0 and r["floor_us"] > 0 and r["async_us"] > 0 for r in out["last"])
    assert {(r["kind"], r["pattern"], r["matches"]) for r in out["keys"]} == {
        ("total", "k:000001*", 100),
        ("total", "*:000001??", 100),
        ("matches", "k:0000001?", 10),
        ("matches", "k:000001*", 100),
    }
    assert "copy" not in out
    assert any("no server" in n for n in report.notes["scaling"])
    assert list(tmp_path.glob("scale_*")) == []  # the (possibly huge) SQLite files are removed as each part ends


@pytest.mark.postgres
@pytest.mark.redis
def test_concurrency_and_scaling_run_on_real_servers_and_clean_up(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    """Tiny sizes against real PostgreSQL and Redis: every level of every workload, both sides, no errors; the
    copy and the last(20) curve on PostgreSQL; every bench_ schema and key removed afterwards."""
    import psycopg
    import redis

    from benchmarks import bench_concurrency, bench_scaling
    from benchmarks.report import Report
    from benchmarks.runner import Context

    report = Report(quick=True, command="test")
    ctx = Context(report, True, tmp_path, redis_server.url, postgres_url)
    try:
        rows = bench_concurrency.run(ctx, bench_concurrency.Settings(0.05, 1, (1, 4), 2, 2))
        scaled = bench_scaling.run(ctx, bench_scaling.Settings((100, 300), (1_000,), (1_000,), 600, 1, 0.005))
    finally:
        ctx.loop.close()
    assert [(r["backend"], r["workload"], r["level"]) for r in rows] == [
        (backend, workload, level)
        for backend, workload in (
            ("postgres", "get/set 90/10"),
            ("postgres", "chat append"),
            ("redis", "get/set 90/10"),
        )
        for level in ("1 async task", "4 async tasks", "2 threads (sync)")
    ]
    for r in rows:
        for side in (r["ours"], r["bare"]):
            assert side["errors"] == 0, side["first_error"]
            assert side["ops_per_s"] > 0
            assert 0 < side["p50_ms"] <= side["p99_ms"]
    assert {r["backend"] for r in scaled["last"]} == {"sqlite", "postgres"}
    assert {r["backend"] for r in scaled["keys"]} == {"sqlite", "postgres", "redis"}
    (copy,) = scaled["copy"]
    assert copy["keys"] == 600
    assert copy["ours_s"] > 0
    assert copy["raw_s"] > 0
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (ctx.tag + "%",)).fetchall()
    assert left == []
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert list(client.scan_iter(match=ctx.tag + "*", count=1000)) == []
    finally:
        client.close()


def test_latency_percentiles_are_nearest_rank() -> None:
    """p50/p99 of the concurrency tables: the nearest-rank quantile of every op's latency."""
    from benchmarks.bench_concurrency import percentile

    ordered = [float(v) for v in range(1, 101)]
    assert (percentile(ordered, 0.5), percentile(ordered, 0.99), percentile(ordered, 1.0)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


# --- issue 15: the job queue and live updates (watch) -----------------------------------------------------------

QUEUE_ROWS = [
    {
        "section": "queue",
        "workload": f"throughput_{workers}w",
        "name": name,
        "role": role,
        "backend": backend,
        "is_async": is_async,
        "workers": workers,
        "jobs": 1000,
        "rounds": 5,
        "enqueue_per_s": rate * 3,
        "claim_ack_per_s": rate * 1.5,
        "cycle_per_s": rate,
    }
    for workers in (1, 4)
    for name, role, backend, is_async, rate in (
        ("kvstore AsyncQueue (PostgreSQL)", "kvstore", "postgres", True, 800),
        ("raw psycopg SKIP LOCKED claim + DELETE (floor)", "floor", "postgres", True, 1000),
        ("pgqueuer (Queries, psycopg)", "peer", "postgres", True, 400),
        ("procrastinate (PsycopgConnector)", "peer", "postgres", True, 300),
        ("kvstore AsyncQueue (SQLite)", "kvstore", "sqlite", True, 3000),
        ("kvstore Queue (SQLite, threads)", "kvstore", "sqlite", False, 9000),
        ("raw apsw BEGIN IMMEDIATE claim + DELETE (floor)", "floor", "sqlite", False, 40000),
        ("huey SqliteStorage", "peer", "sqlite", False, 20000),
    )
] + [
    {
        "section": "queue",
        "workload": "enqueue_to_claim_latency",
        "name": "kvstore AsyncQueue.jobs()",
        "role": "kvstore",
        "backend": backend,
        "wake": wake,
        "samples": 300,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": p99 + 1,
    }
    for backend, wake, p50, p99 in (("postgres", "LISTEN/NOTIFY", 0.5, 12.5), ("sqlite", "polled", 5.0, 9.0))
]
WATCH_ROWS = [
    {
        "section": "watch",
        "workload": "append_to_watcher_latency",
        "backend": backend,
        "wake": "w",
        "items": 500,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "max_ms": p99 * 2,
    }
    for backend, p99 in (("memory", 0.2), ("sqlite", 50.0), ("postgres", 1.5))
] + [
    {
        "section": "watch",
        "workload": "notify_cost",
        "backend": "postgres",
        "writers": 1,
        "appends": 500,
        "rounds": 3,
        "with_per_s": 900.0,
        "without_per_s": 1000.0,
        "ratio": 0.9,
        "cpu_us_with": None,
        "cpu_us_without": None,
    }
]


def test_the_queue_and_watch_sections_render_and_join_the_summary_and_the_must_show_lines() -> None:
    """bench_queue's and watch's rows become their report sections, kvstore vs each queue peer joins the summary
    (huey's lead explained by its delete-on-dequeue), and the must-show table judges them (a p99 over 10 ms on
    PostgreSQL is a MISS, not hidden)."""
    from benchmarks.report import Report
    from benchmarks.targets import must_show

    report = Report(quick=True, command="test")
    report.add_queue(QUEUE_ROWS, "jobs=1,000")
    report.add_watch(WATCH_ROWS, "items=500")
    text = report.markdown({}, {}, None)
    for heading in (
        "## Job queue",
        "### PostgreSQL: 4 workers, 1,000 jobs",
        "### SQLite: 1 worker, 1,000 jobs",
        "### Enqueue-to-claim latency, idle worker",
        "## Live updates (watch)",
        "### Append-to-watcher latency",
        "### What notifying a watched list costs an append (PostgreSQL)",
    ):
        assert heading in text
    assert "| **kvstore Queue (SQLite, threads)** | kvstore (sync) | 27,000 | 13,500 | 9,000 | 0.225 |" in text
    assert "no lease, no ack" in text  # the note on huey, in the section and in the behind-why list
    assert "| Job queue | enqueue+claim+ack, 1 worker (SQLite) | kvstore Queue (SQLite, threads) |" in text
    summary = {(v.workload, v.peer.name): round(v.ratio, 3) for v in report.verdicts()}
    assert summary[("enqueue+claim+ack, 4 workers (PostgreSQL)", "pgqueuer (Queries, psycopg)")] == 2.0
    assert summary[("enqueue+claim+ack, 1 worker (SQLite)", "huey SqliteStorage")] == 0.45  # sync vs sync
    assert ("queue", "huey SqliteStorage", "ran") in report.peers
    outcomes = {o.label: o for o in must_show(report)}
    huey = outcomes["queue SQLite 1 worker: kvstore Queue (SQLite, threads) ÷ huey"]
    assert (huey.status, "no lease, no ack" in huey.detail) == ("MISS", True)
    assert outcomes["queue PostgreSQL 4 workers: kvstore AsyncQueue (PostgreSQL) ÷ procrastinate"].status == "OK"
    p99 = outcomes["queue PostgreSQL: enqueue-to-claim p99, idle worker (LISTEN/NOTIFY)"]
    assert (p99.ratio, p99.status) == (12.5, "MISS")
    assert outcomes["watch SQLite: append-to-watcher p99"].status == "reference"
    assert "| watch PostgreSQL: append-to-watcher p99 | 1.50 ms | — | reference;" in text
    empty = {o.label: o.status for o in must_show(Report(quick=True, command="test"))}
    assert empty["queue PostgreSQL 1 worker: kvstore AsyncQueue (PostgreSQL) ÷ pgqueuer"] == "not measured"
    assert empty["watch Memory: append-to-watcher p99"] == "not measured"


def test_queue_and_watch_sections_run_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny sizes, no PostgreSQL: the SQLite queue contenders (kvstore async and sync, the raw apsw floor, huey)
    and the memory and SQLite watchers run; PostgreSQL's rows are noted as not run."""
    from benchmarks import bench_queue, watch
    from benchmarks.report import Report
    from benchmarks.runner import Context

    monkeypatch.setattr(bench_queue, "QUICK", {"jobs": 20, "rounds": 1, "samples": 5})
    monkeypatch.setattr(watch, "QUICK", {"items": 5, "rounds": 1, "appends": 10})
    report = Report(quick=True, command="test")
    ctx = Context(report, True, tmp_path, "", "")
    try:
        queued = bench_queue.run(ctx)
        watched = watch.run(ctx)
    finally:
        ctx.loop.close()
    throughput = [r for r in queued if "cycle_per_s" in r]
    assert {r["backend"] for r in queued} == {"sqlite"}
    assert {(r["role"], r["workers"]) for r in throughput} >= {("kvstore", 1), ("floor", 4)}
    assert all(r["cycle_per_s"] > 0 and r["jobs"] == 20 for r in throughput)
    (latency,) = [r for r in queued if "p99_ms" in r]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert [r["backend"] for r in watched] == ["memory", "sqlite"]
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in watched)
    assert any("no PostgreSQL" in n for n in report.notes["queue"])
    assert any("no PostgreSQL" in n for n in report.notes["watch"])
    text = report.markdown({}, {}, None)
    assert "## Job queue" in text
    assert "## Live updates (watch)" in text


@pytest.mark.postgres
def test_queue_and_watch_sections_run_on_postgres_and_clean_up(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny sizes on a real PostgreSQL: kvstore, the raw floor, pgqueuer and procrastinate drain every job; the
    idle worker's latency and the watchers' are measured; the run's database and schema are gone afterwards."""
    import importlib.util
    import os

    import psycopg

    from benchmarks import bench_queue, watch
    from benchmarks.report import Report
    from benchmarks.runner import Context

    monkeypatch.setattr(bench_queue, "QUICK", {"jobs": 20, "rounds": 1, "samples": 5})
    monkeypatch.setattr(watch, "QUICK", {"items": 5, "rounds": 1, "appends": 10})
    report = Report(quick=True, command="test")
    ctx = Context(report, True, tmp_path, "", postgres_url)
    try:
        queued = bench_queue.run(ctx, ["throughput", "latency"])
        watched = watch.run(ctx, ["latency"])
    finally:
        ctx.loop.close()
    names = {r["name"] for r in queued if r["backend"] == "postgres" and "cycle_per_s" in r}
    # The peers are in the bench dependency group: the test run has them only where it is installed.
    peers = {
        "pgqueuer (Queries, psycopg)": importlib.util.find_spec("pgqueuer"),
        "procrastinate (PsycopgConnector)": importlib.util.find_spec("procrastinate"),
    }
    assert names == {
        "kvstore AsyncQueue (PostgreSQL)",
        "raw psycopg SKIP LOCKED claim + DELETE (floor)",
        *(name for name, spec in peers.items() if spec is not None),
    }
    assert {r["backend"] for r in queued if "p99_ms" in r} == {"postgres", "sqlite"}
    assert [r["backend"] for r in watched] == ["memory", "sqlite", "postgres"]
    assert any(t.workload == "enqueue+claim+ack, 4 workers (PostgreSQL)" for t in report.tables)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        dbs = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_queue_%%'").fetchall()
        schemas = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (ctx.tag + "%",)).fetchall()
    assert [d for (d,) in dbs if d.startswith(f"bench_queue_{os.getpid()}_")] == []
    assert schemas == []


def test_the_model_floor_of_last_20_reads_the_same_page_as_the_floor_and_the_dict_history(tmp_path: Path) -> None:
    """The "floor + validate_json(list[ChatMessage])" row validates the floor's own 20 texts (same messages as the
    floor's dicts, in order), and the model=dict variant reads kvstore's page as the same dicts."""
    from benchmarks.backends import MemoryTier, SqliteTier
    from benchmarks.registry import chat_last_dict, validated_last
    from benchmarks.report import Report
    from benchmarks.runner import Context

    report = Report(quick=True, command="test")
    ctx = Context(report, True, tmp_path, "", "")
    try:
        for cls in (MemoryTier, SqliteTier):
            tier = cls(ctx)
            tier.open()
            try:
                floor = tier.floor_last()(0)
                models = validated_last(tier)(0)
                assert [m.model_dump(include={"role", "content"}) for m in models] == [
                    {"role": f["role"], "content": f["content"]} for f in floor
                ]
                dicts = chat_last_dict(tier, 0)(0)
                assert [(d["role"], d["content"]) for d in dicts] == [(f["role"], f["content"]) for f in floor]
            finally:
                tier.close()
    finally:
        ctx.loop.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_the_notify_cost_rounds_append_to_a_watched_list_that_notifies_and_an_unwatched_one_that_does_not(
    postgres_url: str,
) -> None:
    """The watch section's notify-cost part runs on today's schema (it once toggled a trigger that schema version 7
    dropped, and the whole section was skipped): watched rounds send one NOTIFY per append, unwatched ones none."""
    import os

    import psycopg

    from benchmarks.watch import notify_cost

    schema = f"bench_{os.getpid()}_notifytest"
    try:
        rows = notify_cost(postgres_url, rounds=1, count=10, schema=schema)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert [r["writers"] for r in rows] == [1, 4]
    for r in rows:
        assert r["with_per_s"] > 0
        assert r["without_per_s"] > 0
        assert r["notifies_with"] == r["writers"] * 10
        assert r["notifies_without"] == 0


@pytest.mark.postgres
def test_the_append_cost_tool_still_takes_todays_append_statement_apart(postgres_url: str) -> None:
    """`benchmarks.pg_append_cost` cuts parts out of `Queries.push_statement` by its text: every variant it builds
    from today's statement runs and appends (a changed statement makes it stop with a message instead of measuring
    nonsense)."""
    from benchmarks.pg_append_cost import measure, variants

    labels = list(variants("s"))
    assert labels[:4] == [
        "raw INSERT (floor)",
        "counter + item only",
        "kvstore append (Queries.push: the function)",
        "the one statement (Queries.push_statement)",
    ]
    assert len(labels) == 10
    rows = measure(postgres_url, rounds=1, appends=3)
    assert [row[0] for row in rows] == labels
    assert all(cpu > 0 and wall > 0 for _, cpu, wall in rows)


def test_the_memory_decode_floor_decodes_the_same_100_values_as_the_mget_floor(tmp_path: Path) -> None:
    """The info row "decoding alone" reads what the floor reads, in one orjson.loads (no per-key work timed)."""
    from benchmarks.backends import MemoryTier
    from benchmarks.report import Report
    from benchmarks.runner import Context

    ctx = Context(Report(quick=True, command="test"), True, tmp_path, "", "")
    tier = MemoryTier(ctx)
    try:
        tier.open()
        decoded = tier.decode_mget()(0)
        assert isinstance(decoded, list)
        assert len(decoded) == 100
        assert decoded == tier.floor_mget()(0)
        tier.close()
    finally:
        ctx.loop.close()
