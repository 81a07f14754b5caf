"""Review s7: the writers' turn of outage writes (``journal.db.lock``) under forks and failback."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvstore import StorageManager
from kvstore._resilience.failover import FailoverDatabase
from kvstore._resilience.journal import Journal


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: POSIX only")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_another_thread_takes_the_turn_never_keeps_it(tmp_path: Path) -> None:
    """A thread of the parent takes and ends turns while the main thread forks (a process pool
    forking workers during an outage): no child may keep a copy of a turn's descriptor, or every
    outage write of every process would be busy for as long as that child lives."""
    journal = Journal.create(tmp_path / "journal.db")
    stop = threading.Event()

    def take_turns() -> None:
        while not stop.is_set():
            turn = journal.try_take_turn()
            if turn is not None:
                journal.end_turn(turn)

    children: list[int] = []
    taker = threading.Thread(target=take_turns)
    taker.start()
    try:
        for _ in range(60):
            pid = os.fork()
            if pid == 0:  # the child: lives on past the parent's check, doing nothing
                time.sleep(5)
                os._exit(0)
            children.append(pid)
            time.sleep(0.002)
        stop.set()
        taker.join()
        deadline = time.monotonic() + 1.0
        while (turn := journal.try_take_turn()) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert turn is not None, "a forked child kept the writers' turn"
        journal.end_turn(turn)
    finally:
        stop.set()
        taker.join()
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        journal.close()


def _sqlite_primary(tmp_path: Path) -> dict[str, Any]:
    return {
        "cache": {"type": "memory"},
        "database": {
            "type": "sqlite",
            "path": str(tmp_path / "primary.db"),
            "state_dir": str(tmp_path / "state"),
            "probe_interval": 60,
            "degraded_reads": "fallback",
            "fallback": ["sqlite"],  # the state directory's fallback.db, shared by every manager
        },
    }


def test_an_outage_write_of_another_manager_during_failback_is_not_emptied_from_the_fallback(
    tmp_path: Path,
) -> None:
    """A replays the shared journal and empties the shared fallback; B (another manager on the
    same state directory, still in its outage) writes right then. B's acknowledged write must
    stay readable from the fallback (degraded_reads="fallback") until B replays it: before, A's
    "journal empty?" check and its emptying of the fallback were not one turn, so B's write,
    journaled and mirrored between them, was emptied from the fallback (and B read None)."""
    config = _sqlite_primary(tmp_path)
    with StorageManager(config) as a, StorageManager(config) as b:
        fa, fb = a.database, b.database
        assert isinstance(fa, FailoverDatabase)
        assert isinstance(fb, FailoverDatabase)
        fa.set("warm", 0)
        fb.get("warm")
        fa.breaker.trip("A lost the primary")
        fb.breaker.trip("B lost the primary")
        fa.set("a-outage", 1)
        assert fb.get("a-outage") == 1  # the fallback is shared

        empty = fa._empty_fallback
        writer: list[threading.Thread] = []

        def empty_while_b_writes() -> None:
            thread = threading.Thread(target=lambda: fb.set("b-late", 2))
            writer.append(thread)
            thread.start()
            thread.join(0.5)  # B's write is quick when nothing keeps it waiting
            empty()

        fa._empty_fallback = empty_while_b_writes  # type: ignore[method-assign]
        fa.breaker.policy = type(fa.breaker.policy)(failure_threshold=1, probe_interval=0.001)
        time.sleep(0.01)
        fa.get("warm")  # probes, replays, empties the fallback
        assert fa.breaker.state.value == "closed"
        (thread,) = writer
        thread.join(5)
        assert not thread.is_alive()
        assert fb.breaker.state.value != "closed"
        assert fb.get("b-late") == 2, "B's acknowledged outage write vanished from the fallback"
        assert fb.journal is not None
        assert [e.data["k"] for e in fb.journal.pending()] == ["b-late"]
        fb.breaker.policy = type(fb.breaker.policy)(failure_threshold=1, probe_interval=0.001)
        time.sleep(0.01)
        assert fb.get("b-late") == 2  # probes and replays it
        assert fb.breaker.state.value == "closed"
        assert a.database.get("b-late") == 2


# --- connect cancelled while it reads an earlier process's journal ---------------------------


def test_connect_cancelled_while_reading_the_journal_closes_the_database_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AsyncStorageManager.connect` reads a journal left by an earlier process off the loop (an
    await since d20773c): a connect cancelled there (a startup timeout) must close the database
    tier it opened, as it does for every other failure, not leave its primary open."""
    from kvstore import AsyncStorageManager
    from kvstore.config import load_config
    from kvstore.manager_async import state_dir

    config = _sqlite_primary(tmp_path)
    path = state_dir(load_config(config).database) / "journal.db"
    Journal.create(path).close()
    opening, gate = threading.Event(), threading.Event()
    original = Journal._connection

    def slow_connection(self: Journal) -> Any:
        opening.set()
        gate.wait(5)
        return original(self)

    monkeypatch.setattr(Journal, "_connection", slow_connection)
    made: list[Any] = []
    failover = AsyncStorageManager._failover

    def spy(self: Any, *args: Any) -> Any:
        made.append(failover(self, *args))
        return made[-1]

    monkeypatch.setattr(AsyncStorageManager, "_failover", spy)

    async def main() -> None:
        manager = AsyncStorageManager(config)
        task = asyncio.ensure_future(manager.connect())
        while not opening.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        database = [store for store in made if store.tier == "database"]
        assert len(database) == 1
        assert database[0]._closing, "the cancelled connect left the database tier open"

    asyncio.run(main())


