"""Adversarial review of schema version 8's append (`<p>push`, `kvstore.postgres._sql.push_function`).

Real PostgreSQL, several processes each with its own store, a watcher, cancellation, row locks held
past ``lock_timeout``, tenants side by side, a role that did not create the tables, a forked child,
odd values. The six defects it found (two from the append function, four older) are fixed; their tests pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from kvstore import (
    BackendBusyError,
    BackendUnavailableError,
    KVStoreError,
    SerializationError,
    ValueTooLargeError,
    WrongTypeError,
)
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase
from kvstore.postgres._sql import SCHEMA_VERSION, Queries

pytestmark = [pytest.mark.postgres]

ITEMS = "kvstore_list_items"
ENTRIES = "kvstore_entries"


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    name = f"rv10_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(name)))


def _layout(url: str, schema: str, key: str, ns: str = "", prefix: str = "kvstore_") -> tuple[Any, list[int]]:
    """(head, length, kind, live) of the key's entry and its items' seqs, read in one snapshot."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        entry = conn.execute(
            SQL(
                "SELECT head, length, kind, (expires_at IS NULL OR expires_at > now()) "
                "FROM {} WHERE ns = %s AND key = %s"
            ).format(Identifier(schema, f"{prefix}entries")),
            (ns, key),
        ).fetchone()
        seqs = [
            s
            for (s,) in conn.execute(
                SQL("SELECT seq FROM {} WHERE ns = %s AND key = %s ORDER BY seq").format(
                    Identifier(schema, f"{prefix}list_items")
                ),
                (ns, key),
            )
        ]
    return entry, seqs


def _assert_gapless(url: str, schema: str, key: str, ns: str = "", prefix: str = "kvstore_") -> int:
    entry, seqs = _layout(url, schema, key, ns, prefix)
    if entry is None or entry[2] != "l" or not entry[3]:
        return 0
    head, length = entry[0], entry[1]
    assert seqs == list(range(head + 1, head + length + 1)), (head, length, seqs[:5], seqs[-5:])
    return int(length)


def _race(jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]], *, answers: bool = True) -> list[Any]:
    """Run each ``target(*args, go[, out])`` in its own spawned process (its own store), release them all at
    once, and return what each put on ``out`` (one answer per process, in arrival order)."""
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=t, args=(*args, go, out) if answers else (*args, go)) for t, args in jobs]
    for p in procs:
        p.start()
    time.sleep(1.5)  # every process connected: the calls really overlap
    go.set()
    got = [out.get(timeout=60) for _ in procs] if answers else []
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return got


# --- 1. many processes, one list --------------------------------------------------------------


def _mixed_writer(url: str, schema: str, w: int, n: int, go: Any, out: Any) -> None:
    """Every kind of append, each acknowledged one reported as (items, length, shared id or None)."""
    done: list[tuple[list[Any], int, str | None]] = []
    with PostgresDatabase(url, schema_name=schema, max_size=2) as db:
        go.wait(30)
        for k in range(n):
            kind = k % 5
            if kind == 0:
                items: list[Any] = [{"w": w, "k": k}]
                done.append((items, db.append("l", items[0]), None))
            elif kind == 1:
                items = [{"w": w, "k": k, "j": j} for j in range(3)]
                done.append((items, db.extend("l", items), None))
            elif kind == 2:
                items = [{"w": w, "k": k, "j": j} for j in range(2)]
                raw = [b" " + orjson.dumps(item) + b"\n" for item in items]
                length = db.extend_json("l", raw, idempotency_id=f"own-{w}-{k}")
                assert length is not None
                assert db.extend_json("l", raw, idempotency_id=f"own-{w}-{k}") == length  # a retry
                done.append((items, length, None))
            elif kind == 3:
                sid = f"shared-{k}"  # every writer sends this id: one of them applies it
                items = [{"w": w, "k": k, "shared": True}]
                done.append((items, db.append("l", items[0], idempotency_id=sid), sid))
            else:
                sid = f"shared-x-{k}"
                items = [{"w": w, "k": k, "j": j, "shared": True} for j in range(2)]
                done.append((items, db.extend("l", items, idempotency_id=sid), sid))
    out.put((w, done))


def _watch_all(url: str, schema: str, want: int, seen: list[Any], stop: threading.Event) -> None:
    with PostgresDatabase(url, schema_name=schema, max_size=2) as db:
        it = db.watch("l", start=0, poll_interval=0.5)
        try:
            for item in it:
                seen.append(item)
                if len(seen) >= want or stop.is_set():
                    break
        finally:
            it.close()


