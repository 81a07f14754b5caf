"""PostgreSQL append/extend is ONE statement, one round trip (counted two ways), and stays exact under races.

Counted by the client (libpq's own protocol trace of the pooled connection: every round trip is a
Sync or a simple Query the client sends and then waits on) and by the server (``log_statement=all``
on a server this test owns: one log line per statement the backend ran). Each counter is first shown to count a known
three-statement transaction as three, so a broken counter cannot pass the test.
"""

from __future__ import annotations

import multiprocessing
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import ConnectionPool

from kvstore import WrongTypeError
from kvstore.postgres import PostgresDatabase
from tests.fixtures_postgres import PgServer

pytestmark = [pytest.mark.postgres]


class _Trace:
    """libpq's protocol trace of one connection: what it sent and what the server answered."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._file = tempfile.TemporaryFile("w+")  # noqa: SIM115  # closed by close()
        self._conn = conn
        conn.pgconn.trace(self._file.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        self._seen = 0

    def _new_lines(self) -> list[str]:
        self._file.flush()
        self._file.seek(0)
        lines = self._file.read().splitlines()
        new, self._seen = lines[self._seen :], len(lines)
        return new

    def during(self, call: Callable[[], Any]) -> tuple[int, int, Any]:
        """(round trips, statements sent, result) of ``call``."""
        self._new_lines()
        result = call()
        lines = self._new_lines()
        # A round trip is a request the client then waits on: a Sync (extended protocol) or a simple Query.
        trips = sum(1 for line in lines if line.startswith("F\t") and re.search(r"\t(Sync|Query)(\t|$)", line))
        statements = sum(1 for line in lines if line.startswith("F\t") and re.search(r"\t(Execute|Query)\t", line))
        return trips, statements, result

    def close(self) -> None:
        self._conn.pgconn.untrace()
        self._file.close()


@pytest.fixture
def traced(postgres_url: str) -> Iterator[tuple[PostgresDatabase, _Trace, psycopg.Connection[Any]]]:
    """A store on a one-connection pool whose connection is traced, and that connection."""
    pool: ConnectionPool[Any] = ConnectionPool(
        postgres_url, kwargs={"autocommit": True}, min_size=1, max_size=1, open=True, name="traced"
    )
    db = PostgresDatabase(pool, key_prefix=f"rt-{uuid.uuid4().hex[:8]}:")
    db.open()  # the migration's statements are not counted
    # psycopg prepares a statement on its 6th run on a connection, in one extra round trip (once per
    # connection and statement): run both shapes of the append (with and without an id) past that first.
    for i in range(6):
        db.append("warm", i)
        db.append("warm", i, idempotency_id=f"warm-{i}")
    with pool.connection() as conn:
        pass
    trace = _Trace(conn)
    try:
        yield db, trace, conn
    finally:
        trace.close()
        db.clear()
        db.close()
        pool.close()


def test_the_trace_counts_round_trips(traced: tuple[PostgresDatabase, _Trace, psycopg.Connection[Any]]) -> None:
    """The control: a BEGIN / SELECT / COMMIT transaction on the same connection counts 3 (and 3 statements)."""
    _db, trace, conn = traced

    def transaction() -> None:
        with conn.transaction():
            conn.execute("SELECT 1")

    assert trace.during(transaction)[:2] == (3, 3)


def test_append_and_extend_are_one_round_trip(traced: tuple[PostgresDatabase, _Trace, psycopg.Connection[Any]]) -> None:
    """Every path of append/extend (new list, growing, with an id, a replayed id, an expired value or list,
    a value in the way) is one statement in one round trip, and does what it should."""
    db, trace, _conn = traced
    one = (1, 1)
    assert trace.during(lambda: db.append("l", "a"))[:2] == one
    assert trace.during(lambda: db.append("l", "b"))[:2] == one
    assert trace.during(lambda: db.extend("l", ["c", "d", "e"]))[:2] == one
    assert trace.during(lambda: db.append("l", "f", idempotency_id="id-1")) == (1, 1, 6)
    assert trace.during(lambda: db.append("l", "f", idempotency_id="id-1")) == (1, 1, 6)  # a replay writes nothing
    assert trace.during(lambda: db.extend("l", ["g", "h"], idempotency_id="id-2")) == (1, 1, 8)
    assert db.get_range("l", 0, -1) == ["a", "b", "c", "d", "e", "f", "g", "h"]

    db.set("v", 1)
    with pytest.raises(WrongTypeError):
        trace.during(lambda: db.append("v", 2))
    assert db.get("v") == 1  # nothing written

    db.set("ev", 1, ttl=0.05)
    db.extend("el", [1, 2, 3])
    db.expire("el", 0.05)
    time.sleep(0.1)
    assert trace.during(lambda: db.append("ev", "x")) == (1, 1, 1)  # an expired value counts as absent
    assert trace.during(lambda: db.append("el", "y", idempotency_id="id-3")) == (1, 1, 1)  # so does an expired list
    assert db.get_range("ev", 0, -1) == ["x"]
    assert db.get_range("el", 0, -1) == ["y"]


def test_the_expired_lists_items_are_deleted_by_the_same_statement(postgres_url: str) -> None:
    """An append to an expired list leaves none of the old items behind (no invisible garbage)."""
    prefix = f"rt-{uuid.uuid4().hex[:8]}:"
    with PostgresDatabase(postgres_url, key_prefix=prefix) as db, psycopg.connect(postgres_url) as conn:
        db.extend("el", list(range(50)))
        db.trim("el", 10, -1)
        db.expire("el", 0.05)
        time.sleep(0.1)
        assert db.append("el", "new") == 1
        rows = conn.execute(
            "SELECT seq, value::text FROM kvstore_list_items WHERE ns = %s AND key = 'el'", (prefix,)
        ).fetchall()
        assert rows == [(1, '"new"')]  # the old items are gone; the new list counts from the start again
        assert db.get_range("el", 0, -1) == ["new"]
        db.clear()


def _log_lines(server: PgServer, pid: int) -> list[str]:
    text = (server.dir / "log").read_text(errors="replace")
    return [line for line in text.splitlines() if f"[{pid}]" in line and re.search(r"LOG:\s+(statement|execute)", line)]


def test_the_server_runs_one_statement_per_append(owned_postgres: PgServer) -> None:
    """The server's own log (log_statement=all): one statement per append, three for a BEGIN/SELECT/COMMIT."""
    url = f"{owned_postgres.url}?options=-c%20log_statement%3Dall"
    pool: ConnectionPool[Any] = ConnectionPool(url, kwargs={"autocommit": True}, min_size=1, max_size=1, open=True)
    try:
        db = PostgresDatabase(pool, key_prefix="log:")
        db.open()
        with pool.connection() as conn:
            pid = conn.info.backend_pid
            before = len(_log_lines(owned_postgres, pid))
            with conn.transaction():
                conn.execute("SELECT 1")
            assert len(_log_lines(owned_postgres, pid)) - before == 3  # the control
        for call in (
            lambda: db.append("l", {"n": 1}),
            lambda: db.append("l", {"n": 2}, idempotency_id="x"),
            lambda: db.append("l", {"n": 2}, idempotency_id="x"),
            lambda: db.extend("l", [{"n": 3}, {"n": 4}]),
        ):
            before = len(_log_lines(owned_postgres, pid))
            call()
            new = _log_lines(owned_postgres, pid)[before:]
            assert len(new) == 1, new
            assert '"public"."kvstore_push"(' in new[0]  # the append function (schema version 8)
        assert db.get_range("l", 0, -1) == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
        db.close()
    finally:
        pool.close()


