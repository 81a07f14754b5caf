"""The outage journal: database-tier writes made while the primary is down, kept in order.

A small SQLite file (the standard library's ``sqlite3``, so it needs no extra) in
WAL mode with ``synchronous=FULL``: an outage write is committed here before it
touches the fallback or the caller hears back, survives a crash of the process,
and is replayed to the primary in order when it answers again. The journal is
also what a degraded read consults (DESIGN.md §8 "degraded reads never pretend"):
every key an outage write touched is indexed, so "what do I truthfully know about
this key" is one indexed query.

The file belongs to exactly one primary identity and is created only on the
first outage, owner-only (0600 in a 0700 directory). Several processes of one
identity may share it: writes interleave in one order, and one process at a time
replays (a lease with a heartbeat). Rows hold a record kind and its JSON form
(see ``kvstore._resilience.records_async``); this module never interprets them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kvstore.errors import BackendBusyError, BackendUnavailableError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, every turn is granted
    fcntl = None  # type: ignore[assignment]

__all__ = ["JOURNAL_TIMEOUT", "LEASE_SECONDS", "Journal", "JournalEntry", "create_private_file"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        data BLOB NOT NULL,
        created REAL NOT NULL
    )""",
    # Every key an entry touches ('' for a clear, which touches all): the degraded-read index.
    """CREATE TABLE IF NOT EXISTS journal_keys (
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (key, seq)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS journal_keys_seq ON journal_keys (seq)",
    # Entries the primary refused for good (e.g. WrongTypeError): kept for a human, never retried.
    """CREATE TABLE IF NOT EXISTS dead_letters (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        data BLOB NOT NULL,
        created REAL NOT NULL,
        error TEXT NOT NULL
    )""",
    # Writes not replayed because another instance changed their keys after they were made.
    """CREATE TABLE IF NOT EXISTS conflicts (
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data BLOB NOT NULL,
        created REAL NOT NULL,
        keys BLOB NOT NULL,
        found REAL NOT NULL
    )""",
    # Entries whose (non-idempotent) application to the primary has begun: one found here
    # again was interrupted (crash, lost reply) with its outcome unknown, so it is not re-applied.
    "CREATE TABLE IF NOT EXISTS applying (seq INTEGER PRIMARY KEY)",
    # At most one process replays a shared journal at a time (a lease with a heartbeat).
    """CREATE TABLE IF NOT EXISTS replayer (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        owner TEXT NOT NULL,
        heartbeat REAL NOT NULL
    )""",
)

#: Seconds after which a replayer that stopped heart-beating (a crashed process) loses its lease.
LEASE_SECONDS = 30.0
#: Seconds a journal write waits for another connection's lock before it gives up (its deadline).
JOURNAL_TIMEOUT = 2.0
#: Bytes kept allocated beside the journal (``<journal>.reserve``) and given back when the disk is full,
#: so that undoing an entry whose mirror the fallback refused (a few WAL pages) finds room.
RESERVE_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled write: its order, record kind, JSON arguments and local creation time."""

    seq: int
    kind: str
    data: Any
    created: float


