"""Degraded mode that never answers wrong, never mixes tenants and never loses a write (DESIGN.md §8).

Each test names the case of the issue it proves (case1 ... case9); all run on real
PostgreSQL / SQLite, with outages made by tripping the breaker (the primary is then
never asked) or by stopping a server the test owns.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvstore import (
    AsyncStorageManager,
    BackendBusyError,
    BackendUnavailableError,
    ChatHistory,
    SessionStore,
    StorageManager,
)
from kvstore._resilience.breaker import BreakerPolicy
from kvstore._resilience.failover import FailoverDatabase
from kvstore._resilience.failover_async import AsyncFailoverDatabase
from kvstore._resilience.journal import Journal
from kvstore.config import StorageConfig
from kvstore.manager_async import state_dir

pytestmark = [pytest.mark.postgres]


def _pg(url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": url,
            "state_dir": str(tmp_path / "state"),
            "probe_interval": 0.2,
            "failure_threshold": 1,
            "connect_timeout": 2,
            **extra,
        },
    }


def _failover(storage: Any) -> FailoverDatabase:
    database = storage.database
    assert isinstance(database, FailoverDatabase)
    return database


def _probe_soon(database: Any) -> None:
    """Let the next call probe the primary (the tests trip breakers with a long probe interval)."""
    database.breaker.policy = BreakerPolicy(failure_threshold=1, probe_interval=0.001)
    time.sleep(0.01)


class _LoopTicker:
    """Ticks on the event loop while a call runs; ``worst`` is the longest tick over its period (the stall)."""

    def __init__(self, period: float = 0.002) -> None:
        self.period, self.worst, self._stop = period, 0.0, False
        self._task: asyncio.Future[None] | None = None

    async def __aenter__(self) -> _LoopTicker:
        self._task = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        assert self._task is not None
        await self._task

    async def _tick(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(self.period)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - self.period)
            last = now


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- case 1: one primary, one fallback, one journal ------------------------------------


def test_case1_tenants_differing_by_one_field_never_share_journal_or_fallback(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two Postgres tiers differing by schema, table prefix or key prefix get their own journal and fallback,
    and none of them is the embedded default's ./.kvstore/kvstore.db."""
    base = {"type": "postgres", "url": postgres_url, "state_dir": str(tmp_path / "state")}
    server, dbname = postgres_url.rsplit("/", 1)
    other_db = "postgres" if dbname.split("?")[0] == "test" else "test"  # another database than the URL's
    variants = [
        base,
        {**base, "schema_name": "tenant_b"},
        {**base, "table_prefix": "other_"},
        {**base, "key_prefix": "b:"},
        {**base, "url": f"{server}/{other_db}"},
    ]
    dirs = {state_dir(StorageConfig.from_mapping({"database": v}).database) for v in variants}
    assert len(dirs) == len(variants)
    # Outage writes of two tenants land in two journals; the second never sees the first's data.
    key = f"k-{uuid.uuid4().hex[:8]}"
    with (
        StorageManager({"cache": {"type": "memory"}, "database": variants[0]}) as a,
        StorageManager({"cache": {"type": "memory"}, "database": variants[3]}) as b,
    ):
        for storage, value in ((a, "A"), (b, "B")):
            _failover(storage).breaker.trip("outage for the test")
            storage.database.set(key, value)
        assert a.database.get(key) == "A"
        assert b.database.get(key) == "B"
        ja, jb = _failover(a).journal, _failover(b).journal
        assert ja is not None
        assert jb is not None
        assert ja.path != jb.path
        assert [e.data["v"] for e in ja.pending()] == ["A"]
        assert [e.data["v"] for e in jb.pending()] == ["B"]
        fallback = _failover(a).fallback
        assert fallback is not None
        assert Path(fallback.path).resolve() != Path(".kvstore/kvstore.db").resolve()
        assert Path(fallback.path).parent == Path(ja.path).parent


# --- case 2: write-ahead, cancellation, full disk ---------------------------------------


