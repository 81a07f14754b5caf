"""Failover replay with idempotency ids on a real PostgreSQL: journaled appends land exactly once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvstore import BackendUnavailableError
from kvstore._resilience.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from kvstore._resilience.failover import FailoverDatabase, _ReplayRun
from kvstore.postgres import PostgresDatabase
from kvstore.sqlite import SqliteDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROBE = 0.2


def _failover(url: str, tmp_path: Path) -> FailoverDatabase:
    primary = PostgresDatabase(url, pool_timeout=1.0, connect_timeout=1.0, max_size=2)
    primary.open()
    return FailoverDatabase(
        primary,
        SqliteDatabase(tmp_path / "fallback.db"),
        journal_path=tmp_path / "journal.db",
        breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=PROBE)),
    )


def _wait_until_up(store: PostgresDatabase, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.ping()
            return
        except BackendUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _fail_back(db: FailoverDatabase) -> None:
    time.sleep(PROBE * 1.5)
    db.get_length("any")  # the first call after probe_interval probes, replays and fails back
    assert db.breaker.state is BreakerState.CLOSED
    assert len(db.journal) == 0


def test_replaying_one_journal_entry_twice_appends_once(tmp_path: Path, owned_postgres: Any) -> None:
    """A crash after the primary acknowledged a replayed append (journal entry not yet done) never duplicates it."""
    db = _failover(owned_postgres.url, tmp_path)
    try:
        db.append("chat", "before")
        owned_postgres.pg_ctl("-m", "fast", "-w", "stop")
        for i in range(3):
            db.append("chat", i)  # served by SQLite and journaled
        db.extend("chat", [3, 4])
        assert db.active == "sqlite"
        entries = db.journal.pending()
        assert [e.kind for e in entries] == ["append", "append", "append", "append"]
        owned_postgres.start()
        _wait_until_up(db.primary)
        # Replay the first entry twice without journal.done(), as a process killed after
        # the primary's reply and restarted would; then the real failback replays it again.
        for entry in (entries[0], entries[0], entries[1]):
            db._replay(_ReplayRun(db.journal, 0.0), entry)
        _fail_back(db)
        assert db.events["replayed"] == 4
        assert db.get_range("chat", 0, -1) == ["before", 0, 1, 2, 3, 4]
        db._replay(_ReplayRun(db.journal, 0.0), entries[3])  # the extend replayed once more: still once
        assert db.get_range("chat", 0, -1) == ["before", 0, 1, 2, 3, 4]
    finally:
        db.close()


@pytest.mark.parametrize("given_id", [None, "caller-retry-1"])
def test_append_whose_reply_was_lost_before_the_outage_lands_once(
    tmp_path: Path, postgres_url: str, given_id: str | None
) -> None:
    """An append the primary applied but whose reply was lost is retried, then journaled with the same id
    (the caller's when given) and replayed: the primary ends with it once."""
    db = _failover(postgres_url, tmp_path)
    key = f"chat-{uuid.uuid4().hex}"
    real_append = db.primary.append
    sent: list[str | None] = []

    def reply_lost(key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        sent.append(idempotency_id)
        real_append(key, value, idempotency_id=idempotency_id)
        raise BackendUnavailableError("connection lost before the reply", backend="postgres", operation="append")

    try:
        db.append(key, "before")
        db.primary.append = reply_lost  # type: ignore[method-assign]  # the fault: applied, reply lost
        db.append(key, "once", idempotency_id=given_id)  # retried, then served by the fallback
        assert db.active == "sqlite"
        (entry,) = db.journal.pending()
        assert sent == [entry.data["id"], entry.data["id"]]  # one id: the retry, the journal and the replay
        if given_id is not None:
            assert entry.data["id"] == given_id
        del db.primary.append  # the primary answers again
        _fail_back(db)
        assert db.get_range(key, 0, -1) == ["before", "once"]
    finally:
        db.clear()
        db.close()