def test_many_processes_mixed_appends_shared_ids_and_a_watcher(postgres_url: str, schema: str) -> None:
    """Four processes, every kind of append, some ids sent by all of them at once: positions gapless,
    every acknowledged write at the positions its length says, each shared id applied once and
    answered alike to every caller, and a watcher that saw every item in order."""
    writers, n = 4, 60
    per_writer_own = sum(1 if k % 5 == 0 else 3 if k % 5 == 1 else 2 if k % 5 == 2 else 0 for k in range(n))
    shared = sum(1 if k % 5 == 3 else 2 if k % 5 == 4 else 0 for k in range(n))
    total = writers * per_writer_own + shared
    with PostgresDatabase(postgres_url, schema_name=schema):
        pass  # tables created before the watcher and the writers race to
    seen: list[Any] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_all, args=(postgres_url, schema, total, seen, stop))
    watcher.start()
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_mixed_writer, args=(postgres_url, schema, w, n, go, out)) for w in range(writers)]
    try:
        for p in procs:
            p.start()
        time.sleep(1.5)
        go.set()
        results = dict(out.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        watcher.join(30)
    finally:
        stop.set()
        watcher.join(5)
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        final = db.get_range("l", 0, -1)
    assert _assert_gapless(postgres_url, schema, "l") == len(final) == total
    for w, done in results.items():
        for items, length, sid in done:
            got = final[length - len(items) : length]
            if sid is None:
                assert got == items
            else:
                assert [{**x, "w": 0} for x in got] == [{**x, "w": 0} for x in items]  # some writer's
        own = [(x["k"], x.get("j", 0)) for x in final if x["w"] == w and not x.get("shared")]
        assert own == sorted(own)
        assert len(own) == per_writer_own
    lengths: dict[str, set[int]] = {}
    for done in results.values():
        for _, length, sid in done:
            if sid is not None:
                lengths.setdefault(sid, set()).add(length)
    assert all(len(v) == 1 for v in lengths.values())  # every caller of one id got the same length
    assert [p for p, _ in seen] == list(range(total))
    assert [v for _, v in seen] == final


def _chaos_writer(url: str, schema: str, w: int, n: int, go: Any, out: Any) -> None:
    acked = refused = 0
    with PostgresDatabase(url, schema_name=schema, max_size=2) as db:
        go.wait(30)
        for k in range(n):
            try:
                if k % 3 == 0:
                    db.append("l", {"w": w, "k": k}, idempotency_id=f"{w}-{k}")
                elif k % 3 == 1:
                    db.extend("l", [{"w": w, "k": k, "j": 0}, {"w": w, "k": k, "j": 1}])
                else:
                    db.extend_json("l", [orjson.dumps({"w": w, "k": k})])
                acked += 1
            except WrongTypeError:
                refused += 1  # the chaos process set a value there
    out.put((w, acked, refused))


def _check_snapshot(url: str, schema: str) -> None:
    """In one snapshot: a live list's seqs are gapless, no item twice, each writer's items in order."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        entry = conn.execute(
            SQL("SELECT head, length, kind, (expires_at IS NULL OR expires_at > now()) FROM {} WHERE key = 'l'").format(
                Identifier(schema, ENTRIES)
            )
        ).fetchone()
        rows = conn.execute(
            SQL("SELECT seq, value::text FROM {} WHERE key = 'l' ORDER BY seq").format(Identifier(schema, ITEMS))
        ).fetchall()
    if entry is None or entry[2] != "l" or not entry[3]:
        return
    head, length = entry[0], entry[1]
    assert [s for s, _ in rows] == list(range(head + 1, head + length + 1))
    values = [orjson.loads(v) for _, v in rows]
    keys = [(v["w"], v["k"], v.get("j", 0)) for v in values]
    assert len(set(keys)) == len(keys)
    for w in {v["w"] for v in values}:
        mine = [(k, j) for ww, k, j in keys if ww == w]
        assert mine == sorted(mine)


def test_appenders_racing_trim_expire_delete_and_set_keep_the_list_gapless(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=3) as db:
        db.append("l", {"w": -1, "k": 0})
        ctx = multiprocessing.get_context("spawn")
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_chaos_writer, args=(postgres_url, schema, w, 150, go, out)) for w in range(3)]
        for p in procs:
            p.start()
        time.sleep(1.5)
        go.set()
        step = 0
        while any(p.is_alive() for p in procs) and step < 2000:
            step += 1
            action = step % 7
            try:
                if action == 0:
                    db.trim("l", 2, -1)
                elif action == 1:
                    db.trim("l", 0, -3)  # from the tail: new items then number from the new end
                elif action == 2:
                    db.expire("l", 0.01)
                elif action == 3 and step % 21 == 3:
                    db.set("l", "a value")
                    time.sleep(0.005)
                    db.delete("l")
                elif action == 4 and step % 28 == 4:
                    db.delete("l")
            except WrongTypeError:
                pass
            _check_snapshot(postgres_url, schema)
            time.sleep(0.003)
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert sum(a for _, a, _ in results) > 0
        _check_snapshot(postgres_url, schema)
        db.expire("l", None)
        length = _assert_gapless(postgres_url, schema, "l")
        assert db.get_length("l") == length == len(db.get_range("l", 0, -1))


# --- 2. idempotency window edges -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["fast", "statement"])
def test_an_id_older_than_the_window_applies_again_then_answers_its_new_length(
    postgres_url: str, schema: str, path: str
) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, idempotency_window=0.6) as db:
        assert db.append("l", "a", idempotency_id="i") == 1
        assert db.append("l", "a", idempotency_id="i") == 1
        if path == "statement":
            db.expire("l", 0.05)  # the next call finds no live list: `push_statement` runs
        time.sleep(0.8)
        again = db.extend("l", ["b", "c"], idempotency_id="i")
        assert again == (2 if path == "statement" else 3)
        assert db.append("l", "d", idempotency_id="i") == again  # the new record answers now
        assert db.get_range("l", 0, -1) == (["b", "c"] if path == "statement" else ["a", "b", "c"])
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(
                SQL("SELECT length FROM {} WHERE key = 'l' AND id = 'i'").format(Identifier(schema, "kvstore_ids"))
            ).fetchall()
        assert rows == [(again,)]  # the stale record was replaced, not duplicated


def test_a_miscounted_or_refused_append_with_an_id_records_no_id(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("live", 0)
        db.set("value", "v")
        for key in ("live", "new"):
            for bad in ([b"1,2", b"3"], [b"1", b"2", b"3,4"], [b"[1", b"2]"]):
                with pytest.raises(SerializationError):
                    db.extend_json(key, bad, idempotency_id="i")
            with pytest.raises(SerializationError):
                db.extend_json(key, [b"{"], idempotency_id="i")
            assert db.extend_json(key, [b"7", b"8"], idempotency_id="i") == (3 if key == "live" else 2)
        with pytest.raises(WrongTypeError):
            db.append("value", 1, idempotency_id="j")
        db.delete("value")
        assert db.append("value", 1, idempotency_id="j") == 1
        assert db.get_range("live", 0, -1) == [0, 7, 8]


def test_a_late_retry_after_the_list_was_deleted_and_grown_again_writes_nothing(postgres_url: str, schema: str) -> None:
    """DESIGN: deleting a list does not forget its ids; the retry arrives when a new list is live (fast path)."""
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        assert db.extend("l", ["a", "b"], idempotency_id="late") == 2
        db.delete("l")
        db.extend("l", ["x", "y", "z"])
        assert db.extend("l", ["a", "b"], idempotency_id="late") == 2
        db.set("l", "value")
        assert db.append("l", "a", idempotency_id="late") == 2  # answered before the kind is looked at
        assert db.get("l") == "value"


def _same_id(url: str, schema: str, w: int, go: Any, out: Any) -> None:
    with PostgresDatabase(url, schema_name=schema, max_size=1) as db:
        go.wait(30)
        out.put([db.extend("l", [w, w], idempotency_id=f"r{r}") for r in range(40)])


def test_one_id_sent_by_many_processes_at_once_is_applied_once(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("l", "first")  # a live list: every call takes the fast path first
        answers = _race([(_same_id, (postgres_url, schema, w)) for w in range(4)])
        assert all(a == answers[0] for a in answers)
        assert answers[0] == list(range(3, 3 + 2 * 40, 2))
        final = db.get_range("l", 0, -1)
        assert len(final) == 81
        assert all(final[i] == final[i + 1] for i in range(1, 81, 2))  # each pair from one writer
        _assert_gapless(postgres_url, schema, "l")


# --- 3. cancellation -----------------------------------------------------------------------------


def test_appends_cancelled_at_their_await_leave_a_consistent_list_and_an_id_writes_once(
    postgres_url: str, schema: str
) -> None:
    """Extends of 400 items (about 1.5 ms each here) cancelled after 0-2.7 ms: some before they were sent,
    some whose statement ran to the end on the server anyway, some in between. The list stays consistent,
    each extend's items stay together, and retrying every id leaves each extend exactly once."""
    size, rounds = 400, 100

    def batch(i: int) -> list[str]:
        return [f"{i}-{j}" for j in range(size)]

    async def main() -> None:
        async with AsyncPostgresDatabase(postgres_url, schema_name=schema, max_size=3) as db:
            await db.append("l", "seed")
            cancelled = 0
            for i in range(rounds):
                try:
                    await asyncio.wait_for(db.extend("l", batch(i), idempotency_id=f"c{i}"), (i % 10) * 0.0003)
                except TimeoutError:
                    cancelled += 1
            assert cancelled > 0
            await asyncio.sleep(0.3)  # a statement the client stopped waiting for may still finish
            length = await db.get_length("l")
            assert len(await db.get_range("l", 0, -1)) == length
            assert (length - 1) % size == 0  # whole extends only
            for i in range(rounds):  # every id retried
                got = await db.extend("l", batch(i), idempotency_id=f"c{i}")
                assert (got - 1) % size == 0
                assert (await db.get_range("l", got - size, got - 1)) == batch(i)
            items = await db.get_range("l", 0, -1)
            assert items[0] == "seed"
            assert len(items) == 1 + rounds * size  # each exactly once
            assert await db.append("l", "after") == 2 + rounds * size
            # The pool survived the cancellations: all three connections still serve.
            done = await asyncio.wait_for(asyncio.gather(*(db.append("m", i) for i in range(30))), 10)
            assert sorted(done) == list(range(1, 31))

    asyncio.run(main())
    _assert_gapless(postgres_url, schema, "l")


# --- 4. load: row lock, statement_timeout, pool ----------------------------------------------------


def _hold_row(url: str, schema: str, key: str, started: threading.Event, release: threading.Event) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(SQL("SELECT 1 FROM {} WHERE key = %s FOR UPDATE").format(Identifier(schema, ENTRIES)), (key,))
        started.set()
        release.wait(20)
        conn.rollback()


def _with_row_held(url: str, schema: str, key: str, call: Any) -> Any:
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_row, args=(url, schema, key, started, release))
    holder.start()
    try:
        assert started.wait(10)
        try:
            return call()
        except Exception as exc:
            return exc
    finally:
        release.set()
        holder.join(10)


