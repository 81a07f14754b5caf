"""`watch` against real writer processes: 3 processes append 10,000 items while a watcher streams
the list (PostgreSQL restarted once mid-stream); cancellation at any await leaks nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvstore.postgres import AsyncPostgresDatabase
from kvstore.sqlite import AsyncSqliteDatabase
from tests.fixtures_postgres import PgServer

ROOT = Path(__file__).resolve().parent.parent
TOTAL, WRITERS = 10_000, 3

# One of the writers: appends its share, each item with an idempotency id, retrying through
# an outage (a retried append is applied once), and reports how many it wrote.
WRITER = textwrap.dedent(
    """
    import sys, time
    from kvstore.errors import BackendUnavailableError

    kind, target, key, writer, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    if kind == "postgres":
        from kvstore.postgres import PostgresDatabase
        db = PostgresDatabase(target, max_size=2, connect_timeout=2, statement_timeout=5)
    else:
        from kvstore.sqlite import SqliteDatabase
        db = SqliteDatabase(target, busy_timeout=30)
    print("ready", flush=True)
    retries = 0
    for i in range(count):
        while True:
            try:
                db.append(key, f"{writer}-{i}", idempotency_id=f"{writer}-{i}")
                time.sleep(0.001)  # paced: the writers are still at work when the server restarts
                break
            except BackendUnavailableError:
                retries += 1
                time.sleep(0.05)
    db.close()
    print("done", retries, flush=True)
    """
)


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


async def _stream_while_writing(store: Any, kind: str, target: str, restart: Any = None) -> int:
    """Start the writers, watch until TOTAL items arrived (restarting the server once on the way)."""
    key = f"stream-{uuid.uuid4().hex[:8]}"
    share = [TOTAL // WRITERS + (1 if w < TOTAL % WRITERS else 0) for w in range(WRITERS)]
    items = store.watch(key, start=0, poll_interval=0.05 if kind == "sqlite" else 1.0)
    got: list[tuple[int, Any]] = []
    writers = [_spawn(kind, target, key, str(w), str(n)) for w, n in enumerate(share)]
    restarter: asyncio.Task[bool] | None = None

    def restart_while_writing() -> bool:
        """Restart the server; whether a writer was still at work before and after it."""
        before = all(proc.poll() is None for proc in writers)
        restart()
        return before and any(proc.poll() is None for proc in writers)

    retries = 0
    try:
        async with asyncio.timeout(240):
            async for item in items:
                got.append((item.position, item.value))
                if restart is not None and restarter is None and len(got) >= TOTAL // 10:
                    # In the background: the watcher keeps going and meets the outage.
                    restarter = asyncio.create_task(asyncio.to_thread(restart_while_writing))
                if len(got) == TOTAL:
                    break
        if restarter is not None:
            assert await restarter, "the writers were not at work across the restart"
        for proc in writers:
            out, err = await asyncio.to_thread(proc.communicate, timeout=120)
            assert proc.returncode == 0, err[-2000:]
            assert out.splitlines()[-1].startswith("done"), out
            retries += int(out.split()[-1])
    finally:
        await items.aclose()
        for proc in writers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert restart is None or restarter is not None
    final = await store.get_range(key, 0, -1)
    # The watcher's sequence is the final list: same items, same order, positions 0..n-1.
    assert [value for _, value in got] == final
    assert [position for position, _ in got] == list(range(TOTAL))
    # Each writer's items once each, in its own order (idempotency ids made retries safe).
    assert sorted(final) == sorted(f"{w}-{i}" for w, n in enumerate(share) for i in range(n))
    for w in range(WRITERS):
        mine = [int(v.split("-")[1]) for v in final if v.startswith(f"{w}-")]
        assert mine == sorted(mine)
    return retries


@pytest.mark.slow
@pytest.mark.postgres
async def test_three_processes_append_10000_while_watched_with_a_postgres_restart(
    owned_postgres: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = AsyncPostgresDatabase(owned_postgres.url, max_size=2, connect_timeout=2, statement_timeout=5)
    await store.open()
    try:
        with caplog.at_level("INFO", logger="kvstore"):
            retries = await _stream_while_writing(
                store, "postgres", owned_postgres.url, lambda: owned_postgres.restart("immediate")
            )
    finally:
        await store.aclose()
    # The restart really cut the stream: the watcher lost its connection and reconnected (the
    # writers' appends waited out the restart in their pools, or failed and were retried).
    messages = [r.getMessage() for r in caplog.records]
    print(f"\nwriters' retried appends: {retries}")
    assert any("lost its PostgreSQL connection" in m for m in messages), messages


@pytest.mark.slow
async def test_three_processes_append_10000_while_watched_on_sqlite(tmp_path: Path) -> None:
    path = str(tmp_path / "watch.db")
    store = AsyncSqliteDatabase(path)
    try:
        await _stream_while_writing(store, "sqlite", path)
    finally:
        await store.aclose()


# --- cancellation -------------------------------------------------------------------------


async def _watch_connections(url: str, store: AsyncPostgresDatabase) -> int:
    """Server-side sessions that LISTEN on this store's channel (the watchers' connections)."""
    import psycopg

    from kvstore.postgres._sql import watch_channel

    # A watcher's session last ran its LISTEN, its registration or unregistration (statements
    # on <p>watchers, which nothing else touches), its wait for the list's row lock or its read.
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (query = %s "
            "OR strpos(query, %s) > 0 OR (query LIKE 'SELECT head + length AS pos%%' AND strpos(query, %s) > 0) "
            "OR (query LIKE 'SELECT 1 FROM %%FOR SHARE NOWAIT' AND strpos(query, %s) > 0))",
            (
                f'LISTEN "{watch_channel(store.schema, store.table_prefix)}"',
                f'"{store.table_prefix}watchers"',
                f'"{store.table_prefix}list_items"',
                f'"{store.table_prefix}entries"',
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.postgres
async def test_cancelling_a_postgres_watcher_at_any_await_leaks_no_connection_or_task(postgres_url: str) -> None:
    store = AsyncPostgresDatabase(postgres_url, max_size=2, table_prefix="watchcancel_")
    await store.open()
    await store.extend("c", list(range(3)))
    before_tasks = len(asyncio.all_tasks())
    try:
        # Cancel after 0, 1, 2... loop iterations: lands on every await of a watcher's life
        # (connect, LISTEN, read, notification wait, reconnect pause).
        for delay in [0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1.2]:

            async def consume() -> None:
                async for _ in store.watch("c", start=0, poll_interval=0.5):
                    await store.append("c", "more")

            task = asyncio.create_task(consume())
            await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        deadline = time.monotonic() + 5
        while await _watch_connections(postgres_url, store) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await _watch_connections(postgres_url, store) == 0
        assert len(asyncio.all_tasks()) == before_tasks
    finally:
        await store.clear()
        await store.aclose()


async def test_cancelling_a_sqlite_or_memory_watcher_leaves_nothing_behind(tmp_path: Path) -> None:
    from kvstore import AsyncMemoryDatabase

    sqlite = AsyncSqliteDatabase(str(tmp_path / "c.db"))
    memory = AsyncMemoryDatabase()
    try:
        for store in (sqlite, memory):
            before = len(asyncio.all_tasks())
            for delay in [0, 0.001, 0.01, 0.05, 0.2]:

                async def consume(store: Any = store) -> None:
                    async for _ in store.watch("c", start=0, poll_interval=0.02):
                        await store.append("c", "more")

                task = asyncio.create_task(consume())
                await asyncio.sleep(delay)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert len(asyncio.all_tasks()) == before
        assert memory._space.watchers == set()
    finally:
        await sqlite.aclose()
        await memory.aclose()


async def _notes(conn: Any, seconds: float) -> list[str]:
    """The payloads ``conn`` receives within ``seconds``."""
    return [note.payload async for note in conn.notifies(timeout=seconds)]


async def _live_watchers(conn: Any, store: AsyncPostgresDatabase, key: str) -> int:
    cur = await conn.execute(
        f'SELECT count(*) FROM "{store.schema}"."{store.table_prefix}watchers" '
        "WHERE ns = %s AND key = %s AND expires_at > now()",
        (store.key_prefix, key),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.postgres
async def test_postgres_notifies_only_watched_lists_and_the_watch_sees_every_item(postgres_url: str) -> None:
    """Schema v6: an append to an unwatched list sends no NOTIFY (whose commit PostgreSQL
    serialises); once a watcher registers, each append statement to its list sends one."""
    import psycopg

    from kvstore._core.watch import key_tag
    from kvstore.postgres._sql import watch_channel

    store = AsyncPostgresDatabase(postgres_url, max_size=2, table_prefix="watchnotify_")
    await store.open()
    listener = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    run = uuid.uuid4().hex[:8]  # keys of this run only: a row left by an earlier run cannot count
    q, o = f"quiet{run}", f"other{run}"
    quiet, other = key_tag(store.key_prefix, q), key_tag(store.key_prefix, o)
    try:
        await listener.execute(f'LISTEN "{watch_channel(store.schema, store.table_prefix)}"')
        for i in range(5):
            await store.append(q, i)
            await store.extend(o, [i, i])
        assert await _notes(listener, 0.5) == []

        got: list[tuple[int, Any]] = []
        done = asyncio.Event()

        async def consume() -> None:
            async for item in store.watch(q, start=0, poll_interval=1.0):
                got.append((item.position, item.value))
                if len(got) == 25:
                    done.set()
                    return

        task = asyncio.create_task(consume())
        deadline = time.monotonic() + 10
        while await _live_watchers(listener, store, q) != 1:
            assert time.monotonic() < deadline, "the watcher never registered"
            await asyncio.sleep(0.02)
        for i in range(5, 25):
            await store.append(q, i)
            await store.append(o, i)
        notes = await _notes(listener, 0.5)
        # One notification per append statement of the watched list, none of the other.
        assert [n for n in notes if n.startswith(quiet)] == [f"{quiet} {i}" for i in range(5, 25)]
        assert not [n for n in notes if n.startswith(other)]
        await asyncio.wait_for(done.wait(), 10)
        await task
        assert got == [(i, i) for i in range(25)]

        # Closed: the row is gone, and appends are silent again.
        assert await _live_watchers(listener, store, q) == 0
        await store.append(q, "after")
        assert await _notes(listener, 0.5) == []
    finally:
        await listener.close()
        await store.clear()
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_version_5_tables_migrate_to_notify_only_watched_lists(postgres_url: str) -> None:
    """Tables of schema version 5 (every append notified) gain the watchers table and the v6 trigger."""
    import psycopg
    from psycopg.sql import SQL, Identifier

    from kvstore.postgres._sql import SCHEMA_VERSION, migrations, watch_channel

    schema = f"watchv5_{uuid.uuid4().hex[:8]}"
    first = AsyncPostgresDatabase(postgres_url, max_size=1, schema_name=schema)
    await first.open()
    await first.append("k", 0)
    await first.aclose()
    admin = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    try:
        # Back to what version 5 left: no watchers table, the notify-every-append function.
        await admin.execute(SQL("DROP TABLE {}").format(Identifier(schema, "kvstore_watchers")))
        for statement in migrations(schema, "kvstore_")[4]:
            await admin.execute(statement)
        await admin.execute(SQL("UPDATE {} SET version = 5").format(Identifier(schema, "kvstore_meta")))
        await admin.execute(f'LISTEN "{watch_channel(schema, "kvstore_")}"')
        items_table = Identifier(schema, "kvstore_list_items")
        await admin.execute(SQL("INSERT INTO {} VALUES ('x', 'raw', 1, '1')").format(items_table))
        assert len(await _notes(admin, 0.3)) == 1  # version 5: notified, unwatched
        await admin.execute(SQL("DELETE FROM {} WHERE ns = 'x'").format(items_table))

        store = AsyncPostgresDatabase(postgres_url, max_size=1, schema_name=schema)
        await store.open()  # migrates
        try:
            cur = await admin.execute(SQL("SELECT version FROM {}").format(Identifier(schema, "kvstore_meta")))
            assert await cur.fetchall() == [(SCHEMA_VERSION,)]
            await store.append("k", 1)
            assert await _notes(admin, 0.3) == []
            items = store.watch("k", start=0, poll_interval=1.0)
            try:
                assert [(i.position, i.value) async for i in _first(items, 2)] == [(0, 0), (1, 1)]
                await store.append("k", 2)
                assert len(await _notes(admin, 0.5)) == 1  # watched now
                assert [(i.position, i.value) async for i in _first(items, 1)] == [(2, 2)]
            finally:
                await items.aclose()
        finally:
            await store.aclose()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.mark.postgres
async def test_postgres_version_6_tables_lose_the_notify_trigger_and_appends_notify_themselves(
    postgres_url: str,
) -> None:
    """Tables of schema version 6 (a statement-level trigger notified watched lists) migrate to version 7:
    the trigger and its function are dropped, and the append statement notifies a watched list itself:
    one notification per append or extend (its last position), none for an unwatched list, none for an
    idempotent replay that writes nothing, and none for a list whose watcher's row has expired."""
    import psycopg
    from psycopg.sql import SQL, Identifier

    from kvstore._core.watch import key_tag
    from kvstore.postgres._sql import SCHEMA_VERSION, migrations, watch_channel

    schema = f"watchv6_{uuid.uuid4().hex[:8]}"
    first = AsyncPostgresDatabase(postgres_url, max_size=1, schema_name=schema, key_prefix="n:")
    await first.open()
    await first.aclose()
    admin = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    triggers = SQL(
        "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND t.tgname = 'kvstore_list_items_notify'"
    )
    try:
        # Back to what version 6 left: its trigger and function.
        for statement in migrations(schema, "kvstore_")[4] + migrations(schema, "kvstore_")[5]:
            await admin.execute(statement)
        await admin.execute(SQL("UPDATE {} SET version = 6").format(Identifier(schema, "kvstore_meta")))
        assert await (await admin.execute(triggers, (schema,))).fetchall() == [(1,)]

        store = AsyncPostgresDatabase(postgres_url, max_size=1, schema_name=schema, key_prefix="n:")
        await store.open()  # migrates
        try:
            cur = await admin.execute(SQL("SELECT version FROM {}").format(Identifier(schema, "kvstore_meta")))
            assert await cur.fetchall() == [(SCHEMA_VERSION,)]
            assert await (await admin.execute(triggers, (schema,))).fetchall() == [(0,)]
            await admin.execute(f'LISTEN "{watch_channel(schema, "kvstore_")}"')
            await store.append("quiet", 0)
            await store.append("k", 0)
            assert await _notes(admin, 0.3) == []  # nobody watches either list
            items = store.watch("k", start=0, poll_interval=30.0)
            try:
                assert [(i.position, i.value) async for i in _first(items, 1)] == [(0, 0)]
                tag = key_tag("n:", "k")
                assert await store.append("k", 1, idempotency_id="once") == 2
                assert await _notes(admin, 0.5) == [f"{tag} 1"]
                assert await store.append("k", 1, idempotency_id="once") == 2  # replayed: nothing written
                assert await store.extend("k", list(range(2, 1002))) == 1002
                assert await _notes(admin, 0.5) == [f"{tag} 1001"]  # one per statement, its last position
                await store.append("quiet", 1)
                assert await _notes(admin, 0.3) == []
                # The watcher learns of its items from the notifications (its poll is 30 s away).
                got = [(i.position, i.value) async for i in _first(items, 1001)]
                assert got == [(p, p) for p in range(1, 1002)]
                await admin.execute(
                    SQL("UPDATE {} SET expires_at = now() - interval '1 second'").format(
                        Identifier(schema, "kvstore_watchers")
                    )
                )
                await store.append("k", 1002)
                assert await _notes(admin, 0.3) == []  # an expired watcher row asks for nothing
            finally:
                await items.aclose()
        finally:
            await store.clear()
            await store.aclose()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def _first(items: Any, n: int) -> Any:
    """The next ``n`` items of a watch (an async generator)."""
    for _ in range(n):
        yield await items.__anext__()
