"""SQLite backend, I/O-free part: schema and migrations, SQL text, and the typed file errors."""

from __future__ import annotations

from kvstore.errors import BackendUnavailableError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SqliteCorruptError",
    "SqliteDiskFullError",
    "SqliteFileError",
    "SqliteIOError",
    "SqliteReadOnlyError",
]

# --- schema -----------------------------------------------------------------------------
#
# One keyspace: every key (value or list) has a row in kvstore_keys, so delete, exists,
# keys, clear and expire see both kinds and WrongTypeError is one column away. The
# store's key_prefix is its own column (``ns``), not glued onto the key: two prefixes
# can never overlap, whatever characters they hold ("" and "other:" included), and
# clear() is an exact ``ns = ?``.
#
# A list is a row with head/tail counters (its items have indexes head..tail-1) plus
# one row per item in kvstore_items keyed (ns, key, idx): append is an O(log n)
# insert, get_range an index range scan of k rows, get_length reads two integers.
# Triggers delete a list's items when its row is deleted or replaced by a value, so
# no code path can leave orphans behind.
#
# kvstore_ids (version 2) remembers the idempotency ids of list writes, keyed
# (ns, key, id), with the length the write returned and when (unix ms). A row is
# written in the append's own transaction; no trigger touches it, so deleting or
# replacing the list does not forget an id: only the purge does, once it is older
# than the store's idempotency window.

#
# Version 3 tracks changes for the failover's replay guard (`changed_since`): every write
# stamps kvstore_keys.modified_at (unix seconds, REAL, the store's clock); delete writes a
# row to kvstore_tombstones (and so does the purge of an expired row, carrying the row's
# last modified_at, so purging never loses a recent change); clear() stamps the prefix in
# kvstore_cleared. Tombstones and cleared stamps are swept once older than the
# idempotency window, so `changed_since` answers exactly for ``since`` within the window.
# Rows written before the migration have modified_at NULL: unknown, not reported.

SCHEMA_VERSION = 3

