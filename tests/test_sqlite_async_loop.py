"""AsyncSqliteDatabase on the event loop: calls that cannot block run there, the rest never stall it.

Another process holds the write lock while the store reads and writes; a ticker on the
loop measures the worst stall. Tasks hammer one store with random cancellation while a
second process grabs the write lock now and then; the data must come out exact.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest

from kvstore import AsyncStorageManager
from kvstore.errors import BackendBusyError
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase
from kvstore.sqlite import _engine as engine_module

ROOT = Path(__file__).resolve().parent.parent
STALL_LIMIT = 0.020  # the contract's bound on a loop stall, with a held write lock

# Takes the write lock of the file (BEGIN IMMEDIATE + an uncommitted write), says so, holds it
# until a line comes on stdin (at most argv[2] seconds), commits. With argv[3] == "flicker":
# instead grabs it again and again for 5-30 ms at random until argv[2] seconds have passed.
HOLDER = textwrap.dedent(
    """
    import random, select, sys, time
    import apsw

    path, seconds, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    conn = apsw.Connection(path)
    conn.set_busy_timeout(30000)
    if mode == "hold":
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE kvstore_keys SET value = CAST('7' AS BLOB) WHERE ns = '' AND key = 'v'")
        print("locked", flush=True)
        select.select([sys.stdin], [], [], seconds)
        conn.execute("COMMIT")
    else:
        rng = random.Random(7)
        print("locked", flush=True)
        end = time.monotonic() + seconds
        grabs = 0
        while time.monotonic() < end:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE kvstore_keys SET value = CAST('7' AS BLOB) WHERE ns = '' AND key = 'v'")
            time.sleep(rng.uniform(0.005, 0.03))
            conn.execute("COMMIT")
            grabs += 1
            time.sleep(rng.uniform(0.01, 0.06))
        print("grabs", grabs, flush=True)
    conn.close()
    print("released", flush=True)
    """
)


class Holder:
    """The process holding the lock: `release` makes it commit now (else it does after its seconds)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def release(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()


@asynccontextmanager
async def other_process_holds_write_lock(path: Path, seconds: float, mode: str = "hold") -> AsyncIterator[Holder]:
    """Another process takes the write lock of ``path`` (yields once it holds it) and releases it ``seconds``
    after this process learnt that it holds it, or at `Holder.release`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(path),
        "60" if mode == "hold" else str(seconds),
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    holder = Holder(proc)
    timer = None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"locked", line
        if mode == "hold":
            timer = asyncio.get_running_loop().call_later(seconds, holder.release)
        yield holder
    finally:
        if timer is not None:
            timer.cancel()
        if mode == "hold":
            holder.release()
        out = await asyncio.wait_for(proc.stdout.read(), 60)
        assert await proc.wait() == 0
        assert b"released" in out


class LoopTicker:
    """A task that ticks every ``period`` on the loop; ``worst`` is the longest a tick came late (a stall)."""

    def __init__(self, period: float = 0.001) -> None:
        self.period, self.worst, self.ticks = period, 0.0, 0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopTicker:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
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
            self.ticks += 1
            last = now


def prepared(path: Path) -> Path:
    """A file with a value ``v``, a list ``h`` and 100 keys."""
    with SqliteDatabase(path) as db:
        db.set("v", 0)
        db.extend("h", [0, 1])
        db.mset({f"k{i}": i for i in range(100)})
    return path


async def _stall_while_locked(path: Path) -> tuple[float, dict[str, Any]]:
    """gets, sets and appends while another process holds the write lock 1 s; the worst loop stall."""
    store = AsyncSqliteDatabase(path, busy_timeout=20)
    await store.ping()  # opened (on the worker) before the measure
    seen: dict[str, Any] = {}
    try:
        # The holder first: starting a process (fork + exec) is not the store's stall.
        async with other_process_holds_write_lock(path, 30) as holder, LoopTicker() as ticker:
            started = time.perf_counter()
            # Writes of every path: small ones retry on the loop, the big batch waits on the worker.
            writes = asyncio.gather(
                store.set("a", 1),
                store.append("log", "x"),
                store.extend("log2", ["y"] * 3),
                store.incr("n"),
                store.delete("k1"),
            )
            big = asyncio.ensure_future(store.mset({f"big{i}": i for i in range(300)}))
            await asyncio.sleep(0.05)
            # WAL readers never wait for the writer: this store's reads go on while its writes wait.
            reads = 0
            slowest = 0.0
            while time.perf_counter() - started < 1.0:
                before = time.perf_counter()
                assert await store.get("v") == 0
                assert await store.get_range("h", 0, -1) == [0, 1]
                assert await store.mget(["k2", "k3"]) == [2, 3]
                slowest = max(slowest, time.perf_counter() - before)
                reads += 1
                await asyncio.sleep(0.002)
            seen["writes pending after 1 s"] = not writes.done() and not big.done()
            holder.release()
            seen["writes"] = await writes
            await big
            seen["waited"] = time.perf_counter() - started
            seen["reads"], seen["slowest read"] = reads, slowest
        seen["ticks"] = ticker.ticks
        assert await store.get("v") == 7  # the other process's write committed
        assert await store.get("a") == 1
        assert await store.get_range("log", 0, -1) == ["x"]
        assert await store.get("big299") == 299
        return ticker.worst, seen
    finally:
        await store.aclose()


async def test_loop_never_stalls_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """Another process holds the write lock 1 s; gets, sets and appends of the store: worst 1 ms-tick stall < 20 ms.

    Reads keep being answered meanwhile (the store's own writes are waiting). On a loaded
    2-core machine the OS may deschedule the whole process, so a run that exceeds the
    bound is repeated (3 runs at most); a loop that really blocks on the lock stalls for
    the whole hold (1 s) in every run (see the control test below).
    """
    runs: list[float] = []
    for run in range(3):
        worst, seen = await _stall_while_locked(prepared(tmp_path / f"kv{run}.db"))
        runs.append(worst)
        print(f"\nworst loop stall {worst * 1000:.1f} ms; {seen}")
        assert seen["writes pending after 1 s"]  # the lock really was held
        assert seen["writes"] == [True, 1, 3, 1, True]
        assert seen["waited"] >= 1.0
        assert seen["reads"] >= 50  # reads were served all along, not after the release
        if worst < STALL_LIMIT:
            break
    assert min(runs) < STALL_LIMIT, f"worst loop stalls {[round(w * 1000, 1) for w in runs]} ms"


async def test_control_the_ticker_sees_a_blocking_call(tmp_path: Path) -> None:
    """Control: a blocking write (the sync store, waiting for the held lock on the loop) shows as a stall."""
    path = prepared(tmp_path / "kv.db")
    blocking = SqliteDatabase(path, busy_timeout=0.3)
    try:
        async with other_process_holds_write_lock(path, 30), LoopTicker() as ticker:
            await asyncio.sleep(0.01)
            with pytest.raises(BackendBusyError):
                blocking.set("a", 1)  # blocks the loop on purpose
    finally:
        blocking.close()
    assert ticker.worst >= 0.25


async def test_busy_write_completes_after_release_or_raises_busy_at_its_deadline(tmp_path: Path) -> None:
    """Lock held 1.2 s by another process: a patient write (loop or worker path) completes after the release;
    an impatient one raises BackendBusyError at its busy_timeout, nothing of it written."""
    path = prepared(tmp_path / "kv.db")
    patient = AsyncSqliteDatabase(path, busy_timeout=10)
    impatient = AsyncSqliteDatabase(path, busy_timeout=0.3)
    await asyncio.gather(patient.ping(), impatient.ping())
    try:
        async with other_process_holds_write_lock(path, 30):  # released when the block ends
            started = time.perf_counter()
            small = asyncio.ensure_future(patient.set("s", 1))
            big = asyncio.ensure_future(patient.mset({f"p{i}": i for i in range(300)}))  # > 128 keys: the worker
            with pytest.raises(BackendBusyError) as info:
                await impatient.set("s", 2)
            small_error_after = time.perf_counter() - started
            with pytest.raises(BackendBusyError) as big_info:
                await impatient.mset({f"i{i}": i for i in range(300)})
            big_error_after = time.perf_counter() - started - small_error_after
            await asyncio.sleep(max(0.0, 1.2 - (time.perf_counter() - started)))
            assert not small.done()
            assert not big.done()
        assert await small is True
        await big
        waited = time.perf_counter() - started
    finally:
        await patient.aclose()
    print(f"\nbusy errors after {small_error_after:.2f} s and {big_error_after:.2f} s (worker); waited {waited:.2f} s")
    assert 0.28 <= small_error_after < 0.8
    assert 0.28 <= big_error_after < 0.8
    assert waited >= 1.1
    err = info.value
    assert (err.backend, err.operation, err.key) == ("sqlite", "set", "s")
    assert "busy timeout" in str(err)
    assert isinstance(err.__cause__, apsw.BusyError)
    assert big_info.value.operation == "mset"
    assert await impatient.get("s") == 1  # the patient write, not the impatient one
    assert await impatient.mget(["i0", "i299", "p299"]) == [None, None, 299]
    await impatient.aclose()


async def test_async_manager_does_not_fall_back_when_sqlite_is_busy(tmp_path: Path) -> None:
    """Through AsyncStorageManager: writes on a file another process locks raise BackendBusyError, no fallback."""
    path = prepared(tmp_path / "kv.db")
    config = {
        "cache": {"type": "memory"},
        "database": {"type": "sqlite", "path": str(path), "busy_timeout": 0.1, "state_dir": str(tmp_path / "state")},
    }
    async with AsyncStorageManager(config) as storage:
        async with other_process_holds_write_lock(path, 1.5):
            for i in range(8):  # well past any breaker threshold
                with pytest.raises(BackendBusyError):
                    await storage.database.set("k", i)
            assert await storage.database.get("v") == 0  # reads are served meanwhile
            health = (await storage.health()).database
            assert (health.active, health.degraded) == ("sqlite", False)
        await storage.database.set("k", "after")
        assert (await storage.health()).database.degraded is False
    with SqliteDatabase(path) as db:
        assert db.get("k") == "after"


class _Task:
    """One hammering task's knowledge: what it knows was written, and what may have been (cancelled calls)."""

    def __init__(self, t: int) -> None:
        self.t = t
        self.seq = 0
        self.value: dict[str, int | None] = {}  # key -> last confirmed value
        self.maybe: dict[str, set[int]] = {}  # key -> values of cancelled sets issued after it
        self.log_ok: list[int] = []
        self.log_maybe: set[int] = set()
        self.incr_ok = 0
        self.incr_maybe = 0

    def possible(self, key: str) -> set[int | None]:
        return {self.value.get(key)} | self.maybe.get(key, set())


async def _hammer(store: AsyncSqliteDatabase, me: _Task, rng: random.Random, ops: int) -> None:
    async def attempt(call: Any) -> bool:
        """Run ``call``; cancel it at a random point with probability 0.3; whether it completed."""
        task = asyncio.ensure_future(call)
        if rng.random() < 0.3:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0, 0.003))
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]  # never: only the op is cancelled
                raise
            return False
        return True

    t = me.t
    for _ in range(ops):
        me.seq += 1
        seq = me.seq
        kind = rng.random()
        key = f"t{t}:k{rng.randrange(4)}"
        if kind < 0.3:
            if await attempt(store.set(key, seq)):
                me.value[key], me.maybe[key] = seq, set()
            else:
                me.maybe.setdefault(key, set()).add(seq)
        elif kind < 0.55:
            got = await store.get(key)
            assert got in me.possible(key), (key, got, me.possible(key))
            # Every earlier call of this task has settled by now (a cancelled one ran before
            # this read or never runs): what was read is the value from now on.
            me.value[key], me.maybe[key] = got, set()
        elif kind < 0.75:
            if await attempt(store.append(f"t{t}:log", seq)):
                me.log_ok.append(seq)
            else:
                me.log_maybe.add(seq)
        elif kind < 0.85:
            if await attempt(store.incr("shared")):
                me.incr_ok += 1
            else:
                me.incr_maybe += 1
        elif kind < 0.93:  # a batch the worker runs (> 128 keys): all or nothing
            batch = {f"t{t}:b{i}": seq for i in range(300)}
            if await attempt(store.mset(batch)):
                me.value["batch"], me.maybe["batch"] = seq, set()
            else:
                me.maybe.setdefault("batch", set()).add(seq)
        else:
            got = await store.mget([f"t{t}:b{i}" for i in range(300)])
            assert len(set(got)) == 1, "a batch was half-written"
            assert got[0] in me.possible("batch")