# --- races across processes -------------------------------------------------------------------------


def _same_ids_writer(url: str, prefix: str, writer: int, ids: int, go: Any, out: Any) -> None:
    """Append one item per id (the same ids in every process), recording the length each call returned."""
    with PostgresDatabase(url, key_prefix=prefix, max_size=2) as db:
        go.wait(30)
        out.put((writer, [db.append("l", {"id": i, "w": writer}, idempotency_id=f"id-{i}") for i in range(ids)]))


def test_processes_racing_with_the_same_ids_write_each_once(postgres_url: str) -> None:
    """4 processes append the same 100 ids at once: each id is written exactly once, every call of an id
    returns the same length, and the list is gapless (length == items)."""
    prefix, procs_n, ids = f"race-{uuid.uuid4().hex[:8]}:", 4, 100
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_same_ids_writer, args=(postgres_url, prefix, w, ids, go, out)) for w in range(procs_n)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process connect, so the appends really overlap
    go.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with PostgresDatabase(postgres_url, key_prefix=prefix) as db:
        final = db.get_range("l", 0, -1)
        assert db.get_length("l") == len(final) == ids
        assert sorted(item["id"] for item in final) == list(range(ids))
        for i in range(ids):
            lengths = {results[w][i] for w in range(procs_n)}
            assert len(lengths) == 1  # every caller of id i got the first application's length
            (length,) = lengths
            assert final[length - 1]["id"] == i
        db.clear()


