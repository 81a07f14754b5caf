"""The ``kvstore`` command's subcommands (typer + rich; the ``cli`` extra)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperCommand

from kvstore._copy.copy import copy_namespace, verify_copy
from kvstore._copy.plan import CopyCheckpoint, fingerprint
from kvstore._core.health import HealthReport, TierHealth
from kvstore._core.urls import config_from_url, redact_url
from kvstore._resilience.chain import default_chain
from kvstore.base import Database, Store
from kvstore.config import MemoryCacheConfig, MemoryDatabaseConfig, SqliteDatabaseConfig, StorageConfig, load_config
from kvstore.errors import BackendUnavailableError, ConfigError, KVStoreError, MissingDependencyError
from kvstore.manager import backend_class

__all__ = ["app"]

app = typer.Typer(
    name="kvstore",
    help="kvstore: a two-tier key-value and list store. Inspect data, check health, copy between backends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Piped output is not cut at 80 columns (rich's default off a terminal).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Tier(StrEnum):
    """A tier of the config."""

    cache = "cache"
    database = "database"


UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        "-u",
        envvar="KVSTORE_URL",
        help="The store: redis://, rediss://, postgresql://, sqlite:///path or memory://. "
        "Default: the --config file's (or KVSTORE_* / embedded default) tier.",
        show_envvar=False,
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="A TOML or YAML config file.")]
TierOpt = Annotated[Tier, typer.Option("--tier", "-t", help="Which tier of the config to use.")]
PrefixOpt = Annotated[str | None, typer.Option("--prefix", "-p", help="Key prefix (namespace) of the store.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the backend to answer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """kvstore: a two-tier key-value and list store."""


# --- opening stores ---------------------------------------------------------------------


def open_store(
    url: str | None, config: Path | None, tier: Tier = Tier.database, prefix: str | None = None, timeout: float = 2.0
) -> Store:
    """Open exactly the store asked for (no fallback: an inspection tool must not read an empty stand-in)."""
    if url is not None:
        tier_name, tier_config = config_from_url(url, key_prefix=prefix or "", connect_timeout=timeout)
    else:
        whole = load_config(config)
        tier_name, tier_config = tier.value, getattr(whole, tier.value)
        if prefix is not None:
            tier_config = tier_config.model_copy(update={"key_prefix": prefix})
    store: Store = backend_class(tier_name, tier_config.type).from_config(tier_config)
    return store


def _database(store: Store) -> Database:
    if not isinstance(store, Database):
        store.close()
        raise ConfigError(f"the {store.backend} store is a cache: lists live on the database tier")
    return store


def _json_arg(text: str, what: str = "VALUE") -> Any:
    if text == "-":
        text = sys.stdin.read()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"{what} is not valid JSON ({exc}); quote strings: '\"text\"'") from None


def _dump(value: Any, *, pretty: bool = False) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0).decode()


# --- health -------------------------------------------------------------------------------


@app.command()
def health(
    config: ConfigOpt = None,
    cache: Annotated[str | None, typer.Option("--cache", help="Cache URL (overrides the config's).")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Database URL (overrides the config's).")] = None,
    timeout: TimeoutOpt = 2.0,
    as_json: JsonOpt = False,
) -> None:
    """Probe both tiers and their fallbacks and show their health; creates and changes nothing.

    A SQLite file that does not exist yet is reported ("not created yet"), not
    created; no journal or fallback file is opened or replayed.
    """
    whole = load_config(config)
    update: dict[str, Any] = {}
    for tier_name, url in (("cache", cache), ("database", database)):
        if url is not None:
            tier_of_url, tier_config = config_from_url(url, connect_timeout=timeout)
            if tier_of_url != tier_name:
                raise ConfigError(f"{redact_url(url)!r} is not a {tier_name} backend")
            update[tier_name] = tier_config
    if update:
        whole = StorageConfig.model_validate({**dict(whole), **update})
    tiers = {name: _probe_tier(name, getattr(whole, name)) for name in ("cache", "database")}
    database_health, database_note = tiers["database"]
    pending, conflicts, dead = _journal_counts(whole.database)
    database_health = dataclasses.replace(
        database_health, pending_writes=pending, conflicts=conflicts, dead_letters=dead
    )
    tiers["database"] = (database_health, database_note)
    report = HealthReport(cache=tiers["cache"][0], database=tiers["database"][0])
    if as_json:
        data = report.as_dict()
        for name, (_, note) in tiers.items():
            section = data[name]
            assert isinstance(section, dict)
            section["note"] = note
        out.print(_dump(data, pretty=True), markup=False)
    else:
        table = Table(title="kvstore health", title_justify="left")
        columns = ("tier", "configured", "active", "healthy", "degraded", "durable", "latency", "last error", "note")
        for column in columns:
            table.add_column(column)
        for tier, note in tiers.values():
            latency = "-" if tier.latency_ms is None else f"{tier.latency_ms:.2f} ms"
            table.add_row(
                tier.tier,
                tier.configured,
                tier.active,
                "yes" if tier.healthy else "NO",
                "YES" if tier.degraded else "no",
                "yes" if tier.durable else "no",
                latency,
                tier.last_error or "",
                note or "",
            )
        out.print(table)
        state = "ok" if report.ok else "UNHEALTHY"
        out.print(f"{state}{' (degraded: running on a fallback)' if report.degraded else ''}")
    if not report.ok:
        raise typer.Exit(1)


def _journal_counts(config: Any) -> tuple[int, int, int]:
    """Pending outage writes, conflicts and dead letters of the tier's journal, read-only (never created)."""
    import sqlite3

    from kvstore.manager_async import state_dir

    path = state_dir(config) / "journal.db"
    if not path.exists():
        return 0, 0, 0
    # A journal in use has its -wal beside it: read it live. A closed one is read as immutable,
    # so SQLite creates no -shm/-wal files for a health check.
    options = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?{options}", uri=True, timeout=1.0)) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM journal), (SELECT count(*) FROM conflicts), "
                "(SELECT count(*) FROM dead_letters)"
            ).fetchone()
    except sqlite3.Error:
        return 0, 0, 0
    return int(row[0]), int(row[1]), int(row[2])


