"""SQLite backend's error map: one table from apsw exceptions to kvstore errors, one function that reads it.

Every apsw call of the backend is translated here (httpx ``map_httpcore_exceptions``
style): the engine's few driver boundaries catch ``apsw.Error`` and raise
``map_error(...) from exc``.
"""

from __future__ import annotations

import apsw

from kvstore.errors import BackendBusyError, ClosedError, KVStoreError
from kvstore.sqlite._sql import (
    SqliteCorruptError,
    SqliteDiskFullError,
    SqliteFileError,
    SqliteIOError,
    SqliteReadOnlyError,
)

__all__ = ["BACKEND", "ERRORS", "map_error"]

BACKEND = "sqlite"

# Busy, not down: another connection holds the lock (DESIGN.md §8). The failover neither
# counts it against the breaker nor moves the call to the fallback.
_BUSY = (
    "SQLite database {path} is locked by another connection; gave up after the {busy_timeout:g} s busy "
    "timeout (retry later, raise busy_timeout or shorten the other writer's transactions)"
)

#: apsw exception -> (kvstore error, message), most specific first: the first ``isinstance`` match
#: wins, and the last row catches every other apsw error. Messages may use ``{path}``,
#: ``{busy_timeout}`` and ``{exc}``; a `SqliteFileError` also gets the path as an attribute.
ERRORS: tuple[tuple[type[apsw.Error], type[KVStoreError], str], ...] = (
    (apsw.BusyError, BackendBusyError, _BUSY),
    (apsw.LockedError, BackendBusyError, _BUSY),
    (apsw.FullError, SqliteDiskFullError, "the disk holding {path} is full; free some space ({exc})"),
    (
        apsw.ReadOnlyError,
        SqliteReadOnlyError,
        "{path} cannot be written (read-only file, directory or file system) ({exc})",
    ),
    (
        apsw.CorruptError,
        SqliteCorruptError,
        "{path} is corrupt; it was left untouched: restore it from a backup or move it away ({exc})",
    ),
    (
        apsw.NotADBError,
        SqliteCorruptError,
        "{path} is not a SQLite database; it was left untouched: point kvstore at another path ({exc})",
    ),
    (apsw.IOError, SqliteIOError, "I/O error on {path}; check the disk and the file system ({exc})"),
    (
        apsw.CantOpenError,
        SqliteFileError,
        "cannot open {path}; check that the directory exists and is writable ({exc})",
    ),
    (apsw.PermissionsError, SqliteFileError, "permission denied on {path} ({exc})"),
    (apsw.ConnectionClosedError, ClosedError, "the SQLite connection to {path} is closed"),
    (apsw.CursorClosedError, ClosedError, "the SQLite connection to {path} is closed"),
    (apsw.Error, KVStoreError, "SQLite error on {path}: {exc}"),
)


def map_error(
    exc: apsw.Error, *, path: str, busy_timeout: float, operation: str | None, key: str | None = None
) -> KVStoreError:
    """The kvstore error for an apsw exception, from `ERRORS` (raise it ``from exc``)."""
    # The last row matches every apsw error, so there is always one.
    error_type, message = next((error, text) for cls, error, text in ERRORS if isinstance(exc, cls))
    text = message.format(path=path, busy_timeout=busy_timeout, exc=exc)
    if issubclass(error_type, SqliteFileError):
        return error_type(text, path=path, key=key, operation=operation, backend=BACKEND)
    return error_type(text, backend=BACKEND, key=key, operation=operation)