@pytest.mark.slow
async def test_tasks_hammering_one_store_with_random_cancellation_leave_exact_data(tmp_path: Path) -> None:
    """12 tasks x 250 random reads/writes on one store, 30 % cancelled at random points, another process
    grabbing the write lock now and then: every read sees a possible value, a later write of a task is never
    overtaken by its cancelled earlier one, batches are all or nothing, lists exact, the counter within bounds."""
    path = prepared(tmp_path / "kv.db")
    store = AsyncSqliteDatabase(path, busy_timeout=30)
    tasks = [_Task(t) for t in range(12)]
    async with other_process_holds_write_lock(path, 4.0, "flicker"), LoopTicker() as ticker:
        await asyncio.gather(*(_hammer(store, me, random.Random(1000 + me.t), 250) for me in tasks))
    await store.aclose()
    print(f"\nhammer: worst loop stall {ticker.worst * 1000:.1f} ms over {ticker.ticks} ticks")
    incr_ok = sum(me.incr_ok for me in tasks)
    incr_maybe = sum(me.incr_maybe for me in tasks)
    cancelled = sum(len(me.log_maybe) + me.incr_maybe for me in tasks)
    assert cancelled > 50  # the cancellation really hit calls
    with SqliteDatabase(path) as db:  # another connection: what is in the file
        for me in tasks:
            for key in [*me.value, *me.maybe]:
                if key == "batch":
                    got = db.mget([f"t{me.t}:b{i}" for i in range(300)])
                    assert len(set(got)) == 1
                    assert got[0] in me.possible("batch")
                else:
                    assert db.get(key) in me.possible(key), key
            log = db.get_range(f"t{me.t}:log", 0, -1)
            assert log == sorted(set(log)), "order kept, nothing twice"
            assert set(me.log_ok) <= set(log) <= set(me.log_ok) | me.log_maybe
        assert incr_ok <= (db.get("shared") or 0) <= incr_ok + incr_maybe
        conn = db._engine._conn
        assert conn is not None
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_later_write_of_a_task_is_never_overtaken_by_its_cancelled_earlier_one(tmp_path: Path) -> None:
    """A write cancelled while it runs on the worker, or while it waits for a lock another process holds, then
    a second write of the same key: the second one wins, every time; the cancelled batch is all or nothing."""
    path = prepared(tmp_path / "kv.db")
    store = AsyncSqliteDatabase(path, busy_timeout=10)
    await store.ping()
    applied = 0
    for round_ in range(6):
        # A big batch runs on the worker; cancelled while it runs there, it still ends first.
        batch = {"x": ["first", round_], **{f"f{round_}:{i}": i for i in range(5000)}}
        first = asyncio.ensure_future(store.mset(batch))
        await asyncio.sleep(0.001 * round_)
        first.cancel()
        assert await store.set("x", ["second", round_]) is True  # issued while the first may still run
        assert await store.get("x") == ["second", round_]
        written = await store.mget([f"f{round_}:{i}" for i in range(0, 5000, 100)])
        assert written in ([None] * 50, list(range(0, 5000, 100)))
        applied += written[0] is not None
        # A small write waiting (on the loop) for the lock another process holds, cancelled meanwhile.
        async with other_process_holds_write_lock(path, 30):
            small = asyncio.ensure_future(store.set("y", ["first", round_]))
            await asyncio.sleep(0.05)
            small.cancel()
        assert await store.set("y", ["second", round_]) is True
        await asyncio.sleep(0.05)
        assert await store.get("y") == ["second", round_]
    await store.aclose()
    print(f"\n{applied} of 6 cancelled batches had been applied (before the write issued after them)")


