"""Review (s6-d): the manager's run-time failover and chat histories on it.

Forked children with an inherited manager (outage journal shared with the parent), and the
outage journal's replay lease across a fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore import BackendUnavailableError, ChatHistory, StorageManager
from kvstore._resilience.journal import Journal


def _refused_url() -> str:
    """A PostgreSQL URL on a local port nobody listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://nobody@127.0.0.1:{port}/review_s6_d"


def _outage_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": _refused_url(),
            "key_prefix": "review-s6-d:",
            "state_dir": str(tmp_path / "state"),
            "connect_timeout": 0.5,
            "probe_interval": 3600,
        },
    }


def _wait_child(pid: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


def test_outage_writes_of_a_forked_child_survive_the_parent_closing_its_manager(tmp_path: Path) -> None:
    """gunicorn --preload: the master's manager (journal open) is inherited by a worker, then closed in the
    master. Every message the worker's history acknowledged during the outage is still journaled."""
    manager = StorageManager(_outage_config(tmp_path))
    storage = manager.connect()
    history = ChatHistory(storage.database, "conv")
    history.add({"role": "user", "content": "m0"}, id="m0")  # journaled: the journal is open
    assert storage.database.journal is not None  # type: ignore[attr-defined]
    journal_path = Path(storage.database.journal_path)  # type: ignore[attr-defined]
    to_parent, from_child = os.pipe()
    to_child, from_parent = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            history.add({"role": "user", "content": "c1"}, id="c1")
            os.write(from_child, b"1")
            os.read(to_child, 1)  # the parent closed its manager
            for i in (2, 3, 4):
                history.add({"role": "user", "content": f"c{i}"}, id=f"c{i}")
            code = 0
        finally:
            os._exit(code)
    assert os.read(to_parent, 1) == b"1"
    manager.disconnect()  # closes the parent's journal (its last connection to the file)
    os.write(from_parent, b"1")
    assert _wait_child(pid) == 0
    journal = Journal(journal_path)
    try:
        ids = [entry.data.get("id") for entry in journal.pending()]
    finally:
        journal.close()
    assert ids == ["m0", "c1", "c2", "c3", "c4"]


def test_a_forked_child_does_not_share_the_parents_replay_lease(tmp_path: Path) -> None:
    """One process at a time replays a journal: a child inherits the journal object, not the lease."""
    journal = Journal.create(tmp_path / "state" / "journal.db")
    assert journal.acquire_replay()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.write(from_child, b"1" if journal.acquire_replay() else b"0")
            code = 0
        finally:
            os._exit(code)
    got = os.read(to_parent, 1)
    assert _wait_child(pid) == 0
    assert got == b"0", "the forked child took the replay lease its parent holds"
    journal.release_replay()
    journal.close()


# --- several processes, each with its own manager, on one PostgreSQL through an outage ------------

_WORKERS, _BEFORE, _DURING, _AFTER = 2, 3, 5, 2


def _mp_worker(w: int, config: dict[str, Any], events: Any, errors: Any) -> None:  # pragma: no cover - a child
    down, back, ready, acked = events
    try:
        with StorageManager(config) as storage:
            history = ChatHistory(storage.database, "shared")
            for i in range(_BEFORE):
                assert history.add({"role": "user", "content": f"p{w}-{i}"}, id=f"p{w}-{i}") is not None
            ready[w].set()
            assert down.wait(30)
            for i in range(_BEFORE, _BEFORE + _DURING):
                assert history.add({"role": "user", "content": f"p{w}-{i}"}, id=f"p{w}-{i}") is None  # journaled
            acked[w].set()
            assert back.wait(60)
            deadline = time.monotonic() + 30
            while True:  # until this process has probed and failed back
                try:
                    position = history.add({"role": "user", "content": f"p{w}-x"}, id=f"p{w}-x")
                except Exception:
                    position = None
                if position is not None:
                    break
                assert time.monotonic() < deadline, "never failed back"
                time.sleep(0.1)
            for i in range(_BEFORE + _DURING, _BEFORE + _DURING + _AFTER):
                assert history.add({"role": "user", "content": f"p{w}-{i}"}, id=f"p{w}-{i}") is not None
    except BaseException as exc:
        import traceback

        errors.put(f"worker {w}: {exc!r}\n{traceback.format_exc()}")
        raise


@pytest.mark.postgres
@pytest.mark.slow
def test_processes_with_their_own_managers_lose_reorder_or_double_no_message_through_an_outage(
    owned_postgres: Any, tmp_path: Path
) -> None:
    """Two processes, one PostgreSQL, one state directory (shared journal and fallback file): the server
    dies mid-conversation and comes back; each message acknowledged is in the list once, each process's in
    its order."""
    from kvstore.postgres import PostgresDatabase
    from tests.forking import FORK

    prefix = "review-s6-d-mp:"
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": owned_postgres.url,
            "key_prefix": prefix,
            "state_dir": str(tmp_path / "state"),
            "connect_timeout": 2,
            "probe_interval": 0.2,
            "failure_threshold": 1,
        },
    }
    down, back = FORK.Event(), FORK.Event()
    ready = [FORK.Event() for _ in range(_WORKERS)]
    acked = [FORK.Event() for _ in range(_WORKERS)]
    errors = FORK.Queue()
    procs = [
        FORK.Process(target=_mp_worker, args=(w, config, (down, back, ready, acked), errors)) for w in range(_WORKERS)
    ]
    for p in procs:
        p.start()
    try:
        assert all(e.wait(30) for e in ready)
        owned_postgres.pg_ctl("-m", "immediate", "-w", "stop")
        down.set()
        assert all(e.wait(30) for e in acked)
        owned_postgres.start()
        back.set()
        for p in procs:
            p.join(90)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    reported = []
    while not errors.empty():
        reported.append(errors.get(timeout=1))
    assert reported == []
    assert [p.exitcode for p in procs] == [0] * _WORKERS
    db = PostgresDatabase(owned_postgres.url, key_prefix=prefix)
    try:
        contents = [m["content"] for m in db.get_range("chat:shared", 0, -1)]
    finally:
        db.close()
    assert len(contents) == len(set(contents)), contents  # none doubled
    for w in range(_WORKERS):
        mine = [c for c in contents if c.startswith(f"p{w}-") and c != f"p{w}-x"]
        assert mine == [f"p{w}-{i}" for i in range(_BEFORE + _DURING + _AFTER)], contents