async def test_case2_cancelled_outage_writes_are_never_on_the_fallback_without_the_journal(
    postgres_url: str, tmp_path: Path
) -> None:
    """1,000 async writes cancelled at random points during an outage: every write on the fallback is journaled."""
    async with AsyncStorageManager(_pg(postgres_url, tmp_path)) as storage:
        database = storage.database
        assert isinstance(database, AsyncFailoverDatabase)
        database.breaker.trip("outage for the test")
        await database.set("warm-up", 0)  # creates journal and fallback
        rng = random.Random(7)
        tasks = []
        for i in range(1000):
            tasks.append(asyncio.ensure_future(database.set(f"c{i}", i)))
            if rng.random() < 0.5:
                await asyncio.sleep(0)
            victim = tasks[rng.randrange(len(tasks))]
            victim.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        await asyncio.sleep(0.5)  # shielded writes of cancelled callers finish
        async with database._outage_lock:
            pass
        journal = database.journal
        assert journal is not None
        journaled = {e.data["k"] for e in journal.pending(limit=10_000)}
        fallback = database.fallback
        on_fallback = set(await fallback.keys("c*"))
        print(f"\n{cancelled} of 1000 writes cancelled; {len(on_fallback)} on the fallback, {len(journaled)} journaled")
        assert cancelled > 100
        assert on_fallback - journaled == set()


def test_case2_a_full_journal_disk_raises_a_typed_error_and_applies_nothing(tmp_path: Path) -> None:
    """A journal that cannot grow (file size limit) gives BackendUnavailableError; the fallback is untouched."""
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from kvstore import BackendUnavailableError, StorageManager
config = {{"cache": {{"type": "memory"}}, "database": {{"type": "sqlite", "path": {str(tmp_path / "primary.db")!r},
          "state_dir": {str(tmp_path / "state")!r}, "failure_threshold": 1}}}}
with StorageManager(config) as storage:
    db = storage.database
    db.breaker.trip("outage for the test")
    db.set("small", 1)  # journal, fallback (memory) exist now
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    try:
        for i in range(100):
            db.set(f"big{{i}}", "x" * 50_000)
    except BackendUnavailableError as exc:
        print("raised", type(exc).__name__, "at", i)
        print("on fallback", db.fallback.exists(f"big{{i}}"))
        sys.exit(0)
    print("never raised")
    sys.exit(1)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    print(done.stdout, done.stderr[-2000:])
    assert done.returncode == 0
    assert "raised BackendUnavailableError" in done.stdout
    assert "on fallback False" in done.stdout


# --- case 3: replay never overwrites a newer write of another instance -----------------


@pytest.mark.parametrize("primary", ["postgres", "sqlite"])
def test_case3_replay_keeps_a_conflict_instead_of_overwriting_a_newer_write(
    postgres_url: str, tmp_path: Path, primary: str
) -> None:
    """Instance B (on its fallback) wrote k='B-older'; A then wrote k='A-newer' on the primary:
    B's failback records a conflict and k stays 'A-newer'; a key nobody else touched is replayed."""
    if primary == "postgres":
        database: dict[str, Any] = {"type": "postgres", "url": postgres_url}
    else:
        database = {"type": "sqlite", "path": str(tmp_path / "shared.db")}
    key, mine = f"k-{uuid.uuid4().hex[:8]}", f"mine-{uuid.uuid4().hex[:8]}"
    config_a = {"cache": {"type": "memory"}, "database": {**database, "state_dir": str(tmp_path / "a")}}
    config_b = {
        "cache": {"type": "memory"},
        "database": {**database, "state_dir": str(tmp_path / "b"), "probe_interval": 60},
    }
    with StorageManager(config_a) as a, StorageManager(config_b) as b:
        a.database.set(key, "before")
        _failover(b).breaker.trip("B lost the primary")
        b.database.set(key, "B-older")
        b.database.set(mine, "B-only")
        time.sleep(0.05)
        a.database.set(key, "A-newer")
        _probe_soon(_failover(b))
        assert b.database.get(mine) == "B-only"  # probes, replays, fails back
        assert _failover(b).breaker.state.value == "closed"
        assert a.database.get(key) == "A-newer"
        assert a.database.get(mine) == "B-only"
        journal = _failover(b).journal
        assert journal is not None
        (entry, keys), *_ = journal.conflicts()
        assert keys == [key]
        assert entry.data["v"] == "B-older"
        report = b.health()
        assert report.database.conflicts == 1
        assert report.database.pending_writes == 0