@pytest.mark.parametrize("url_lock_timeout", [False, True])
def test_a_row_lock_held_past_the_deadline_is_busy_and_writes_nothing(
    postgres_url: str, schema: str, url_lock_timeout: bool
) -> None:
    """lock_timeout (55P03), or statement_timeout inside the function (57014) when the URL's own
    lock_timeout is longer: `BackendBusyError`, nothing half-written, the id free for the retry."""
    url = postgres_url
    if url_lock_timeout:
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}options=-c%20lock_timeout%3D30000"
    with PostgresDatabase(url, schema_name=schema, statement_timeout=0.6, max_size=2) as db:
        db.extend("l", ["a", "b"])
        t0 = time.monotonic()
        outcome = _with_row_held(url, schema, "l", lambda: db.extend("l", ["c", "d"], idempotency_id="x"))
        assert isinstance(outcome, BackendBusyError), repr(outcome)
        assert time.monotonic() - t0 < 5
        assert db.get_range("l", 0, -1) == ["a", "b"]
        assert db.extend("l", ["c", "d"], idempotency_id="x") == 4
        assert db.extend("l", ["c", "d"], idempotency_id="x") == 4
    _assert_gapless(postgres_url, schema, "l")


def test_an_exhausted_pool_is_busy_and_the_queued_append_lands_once(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=1, min_size=1, pool_timeout=0.5) as db:
        db.append("l", "a")
        started, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=_hold_row, args=(postgres_url, schema, "l", started, release))
        holder.start()
        assert started.wait(10)
        first: list[Any] = []
        blocked = threading.Thread(target=lambda: first.append(db.append("l", "b", idempotency_id="b")))
        blocked.start()  # takes the only connection and queues on the row lock
        time.sleep(0.3)
        try:
            with pytest.raises(BackendBusyError):
                db.append("l", "c", idempotency_id="c")
        finally:
            release.set()
            holder.join(10)
            blocked.join(10)
        assert first == [2]
        assert db.append("l", "c", idempotency_id="c") == 3
        assert db.get_range("l", 0, -1) == ["a", "b", "c"]