def _probe_tier(tier: str, config: Any) -> tuple[TierHealth, str | None]:
    """The health of ``tier``: its primary, else the first fallback that would serve, and a note.

    Nothing is created: a SQLite file that does not exist is only checked for
    whether it could be created, and a SQLite fallback kept in the state
    directory is not opened.
    """
    configured = config.type
    errors: list[str] = []
    entries = config.fallback if config.fallback is not None else default_chain(tier, configured)
    for position, candidate in enumerate([config, *entries]):
        degraded = position > 0
        if isinstance(candidate, str):  # a fallback by type name: it inherits the primary's key prefix
            if candidate == "sqlite":
                note = "would fall back to SQLite in the state directory (not opened by health)"
                return _tier_health(tier, configured, "sqlite", True, degraded, True, None, errors), note
            candidate = MemoryCacheConfig() if tier == "cache" else MemoryDatabaseConfig()
        if isinstance(candidate, SqliteDatabaseConfig) and not _sqlite_exists(candidate.path):
            problem = _uncreatable(candidate.path)
            if problem is None:
                note = f"not created yet: {candidate.path} is created on first use"
                return _tier_health(tier, configured, "sqlite", True, degraded, True, None, errors), note
            errors.append(f"sqlite: {problem}")
            continue
        try:
            store = backend_class(tier, candidate.type).from_config(candidate)
        except (BackendUnavailableError, MissingDependencyError) as exc:
            errors.append(f"{candidate.type}: {exc}")
            continue
        try:
            started = time.perf_counter()
            store.ping()
            latency: float | None = (time.perf_counter() - started) * 1000
        except KVStoreError as exc:
            errors.append(f"{candidate.type}: {exc}")
            continue
        finally:
            store.close()
        durable = bool(store.durable)
        return _tier_health(tier, configured, candidate.type, True, degraded, durable, latency, errors), None
    return _tier_health(tier, configured, "none", False, True, False, None, errors), "no backend answered"


