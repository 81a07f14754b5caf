"""The benchmark report: tables of ops/s and ratios, peer status, verdicts, REPORT.md and chart.png."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks._common import Case, Result, print_table

__all__ = ["Report", "Row", "Table", "machine_info", "package_versions"]

SECTIONS = ("memory", "sqlite", "postgres", "redis", "langgraph", "concurrency", "scaling", "queue", "watch")
#: The sections timed by the workload registry (one backend each); "langgraph" is ``benchmarks.bench_langgraph``,
#: "concurrency" ``benchmarks.bench_concurrency`` (many clients at once), "scaling" ``benchmarks.bench_scaling``,
#: "queue" ``benchmarks.bench_queue`` (job queue vs pgqueuer, procrastinate, huey), "watch" ``benchmarks.watch``.
TIERS = SECTIONS[:4]
TITLES = {
    "memory": "Memory",
    "sqlite": "SQLite",
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "langgraph": "LangGraph",
    "concurrency": "Many clients at once",
    "scaling": "Cost vs size",
    "queue": "Job queue",
    "watch": "Live updates (watch)",
}
#: Packages whose versions the report lists (absent ones are shown as not installed).
PACKAGES = (
    "kvstore",
    "orjson",
    "apsw",
    "psycopg",
    "redis",
    "hiredis",
    "aiocache",
    "py-key-value-aio",
    "diskcache",
    "langgraph-checkpoint",
    "langgraph-checkpoint-postgres",
    "langgraph-checkpoint-sqlite",
    "langgraph",
    "langchain-core",
    "langchain-community",
    "langchain-postgres",
    "langchain-redis",
    "litestar",
    "SQLAlchemy",
    "matplotlib",
    "pgqueuer",
    "procrastinate",
    "huey",
)


#: Why kvstore is behind a peer, by (section, workload prefix, peer-name prefix): the hypothesis and
#: what we would change. A comparison that falls behind without an entry here says "no explanation yet".
BEHIND_WHY: list[tuple[str, str, str, str]] = [
    (
        "memory",
        "m",
        "",
        "The peer keeps the caller's objects (aiocache's NullSerializer default, LangGraph's dicts): a batch is "
        "100 reference copies. kvstore's memory tier stores orjson bytes (it behaves like the durable backends and "
        "a read never aliases a writer's object), so it pays a per-key expiry check and the decoding of 100 values "
        '(one `orjson.loads` of the joined bytes already). That decoding alone (the info row "decoding alone", '
        "timed with no per-key work at all) is slower than LangGraph's whole batch in the same run (see the "
        "must-show reference line). Not changed: storing bytes is what keeps a read from aliasing a writer's object.",
    ),
    (
        "memory",
        "chat append",
        "LangChain",
        "InMemoryChatMessageHistory appends a live object to a Python list. kvstore validates the message into "
        "`ChatMessage` (pydantic, with a created_at timestamp), dumps it to JSON-able form, then orjson-encodes it. "
        "Would change: `TypeCodec` could serialise with pydantic-core's `dump_json` straight to bytes (one pass).",
    ),
    (
        "memory",
        "last 20",
        "LangChain",
        "`messages[-20:]` copies 20 references and parses nothing; kvstore parses the page's stored JSON and "
        "validates 20 `ChatMessage` models in one pydantic-core call (~0.5 us per instance beyond the parse). Not "
        "changed: a read returns fresh validated objects; `model=dict` histories skip validation.",
    ),
    (
        "postgres",
        "chat append",
        "langchain-postgres",
        "langchain-postgres sends one autocommit INSERT of one row (a serial id, no positions, TTL or type checks). "
        "kvstore's `append` is also one autocommit statement (one round trip: a call of the schema's append "
        "function, version 8), but it writes two rows: the list's entry (gapless positions under its row lock, the "
        "TTL and the type check) and the item, and it looks for a watcher of the list (a NOTIFY only when there is "
        "one). What is left is server work per append, not round trips or client CPU: the UPDATE of the counter "
        "row costs more than the INSERT of the item. `python -m benchmarks.pg_append_cost` measures the server "
        "process's CPU per append, part by part: the function's fast path (a live list) runs the counter UPDATE, "
        "the INSERT and the watcher probe, about 1.4-1.5x a raw INSERT's server CPU, against 1.9x for the one "
        "data-modifying-CTE statement it replaced (which still runs for a new, expired or typed-wrong key).",
    ),
    (
        "redis",
        "session",
        "litestar",
        "Both are one round trip: litestar's `get(renew_for=)` runs GET + PEXPIRE in one Lua script, kvstore's "
        "`SessionStore.get(touch=True)` one GETEX on a cache hit (the database behind it is slid at most once per "
        "`touch_interval`). Both go through redis.asyncio's client, whose per-command cost is most of the time here "
        "(Redis answers in a few µs): the two rows are level within noise, either ahead by a run. Not changed: "
        "kvstore's own session layer adds ~7 µs of CPU over its `cache.get(touch=)`.",
    ),
    (
        "postgres",
        "100 concurrent gets",
        "LangGraph",
        "LangGraph's AsyncPostgresStore queues each `aget` for a background task that sends what is queued as one "
        "batch; a kvstore store without auto-batching sends each of the 100 gets as its own round trip over its "
        "connection pool. Would change (issue 14): coalesce the point gets issued in one event-loop tick into one "
        "`mget` (DataLoader style), each caller getting its own result.",
    ),
    (
        "langgraph",
        "checkpointer turn @ 20",
        "",
        "At 20 messages the peer's whole-state write is small, and kvstore's saver does fixed work per turn: it "
        "stores each new message once under its own key and records which runs of messages make up the state, "
        "encoding LangChain messages as JSON. That work stays flat as the thread grows while the peers rewrite "
        "every message: kvstore is ahead from 200 messages on (the rows below). Not changed: the layout is what "
        "keeps storage linear in the messages.",
    ),
    (
        "langgraph",
        "store search",
        "",
        "`KVStoreStore.search` lists the namespace's keys (`keys`), then `mget`s and decodes every item of the "
        "namespace (100 here) to apply the filter and the limit in Python; LangGraph's stores filter in SQL and "
        "stop at LIMIT 10. Would change: push the namespace scan + filter into the backend (a range read of the "
        "namespace's keys with the JSON filter in SQL where the backend has it).",
    ),
]


#: Why huey's SQLite storage can be ahead of kvstore's queue (the queue section's note and must-show row say it).
HUEY_NOTE = (
    "huey's `SqliteStorage.dequeue` deletes the job's row as it reads it: no lease, no ack, no attempt count, so a "
    "worker killed while running a job loses that job. kvstore's claim records a lease and the attempt, and its ack "
    "is a second write: two commits per job where huey makes one. Not changed: the lease is what brings a killed "
    "worker's job back (issue 15)."
)
BEHIND_WHY.append(("queue", "", "huey", HUEY_NOTE))


def why_behind(section: str, workload: str, peer: str) -> str:
    for sec, work, name, text in BEHIND_WHY:
        if sec == section and workload.startswith(work) and peer.startswith(name):
            return text
    return "No explanation yet."


@dataclass
class Row:
    name: str
    role: str  # floor | kvstore | variant | peer | info
    is_async: bool
    ops_per_s: float
    ratio: float  # ops/s ÷ the floor's ops/s, same run

    @property
    def flavour(self) -> str:
        return "async" if self.is_async else "sync"


@dataclass
class Verdict:
    section: str
    workload: str
    ours: Row
    peer: Row

    @property
    def ratio(self) -> float:
        return self.ours.ops_per_s / self.peer.ops_per_s

    @property
    def ahead(self) -> bool:
        return self.ratio > 1.0


@dataclass
class Table:
    section: str
    workload: str
    floor: str
    rows: list[Row]
    note: str = ""

    def verdicts(self) -> list[Verdict]:
        """Each peer against kvstore's main row of the same flavour (sync vs sync, async vs async)."""
        ours = [r for r in self.rows if r.role == "kvstore"]
        out = []
        for peer in (r for r in self.rows if r.role == "peer"):
            same = [r for r in ours if r.is_async == peer.is_async] or ours
            if same:
                out.append(Verdict(self.section, self.workload, max(same, key=lambda r: r.ops_per_s), peer))
        return out