# --- 5. tenants and migration ----------------------------------------------------------------------


def _tenant_writer(url: str, schema: str, prefix: str, go: Any) -> None:
    with PostgresDatabase(url, schema_name=schema, key_prefix=prefix, max_size=1) as db:
        go.wait(30)
        for i in range(100):
            if i % 2:
                db.append("l", {"p": prefix, "i": i}, idempotency_id=f"id{i}")
            else:
                db.extend("l", [{"p": prefix, "i": i}])


def test_two_key_prefixes_one_table_set_stay_apart_under_concurrent_appends(postgres_url: str, schema: str) -> None:
    prefixes = ("t1:", "t1:x")  # one a prefix of the other's text
    with PostgresDatabase(postgres_url, schema_name=schema):
        pass
    _race([(_tenant_writer, (postgres_url, schema, p)) for p in prefixes], answers=False)
    for prefix in prefixes:
        with PostgresDatabase(postgres_url, schema_name=schema, key_prefix=prefix) as db:
            assert db.get_range("l", 0, -1) == [{"p": prefix, "i": i} for i in range(100)]
        _assert_gapless(postgres_url, schema, "l", ns=prefix)


def _v7_statement_writer(url: str, schema: str, n: int, go: Any, out: Any) -> None:
    statement = Queries.build(schema, "kvstore_").push_statement
    lengths = []
    with psycopg.connect(url, autocommit=True) as conn:
        go.wait(30)
        i = 0
        while i < n:
            params = {"ns": "", "key": "l", "n": 1, "id": f"v7-{i}", "window": 86400.0, "items": f'["v7-{i}"]'}
            row = conn.execute(statement, params).fetchone()
            assert row is not None
            if row[0] is not None:
                lengths.append(row[0])
                i += 1
    out.put(lengths)


def _opener(url: str, schema: str, go: Any, out: Any) -> None:
    go.wait(30)
    with PostgresDatabase(url, schema_name=schema, max_size=1) as db:
        out.put([db.append("l", f"v8-{os.getpid()}-{i}") for i in range(30)])


def test_version_7_tables_migrate_while_a_version_7_writer_appends(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("l", "seed")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            SQL("DROP FUNCTION {}(text, text, bigint, json, text, float8)").format(Identifier(schema, "kvstore_push"))
        )
        admin.execute(SQL("UPDATE {} SET version = 7").format(Identifier(schema, "kvstore_meta")))
    jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [(_v7_statement_writer, (postgres_url, schema, 200))]
    answers = _race(jobs + [(_opener, (postgres_url, schema))] * 2)
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        final = db.get_range("l", 0, -1)
    assert len(final) == 1 + 200 + 60 == len(set(final))
    assert [x for x in final if x.startswith("v7-")] == [f"v7-{i}" for i in range(200)]
    for lengths in answers:
        assert lengths == sorted(lengths)
        assert len(set(lengths)) == len(lengths)
    assert sorted(x for a in answers for x in a) == list(range(2, 2 + 260))
    _assert_gapless(postgres_url, schema, "l")
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute(SQL("SELECT version FROM {}").format(Identifier(schema, "kvstore_meta"))).fetchall()
    assert version == [(SCHEMA_VERSION,)]


# --- 6. privileges -----------------------------------------------------------------------------------


@pytest.fixture
def dml_role(postgres_url: str, schema: str) -> Iterator[str]:
    """A role that may read and write the schema's tables but created none of them (no CREATE)."""
    role = f"rv10_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        if not conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()[
            0
        ]:
            pytest.skip("cannot create a role on this server")
        conn.execute(SQL("CREATE ROLE {} LOGIN").format(Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))
            conn.execute(SQL("DROP OWNED BY {}").format(Identifier(role)))
            conn.execute(SQL("DROP ROLE {}").format(Identifier(role)))


def _as(url: str, role: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["user"] = role
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **info)


def _grant_dml(url: str, schema: str, role: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL("GRANT USAGE ON SCHEMA {} TO {}").format(Identifier(schema), Identifier(role)))
        conn.execute(
            SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                Identifier(schema), Identifier(role)
            )
        )


def test_a_role_that_did_not_create_the_tables_appends_through_the_function(
    postgres_url: str, schema: str, dml_role: str
) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("l", "owner")
    _grant_dml(postgres_url, schema, dml_role)
    try:
        with PostgresDatabase(_as(postgres_url, dml_role), schema_name=schema) as db:
            assert db.append("l", "dml") == 2
            assert db.extend("l", ["x", "y"], idempotency_id="i") == 4
            assert db.extend("l", ["x", "y"], idempotency_id="i") == 4
            assert db.append("new", "n") == 1  # the statement path too
            assert db.get_range("l", 0, -1) == ["owner", "dml", "x", "y"]
    except psycopg.OperationalError as exc:  # pragma: no cover - a server demanding a password
        pytest.skip(f"cannot log in as a new role here: {exc}")


def test_a_role_without_create_opening_version_7_tables_fails_clearly(
    postgres_url: str, schema: str, dml_role: str
) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("l", "owner")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            SQL("DROP FUNCTION {}(text, text, bigint, json, text, float8)").format(Identifier(schema, "kvstore_push"))
        )
        admin.execute(SQL("UPDATE {} SET version = 7").format(Identifier(schema, "kvstore_meta")))
    _grant_dml(postgres_url, schema, dml_role)
    t0 = time.monotonic()
    store = PostgresDatabase(_as(postgres_url, dml_role), schema_name=schema, statement_timeout=2)
    with pytest.raises(KVStoreError) as info:
        store.open()  # migrates: refused
    store.close()
    assert not isinstance(info.value, BackendUnavailableError)  # not an outage: no failover
    assert time.monotonic() - t0 < 10
    assert "permission" in str(info.value).lower() or "privilege" in str(info.value).lower(), str(info.value)
    with PostgresDatabase(postgres_url, schema_name=schema) as db:  # the owner migrates it
        assert db.get_range("l", 0, -1) == ["owner"]
        assert db.append("l", "y") == 2