# --- case 5: degraded reads never pretend ------------------------------------------------


def test_case5_degraded_reads_raise_instead_of_reporting_absence(postgres_url: str, tmp_path: Path) -> None:
    """During an outage a key or list written before it raises; what the outage wrote reads back;
    count() raises, add() reports no invented position, add(id=...) stays retry-safe."""
    with StorageManager(_pg(postgres_url, tmp_path, probe_interval=60)) as storage:
        db = _failover(storage)
        run = uuid.uuid4().hex[:8]
        history = ChatHistory(storage.database, f"conv-{run}")
        for i in range(7):
            history.add({"role": "user", "content": str(i)})
        storage.database.set(f"old-{run}", 1)
        db.breaker.trip("outage for the test")
        with pytest.raises(BackendUnavailableError, match="truthfully"):
            storage.database.get(f"old-{run}")
        with pytest.raises(BackendUnavailableError, match="truthfully"):
            storage.database.exists(f"old-{run}")
        with pytest.raises(BackendUnavailableError, match="truthfully"):
            history.count()
        with pytest.raises(BackendUnavailableError, match="truthfully"):
            storage.database.keys()
        assert history.add({"role": "user", "content": "during"}) is None  # position unknown, not 0
        assert history.add({"role": "user", "content": "retry-safe"}, id=f"turn-{run}") is None
        assert history.add({"role": "user", "content": "retry-safe"}, id=f"turn-{run}") is None
        assert [m.content for m in history.last(2)] == ["during", "retry-safe"]  # the outage tail
        with pytest.raises(BackendUnavailableError, match="truthfully"):
            history.last(5)  # reaches messages only the primary has
        storage.database.set(f"new-{run}", 2)
        storage.database.delete(f"gone-{run}")
        assert storage.database.get(f"new-{run}") == 2  # read-your-writes
        assert storage.database.get(f"gone-{run}") is None  # deleted in this outage: truly absent
        _probe_soon(db)
        assert storage.database.get(f"old-{run}") == 1  # probes and fails back
        assert history.count() == 9  # the retried id was stored once
        assert [m.content for m in history.last(3)] == ["6", "during", "retry-safe"]


def test_case5_degraded_reads_fallback_setting_and_never_served_primary(tmp_path: Path) -> None:
    """degraded_reads='fallback' answers from the fallback; a primary unreachable at connect does too (auto)."""
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": "postgresql://nobody@127.0.0.1:1/none",
            "state_dir": str(tmp_path / "state"),
            "connect_timeout": 0.3,
        },
    }
    with StorageManager(config) as storage:
        assert storage.database.get("never-written") is None  # auto: the primary never served
        storage.database.set("k", 1)
        assert storage.database.keys() == ["k"]
        assert storage.health().database.degraded


# --- case 6: the filesystem --------------------------------------------------------------


def test_case6_read_only_working_directory_connects_and_creates_nothing(postgres_url: str, tmp_path: Path) -> None:
    """connect() with a healthy primary in a directory the process cannot write: it works and writes nothing."""
    work = tmp_path / "ro"
    work.mkdir()
    script = (
        "from kvstore import StorageManager\n"
        f"config = {{'database': {{'type': 'postgres', 'url': {postgres_url!r}}}}}\n"
        "with StorageManager(config) as s:\n"
        "    s.database.set('ro-check', 1)\n"
        "    assert s.database.get('ro-check') == 1\n"
        "    print('ok', s.health().ok)\n"
    )
    env = {**os.environ, "HOME": str(work), "KVSTORE_STATE_DIR": "", "XDG_STATE_HOME": ""}
    command = [sys.executable, "-c", script]
    opened: list[tuple[Path, int]] = []
    if os.geteuid() == 0:  # root writes anywhere: run as an unprivileged user instead
        if shutil.which("runuser") is None:
            pytest.skip("runuser is needed to drop root privileges")
        os.chmod(tmp_path, 0o755)
        command = ["runuser", "-u", "nobody", "--", *command]
        # The unprivileged user must reach the interpreter, the venv and the source tree
        # (a CI clone can sit in a 0700 directory): open the way for the test's duration.
        for leaf in (Path(sys.executable).parent, Path(__file__).resolve().parent.parent, tmp_path):
            for folder in [leaf, *leaf.parents]:
                mode = folder.stat().st_mode
                if not mode & 0o001 and folder not in [f for f, _ in opened]:
                    opened.append((folder, mode))
                    os.chmod(folder, (mode & 0o7777) | 0o005)
    os.chmod(work, 0o555)
    try:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(work, 0o755)
        for folder, mode in reversed(opened):
            os.chmod(folder, mode & 0o7777)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok True" in done.stdout
    assert list(work.iterdir()) == []