def _expiring_writer(url: str, prefix: str, writer: int, n: int, go: Any) -> None:
    with PostgresDatabase(url, key_prefix=prefix, max_size=2) as db:
        go.wait(30)
        for i in range(n):
            db.append("l", {"w": writer, "i": i})
            if i % 10 == 0:
                db.expire("l", 0.02)  # the list keeps expiring under the other writers' appends


def test_processes_appending_while_the_list_expires(postgres_url: str) -> None:
    """Appends racing with expiry: whatever list is live is gapless (length == items, seq consecutive),
    no item is duplicated, and no item of an expired list is left behind."""
    prefix, procs_n, n = f"exp-{uuid.uuid4().hex[:8]}:", 3, 150
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_expiring_writer, args=(postgres_url, prefix, w, n, go)) for w in range(procs_n)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with PostgresDatabase(postgres_url, key_prefix=prefix) as db, psycopg.connect(postgres_url) as conn:
        db.append("l", {"w": -1, "i": 0})  # the last writer's TTL may have run out by now
        db.expire("l", None)
        final = db.get_range("l", 0, -1)
        assert db.get_length("l") == len(final) > 0
        assert len({(item["w"], item["i"]) for item in final}) == len(final)
        for w in range(procs_n):
            mine = [item["i"] for item in final if item["w"] == w]
            assert mine == sorted(mine)
        head, length = conn.execute(
            "SELECT head, length FROM kvstore_entries WHERE ns = %s AND key = 'l'", (prefix,)
        ).fetchone()
        seqs = [
            s
            for (s,) in conn.execute(
                "SELECT seq FROM kvstore_list_items WHERE ns = %s AND key = 'l' ORDER BY seq", (prefix,)
            )
        ]
        assert seqs == list(range(head + 1, head + length + 1))  # nothing left of the expired lists
        db.clear()


def test_the_sweep_is_one_round_trip(traced: tuple[PostgresDatabase, _Trace, psycopg.Connection[Any]]) -> None:
    """purge_expired drops expired entries (a list's items too), old ids, tombstones, clear marks: one statement."""
    db, trace, _conn = traced
    db.set("gone-v", 1, ttl=0.05)
    db.extend("gone-l", [1, 2])
    db.expire("gone-l", 0.05)
    time.sleep(0.1)
    trips, statements, removed = trace.during(db.purge_expired)
    assert (trips, statements) == (1, 1)
    assert removed >= 2
    assert not db.exists("gone-v")
    assert db.get_range("gone-l", 0, -1) == []
