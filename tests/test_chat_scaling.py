"""`ChatHistory.last(n)` reads by index: the same few pages for 10^2 or 10^5 messages (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import apsw
import psycopg
import pytest

from kvstore import ChatHistory, SqliteDatabase
from kvstore.postgres import PostgresDatabase
from kvstore.sqlite import _sql as sqlite_sql


def _message(seq: str) -> str:
    return f'\'{{"role":"user","content":"#\' || {seq} || \'"}}\''


def test_sqlite_last_is_an_index_range_seek(tmp_path: Path) -> None:
    """The range read is a primary-key range search, and last(20) returns the right 20 of 10^5."""
    path = str(tmp_path / "chat.db")
    with SqliteDatabase(path, key_prefix="s:") as db:
        db.ping()
        conn = apsw.Connection(path)
        with conn:
            conn.execute("INSERT INTO kvstore_keys (ns, key, kind, head, tail) VALUES ('s:', 'chat:big', 1, 0, 100000)")
            conn.execute(
                "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 99999) "
                f"INSERT INTO kvstore_items SELECT 's:', 'chat:big', i, CAST({_message('i')} AS BLOB) FROM g"
            )
        # One statement: the key's row by its primary key, then a range of the items' primary key
        # (bounded by the row's counters), already in order (no sort), on and off the event loop.
        params = ("s:", "chat:big", -20, -1, 0)
        for statement, extra in (
            (sqlite_sql.RANGE, ()),
            (sqlite_sql.RANGE_LOOP.format(items=128), (1 << 18,)),
            (sqlite_sql.RANGE_LOOP_SIZED.format(cap=1 << 18, items=128), ()),
        ):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params + extra)]
            assert plan == [
                "SEARCH k USING PRIMARY KEY (ns=? AND key=?)",
                "SEARCH i USING PRIMARY KEY (ns=? AND key=? AND idx>? AND idx<?) LEFT-JOIN",
            ]
        conn.close()
        messages = ChatHistory(db, "big", model=dict).last(20)
        assert [m["content"] for m in messages] == [f"#{i}" for i in range(99980, 100000)]


@pytest.mark.postgres
def test_postgres_last_touches_the_same_pages_for_100_or_100000_messages(postgres_url: str) -> None:
    """The range statement is an index range scan whose buffer count does not grow with the list."""
    prefix = f"scale-{uuid.uuid4().hex[:8]}:"
    with (
        PostgresDatabase(postgres_url, key_prefix=prefix) as db,
        psycopg.connect(postgres_url, autocommit=True) as conn,
    ):
        db.ping()
        for n in (100, 100_000):
            conn.execute(
                "INSERT INTO kvstore_entries (ns, key, kind, length) VALUES (%s, %s, 'l', %s)",
                (prefix, f"chat:n{n}", n),
            )
            conn.execute(
                f"INSERT INTO kvstore_list_items SELECT %s, %s, g, ({_message('g')})::json "
                "FROM generate_series(1, %s) g",
                (prefix, f"chat:n{n}", n),
            )
        conn.execute("ANALYZE kvstore_list_items")
        buffers = {}
        for n in (100, 100_000):
            assert [m["content"] for m in ChatHistory(db, f"n{n}", model=dict).last(20)] == [
                f"#{i}" for i in range(n - 19, n + 1)
            ]
            params = {"ns": prefix, "key": f"chat:n{n}", "start": -20, "end": -1}
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + db._q.range, params))
            assert re.search(r"Index Scan using kvstore_items_pkey on kvstore_list_items .*rows=20 loops=1", plan), plan
            assert "(seq >= $" in plan  # bounded by the list's head and length, not filtered
            found = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", plan)
            assert found is not None
            buffers[n] = int(found.group(1)) + int(found.group(2) or 0)
        assert buffers[100_000] <= buffers[100] + 3, buffers  # one index level more at most, not O(n)
        db.clear()