def test_case6_journal_and_fallback_are_owner_only_and_created_on_first_outage(
    postgres_url: str, tmp_path: Path
) -> None:
    """A healthy primary writes no local file; the first outage creates 0600 files in a 0700 directory."""
    with StorageManager(_pg(postgres_url, tmp_path)) as storage:
        storage.database.set("healthy", 1)
        assert not (tmp_path / "state").exists()
        _failover(storage).breaker.trip("outage for the test")
        storage.database.set("during", 1)
        (tier_dir,) = (tmp_path / "state").iterdir()
        assert _mode(tier_dir) == 0o700
        files = sorted(p.name for p in tier_dir.iterdir() if not p.name.endswith(("-wal", "-shm")))
        # .lock: the writers' turn; .reserve: room to undo an entry on a full disk
        assert files == ["fallback.db", "journal.db", "journal.db.lock", "journal.db.reserve"]
        for path in tier_dir.iterdir():
            assert _mode(path) == 0o600, path


def test_case6_an_unwritable_state_dir_makes_outage_writes_raise_and_apply_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    """Where no journal can be created, an outage write raises BackendUnavailableError; nothing is applied."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with StorageManager(_pg(postgres_url, tmp_path, state_dir=str(blocker / "state"))) as storage:
        _failover(storage).breaker.trip("outage for the test")
        with pytest.raises(BackendUnavailableError, match="state_dir"):
            storage.database.set("lost?", 1)
        assert _failover(storage).fallback is None


# --- case 7: journal I/O never blocks the event loop ------------------------------------


async def test_case7_journal_lock_held_elsewhere_never_stalls_the_loop(postgres_url: str, tmp_path: Path) -> None:
    """Another connection holds the journal's write lock: the loop keeps ticking (< 20 ms), the write
    waits its deadline and raises BackendBusyError."""
    async with AsyncStorageManager(_pg(postgres_url, tmp_path)) as storage:
        database = storage.database
        assert isinstance(database, AsyncFailoverDatabase)
        database.breaker.trip("outage for the test")
        await database.set("first", 1)
        assert database.journal is not None
        holder = Journal(database.journal.path)
        release = threading.Event()

        def hold() -> None:
            with holder._lock:
                conn = holder._connection()
                conn.execute("BEGIN IMMEDIATE")
                release.wait(10)
                conn.execute("ROLLBACK")

        thread = threading.Thread(target=hold)
        thread.start()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        try:
            async with _LoopTicker(0.005) as ticker:
                with pytest.raises(BackendBusyError, match="locked"):
                    await database.set("second", 2)
        finally:
            elapsed = time.monotonic() - started
            release.set()
            thread.join()
            holder.close()
        worst = ticker.worst
        print(f"\njournal locked elsewhere: write raised after {elapsed:.2f} s, worst loop stall {worst * 1000:.1f} ms")
        assert worst < 0.020
        assert elapsed < 3.0


# --- case 9: sessions --------------------------------------------------------------------


def test_case9_a_session_expiring_between_get_and_ttl_is_not_cached_back(tmp_path: Path) -> None:
    """If the session expires between the database read and its TTL read, the cache is not re-warmed."""
    config = {"cache": {"type": "memory"}, "database": {"type": "sqlite", "path": str(tmp_path / "s.db")}}
    with StorageManager(config) as storage:
        sessions = SessionStore.from_backends(storage, ttl=0.3, cache_ttl=60)
        sid = sessions.create({"user": 7})
        sessions.invalidate(sid)
        real_ttl = storage.database.ttl

        def late_ttl(key: str) -> float | None:
            time.sleep(0.4)  # the session expires right here
            return real_ttl(key)

        storage.database.ttl = late_ttl  # type: ignore[method-assign]
        try:
            sessions.get(sid)
        finally:
            del storage.database.ttl
        assert storage.cache.get(sessions.key(sid)) is None
        assert sessions.get(sid) is None


# --- case 4: load is not an outage --------------------------------------------------------


async def test_case4_postgres_pool_exhausted_by_big_reads_never_trips_the_breaker(
    postgres_url: str, tmp_path: Path
) -> None:
    """80 concurrent gets of a 4 MB value on a pool of 2: exact values or BackendBusyError, no breaker trip."""
    config = _pg(postgres_url, tmp_path, max_size=2, min_size=1, pool_timeout=0.3, failure_threshold=3)
    big = {"blob": "x" * (4 * 1024 * 1024)}
    async with AsyncStorageManager(config) as storage:
        database = storage.database
        assert isinstance(database, AsyncFailoverDatabase)
        key = f"big-{uuid.uuid4().hex[:8]}"
        await database.set(key, big)
        results = await asyncio.gather(*(database.get(key) for _ in range(80)), return_exceptions=True)
        busy = [r for r in results if isinstance(r, BackendBusyError)]
        wrong = [r for r in results if not isinstance(r, BackendBusyError) and r != big]
        print(f"\n80 gets of 4 MB on 2 connections: {80 - len(busy)} served, {len(busy)} busy, {len(wrong)} wrong")
        assert wrong == []
        assert database.breaker.opened_count == 0
        assert await database.exists(key) is True
        assert (await storage.health()).database.durable


def test_case4_sqlite_write_lock_held_elsewhere_never_trips_the_breaker(tmp_path: Path) -> None:
    """Another connection holds the SQLite write lock for 3 s: reads stay right, writes succeed or are busy."""
    import apsw

    path = tmp_path / "locked.db"
    config = {
        "cache": {"type": "memory"},
        "database": {"type": "sqlite", "path": str(path), "busy_timeout": 0.5, "failure_threshold": 1},
    }
    with StorageManager(config) as storage:
        database = _failover(storage)
        database.set("existing", {"v": 1})
        holder = apsw.Connection(str(path))
        holder.execute("BEGIN IMMEDIATE")
        outcomes: list[str] = []
        try:
            end = time.monotonic() + 3.0
            i = 0
            while time.monotonic() < end:
                assert database.get("existing") == {"v": 1}
                assert database.exists("existing") is True
                try:
                    database.set(f"w{i}", i)
                    outcomes.append("ok")
                except BackendBusyError:
                    outcomes.append("busy")
                i += 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        print(f"\nSQLite lock held 3 s: {outcomes.count('busy')} busy writes, {outcomes.count('ok')} ok")
        assert "busy" in outcomes
        assert database.breaker.opened_count == 0
        assert storage.health().database.durable
        database.set("after", 1)
        assert database.get("after") == 1


@pytest.mark.redis
async def test_case4_redis_at_max_connections_never_trips_the_breaker(redis_server: Any) -> None:
    """50 concurrent callers on a Redis pool of 2: exact values or BackendBusyError, the cache stays on Redis."""
    config = {
        "cache": {
            "type": "redis",
            "url": redis_server.url,
            "max_connections": 2,
            "failure_threshold": 1,
            "key_prefix": f"load-{uuid.uuid4().hex[:6]}:",
        },
        "database": {"type": "memory"},
    }
    value = {"blob": "y" * 1_000_000}
    async with AsyncStorageManager(config) as storage:
        cache: Any = storage.cache
        await cache.set("k", value)
        results = await asyncio.gather(*(cache.get("k") for _ in range(50)), return_exceptions=True)
        busy = [r for r in results if isinstance(r, BackendBusyError)]
        wrong = [r for r in results if not isinstance(r, BackendBusyError) and r != value]
        print(f"\n50 gets of 1 MB on 2 Redis connections: {50 - len(busy)} served, {len(busy)} busy")
        assert wrong == []
        assert cache.breaker.opened_count == 0
        assert cache.active == "redis"
        await cache.clear()


def test_case7_sync_outage_write_with_the_journal_locked_is_bounded_by_its_deadline(
    postgres_url: str, tmp_path: Path
) -> None:
    """The sync path waits at most the journal deadline for a lock held elsewhere, then raises BackendBusyError."""
    with StorageManager(_pg(postgres_url, tmp_path)) as storage:
        database = _failover(storage)
        database.breaker.trip("outage for the test")
        database.set("first", 1)
        assert database.journal is not None
        holder = Journal(database.journal.path)
        conn = holder._connection()
        conn.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        try:
            with pytest.raises(BackendBusyError, match="locked"):
                database.set("second", 2)
        finally:
            elapsed = time.monotonic() - started
            conn.execute("ROLLBACK")
            holder.close()
        assert elapsed < 3.0
        database.set("third", 3)  # the lock is gone: outage writes go on
        assert database.get("third") == 3
        assert "second" not in {e.data.get("k") for e in database.journal.pending()}


# --- found by the adversarial review -------------------------------------------------------


def _primary_config(kind: str, postgres_url: str, tmp_path: Path) -> dict[str, Any]:
    database: dict[str, Any] = (
        {"type": "postgres", "url": postgres_url, "key_prefix": f"r{uuid.uuid4().hex[:6]}:"}
        if kind == "postgres"
        else {"type": "sqlite", "path": str(tmp_path / "primary.db")}
    )
    return {
        "cache": {"type": "memory"},
        "database": {**database, "state_dir": str(tmp_path / "state"), "probe_interval": 60},
    }


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_replay_of_several_outage_writes_to_one_key_keeps_the_last(
    postgres_url: str, tmp_path: Path, kind: str
) -> None:
    """Replay never takes its own earlier writes for another instance's: every sequence ends as it did in the outage."""
    with StorageManager(_primary_config(kind, postgres_url, tmp_path)) as storage:
        db = _failover(storage)
        for key in ("twice", "deleted", "expired", "mset-then-set", "cleared", "list-then-value"):
            db.set(key, "before")
        db.breaker.trip("outage for the test")
        db.set("cleared", "v1")
        db.clear()  # first: it empties every key written before it
        db.set("cleared", "v2")
        for key in ("twice", "deleted", "expired", "mset-then-set", "list-then-value"):
            db.set(key, "outage-base")
        db.set("twice", "v1")
        db.set("twice", "v2")
        db.set("deleted", "v1")
        db.delete("deleted")
        db.set("expired", "v1")
        db.expire("expired", 100)
        db.mset({"mset-then-set": "m"})
        db.set("mset-then-set", "s")
        db.delete("list-then-value")
        db.append("list-then-value", 1)
        db.delete("list-then-value")
        db.set("list-then-value", "x")
        during = {k: db.get(k) for k in ("twice", "deleted", "mset-then-set", "cleared", "list-then-value")}
        _probe_soon(db)
        assert db.get("twice") == "v2"  # probes, replays, fails back
        assert db.breaker.state.value == "closed"
        after = {k: db.get(k) for k in during}
        assert (
            after
            == during
            == {
                "twice": "v2",
                "deleted": None,
                "mset-then-set": "s",
                "cleared": "v2",
                "list-then-value": "x",
            }
        )
        ttl = db.ttl("expired")
        assert ttl is not None
        assert 90 < ttl <= 100
        assert set(db.keys()) == {"twice", "expired", "mset-then-set", "cleared", "list-then-value"}
        assert storage.health().database.conflicts == 0