# --- a full disk under the outage journal -----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs (root only; skipped elsewhere), unmounted after the test."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_under_the_journal_refuses_outage_writes_typed_and_loses_no_acknowledged_one(
    small_disk: Path,
) -> None:
    """State directory on a full disk during an outage: adds raise BackendUnavailableError (nothing journaled
    for them), every acknowledged add is journaled once, in order; once space is freed adds journal again."""
    config = _outage_config(small_disk)
    config["database"]["degraded_reads"] = "strict"  # the journal is the truth; the fallback only a mirror
    with StorageManager(config) as storage:
        history = ChatHistory(storage.database, "conv")
        history.add({"role": "user", "content": "first"}, id="first")
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (3 * 1024 * 1024 - 700_000))
        acknowledged = ["first"]

        def fill() -> None:
            for i in range(400):
                history.add({"role": "user", "content": "x" * 20_000}, id=f"m{i}")
                acknowledged.append(f"m{i}")

        with pytest.raises(BackendUnavailableError):
            fill()
        assert len(acknowledged) > 1
        refused = f"m{len(acknowledged) - 1}"
        with pytest.raises(BackendUnavailableError):
            history.add({"role": "user", "content": "x" * 20_000}, id=refused)  # still full: refused again
        filler.unlink()
        history.add({"role": "user", "content": "after"}, id="after")
        assert [m.id for m in history.last(2)] == [acknowledged[-1], "after"]
        journal = storage.database.journal  # type: ignore[attr-defined]
        assert [entry.data["id"] for entry in journal.pending()] == [*acknowledged, "after"]


# --- PostgreSQL get_range: the server dies between the range and the length statement ----------------