# --- 7. fork -------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_appends_with_its_own_connections(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
        db.append("l", "parent-0")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                for i in range(50):
                    db.append("l", f"child-{i}", idempotency_id=f"c{i}")
                code = 0
            finally:
                os._exit(code)
        for i in range(1, 51):
            db.append("l", f"parent-{i}")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        final = db.get_range("l", 0, -1)
        assert len(final) == 101 == db.get_length("l")
        assert [x for x in final if x.startswith("child")] == [f"child-{i}" for i in range(50)]
        assert [x for x in final if x.startswith("parent")] == [f"parent-{i}" for i in range(51)]
        assert db.append("l", "again", idempotency_id="c7") == [x for x in final].index("child-7") + 1
    _assert_gapless(postgres_url, schema, "l")


# --- 8. values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["fast", "statement"])
def test_odd_values_round_trip_on_both_paths(postgres_url: str, schema: str, path: str) -> None:
    limit = 4096
    with PostgresDatabase(postgres_url, schema_name=schema, max_value_bytes=limit) as db:
        keys = ["ünï:ключ:🔑", "100%", "%s%(ns)s", "a'b\"c\\d", " "]
        deep: Any = "bottom"
        for _ in range(200):
            deep = [deep]
        exact = "x" * (limit - 2)  # its JSON text is exactly the limit
        values = ["\x00", "a\x00b", {"\x00k": "\u2028"}, deep, exact, 1e16, -0.0, 2**63 - 1, None, ""]
        for key in keys:
            if path == "fast":
                db.append(key, "first")
            expected = ["first"] if path == "fast" else []
            for v in values:
                db.append(key, v)
                expected.append(v)
            db.extend(key, values)
            expected += values
            with pytest.raises(ValueTooLargeError):
                db.append(key, exact + "y")
            with pytest.raises(ValueTooLargeError):
                db.extend(key, ["ok", exact + "y"])
            assert db.get_range(key, 0, -1) == expected
            assert db.get_length(key) == len(expected)
        assert sorted(db.keys()) == sorted(keys)