async def test_checkpoints_run_on_the_worker_and_keep_the_wal_bounded(tmp_path: Path) -> None:
    """40 MB of writes on the loop: checkpoints run on the worker thread only, the WAL file stays bounded."""
    rng = random.Random(5)
    path = tmp_path / "kv.db"
    store = AsyncSqliteDatabase(path)
    await store.ping()
    threads: list[str] = []
    engine = store._engine
    original = engine.checkpoint

    def spy() -> bool:
        threads.append(threading.current_thread().name)
        return original()

    engine.checkpoint = spy  # type: ignore[method-assign]
    async with LoopTicker() as ticker:
        for i in range(400):  # values that differ (SQLite writes no page whose bytes are unchanged)
            await store.set(f"k{i % 50}", rng.randbytes(50_000).hex())
    await store.set("last", 1)
    await asyncio.sleep(0.2)  # the last scheduled checkpoint ends
    wal = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
    print(f"\n{len(threads)} checkpoints, WAL {wal / 1e6:.1f} MB, worst stall {ticker.worst * 1000:.1f} ms")
    assert len(threads) >= 5  # every ~1,000 WAL pages (4 MB)
    assert all(name.startswith("kvstore-sqlite") for name in threads), threads
    assert wal < 12_000_000  # without checkpoints it would hold all 40 MB
    await store.aclose()


