"""PostgreSQL schema version 8: the append is one call of ``<p>push`` (`kvstore.postgres._sql.push_function`).

Its fast path (a live list) decides on the newest version of the list's row after waiting for its
lock; everything else runs the version-7 statement (`Queries.push_statement`). What these tests
pin: a row changed while the append waited on its lock (expired, replaced, deleted) is decided as
the row is once the lock is granted; tables of version 7 migrate, and a kvstore of version 7 still
running (it sends `Queries.push_statement` itself) appends beside version-8 processes without a gap
or a duplicate; every schema and table prefix gets its own function, whatever its name holds.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from kvstore import SerializationError, WrongTypeError
from kvstore.postgres import PostgresDatabase
from kvstore.postgres._sql import SCHEMA_VERSION, Queries

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    name = f"push_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(name)))


def _held(url: str, schema: str, key: str, then: str, started: threading.Event, release: threading.Event) -> None:
    """Lock the list's row (FOR UPDATE), wait for ``release``, run ``then`` on it and commit."""
    with psycopg.connect(url) as conn:
        entries = Identifier(schema, "kvstore_entries")
        conn.execute(SQL("SELECT 1 FROM {} WHERE ns = '' AND key = %s FOR UPDATE").format(entries), (key,))
        started.set()
        release.wait(10)
        conn.execute(SQL(then).format(entries=entries, items=Identifier(schema, "kvstore_list_items")), (key,))
        conn.commit()


def _append_behind_a_lock(url: str, schema: str, then: str, call: Any) -> Any:
    """Run ``call`` (an append to list ``l``) while another transaction holds the row's lock and runs ``then``."""
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_held, args=(url, schema, "l", then, started, release))
    holder.start()
    try:
        assert started.wait(10)
        result: list[Any] = []

        def run() -> None:
            try:
                result.append(call())
            except Exception as exc:  # handed to the test below
                result.append(exc)

        appender = threading.Thread(target=run)
        appender.start()
        time.sleep(0.3)
        assert not result  # queued on the row lock, not decided from its snapshot
        release.set()
        appender.join(10)
        return result[0]
    finally:
        release.set()
        holder.join(10)


