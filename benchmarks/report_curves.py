"""The report's curve sections: many clients at once (``bench_concurrency``) and cost vs size (``bench_scaling``).

Markdown tables and matplotlib charts from the plain rows those modules record; no measuring here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["concurrency_chart", "concurrency_md", "scaling_chart", "scaling_md"]

TITLES = {"memory": "Memory", "sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}
#: Concurrency: kvstore's throughput ÷ the bare pool's at every level (issue 14).
CONCURRENCY_TARGET = 0.9
#: Scaling: last(20) at the largest history ÷ at the smallest, at most (issue 14).
FLAT_TARGET = 1.5


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["backend"], r["workload"]) for r in rows))


# --- concurrency --------------------------------------------------------------------------------------------------


def concurrency_md(rows: list[dict[str, Any]], run: str, notes: list[str], chart: str | None) -> list[str]:
    if not rows and not notes:
        return []
    lines = [
        "## Many clients at once",
        "",
        "`benchmarks/bench_concurrency.py`"
        + (f" ({run})" if run else "")
        + ": N async tasks (or 8 threads on the sync API) loop until the round's deadline; kvstore and the bare "
        "driver pool of the same size take turns (kvstore, bare, kvstore, ...). Throughput: median of the rounds; "
        "latency: every op of every round. Ratio = kvstore ÷ bare throughput (target >= "
        f"{CONCURRENCY_TARGET:g} at every level).",
        "",
    ]
    if chart:
        lines += [f"![kvstore vs the bare pool, by concurrency]({chart})", ""]
    for backend, workload in _groups(rows):
        group = [r for r in rows if (r["backend"], r["workload"]) == (backend, workload)]
        first = group[0]
        lines += [
            f"### {TITLES.get(backend, backend)}: {workload}",
            "",
            f"kvstore: {first['ours']['name']}; bare: {first['bare']['name']}.",
            "",
            "| clients | kvstore ops/s | bare ops/s | ratio | kvstore p50 / p99 (ms) | bare p50 / p99 (ms) | |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in group:
            a, b = r["ours"], r["bare"]
            mark = "OK" if r["ratio"] >= CONCURRENCY_TARGET else "**MISS**"
            errors = a["errors"] + b["errors"]
            if errors:
                mark += f" (errors: kvstore {a['errors']}, bare {b['errors']}: {a['first_error'] or b['first_error']})"
            lines.append(
                f"| {r['level']} | {a['ops_per_s']:,.0f} | {b['ops_per_s']:,.0f} | {r['ratio']:.2f} "
                f"| {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {mark} |"
            )
        lines.append("")
    lines += [f"- {n}" for n in notes]
    return [*lines, ""]


def concurrency_chart(rows: list[dict[str, Any]], path: Path) -> bool:
    """Per (backend, workload): throughput by level (left) and p50/p99 latency (right), kvstore vs bare."""
    plt = _pyplot()
    groups = _groups(rows)
    if plt is None or not groups:
        return False
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.2 * len(groups)), squeeze=False)
    for (left, right), (backend, workload) in zip(axes, groups, strict=True):
        group = [r for r in rows if (r["backend"], r["workload"]) == (backend, workload)]
        labels = [
            r["level"].replace(" async tasks", "").replace(" async task", "").replace(" (sync)", "") for r in group
        ]
        xs = list(range(len(group)))
        width = 0.38
        left.bar(
            [x - width / 2 for x in xs],
            [r["ours"]["ops_per_s"] for r in group],
            width,
            label="kvstore",
            color="#1f77b4",
        )
        left.bar(
            [x + width / 2 for x in xs],
            [r["bare"]["ops_per_s"] for r in group],
            width,
            label="bare pool",
            color="#9e9e9e",
        )
        for x, r in zip(xs, group, strict=True):
            top = max(r["ours"]["ops_per_s"], r["bare"]["ops_per_s"])
            left.text(x, top * 1.02, f"{r['ratio']:.2f}x", ha="center", va="bottom", fontsize=7)
        left.set_ylim(0, max(max(r["ours"]["ops_per_s"], r["bare"]["ops_per_s"]) for r in group) * 1.18)
        left.set_xticks(xs, labels, fontsize=7)
        left.set_xlabel("async tasks / threads", fontsize=7)
        left.set_ylabel("ops/s", fontsize=7)
        left.tick_params(axis="y", labelsize=7)
        left.set_title(
            f"{TITLES.get(backend, backend)}, {workload}: throughput (label: kvstore ÷ bare)", fontsize=9, loc="left"
        )
        left.legend(fontsize=7)
        for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
            right.plot(
                xs, [r["ours"][key] for r in group], style, marker="o", color="#1f77b4", label=f"kvstore {key[:3]}"
            )
            right.plot(xs, [r["bare"][key] for r in group], style, marker="s", color="#9e9e9e", label=f"bare {key[:3]}")
        right.set_yscale("log")
        right.set_xticks(xs, labels, fontsize=7)
        right.set_xlabel("async tasks / threads", fontsize=7)
        right.set_ylabel("latency (ms, log)", fontsize=7)
        right.tick_params(axis="y", labelsize=7)
        right.set_title("latency p50 (dashed) and p99 (solid)", fontsize=9, loc="left")
        right.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- scaling ------------------------------------------------------------------------------------------------------


def _flat(rows: list[dict[str, Any]], key: str) -> float | None:
    """``key`` at the largest size ÷ at the smallest (microseconds per op; None when not measured)."""
    if len(rows) < 2:
        return None
    first, last = min(rows, key=lambda r: r["size"]), max(rows, key=lambda r: r["size"])
    return last[key] / first[key] if first.get(key) and last.get(key) else None


def flatness(scaling: dict[str, list[dict[str, Any]]]) -> dict[str, float | None]:
    """Per backend: kvstore's sync ``last(20)`` at the largest history ÷ the same call on the 100-message reference
    conversation timed in the same rounds (rows without it: ÷ the smallest size's time)."""
    rows = scaling.get("last", [])
    out: dict[str, float | None] = {}
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        largest = max(mine, key=lambda r: r["size"])
        if largest.get("small_us"):
            out[backend] = largest["ours_us"] / largest["small_us"]
        else:
            out[backend] = _flat(mine, "ours_us")
    return out


def scaling_md(scaling: dict[str, list[dict[str, Any]]], run: str, notes: list[str], chart: str | None) -> list[str]:
    if not any(scaling.values()) and not notes:
        return []
    lines = [
        "## Cost vs size",
        "",
        "`benchmarks/bench_scaling.py`" + (f" ({run})" if run else "") + ". Data is bulk-loaded straight into "
        "kvstore's own tables (checked through kvstore's API before timing), PostgreSQL tables ANALYZEd; "
        "timings are medians of alternating calibrated rounds.",
        "",
    ]
    if chart:
        lines += [f"![cost vs size]({chart})", ""]
    last = scaling.get("last", [])
    if last:
        lines += [
            "### last(20) vs history length",
            "",
            "µs per call; the floor reads the same 20 rows of kvstore's items table by index (`ORDER BY … DESC LIMIT "
            "20`) + orjson. vs 100 messages: `ChatHistory.last(20)` here ÷ the same call on a 100-message conversation "
            f"in the same tables, timed in the same rounds; flat = that at the largest history (target <= {FLAT_TARGET:g}).",
            "",
            "| backend | messages | floor (µs) | kvstore ChatHistory.last(20) (µs) | AsyncChatHistory.last(20) (µs) "
            "| kvstore ÷ floor (ops/s) | time vs 100 messages |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in last:
            small = f"{r['ours_us'] / r['small_us']:.2f}x" if r.get("small_us") else "—"
            lines.append(
                f"| {TITLES[r['backend']]} | {r['size']:,} | {r['floor_us']:.1f} | {r['ours_us']:.1f} | {r['async_us']:.1f} "
                f"| {r['floor_us'] / r['ours_us']:.2f} | {small} |"
            )
        lines.append("")
        for backend, ratio in flatness(scaling).items():
            if ratio is not None:
                mark = "OK" if ratio <= FLAT_TARGET else "**MISS**"
                sizes = [r["size"] for r in last if r["backend"] == backend]
                lines.append(
                    f"- {TITLES[backend]}: last(20) at {max(sizes):,} messages takes {ratio:.2f}x its time on 100 ({mark})."
                )
        lines.append("")
    keys = scaling.get("keys", [])
    if keys:
        lines += [
            "### keys(pattern) vs total keys and matches",
            "",
            "ms per `keys(pattern)` call (the whole list returned). A pattern with a literal prefix (`k:000001*`) "
            "reads only that key range where the backend can; one that starts with a wildcard (`*:000001??`) "
            "has to look at every key of the prefix. Redis answers both with SCAN MATCH over the whole database "
            "(other clients' keys included).",
            "",
        ]
        for kind, title in (("total", "By total keys (100 matches)"), ("matches", "By matches (at the largest total)")):
            lines += [
                f"{title}:",
                "",
                "| backend | total keys | pattern | matches | ms per call | µs per match |",
                "|---|---:|---|---:|---:|---:|",
            ]
            for r in (r for r in keys if r["kind"] == kind):
                lines.append(
                    f"| {TITLES[r['backend']]} | {r['total']:,} | `{r['pattern']}` | {r['matches']:,} | {r['ms']:.2f} "
                    f"| {1000 * r['ms'] / max(1, r['matches']):.1f} |"
                )
            lines.append("")
    copy = scaling.get("copy", [])
    if copy:
        lines += [
            "### kvstore copy: SQLite → PostgreSQL",
            "",
            "`copy_namespace` as `kvstore copy` runs it (a checkpoint file saved after every batch of 500 keys, "
            "TTLs read per key; without the final verify pass) against a bare copy of the same rows: one apsw "
            "`SELECT` streamed into psycopg `COPY … FROM STDIN` into an empty kvstore table.",
            "",
            "| keys | kvstore copy (s) | kvstore keys/s | raw COPY (s) | raw keys/s | kvstore ÷ raw |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in copy:
            lines.append(
                f"| {r['keys']:,} | {r['ours_s']:.2f} | {r['keys'] / r['ours_s']:,.0f} | {r['raw_s']:.2f} "
                f"| {r['keys'] / r['raw_s']:,.0f} | {r['raw_s'] / r['ours_s']:.3g} |"
            )
        lines.append("")
    lines += [f"- {n}" for n in notes]
    return [*lines, ""]


def scaling_chart(scaling: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    """last(20) vs messages; keys() vs total keys; keys() vs matches; copy keys/s."""
    plt = _pyplot()
    panels = [p for p in ("last", "keys_total", "keys_matches", "copy") if scaling.get(p.split("_")[0])]
    if plt is None or not panels:
        return False
    ncols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + ncols - 1) // ncols
    fig, grid = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    axes = [ax for line in grid for ax in line]
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    colours = {"sqlite": "#2ca02c", "postgres": "#1f77b4", "redis": "#d62728", "memory": "#9467bd"}
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "last":
            rows = scaling["last"]
            for backend in dict.fromkeys(r["backend"] for r in rows):
                mine = [r for r in rows if r["backend"] == backend]
                xs = [r["size"] for r in mine]
                c = colours.get(backend)
                ax.plot(
                    xs, [r["ours_us"] for r in mine], "-o", color=c, label=f"{TITLES[backend]} ChatHistory.last(20)"
                )
                ax.plot(xs, [r["floor_us"] for r in mine], ":", color=c, label=f"{TITLES[backend]} raw range + orjson")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("messages in the conversation", fontsize=8)
            ax.set_ylabel("µs per call", fontsize=8)
            ax.set_title("last(20) vs history length", fontsize=9, loc="left")
        elif panel == "keys_total":
            rows = [r for r in scaling["keys"] if r["kind"] == "total"]
            for backend in dict.fromkeys(r["backend"] for r in rows):
                for pattern, style in (("prefix", "-o"), ("scan", "--s")):
                    mine = [r for r in rows if r["backend"] == backend and r["shape"] == pattern]
                    if mine:
                        ax.plot(
                            [r["total"] for r in mine],
                            [r["ms"] for r in mine],
                            style,
                            color=colours.get(backend),
                            label=f"{TITLES[backend]} {mine[0]['pattern']}",
                        )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("total keys (100 match)", fontsize=8)
            ax.set_ylabel("ms per keys() call", fontsize=8)
            ax.set_title("keys(pattern) vs total keys", fontsize=9, loc="left")
        elif panel == "keys_matches":
            rows = [r for r in scaling["keys"] if r["kind"] == "matches"]
            for backend in dict.fromkeys(r["backend"] for r in rows):
                mine = [r for r in rows if r["backend"] == backend]
                ax.plot(
                    [r["matches"] for r in mine],
                    [r["ms"] for r in mine],
                    "-o",
                    color=colours.get(backend),
                    label=f"{TITLES[backend]} ({mine[0]['total']:,} keys)",
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("keys matching the prefix pattern", fontsize=8)
            ax.set_ylabel("ms per keys() call", fontsize=8)
            ax.set_title("keys(pattern) vs matches", fontsize=9, loc="left")
        else:
            rows = scaling["copy"]
            labels, values, cols = [], [], []
            for r in rows:
                labels += [f"kvstore copy\n{r['keys']:,} keys", f"raw COPY\n{r['keys']:,} keys"]
                values += [r["keys"] / r["ours_s"], r["keys"] / r["raw_s"]]
                cols += ["#1f77b4", "#9e9e9e"]
            ax.bar(range(len(values)), values, color=cols)
            for x, v in enumerate(values):
                ax.text(x, v * 1.02, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(values)), labels, fontsize=7)
            ax.set_ylabel("keys/s", fontsize=8)
            ratios = ", ".join(f"{r['raw_s'] / r['ours_s']:.2g}x" for r in rows)
            ax.set_title(f"SQLite → PostgreSQL copy (kvstore ÷ raw COPY: {ratios})", fontsize=9, loc="left")
        ax.tick_params(axis="both", labelsize=7)
        if panel != "copy":
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
