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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    op TEXT NOT NULL,
    args BLOB NOT NULL,
    created REAL NOT NULL
)
"""


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
        self._conn.execute(_SCHEMA)

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

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM journal").fetchone()[0])

    def close(self) -> None:
        """Close the file; pending entries stay on disk for the next process."""
        with self._lock:
            self._conn.close()