async def test_long_work_goes_to_the_worker_with_the_right_answer(tmp_path: Path) -> None:
    """Big batches, long ranges and deleting a long list (its items go by trigger) run on the worker."""
    store = AsyncSqliteDatabase(tmp_path / "kv.db")
    await store.ping()
    where = _record_where(store, ("mget", "extend", "get_range", "delete", "trim"))
    await store.extend("long", list(range(20_000)))
    assert await store.get_range("long", -3, -1) == [19_997, 19_998, 19_999]
    assert len(await store.get_range("long", 0, -1)) == 20_000
    assert await store.mget([f"m{i}" for i in range(1000)]) == [None] * 1000
    assert await store.trim("long", 0, 9_999) == 10_000
    assert await store.delete("long") is True
    assert await store.get_length("long") == 0
    assert where == [
        "extend: loop refused",  # 20,000 items
        "extend: worker",
        "get_range: loop",
        "get_range: loop refused",
        "get_range: worker",
        "mget: loop refused",  # 1,000 keys
        "mget: worker",
        "trim: loop refused",
        "trim: worker",
        "delete: loop refused",  # 10,000 item rows deleted by trigger: interrupted on the loop
        "delete: worker",
    ]
    await store.aclose()


async def test_a_page_is_read_on_the_loop_while_its_items_stay_within_loop_bytes(tmp_path: Path) -> None:
    """get_range on the loop: one fetch when each item fits its share of LOOP_BYTES, a second read
    summing the sizes when one is longer (still on the loop while the page fits LOOP_BYTES), the
    worker beyond that or beyond LOOP_ITEMS; expired and empty ranges read nothing."""
    clock = [1000.0]
    store = AsyncSqliteDatabase(tmp_path / "kv.db", clock=lambda: clock[0])
    await store.ping()
    await store.extend("small", [f"m{i}" for i in range(30)])
    await store.extend("fat", ["x" * 20_000] * 5 + ["y"])  # 20 kB items: within a 6-item page's share
    await store.extend("fat2", ["x" * 20_000] * 10)  # 200 kB in all: over the share of 0..-1, under LOOP_BYTES
    await store.extend("heavy", ["x" * 3_000] * 100)  # 300 kB in all: the worker
    await store.extend("long", list(range(300)))
    await store.extend("gone", [1, 2])
    await store.expire("gone", 1.0)
    engine = store._engine
    reads: list[str] = []
    for name, label in (("_query_page", "page"), ("_query_bounded", "summed"), ("_query", "whole")):
        original = getattr(engine, name)

        def spy(*args: Any, _label: str = label, _original: Any = original) -> Any:
            reads.append(_label)
            return _original(*args)

        setattr(engine, name, spy)
    where = _record_where(store, ("get_range",))

    async def read(key: str, start: int, end: int) -> tuple[int, list[str], list[str]]:
        reads.clear()
        where.clear()
        return len(await store.get_range(key, start, end)), list(reads), list(where)

    loop, refused = ["get_range: loop"], ["get_range: loop refused", "get_range: worker"]
    assert await read("small", -20, -1) == (20, ["page"], loop)
    assert await read("fat", -6, -1) == (6, ["page"], loop)
    assert await read("fat2", 0, -1) == (10, ["page", "summed"], loop)
    assert await read("heavy", 0, -1) == (100, ["page", "summed", "whole"], refused)
    assert await read("long", 0, -1) == (300, ["page", "whole"], refused)
    assert await read("long", 10, 5) == (0, ["page"], loop)
    clock[0] += 2
    assert await read("gone", 0, -1) == (0, ["page"], loop)
    await store.aclose()