def test_a_list_whose_ttl_ran_out_in_the_outage_reads_back_its_new_items(tmp_path: Path) -> None:
    """append, expire, the TTL passes, append again: the list is the new item, not empty."""
    with StorageManager(_primary_config("sqlite", "", tmp_path)) as storage:
        db = _failover(storage)
        db.breaker.trip("outage for the test")
        db.delete("l")
        db.append("l", "a")
        db.expire("l", 0.2)
        time.sleep(0.3)
        db.append("l", "b")
        assert db.get_range("l", 0, -1) == ["b"]
        assert db.get_length("l") == 1
        assert db.exists("l") is True


def test_an_mset_with_a_key_twice_keeps_the_last_in_the_outage_and_after(tmp_path: Path) -> None:
    """mset([(k, 'y'), (k, 'x', ttl)]) behaves as two sets in order, during the outage and after replay."""
    with StorageManager(_primary_config("sqlite", "", tmp_path)) as storage:
        db = _failover(storage)
        db.breaker.trip("outage for the test")
        db.mset([("k", "y"), ("k", "x", 0.2)])
        time.sleep(0.3)
        assert db.get("k") is None
        _probe_soon(db)
        db.get("other")  # fails back
        assert db.breaker.state.value == "closed"
        assert db.get("k") is None


