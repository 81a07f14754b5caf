"""Review s6 (PostgreSQL database tier): the sweep racing a write that revives an expired key,
a table prefix that ends in ``list_``, cancellation over a dead pooled connection, and the list
writes of several processes at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql

from kvstore.errors import BackendBusyError, BackendUnavailableError, ConfigError, SerializationError
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

pytestmark = [pytest.mark.postgres]


def _with_param(url: str, param: str) -> str:
    return url + ("&" if "?" in url else "?") + param


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A schema of this test's own, dropped afterwards."""
    name = f"kv_r2_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _wait_for_lock_waiters(admin: psycopg.Connection[Any], schema: str, count: int) -> None:
    """Until ``count`` sessions whose statement names ``schema`` wait on a lock."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (f"%{schema}%",),
        ).fetchone()
        if row and row[0] >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} sessions waiting on the lock")


# --- the sweep and a write reviving an expired key ------------------------------------------


def test_a_sweep_racing_writes_that_revive_expired_keys_keeps_the_writes(postgres_url: str, schema: str) -> None:
    """A set and an append that re-create an expired value and list commit while a sweep that chose
    those expired rows waits for them: the sweep must leave the new versions alone. Before the fix
    it deleted them (READ COMMITTED re-checks only the DELETE's own WHERE, and the batch subquery's
    result still named them): both acknowledged writes were gone."""
    with (
        PostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:", max_size=4) as db,
        psycopg.connect(postgres_url, autocommit=True) as admin,
    ):
        db.set("v", "old", ttl=0.001)
        db.append("l", "old")
        db.expire("l", 0.001)
        time.sleep(0.05)
        entries = sql.Identifier(schema, "kvstore_entries")
        with psycopg.connect(postgres_url) as locker, ThreadPoolExecutor(3) as pool:
            # Another session holds both rows a moment (an open transaction), so the order is certain:
            # the writers queue first, then the sweep, which has already chosen the expired rows.
            locker.execute(sql.SQL("SELECT 1 FROM {} WHERE ns = 'p:' FOR UPDATE").format(entries))
            wrote = pool.submit(db.set, "v", "new")
            appended = pool.submit(db.append, "l", "new")
            _wait_for_lock_waiters(admin, schema, 2)
            swept = pool.submit(db.purge_expired)
            _wait_for_lock_waiters(admin, schema, 3)
            locker.rollback()
            assert wrote.result(10) is True
            assert appended.result(10) == 1
            swept.result(10)
        assert db.get("v") == "new"
        assert db.get_range("l", 0, -1) == ["new"]
        assert db.get_length("l") == 1


# --- two table prefixes in one schema --------------------------------------------------------


def test_a_table_prefix_ending_in_list_keeps_to_its_own_items(postgres_url: str, schema: str) -> None:
    """``t_list_`` + ``items`` is ``t_`` + ``list_items``: the first use of prefix ``t_list_`` renamed
    prefix ``t_``'s items table to its own (the version-4 rename of a version-1 table), so ``t_`` failed
    on every list call and ``t_list_`` wrote into the other tenant's items."""
    with PostgresDatabase(postgres_url, schema_name=schema, table_prefix="t_") as a:
        a.append("k", "a1")
        with PostgresDatabase(postgres_url, schema_name=schema, table_prefix="t_list_") as b:
            assert b.get_range("k", 0, -1) == []
            assert b.append("k", "b1") == 1
            assert a.get_range("k", 0, -1) == ["a1"]
            assert a.append("k", "a2") == 2
            assert b.get_range("k", 0, -1) == ["b1"]
            b.delete("k")
            assert a.get_range("k", 0, -1) == ["a1", "a2"]


# --- cancellation ----------------------------------------------------------------------------


