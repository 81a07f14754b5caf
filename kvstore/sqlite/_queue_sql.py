"""SQLite job queue, blocking part: its table and the transaction bodies (run by `SqliteEngine._write`).

One table in the store's file, ``kvstore_queue_jobs``, shared by every queue name and
key prefix (``(ns, queue)`` selects a queue); same states and columns as the PostgreSQL
queue (`kvstore.postgres._queue_sql`). Every body runs inside ``BEGIN IMMEDIATE``, so a
claim reads and takes its job under the file's write lock: two processes never take the
same one. Ids are ``AUTOINCREMENT``: never reused after acknowledged rows are swept, so
``(id, attempt)`` names one lease for good. Times are the store's clock, in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvstore.queue._job import QueueStats, RawJob

__all__ = [
    "CREATE",
    "PURGE_BATCH",
    "ack",
    "claim",
    "create",
    "dead",
    "enqueue",
    "fail",
    "heartbeat",
    "next_due",
    "release",
    "stats",
]

T = "kvstore_queue_jobs"
#: Acknowledged rows one sweep deletes at most (a sweep that deleted this many is followed by
#: another at the next claim).
PURGE_BATCH = 1000
_LIVE = "('ready', 'running', 'failed')"
_COLUMNS = "id, payload, attempt, max_attempts, enqueued_at, visible_at, dedupe_key, last_error"

CREATE = (
    f"""CREATE TABLE IF NOT EXISTS {T} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ns TEXT NOT NULL,
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        visible_at REAL NOT NULL,
        enqueued_at REAL NOT NULL,
        finished_at REAL,
        dedupe_key TEXT,
        last_error TEXT
    )""",
    f"CREATE INDEX IF NOT EXISTS {T}_claim ON {T} (ns, queue, visible_at, id) WHERE state IN {_LIVE}",
    f"CREATE UNIQUE INDEX IF NOT EXISTS {T}_dedupe ON {T} (ns, queue, dedupe_key) "
    f"WHERE dedupe_key IS NOT NULL AND state IN {_LIVE}",
    f"CREATE INDEX IF NOT EXISTS {T}_done ON {T} (finished_at) WHERE state = 'done'",
)


def _raw(row: Any) -> RawJob:
    id_, payload, attempt, max_attempts, enqueued_at, visible_at, dedupe, error = row
    return (int(id_), payload, int(attempt), int(max_attempts), float(enqueued_at), float(visible_at), dedupe, error)


def create(cur: Any, now_ms: float) -> None:
    for statement in CREATE:
        cur.execute(statement)


def enqueue(
    cur: Any, now_ms: float, ns: str, queue: str, payload: str, delay: float, dedupe: str | None, max_attempts: int
) -> tuple[int, bool]:
    now = now_ms / 1000
    if dedupe is not None:
        rows = cur.execute(
            f"SELECT id FROM {T} WHERE ns = ? AND queue = ? AND dedupe_key = ? AND state IN {_LIVE}",
            (ns, queue, dedupe),
        ).fetchall()
        if rows:
            return int(rows[0][0]), False
    cur.execute(
        f"INSERT INTO {T} (ns, queue, state, payload, max_attempts, visible_at, enqueued_at, dedupe_key) "
        "VALUES (?, ?, 'ready', ?, ?, ?, ?, ?)",
        (ns, queue, payload, max_attempts, now + delay, now, dedupe),
    )
    return int(cur.connection.last_insert_rowid()), True


def claim(
    cur: Any, now_ms: float, ns: str, queue: str, lease: float, size_check: Callable[[int], None] | None = None
) -> RawJob | None:
    """Lease the next due job. ``size_check(payload bytes)`` may refuse to read a large payload
    here (on the event loop): it raises before anything is written."""
    now = now_ms / 1000
    while True:
        rows = cur.execute(
            f"SELECT state, attempt, max_attempts, id, octet_length(payload) FROM {T} "
            f"WHERE ns = ? AND queue = ? AND state IN {_LIVE} AND visible_at <= ? ORDER BY visible_at, id LIMIT 1",
            (ns, queue, now),
        ).fetchall()
        if not rows:
            return None
        state, attempt, max_attempts, id_, size = rows[0]
        if state == "running" and attempt >= max_attempts:
            # An expired lease of a job out of attempts: dead-lettered, and look further.
            cur.execute(
                f"UPDATE {T} SET state = 'dead', last_error = 'lease expired', finished_at = ? WHERE id = ?",
                (now, id_),
            )
            continue
        if size_check is not None:
            size_check(size)
        error = "lease expired" if state == "running" else None
        found = cur.execute(
            f"UPDATE {T} SET state = 'running', attempt = attempt + 1, visible_at = ?, "
            f"last_error = COALESCE(?, last_error) WHERE id = ? RETURNING {_COLUMNS}",
            (now + lease, error, id_),
        ).fetchall()
        return _raw(found[0])


def release(cur: Any, now_ms: float, ns: str, queue: str, job_id: int, attempt: int) -> None:
    cur.execute(
        f"UPDATE {T} SET state = CASE WHEN last_error IS NULL THEN 'ready' ELSE 'failed' END, "
        "attempt = attempt - 1, visible_at = ? "
        "WHERE id = ? AND ns = ? AND queue = ? AND state = 'running' AND attempt = ?",
        (now_ms / 1000, job_id, ns, queue, attempt),
    )


def heartbeat(cur: Any, now_ms: float, ns: str, queue: str, job_id: int, attempt: int, lease: float) -> float | None:
    rows = cur.execute(
        f"UPDATE {T} SET visible_at = ? WHERE id = ? AND ns = ? AND queue = ? AND state = 'running' "
        "AND attempt = ? RETURNING visible_at",
        (now_ms / 1000 + lease, job_id, ns, queue, attempt),
    ).fetchall()
    return float(rows[0][0]) if rows else None


def ack(cur: Any, now_ms: float, ns: str, queue: str, job_id: int, attempt: int) -> bool:
    rows = cur.execute(
        f"UPDATE {T} SET state = 'done', finished_at = CASE WHEN state = 'done' THEN finished_at ELSE ? END "
        "WHERE id = ? AND ns = ? AND queue = ? AND state IN ('running', 'done') AND attempt = ? RETURNING id",
        (now_ms / 1000, job_id, ns, queue, attempt),
    ).fetchall()
    return bool(rows)


def fail(
    cur: Any, now_ms: float, ns: str, queue: str, job_id: int, attempt: int, error: str, delay: float | None
) -> bool:
    now = now_ms / 1000
    state = "dead" if delay is None else "failed"
    rows = cur.execute(
        f"UPDATE {T} SET state = ?, last_error = ?, visible_at = ?, finished_at = ? "
        "WHERE id = ? AND ns = ? AND queue = ? AND state = 'running' AND attempt = ? RETURNING id",
        (state, error, now + (delay or 0.0), now if delay is None else None, job_id, ns, queue, attempt),
    ).fetchall()
    return bool(rows)


def _missing(cur: Any) -> bool:
    """Whether the file has no queue table yet (the reads run without creating it: no write lock)."""
    return not cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (T,)).fetchall()


def stats(cur: Any, now_ms: float, ns: str, queue: str) -> QueueStats:
    if _missing(cur):
        return QueueStats()
    now = now_ms / 1000
    row = cur.execute(
        "SELECT "
        "coalesce(sum(state = 'ready' AND visible_at <= ?), 0), coalesce(sum(state = 'ready' AND visible_at > ?), 0), "
        "coalesce(sum(state = 'running'), 0), coalesce(sum(state = 'failed'), 0), "
        f"coalesce(sum(state = 'dead'), 0), coalesce(sum(state = 'done'), 0) FROM {T} WHERE ns = ? AND queue = ?",
        (now, now, ns, queue),
    ).fetchall()[0]
    return QueueStats(*(int(n) for n in row))


def dead(cur: Any, now_ms: float, ns: str, queue: str, limit: int) -> list[RawJob]:
    if _missing(cur):
        return []
    rows = cur.execute(
        f"SELECT {_COLUMNS} FROM {T} WHERE ns = ? AND queue = ? AND state = 'dead' ORDER BY id LIMIT ?",
        (ns, queue, limit),
    ).fetchall()
    return [_raw(row) for row in rows]


def next_due(cur: Any, now_ms: float, ns: str, queue: str) -> float | None:
    if _missing(cur):
        return None
    rows = cur.execute(
        f"SELECT min(visible_at) FROM {T} WHERE ns = ? AND queue = ? AND state IN {_LIVE}", (ns, queue)
    ).fetchall()
    first = rows[0][0] if rows else None
    return None if first is None else float(first) - now_ms / 1000


def purge_done(cur: Any, now_ms: float, ns: str, queue: str, keep: float) -> int:
    # This queue's own: another queue (or key prefix) on the file keeps its jobs for its own keep_done.
    cur.execute(
        f"DELETE FROM {T} WHERE id IN (SELECT id FROM {T} WHERE state = 'done' AND ns = ? AND queue = ? "
        f"AND finished_at < ? LIMIT {PURGE_BATCH})",
        (ns, queue, now_ms / 1000 - keep),
    )
    return int(cur.connection.changes())