def test_a_list_that_expires_while_the_append_waits_for_its_lock_starts_again(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
        db.extend("l", ["old-0", "old-1", "old-2"])
        length = _append_behind_a_lock(
            postgres_url,
            schema,
            "UPDATE {entries} SET expires_at = now() - interval '1 second' WHERE ns = '' AND key = %s",
            lambda: db.append("l", "new"),
        )
        assert length == 1
        assert db.get_range("l", 0, -1) == ["new"]
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(
                SQL("SELECT seq, value::text FROM {} WHERE ns = '' AND key = 'l' ORDER BY seq").format(
                    Identifier(schema, "kvstore_list_items")
                )
            ).fetchall()
        assert rows == [(1, '"new"')]  # the expired list's items are gone, positions start at 0


def test_a_list_replaced_by_a_value_while_the_append_waits_is_not_appended_to(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
        db.extend("l", ["a", "b"])
        outcome = _append_behind_a_lock(
            postgres_url,
            schema,
            "UPDATE {entries} SET kind = 'v', value = '\"v\"', length = 0, head = 0 WHERE ns = '' AND key = %s",
            lambda: db.append("l", "c", idempotency_id="one"),
        )
        assert isinstance(outcome, WrongTypeError)
        assert db.get("l") == "v"
        db.delete("l")
        assert db.append("l", "c", idempotency_id="one") == 1  # the refused call recorded no id


def test_a_list_deleted_while_the_append_waits_is_created_anew(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
        db.extend("l", ["a", "b"])
        length = _append_behind_a_lock(
            postgres_url, schema, "DELETE FROM {entries} WHERE ns = '' AND key = %s", lambda: db.append("l", "c")
        )
        assert length == 1
        assert db.get_range("l", 0, -1) == ["c"]


def test_a_trim_while_the_append_waits_moves_where_the_item_goes(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
        db.extend("l", ["a", "b", "c"])
        length = _append_behind_a_lock(
            postgres_url,
            schema,
            # What `trim(l, 1, -1)` does: the front item goes, head moves, the rest keep their seq.
            "WITH f AS (DELETE FROM {items} WHERE ns = '' AND key = 'l' AND seq = 1) "
            "UPDATE {entries} SET head = 1, length = 2 WHERE ns = '' AND key = %s",
            lambda: db.extend("l", ["d", "e"]),
        )
        assert length == 4
        assert db.get_range("l", 0, -1) == ["b", "c", "d", "e"]


def test_extend_json_miscounts_and_bad_json_write_nothing_on_either_path(postgres_url: str, schema: str) -> None:
    """The fast path (a live list) and the full statement (a new list) refuse alike, writing nothing."""
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("live", "a")
        for key in ("live", "new"):
            for items in ([b"1,2"], [b"1", b"2,3"], [b""], [b"[1"], [b'"x\\u0000"', b"{"]):
                with pytest.raises(SerializationError):
                    db.extend_json(key, items)
            assert db.extend_json(key, [b'"\\u0000"', b" 2 "]) == (3 if key == "live" else 2)
            assert db.extend_json(key, [b' {"a" : 1} ']) == (4 if key == "live" else 3)
        assert db.get_range("live", 0, -1) == ["a", "\x00", 2, {"a": 1}]
        assert db.get_range("new", 0, -1) == ["\x00", 2, {"a": 1}]


def _v8_writer(url: str, schema: str, writer: int, n: int, go: Any) -> None:
    with PostgresDatabase(url, schema_name=schema, max_size=2) as db:
        go.wait(30)
        for i in range(n):
            if i % 3 == 0:
                db.append("l", {"w": writer, "i": i}, idempotency_id=f"{writer}-{i}")
            else:
                db.extend("l", [{"w": writer, "i": i}]) if i % 3 == 1 else db.append("l", {"w": writer, "i": i})


def _v7_writer(url: str, schema: str, writer: int, n: int, go: Any) -> None:
    """What a kvstore of schema version 7 sends: `Queries.push_statement`, from the client."""
    statement = Queries.build(schema, "kvstore_").push_statement
    with psycopg.connect(url, autocommit=True) as conn:
        go.wait(30)
        i = 0
        while i < n:
            params = {"ns": "", "key": "l", "n": 1, "id": f"{writer}-{i}", "window": 86400.0}
            try:
                row = conn.execute(statement, {**params, "items": f'[{{"w": {writer}, "i": {i}}}]'}).fetchone()
            except psycopg.errors.UniqueViolation:
                continue  # an id a racing call recorded first: never here (ids are unique per writer)
            assert row is not None
            if row[0] is not None:
                i += 1  # else raced: run it again, as version 7 did


def test_version_7_tables_migrate_and_a_version_7_writer_appends_beside_version_8(
    postgres_url: str, schema: str
) -> None:
    """Tables of version 7 (no function) migrate to 8 on open. Then two version-8 processes and one that
    sends version 7's statement append to one list at once: no gap, no duplicate, each writer's order kept."""
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("l", {"w": -1, "i": 0})
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            SQL("DROP FUNCTION {}(text, text, bigint, json, text, float8)").format(Identifier(schema, "kvstore_push"))
        )
        admin.execute(SQL("UPDATE {} SET version = 7").format(Identifier(schema, "kvstore_meta")))
        with PostgresDatabase(postgres_url, schema_name=schema) as db:
            assert db.append("l", {"w": -1, "i": 1}) == 2  # opens: migrates
        version = admin.execute(SQL("SELECT version FROM {}").format(Identifier(schema, "kvstore_meta")))
        assert version.fetchall() == [(SCHEMA_VERSION,)]
    ctx = multiprocessing.get_context("spawn")
    go, n = ctx.Event(), 150
    procs = [ctx.Process(target=_v8_writer, args=(postgres_url, schema, w, n, go)) for w in (0, 1)]
    procs.append(ctx.Process(target=_v7_writer, args=(postgres_url, schema, 2, n, go)))
    for p in procs:
        p.start()
    time.sleep(1.0)
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with PostgresDatabase(postgres_url, schema_name=schema) as db, psycopg.connect(postgres_url) as conn:
        final = db.get_range("l", 0, -1)
        assert db.get_length("l") == len(final) == 2 + 3 * n
        assert len({(item["w"], item["i"]) for item in final}) == len(final)
        for w in (0, 1, 2):
            assert [item["i"] for item in final if item["w"] == w] == list(range(n))
        seqs = [
            s
            for (s,) in conn.execute(
                SQL("SELECT seq FROM {} WHERE ns = '' AND key = 'l' ORDER BY seq").format(
                    Identifier(schema, "kvstore_list_items")
                )
            )
        ]
        assert seqs == list(range(1, 3 + 3 * n))


@pytest.mark.parametrize("odd", ['we{ir}d"s {x}', "ünï $1 '"])
def test_every_schema_and_prefix_gets_its_own_function(postgres_url: str, odd: str) -> None:
    """Names holding quotes, braces, ``$1``: each prefix's appends go to its own tables and function."""
    prefixes = ("a_", f"{odd[:6]}_")
    try:
        stores = [PostgresDatabase(postgres_url, schema_name=odd, table_prefix=p) for p in prefixes]
        for store in stores:
            store.open()
        try:
            assert stores[0].append("l", "first") == 1
            assert stores[1].extend("l", ["x", "y"]) == 2
            assert stores[0].append("l", "second", idempotency_id="i") == 2
            assert stores[1].append("l", "z", idempotency_id="i") == 3  # an id is per table set
            assert stores[0].get_range("l", 0, -1) == ["first", "second"]
            assert stores[1].get_range("l", 0, -1) == ["x", "y", "z"]
        finally:
            for store in stores:
                store.close()
        with psycopg.connect(postgres_url) as conn:
            names = conn.execute(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = %s AND p.proname LIKE %s ORDER BY 1",
                (odd, "%push"),
            ).fetchall()
        assert names == sorted((f"{p}push",) for p in prefixes)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(odd)))


@pytest.mark.parametrize("name", ["a%sb", "t%(ns)s", "100%"])
def test_a_schema_or_table_prefix_holding_a_percent_sign_is_refused_up_front(postgres_url: str, name: str) -> None:
    """psycopg reads ``%s`` and ``%(x)s`` in a statement's text as parameters, quoted identifiers included: such a
    name used to fail every statement with a driver error (or worse, bind a parameter inside a table name)."""
    from kvstore import ConfigError

    with pytest.raises(ConfigError, match="no %"):
        PostgresDatabase(postgres_url, schema_name=name)
    with pytest.raises(ConfigError, match="no %"):
        PostgresDatabase(postgres_url, table_prefix=name)