def test_an_extend_of_ten_thousand_items_is_one_atomic_call(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        assert db.extend("big", range(10_000)) == 10_000
        assert db.extend("big", range(10_000), idempotency_id="big") == 20_000
        assert db.extend("big", range(10_000), idempotency_id="big") == 20_000
        assert db.extend_json("big", [b"%d" % i for i in range(10_000)]) == 30_000
        assert db.get_range("big", 9_998, 10_001) == [9_998, 9_999, 0, 1]
        assert db.get_range("big", -1, -1) == [9_999]
    assert _assert_gapless(postgres_url, schema, "big") == 30_000


def test_extend_json_items_that_only_join_into_n_documents_are_refused(postgres_url: str, schema: str) -> None:
    """DESIGN/`extend_json`: an item that is not one JSON document raises SerializationError and nothing
    is written, on every backend. ``b"1,2"``, ``b"[3"`` and ``b"4]"`` are three non-documents whose
    join ``[1,2,[3,4]]`` holds three elements."""
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        db.append("live", 0)
        for key in ("live", "new"):
            with pytest.raises(SerializationError):
                db.extend_json(key, [b"1,2", b"[3", b"4]"])
        assert db.get_range("live", 0, -1) == [0]
        assert db.get_length("new") == 0


@pytest.mark.parametrize("window", [1e12, float("inf")])
def test_a_huge_idempotency_window_is_refused_up_front_or_works(postgres_url: str, schema: str, window: float) -> None:
    try:
        db = PostgresDatabase(postgres_url, schema_name=schema, idempotency_window=window)
    except (ValueError, KVStoreError):
        return  # refused up front: fine
    with db:
        assert db.append("l", 1, idempotency_id="x") == 1
        assert db.append("l", 1, idempotency_id="x") == 1


@pytest.mark.parametrize("with_id", [False, True])
def test_an_append_cancelled_while_queued_on_a_row_lock_never_lands_after_the_next_one(
    postgres_url: str, schema: str, with_id: bool
) -> None:
    """Cancelled while its statement waits on the list's row lock: the statement may still run
    (outcome unknown), but never after the same store's next append (each writer's order kept),
    and with an id the retry writes it exactly once."""

    async def main() -> list[Any]:
        async with AsyncPostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
            await db.append("l", "seed")
            started, release = threading.Event(), threading.Event()
            holder = threading.Thread(target=_hold_row, args=(postgres_url, schema, "l", started, release))
            holder.start()
            try:
                assert started.wait(10)
                ident = "a-id" if with_id else None
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(db.append("l", "a", idempotency_id=ident), 0.2)
                threading.Timer(0.4, release.set).start()
                if with_id:
                    await db.append("l", "a", idempotency_id=ident)  # the retry
                await db.append("l", "b")
            finally:
                release.set()
                await asyncio.to_thread(holder.join, 10)
            await asyncio.sleep(0.5)
            return await db.get_range("l", 0, -1)

    final = asyncio.run(main())
    assert final in (["seed", "a", "b"], ["seed", "b"]) if not with_id else final == ["seed", "a", "b"]
    _assert_gapless(postgres_url, schema, "l")


def _trimmed_writer(url: str, schema: str, w: int, n: int, go: Any) -> None:
    with PostgresDatabase(url, schema_name=schema, max_size=1) as db:
        go.wait(30)
        for k in range(n):
            if k % 2:
                db.extend("l", [{"w": w, "k": k, "j": 0}, {"w": w, "k": k, "j": 1}], idempotency_id=f"{w}-{k}")
            else:
                db.append("l", {"w": w, "k": k, "j": 0})


def test_a_watcher_keeps_absolute_positions_while_the_front_is_trimmed(postgres_url: str, schema: str) -> None:
    """Writers in three processes, `trim` from the front meanwhile: every item the watcher yields sits at the
    position the table gives it (seq - 1), positions only grow, and every item still there was yielded."""
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
        db.append("l", {"w": -1, "k": 0, "j": 0})
        seen: list[Any] = []
        stop = threading.Event()

        def watch() -> None:
            with PostgresDatabase(postgres_url, schema_name=schema, max_size=1) as wdb:
                it = wdb.watch("l", start=0, poll_interval=0.2)
                try:
                    for item in it:
                        seen.append(item)
                        if stop.is_set() and item.value == {"w": -2, "k": 0, "j": 0}:
                            break
                finally:
                    it.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        ctx = multiprocessing.get_context("spawn")
        go = ctx.Event()
        procs = [ctx.Process(target=_trimmed_writer, args=(postgres_url, schema, w, 80, go)) for w in range(3)]
        for p in procs:
            p.start()
        time.sleep(1.5)
        go.set()
        while any(p.is_alive() for p in procs):
            # Never down to empty: an emptied list is deleted, and the next one numbers from 0 again
            # (docs/watch.md), which is not what this test is about. Only this loop removes items.
            if db.get_length("l") > 6:
                db.trim("l", 3, -1)
            time.sleep(0.01)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        stop.set()
        db.append("l", {"w": -2, "k": 0, "j": 0})
        watcher.join(30)
        assert not watcher.is_alive()
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(
                SQL("SELECT seq - 1, value::text FROM {} WHERE key = 'l' ORDER BY seq").format(
                    Identifier(schema, ITEMS)
                )
            ).fetchall()
    table = {pos: orjson.loads(v) for pos, v in rows}
    positions = [p for p, _ in seen]
    assert positions == sorted(set(positions))
    for pos, value in seen:
        if pos in table:
            assert table[pos] == value
    assert all((pos, value) in seen for pos, value in table.items())
    _assert_gapless(postgres_url, schema, "l")
    per_writer: dict[int, list[tuple[int, int]]] = {}
    for _, v in seen:
        per_writer.setdefault(v["w"], []).append((v["k"], v["j"]))
    assert all(v == sorted(v) and len(v) == len(set(v)) for v in per_writer.values())


@pytest.mark.parametrize("state", ["expired list", "value"])
def test_a_row_lock_held_on_the_statement_path_is_busy_and_writes_nothing(
    postgres_url: str, schema: str, state: str
) -> None:
    """The fast path finds no live list (an expired list, a value): `push_statement` waits on the lock."""
    with PostgresDatabase(postgres_url, schema_name=schema, statement_timeout=0.6, max_size=2) as db:
        if state == "value":
            db.set("l", "v")
        else:
            db.extend("l", ["old"])
            db.expire("l", 0.05)
            time.sleep(0.1)
        t0 = time.monotonic()
        outcome = _with_row_held(postgres_url, schema, "l", lambda: db.append("l", "new", idempotency_id="x"))
        assert isinstance(outcome, BackendBusyError), repr(outcome)
        assert time.monotonic() - t0 < 5
        if state == "value":
            assert db.get("l") == "v"
            with pytest.raises(WrongTypeError):
                db.append("l", "new", idempotency_id="x")
        else:
            assert db.get_length("l") == 0
            assert db.append("l", "new", idempotency_id="x") == 1
            assert db.append("l", "new", idempotency_id="x") == 1
            assert db.get_range("l", 0, -1) == ["new"]
            _assert_gapless(postgres_url, schema, "l")


@pytest.mark.parametrize("path", ["fast", "statement"])
def test_items_of_several_megabytes_append_on_both_paths(postgres_url: str, schema: str, path: str) -> None:
    big = "é" * (3 << 20)  # 6 MiB of UTF-8
    with PostgresDatabase(postgres_url, schema_name=schema, max_value_bytes=8 << 20) as db:
        if path == "fast":
            db.append("l", 0)
        base = 1 if path == "fast" else 0
        assert db.append("l", big) == base + 1
        assert db.extend("l", [big, {"b": big}], idempotency_id="b") == base + 3
        assert db.extend("l", [big, {"b": big}], idempotency_id="b") == base + 3
        assert db.get_range("l", base, -1) == [big, big, {"b": big}]


def test_hundreds_of_concurrent_tasks_on_one_async_store_get_distinct_lengths(postgres_url: str, schema: str) -> None:
    async def main() -> None:
        async with AsyncPostgresDatabase(postgres_url, schema_name=schema, max_size=3, pool_timeout=10) as db:

            async def one(i: int) -> int:
                if i % 3 == 0:
                    return await db.append("l", i, idempotency_id=f"t{i}")
                if i % 3 == 1:
                    return await db.extend("l", [i, i])
                got = await db.extend_json("l", [b"%d" % i])
                assert got is not None
                return got

            lengths = await asyncio.gather(*(one(i) for i in range(300)))
            final = await db.get_range("l", 0, -1)
            assert len(final) == 400 == max(lengths)
            for i, length in enumerate(lengths):
                n = 2 if i % 3 == 1 else 1
                assert final[length - n : length] == [i] * n
            again = await asyncio.gather(*(db.append("l", -1, idempotency_id=f"t{i}") for i in range(0, 300, 3)))
            assert list(again) == [lengths[i] for i in range(0, 300, 3)]

    asyncio.run(main())
    _assert_gapless(postgres_url, schema, "l")


def test_concurrent_appends_under_a_serializable_default_isolation_all_land(postgres_url: str, schema: str) -> None:
    sep = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{sep}options=-c%20default_transaction_isolation%3Dserializable"
    errors: list[Exception] = []
    with PostgresDatabase(url, schema_name=schema, max_size=4) as db:
        db.append("l", "seed")

        def writer(w: int) -> None:
            for k in range(40):
                try:
                    db.append("l", [w, k], idempotency_id=f"{w}-{k}")
                except BackendBusyError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        length = db.get_length("l")
    assert _assert_gapless(postgres_url, schema, "l") == length  # consistent either way
    assert errors == []
    assert length == 161


@pytest.mark.parametrize("item", [b'"\\ud800"', b"1e400", b"[" * 1100 + b"]" * 1100])
@pytest.mark.parametrize("path", ["fast", "statement"])
def test_extend_json_never_leaves_a_list_no_read_can_decode(
    postgres_url: str, schema: str, item: bytes, path: str
) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        if path == "fast":
            db.append("l", "before")
        with contextlib.suppress(SerializationError):  # refused up front, as on SQLite: fine
            db.extend_json("l", [item])
        db.get_range("l", 0, -1)  # the list stays readable


def test_extend_json_takes_one_memoryview_item_as_it_takes_two(postgres_url: str, schema: str) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        assert db.extend_json("l", [memoryview(b"1"), memoryview(b"2")]) == 2
        assert db.extend_json("l", [memoryview(b"3")]) == 3


def test_deletes_and_clears_racing_appends_leave_no_orphan_item(postgres_url: str, schema: str) -> None:
    """An orphan item (no entry row) would collide with the next list at its key (items' primary key)."""
    stop = threading.Event()
    failures: list[BaseException] = []
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=6, key_prefix="o:") as db:

        def writer(w: int) -> None:
            k = 0
            while not stop.is_set():
                k += 1
                try:
                    key = f"k{k % 4}"
                    if k % 2:
                        db.extend(key, [w, k], idempotency_id=f"{w}-{k}")
                    else:
                        db.append(key, [w, k])
                except Exception as exc:  # any error here is a defect
                    failures.append(exc)
                    return

        def chaos() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 5 == 0:
                        db.clear()
                    elif i % 5 == 1:
                        db.expire(f"k{i % 4}", 0.001)
                    else:
                        db.delete(f"k{i % 4}")
                except Exception as exc:
                    failures.append(exc)
                    return
                time.sleep(0.002)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + [threading.Thread(target=chaos)]
        for t in threads:
            t.start()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(30)
        assert failures == []
        with psycopg.connect(postgres_url) as conn:
            orphans = conn.execute(
                SQL(
                    "SELECT count(*) FROM {items} i WHERE NOT EXISTS "
                    "(SELECT 1 FROM {entries} e WHERE e.ns = i.ns AND e.key = i.key AND e.kind = 'l')"
                ).format(items=Identifier(schema, ITEMS), entries=Identifier(schema, ENTRIES))
            ).fetchone()
        assert orphans == (0,)
        for k in range(4):
            _assert_gapless(postgres_url, schema, f"k{k}", ns="o:")
            db.append(f"k{k}", "end")
            _assert_gapless(postgres_url, schema, f"k{k}", ns="o:")


