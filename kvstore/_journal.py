"""The outage journal: database-tier writes made while the primary is down, kept in order.

A small SQLite file (the standard library's ``sqlite3``, so it needs no extra)
in WAL mode: a write acknowledged during an outage is in the journal before the
caller hears back, survives a crash of the process, and is replayed to the
primary in order when it answers again. Each entry carries an id (for an
append/extend, the write's own idempotency id), so an append replayed twice (a
crash between the primary's reply and the journal's delete), or one whose reply
was lost just before the outage, is applied once: replay passes the id on.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kvstore._codec import _default

__all__ = ["Journal", "JournalEntry"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        op TEXT NOT NULL,
        args BLOB NOT NULL,
        created REAL NOT NULL
    )""",
    # Entries the primary refused for good (e.g. WrongTypeError): kept for a human, never retried.
    """CREATE TABLE IF NOT EXISTS dead_letters (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        op TEXT NOT NULL,
        args BLOB NOT NULL,
        created REAL NOT NULL,
        error TEXT NOT NULL
    )""",
    # At most one process replays a shared journal at a time (a lease with a heartbeat).
    """CREATE TABLE IF NOT EXISTS replayer (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        owner TEXT NOT NULL,
        heartbeat REAL NOT NULL
    )""",
)

#: Seconds after which a replayer that stopped heart-beating (a crashed process) loses its lease.
LEASE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled write: ``op`` is a store method name, ``args`` its JSON arguments."""

    seq: int
    id: str
    op: str
    args: Any
    created: float


class Journal:
    """An append-only queue of writes on a local SQLite file (or in memory for ``:memory:``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._owner = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"<Journal {self.path!r} pending={len(self)}>"

    def record(self, op: str, args: Any, entry_id: str | None = None) -> JournalEntry:
        """Append a write; it is on disk (WAL) when this returns.

        ``entry_id`` is the write's idempotency id when it has one (a fresh uuid otherwise).
        """
        if entry_id is None:
            entry_id = uuid.uuid4().hex
        created = time.time()
        data = orjson.dumps(args, default=_default)
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO journal (id, op, args, created) VALUES (?, ?, ?, ?)", (entry_id, op, data, created)
            )
        return JournalEntry(int(cursor.lastrowid or 0), entry_id, op, args, created)

    def pending(self, limit: int = 500) -> list[JournalEntry]:
        """The oldest entries not yet replayed, in order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id, op, args, created FROM journal ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [JournalEntry(seq, id_, op, orjson.loads(args), created) for seq, id_, op, args, created in rows]

    def done(self, seq: int) -> None:
        """Forget an entry the primary has acknowledged."""
        with self._lock:
            self._conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))

    def dead_letter(self, entry: JournalEntry, error: str) -> None:
        """Move an entry the primary refuses for good out of the queue, keeping it for inspection."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO dead_letters (seq, id, op, args, created, error) "
                    "SELECT seq, id, op, args, created, ? FROM journal WHERE seq = ?",
                    (error, entry.seq),
                )
                self._conn.execute("DELETE FROM journal WHERE seq = ?", (entry.seq,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def dead_letters(self) -> list[tuple[JournalEntry, str]]:
        """Entries the primary refused, with the reason, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id, op, args, created, error FROM dead_letters ORDER BY seq"
            ).fetchall()
        return [(JournalEntry(seq, i, op, orjson.loads(a), c), err) for seq, i, op, a, c, err in rows]

    def acquire_replay(self) -> bool:
        """Take (or renew) the replay lease; False while another live process holds it.

        Several processes may share one journal file; only one replays at a time, so
        no entry is applied twice and entries reach the primary in journal order.
        """
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT owner, heartbeat FROM replayer WHERE one = 1").fetchone()
                free = row is None or row[0] == self._owner or row[1] < now - LEASE_SECONDS
                if free:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO replayer (one, owner, heartbeat) VALUES (1, ?, ?)", (self._owner, now)
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return free

    def release_replay(self) -> None:
        """Give the replay lease back."""
        with self._lock:
            self._conn.execute("DELETE FROM replayer WHERE one = 1 AND owner = ?", (self._owner,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM journal").fetchone()[0])

    def close(self) -> None:
        """Close the file; pending entries stay on disk for the next process."""
        with self._lock:
            self._conn.close()