async def test_an_append_cancelled_at_each_step_over_a_dead_pooled_connection_leaks_nothing(
    postgres_url: str, schema: str
) -> None:
    """The pool's one connection is killed by the server (``pg_terminate_backend``: a restart does the
    same), then an append is cancelled after 0, 1, 2... loop steps, then 1, 2, 3... ms: while the store
    checks the dead connection, waits for its replacement, runs the statement. Each time a retry with the same id
    writes the item once and promptly. Before the fix a cancel during the check kept the connection
    out of the pool for good: the next call waited out ``pool_timeout`` and raised BackendBusyError."""
    app = f"r2c{uuid.uuid4().hex[:8]}"
    db = AsyncPostgresDatabase(
        _with_param(postgres_url, f"application_name={app}"),
        schema_name=schema,
        key_prefix="c:",
        min_size=1,
        max_size=1,
        pool_timeout=1.0,
    )
    admin = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    try:
        written = ["start"]
        await db.append("l", "start", idempotency_id="start")
        for step in range(200):
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
            )
            await asyncio.sleep(0.06)  # the server's goodbye reaches the pooled socket
            task = asyncio.create_task(db.append("l", step, idempotency_id=f"id-{step}"))
            if step < 40:  # every await point on the loop: 0, 1, 2... steps
                for _ in range(step):
                    await asyncio.sleep(0)
            else:  # then by time, while it waits on the network (a new connection, the statement)
                await asyncio.sleep((step - 40) * 0.001)
            finished = task.done()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BackendUnavailableError):
                await task
            length = await asyncio.wait_for(db.append("l", step, idempotency_id=f"id-{step}"), 3)
            written.append(step)
            assert length == len(written), step
            if finished:
                break
        else:
            raise AssertionError("the append never finished within the steps tried")
        assert await db.get_range("l", 0, -1) == written
    finally:
        await admin.close()
        await db.aclose()


# --- several processes on one list -----------------------------------------------------------


def _writer(url: str, schema: str, writer: int, ops: int, go: Any, out: Any) -> None:
    """Appends and extends, with ids of its own, ids every writer uses, and none; each id'd call made twice."""
    lengths: dict[str, list[int]] = {}
    with PostgresDatabase(url, schema_name=schema, key_prefix="m:", max_size=2) as db:
        go.wait(30)
        for i in range(ops):
            if i % 3 == 0:
                ident = f"w{writer}-{i}"
                for _ in range(2):
                    items = [{"w": writer, "i": i, "j": j} for j in range(3)]
                    lengths.setdefault(ident, []).append(db.extend("l", items, idempotency_id=ident))
            elif i % 3 == 1:
                ident = f"shared-{i}"
                for _ in range(2):
                    item = {"w": writer, "i": i, "j": 0}
                    lengths.setdefault(ident, []).append(db.append("l", item, idempotency_id=ident))
            else:
                db.append("l", {"w": writer, "i": i, "j": 0})
    out.put(lengths)


def _trimmer(url: str, schema: str, go: Any, stop: Any) -> None:
    with PostgresDatabase(url, schema_name=schema, key_prefix="m:", max_size=1) as db:
        go.wait(30)
        while not stop.is_set():
            db.trim("l", -30, -1)
            time.sleep(0.005)


def _expirer(url: str, schema: str, go: Any, stop: Any) -> None:
    # purge_interval=0: every expire also sweeps, so the sweep races the writers re-creating the list.
    with PostgresDatabase(url, schema_name=schema, key_prefix="m:", max_size=1, purge_interval=0) as db:
        go.wait(30)
        while not stop.is_set():
            db.expire("l", 0.01)
            time.sleep(0.03)


@pytest.mark.slow
def test_processes_appending_extending_trimming_and_expiring_one_list(postgres_url: str, schema: str) -> None:
    """3 writer processes (ids of their own, ids shared by all, no id; every id'd call made twice), one
    trimming to the last 30 and one expiring the list (and sweeping) all the time: every id gets one
    length everywhere, the live list is gapless, no item is there twice, each writer's items keep
    their order and an extend's items stay together."""
    with PostgresDatabase(postgres_url, schema_name=schema, key_prefix="m:") as db:
        db.open()  # migrated once, before the processes race to it
    ctx = multiprocessing.get_context("spawn")
    go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(postgres_url, schema, w, 90, go, out)) for w in range(3)]
    others = [
        ctx.Process(target=_trimmer, args=(postgres_url, schema, go, stop)),
        ctx.Process(target=_expirer, args=(postgres_url, schema, go, stop)),
    ]
    for p in writers + others:
        p.start()
    time.sleep(1.0)
    go.set()
    results = [out.get(timeout=120) for _ in writers]
    stop.set()
    for p in writers + others:
        p.join(60)
        assert p.exitcode == 0
    everyone: dict[str, set[int]] = {}
    for lengths in results:
        for ident, got in lengths.items():
            assert len(set(got)) == 1, (ident, got)  # the repeat answered as the first call did
            everyone.setdefault(ident, set()).update(got)
    assert all(len(got) == 1 for got in everyone.values()), everyone
    # The stored rows as they are (the list may have just expired: its rows are still there, or swept).
    with psycopg.connect(postgres_url) as conn:
        entries, items = sql.Identifier(schema, "kvstore_entries"), sql.Identifier(schema, "kvstore_list_items")
        row = conn.execute(
            sql.SQL("SELECT head, length FROM {} WHERE ns = 'm:' AND key = 'l'").format(entries)
        ).fetchone()
        stored = conn.execute(
            sql.SQL("SELECT seq, value::text FROM {} WHERE ns = 'm:' AND key = 'l' ORDER BY seq").format(items)
        ).fetchall()
    if row is None:
        assert stored == []
        return
    head, length = row
    assert [seq for seq, _ in stored] == list(range(head + 1, head + length + 1))  # gapless, nothing left over
    keys = [(item["w"], item["i"], item["j"]) for item in (json.loads(text) for _, text in stored)]
    assert len(set(keys)) == len(keys)
    for w in range(3):
        mine = [(i, j) for ww, i, j in keys if ww == w]
        assert mine == sorted(mine)
    shared = [i for _, i, _ in keys if i % 3 == 1]
    assert len(shared) == len(set(shared))  # a shared id wrote one writer's item, once
    for pos, (w, i, j) in enumerate(keys):
        if i % 3 == 0 and j > 0 and pos > 0:
            assert keys[pos - 1] == (w, i, j - 1)  # an extend's items are consecutive


