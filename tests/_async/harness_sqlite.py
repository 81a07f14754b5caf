"""Contract-suite harness for the SQLite database: a file database and a shared ":memory:" one."""

from __future__ import annotations

from typing import Any

import apsw
import pytest

from kvstore.sqlite import AsyncSqliteDatabase
from tests._async.backends import AsyncHarness, Factory
from tests.clock import FakeClock


async def _sqlite_file(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    path = request.getfixturevalue("tmp_path") / "nested" / "kv.db"

    async def open_(**options: Any) -> AsyncSqliteDatabase:
        # Every sibling is a connection of its own on the same file, as another process would be.
        return AsyncSqliteDatabase(path, clock=clock, **options)

    return AsyncHarness("sqlite", await open_(), clock, open_)


async def _sqlite_memory(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    # A ":memory:" database lives in its one connection; siblings share it (and its lock).
    conn = apsw.Connection(":memory:")
    request.addfinalizer(conn.close)

    async def open_(**options: Any) -> AsyncSqliteDatabase:
        return AsyncSqliteDatabase(conn, clock=clock, **options)

    return AsyncHarness("sqlite", await open_(), clock, open_)


#: database backends: name -> (factory, marks)
DATABASES: dict[str, tuple[Factory, list[pytest.MarkDecorator]]] = {
    "sqlite-file": (_sqlite_file, []),
    "sqlite-memory": (_sqlite_memory, []),
}
