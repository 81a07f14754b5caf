"""The benchmark report: every tier against its bare driver and the peers a user would pick instead.

Run: python -m benchmarks [--quick] [--only memory,sqlite,postgres,redis,langgraph,concurrency,scaling,queue,watch]
     [--workloads get,set,...] [--out DIR]

One process, one run: every case is an entry of the workload registry
(benchmarks/registry.py); each workload's cases (floor, kvstore, peers) run in
alternating rounds and every figure is a ratio to the floor measured in the
same run. A full run (no --quick, no --only) writes benchmarks/results/REPORT.md
and chart.png; a partial run prints its tables and writes only with --out.
Peers that are not installed or cannot run here are reported with the reason;
a server that cannot be reached (and cannot be started) skips its section.
The langgraph section is benchmarks/bench_langgraph.py (LangGraph on kvstore vs
LangGraph's own savers and stores): it needs LangGraph and PostgreSQL, and is
skipped with the reason otherwise.
The concurrency section is benchmarks/bench_concurrency.py (1/8/64/256 async tasks and 8 threads, kvstore vs a
bare driver pool of the same size on PostgreSQL and Redis); the scaling section is benchmarks/bench_scaling.py
(last(20) vs history length, keys(pattern) vs total keys and matches, `kvstore copy` SQLite -> PostgreSQL vs a
raw COPY). The queue section is benchmarks/bench_queue.py (enqueue+claim+ack/s with 1 and 4 workers against pgqueuer,
procrastinate and huey; enqueue-to-claim latency of an idle worker), the watch section benchmarks/watch.py
(append-to-watcher latency per backend, what notifying a watched PostgreSQL list costs an append). --workloads selects their parts by
prefix too (get, chat; last, keys, copy; throughput, latency; latency, notify).
Everything created is named bench_<pid>_... and removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.peers import BENCH_GROUP_HINT, reason
from benchmarks.registry import run
from benchmarks.report import SECTIONS, TIERS, Report, fmt_ratio, machine_info, package_versions
from benchmarks.runner import Context
from benchmarks.targets import print_must_show

RESULTS = Path(__file__).resolve().parent / "results"
REDIS_URL = os.environ.get("KVSTORE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("KVSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _reraise_fatal(exc: BaseException) -> None:
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        raise exc


@contextlib.contextmanager
def redis_server(url: str, tmp: Path) -> Iterator[tuple[str | None, str]]:
    """The Redis to use: ``url`` when it answers, else a throwaway redis-server; (None, why) when neither."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        version = client.info("server")["redis_version"]
        client.close()
        yield url, f"Redis {version} at {url} (existing server)"
        return
    except Exception as exc:
        first = reason(exc)
    try:
        from tests.fixtures_redis import start_redis_server, stop_redis_server

        server = start_redis_server(tmp / "redis")
    except BaseException as exc:  # pytest's skip outcome is a BaseException
        _reraise_fatal(exc)
        yield None, f"no server: {url} unreachable ({first}) and no throwaway redis-server ({reason(exc)})"
        return
    try:
        yield server.url, f"Redis at {server.url} (throwaway redis-server, no persistence; {url} was unreachable)"
    finally:
        stop_redis_server(server)


@contextlib.contextmanager
def postgres_server(url: str) -> Iterator[tuple[str | None, str]]:
    """The PostgreSQL to use: ``url`` when it answers, else a throwaway cluster; (None, why) when neither."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')"
            ).fetchone()
        assert row is not None
        yield url, f"PostgreSQL {row[0]} at {url} (existing server; fsync={row[1]}, synchronous_commit={row[2]})"
        return
    except Exception as exc:
        first = reason(exc)
    try:
        from tests.fixtures_postgres import PgServer

        server = PgServer(fsync=True)
    except BaseException as exc:
        _reraise_fatal(exc)
        yield None, f"no server: {url} unreachable ({first}) and no throwaway cluster ({reason(exc)})"
        return
    try:
        yield server.url, f"PostgreSQL at {server.url} (throwaway cluster, fsync on; {url} was unreachable)"
    finally:
        server.stop()


def _section(report: Report, name: str, body: Callable[[], None]) -> None:
    """Run one tier; a crash is reported as that section's failure (with the reason), not hidden."""
    started = time.perf_counter()
    print(f"\n# {name}")
    try:
        body()
    except Exception as exc:
        traceback.print_exc()
        report.skipped[name] = f"failed: {reason(exc)}"
    print(f"# {name}: {time.perf_counter() - started:.0f} s")


#: bench_langgraph.rows(...) arguments: the full run's defaults, and --quick's (100 turns: the 20 and 200 marks).
LANGGRAPH_FULL = {"turns": 500, "items": 10_000, "rounds": 7}
LANGGRAPH_QUICK = {"turns": 100, "items": 2_000, "rounds": 3}


def langgraph_module() -> tuple[object | None, str]:
    """``benchmarks.bench_langgraph``, or None and why it cannot be imported (LangGraph not installed)."""
    try:
        from benchmarks import bench_langgraph
    except ImportError as exc:
        return None, (
            "not installed (langgraph, langgraph-checkpoint-sqlite, langgraph-checkpoint-postgres, langchain-core; "
            f"{BENCH_GROUP_HINT}): {reason(exc)}"
        )
    return bench_langgraph, ""


def run_langgraph(report: Report, module: object, url: str, quick: bool) -> None:
    kwargs = LANGGRAPH_QUICK if quick else LANGGRAPH_FULL
    rows = module.rows(url, **kwargs)  # type: ignore[attr-defined]
    report.add_langgraph(rows, ", ".join(f"{k}={v:,}" for k, v in kwargs.items()))