def _tier_health(
    tier: str,
    configured: str,
    active: str,
    healthy: bool,
    degraded: bool,
    durable: bool,
    latency_ms: float | None,
    errors: list[str],
) -> TierHealth:
    return TierHealth(
        tier=tier,
        configured=configured,
        active=active,
        healthy=healthy,
        degraded=degraded,
        durable=durable,
        latency_ms=latency_ms,
        last_error="; ".join(errors) or None,
    )


def _sqlite_exists(path: str) -> bool:
    return path in ("", ":memory:") or path.startswith("file:") or os.path.exists(path)


def _uncreatable(path: str) -> str | None:
    """Why ``path`` could not be created (its nearest existing directory is not writable), or None."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        if os.path.exists(directory):
            return f"{directory} is not a directory"
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"cannot create {path}: {directory} is not writable"
    return None


# --- data commands ------------------------------------------------------------------------

_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class NegativeNumbers(TyperCommand):
    """A command whose arguments may be negative numbers (``range KEY 0 -1``, ``set KEY -5``).

    Click reads ``-1`` as an unknown option; here a token that is a number is an argument,
    and any other unknown ``-x`` / ``--x`` is still an error (it never becomes a key or value).
    After ``--`` every token is an argument.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # click's Context, vendored by typer
        known = {opt for param in self.get_params(ctx) for opt in (*param.opts, *param.secondary_opts)}
        for arg in args:
            if arg == "--":
                break
            if arg.startswith("-") and arg != "-" and not _NUMBER.fullmatch(arg) and arg.split("=", 1)[0] not in known:
                raise typer.BadParameter(f"no such option: {arg.split('=', 1)[0]}", ctx=ctx)
        return super().parse_args(ctx, args)


NEGATIVES: dict[str, Any] = {"cls": NegativeNumbers, "context_settings": {"ignore_unknown_options": True}}