def test_a_turn_left_open_by_a_closed_loop_does_not_stop_the_next_one(tmp_path: Path) -> None:
    """A caller awaiting get after get (each finishing on the loop, never suspending) lets the loop run its
    other tasks every few ms; the reset a finished loop never ran (asyncio.run returned, a forked child)
    leaves no call yielding forever on the next loop.

    The gap is measured in the loop thread's CPU time: on a loaded machine the OS deschedules
    the process for tens of ms, which is no store's doing; a caller that never yields keeps
    the other task waiting for the whole run's CPU time.
    """
    store = AsyncSqliteDatabase(tmp_path / "kv.db")

    async def gets(n: int) -> tuple[float, float]:
        """n gets in a row; (CPU seconds they took, the longest the loop's other task waited meanwhile, in CPU s)."""
        await store.set("k", 1)
        last = time.thread_time()
        longest = 0.0

        async def other() -> None:
            nonlocal last, longest
            while True:
                await asyncio.sleep(0)
                now = time.thread_time()
                longest, last = max(longest, now - last), now

        side = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        started = last = time.thread_time()
        for _ in range(n):
            assert await store.get("k") == 1
        took = time.thread_time() - started
        await asyncio.sleep(0)  # the other task runs once more: the gap up to now counts too
        side.cancel()
        return took, longest

    asyncio.run(gets(10))
    turn_module = sys.modules["kvstore.sqlite._worker"]
    turn_module.turn.started = time.perf_counter() - 60  # as if a loop had closed mid-turn long ago
    took, longest = asyncio.run(asyncio.wait_for(gets(40_000), 60))
    print(f"\n40,000 gets in {took:.2f} CPU s; the other task waited {longest * 1000:.1f} CPU ms at most")
    assert took > 0.05  # long enough that a caller never yielding would starve the other task throughout
    assert longest < 0.01
    asyncio.run(store.aclose())