# --- a password in a URL given to the store directly ----------------------------------------


def _no_fragment(secret: str, text: str) -> None:
    """No 3+ character piece of ``secret`` in ``text``."""
    pieces = {secret[i : i + n] for n in range(3, len(secret) + 1) for i in range(len(secret) - n + 1)}
    leaked = sorted(piece for piece in pieces if piece in text)
    assert not leaked, f"password fragments leaked: {leaked[:5]}"


@pytest.mark.parametrize("password", ["s3cr%zz", "s3/cr#t?@x", "pa$$w@rd", "S3cr%FFt"])
def test_a_store_url_reads_a_raw_special_password_like_the_config_or_refuses_it_quoting_nothing(
    password: str,
) -> None:
    """``PostgresDatabase(url)`` reads the URL's password as the config does (the last ``@`` before a host
    ends it; ``/ # ? @ $ %`` unencoded). Before the fix libpq read it: ``s3cr%zz`` and ``s3/cr#t?@x``
    raised psycopg's ProgrammingError quoting the password, ``pa$$w@rd`` became host ``rd@db.example``
    (in repr and logs), ``%FF`` a bare UnicodeDecodeError."""
    url = f"postgresql://app:{password}@db.example:5432/app?sslmode=verify-full"
    try:
        db = PostgresDatabase(url)
    except ConfigError as exc:  # %FF is no UTF-8: unreadable, as in the config
        assert password == "S3cr%FFt"
        _no_fragment(password, f"{exc} {exc!r} {exc.__cause__} {exc.__context__}")
        return
    assert password != "S3cr%FFt"
    try:
        shown = f"{db!r} {db}"
        assert "host=db.example port=5432 dbname=app user=app" in shown
        _no_fragment(password, shown)
    finally:
        db.close()