@pytest.mark.postgres
@pytest.mark.slow
async def test_an_outage_between_the_range_and_length_statements_never_reads_as_empty(
    owned_postgres: Any, tmp_path: Path
) -> None:
    """A range read whose first statement found no item, and whose server dies before the second: the
    manager's tier raises (it cannot tell a missing list from one whose items only the primary has), never
    ``[]``; after the server is back the same reads answer the primary's items, the outage's appended once."""
    from kvstore import AsyncChatHistory, AsyncStorageManager
    from kvstore._resilience.failover_async import AsyncFailoverDatabase

    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": owned_postgres.url,
            "key_prefix": "review-s6-d-range:",
            "state_dir": str(tmp_path / "state"),
            "connect_timeout": 2,
            "probe_interval": 3600,
            "failure_threshold": 1,
        },
    }
    async with AsyncStorageManager(config) as storage:
        db = storage.database
        assert isinstance(db, AsyncFailoverDatabase)
        history: Any = AsyncChatHistory(db, "conv")
        for i in range(3):
            await history.add({"role": "user", "content": f"m{i}"}, id=f"m{i}")
        primary = db.primary
        real_run = primary._run

        async def run(op: str, key: Any, query: str, params: Any, result: str, retry: bool = True) -> Any:
            rows = await real_run(op, key, query, params, result, retry)
            if query == primary._q.range and not rows and not stopped:
                stopped.append(True)
                owned_postgres.pg_ctl("-m", "immediate", "-w", "stop")  # between the two statements
            return rows

        stopped: list[bool] = []
        primary._run = run
        with pytest.raises(BackendUnavailableError):
            await db.get_range(history.key, 10, 20)  # past the end: the first statement returns no row
        assert stopped
        with pytest.raises(BackendUnavailableError):
            await db.get_range_json(history.key, 0, -1)  # only the primary has them
        with pytest.raises(BackendUnavailableError):
            await history.page()
        assert await history.add({"role": "user", "content": "o1"}, id="o1") is None  # journaled
        assert [m.content for m in await history.last(1)] == ["o1"]
        with pytest.raises(BackendUnavailableError):
            await history.last(2)
        owned_postgres.start()
        db.breaker.policy = type(db.breaker.policy)(failure_threshold=1, probe_interval=0.001)
        await asyncio.sleep(0.01)
        deadline = time.monotonic() + 30
        while True:
            try:
                contents = [m.content for m in await history.last(10)]
                break
            except BackendUnavailableError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert contents == ["m0", "m1", "m2", "o1"]
        assert await db.get_range(history.key, 10, 20) == []
        page = await history.page(limit=2)
        assert [m.content for m in page.messages] == ["m2", "o1"]


# --- two event loops, each its own manager, one SQLite fallback file, cancelled writers -------------


def test_two_event_loops_on_one_sqlite_fallback_journal_and_mirror_every_write_once(tmp_path: Path) -> None:
    """Two threads each running asyncio with its own manager (PostgreSQL refused: the SQLite fallback in one
    state directory, one journal): concurrent adds, a third of them cancelled at some await. Every add is
    journaled and mirrored both or neither, each once; every acknowledged one is there."""
    import random
    import threading

    from kvstore import AsyncChatHistory, AsyncStorageManager
    from kvstore.sqlite import SqliteDatabase

    config = _outage_config(tmp_path)
    acknowledged: list[str] = []
    failures: list[BaseException] = []

    async def loop_main(t: int) -> None:
        rng = random.Random(t)
        async with AsyncStorageManager(config) as storage:
            history: Any = AsyncChatHistory(storage.database, "conv")

            async def add(i: int) -> None:
                await history.add({"role": "user", "content": f"t{t}-{i}"}, id=f"t{t}-{i}")
                acknowledged.append(f"t{t}-{i}")

            tasks = [asyncio.ensure_future(add(i)) for i in range(60)]
            for task in tasks:
                if rng.random() < 0.33:
                    await asyncio.sleep(rng.random() * 0.002)
                    task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    failures.append(result)

    def thread_main(t: int) -> None:
        try:
            asyncio.run(loop_main(t))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=thread_main, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert failures == []
    state = next((tmp_path / "state").iterdir())
    journal = Journal(state / "journal.db")
    try:
        journaled = [entry.data["id"] for entry in journal.pending()]
    finally:
        journal.close()
    with SqliteDatabase(state / "fallback.db", key_prefix="review-s6-d:") as fallback:
        mirrored = [m["id"] for m in fallback.get_range("chat:conv", 0, -1)]
    assert len(journaled) == len(set(journaled))
    assert len(mirrored) == len(set(mirrored))
    # Both or neither. (Two managers order the journal and the mirror each under its own lock: the
    # journal's order, which replay follows, may interleave the two loops' adds otherwise.)
    assert set(journaled) == set(mirrored)
    assert set(acknowledged) <= set(journaled)
    for t in range(2):
        for order in (journaled, mirrored):
            mine = [i for i in order if i.startswith(f"t{t}-")]
            assert mine == sorted(mine, key=lambda i: int(i.split("-")[1]))