def _record_where(store: AsyncSqliteDatabase, names: tuple[str, ...]) -> list[str]:
    """Spy on engine methods: each call appends ``name: worker|loop`` (``loop refused`` when it would block)."""
    engine = store._engine
    where: list[str] = []
    for name in names:
        original = getattr(engine, name)

        def spy(*args: Any, _original: Any = original, _name: str = name) -> Any:
            patient = engine._patient
            try:
                result = _original(*args)
            except engine_module.WouldBlock:
                where.append(f"{_name}: loop refused")
                raise
            where.append(f"{_name}: {'worker' if patient else 'loop'}")
            return result

        setattr(engine, name, spy)
    return where


async def test_synchronous_full_writes_on_the_worker_reads_on_the_loop(tmp_path: Path) -> None:
    """synchronous=FULL (a WAL sync per commit): writes run on the worker, reads on the loop; a held lock
    still ends in BackendBusyError at busy_timeout while reads go on."""
    path = prepared(tmp_path / "kv.db")
    store = AsyncSqliteDatabase(path, synchronous="FULL", busy_timeout=0.3)
    await store.ping()
    where = _record_where(store, ("set", "get"))
    assert await store.set("a", 1) is True
    assert await store.get("a") == 1
    assert where == ["set: worker", "get: loop"]
    async with other_process_holds_write_lock(path, 30):
        started = time.perf_counter()
        write = asyncio.ensure_future(store.set("a", 2))
        await asyncio.sleep(0.05)
        assert await store.get("a") == 1  # answered while the write waits
        assert time.perf_counter() - started < 0.25
        with pytest.raises(BackendBusyError):
            await write
        assert 0.28 <= time.perf_counter() - started < 0.8
    assert await store.get("a") == 1
    await store.aclose()


async def test_a_handed_connection_is_used_on_the_worker_only(tmp_path: Path) -> None:
    """A store on a handed apsw.Connection (maybe in use elsewhere) never uses it on the loop."""
    path = prepared(tmp_path / "kv.db")
    conn = apsw.Connection(str(path))
    store = AsyncSqliteDatabase(conn)
    where = _record_where(store, ("set", "get", "extend", "get_range"))
    assert await store.set("a", 1) is True
    assert await store.get("a") == 1
    assert await store.append("l", 1) == 1
    assert await store.get_range("l", 0, -1) == [1]
    assert where == ["set: worker", "get: worker", "extend: worker", "get_range: worker"]
    await store.aclose()
    assert conn.execute("SELECT count(*) FROM kvstore_keys").fetchall()[0][0] > 0  # still the caller's, open
    conn.close()
