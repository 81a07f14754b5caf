"""SQLite backend: `SqliteDatabase`, `AsyncSqliteDatabase` and the typed file errors."""

from kvstore._async.sqlite import AsyncSqliteDatabase
from kvstore._sqlite_sql import (
    SqliteCorruptError,
    SqliteDiskFullError,
    SqliteFileError,
    SqliteIOError,
    SqliteReadOnlyError,
)
from kvstore._sync.sqlite import SqliteDatabase

__all__ = [
    "AsyncSqliteDatabase",
    "SqliteCorruptError",
    "SqliteDatabase",
    "SqliteDiskFullError",
    "SqliteFileError",
    "SqliteIOError",
    "SqliteReadOnlyError",
]