def create_private_file(path: Path) -> None:
    """Create ``path`` (and its directory) readable by the owner only, or fail with `BackendUnavailableError`."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise BackendUnavailableError(
            f"cannot create {path} for the outage journal or fallback ({exc.strerror or exc}); "
            "set state_dir to a writable directory",
            operation="journal",
        ) from exc


# --- fork safety (DESIGN.md §8) -------------------------------------------------------------
#
# As for the SQLite store (see ``kvstore.sqlite._engine``): SQLite keeps the lock bookkeeping
# of a file per process, so a connection opened in a forked child while the inherited one is
# still open there takes no real locks. A parent closing its journal (its last connection)
# then checkpoints and deletes the WAL under the child, whose later writes go to the deleted
# file: acknowledged outage writes lost. In the child the inherited connection is closed
# first (which cannot harm the parent's), and the child takes a replay lease of its own.

_journals: weakref.WeakSet[Journal] = weakref.WeakSet()
#: Inherited connections that were in use at fork time: never touched (nor freed) in the child.
_abandoned: list[sqlite3.Connection] = []


def _reset_in_child() -> None:
    for journal in list(_journals):
        with contextlib.suppress(Exception):  # one journal failing must not leave the others shared
            journal._after_fork_in_child()
    # A turn another thread of the parent held at fork time is the parent's: the child's copy of
    # its descriptor would keep the lock held after the parent lets go (an flock belongs to the
    # open file, which the child shares). `_turns_lock`, held across the fork, makes "opened"
    # and "listed in `_turns_held`" one step for the child: it never inherits an unlisted turn.
    global _turns_lock
    _turns_lock = threading.Lock()
    for fd in list(_turns_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _turns_held.clear()


#: Descriptors of the turns (`Journal.try_take_turn`) this process holds now.
_turns_held: set[int] = set()
#: Held while a turn's descriptor is opened and listed, or unlisted and closed, and across a fork.
_turns_lock = threading.Lock()


def _before_fork() -> None:
    _turns_lock.acquire()


def _after_fork_in_parent() -> None:
    _turns_lock.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_reset_in_child)


class Journal:
    """An append-only queue of writes on a local SQLite file, plus its degraded-read index."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self._owner = uuid.uuid4().hex
        self._turn_file_ready = False
        _journals.add(self)
        with self._errors("open"):
            self._connection()

    def _after_fork_in_child(self) -> None:
        """In a forked child: close the child's copy of the parent's connection; a lease owner of its own."""
        busy_at_fork = self._lock.locked()  # another thread of the parent was inside SQLite: leave it be
        self._lock = threading.Lock()
        self._owner = uuid.uuid4().hex  # the parent's replay lease is not the child's
        conn, self._conn, self._pid = self._conn, None, -1
        if conn is None:
            return
        if busy_at_fork:
            _abandoned.append(conn)
        else:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __repr__(self) -> str:
        return f"<Journal {self.path!r}>"

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Journal:
        """Open the journal at ``path``, creating it (0600, directory 0700) when missing."""
        if str(path) != ":memory:":
            create_private_file(Path(path))
        return cls(path)

    # --- connection -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The connection of this process (a forked child opens its own; the parent's is never used)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        deadline, pause = time.monotonic() + JOURNAL_TIMEOUT, 0.001
        while True:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=JOURNAL_TIMEOUT)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # an acknowledged outage write survives a power cut too
                for statement in _SCHEMA:
                    conn.execute(statement)
            except sqlite3.OperationalError as exc:
                conn.close()
                # Processes making the journal at once (the first write of an outage, in each): SQLite
                # answers all but one "locked" at once, without waiting (its deadlock avoidance).
                text = str(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            self._conn, self._pid = conn, os.getpid()
            return conn

    @contextlib.contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        """sqlite3 errors as kvstore errors: a lock held elsewhere is busy, the rest unavailable."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise BackendBusyError(
                    f"the outage journal {self.path} is locked by another connection ({text}); "
                    f"gave up after {JOURNAL_TIMEOUT:g} s",
                    operation=operation,
                ) from exc
            raise BackendUnavailableError(
                f"the outage journal {self.path} cannot be written ({text})", operation=operation
            ) from exc
        except sqlite3.Error as exc:
            raise BackendUnavailableError(
                f"the outage journal {self.path} failed ({type(exc).__name__}: {exc})", operation=operation
            ) from exc

    @contextlib.contextmanager
    def _transaction(self, operation: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors(operation):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # e.g. a full disk: never leave this connection inside it
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    # --- room to undo an entry on a full disk ---------------------------------------------

    def _keep_reserve(self) -> None:
        """Allocate ``<journal>.reserve`` (`RESERVE_BYTES`) unless it exists; best effort."""
        if self.path == ":memory:":
            return
        path = self.path + ".reserve"
        if os.path.exists(path):
            return
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        try:
            os.write(fd, bytes(RESERVE_BYTES))
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
        finally:
            os.close(fd)

    def _release_reserve(self) -> bool:
        """Give the reserve's room back to the file system; whether there was one."""
        try:
            os.unlink(self.path + ".reserve")
        except OSError:
            return False
        return True

    # --- the writers' turn --------------------------------------------------------------

    def try_take_turn(self) -> int | None:
        """This process's turn to journal a write and mirror it to the fallback, if free now.

        Several processes (each its own manager) share one primary's journal and fallback
        file. Journaling and mirroring one write under one turn keeps the fallback in the
        journal's order, which is what replay gives the primary: a reader of the fallback never
        sees a conversation reordered by the failback. The turn is an ``flock`` on
        ``<journal>.lock`` (the kernel frees it when its holder dies) on a descriptor of its
        own, so two managers of one process take turns too. Returns the descriptor to pass to
        `end_turn`, or ``None`` when another holds the turn. Always granted where there is no
        ``flock`` (Windows) or no file (``:memory:``).
        """
        if fcntl is None or self.path == ":memory:":
            return -1
        if not self._turn_file_ready:  # owner-only, as the journal (0600; the umask can't widen it)
            create_private_file(Path(self.path + ".lock"))
            self._turn_file_ready = True
        with _turns_lock:  # no fork between opening the descriptor and listing it (see `_reset_in_child`)
            try:
                # O_CREAT: a lock file someone removed is made again (0600), not a failure of every write.
                fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise BackendUnavailableError(
                    f"cannot open {self.path}.lock for the outage journal ({exc.strerror or exc}); "
                    "set state_dir to a writable directory",
                    operation="journal",
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as exc:
                os.close(fd)
                raise BackendUnavailableError(
                    f"cannot lock {self.path}.lock for the outage journal ({exc.strerror or exc})", operation="journal"
                ) from exc
            _turns_held.add(fd)
        return fd

    @staticmethod
    def end_turn(fd: int) -> None:
        """Give the turn `try_take_turn` returned back (closing its descriptor frees the lock)."""
        with _turns_lock:
            if fd >= 0 and fd in _turns_held:
                _turns_held.discard(fd)
                os.close(fd)

    # --- writing ----------------------------------------------------------------------

    def record(self, kind: str, data: Any, keys: Iterable[str]) -> int:
        """Append a write touching ``keys`` (none: every key); committed to disk when this returns."""
        blob = orjson.dumps(data)
        self._keep_reserve()  # room to undo this entry should the disk fill before its mirror
        with self._transaction("journal") as conn:
            cursor = conn.execute(
                "INSERT INTO journal (kind, data, created) VALUES (?, ?, ?)", (kind, blob, time.time())
            )
            seq = int(cursor.lastrowid or 0)
            conn.executemany(
                "INSERT OR IGNORE INTO journal_keys (key, seq) VALUES (?, ?)", [(k, seq) for k in set(keys) or {""}]
            )
        return seq

    def begin_apply(self, seq: int) -> bool:
        """Mark entry ``seq`` as being applied; ``False`` when an earlier replay already began it."""
        with self._transaction("journal") as conn:
            return conn.execute("INSERT OR IGNORE INTO applying (seq) VALUES (?)", (seq,)).rowcount > 0

    def done(self, seq: int) -> None:
        """Forget an entry (replayed, or undone because applying it failed).

        On a full disk the reserve is given back and the entry forgotten in its room: an outage
        write the fallback refused for want of room must not stay journaled, to be replayed
        after its caller was told it failed.
        """
        try:
            self._forget(seq)
        except BackendUnavailableError as exc:
            if "full" not in str(exc.__cause__ or "") or not self._release_reserve():
                raise
            self._forget(seq)

    def _forget(self, seq: int) -> None:
        with self._transaction("journal") as conn:
            conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
            conn.execute("DELETE FROM journal_keys WHERE seq = ?", (seq,))

    def dead_letter(self, entry: JournalEntry, error: str) -> None:
        """Move an entry the primary refuses for good out of the queue, keeping it for inspection."""
        with self._transaction("journal") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (seq, kind, data, created, error) "
                "SELECT seq, kind, data, created, ? FROM journal WHERE seq = ?",
                (error, entry.seq),
            )
            conn.execute("DELETE FROM journal WHERE seq = ?", (entry.seq,))
            conn.execute("DELETE FROM journal_keys WHERE seq = ?", (entry.seq,))

    def conflict(self, entry: JournalEntry, keys: Iterable[str]) -> None:
        """Keep an entry (or part of it) that replay skipped because ``keys`` changed since it was made."""
        now = time.time()
        with self._transaction("journal") as conn:
            conn.execute(
                "INSERT INTO conflicts (seq, kind, data, created, keys, found) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.seq,
                    entry.kind,
                    orjson.dumps(entry.data),
                    entry.created,
                    orjson.dumps(sorted(keys)),
                    now,
                ),
            )

    # --- reading ----------------------------------------------------------------------

    def pending(self, limit: int = 500) -> list[JournalEntry]:
        """The oldest entries not yet replayed, in order."""
        with self._lock, self._errors("journal"):
            rows = (
                self._connection()
                .execute("SELECT seq, kind, data, created FROM journal ORDER BY seq LIMIT ?", (limit,))
                .fetchall()
            )
        return [JournalEntry(seq, kind, orjson.loads(data), created) for seq, kind, data, created in rows]

    def touching(self, keys: Iterable[str]) -> list[tuple[JournalEntry, list[str]]]:
        """Every pending entry touching one of ``keys``, once, in order, with the keys it touches among them.

        A clear touches every key: its list is ``[""]``.
        """
        wanted = sorted(set(keys))
        if not wanted:
            return []
        touched: dict[int, list[str]] = {}
        found: dict[int, tuple[JournalEntry, list[str]]] = {}
        with self._lock, self._errors("journal"):
            conn = self._connection()
            # Keys first, then each entry's data once: an mset touching 4,000 keys is read once,
            # not once per key.
            for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit, with room
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * (len(chunk) + 1))
                for key, seq in conn.execute(
                    f"SELECT key, seq FROM journal_keys WHERE key IN ({marks})", (*chunk, "")
                ).fetchall():
                    touched.setdefault(seq, []).append(key)
            seqs = sorted(touched)
            for start in range(0, len(seqs), 900):
                chunk_seqs = seqs[start : start + 900]
                marks = ",".join("?" * len(chunk_seqs))
                for seq, kind, data, created in conn.execute(
                    f"SELECT seq, kind, data, created FROM journal WHERE seq IN ({marks})", chunk_seqs
                ).fetchall():
                    found[seq] = (JournalEntry(seq, kind, orjson.loads(data), created), touched[seq])
        return [found[seq] for seq in sorted(found)]

    def dead_letters(self) -> list[tuple[JournalEntry, str]]:
        """Entries the primary refused, with the reason, oldest first."""
        with self._lock, self._errors("journal"):
            rows = (
                self._connection()
                .execute("SELECT seq, kind, data, created, error FROM dead_letters ORDER BY seq")
                .fetchall()
            )
        return [
            (JournalEntry(seq, kind, orjson.loads(data), created), error) for seq, kind, data, created, error in rows
        ]

    def conflicts(self) -> list[tuple[JournalEntry, list[str]]]:
        """Writes replay skipped, with the keys another instance had changed, oldest first."""
        with self._lock, self._errors("journal"):
            rows = (
                self._connection()
                .execute("SELECT seq, kind, data, created, keys FROM conflicts ORDER BY rowid")
                .fetchall()
            )
        return [
            (JournalEntry(seq, kind, orjson.loads(data), created), orjson.loads(keys))
            for seq, kind, data, created, keys in rows
        ]

    def skipped(self, seq: int, key: str) -> bool:
        """Whether replay did not apply entry ``seq`` to ``key`` (a conflict on it, or a dead letter).

        A write derived from that entry (an ``incr`` of the value it set) is then a conflict too.
        """
        with self._lock, self._errors("journal"):
            conn = self._connection()
            if conn.execute("SELECT 1 FROM dead_letters WHERE seq = ?", (seq,)).fetchone() is not None:
                return True
            rows = conn.execute("SELECT keys FROM conflicts WHERE seq = ?", (seq,)).fetchall()
        return any(key in orjson.loads(keys) for (keys,) in rows)

    def counts(self) -> tuple[int, int, int]:
        """``(pending, conflicts, dead letters)``."""
        with self._lock, self._errors("journal"):
            row = (
                self._connection()
                .execute(
                    "SELECT (SELECT count(*) FROM journal), (SELECT count(*) FROM conflicts), "
                    "(SELECT count(*) FROM dead_letters)"
                )
                .fetchone()
            )
        return int(row[0]), int(row[1]), int(row[2])

    def __len__(self) -> int:
        return self.counts()[0]

    # --- the replay lease -------------------------------------------------------------

    def acquire_replay(self) -> bool:
        """Take (or renew) the replay lease; False while another live process holds it.

        Several processes may share one journal file; only one replays at a time, so
        entries reach the primary in journal order.
        """
        now = time.time()
        with self._transaction("journal") as conn:
            row = conn.execute("SELECT owner, heartbeat FROM replayer WHERE one = 1").fetchone()
            free = row is None or row[0] == self._owner or row[1] < now - LEASE_SECONDS
            if free:
                conn.execute(
                    "INSERT OR REPLACE INTO replayer (one, owner, heartbeat) VALUES (1, ?, ?)", (self._owner, now)
                )
        return free

    def release_replay(self) -> None:
        """Give the replay lease back."""
        with self._transaction("journal") as conn:
            conn.execute("DELETE FROM replayer WHERE one = 1 AND owner = ?", (self._owner,))

    def close(self) -> None:
        """Close the file; pending entries stay on disk for the next process."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
