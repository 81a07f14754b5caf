"""Fallback and failover under real faults: servers the tests own are refused, killed, stopped, frozen."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvstore import BackendUnavailableError, StorageManager
from kvstore._resilience.breaker import BreakerState
from tests.fixtures_redis import _free_port, start_redis_server, stop_redis_server

pytestmark = [pytest.mark.slow]


def _closed_port() -> int:
    return _free_port()  # nothing listens there: connections are refused


@pytest.mark.redis
def test_redis_refused_at_startup_serves_from_memory_quickly(caplog: pytest.LogCaptureFixture) -> None:
    """Redis refused at connect: connected on memory in < 1 s with default settings; health says why."""
    config = {
        "cache": {"type": "redis", "url": f"redis://127.0.0.1:{_closed_port()}/0"},
        "database": {"type": "memory"},
    }
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="kvstore"), StorageManager(config) as storage:
        elapsed = time.perf_counter() - start
        storage.cache.set("k", 1)
        assert storage.cache.get("k") == 1
        report = storage.health()
    print(f"\nredis refused -> serving from memory after {elapsed * 1000:.0f} ms")
    assert elapsed < 1.0
    assert report.cache.active == "memory"
    assert report.cache.degraded
    assert report.cache.durable is False
    assert report.cache.last_error
    assert "refused" in report.cache.last_error.lower()
    assert report.ok
    assert sum("falling back to memory" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.postgres
def test_postgres_down_at_startup_falls_back_to_sqlite(tmp_path: Path) -> None:
    """Postgres refused at connect: the database tier runs on SQLite within the connect budget."""
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres",
            "fallback": [{"type": "sqlite", "path": str(tmp_path / "fb.db")}],
            "state_dir": str(tmp_path / "state"),
        },
    }
    start = time.perf_counter()
    with StorageManager(config) as storage:
        elapsed = time.perf_counter() - start
        storage.database.append("h", 1)
        report = storage.health()
    print(f"\npostgres refused -> serving from sqlite after {elapsed * 1000:.0f} ms (budget 2000 ms)")
    assert elapsed < 2.0
    assert report.database.active == "sqlite"
    assert report.database.degraded
    assert report.database.durable


@pytest.mark.postgres
def test_no_fallback_raises_within_budget() -> None:
    """fallback: [] raises BackendUnavailableError within the connect budget."""
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres",
            "fallback": [],
            "connect_timeout": 1.0,
        },
    }
    start = time.perf_counter()
    with pytest.raises(BackendUnavailableError):
        StorageManager(config).connect()
    elapsed = time.perf_counter() - start
    print(f"\nfallback: [] raised after {elapsed * 1000:.0f} ms (budget 1000 ms)")
    assert elapsed < 1.0 + 0.3


@pytest.mark.redis
def test_redis_killed_during_a_loop_fails_over_and_back_without_stale_reads(tmp_path: Path) -> None:
    """Redis killed mid-loop: no exception after the breaker opens, calls < 5 ms, back on Redis within
    2 probe intervals after restart, and 0 stale reads of keys written during the outage."""
    persist = ("--appendonly", "yes", "--appendfsync", "always")  # a restart restores old values
    server = start_redis_server(tmp_path / "redis", *persist)
    probe_interval = 0.3
    config = {
        "cache": {"type": "redis", "url": server.url, "probe_interval": probe_interval},
        "database": {"type": "memory"},
    }
    try:
        with StorageManager(config) as storage:
            cache: Any = storage.cache
            for i in range(50):
                cache.set(f"k{i}", "before")
            outage_latencies: list[float] = []
            written_in_outage: dict[str, str] = {}
            errors_after_open = 0
            back_after: float | None = None
            for op in range(1000):
                if op == 200:
                    server.proc.kill()  # type: ignore[union-attr]  # an owned server has a process
                    server.proc.wait()  # type: ignore[union-attr]
                if op == 700:
                    server = start_redis_server(tmp_path / "redis", *persist, port=server.port)
                    restarted_at = time.monotonic()
                opened = cache.breaker.state is not BreakerState.CLOSED
                start = time.perf_counter()
                try:
                    key = f"k{op % 50}"
                    if op % 2:
                        cache.set(key, f"outage-{op}")
                        if 200 <= op < 700:
                            written_in_outage[key] = f"outage-{op}"
                    else:
                        cache.get(key)
                except BackendUnavailableError:
                    if opened:
                        errors_after_open += 1
                if opened and op < 700:
                    outage_latencies.append(time.perf_counter() - start)
                if op >= 700 and back_after is None and cache.active == "redis":
                    back_after = time.monotonic() - restarted_at
                if op >= 200:
                    time.sleep(0.002)
            assert cache.active == "redis"
            assert back_after is not None
            stale = [k for k in written_in_outage if cache.get(k) == "before"]
            print(
                f"\noutage calls: {len(outage_latencies)}, max {max(outage_latencies) * 1000:.2f} ms; "
                f"errors after open: {errors_after_open}; back on redis {back_after:.2f} s after restart; "
                f"stale reads: {len(stale)} of {len(written_in_outage)} keys written during the outage"
            )
            assert errors_after_open == 0
            assert outage_latencies
            assert max(outage_latencies) < 0.005
            assert stale == []
            assert back_after < 2 * probe_interval
            assert cache.events["failover"] == 1
            assert cache.events["failback"] >= 1
    finally:
        stop_redis_server(server)


@pytest.mark.redis
def test_hung_redis_calls_return_within_deadline(tmp_path: Path) -> None:
    """A frozen Redis (SIGSTOP): every call returns within the socket deadline + 100 ms."""
    server = start_redis_server(tmp_path / "redis")
    timeout = 0.3
    config = {
        "cache": {"type": "redis", "url": server.url, "socket_timeout": timeout, "probe_interval": 0.5},
        "database": {"type": "memory"},
    }
    try:
        with StorageManager(config) as storage:
            storage.cache.set("k", 1)
            os.kill(server.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]  # owned server
            worst, raised = 0.0, 0
            for i in range(30):
                for op in ("set", "get"):
                    start = time.perf_counter()
                    try:
                        if op == "set":
                            storage.cache.set(f"k{i}", i)
                        else:
                            storage.cache.get(f"k{i}")
                    except BackendUnavailableError:
                        raised += 1  # allowed only until the breaker opens
                    worst = max(worst, time.perf_counter() - start)
            print(
                f"\nfrozen redis: worst call {worst * 1000:.0f} ms (deadline {timeout * 1000:.0f} ms); "
                f"{raised} call(s) raised before the breaker opened"
            )
            assert worst < timeout + 0.1
            assert raised <= 2  # the third consecutive failure opens the breaker and is served by memory
            report = storage.health()
            assert report.cache.degraded
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        stop_redis_server(server)


@pytest.mark.postgres
def test_postgres_stopped_during_chat_appends_loses_and_duplicates_nothing(tmp_path: Path, owned_postgres: Any) -> None:
    """Postgres stopped 10 s during a 2-writer append loop: after replay every acknowledged append is there once,
    in each writer's acknowledgement order."""
    from kvstore import PostgresDatabase

    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": owned_postgres.url,
            "probe_interval": 0.5,
            "statement_timeout": 2.0,
            "fallback": [{"type": "sqlite", "path": str(tmp_path / "fb.db")}],
            "state_dir": str(tmp_path / "state"),
        },
    }
    acked: dict[int, list[int]] = {0: [], 1: []}
    failures: list[str] = []
    stop = threading.Event()
    with StorageManager(config) as storage:
        database: Any = storage.database

        def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    database.append("chat", {"w": w, "i": i})
                except Exception as exc:  # any failure reaching the caller is recorded
                    failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    acked[w].append(i)
                i += 1
                time.sleep(0.005)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        owned_postgres.pg_ctl("-m", "fast", "-w", "stop")
        time.sleep(10.0)
        owned_postgres.start()
        deadline = time.monotonic() + 10
        while database.active != "postgres" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert database.active == "postgres"
        replayed = database.events["replayed"]
    check = PostgresDatabase(owned_postgres.url)
    try:
        final = check.get_range("chat", 0, -1)
    finally:
        check.close()
    per_writer = {w: [m["i"] for m in final if m["w"] == w] for w in (0, 1)}
    total = len(acked[0]) + len(acked[1])
    print(
        f"\nacknowledged {total} appends, {replayed} replayed from the journal; final list {len(final)}; "
        f"errors reaching callers: {len(failures)}"
    )
    assert failures == [] or all("unavailable" in f.lower() for f in failures)
    for w in (0, 1):
        assert per_writer[w] == acked[w], f"writer {w}: lost or duplicated or reordered"
    assert replayed > 0


def test_missing_extras_fall_back_or_name_the_install(tmp_path: Path) -> None:
    """With redis, psycopg and apsw absent: memory tiers work, the default falls back with a warning
    naming the extra, and asking for redis without a fallback gives the pip install hint."""
    code = r"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("redis", "psycopg", "psycopg_pool", "apsw"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
import logging; logging.basicConfig(level=logging.WARNING, format="WARN %(message)s")
from kvstore import StorageManager, MissingDependencyError
with StorageManager({"cache": {"type": "memory"}, "database": {"type": "memory"}}) as s:
    s.cache.set("k", 1); s.database.append("h", 1)
    print("memory ok", s.cache.get("k"), s.database.get_length("h"))
with StorageManager() as s:
    print("default on", s.health().database.active)
try:
    StorageManager({"cache": {"type": "redis", "fallback": []}}).connect()
except MissingDependencyError as exc:
    print("hint:", exc)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "memory ok 1 1" in result.stdout
    assert "default on memory" in result.stdout
    assert 'pip install "kvstore-sdk[redis]"' in result.stdout
    assert 'pip install "kvstore-sdk[sqlite]"' in result.stderr
