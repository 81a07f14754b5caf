"""Issues 14 and 15's must-show lines, each read from rows measured in the same run (same table: alternating rounds).

A ratio of throughputs (ops/s) unless ``time`` is set: then it is a ratio of times (how many times longer the
first case takes than the second), which is ``ops(second) ÷ ops(first)``. A check whose rows did not run this
time (a partial run, a missing server or peer) says so instead of passing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.report_curves import CONCURRENCY_TARGET, FLAT_TARGET, flatness
from benchmarks.report_live import LATENCY_TARGET_MS

__all__ = ["CHECKS", "Check", "Outcome", "must_show", "must_show_md"]

GATHER = "100 concurrent gets vs mget 100"
#: Two design ceilings for a PostgreSQL append on kvstore's own tables (info rows of `benchmarks.backends`): the
#: least an append that keeps a counter row can do, and an append with no counter at all (positions from the items'
#: index).
COUNTER_APPEND = "kvstore's tables, counter + item only: UPDATE the counter row, INSERT the item (no checks)"
NO_COUNTER_APPEND = "kvstore's tables, no counter: read the entry, max(seq) + 1, INSERT (no lock, no checks)"
#: The contract's bound on an event-loop stall (issue 14: still < 20 ms with a held write lock).
STALL_TARGET_MS = 20.0


LAST_FLOORS = (
    ("SQLite", "sqlite", "raw apsw ORDER BY seq DESC LIMIT 20 (floor)"),
    ("PostgreSQL", "postgres", "raw psycopg ORDER BY seq DESC LIMIT 20 (floor)"),
    ("Memory", "memory", "list[-20:] + orjson.loads (floor)"),
)
MODEL_FLOOR = "floor + pydantic-core validate_json(list[ChatMessage]) (the model's own cost)"
GATHER_STORES = (
    ("SQLite", "sqlite", "AsyncSqliteDatabase"),
    ("PostgreSQL", "postgres", "AsyncPostgresDatabase"),
    ("Redis", "redis", "AsyncRedisCache"),
)
GATHER_FLOOR = "floor + asyncio.gather(100 no-op coroutines) (asyncio's own cost)"
#: The same with 100 futures answered at once instead of coroutines (no task per get): the least any API that
#: hands each caller its own awaitable (DataLoader's ``load`` returns a future) can cost over one batch.
GATHER_FUTURES_FLOOR = "floor + asyncio.gather(100 futures answered at once) (no task per get)"
#: The least an ``mget`` of 100 stored values can cost in memory: one ``orjson.loads`` of them joined.
MGET_DECODE_FLOOR = "orjson.loads of the 100 stored values joined (decoding alone)"


@dataclass(frozen=True)
class Check:
    label: str
    section: str
    #: The table's workload name, or its start.
    workload: str
    ours: str
    base: str
    #: ">=": ratio at least ``target``; "<=": at most; "": reported, no target (a peer's own figure).
    op: str
    target: float
    time: bool = False


@dataclass
class Outcome:
    label: str
    ratio: float | None
    op: str
    target: float
    time: bool
    detail: str = ""
    #: The measure's unit when it is not a ratio ("ms").
    unit: str = ""

    @property
    def status(self) -> str:
        if self.ratio is None:
            return "not measured"
        if not self.op:
            return "reference"
        ok = {">=": self.ratio >= self.target, "<=": self.ratio <= self.target, "<": self.ratio < self.target}[self.op]
        return "OK" if ok else "MISS"

    @property
    def shown(self) -> str:
        if self.ratio is None:
            return "—"
        if self.unit:
            return f"{self.ratio:.2f} {self.unit}" if self.ratio < 10 else f"{self.ratio:.1f} {self.unit}"
        return f"{self.ratio:.2f}x" + (" the time" if self.time else "")


CHECKS: tuple[Check, ...] = (
    Check(
        "async SQLite get ÷ raw apsw",
        "sqlite",
        "get",
        "kvstore AsyncSqliteDatabase.get",
        "raw apsw SELECT + orjson.loads (floor)",
        ">=",
        0.5,
    ),
    Check(
        "async SQLite set ÷ raw apsw",
        "sqlite",
        "set",
        "kvstore AsyncSqliteDatabase.set",
        "raw apsw autocommit upsert (floor)",
        ">=",
        0.5,
    ),
    Check(
        "SQLite AsyncChatHistory.add ÷ ChatHistory.add",
        "sqlite",
        "chat append",
        "kvstore AsyncChatHistory.add",
        "kvstore ChatHistory.add",
        ">=",
        0.5,
    ),
    Check(
        "SQLite AsyncChatHistory.last(20) ÷ ChatHistory.last(20)",
        "sqlite",
        "last 20 of",
        "kvstore AsyncChatHistory.last(20)",
        "kvstore ChatHistory.last(20)",
        ">=",
        0.5,
    ),
    *(
        Check(
            f"{title} ChatHistory.last(20) ÷ raw range + orjson",
            section,
            "last 20 of",
            "kvstore ChatHistory.last(20)",
            floor,
            ">=",
            0.7,
        )
        for title, section, floor in LAST_FLOORS
    ),
    # What the line above can reach at best: the floor's read plus one pydantic-core validation of the page
    # as ChatMessage models (no kvstore code), and where kvstore stands against that; a dict history meets it.
    *(
        check
        for title, section, floor in LAST_FLOORS
        for check in (
            Check(
                f"{title} the model's own cost: raw range + validate_json(list[ChatMessage]) ÷ raw range + orjson",
                section,
                "last 20 of",
                MODEL_FLOOR,
                floor,
                "",
                0.0,
            ),
            Check(
                f"{title} ChatHistory.last(20) ÷ raw range + validate_json(list[ChatMessage])",
                section,
                "last 20 of",
                "kvstore ChatHistory.last(20)",
                MODEL_FLOOR,
                "",
                0.0,
            ),
            Check(
                f"{title} ChatHistory(model=dict).last(20) ÷ raw range + orjson",
                section,
                "last 20 of",
                "kvstore ChatHistory(model=dict).last(20)",
                floor,
                "",
                0.0,
            ),
        )
    ),
    Check(
        "PostgreSQL chat append: ChatHistory.add ÷ raw INSERT",
        "postgres",
        "chat append",
        "kvstore ChatHistory.add",
        "raw psycopg INSERT (floor)",
        ">=",
        0.8,
    ),
    Check(
        "PostgreSQL chat append: a bare INSERT into kvstore's items table (no checks) ÷ raw INSERT",
        "postgres",
        "chat append",
        "raw psycopg INSERT into kvstore's items table (its index, no checks)",
        "raw psycopg INSERT (floor)",
        "",
        0.0,
    ),
    Check(
        "PostgreSQL chat append: counter + item only, one statement, no checks (design ceiling) ÷ raw INSERT",
        "postgres",
        "chat append",
        COUNTER_APPEND,
        "raw psycopg INSERT (floor)",
        "",
        0.0,
    ),
    Check(
        "PostgreSQL chat append: no counter, entry read + max(seq) + 1 (design ceiling) ÷ raw INSERT",
        "postgres",
        "chat append",
        NO_COUNTER_APPEND,
        "raw psycopg INSERT (floor)",
        "",
        0.0,
    ),
    Check(
        "PostgreSQL chat append: ChatHistory.add ÷ langchain-postgres",
        "postgres",
        "chat append",
        "kvstore ChatHistory.add",
        "langchain-postgres PostgresChatMessageHistory.add_messages([m])",
        ">=",
        1.0,
    ),
    *(
        Check(
            f"{title}: 100 concurrent gets, time ÷ one mget(100)",
            section,
            GATHER,
            f"kvstore asyncio.gather(100 x {cls}.get)",
            f"kvstore {cls}.mget(100)",
            "<=",
            1.3,
            time=True,
        )
        for title, section, cls in GATHER_STORES
    ),
    # What the line above can reach at best: the floor's one batch read plus asyncio.gather of 100 coroutines
    # that return at once (asyncio's own cost of 100 concurrent coroutine calls, nothing read).
    *(
        Check(
            f"{title}: asyncio's own cost, floor + gather(100 no-op coroutines), time ÷ one mget(100)",
            section,
            GATHER,
            GATHER_FLOOR,
            f"kvstore {cls}.mget(100)",
            "",
            0.0,
            time=True,
        )
        for title, section, cls in GATHER_STORES
    ),
    *(
        Check(
            f"{title}: no task per get, floor + gather(100 futures answered at once), time ÷ one mget(100)",
            section,
            GATHER,
            GATHER_FUTURES_FLOOR,
            f"kvstore {cls}.mget(100)",
            "",
            0.0,
            time=True,
        )
        for title, section, cls in GATHER_STORES
    ),
    Check(
        "LangGraph AsyncPostgresStore: 100 concurrent agets, time ÷ one abatch(100) (for comparison)",
        "postgres",
        GATHER,
        "LangGraph AsyncPostgresStore: asyncio.gather(100 x aget)",
        "LangGraph AsyncPostgresStore.abatch(100 GetOp)",
        "",
        0.0,
        time=True,
    ),
    Check(
        "Memory mget 100: AsyncMemoryCache ÷ aiocache",
        "memory",
        "mget 100",
        "kvstore AsyncMemoryCache.mget",
        "aiocache SimpleMemoryCache.mget",
        ">=",
        1.0,
    ),
    # What storing bytes costs at least against a peer that keeps the caller's objects (issue 14: beat LangGraph's
    # InMemoryStore while still storing bytes): the decoding alone, ÷ the peer's whole batch.
    Check(
        "Memory mget 100: decoding the 100 stored values alone ÷ LangGraph InMemoryStore.batch(100 GetOp)",
        "memory",
        "mget 100",
        MGET_DECODE_FLOOR,
        "LangGraph InMemoryStore.batch(100 GetOp)",
        "",
        0.0,
    ),
    Check(
        "Memory mset 100: AsyncMemoryCache ÷ aiocache",
        "memory",
        "mset 100",
        "kvstore AsyncMemoryCache.mset",
        "aiocache SimpleMemoryCache.mset",
        ">=",
        1.0,
    ),
)


def _rate(report: Any, section: str, workload: str, case: str) -> float | None:
    for table in report.tables:
        if table.section == section and table.workload.startswith(workload):
            for row in table.rows:
                if row.name == case:
                    return float(row.ops_per_s)
    return None


def must_show(report: Any) -> list[Outcome]:
    """Every check of ``CHECKS``, then the concurrency and scaling checks, from what ``report`` recorded."""
    out = []
    for c in CHECKS:
        ours, base = _rate(report, c.section, c.workload, c.ours), _rate(report, c.section, c.workload, c.base)
        ratio = None if not ours or not base else (base / ours if c.time else ours / base)
        out.append(Outcome(c.label, ratio, c.op, c.target, c.time))
    stall = getattr(report, "stalls", {}).get("sqlite")
    out.append(
        Outcome(
            "SQLite async: worst event-loop stall, another connection holding the write lock",
            None if stall is None else stall[0],
            "<",
            STALL_TARGET_MS,
            False,
            "" if stall is None else f"the idle loop's worst gap in the same run: {stall[1]:.1f} ms",
            "ms",
        )
    )
    rows = getattr(report, "concurrency", [])
    groups = list(dict.fromkeys((r["backend"], r["workload"]) for r in rows))
    for backend, workload in groups:
        mine = [r for r in rows if (r["backend"], r["workload"]) == (backend, workload)]
        worst = min(mine, key=lambda r: r["ratio"])
        out.append(
            Outcome(
                f"concurrency {backend} {workload}: kvstore ÷ bare pool throughput, worst level",
                worst["ratio"],
                ">=",
                CONCURRENCY_TARGET,
                False,
                f"worst at {worst['level']}; p99 {worst['ours']['p99_ms']:.2f} ms vs {worst['bare']['p99_ms']:.2f} ms",
            )
        )
    if not groups:
        out.append(
            Outcome("concurrency: kvstore ÷ bare pool throughput at every level", None, ">=", CONCURRENCY_TARGET, False)
        )
    scaling = getattr(report, "scaling", {})
    flat = flatness(scaling)
    largest = {
        r["backend"]: max(x["size"] for x in scaling["last"] if x["backend"] == r["backend"])
        for r in scaling.get("last", [])
    }
    for backend in ("sqlite", "postgres"):
        high = largest.get(backend)
        label = (
            f"{backend} last(20) at {high:,} messages, time ÷ on 100 messages"
            if high
            else f"{backend} last(20) at the largest history, time ÷ on 100 messages"
        )
        out.append(Outcome(label, flat.get(backend), "<=", FLAT_TARGET, True))
    return out + queue_outcomes(report) + watch_outcomes(report)


#: Issue 15's queue comparisons: (backend, peer name prefix, kvstore row's name). Same flavour on both sides:
#: PostgreSQL async vs async, SQLite kvstore's sync `Queue` vs huey (synchronous, in threads).
QUEUE_PEERS = (
    ("postgres", "pgqueuer", "kvstore AsyncQueue (PostgreSQL)"),
    ("postgres", "procrastinate", "kvstore AsyncQueue (PostgreSQL)"),
    ("sqlite", "huey", "kvstore Queue (SQLite, threads)"),
)
#: Why kvstore's queue can be behind a peer, told on the must-show row itself (the report's note says more).
QUEUE_BEHIND = {
    "huey": "huey's dequeue deletes the row: no lease, no ack, a killed worker loses its job; kvstore commits a "
    "lease at claim and an ack (see the queue section's note)",
}
TITLES = {"postgres": "PostgreSQL", "sqlite": "SQLite", "memory": "Memory"}


def queue_outcomes(report: Any) -> list[Outcome]:
    """kvstore's queue ÷ each peer (enqueue+claim+ack/s, 1 and 4 workers) and the enqueue-to-claim p99."""
    rows = getattr(report, "queue", [])
    out = []
    for backend, peer, mine in QUEUE_PEERS:
        for workers in (1, 4):
            group = [r for r in rows if r.get("workers") == workers and r["backend"] == backend]
            ours = next((r for r in group if r["name"] == mine), None)
            theirs = next((r for r in group if r["role"] == "peer" and r["name"].startswith(peer)), None)
            ratio = None if ours is None or theirs is None else ours["cycle_per_s"] / theirs["cycle_per_s"]
            detail = ""
            if ratio is not None:
                detail = f"{ours['cycle_per_s']:,.0f} vs {theirs['cycle_per_s']:,.0f} jobs/s"  # type: ignore[index]
                if ratio < 1.0:
                    detail += "; behind: " + QUEUE_BEHIND.get(peer, "no explanation yet")
            label = f"queue {TITLES[backend]} {workers} worker{'s' if workers > 1 else ''}: {mine} ÷ {peer}"
            out.append(Outcome(label, ratio, ">=", 1.0, False, detail))
    for backend, op in (("postgres", "<"), ("sqlite", "")):
        row = next((r for r in rows if "p99_ms" in r and r["backend"] == backend), None)
        out.append(
            Outcome(
                f"queue {TITLES[backend]}: enqueue-to-claim p99, idle worker ({'LISTEN/NOTIFY' if op else 'polled'})",
                None if row is None else row["p99_ms"],
                op,
                LATENCY_TARGET_MS if op else 0.0,
                False,
                "" if row is None else f"p50 {row['p50_ms']:.2f} ms",
                "ms",
            )
        )
    return out