@dataclass
class Report:
    quick: bool
    command: str
    tables: list[Table] = field(default_factory=list)
    #: (section, peer, status): "ran", "not installed: ...", "not runnable: ...", "not compared: ..."
    peers: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: The rows of ``benchmarks.bench_langgraph.rows`` (checkpointers, then stores) and how they were run.
    langgraph: list[dict[str, Any]] = field(default_factory=list)
    langgraph_run: str = ""
    #: ``benchmarks.bench_concurrency`` rows (one per backend, workload and level) and how they were run.
    concurrency: list[dict[str, Any]] = field(default_factory=list)
    concurrency_run: str = ""
    #: ``benchmarks.bench_scaling`` rows by part ("last", "keys", "copy") and how they were run.
    scaling: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scaling_run: str = ""
    #: Worst event-loop stall (ms) with another connection holding the write lock, and the idle loop's, by backend.
    stalls: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: ``benchmarks.bench_queue`` rows (throughput per backend and worker count, enqueue-to-claim latency).
    queue: list[dict[str, Any]] = field(default_factory=list)
    queue_run: str = ""
    #: ``benchmarks.watch`` rows (append-to-watcher latency per backend, what notifying a watched list costs).
    watch: list[dict[str, Any]] = field(default_factory=list)
    watch_run: str = ""
    #: Chart file per curve section ("concurrency", "scaling"), set by ``curve_charts``.
    charts: dict[str, str] = field(default_factory=dict)

    # --- collecting ------------------------------------------------------------------

    def peer(self, section: str, name: str, status: str) -> None:
        self.peers.append((section, name, status))
        if status != "ran":
            print(f"  peer {name}: {status}")

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def add(self, section: str, workload: str, cases: list[Case], results: dict[str, Result], note: str = "") -> Table:
        """Record one workload's results (ratios to its floor case) and print them."""
        floor = next(c.name for c in cases if c.role == "floor")
        base = results[floor].ops_per_s
        rows = [
            Row(c.name, c.role, c.is_async, results[c.name].ops_per_s, results[c.name].ops_per_s / base) for c in cases
        ]
        table = Table(section, workload, floor, rows, note)
        self.tables.append(table)
        print_table(f"{TITLES[section]}: {workload}", results, floor)
        for v in table.verdicts():
            mark = "ahead" if v.ahead else "BEHIND"
            print(f"  {v.ours.name} ÷ {v.peer.name}: {fmt_ratio(v.ratio)}x  ({mark})")
        if note:
            print(f"  note: {note}")
        return table

    def verdicts(self) -> list[Verdict]:
        return [v for t in self.tables for v in t.verdicts()]

    def add_concurrency(self, rows: list[dict[str, Any]], run: str = "") -> None:
        self.concurrency += rows
        self.concurrency_run = run

    def add_scaling(self, part: str, rows: list[dict[str, Any]], run: str = "") -> None:
        self.scaling.setdefault(part, []).extend(rows)
        if run:
            self.scaling_run = run

    def add_queue(self, rows: list[dict[str, Any]], run: str = "") -> None:
        """Record ``bench_queue`` rows; each (backend, worker count) becomes a table of enqueue+claim+ack per second
        (ratio to the floor), so kvstore vs each peer joins the summary."""
        self.queue += rows
        self.queue_run = run
        for r in rows:
            if r["role"] == "peer" and "cycle_per_s" in r and ("queue", r["name"], "ran") not in self.peers:
                self.peers.append(("queue", r["name"], "ran"))
        throughput = [r for r in rows if "cycle_per_s" in r]
        for backend, workers in dict.fromkeys((r["backend"], r["workers"]) for r in throughput):
            mine = [r for r in throughput if (r["backend"], r["workers"]) == (backend, workers)]
            floor = next((r for r in mine if r["role"] == "floor"), mine[0])
            base = floor["cycle_per_s"]
            table_rows = [
                Row(r["name"], r["role"], r["is_async"], r["cycle_per_s"], r["cycle_per_s"] / base) for r in mine
            ]
            workload = f"enqueue+claim+ack, {workers} worker{'s' if workers > 1 else ''} ({TITLES[backend]})"
            table = Table("queue", workload, floor["name"], table_rows)
            self.tables.append(table)
            for v in table.verdicts():
                mark = "ahead" if v.ahead else "BEHIND"
                print(f"  {workload}: {v.ours.name} ÷ {v.peer.name}: {fmt_ratio(v.ratio)}x  ({mark})")

    def add_watch(self, rows: list[dict[str, Any]], run: str = "") -> None:
        """Record ``benchmarks.watch`` rows (latency per backend, notify cost)."""
        self.watch += rows
        self.watch_run = run

    def curve_charts(self, out: Path) -> list[str]:
        """concurrency.png and scaling.png in ``out`` for the curve sections that ran (none without matplotlib)."""
        from benchmarks.report_curves import concurrency_chart, scaling_chart

        made = []
        for section, draw, data in (
            ("concurrency", concurrency_chart, self.concurrency),
            ("scaling", scaling_chart, self.scaling),
        ):
            name = f"{section}.png"
            if data and draw(data, out / name):  # type: ignore[operator]
                self.charts[section] = name
                made.append(name)
        return made

    def add_langgraph(self, rows: list[dict[str, Any]], run: str = "") -> None:
        """Record ``bench_langgraph.rows(...)``; what fits the summary's shape (a rate, higher is better) becomes
        tables there: per backend, a chat turn at each history length, ``get_state()[-20:]`` and store ``search``."""
        self.langgraph, self.langgraph_run = rows, run
        for r in rows:
            if r["role"] == "peer":
                self.peers.append(("langgraph", r["name"], "ran"))
        saver = [r for r in rows if "turn_ms" in r]
        store = [r for r in rows if "ops_per_s" in r]
        if saver:
            floor = next(r for r in saver if r["role"] == "floor")
            for mark in sorted(floor["turn_ms"]):
                self._lg_tables(
                    saver, floor, f"checkpointer turn @ {mark:,} messages", lambda r, m=mark: 1000 / r["turn_ms"][m]
                )
            n = floor.get("messages", max(floor["turn_ms"]))
            self._lg_tables(
                saver,
                floor,
                f"checkpointer get_state()[-20:] of {n:,} messages",
                lambda r: 1000 / r["get_state_last20_ms"],
            )
        if store:
            floor = next(r for r in store if r["role"] == "floor")
            self._lg_tables(store, floor, "store search(prefix + filter, limit 10)", lambda r: r["ops_per_s"])

    def _lg_tables(
        self, rows: list[dict[str, Any]], floor: dict[str, Any], workload: str, rate: Callable[[dict[str, Any]], float]
    ) -> None:
        """One table per backend that has both a kvstore row and a peer row: floor, kvstore, peer (rates)."""
        base = rate(floor)
        for backend in ("memory", "sqlite", "postgres"):
            mine = [r for r in rows if r["backend"] == backend and r["role"] in ("kvstore", "peer")]
            if {r["role"] for r in mine} != {"kvstore", "peer"}:
                continue
            table_rows = [Row(r["name"], r["role"], False, rate(r), rate(r) / base) for r in (floor, *mine)]
            table = Table("langgraph", f"{workload} ({TITLES[backend]})", floor["name"], table_rows)
            self.tables.append(table)
            for v in table.verdicts():
                mark = "ahead" if v.ahead else "BEHIND"
                print(f"  {table.workload}: {v.ours.name} ÷ {v.peer.name}: {fmt_ratio(v.ratio)}x  ({mark})")

    # --- writing ---------------------------------------------------------------------

    def markdown(self, meta: dict[str, str], versions: dict[str, str], chart: str | None) -> str:
        lines = [
            "# kvstore benchmark report",
            "",
            f"Generated by `{self.command}` on {self.started:%Y-%m-%d %H:%M} UTC"
            f"{' (quick smoke run: few, short rounds; not for claims)' if self.quick else ''}.",
            "",
            "Every figure comes from this one process and run: cases of a workload run in alternating",
            "rounds (floor, kvstore, peers, floor, ...), each round calibrated to take about the same",
            "wall time, after a warm-up; the table shows the **median ops/s** and the **ratio to the floor**",
            "(the bare driver doing the same round trips, orjson on both ends; higher is better).",
            "Absolute ops/s drift ±30 % between runs on this shared machine; ratios are what to read.",
            "How we measure: `shared/BENCHMARKS.md`. A message or value is a ~130 B chat message;",
            "every write changes the stored bytes.",
            "",
            "## Machine",
            "",
            *[f"- {k}: {v}" for k, v in meta.items()],
            *[f"- {k}: {v}" for k, v in self.servers.items()],
            "",
        ]
        if chart:
            lines += [f"![kvstore vs floors and peers]({chart})", ""]
        lines += self._summary_md()
        from benchmarks.targets import must_show_md

        lines += must_show_md(self)
        for section in SECTIONS:
            lines += self._section_md(section)
        lines += ["## Peers", "", "| backend | peer | status |", "|---|---|---|"]
        lines += [f"| {TITLES[s]} | {p} | {st} |" for s, p, st in self.peers]
        lines += ["", "## Versions", "", "| package | version |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in versions.items()]
        return "\n".join(lines) + "\n"

    def _summary_md(self) -> list[str]:
        verdicts = self.verdicts()
        lines = ["## kvstore vs each peer (same workload, same flavour: sync vs sync, async vs async)", ""]
        if not verdicts:
            return [*lines, "No peer ran.", ""]
        lines += ["| backend | workload | kvstore | peer | kvstore ÷ peer | |", "|---|---|---|---|---:|---|"]
        for v in verdicts:
            mark = "ahead" if v.ahead else "**behind**"
            if 0.9 <= v.ratio < 1.1:
                mark += " (within noise)"
            lines.append(
                f"| {TITLES[v.section]} | {v.workload} | {v.ours.name} | {v.peer.name} | {fmt_ratio(v.ratio)}x | {mark} |"
            )
        behind = [v for v in verdicts if not v.ahead]
        lines.append("")
        if not behind:
            return [*lines, f"kvstore is ahead in all {len(verdicts)} comparisons.", ""]
        lines += [
            f"kvstore is ahead in {len(verdicts) - len(behind)} of {len(verdicts)} comparisons and **behind in "
            f"{len(behind)}**. Ratios between 0.9x and 1.1x are within this machine's run-to-run noise.",
            "",
            "## Where kvstore is behind, and why",
            "",
        ]
        for v in behind:
            lines.append(
                f"- **{TITLES[v.section]}, {v.workload}: {v.ours.name} is {fmt_ratio(v.ratio)}x {v.peer.name}.** "
                + why_behind(v.section, v.workload, v.peer.name)
            )
        return [*lines, ""]

    def _section_md(self, section: str) -> list[str]:
        title = TITLES[section]
        if section in self.skipped:
            return [f"## {title}", "", f"Skipped: {self.skipped[section]}.", ""]
        if section == "langgraph":
            return self._langgraph_md()
        if section in ("queue", "watch"):
            from benchmarks.report_live import queue_md, watch_md

            if section == "queue":
                tables = [t for t in self.tables if t.section == "queue"]
                return queue_md(self.queue, self.queue_run, tables, self.notes.get(section, []))
            return watch_md(self.watch, self.watch_run, self.notes.get(section, []))
        if section in ("concurrency", "scaling"):
            from benchmarks.report_curves import concurrency_md, scaling_md

            notes = self.notes.get(section, [])
            if section == "concurrency":
                return concurrency_md(self.concurrency, self.concurrency_run, notes, self.charts.get(section))
            return scaling_md(self.scaling, self.scaling_run, notes, self.charts.get(section))
        tables = [t for t in self.tables if t.section == section]
        if not tables:
            return []
        lines = [f"## {title}", ""]
        for t in tables:
            lines += [f"### {t.workload}", "", "| case | role | ops/s | ratio to floor |", "|---|---|---:|---:|"]
            for r in t.rows:
                name = f"**{r.name}**" if r.role == "kvstore" else r.name
                lines.append(f"| {name} | {r.role} ({r.flavour}) | {r.ops_per_s:,.0f} | {r.ratio:.3g} |")
            if t.note:
                lines += ["", t.note]
            lines.append("")
        for text in self.notes.get(section, []):
            lines.append(f"- {text}")
        return [*lines, ""]

    def _langgraph_md(self) -> list[str]:
        """The LangGraph section: turn cost, storage, kvstore vs LangGraph's own savers, and the store search."""
        saver = [r for r in self.langgraph if "turn_ms" in r]
        store = [r for r in self.langgraph if "ops_per_s" in r]
        if not saver and not store:
            return []
        lines = [
            "## LangGraph",
            "",
            "kvstore's LangGraph integration (`KVStoreSaver`, `KVStoreStore` over kvstore's memory, SQLite and "
            "PostgreSQL databases) against LangGraph's own savers and stores, in one process and one run "
            f"(`benchmarks/bench_langgraph.py`{', ' + self.langgraph_run if self.langgraph_run else ''}): a real "
            "`StateGraph` chat (`add_messages`, a fake chat model answering from the last 20 messages, no network), "
            "2 messages per turn, the savers taking turns (turn t of each, then turn t+1 of each). The floor keeps "
            "checkpoints by reference in a dict: its turn is LangGraph's own cost.",
            "",
        ]
        if saver:
            floor = next(r for r in saver if r["role"] == "floor")
            marks = sorted(floor["turn_ms"])
            n = floor.get("messages")
            head = " | ".join(f"turn @ {m:,} msgs (ms)" for m in marks)
            lines += [
                "### Checkpointer: time per turn",
                "",
                "Median wall time of a turn (`graph.invoke`) around that history length; in brackets the saver's "
                "share (minus the floor's turn in the same run).",
                "",
                f"| checkpointer | backend | role | {head} | get_state()[-20:] (ms) | saver.tail(20) (ms) |",
                "|---|---|---|" + "---:|" * len(marks) + "---:|---:|",
            ]
            for r in saver:
                times = " | ".join(
                    f"{r['turn_ms'][m]:.2f}" + ("" if r["role"] == "floor" else f" ({r['saver_ms'][m]:+.2f})")
                    for m in marks
                )
                tail = "—" if r.get("tail20_ms") is None else f"{r['tail20_ms']:.2f}"
                name = f"**{r['name']}**" if r["role"] == "kvstore" else r["name"]
                lines.append(
                    f"| {name} | {TITLES[r['backend']]} | {r['role']} | {times} | {r['get_state_last20_ms']:.2f} | {tail} |"
                )
            own = next((r["own_json_bytes"] for r in saver if r.get("own_json_bytes")), None)
            lines += [
                "",
                f"### Checkpointer: bytes stored after {n:,} messages" if n else "### Checkpointer: bytes stored",
                "",
                "Payload: kvstore = the stored JSON values and list items; SqliteSaver = checkpoint + metadata + "
                "writes column bytes; PostgresSaver = `pg_column_size(checkpoint, metadata)` + blob + write bytes. "
                "x own JSON: payload ÷ the messages' own JSON (`model_dump_json`"
                + (f", {own:,} B" if own else "")
                + "). On disk: the SQLite file (+ WAL); PostgreSQL `pg_total_relation_size` of the saver's own schema.",
                "",
                "| checkpointer | backend | role | payload per 1,000 messages (B) | x own JSON | on disk (B) |",
                "|---|---|---|---:|---:|---:|",
            ]
            for r in saver:
                if r["role"] == "floor":
                    continue
                per = (
                    "— (in memory)"
                    if r.get("bytes_per_1000_messages") is None
                    else f"{r['bytes_per_1000_messages']:,.0f}"
                )
                x = "—" if r.get("x_own_json") is None else f"{r['x_own_json']:.1f}x"
                disk = "—" if r.get("disk_bytes") is None else f"{r['disk_bytes']:,}"
                name = f"**{r['name']}**" if r["role"] == "kvstore" else r["name"]
                lines.append(f"| {name} | {TITLES[r['backend']]} | {r['role']} | {per} | {x} | {disk} |")
            lines += [
                "",
                "### kvstore vs LangGraph's own savers",
                "",
                "Peer ÷ kvstore, per backend: above 1, kvstore's turn (or read) is that much faster, or it stores "
                "that much less.",
                "",
                "| backend | kvstore | peer | "
                + " | ".join(f"turn @ {m:,} msgs" for m in marks)
                + " | get_state()[-20:] | payload bytes | on disk |",
                "|---|---|---|" + "---:|" * (len(marks) + 3),
            ]
            for backend in ("memory", "sqlite", "postgres"):
                mine = next((r for r in saver if r["backend"] == backend and r["role"] == "kvstore"), None)
                peer = next((r for r in saver if r["backend"] == backend and r["role"] == "peer"), None)
                if mine is None or peer is None:
                    continue

                def ratio(key: str, row_a: dict[str, Any] = peer, row_b: dict[str, Any] = mine) -> str:
                    a, b = row_a.get(key), row_b.get(key)
                    return "—" if not a or not b else f"{fmt_ratio(a / b)}x"

                turns = " | ".join(f"{fmt_ratio(peer['turn_ms'][m] / mine['turn_ms'][m])}x" for m in marks)
                lines.append(
                    f"| {TITLES[backend]} | {mine['name']} | {peer['name']} | {turns} | {ratio('get_state_last20_ms')} "
                    f"| {ratio('payload_bytes')} | {ratio('disk_bytes')} |"
                )
            lines.append("")
        if store:
            lines += [
                f"### Store: {store[0]['workload'].removeprefix('store: ')}",
                "",
                "Alternating rounds, median; the expired-item check puts an item with a short TTL in each store, "
                "waits past it, and looks it up with `get` and `search`.",
                "",
                "| store | backend | role | searches/s | µs/search | vs floor | kvstore ÷ this peer | expired item returned? |",
                "|---|---|---|---:|---:|---:|---:|---|",
            ]
            for r in store:
                mine = next((m for m in store if m["role"] == "kvstore" and m["backend"] == r["backend"]), None)
                versus = f"{fmt_ratio(mine['ops_per_s'] / r['ops_per_s'])}x" if r["role"] == "peer" and mine else ""
                name = f"**{r['name']}**" if r["role"] == "kvstore" else r["name"]
                lines.append(
                    f"| {name} | {TITLES[r['backend']]} | {r['role']} | {r['ops_per_s']:,.0f} | {r['us_per_op']:,.0f} "
                    f"| {r['vs_floor']:.3g} | {versus} | {r['expired_item_returned']} |"
                )
            lines.append("")
        for text in self.notes.get("langgraph", []):
            lines.append(f"- {text}")
        return [*lines, ""]

    def chart(self, path: Path) -> bool:
        """A horizontal bar chart of ratios to the floor, one panel per backend; False without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return False
        sections = [s for s in TIERS if any(t.section == s for t in self.tables)]
        if not sections:
            return False
        colours = {"floor": "#9e9e9e", "kvstore": "#1f77b4", "variant": "#8fbbe0", "peer": "#ff7f0e", "info": "#c7c7c7"}
        rows_of = {s: sum(len(t.rows) + 1 for t in self.tables if t.section == s) for s in sections}
        ncols = 2 if len(sections) > 1 else 1
        nrows = (len(sections) + ncols - 1) // ncols
        tallest = max(rows_of.values())
        fig, grid = plt.subplots(nrows, ncols, figsize=(9 * ncols, 0.2 * tallest * nrows + 1.5), squeeze=False)
        axes = [ax for line in grid for ax in line]
        for ax in axes[len(sections) :]:
            ax.set_visible(False)
        for ax, section in zip(axes, sections, strict=False):
            labels: list[str] = []
            values: list[float] = []
            cols: list[str] = []
            for t in (t for t in self.tables if t.section == section):
                labels.append(t.workload)
                values.append(0.0)
                cols.append("white")
                for r in t.rows:
                    name = r.name if len(r.name) <= 58 else r.name[:55] + "..."
                    labels.append(f"  {name}")
                    values.append(r.ratio)
                    cols.append(colours.get(r.role, "#c7c7c7"))
            ys = list(range(len(labels)))[::-1]
            ax.barh(ys, values, color=cols, height=0.75)
            ax.set_yticks(ys, labels, fontsize=7)
            for tick, value in zip(ax.get_yticklabels(), values, strict=True):
                if not value:
                    tick.set_fontweight("bold")
            ax.set_xscale("log")
            shown = [v for v in values if v > 0]
            ax.set_xlim(min(shown) / 3, max(shown) * 4)
            ax.set_ylim(-0.7, len(labels) - 0.3)
            ax.axvline(1.0, color="black", linewidth=0.8)
            for y, v in zip(ys, values, strict=True):
                if v:
                    ax.text(v * 1.08, y, f"{v:.2g}", va="center", fontsize=6)
            ax.set_title(f"{TITLES[section]}: ops/s ÷ floor (log scale, higher is better)", fontsize=9, loc="left")
            ax.tick_params(axis="x", labelsize=7)
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
        fig.legend(handles, list(colours), loc="upper right", fontsize=7, ncols=5)
        fig.suptitle(
            f"kvstore benchmark, {self.started:%Y-%m-%d} (one run, same machine)", fontsize=10, x=0.01, ha="left"
        )
        fig.tight_layout(rect=(0, 0, 1, 0.98))
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return True


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "memory": memory,
        "OS": platform.platform(),
        "Python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "git commit": commit or "unknown",
    }


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import apsw

        out["SQLite (apsw)"] = apsw.sqlite_lib_version()
    except ImportError:
        pass
    return out
