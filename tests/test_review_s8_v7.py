"""Review of PostgreSQL schema version 7 (the append statement notifies a watched list itself) and of
the range statement's LIMIT: adversarial checks against a real server."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvstore._core.watch import key_tag
from kvstore.errors import KVStoreError, SerializationError, WrongTypeError
from kvstore.memory import AsyncMemoryDatabase
from kvstore.postgres import AsyncPostgresDatabase
from kvstore.postgres._sql import watch_channel

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python process running ``code`` with ``args``; stdin, stdout and stderr piped."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def _notes(conn: Any, seconds: float) -> list[str]:
    """The payloads ``conn`` receives within ``seconds``."""
    return [note.payload async for note in conn.notifies(timeout=seconds)]


async def _watched(admin: Any, store: AsyncPostgresDatabase, key: str) -> None:
    """A live watcher row for ``key`` (what a `watch` registers), without a watcher."""
    await admin.execute(
        f'INSERT INTO "{store.schema}"."{store.table_prefix}watchers" (ns, key, id, expires_at) '
        "VALUES (%s, %s, %s, now() + interval '1 hour')",
        (store.key_prefix, key, uuid.uuid4().hex),
    )


async def _admin(url: str) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def test_one_notification_per_writing_append_none_for_failed_or_replayed_ones(postgres_url: str) -> None:
    """Exactly one NOTIFY per append statement that wrote items to a watched list, its payload the
    key tag Python computes and the list's last position (after a trim and after an expired list
    restarts, head moves); none for a replay, a key holding a value, items that are not n JSON
    documents, invalid JSON, an unwatched list."""
    schema = f"rv8n_{uuid.uuid4().hex[:8]}"
    store = AsyncPostgresDatabase(postgres_url, max_size=2, schema_name=schema, key_prefix="ü:")
    await store.open()
    admin = await _admin(postgres_url)
    try:
        await admin.execute(f'LISTEN "{watch_channel(schema, "kvstore_")}"')
        key = "日本 k"
        tag = key_tag("ü:", key)
        await _watched(admin, store, key)
        await _watched(admin, store, key)  # two watchers: still one notification
        assert await store.append(key, 0, idempotency_id="a") == 1
        assert await _notes(admin, 0.3) == [f"{tag} 0"]
        assert await store.append(key, 0, idempotency_id="a") == 1  # replay
        assert await store.extend(key, [1, 2, 3]) == 4
        assert await _notes(admin, 0.3) == [f"{tag} 3"]
        assert await store.extend(key, []) == 4
        with pytest.raises(SerializationError):
            await store.extend_json(key, [b"1,2"])
        with pytest.raises(KVStoreError):  # not JSON: the server's error
            await store.extend_json(key, [b"{"])
        assert await _notes(admin, 0.3) == []
        assert await store.trim(key, 2, -1) == 2
        assert await store.append(key, 4) == 3
        assert await _notes(admin, 0.3) == [f"{tag} 4"]
        assert await store.get_range(key, 0, -1) == [2, 3, 4]
        # An expired list starts again as a new list: positions from 0, as after a delete.
        assert await store.expire(key, 0.05)
        await asyncio.sleep(0.2)
        assert await store.append(key, 5) == 1
        assert await _notes(admin, 0.3) == [f"{tag} 0"]
        assert await store.get_range(key, 0, -1) == [5]
        # A key holding a value, watched: WrongTypeError and no notification.
        await _watched(admin, store, "v")
        await store.set("v", 1)
        with pytest.raises(WrongTypeError):
            await store.append("v", 1)
        await store.append("unwatched", 1)
        assert await _notes(admin, 0.3) == []
    finally:
        await store.clear()
        await store.aclose()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def test_tenants_do_not_wake_each_other(postgres_url: str) -> None:
    """Two tenants differing by key_prefix, schema or table_prefix, watching the same key name:
    each append notifies its own tenant's channel with its own tag, and nobody else."""
    tag = uuid.uuid4().hex[:8]
    s1, s2 = f"rv8t1_{tag}", f"rv8t2_{tag}"
    configs = [
        {"schema_name": s1, "key_prefix": "a:"},
        {"schema_name": s1, "key_prefix": "b:"},
        {"schema_name": s2, "key_prefix": "a:"},
        {"schema_name": s1, "key_prefix": "a:", "table_prefix": "kvstore_x_"},
    ]
    stores = [AsyncPostgresDatabase(postgres_url, max_size=1, **c) for c in configs]  # type: ignore[arg-type]
    admins = []
    try:
        for store in stores:
            await store.open()
        for store in stores:
            admin = await _admin(postgres_url)
            admins.append(admin)
            await admin.execute(f'LISTEN "{watch_channel(store.schema, store.table_prefix)}"')
        for store in stores:
            await _watched(admins[0], store, "k")
        channels = [watch_channel(s.schema, s.table_prefix) for s in stores]
        for i, store in enumerate(stores):
            await store.append("k", i)
            await asyncio.sleep(0.2)
            for j, admin in enumerate(admins):
                got = await _notes(admin, 0.05)
                want = [f"{key_tag(store.key_prefix, 'k')} 0"] if channels[j] == channels[i] else []
                assert got == want, (i, j)
    finally:
        for store in stores:
            await store.clear()
            await store.aclose()
        if admins:
            for schema in (s1, s2):
                await admins[0].execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for admin in admins:
            await admin.close()