def test_a_store_url_with_a_raw_special_password_connects_and_never_prints_it(
    postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The canary role (its password checked by the throwaway server) logs in through ``PostgresDatabase(url)``
    and ``AsyncPostgresDatabase(url)`` with ``/ # ? @ $ %`` in the URL's password, raw; a wrong one is refused
    and neither shows in the error, its cause, repr or the log."""
    if postgres_server is None:
        pytest.skip("needs the throwaway server (the canary role's password is checked there)")
    from tests.fixtures_postgres import CANARY_RIGHT_PASSWORD, CANARY_USER

    special, wrong = "Ca/n#a?r@y$x%zz:[1]", "Wr/o#n?g@Pa$s%zz:[2]"
    schema = f"canary_r2_{uuid.uuid4().hex[:8]}"
    role = sql.Identifier(CANARY_USER)
    postgres_server.psql(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(special)).as_string(None))
    postgres_server.psql(
        sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema), role).as_string(None)
    )
    base = f"127.0.0.1:{postgres_server.port}/postgres"
    try:
        with caplog.at_level(logging.DEBUG):
            with PostgresDatabase(f"postgresql://{CANARY_USER}:{special}@{base}", schema_name=schema) as db:
                db.append("l", "ok")
                assert db.get_range("l", 0, -1) == ["ok"]
                shown = f"{db!r} {db}"

            async def through_async() -> None:
                store = AsyncPostgresDatabase(f"postgresql://{CANARY_USER}:{special}@{base}", schema_name=schema)
                try:
                    assert await store.get_range("l", 0, -1) == ["ok"]
                finally:
                    await store.aclose()

            asyncio.run(through_async())
            bad = PostgresDatabase(f"postgresql://{CANARY_USER}:{wrong}@{base}", schema_name=schema, connect_timeout=1)
            with pytest.raises(BackendUnavailableError) as info:
                bad.get("k")
            bad.close()
        for secret in (special, wrong):
            _no_fragment(secret, f"{shown} {info.value} {info.value!r} {info.value.__cause__} {caplog.text}")
    finally:
        postgres_server.psql(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)).as_string(None))
        postgres_server.psql(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(CANARY_RIGHT_PASSWORD)).as_string(None)
        )


# --- items that are not UTF-8 ----------------------------------------------------------------


def test_extend_json_of_bytes_that_are_not_utf8_is_a_serialization_error(postgres_url: str, schema: str) -> None:
    """`extend_json` items that are not UTF-8 (JSON text is) raise SerializationError naming the key and
    write nothing; before, a bare UnicodeDecodeError escaped the store (no KVStoreError to catch)."""
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("l", "first")
        with pytest.raises(SerializationError) as info:
            db.extend_json("l", [b'"ok"', b'"\xff"'])
        assert info.value.key == "l"
        assert db.get_range("l", 0, -1) == ["first"]
        assert db.append("l", "next") == 2


@pytest.mark.parametrize("bad", [b"{", b"nope", b'"unterminated'], ids=["open-brace", "bare-word", "open-string"])
def test_extend_json_of_text_the_server_refuses_as_json_is_a_serialization_error(
    postgres_url: str, schema: str, bad: bytes
) -> None:
    """UTF-8 `extend_json` items that are not JSON raise SerializationError naming the key and write nothing;
    before, a plain KVStoreError ("PostgreSQL error during append") left the caller no typed error to catch.
    Since session 10 each item is parsed before the round trip, as on every backend (the server's json type
    accepts items no read decodes: tests/test_review_s10_push.py)."""
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("l", "first")
        with pytest.raises(SerializationError, match="is not one JSON document") as info:
            db.extend_json("l", [b'"ok"', bad])
        assert info.value.key == "l"
        assert info.value.operation == "append"
        assert bad.decode() not in str(info.value)  # the item's text is not echoed
        assert db.get_range("l", 0, -1) == ["first"]
        assert db.append("l", "next") == 2


# --- tenants one character apart -------------------------------------------------------------


async def test_tenants_one_character_apart_share_no_item_id_or_watch(postgres_url: str, schema: str) -> None:
    """Stores whose key_prefix, table_prefix or schema differ by one character, on one database: the
    same key and the same idempotency id in each are separate lists and separate ids, and a watcher
    of one sees only its own list's items."""
    other_schema = schema[:-1] + ("x" if schema[-1] != "x" else "y")
    stores = {
        "base": AsyncPostgresDatabase(postgres_url, schema_name=schema, table_prefix="t_", key_prefix="p:"),
        "key_prefix": AsyncPostgresDatabase(postgres_url, schema_name=schema, table_prefix="t_", key_prefix="p;"),
        "table_prefix": AsyncPostgresDatabase(postgres_url, schema_name=schema, table_prefix="u_", key_prefix="p:"),
        "schema": AsyncPostgresDatabase(postgres_url, schema_name=other_schema, table_prefix="t_", key_prefix="p:"),
    }
    try:
        for name, store in stores.items():
            assert await store.append("k", f"{name}-0", idempotency_id="same") == 1
        watch = stores["base"].watch("k", poll_interval=30)
        first = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.3)  # subscribed and registered
        for name, store in stores.items():
            if name != "base":
                assert await store.append("k", f"{name}-1", idempotency_id="same-1") == 2
        await asyncio.sleep(0.3)
        assert not first.done()  # nothing of the others' lists reached the base's watcher
        assert await stores["base"].append("k", "base-1", idempotency_id="same-1") == 2
        item = await asyncio.wait_for(first, 5)
        assert (item.position, item.value) == (1, "base-1")
        await watch.aclose()
        for name, store in stores.items():
            assert await store.get_range("k", 0, -1) == [f"{name}-0", f"{name}-1"]
            assert await store.keys() == ["k"]
    finally:
        for store in stores.values():
            await store.aclose()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other_schema)))


# --- the first call while the pool fills -----------------------------------------------------