@pytest.mark.parametrize("signal", ["pg_cancel_backend", "pg_terminate_backend"])
def test_an_append_whose_server_process_is_cancelled_or_killed_mid_wait_lands_at_most_once(
    postgres_url: str, schema: str, signal: str
) -> None:
    """The appender's server process is signalled while its function waits on the list's row lock."""
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=2, statement_timeout=5) as db:
        db.append("l", "seed")
        started, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=_hold_row, args=(postgres_url, schema, "l", started, release))
        holder.start()
        outcome: list[Any] = []

        def run(ident: str | None, value: str) -> None:
            try:
                outcome.append(db.append("l", value, idempotency_id=ident))
            except Exception as exc:
                outcome.append(exc)

        try:
            assert started.wait(10)
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                for ident, value in ((None, "no-id"), ("kill-id", "with-id")):
                    outcome.clear()
                    t = threading.Thread(target=run, args=(ident, value))
                    t.start()
                    victim = None
                    for _ in range(100):
                        row = admin.execute(
                            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                            ("%push%",),
                        ).fetchone()
                        if row:
                            victim = row[0]
                            break
                        time.sleep(0.02)
                    assert victim is not None
                    admin.execute(f"SELECT {signal}(%s)", (victim,))
                    if ident is not None:
                        time.sleep(0.3)
                        release.set()  # the retry (same id) may now get through
                    t.join(15)
                    assert not t.is_alive()
                    if ident is None:
                        assert isinstance(outcome[0], KVStoreError), outcome  # not retried without an id
                    else:  # terminated: retried (the id makes it safe); cancelled: busy, not retried
                        assert outcome[0] == 2 or isinstance(outcome[0], BackendBusyError), outcome
        finally:
            release.set()
            holder.join(10)
        final = db.get_range("l", 0, -1)
        assert final.count("no-id") == 0
        assert final.count("with-id") <= 1
        got = db.append("l", "with-id", idempotency_id="kill-id")
        final = db.get_range("l", 0, -1)
        assert final.count("with-id") == 1
        assert final.index("with-id") == got - 1
    _assert_gapless(postgres_url, schema, "l")