def test_an_explicit_fallback_that_is_a_primary_is_refused(tmp_path: Path) -> None:
    """A SQLite fallback path naming the tier's own file or the embedded default is a ConfigError."""
    from kvstore import ConfigError

    own = str(tmp_path / "app.db")
    config = {
        "cache": {"type": "memory"},
        "database": {"type": "sqlite", "path": own, "fallback": [{"type": "sqlite", "path": own}]},
    }
    with pytest.raises(ConfigError, match="primary"):
        StorageManager(config).connect()
    default = {
        "cache": {"type": "memory"},
        "database": {"type": "postgres", "url": "postgresql://x@127.0.0.1:1/x", "fallback": [{"type": "sqlite"}]},
    }
    with pytest.raises(ConfigError, match="primary"):
        StorageManager(default).connect()


async def test_degraded_mget_of_a_big_outage_mset_is_fast_and_never_blocks_the_loop(tmp_path: Path) -> None:
    """mget of 4,000 keys written by one outage mset: one pass over the journal, off the event loop."""
    config = _primary_config("sqlite", "", tmp_path)
    async with AsyncStorageManager(config) as storage:
        database = storage.database
        assert isinstance(database, AsyncFailoverDatabase)
        database.breaker.trip("outage for the test")
        await database.mset({f"m{i}": i for i in range(4000)})
        gc.collect()  # a full collection of earlier tests' garbage would stall every thread alike
        async with _LoopTicker() as ticker:
            started = time.perf_counter()
            values = await database.mget([f"m{i}" for i in range(4000)])
            elapsed = time.perf_counter() - started
        worst = ticker.worst
        print(f"\ndegraded mget of 4,000 keys: {elapsed * 1000:.0f} ms, worst loop stall {worst * 1000:.1f} ms")
        assert values == list(range(4000))
        assert elapsed < 2.0
        assert worst < 0.02