#: target version -> statements that migrate the previous version to it.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE kvstore_keys (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            kind INTEGER NOT NULL,
            value BLOB,
            head INTEGER NOT NULL DEFAULT 0,
            tail INTEGER NOT NULL DEFAULT 0,
            expires_at INTEGER,
            PRIMARY KEY (ns, key)
        ) WITHOUT ROWID""",
        "CREATE INDEX kvstore_keys_expiry ON kvstore_keys (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE kvstore_items (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            idx INTEGER NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (ns, key, idx)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER kvstore_list_replaced AFTER UPDATE OF kind ON kvstore_keys
            WHEN old.kind = 1 AND new.kind <> 1
            BEGIN DELETE FROM kvstore_items WHERE ns = old.ns AND key = old.key; END""",
        """CREATE TRIGGER kvstore_list_deleted AFTER DELETE ON kvstore_keys
            WHEN old.kind = 1
            BEGIN DELETE FROM kvstore_items WHERE ns = old.ns AND key = old.key; END""",
    ),
    2: (
        """CREATE TABLE kvstore_ids (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            id TEXT NOT NULL,
            length INTEGER NOT NULL,
            created INTEGER NOT NULL,
            PRIMARY KEY (ns, key, id)
        ) WITHOUT ROWID""",
        "CREATE INDEX kvstore_ids_created ON kvstore_ids (created)",
    ),
    3: (
        "ALTER TABLE kvstore_keys ADD COLUMN modified_at REAL",
        """CREATE TABLE kvstore_tombstones (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            deleted_at REAL NOT NULL,
            PRIMARY KEY (ns, key)
        ) WITHOUT ROWID""",
        "CREATE INDEX kvstore_tombstones_deleted ON kvstore_tombstones (deleted_at)",
        """CREATE TABLE kvstore_cleared (
            ns TEXT NOT NULL PRIMARY KEY,
            cleared_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
}

KIND_VALUE = 0
KIND_LIST = 1

# --- statements ---------------------------------------------------------------------------
# Expiry is unix milliseconds; a row is alive when expires_at IS NULL OR expires_at > now.

BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
BEGIN_READ = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

GET = "SELECT kind, value, expires_at FROM kvstore_keys WHERE ns = ? AND key = ?"
META = "SELECT kind, head, tail, expires_at FROM kvstore_keys WHERE ns = ? AND key = ?"
EXPIRY = "SELECT expires_at FROM kvstore_keys WHERE ns = ? AND key = ?"

# The plain upsert of a value (parameters: ns, key, value, expires_at); it does not stamp
# modified_at. Kept for raw-SQL comparisons (benchmarks' floor); the store writes UPSERT.
SET = (
    "INSERT INTO kvstore_keys (ns, key, kind, value, head, tail, expires_at) VALUES (?, ?, 0, ?, 0, 0, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET"
    " kind = 0, value = excluded.value, head = 0, tail = 0, expires_at = excluded.expires_at"
)
# What set/mset run: the upsert stamping the change (parameters: ns, key, value, expires_at, modified_at).
UPSERT = (
    "INSERT INTO kvstore_keys (ns, key, kind, value, head, tail, expires_at, modified_at)"
    " VALUES (?, ?, 0, ?, 0, 0, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET"
    " kind = 0, value = excluded.value, head = 0, tail = 0, expires_at = excluded.expires_at,"
    " modified_at = excluded.modified_at"
)
# Written only when the key is absent or its row has expired (parameters: ..., now).
SET_IF_ABSENT = UPSERT + " WHERE kvstore_keys.expires_at IS NOT NULL AND kvstore_keys.expires_at <= ?"
DELETE = "DELETE FROM kvstore_keys WHERE ns = ? AND key = ? RETURNING expires_at, modified_at"
# Parameters: ns, keys (a JSON array). Each deleted row's key, expiry and last write (for its tombstone).
DELETE_MANY = (
    "DELETE FROM kvstore_keys WHERE ns = ? AND key IN (SELECT value FROM json_each(?))"
    " RETURNING key, expires_at, modified_at"
)
# get(touch=): restart a live key's TTL and read it, in one statement. Parameters: expires_at,
# modified_at, ns, key, now. A list row is updated too; the caller raises and rolls back.
GET_TOUCH = (
    "UPDATE kvstore_keys SET expires_at = ?, modified_at = ?"
    " WHERE ns = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?) RETURNING kind, value"
)
# incr on a live value: the new number, the expiry untouched. Parameters: value, modified_at, ns, key.
SET_VALUE = "UPDATE kvstore_keys SET value = ?, modified_at = ? WHERE ns = ? AND key = ?"
# Parameters: expires_at, modified_at, ns, key, now.
EXPIRE = (
    "UPDATE kvstore_keys SET expires_at = ?, modified_at = ?"
    " WHERE ns = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)"
)
MGET = "SELECT key, kind, value, expires_at FROM kvstore_keys WHERE ns = ? AND key IN (SELECT value FROM json_each(?))"
# Reads made on the event loop: SQLite tells a value's size before copying it. length() of a
# BLOB column reads the record header only (no overflow page is copied), so a value longer
# than ``{cap}`` (the engine formats in its LOOP_BYTES, a literal) is withheld: GET_LOOP
# answers its length (an int) in its place; MGET_LOOP and RANGE_LOOP answer NULL and end each
# row with the length, which the engine sums. A list row's value is NULL: so is its length.
GET_LOOP = (
    "SELECT kind, CASE WHEN length(value) <= {cap} THEN value ELSE length(value) END, expires_at"
    " FROM kvstore_keys WHERE ns = ? AND key = ?"
)
MGET_LOOP = (
    "SELECT key, kind, CASE WHEN length(value) <= {cap} THEN value END, expires_at, length(value)"
    " FROM kvstore_keys WHERE ns = ? AND key IN (SELECT value FROM json_each(?))"
)
# get(touch=) and expire on the loop leave a row whose value is longer than {cap} alone
# (rewriting it copies megabytes); SIZE then tells the engine whether that is why nothing matched.
GET_TOUCH_LOOP = (
    "UPDATE kvstore_keys SET expires_at = ?, modified_at = ?"
    " WHERE ns = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?) AND ifnull(length(value), 0) <= {cap}"
    " RETURNING kind, value"
)
EXPIRE_LOOP = (
    "UPDATE kvstore_keys SET expires_at = ?, modified_at = ?"
    " WHERE ns = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?) AND ifnull(length(value), 0) <= {cap}"
)
SIZE = "SELECT length(value) FROM kvstore_keys WHERE ns = ? AND key = ?"
CLEAR_ITEMS = "DELETE FROM kvstore_items WHERE ns = ?"
CLEAR_KEYS = "DELETE FROM kvstore_keys WHERE ns = ?"

# --- change tracking (parameters in seconds) -----------------------------------------------

# Parameters: ns, key, deleted_at. A later delete moves the stamp forward, never back.
TOMBSTONE = (
    "INSERT INTO kvstore_tombstones (ns, key, deleted_at) VALUES (?, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET deleted_at = max(deleted_at, excluded.deleted_at)"
)
# Parameters: ns, cleared_at.
CLEARED = (
    "INSERT INTO kvstore_cleared (ns, cleared_at) VALUES (?, ?)"
    " ON CONFLICT (ns) DO UPDATE SET cleared_at = max(cleared_at, excluded.cleared_at)"
)
# The failover dates what a replay applied at the time the write was made. Parameters: at, ns, keys (JSON).
RESTAMP_KEYS = "UPDATE kvstore_keys SET modified_at = ? WHERE ns = ? AND key IN (SELECT value FROM json_each(?))"
RESTAMP_TOMBSTONES = (
    "UPDATE kvstore_tombstones SET deleted_at = ? WHERE ns = ? AND key IN (SELECT value FROM json_each(?))"
)
# Which of a JSON array of keys changed after a time, in one statement (primary-key lookups).
# Parameters: keys (JSON), ns, since, ns, since, ns, since.
CHANGED_SINCE = (
    "SELECT j.value FROM json_each(?) AS j WHERE"
    " EXISTS (SELECT 1 FROM kvstore_keys k WHERE k.ns = ? AND k.key = j.value AND k.modified_at > ?)"
    " OR EXISTS (SELECT 1 FROM kvstore_tombstones t WHERE t.ns = ? AND t.key = j.value AND t.deleted_at > ?)"
    " OR EXISTS (SELECT 1 FROM kvstore_cleared c WHERE c.ns = ? AND c.cleared_at > ?)"
)

# Parameters: ns, key, tail, modified_at.
NEW_LIST = (
    "INSERT INTO kvstore_keys (ns, key, kind, value, head, tail, expires_at, modified_at)"
    " VALUES (?, ?, 1, NULL, 0, ?, NULL, ?)"
)
# Parameters: tail, modified_at, ns, key.
SET_TAIL = "UPDATE kvstore_keys SET tail = ?, modified_at = ? WHERE ns = ? AND key = ?"
PUSH = "INSERT INTO kvstore_items (ns, key, idx, value) VALUES (?, ?, ?, ?)"
# get_range in one statement, so one snapshot without a transaction: the key's row, joined to
# its items start..end (Redis LRANGE arithmetic on the row's counters, as `lrange_bounds`: ``lo``
# and ``hi`` inclusive, empty when lo > hi), a range of the items' primary key whose bounds are
# computed once. Parameters: ns, key, start, end (clamped to +-2**62 by the caller), now (unix
# ms). An expired list, like a value (no items: its counters are 0, 0), reads no item. Every row
# is (kind, expires_at, item): no row for a missing key; one row whose item is NULL (an item never
# is) for a value, an expired key or an empty range; else one row per item, in order.
_LENGTH = "(k.tail - k.head)"
_LO = f"(CASE WHEN ?3 < 0 THEN max({_LENGTH} + ?3, 0) ELSE ?3 END)"
_HI = f"(CASE WHEN ?4 < 0 THEN {_LENGTH} + ?4 ELSE min(?4, {_LENGTH} - 1) END)"
_GONE = "(k.expires_at IS NOT NULL AND k.expires_at <= ?5)"
_ITEMS = " FROM kvstore_keys AS k LEFT JOIN kvstore_items AS i ON i.ns = ?1 AND i.key = ?2 AND i.idx >= k.head + "
_ROW = " WHERE k.ns = ?1 AND k.key = ?2 ORDER BY i.idx"
RANGE = (
    f"SELECT k.kind, k.expires_at, i.value{_ITEMS}{_LO}"
    f" AND i.idx <= k.head + (CASE WHEN {_GONE} THEN -1 ELSE {_HI} END){_ROW}"
)
# On the event loop: a range of more than ``{items}`` items reads no item either, and each row
# is (kind, expires_at, the list's length, item): the length tells an empty range from a long
# one. RANGE_LOOP withholds (answers NULL for) an item longer than ?6, its share of the bytes a
# call may read on the loop; the engine reads it row by row and stops at a withheld item, so it never
# copies more than that; a page with a longer item is read again by RANGE_LOOP_SIZED, which withholds an
# item longer than ``{cap}`` and ends each row with the item's length, which the engine sums
# row by row (see GET_LOOP).
_LOOP_ITEMS = (
    f"{_ITEMS}{_LO} AND i.idx <= k.head + (CASE WHEN {_GONE} OR {_HI} - {_LO} >= {{items}} THEN -1 ELSE {_HI} END)"
)
RANGE_LOOP = (
    f"SELECT k.kind, k.expires_at, {_LENGTH}, CASE WHEN length(i.value) <= ?6 THEN i.value END{_LOOP_ITEMS}{_ROW}"
)
RANGE_LOOP_SIZED = (
    f"SELECT k.kind, k.expires_at, {_LENGTH}, CASE WHEN length(i.value) <= {{cap}} THEN i.value END, length(i.value)"
    f"{_LOOP_ITEMS}{_ROW}"
)
# watch: (idx, value) from an idx on (parameters: ns, key, from idx, tail, limit).
RANGE_FROM = (
    "SELECT idx, value FROM kvstore_items WHERE ns = ? AND key = ? AND idx >= ? AND idx < ? ORDER BY idx LIMIT ?"
)
# trim: item rows of one end of a list (parameters: ns, key, from idx, to idx exclusive), then the
# new counters (parameters: head, tail, modified_at, ns, key). Kept items are never renumbered.
DROP_ITEMS = "DELETE FROM kvstore_items WHERE ns = ? AND key = ? AND idx >= ? AND idx < ?"
SET_BOUNDS = "UPDATE kvstore_keys SET head = ?, tail = ?, modified_at = ? WHERE ns = ? AND key = ?"

# Idempotency ids: seen within the window (parameters: ns, key, id, oldest created kept).
ID_SEEN = "SELECT length FROM kvstore_ids WHERE ns = ? AND key = ? AND id = ? AND created > ?"
# Recorded in the write's transaction. BEGIN IMMEDIATE serialises writers and ID_SEEN
# ran first, so a row already there is older than the window (not purged yet): replace it.
ID_RECORD = (
    "INSERT INTO kvstore_ids (ns, key, id, length, created) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (ns, key, id) DO UPDATE SET length = excluded.length, created = excluded.created"
)

# Expired rows, a bounded batch at a time (the expiry index finds them). Returns each
# purged key's last write, so a write newer than the window leaves a tombstone.
PURGE = (
    "DELETE FROM kvstore_keys WHERE (ns, key) IN (SELECT ns, key FROM kvstore_keys WHERE expires_at <= ? LIMIT ?)"
    " RETURNING ns, key, modified_at"
)
# Tombstones and cleared stamps older than the window (parameters: oldest kept [, limit]).
PURGE_TOMBSTONES = (
    "DELETE FROM kvstore_tombstones WHERE (ns, key) IN"
    " (SELECT ns, key FROM kvstore_tombstones WHERE deleted_at <= ? LIMIT ?)"
)
PURGE_CLEARED = "DELETE FROM kvstore_cleared WHERE cleared_at <= ?"
# Ids older than the window (of every prefix), a bounded batch at a time (the created index finds them).
PURGE_IDS = (
    "DELETE FROM kvstore_ids WHERE (ns, key, id) IN (SELECT ns, key, id FROM kvstore_ids WHERE created <= ? LIMIT ?)"
)
PURGE_BATCH = 1000

#: Rows read per page by keys()/iter_keys(); the matcher filters each page.
KEYS_PAGE = 500


def keys_page_sql(*, first: bool, bounded: bool) -> str:
    """A page of live keys of one prefix in key order, from a lower bound, optionally below an upper one.

    Parameters: ns, lower, [upper,] now, limit. The range comes from the pattern's
    literal prefix, so ``%``, ``_``, ``*`` and ``[`` are never SQL operators here;
    the exact reference matcher filters what the range returns.
    """
    lower = ">=" if first else ">"
    upper = " AND key < ?" if bounded else ""
    return (
        f"SELECT key FROM kvstore_keys WHERE ns = ? AND key {lower} ?{upper}"
        " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?"
    )


# --- errors -------------------------------------------------------------------------------


class SqliteFileError(BackendUnavailableError):
    """The SQLite file cannot be used as it is; ``path`` names it. The file is left untouched.

    A `BackendUnavailableError`, so the manager falls back instead of failing.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        backend: str | None = "sqlite",
        key: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend, key=key, operation=operation)
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_file_error, (type(self), self.message, self.path, self.backend, self.key, self.operation))


def _rebuild_file_error(
    cls: type[SqliteFileError], message: str, path: str, backend: str | None, key: str | None, operation: str | None
) -> SqliteFileError:
    return cls(message, path=path, backend=backend, key=key, operation=operation)


class SqliteDiskFullError(SqliteFileError):
    """The disk (or the file system quota) holding the database is full."""


class SqliteIOError(SqliteFileError):
    """The operating system reported an I/O error reading or writing the database."""


class SqliteCorruptError(SqliteFileError):
    """The file is corrupt or is not a SQLite database."""


class SqliteReadOnlyError(SqliteFileError):
    """The database cannot be written: read-only file, directory or file system."""