async def test_a_first_call_cancelled_or_timed_out_while_the_pool_fills_leaves_a_usable_store(
    postgres_url: str,
) -> None:
    """The store's first call opens its pool and waits for ``min_size`` connections; here the role's
    connection limit keeps the pool short. That call cancelled, then one timing out (``connect_timeout``):
    once the limit is raised the store works. Before the fix psycopg_pool was left unusable for good:
    after the cancel every call raised a bare AssertionError (the pool's half-done wait), after the
    timeout BackendUnavailableError (a pool closed by its failed wait cannot be reopened)."""
    role = f"kv_r2_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
        await admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
        db = AsyncPostgresDatabase(
            postgres_url, user=role, schema_name=role, min_size=3, max_size=3, connect_timeout=0.5
        )
        try:
            first = asyncio.create_task(db.append("l", "lost"))
            await asyncio.sleep(0.3)  # migrated; the pool waits for its third connection
            assert not first.done()
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            with pytest.raises(BackendUnavailableError):  # still short of connections: the wait times out
                await db.append("l", "lost")
            await admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT 10")
            assert await asyncio.wait_for(db.append("l", "ok"), 5) == 1
            assert await db.get_range("l", 0, -1) == ["ok"]
        finally:
            await db.aclose()
            await admin.execute(f"DROP SCHEMA {role} CASCADE")
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")


def test_a_sync_store_whose_pool_could_not_fill_at_first_works_once_it_can(postgres_url: str) -> None:
    """The sync store, the timed-out first wait for ``min_size`` connections (the role's limit): once the
    limit is raised the next call works. Before the fix: "pool ... cannot be reused", for good."""
    role = f"kv_r2_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
        admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
        db = PostgresDatabase(postgres_url, user=role, schema_name=role, min_size=3, max_size=3, connect_timeout=0.5)
        try:
            with pytest.raises(BackendUnavailableError):
                db.append("l", "lost")
            admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT 10")
            assert db.append("l", "ok") == 1
            assert db.get_range("l", 0, -1) == ["ok"]
        finally:
            db.close()
            admin.execute(f"DROP SCHEMA {role} CASCADE")
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


# --- a row lock held by another session ------------------------------------------------------


async def test_list_writes_behind_a_held_row_lock_are_busy_within_the_deadline_and_write_nothing(
    postgres_url: str, schema: str
) -> None:
    """Another session holds the list's entry row (``SELECT ... FOR UPDATE`` in an open transaction):
    append, extend (with and without an id) and trim raise BackendBusyError within the call deadline,
    write nothing; a call waiting for the pool meanwhile is busy too; once the lock goes, the same ids
    write once and positions stay consecutive."""
    db = AsyncPostgresDatabase(
        postgres_url, schema_name=schema, key_prefix="lk:", max_size=2, pool_timeout=0.2, statement_timeout=1.0
    )
    # The blocked calls below hold both connections until lock_timeout (0.8 x statement_timeout = 0.8 s);
    # the pool wait (0.2 s) must end well before that, or a freed connection can serve it (a race in CI).
    try:
        await db.append("l", 0)
        async with await psycopg.AsyncConnection.connect(postgres_url) as locker:
            entries = sql.Identifier(schema, "kvstore_entries")
            await locker.execute(sql.SQL("SELECT 1 FROM {} WHERE ns = 'lk:' FOR UPDATE").format(entries))
            calls = [
                db.append("l", 1, idempotency_id="a"),
                db.extend("l", [2, 3], idempotency_id="e"),
                db.append("l", 9),
                db.trim("l", 1, -1),
            ]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(BackendBusyError):
                    await call
                assert time.monotonic() - started < 1.25  # the call deadline (statement_timeout + 0.25)
            blocked = [asyncio.ensure_future(db.append("l", 9)) for _ in range(2)]
            await asyncio.sleep(0.1)
            with pytest.raises(BackendBusyError):  # both connections wait on the lock: the pool is busy
                await db.get_length("l")
            for task in blocked:
                with pytest.raises(BackendBusyError):
                    await task
            await locker.rollback()
        assert await db.get_range("l", 0, -1) == [0]
        assert await db.append("l", 1, idempotency_id="a") == 2
        assert await db.extend("l", [2, 3], idempotency_id="e") == 4
        assert await db.append("l", 1, idempotency_id="a") == 2
        assert await db.get_range("l", 0, -1) == [0, 1, 2, 3]
    finally:
        await db.aclose()