def test_a_process_that_started_in_the_outage_empties_its_fallback_after_replay(tmp_path: Path) -> None:
    """Started with the primary down (answers from the fallback), then replayed: the mirror is emptied."""
    primary = tmp_path / "later.db"
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": "postgresql://x@127.0.0.1:1/x",
            "state_dir": str(tmp_path / "state"),
            "connect_timeout": 0.3,
        },
    }
    with StorageManager(config) as storage:
        db = _failover(storage)
        storage.database.set("cfg", "from-the-outage")
        # The primary "comes back" as a SQLite file (any tracked store does for this test).
        from kvstore import SqliteDatabase

        db.primary = SqliteDatabase(primary)
        _probe_soon(db)
        assert storage.database.get("cfg") == "from-the-outage"
        assert db.breaker.state.value == "closed"
        assert db.fallback is not None
        assert db.fallback.keys() == []


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
@pytest.mark.parametrize("first", ["older", "newer"])
def test_two_instances_replaying_one_key_keep_the_newer_write_in_either_order(
    postgres_url: str, tmp_path: Path, kind: str, first: str
) -> None:
    """A and B both wrote k during their outages (A before B): whichever replays first, k ends as B's write."""
    base = _primary_config(kind, postgres_url, tmp_path)["database"]
    configs = {
        name: {"cache": {"type": "memory"}, "database": {**base, "state_dir": str(tmp_path / name)}}
        for name in ("a", "b")
    }
    with StorageManager(configs["a"]) as a, StorageManager(configs["b"]) as b:
        a.database.set("k", "before")
        _failover(a).breaker.trip("A lost the primary")
        _failover(b).breaker.trip("B lost the primary")
        a.database.set("k", "A-older")
        time.sleep(0.05)
        b.database.set("k", "B-newer")
        order = [a, b] if first == "older" else [b, a]
        for storage in order:
            _probe_soon(_failover(storage))
            storage.database.get("k")  # probes, replays, fails back
            assert _failover(storage).breaker.state.value == "closed"
        assert a.database.get("k") == "B-newer"
        conflicts = a.health().database.conflicts + b.health().database.conflicts
        assert conflicts == (1 if first == "newer" else 0)