def watch_outcomes(report: Any) -> list[Outcome]:
    """Append-to-watcher p99 per backend: reported (no target)."""
    rows = [r for r in getattr(report, "watch", []) if r["workload"] == "append_to_watcher_latency"]
    out = []
    for backend in ("memory", "sqlite", "postgres"):
        row = next((r for r in rows if r["backend"] == backend), None)
        out.append(
            Outcome(
                f"watch {TITLES[backend]}: append-to-watcher p99",
                None if row is None else row["p99_ms"],
                "",
                0.0,
                False,
                "" if row is None else f"p50 {row['p50_ms']:.2f} ms; {row['wake']}",
                "ms",
            )
        )
    return out


def must_show_md(report: Any) -> list[str]:
    outcomes = must_show(report)
    lines = [
        "## Issues 14 and 15: the must-show lines",
        "",
        "Each from rows of this run (the same table, so the same alternating rounds). `x the time`: how many times "
        "longer the first case takes than the second (lower is better); `ms`: a latency (lower is better); "
        "reference: reported, no target.",
        "",
        "| check | measured | target | |",
        "|---|---:|---|---|",
    ]
    for o in outcomes:
        target = f"{o.op} {o.target:g}" if o.op else "—"
        status = {"MISS": "**MISS**"}.get(o.status, o.status)
        lines.append(f"| {o.label} | {o.shown} | {target} | {status}{'; ' + o.detail if o.detail else ''} |")
    return [*lines, ""]


def print_must_show(report: Any) -> None:
    outcomes = must_show(report)
    missing = [o for o in outcomes if o.ratio is None]
    print(
        "\n# issues 14 and 15 must-show lines"
        + (f" ({len(missing)} of {len(outcomes)} not measured in this run)" if missing else "")
    )
    for o in outcomes:
        if o.ratio is None:
            continue
        target = f"{o.op} {o.target:g}" if o.op else ""
        print(f"  {o.status:<12} {o.shown:>16}  {target:<8} {o.label}{' (' + o.detail + ')' if o.detail else ''}")
