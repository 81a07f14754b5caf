"""The report's issue-15 sections: the job queue (``bench_queue``) and live updates (``watch``).

Markdown from the plain rows those modules record; no measuring here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LATENCY_TARGET_MS", "queue_md", "watch_md"]

TITLES = {"memory": "Memory", "sqlite": "SQLite", "postgres": "PostgreSQL"}
#: Enqueue-to-claim p99 with an idle worker on PostgreSQL (LISTEN/NOTIFY, loopback), issue 15.
LATENCY_TARGET_MS = 10.0


def _name(row: dict[str, Any]) -> str:
    return f"**{row['name']}**" if row["role"] == "kvstore" else row["name"]


def queue_md(rows: list[dict[str, Any]], run: str, tables: list[Any], notes: list[str]) -> list[str]:
    if not rows and not notes:
        return []
    from benchmarks.report import HUEY_NOTE, fmt_ratio

    lines = [
        "## Job queue",
        "",
        "`benchmarks/bench_queue.py`"
        + (f" ({run})" if run else "")
        + ": one producer enqueues the jobs one call each, then 1 or 4 workers (each its own connection or "
        "store) claim and acknowledge them until the queue is empty. Every contender runs once per round, the "
        "order rotating each round, after a warm-up; the table shows the median of the rounds. cycle/s = jobs ÷ "
        "(enqueue time + drain time); ratio = cycle/s ÷ the floor's. PostgreSQL: one database made for the run "
        "(dropped at the end), the server's own durability for everyone; SQLite: WAL + `synchronous=NORMAL` for "
        "everyone.",
        "",
    ]
    throughput = [r for r in rows if "cycle_per_s" in r]
    for backend, workers in dict.fromkeys((r["backend"], r["workers"]) for r in throughput):
        group = [r for r in throughput if (r["backend"], r["workers"]) == (backend, workers)]
        floor = next((r for r in group if r["role"] == "floor"), group[0])
        lines += [
            f"### {TITLES[backend]}: {workers} worker{'s' if workers > 1 else ''}, {group[0]['jobs']:,} jobs",
            "",
            "| contender | role | enqueue/s | claim+ack/s | cycle/s | ratio to floor |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in group:
            flavour = "async" if r["is_async"] else "sync"
            lines.append(
                f"| {_name(r)} | {r['role']} ({flavour}) | {r['enqueue_per_s']:,.0f} | {r['claim_ack_per_s']:,.0f} "
                f"| {r['cycle_per_s']:,.0f} | {r['cycle_per_s'] / floor['cycle_per_s']:.3g} |"
            )
        lines.append("")
        for table in tables:
            if table.workload.endswith(f"({TITLES[backend]})") and f", {workers} worker" in table.workload:
                for v in table.verdicts():
                    mark = "ahead" if v.ahead else "**behind**"
                    lines.append(f"- {v.ours.name} ÷ {v.peer.name}: {fmt_ratio(v.ratio)}x ({mark})")
        lines.append("")
    if any(r["backend"] == "sqlite" and r["role"] == "peer" for r in throughput):
        lines += [
            f"Note on huey: {HUEY_NOTE} kvstore's sync `Queue` is compared with huey (both synchronous, in threads); "
            "the async `AsyncQueue` row pays a hop to the store's worker thread per call.",
            "",
        ]
    if any(r["name"].startswith("procrastinate") for r in throughput):
        lines += [
            "Note on procrastinate: its worker runs the jobs in one process with `concurrency` = the worker count "
            "over a pool of workers + 2 connections (kvstore and pgqueuer: one connection per worker and one for "
            "the producer); each job runs a no-op task.",
            "",
        ]
    latency = [r for r in rows if "p99_ms" in r]
    if latency:
        lines += [
            "### Enqueue-to-claim latency, idle worker",
            "",
            "An idle `AsyncQueue.jobs()` worker; another connection enqueues one job every ~5 ms; the time from "
            f"`enqueue` returning to the worker holding the job (goal on PostgreSQL: p99 < {LATENCY_TARGET_MS:g} ms).",
            "",
            "| backend | worker | wake-up | samples | p50 ms | p99 ms | max ms |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in latency:
            lines.append(
                f"| {TITLES[r['backend']]} | {r['name']} | {r.get('wake', '')} | {r['samples']:,} | {r['p50_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['max_ms']:.2f} |"
            )
        lines.append("")
    lines += [f"- {text}" for text in notes]
    return [*lines, ""]


def watch_md(rows: list[dict[str, Any]], run: str, notes: list[str]) -> list[str]:
    if not rows and not notes:
        return []
    lines = [
        "## Live updates (watch)",
        "",
        "`benchmarks/watch.py`" + (f" ({run})" if run else "") + ".",
        "",
    ]
    latency = [r for r in rows if r["workload"] == "append_to_watcher_latency"]
    if latency:
        lines += [
            "### Append-to-watcher latency",
            "",
            'A writer (another process; memory: a task of the same loop) appends `{"t": time.time()}` every 5 ms; '
            "an async `watch(key, start=0)` records the delay of each item as it arrives (after a few warm-up "
            "items).",
            "",
            "| backend | wake-up | items | p50 ms | p99 ms | max ms |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in latency:
            lines.append(
                f"| {TITLES[r['backend']]} | {r['wake']} | {r['items']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['max_ms']:.2f} |"
            )
        lines.append("")
    cost = [r for r in rows if r["workload"] == "notify_cost"]
    if cost:
        lines += [
            "### What notifying a watched list costs an append (PostgreSQL)",
            "",
            "kvstore's sync `append` (one list per writer process) to a list a live watcher's row marks as watched "
            "(the append function probes `<prefix>watchers` and sends one NOTIFY) and to a list nobody watches (the "
            "probe only), alternating which goes first, a LISTEN connection open meanwhile; median appends/s. Server "
            "CPU per append where the server's processes are readable (steadier than wall-clock rates here).",
            "",
            "| writers | appends each | unwatched /s | watched /s | watched ÷ unwatched | server CPU µs/append unwatched → watched |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for r in cost:
            cpu = "—" if r["cpu_us_with"] is None else f"{r['cpu_us_without']:.0f} → {r['cpu_us_with']:.0f}"
            lines.append(
                f"| {r['writers']} | {r['appends']:,} | {r['without_per_s']:,.0f} | {r['with_per_s']:,.0f} "
                f"| {r['ratio']:.2f} | {cpu} |"
            )
        lines.append("")
    lines += [f"- {text}" for text in notes]
    return [*lines, ""]