def test_case4_postgres_row_lock_held_elsewhere_never_trips_the_breaker(postgres_url: str, tmp_path: Path) -> None:
    """Another session holds the row's lock past the statement deadline: writes are busy, the tier stays up."""
    import psycopg

    prefix = f"lock-{uuid.uuid4().hex[:6]}:"
    config = _pg(postgres_url, tmp_path, statement_timeout=0.5, failure_threshold=2, key_prefix=prefix)
    with StorageManager(config) as storage:
        database = _failover(storage)
        database.set("row", 1)
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT 1 FROM kvstore_entries WHERE ns = %s AND key = %s FOR UPDATE", (prefix, "row"))
            outcomes = []
            for i in range(4):
                try:
                    database.set("row", i)
                    outcomes.append("ok")
                except BackendBusyError:
                    outcomes.append("busy")
            holder.rollback()
        assert outcomes == ["busy"] * 4
        assert database.breaker.opened_count == 0
        database.set("row", "after")
        assert database.get("row") == "after"


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_a_replayed_clear_is_newer_than_another_instances_older_outage_write(
    postgres_url: str, tmp_path: Path, kind: str
) -> None:
    """B wrote k in its outage, then A cleared in its outage; A replays first: B's older write is a conflict."""
    base = _primary_config(kind, postgres_url, tmp_path)["database"]
    configs = {
        name: {"cache": {"type": "memory"}, "database": {**base, "state_dir": str(tmp_path / name)}}
        for name in ("a", "b")
    }
    with StorageManager(configs["a"]) as a, StorageManager(configs["b"]) as b:
        _failover(a).breaker.trip("A lost the primary")
        _failover(b).breaker.trip("B lost the primary")
        b.database.set("k", "B-older")
        time.sleep(0.05)
        a.database.clear()
        for storage in (a, b):
            _probe_soon(_failover(storage))
            storage.database.exists("probe")  # probes, replays, fails back
            assert _failover(storage).breaker.state.value == "closed"
        assert a.database.get("k") is None
        assert b.health().database.conflicts == 1


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_an_outage_expire_outlives_an_earlier_outage_ttl_on_replay(
    postgres_url: str, tmp_path: Path, kind: str
) -> None:
    """set with a short TTL (or expire a list briefly), then persist it, all in the outage: after the first
    TTL has passed and the journal is replayed, the value and the list are still there, with no TTL."""
    with StorageManager(_primary_config(kind, postgres_url, tmp_path)) as storage:
        db = _failover(storage)
        db.breaker.trip("outage for the test")
        db.set("v", "kept", 0.3)
        assert db.expire("v", None) is True
        db.delete("l")
        db.append("l", "item")
        db.expire("l", 0.3)
        db.expire("l", None)
        time.sleep(0.5)
        assert db.get("v") == "kept"
        assert db.get_range("l", 0, -1) == ["item"]
        _probe_soon(db)
        db.exists("probe")  # probes, replays, fails back
        assert db.breaker.state.value == "closed"
        assert db.get("v") == "kept"
        assert db.ttl("v") is None
        assert db.get_range("l", 0, -1) == ["item"]
        assert db.ttl("l") is None