def run_concurrency(ctx: Context, chosen: list[str]) -> None:
    from benchmarks import bench_concurrency

    bench_concurrency.run(ctx, only=chosen or None)


def run_scaling(ctx: Context, chosen: list[str]) -> None:
    from benchmarks import bench_scaling

    bench_scaling.run(ctx, only=chosen or None)


def run_queue(ctx: Context, chosen: list[str]) -> None:
    from benchmarks import bench_queue

    bench_queue.run(ctx, only=chosen or None)


def run_watch(ctx: Context, chosen: list[str]) -> None:
    from benchmarks import watch

    watch.run(ctx, only=chosen or None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few short rounds per case, small sizes (a few minutes)"
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated tiers: " + ",".join(SECTIONS))
    parser.add_argument(
        "--workloads",
        default="",
        help="comma-separated workload name prefixes (get,set,mget,mset,chat,last,session,incr,delete_many,store,100;"
        " concurrency: get,chat; scaling: last,keys,copy; queue: throughput,latency; watch: latency,notify); default: all (the langgraph section runs only without"
        " --workloads)",
    )
    parser.add_argument("--out", type=Path, default=None, help="where REPORT.md and chart.png go")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args(argv)
    # Peers' deprecation notices (LangChain, langchain-community) are not results.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown tier(s) {unknown}; choose from {','.join(SECTIONS)}")
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    partial = args.quick or set(only) != set(SECTIONS) or bool(chosen)
    out: Path | None = args.out if args.out is not None else (None if partial else RESULTS)

    command = "python -m benchmarks" + ("".join(f" {shlex.quote(a)}" for a in argv) if argv else "")
    if argv is None and sys.argv[1:]:
        command += " " + shlex.join(sys.argv[1:])
    report = Report(quick=args.quick, command=command)
    tmp = Path(tempfile.mkdtemp(prefix="bench_"))
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            redis_url = postgres_url = ""
            langgraph: object | None = None
            if "langgraph" in only:
                if chosen:
                    report.skipped["langgraph"] = "not run: --workloads selects registry workloads only"
                else:
                    langgraph, why = langgraph_module()
                    if langgraph is None:
                        report.skipped["langgraph"] = why
            curves = bool({"concurrency", "scaling"} & set(only))
            if "redis" in only or curves:
                found, text = stack.enter_context(redis_server(args.redis_url, tmp))
                redis_url = found or ""
                if found:
                    report.servers["Redis"] = text
                elif "redis" in only:
                    report.skipped["redis"] = text
            live = bool({"queue", "watch"} & set(only))  # PostgreSQL rows when a server is found, the rest anyway
            if "postgres" in only or langgraph is not None or curves or live:
                found, text = stack.enter_context(postgres_server(args.postgres_url))
                postgres_url = found or ""
                if found:
                    report.servers["PostgreSQL"] = text
                else:
                    for name in ("postgres", "langgraph"):
                        if name in only and name not in report.skipped:
                            report.skipped[name] = text
            ctx = Context(report, args.quick, tmp, redis_url, postgres_url)
            try:
                for name in SECTIONS:
                    if name not in only or name in report.skipped:
                        continue
                    if name == "langgraph":
                        _section(report, name, lambda: run_langgraph(report, langgraph, postgres_url, args.quick))
                    elif name == "concurrency":
                        _section(report, name, lambda: run_concurrency(ctx, chosen))
                    elif name == "scaling":
                        _section(report, name, lambda: run_scaling(ctx, chosen))
                    elif name == "queue":
                        _section(report, name, lambda: run_queue(ctx, chosen))
                    elif name == "watch":
                        _section(report, name, lambda: run_watch(ctx, chosen))
                    else:
                        _section(report, name, lambda name=name: run(ctx, name, chosen))
            finally:
                ctx.loop.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, why in report.skipped.items():
        print(f"\n{name}: skipped: {why}")
    behind = [v for v in report.verdicts() if not v.ahead]
    print(f"\n# kvstore vs peers: ahead in {len(report.verdicts()) - len(behind)} of {len(report.verdicts())}")
    for v in behind:
        print(f"  BEHIND {v.section} {v.workload}: {v.ours.name} ÷ {v.peer.name} = {fmt_ratio(v.ratio)}x")
    print_must_show(report)
    meta = {**machine_info(), "date": f"{report.started:%Y-%m-%d %H:%M} UTC", "command": f"`{command}`"}
    meta["wall time"] = f"{time.perf_counter() - started:.0f} s"
    if out is None:
        print("\n(partial run: REPORT.md not written; pass --out DIR to write it)")
        return _failed(report)
    out.mkdir(parents=True, exist_ok=True)
    chart = report.chart(out / "chart.png")
    if not chart and any(t.section in TIERS for t in report.tables):
        print("matplotlib is not installed: no chart.png")
    extra = report.curve_charts(out)
    (out / "REPORT.md").write_text(report.markdown(meta, package_versions(), "chart.png" if chart else None))
    print(
        f"\nwrote {out / 'REPORT.md'}" + "".join(f", {out / name}" for name in (["chart.png"] if chart else []) + extra)
    )
    return _failed(report)


def _failed(report: Report) -> int:
    """1 when a section crashed (its report section says why): a run that lost a section is not a clean run."""
    crashed = [name for name, why in report.skipped.items() if why.startswith("failed:")]
    if crashed:
        print(f"\nFAILED sections: {', '.join(crashed)} (see above; the report says why)")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