# --- close while outage writes wait for the turn; writes after close -------------------------


def _strict(tmp_path: Path) -> dict[str, Any]:
    config = _sqlite_primary(tmp_path)
    config["database"]["degraded_reads"] = "strict"
    return config


def _held_turn(journal_path: Path) -> int:
    """The writers' turn taken the way another process would (an flock on its own open file)."""
    import fcntl

    fd = os.open(str(journal_path) + ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_close_while_a_write_waits_for_the_turn_never_journals_it_without_its_mirror(tmp_path: Path) -> None:
    """A thread's outage write waits for the writers' turn (another process holds it) when another
    thread closes the manager: the write is journaled and mirrored, or neither. Before, close()
    closed the fallback under the waiting write, which then journaled (reopening the closed journal)
    and, the mirror refused, answered True: journaled, never mirrored, acknowledged after close."""
    from kvstore import ClosedError, SqliteDatabase

    config = _strict(tmp_path)
    manager = StorageManager(config)
    db = manager.connect().database
    assert isinstance(db, FailoverDatabase)
    db.set("warm", 0)
    db.breaker.trip("outage for the test")
    db.set("first", 1)
    assert db.journal is not None
    journal_path = Path(db.journal.path)
    holder = _held_turn(journal_path)
    outcome: list[Any] = []

    def write() -> None:
        try:
            outcome.append(db.set("late", 2))
        except ClosedError as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.2)  # the write waits for the turn
    closer = threading.Thread(target=manager.disconnect)
    closer.start()
    time.sleep(0.3)
    os.close(holder)  # the other process is done
    writer.join(5)
    closer.join(5)
    assert not writer.is_alive()
    assert not closer.is_alive()
    journal = Journal(journal_path)
    try:
        journaled = [entry.data["k"] for entry in journal.pending()]
    finally:
        journal.close()
    with SqliteDatabase(str(journal_path.parent / "fallback.db")) as fallback:
        mirrored = [key for key in ("first", "late") if fallback.get(key) is not None]
    assert journaled == mirrored, f"journaled {journaled}, mirrored {mirrored}, the write answered {outcome}"


def test_an_outage_write_after_close_is_refused_sync(tmp_path: Path) -> None:
    """After close() an outage write raises ClosedError (as on a healthy primary), journals nothing
    and reopens no journal connection; before, strict mode journaled it and answered True."""
    from kvstore import ClosedError

    manager = StorageManager(_strict(tmp_path))
    db = manager.connect().database
    assert isinstance(db, FailoverDatabase)
    db.set("warm", 0)
    db.breaker.trip("outage for the test")
    db.set("first", 1)
    manager.disconnect()
    with pytest.raises(ClosedError):
        db.set("after", 2)
    with pytest.raises(ClosedError):
        db.append("chat", "m", idempotency_id="after")
    assert db.journal is not None
    assert db.journal._conn is None, "the closed journal was reopened"
    journal = Journal(db.journal.path)
    try:
        assert [entry.data["k"] for entry in journal.pending()] == ["first"]
    finally:
        journal.close()


def test_an_outage_write_after_aclose_is_refused_async(tmp_path: Path) -> None:
    from kvstore import AsyncStorageManager, ClosedError
    from kvstore._resilience.failover_async import AsyncFailoverDatabase

    async def main() -> None:
        manager = AsyncStorageManager(_strict(tmp_path))
        db = (await manager.connect()).database
        assert isinstance(db, AsyncFailoverDatabase)
        await db.set("warm", 0)
        db.breaker.trip("outage for the test")
        await db.set("first", 1)
        await manager.disconnect()
        with pytest.raises(ClosedError):
            await db.set("after", 2)
        assert db.journal is not None
        assert db.journal._conn is None, "the closed journal was reopened"

    asyncio.run(main())


# --- a full disk between journaling and mirroring -------------------------------------------