@app.command()
def get(
    key: str,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    tier: TierOpt = Tier.database,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Print the JSON value of KEY (exit 1 when it is missing)."""
    with open_store(url, config, tier, prefix, timeout) as store:
        value = store.get(key)
        if value is None and not store.exists(key):
            err.print(f"not found: {key!r}")
            raise typer.Exit(1)
    out.print(_dump(value), markup=False)


@app.command("set", **NEGATIVES)
def set_(
    key: str,
    value: Annotated[str, typer.Argument(help="A JSON document ('-' reads stdin).")],
    ttl: Annotated[float | None, typer.Option("--ttl", help="Seconds until the key expires.")] = None,
    nx: Annotated[bool, typer.Option("--nx", help="Only if KEY does not exist.")] = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    tier: TierOpt = Tier.database,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Store the JSON VALUE at KEY."""
    data = _json_arg(value)
    with open_store(url, config, tier, prefix, timeout) as store:
        written = store.set(key, data, ttl, only_if_absent=nx)
    out.print("OK" if written else "not written: the key exists")
    if not written:
        raise typer.Exit(1)


@app.command()
def delete(
    keys: Annotated[list[str], typer.Argument(help="Keys to delete.")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    tier: TierOpt = Tier.database,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Delete the given keys (values or lists) in one round trip; print how many existed."""
    with open_store(url, config, tier, prefix, timeout) as store:
        removed = store.delete_many(keys)
    out.print(str(removed))


@app.command(**NEGATIVES)
def incr(
    key: str,
    by: Annotated[int, typer.Argument(help="What to add (negative subtracts).")] = 1,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    tier: TierOpt = Tier.database,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Add BY to the integer at KEY atomically (a missing key counts from 0); print the result."""
    with open_store(url, config, tier, prefix, timeout) as store:
        value = store.incr(key, by)
    out.print(str(value))


@app.command()
def keys(
    pattern: Annotated[str, typer.Argument(help="Redis glob: * ? [abc] [^a] [a-z], \\ escapes.")] = "*",
    url: UrlOpt = None,
    config: ConfigOpt = None,
    tier: TierOpt = Tier.database,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
    as_json: JsonOpt = False,
) -> None:
    """List the keys matching PATTERN, one per line (streamed)."""
    with open_store(url, config, tier, prefix, timeout) as store:
        if as_json:
            out.print(_dump(sorted(store.keys(pattern))), markup=False)
            return
        for key in store.iter_keys(pattern):
            out.print(key, markup=False)


@app.command(**NEGATIVES)
def append(
    key: str,
    values: Annotated[list[str], typer.Argument(help="JSON documents to push to the list's tail, in order.")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Append JSON VALUES to the list at KEY (one round trip); print the new length."""
    items = [_json_arg(v, f"value {i + 1}") for i, v in enumerate(values)]
    with open_store(url, config, Tier.database, prefix, timeout) as store:
        length = _database(store).extend(key, items)
    out.print(str(length))


@app.command("range", **NEGATIVES)
def range_(
    key: str,
    start: Annotated[int, typer.Argument(help="First index (negative counts from the tail).")] = 0,
    end: Annotated[int, typer.Argument(help="Last index, inclusive.")] = -1,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Print items START..END of the list at KEY as a JSON array (Redis LRANGE: `range KEY -20 -1`)."""
    with open_store(url, config, Tier.database, prefix, timeout) as store:
        items = _database(store).get_range(key, start, end)
    out.print(_dump(items), markup=False)


@app.command(**NEGATIVES)
def trim(
    key: str,
    start: Annotated[int, typer.Argument(help="First index kept (negative counts from the tail).")],
    end: Annotated[int, typer.Argument(help="Last index kept, inclusive.")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Keep only items START..END of the list at KEY (Redis LTRIM: `trim KEY -100 -1`); print how many went."""
    with open_store(url, config, Tier.database, prefix, timeout) as store:
        removed = _database(store).trim(key, start, end)
    out.print(str(removed))


# --- copy -------------------------------------------------------------------------------------


@app.command()
def copy(
    source_url: Annotated[str, typer.Option("--from", help="Source store URL.")],
    target_url: Annotated[str, typer.Option("--to", help="Target store URL.")],
    prefix: PrefixOpt = None,
    to_prefix: Annotated[
        str | None, typer.Option("--to-prefix", help="Key prefix in the target (default: --prefix).")
    ] = None,
    pattern: Annotated[str, typer.Option("--pattern", help="Copy only keys matching this glob.")] = "*",
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Progress file (default .kvstore/copy-<job>.json).")
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Ignore an existing checkpoint.")] = False,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Keys per round trip.")] = 500,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Compare counts and contents at the end.")] = (
        True
    ),
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Copy a whole namespace (values with TTLs, and lists) between any two backends; resumable."""
    source_prefix = prefix or ""
    target_prefix = source_prefix if to_prefix is None else to_prefix
    shown_from, shown_to = redact_url(source_url), redact_url(target_url)
    if (shown_from, source_prefix) == (shown_to, target_prefix) and not source_url.startswith("memory:"):
        raise ConfigError("source and target are the same namespace")
    job = fingerprint(shown_from, source_prefix, shown_to, target_prefix, pattern)
    state = CopyCheckpoint(checkpoint or Path(".kvstore") / f"copy-{job}.json", job)
    if restart:
        state.remove()
    source = open_store(source_url, None, prefix=source_prefix, timeout=timeout)
    try:
        target = open_store(target_url, None, prefix=target_prefix, timeout=timeout)
    except BaseException:
        source.close()
        raise
    with source, target:
        err.print(f"copying {shown_from} -> {shown_to} (pattern {pattern!r}, checkpoint {state.path})")
        started = time.perf_counter()
        columns = (
            TextColumn("copy"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("keys"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=err, transient=False) as bar:
                task = bar.add_task("copy", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                stats = copy_namespace(
                    source, target, pattern=pattern, checkpoint=state, batch=batch, progress=progress
                )
        except KeyboardInterrupt:
            err.print(f"interrupted: run the same command again to resume from {state.path}")
            raise typer.Exit(130) from None
        seconds = time.perf_counter() - started
        resumed = f", resumed from the checkpoint after {stats.resumed_from} keys" if stats.resumed else ""
        out.print(
            f"copied {stats.keys} keys ({stats.values} values, {stats.lists} lists, {stats.items} list items) "
            f"in {seconds:.1f} s{resumed}"
        )
        if stats.vanished:
            out.print(f"{stats.vanished} keys expired or were deleted during the copy")
        if verify:
            report = verify_copy(source, target, pattern=pattern, batch=batch)
            if not report.ok:
                for line in report.mismatches:
                    err.print(f"mismatch: {line}")
                err.print(f"verification FAILED; the checkpoint {state.path} is kept")
                raise typer.Exit(1)
            out.print(
                f"verified: {report.keys} keys ({report.values} values, {report.lists} lists, "
                f"{report.items} list items) identical in source and target"
            )
    state.remove()


# --- demo and bench -----------------------------------------------------------------------------


@app.command()
def demo(config: ConfigOpt = None) -> None:
    """Run the three jobs (chat history, session with TTL, fallback/health) on the embedded default."""
    from kvstore._demo import run

    raise typer.Exit(run(config))


@app.command()
def bench(
    full: Annotated[bool, typer.Option("--full", help="All rounds, not the quick run.")] = False,
    only: Annotated[str, typer.Option("--only", help="Sections: memory,sqlite,postgres,redis.")] = "memory",
    workloads: Annotated[str, typer.Option("--workloads", help="Workload prefixes, e.g. get,set,mget.")] = "",
) -> None:
    """Run a subset of the benchmark registry (the memory section, quick, by default); needs a source checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "registry.py").is_file():
        raise ConfigError("the benchmarks ship with the source checkout, not the installed package")
    args = [sys.executable, "-m", "benchmarks", "--only", only, *(["--workloads", workloads] if workloads else [])]
    raise typer.Exit(subprocess.run([*args, *([] if full else ["--quick"])], cwd=root, check=False).returncode)


# --- live updates -------------------------------------------------------------------------------


@app.command(**NEGATIVES)
def watch(
    key: str,
    start: Annotated[
        int | None,
        typer.Option("--start", help="First position (0: the whole list; -20: the last 20). Default: new items only."),
    ] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", help="Stop after this many items.")] = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Print the list at KEY's new items as they are appended, one `POSITION<TAB>JSON` line each; Ctrl-C stops."""
    if count is not None and count <= 0:
        raise typer.BadParameter("--count must be > 0")
    with open_store(url, config, Tier.database, prefix, timeout) as store:
        items = _database(store).watch(key, start=start)
        try:
            for seen, (position, value) in enumerate(items, 1):
                # Plain writes, flushed per line: a pipe (grep, jq) sees each item as it comes.
                sys.stdout.write(f"{position}\t{_dump(value)}\n")
                sys.stdout.flush()
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass  # Ctrl-C: a clean stop, not an error
        finally:
            items.close()  # type: ignore[attr-defined]  # a generator: releases its connection


# --- queue ----------------------------------------------------------------------------------

queue_app = typer.Typer(help="Inspect job queues (kvstore.Queue) on the database tier.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")


@queue_app.command("stats")
def queue_stats(
    name: str,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = 2.0,
    as_json: JsonOpt = False,
) -> None:
    """Print how many jobs of queue NAME are ready, delayed, running, failed, dead and done."""
    from kvstore.queue import Queue

    with open_store(url, config, Tier.database, prefix, timeout) as store:
        counts = Queue(_database(store), name).stats().as_dict()
    if as_json:
        out.print(_dump(counts), markup=False)
        return
    for state, count in counts.items():
        out.print(f"{state:<8} {count}", markup=False)