@pytest.mark.parametrize("path", ["fast", "statement"])
def test_an_id_just_past_its_window_retried_by_many_at_once_applies_once_more(
    postgres_url: str, schema: str, path: str
) -> None:
    with PostgresDatabase(postgres_url, schema_name=schema, idempotency_window=0.5, max_size=8) as db:
        assert db.extend("l", ["x", "x"], idempotency_id="edge") == 2
        if path == "statement":
            db.expire("l", 0.3)
        time.sleep(0.7)
        barrier = threading.Barrier(6)
        answers: list[Any] = []

        def retry() -> None:
            barrier.wait(10)
            try:
                answers.append(db.extend("l", ["x", "x"], idempotency_id="edge"))
            except Exception as exc:
                answers.append(exc)

        threads = [threading.Thread(target=retry) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        expected = 2 if path == "statement" else 4
        assert answers == [expected] * 6
        assert db.get_range("l", 0, -1) == ["x"] * expected
    _assert_gapless(postgres_url, schema, "l")


def test_purges_racing_appends_to_lists_that_keep_expiring(postgres_url: str, schema: str) -> None:
    """Lists that expire every few ms, ids that fall out of a short window, a purge in a loop: every
    append succeeds (no deadlock with the purge's deletes), and every list is gapless afterwards."""
    stop = threading.Event()
    failures: list[BaseException] = []
    with PostgresDatabase(postgres_url, schema_name=schema, max_size=6, idempotency_window=0.05) as db:

        def writer(w: int) -> None:
            k = 0
            while not stop.is_set():
                k += 1
                key = f"k{k % 3}"
                try:
                    db.extend(key, [w, k], idempotency_id=f"id{k % 5}")  # ids recur: stale ones replaced
                    if k % 4 == 0:
                        db.expire(key, 0.002)
                except Exception as exc:
                    failures.append(exc)
                    return

        def purger() -> None:
            while not stop.is_set():
                try:
                    db.purge_expired()
                except Exception as exc:
                    failures.append(exc)
                    return

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + [threading.Thread(target=purger)]
        for t in threads:
            t.start()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(30)
        assert failures == []
        for k in range(3):
            db.expire(f"k{k}", None)
            assert _assert_gapless(postgres_url, schema, f"k{k}") == len(db.get_range(f"k{k}", 0, -1))


def test_an_async_watcher_sees_every_item_of_appenders_in_other_processes(postgres_url: str, schema: str) -> None:
    writers, n = 3, 60
    total = writers * sum(1 if k % 5 == 0 else 3 if k % 5 == 1 else 2 if k % 5 == 2 else 0 for k in range(n))
    total += sum(1 if k % 5 == 3 else 2 if k % 5 == 4 else 0 for k in range(n))
    with PostgresDatabase(postgres_url, schema_name=schema):
        pass
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_mixed_writer, args=(postgres_url, schema, w, n, go, out)) for w in range(writers)]
    for p in procs:
        p.start()

    async def main() -> list[Any]:
        async with AsyncPostgresDatabase(postgres_url, schema_name=schema, max_size=2) as db:
            seen: list[Any] = []

            async def watch() -> None:
                async for item in db.watch("l", start=0, poll_interval=5.0):  # woken by NOTIFY, not polling
                    seen.append(item)
                    if len(seen) >= total:
                        return

            task = asyncio.create_task(watch())
            await asyncio.sleep(1.5)
            go.set()
            await asyncio.wait_for(task, 60)
            return seen

    seen = asyncio.run(main())
    for _ in procs:
        out.get(timeout=60)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with PostgresDatabase(postgres_url, schema_name=schema) as db:
        final = db.get_range("l", 0, -1)
    assert len(final) == total
    assert [p for p, _ in seen] == list(range(total))
    assert [v for _, v in seen] == final


def test_a_dml_role_appends_where_new_functions_are_not_executable_by_public(
    postgres_url: str, schema: str, dml_role: str
) -> None:
    owner = f"{dml_role}_owner"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(SQL("CREATE ROLE {} LOGIN").format(Identifier(owner)))
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(Identifier(schema), Identifier(owner)))
            # The hardening: functions this owner creates are not executable by PUBLIC (global default
            # privileges: a per-schema ALTER DEFAULT PRIVILEGES cannot revoke what is granted globally).
            admin.execute(
                SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC").format(
                    Identifier(owner)
                )
            )
        with PostgresDatabase(_as(postgres_url, owner), schema_name=schema) as db:
            db.append("l", "owner")
        _grant_dml(postgres_url, schema, dml_role)
        with PostgresDatabase(_as(postgres_url, dml_role), schema_name=schema) as db:
            assert db.get_range("l", 0, -1) == ["owner"]  # the role reads the tables
            with psycopg.connect(_as(postgres_url, dml_role), autocommit=True) as conn:  # version 7's append
                params = {"ns": "", "key": "l", "n": 1, "id": None, "window": 86400.0, "items": '["v7"]'}
                row = conn.execute(Queries.build(schema, "kvstore_").push_statement, params).fetchone()
                assert row is not None
                assert row[0] == 2
            assert db.append("l", "app") == 3
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))
            admin.execute(SQL("DROP OWNED BY {}").format(Identifier(owner)))
            admin.execute(SQL("DROP ROLE {}").format(Identifier(owner)))


def test_a_borrowed_pool_that_defaults_to_serializable_is_warned_about(
    postgres_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """kvstore's own connections set read committed; a pool handed in keeps its settings, and opening the
    store says so once, naming the setting to change."""
    from psycopg_pool import ConnectionPool

    sep = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{sep}options=-c%20default_transaction_isolation%3Dserializable"
    with ConnectionPool(url, kwargs={"autocommit": True}, min_size=1, max_size=1, open=True) as pool:
        with caplog.at_level("WARNING", logger="kvstore"), PostgresDatabase(pool, schema_name=schema) as db:
            assert db.append("l", 1) == 1
        warned = [r.getMessage() for r in caplog.records if "isolation" in r.getMessage()]
        assert len(warned) == 1
        assert "serializable" in warned[0]
        assert "default_transaction_isolation" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="kvstore"), PostgresDatabase(url, schema_name=schema) as db:
        assert db.append("l", 2) == 2  # its own connections: read committed, nothing to say
    assert not [r for r in caplog.records if "isolation" in r.getMessage()]