def test_a_full_disk_never_leaves_a_failed_outage_write_in_the_journal(tmp_path: Path) -> None:
    """The state directory fills up during an outage (degraded_reads="fallback", a small tmpfs).
    Every write is journaled and mirrored, or neither, and raised (DESIGN.md §8 write-ahead): the
    first write the full disk refused had been journaled, its mirror failed, and undoing its journal
    entry failed too (no room for the WAL): the caller got BackendUnavailableError, yet the write
    stayed in the journal, to be replayed to the primary later."""
    import subprocess

    from kvstore import KVStoreError, SqliteDatabase

    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        config = {
            "cache": {"type": "memory"},
            "database": {
                "type": "postgres",
                "url": "postgresql://nobody@127.0.0.1:1/none",  # refused: the outage from the start
                "connect_timeout": 0.5,
                "degraded_reads": "fallback",
                "state_dir": str(where / "state"),
            },
        }
        acked: list[int] = []
        refused = 0
        with StorageManager(config) as storage:
            db = storage.database
            assert isinstance(db, FailoverDatabase)
            for i in range(2000):
                try:
                    db.append("chat", {"i": i, "pad": "x" * 300}, idempotency_id=f"m{i}")
                    acked.append(i)
                except KVStoreError:
                    refused += 1
                    if refused >= 20:
                        break
            assert db.journal is not None
            state = Path(db.journal.path).parent
        assert refused >= 20, "the disk never filled"
        journal = Journal(state / "journal.db")
        try:
            journaled = [item["i"] for entry in journal.pending(limit=100_000) for item in entry.data["v"]]
        finally:
            journal.close()
        with SqliteDatabase(str(state / "fallback.db")) as fallback:
            mirrored = [item["i"] for item in fallback.get_range("chat", 0, -1)]
        assert journaled == acked, f"refused but journaled: {sorted(set(journaled) - set(acked))}"
        assert mirrored == journaled
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# --- processes making the journal at once ----------------------------------------------------

_MAKE_JOURNALS = """
import os, sys, time
from kvstore import KVStoreError
from kvstore._resilience.journal import Journal
folder, start, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
failed = []
for i in range(count):
    while time.time() < start + i * 0.02:
        pass
    try:
        journal = Journal.create(os.path.join(folder, f"j{i}.db"))
        journal.record("set", {"k": "x", "v": i, "x": None}, ["x"])
        journal.close()
    except KVStoreError as exc:
        failed.append(f"{type(exc).__name__}: {exc}")
print(len(failed), failed[:1])
"""


def test_processes_making_the_journal_at_once_all_journal_their_first_write(tmp_path: Path) -> None:
    """An outage begins: each process's first outage write creates (or opens) the shared journal at
    the same moment. None may fail: SQLite answered one of two processes setting up a new journal
    "database is locked" at once (its deadlock avoidance, no busy wait), so its write raised
    BackendBusyError ("gave up after 2 s") — about one journal in ten, per process."""
    import subprocess
    import sys

    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MAKE_JOURNALS, str(tmp_path), str(start), "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
        outputs.append(out.decode().strip())
    assert outputs == ["0 []", "0 []"]


def test_close_from_a_signal_handler_of_the_thread_inside_an_outage_write_does_not_hang(tmp_path: Path) -> None:
    """A SIGTERM handler that disconnects (a worker's shutdown hook) runs in the thread that is inside an
    outage write (waiting for the writers' turn): close must not wait forever for that thread's own lock."""
    import subprocess
    import sys

    script = """
import fcntl, os, signal, sys, threading
from kvstore import StorageManager
config = {"cache": {"type": "memory"}, "database": {"type": "sqlite", "path": sys.argv[1] + "/p.db",
          "state_dir": sys.argv[1] + "/state", "probe_interval": 60, "fallback": ["sqlite"]}}
manager = StorageManager(config)
db = manager.connect().database
db.set("warm", 0)
db.breaker.trip("outage for the test")
db.set("first", 1)
fd = os.open(db.journal.path + ".lock", os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)  # another process's turn, as it were: the next write waits for it
signal.signal(signal.SIGALRM, lambda *_: manager.disconnect())
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    db.set("late", 2)
except Exception as exc:
    print(type(exc).__name__)
print("done", flush=True)
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().split()[-1] == "done"


def test_outage_writes_go_on_when_the_turn_lock_file_was_removed(tmp_path: Path) -> None:
    """Someone removes journal.db.lock (a cleaner of stale lock files) while a process runs in an
    outage: its next writes take the turn on a new lock file (owner-only) instead of raising
    BackendUnavailableError ("set state_dir to a writable directory") until the process restarts."""
    import stat

    with StorageManager(_strict(tmp_path)) as storage:
        db = storage.database
        assert isinstance(db, FailoverDatabase)
        db.set("warm", 0)
        db.breaker.trip("outage for the test")
        db.set("a", 1)
        assert db.journal is not None
        lock = Path(db.journal.path + ".lock")
        lock.unlink()
        db.set("b", 2)
        assert db.get("b") == 2
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
