# Generated from tests/_async/harness_sqlite.py by tools/unasync.py: do not edit; edit the async source.
"""Contract-suite harness for the SQLite database: a file database and a shared ":memory:" one."""

from __future__ import annotations

from typing import Any

import apsw
import pytest

from kvstore.sqlite import SqliteDatabase
from tests._sync.backends import Factory, Harness
from tests.clock import FakeClock


def _sqlite_file(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    path = request.getfixturevalue("tmp_path") / "nested" / "kv.db"

    def open_(**options: Any) -> SqliteDatabase:
        # Every sibling is a connection of its own on the same file, as another process would be.
        return SqliteDatabase(path, clock=clock, **options)

    return Harness("sqlite", open_(), clock, open_)


def _sqlite_memory(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    # A ":memory:" database lives in its one connection; siblings share it (and its lock).
    conn = apsw.Connection(":memory:")
    request.addfinalizer(conn.close)

    def open_(**options: Any) -> SqliteDatabase:
        return SqliteDatabase(conn, clock=clock, **options)

    return Harness("sqlite", open_(), clock, open_)


#: database backends: name -> (factory, marks)
DATABASES: dict[str, tuple[Factory, list[pytest.MarkDecorator]]] = {
    "sqlite-file": (_sqlite_file, []),
    "sqlite-memory": (_sqlite_memory, []),
}
