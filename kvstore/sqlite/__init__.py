"""SQLite backend: `SqliteDatabase`, `AsyncSqliteDatabase` and the typed file errors."""

from kvstore.sqlite._sql import (
    SqliteCorruptError,
    SqliteDiskFullError,
    SqliteFileError,
    SqliteIOError,
    SqliteReadOnlyError,
)
from kvstore.sqlite._store import SqliteDatabase
from kvstore.sqlite._store_async import AsyncSqliteDatabase

__all__ = [
    "AsyncSqliteDatabase",
    "SqliteCorruptError",
    "SqliteDatabase",
    "SqliteDiskFullError",
    "SqliteFileError",
    "SqliteIOError",
    "SqliteReadOnlyError",
]