def _ops(rng: random.Random) -> list[tuple[Any, ...]]:
    big = [2**63 - 1, -(2**63), 2**62, -(2**62), 2**62 + 1, -(2**62) - 1, 2**70, -(2**70)]

    def index() -> int:
        r = rng.random()
        if r < 0.1:
            return rng.choice(big)
        return rng.randint(-12, 12)

    ops: list[tuple[Any, ...]] = []
    for _ in range(120):
        r = rng.random()
        if r < 0.3:
            ops.append(("extend", [rng.randint(0, 999) for _ in range(rng.randint(1, 4))]))
        elif r < 0.4:
            ops.append(("trim", index(), index()))
        elif r < 0.45:
            ops.append(("expire",))
        elif r < 0.48:
            ops.append(("delete",))
        else:
            ops.append(("range", index(), index()))
    return ops


async def test_get_range_matches_the_memory_backend_on_random_operations(postgres_url: str) -> None:
    """get_range(start, end) after appends, trims, expiries and deletes, with any bounds (negative, out
    of range, start > end, +-2**63 and beyond): the same answer as the memory backend's."""
    schema = f"rv8r_{uuid.uuid4().hex[:8]}"
    pg = AsyncPostgresDatabase(postgres_url, max_size=2, schema_name=schema)
    mem = AsyncMemoryDatabase()
    await pg.open()
    try:
        for seed in range(6):
            rng = random.Random(seed)
            key = f"l{seed}"
            expired = False
            for op in _ops(rng):
                if op[0] == "extend":
                    a, b = await pg.extend(key, op[1]), await mem.extend(key, op[1])
                    assert a == b, (seed, op)
                elif op[0] == "trim":
                    a, b = await pg.trim(key, op[1], op[2]), await mem.trim(key, op[1], op[2])
                    assert a == b, (seed, op)
                elif op[0] == "expire":
                    await pg.expire(key, 0.02)
                    await mem.expire(key, 0.02)
                    expired = True
                elif op[0] == "delete":
                    await pg.delete(key)
                    await mem.delete(key)
                else:
                    if expired:
                        await asyncio.sleep(0.05)
                        expired = False
                    a2, b2 = await pg.get_range(key, op[1], op[2]), await mem.get_range(key, op[1], op[2])
                    assert a2 == b2, (seed, op)
                    assert await pg.get_range(key, 0, -1) == await mem.get_range(key, 0, -1), (seed, op)
    finally:
        await pg.clear()
        await pg.aclose()
        await mem.aclose()
        admin = await _admin(postgres_url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


WRITER = """
import random, sys, time
from kvstore.postgres import PostgresDatabase
url, schema, key, w, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
db = PostgresDatabase(url, max_size=1, schema_name=schema)
db.open()
print("ready", flush=True)
sys.stdin.readline()
rng = random.Random(w)
i = 0
while i < n:
    if rng.random() < 0.3:
        batch = [f"{w}-{j}" for j in range(i, min(n, i + rng.randint(1, 5)))]
        db.extend(key, batch, idempotency_id=f"{w}-{i}")
        db.extend(key, batch, idempotency_id=f"{w}-{i}")  # a replay: nothing written, no NOTIFY
        i += len(batch)
    else:
        db.append(key, f"{w}-{i}")
        i += 1
    time.sleep(rng.random() * 0.01)
db.close()
print("done", flush=True)
"""


async def test_processes_appending_concurrently_wake_watchers_without_the_poll(postgres_url: str) -> None:
    """Four writer processes (each its own store) append to one watched list at once; two watchers
    with a 60 s poll see every item once, in the list's order, each writer's in its own order, and
    catch up within a second of the last append: only the appends' notifications woke them."""
    import time

    schema = f"rv8p_{uuid.uuid4().hex[:8]}"
    store = AsyncPostgresDatabase(postgres_url, max_size=2, schema_name=schema)
    await store.open()
    key = "hot"
    per, writers = 150, 4
    procs = [_spawn(WRITER, postgres_url, schema, key, str(w), str(per)) for w in range(writers)]
    watches = [store.watch(key, start=0, poll_interval=60.0) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "ready"

        async def collect(items: Any) -> tuple[list[tuple[int, Any]], float]:
            got = []
            async for item in items:
                got.append((item.position, item.value))
                if len(got) == per * writers:
                    break
            return got, time.monotonic()

        # Watching (registered) before the writers start.
        firsts = [asyncio.create_task(collect(w)) for w in watches]
        await asyncio.sleep(1.0)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            _out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err[-2000:]
        finished = time.monotonic()
        async with asyncio.timeout(20):
            results = [await t for t in firsts]
        final = await store.get_range(key, 0, -1)
        assert len(final) == per * writers
        for got, at in results:
            assert got == list(enumerate(final))
            assert at - finished < 1.0, at - finished
        for w in range(writers):
            mine = [int(v.split("-")[1]) for v in final if v.startswith(f"{w}-")]
            assert mine == list(range(per))
    finally:
        for items in watches:
            await items.aclose()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await store.clear()
        await store.aclose()
        admin = await _admin(postgres_url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


OPENER = """
import sys
from kvstore.postgres import PostgresDatabase
url, schema, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
db = PostgresDatabase(url, max_size=1, schema_name=schema, table_prefix=prefix)
print("ready", flush=True)
sys.stdin.readline()
db.open()
db.append("k", "x")
db.close()
print("done", flush=True)
"""


async def _notify_objects(admin: Any, schema: str, prefix: str) -> tuple[int, int]:
    """(triggers named like the notify trigger, functions named like its function) in ``schema``."""
    cur = await admin.execute(
        "SELECT (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND t.tgname = %s), "
        "(SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s)",
        (schema, f"{prefix}list_items_notify", schema, f"{prefix}notify_list_items"),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_concurrent_processes_migrate_version_6_tables_of_a_custom_prefix(postgres_url: str) -> None:
    """Three processes opening version-6 tables (table_prefix other than the default) at once: all
    succeed, the trigger and function are gone, the version is 7; a fresh install of another
    prefix in the same schema never leaves them either; appends then wake a watcher."""
    from kvstore.postgres._sql import SCHEMA_VERSION, migrations

    schema, prefix = f"rv8m_{uuid.uuid4().hex[:8]}", "t6_"
    first = AsyncPostgresDatabase(postgres_url, max_size=1, schema_name=schema, table_prefix=prefix)
    await first.open()
    await first.aclose()
    admin = await _admin(postgres_url)
    try:
        assert await _notify_objects(admin, schema, prefix) == (0, 0)  # fresh install: v1..v7 at once
        for statement in migrations(schema, prefix)[4] + migrations(schema, prefix)[5]:
            await admin.execute(statement)
        await admin.execute(f'UPDATE "{schema}"."{prefix}meta" SET version = 6')
        assert await _notify_objects(admin, schema, prefix) == (1, 1)
        procs = [_spawn(OPENER, postgres_url, schema, prefix) for _ in range(3)]
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            _out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err[-2000:]
        assert await _notify_objects(admin, schema, prefix) == (0, 0)
        cur = await admin.execute(f'SELECT version FROM "{schema}"."{prefix}meta"')
        assert await cur.fetchall() == [(SCHEMA_VERSION,)]
        other = AsyncPostgresDatabase(postgres_url, max_size=1, schema_name=schema, table_prefix="t7_")
        await other.open()
        assert await _notify_objects(admin, schema, "t7_") == (0, 0)
        await other.aclose()
        store = AsyncPostgresDatabase(postgres_url, max_size=1, schema_name=schema, table_prefix=prefix)
        await store.open()
        items = store.watch("k", start=0, poll_interval=60.0)
        try:
            async with asyncio.timeout(5):
                got = [(await items.__anext__()).value for _ in range(3)]
                assert got == ["x", "x", "x"]
                await asyncio.sleep(0.3)
                await store.append("k", "y")
                assert (await items.__anext__()).value == "y"
        finally:
            await items.aclose()
            await store.aclose()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def test_range_reads_while_another_store_appends_and_trims(postgres_url: str) -> None:
    """Reads of a list another store appends to and trims meanwhile: every answer is a run of
    consecutive items as one snapshot saw them (the LIMIT never cuts a selection short)."""
    import time

    schema = f"rv8c_{uuid.uuid4().hex[:8]}"
    writer = AsyncPostgresDatabase(postgres_url, max_size=2, schema_name=schema)
    reader = AsyncPostgresDatabase(postgres_url, max_size=2, schema_name=schema)
    await writer.open()
    await reader.open()
    stop = time.monotonic() + 3.0

    async def write() -> None:
        i = 0
        while time.monotonic() < stop:
            await writer.extend("c", list(range(i, i + 3)))
            i += 3
            if i % 9 == 0:
                await writer.trim("c", -7, -1)

    task = asyncio.create_task(write())
    reads = 0
    try:
        while not task.done():
            for start, end in ((0, -1), (-5, -1), (1, 3), (-3, 100), (2, -2)):
                got = await reader.get_range("c", start, end)
                assert got == list(range(got[0], got[0] + len(got))) if got else True, (start, end, got)
                whole = await reader.get_range("c", 0, -1)
                assert 3 <= len(whole) <= 16 or not whole, whole  # trimmed to 7 every 9 appended
                reads += 1
        await task
        assert reads > 50
    finally:
        task.cancel()
        await writer.clear()
        await writer.aclose()
        await reader.aclose()
        admin = await _admin(postgres_url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def test_a_watcher_starting_while_an_append_waits_on_the_row_lock_is_woken_by_it(postgres_url: str) -> None:
    """Schema version 7 probes `<p>watchers` in the append statement's own snapshot: an append that
    began before a watcher registered (it waited on the list's row lock, held here by another
    session) sends no NOTIFY when it commits. The watcher registered and read meanwhile, so it
    would wait out its whole poll_interval (30 s here) for that item; version 6's trigger, which
    probed after the statement, woke it. The watcher now waits out the appends queued on the
    list's row when it registers, before it reads."""
    import time

    import psycopg

    schema = f"rv8l_{uuid.uuid4().hex[:8]}"
    store = AsyncPostgresDatabase(postgres_url, max_size=2, schema_name=schema)
    await store.open()
    locker = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        await store.append("k", 0)
        await locker.execute(f'SELECT 1 FROM "{schema}".kvstore_entries WHERE key = %s FOR UPDATE', ("k",))
        append = asyncio.create_task(store.append("k", 1))  # queued on the row lock
        await asyncio.sleep(0.3)
        items = store.watch("k", start=1, poll_interval=30.0)
        try:
            first = asyncio.create_task(items.__anext__())
            await asyncio.sleep(0.5)  # the watcher listens and has registered
            await locker.rollback()  # the append goes on, with its snapshot from before the registration
            assert await append == 2
            started = time.monotonic()
            async with asyncio.timeout(10):
                item = await first
            assert (item.position, item.value) == (1, 1)
            assert time.monotonic() - started < 2.0
        finally:
            await items.aclose()
    finally:
        await locker.close()
        await store.clear()
        await store.aclose()
        admin = await _admin(postgres_url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def test_sync_watcher_starting_while_an_append_waits_on_the_row_lock_is_woken_by_it(postgres_url: str) -> None:
    """The same with the sync store (its watcher is generated from the async one)."""
    import threading
    import time

    import psycopg

    from kvstore.postgres import PostgresDatabase

    schema = f"rv8s_{uuid.uuid4().hex[:8]}"
    store = PostgresDatabase(postgres_url, max_size=2, schema_name=schema)
    store.open()
    locker = psycopg.connect(postgres_url)
    try:
        store.append("k", 0)
        locker.execute(f'SELECT 1 FROM "{schema}".kvstore_entries WHERE key = %s FOR UPDATE', ("k",))
        lengths: list[int] = []
        appender = threading.Thread(target=lambda: lengths.append(store.append("k", 1)))
        appender.start()  # queued on the row lock
        time.sleep(0.3)
        items = store.watch("k", start=1, poll_interval=30.0)
        got: list[Any] = []
        watcher = threading.Thread(target=lambda: got.append(next(items)), daemon=True)
        watcher.start()
        time.sleep(0.5)  # the watcher listens and has registered
        locker.rollback()
        appender.join(10)
        assert lengths == [2]
        started = time.monotonic()
        watcher.join(10)
        assert [(i.position, i.value) for i in got] == [(1, 1)]
        assert time.monotonic() - started < 2.0
        items.close()
    finally:
        locker.close()
        store.clear()
        store.close()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_watcher_cancelled_while_it_waits_for_a_locked_row_leaves_no_row_or_connection(
    postgres_url: str,
) -> None:
    """Cancelled while it waits, after registering, for the list's locked row: its `<p>watchers` row is
    deleted (it would make every append of the list NOTIFY for 30 s) and its connection closed."""
    import psycopg

    schema = f"rv8x_{uuid.uuid4().hex[:8]}"
    store = AsyncPostgresDatabase(postgres_url, max_size=2, schema_name=schema, statement_timeout=10)
    await store.open()
    locker = await psycopg.AsyncConnection.connect(postgres_url)
    admin = await _admin(postgres_url)
    watchers = f'SELECT count(*) FROM "{schema}".kvstore_watchers WHERE expires_at > now()'
    sessions = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND strpos(query, %s) > 0 "
        "AND query LIKE '%%FOR SHARE NOWAIT'"
    )
    try:
        await store.append("k", 0)
        await locker.execute(f'SELECT 1 FROM "{schema}".kvstore_entries WHERE key = %s FOR UPDATE', ("k",))

        async def consume() -> None:
            async for _ in store.watch("k", start=1, poll_interval=30.0):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        assert await (await admin.execute(watchers)).fetchall() == [(1,)]  # registered, waiting for the row
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await (await admin.execute(watchers)).fetchall() == [(0,)]
        assert await (await admin.execute(sessions, (schema,))).fetchall() == [(0,)]
    finally:
        await locker.close()
        await store.clear()
        await store.aclose()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