# --- two tenants one character apart through an outage ---------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
async def test_tenants_one_character_apart_share_no_journal_fallback_or_replayed_write(
    owned_postgres: Any, tmp_path: Path
) -> None:
    """key_prefix ``t:`` and ``t;`` (and table_prefix ``kv_a``) on one server and one state root: an
    outage journals each tenant's adds in its own journal and fallback, and each replays into its own list."""
    from kvstore import AsyncChatHistory, AsyncStorageManager
    from kvstore._resilience.failover_async import AsyncFailoverDatabase

    def config(**extra: Any) -> dict[str, Any]:
        return {
            "cache": {"type": "memory"},
            "database": {
                "type": "postgres",
                "url": owned_postgres.url,
                "state_dir": str(tmp_path / "state"),
                "connect_timeout": 2,
                "probe_interval": 3600,
                "failure_threshold": 1,
                **extra,
            },
        }

    tenants = {
        "a": config(key_prefix="t:"),
        "b": config(key_prefix="t;"),
        "c": config(key_prefix="t:", table_prefix="kv_a"),
    }
    managers = {name: AsyncStorageManager(cfg) for name, cfg in tenants.items()}
    try:
        histories: dict[str, Any] = {}
        for name, manager in managers.items():
            storage = await manager.connect()
            histories[name] = AsyncChatHistory(storage.database, "conv")
            await histories[name].add({"role": "user", "content": f"{name}0"}, id="0")
        owned_postgres.pg_ctl("-m", "immediate", "-w", "stop")
        for name, history in histories.items():
            for i in (1, 2):
                with contextlib.suppress(BackendUnavailableError):
                    await history.add({"role": "user", "content": f"{name}{i}"}, id=str(i))
                assert await history.add({"role": "user", "content": f"{name}{i}"}, id=str(i)) is None
            assert [m.content for m in await history.last(2)] == [f"{name}1", f"{name}2"]
        dbs = {name: h.database for name, h in histories.items()}
        assert all(isinstance(db, AsyncFailoverDatabase) for db in dbs.values())
        assert len({db.journal_path for db in dbs.values()}) == 3
        owned_postgres.start()
        for db in dbs.values():
            db.breaker.policy = type(db.breaker.policy)(failure_threshold=1, probe_interval=0.001)
        await asyncio.sleep(0.01)
        for name, history in histories.items():
            deadline = time.monotonic() + 30
            while True:
                try:
                    contents = [m.content for m in await history.last(10)]
                    break
                except BackendUnavailableError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert contents == [f"{name}0", f"{name}1", f"{name}2"], name
    finally:
        for manager in managers.values():
            await manager.disconnect()


def test_a_read_only_state_directory_refuses_outage_writes_typed_and_applies_nothing(tmp_path: Path) -> None:
    """The state directory on a read-only file system (root ignores modes: a read-only tmpfs): the fallback
    becomes memory, and an add raises BackendUnavailableError naming state_dir; nothing is applied anywhere."""
    where = tmp_path / "ro"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M,ro", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        config = _outage_config(where)
        with StorageManager(config) as storage:
            history = ChatHistory(storage.database, "conv")
            with pytest.raises(BackendUnavailableError, match="state_dir"):
                history.add({"role": "user", "content": "hi"}, id="m0")
            assert storage.database.fallback.backend == "memory"  # type: ignore[attr-defined]
            assert history.last(5) == []  # the fallback took nothing
            assert storage.database.journal is None  # type: ignore[attr-defined]
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_disconnect_lets_a_cancelled_callers_outage_write_finish_both_or_neither(tmp_path: Path) -> None:
    """An add cancelled while its write is being journaled, then the manager disconnected and the loop
    ended: the write is journaled and mirrored, or neither (it was journaled only: the loop's shutdown
    cancelled it between the two)."""
    from kvstore import AsyncChatHistory, AsyncStorageManager
    from kvstore.sqlite import SqliteDatabase

    config = _outage_config(tmp_path)

    async def main() -> None:
        manager = AsyncStorageManager(config)
        storage = await manager.connect()
        history: Any = AsyncChatHistory(storage.database, "conv")
        await history.add({"role": "user", "content": "m0"}, id="m0")
        task = asyncio.ensure_future(history.add({"role": "user", "content": "m1"}, id="m1"))
        for _ in range(5):  # the add reaches the journal's thread
            await asyncio.sleep(0)
        task.cancel()
        await manager.disconnect()

    asyncio.run(main())
    state = next((tmp_path / "state").iterdir())
    journal = Journal(state / "journal.db")
    try:
        journaled = [entry.data["id"] for entry in journal.pending()]
    finally:
        journal.close()
    with SqliteDatabase(state / "fallback.db", key_prefix="review-s6-d:") as fallback:
        mirrored = [m["id"] for m in fallback.get_range("chat:conv", 0, -1)]
    assert journaled == mirrored
