"""PostgreSQL append with an idempotency id: retried like an idempotent write when the reply is lost."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from kvstore import BackendUnavailableError
from kvstore.postgres import PostgresDatabase

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def lose_next_reply(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Arm it (append True): the next append statement commits, then its connection dies before the reply."""
    armed: list[bool] = []
    real = psycopg.Cursor.execute

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> psycopg.Cursor[Any]:
        result = real(self, query, *args, **kwargs)
        if armed and isinstance(query, str) and '_push"(' in query:  # the append (autocommit: committed)
            armed.clear()
            self.connection.pgconn.finish()  # committed on the server; the client never hears back
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    return armed


def test_append_with_an_id_is_retried_after_a_lost_commit_reply(postgres_url: str, lose_next_reply: list[bool]) -> None:
    """A committed append whose reply was lost is retried on the next connection and found by its id: one item."""
    db = PostgresDatabase(postgres_url, max_size=2)
    key = f"h-{uuid.uuid4().hex}"
    db.open()  # the migration's transaction is not the one to break
    try:
        lose_next_reply.append(True)
        assert db.append(key, "x", idempotency_id=uuid.uuid4().hex) == 1
        assert not lose_next_reply  # the fault did fire
        assert db.extend(key, ["y"], idempotency_id=uuid.uuid4().hex) == 2
        assert db.get_range(key, 0, -1) == ["x", "y"]
    finally:
        db.delete(key)
        db.close()


def test_append_without_an_id_is_not_retried_after_commit(postgres_url: str, lose_next_reply: list[bool]) -> None:
    """Without an id the same lost reply reaches the caller (a blind retry could duplicate the item)."""
    db = PostgresDatabase(postgres_url, max_size=2)
    key = f"h-{uuid.uuid4().hex}"
    db.open()  # the migration's transaction is not the one to break
    try:
        lose_next_reply.append(True)
        with pytest.raises(BackendUnavailableError):
            db.append(key, "x")
        assert db.get_range(key, 0, -1) == ["x"]  # it had committed: only the caller cannot know
    finally:
        db.delete(key)
        db.close()
