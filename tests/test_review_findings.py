"""Defects found by the adversarial review of the one-home-per-operation change, each proven on real stores."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvstore import BackendUnavailableError, StorageManager
from tests.test_degraded_mode import _failover, _pg, _probe_soon


@pytest.mark.postgres
def test_a_trim_whose_outcome_is_unknown_is_not_buffered_and_replayed_a_second_time(
    postgres_url: str, tmp_path: Path
) -> None:
    """A trim that reached PostgreSQL but lost its reply (call deadline) while tripping the breaker is never
    journaled: replaying it would apply it twice (trim(1, -1) would drop two items)."""
    import psycopg

    prefix = f"trim2x-{uuid.uuid4().hex[:6]}:"
    # The call deadline is far shorter than the lock wait: the watchdog cuts the call, the statement runs later.
    config = _pg(postgres_url, tmp_path, key_prefix=prefix, statement_timeout=5, call_timeout=0.4, probe_interval=60)
    with StorageManager(config) as storage:
        database = _failover(storage)
        database.extend("h", list(range(6)))
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT 1 FROM kvstore_entries WHERE ns = %s AND key = %s FOR UPDATE", (prefix, "h"))
            outcome: Any
            try:
                outcome = database.trim("h", 1, -1)  # drop the oldest item
            except BackendUnavailableError as exc:
                outcome = exc
            holder.commit()  # the lock goes: the server runs the trim it received
        time.sleep(0.3)
        _probe_soon(database)
        database.exists("probe")  # probes, replays what was journaled, fails back
        assert database.breaker.state.value == "closed"
        assert database.get_range("h", 0, -1) == [1, 2, 3, 4, 5]
        assert isinstance(outcome, BackendUnavailableError), outcome  # outcome unknown: said so, not buffered


def test_trimming_a_history_trimmed_by_kvstore_0_1_never_brings_back_its_trimmed_messages(tmp_path: Path) -> None:
    """A legacy trim offset (meta {"offset": n}) is honoured by the physical trim: messages it hid stay gone."""
    from kvstore import ChatHistory, SqliteDatabase

    with SqliteDatabase(tmp_path / "chat.db") as database:
        history = ChatHistory(database, "c1", model=dict)
        history.extend([{"n": i} for i in range(10)])
        database.set("chat.meta:c1", {"offset": 8})  # kvstore 0.1 kept the newest 2 by an offset
        assert [m["n"] for m in history.last(20)] == [8, 9]
        assert history.trim(5) == 0  # 2 kept already: nothing more to drop
        assert [m["n"] for m in history.last(20)] == [8, 9]
        assert history.count() == 2
        history.extend([{"n": 10}])
        assert history.trim(1) == 2
        assert [m["n"] for m in history.last(20)] == [10]


@pytest.mark.parametrize("through", ["sqlite", "manager"])
def test_delete_many_of_a_single_string_raises_instead_of_deleting_its_characters(tmp_path: Path, through: str) -> None:
    """delete_many("ab") is a TypeError (as extend("ab") is), never a delete of the keys "a" and "b"."""
    from kvstore import SqliteDatabase

    config = {
        "cache": {"type": "memory"},
        "database": {"type": "sqlite", "path": str(tmp_path / "db.sqlite"), "state_dir": str(tmp_path / "state")},
    }
    with StorageManager(config) as storage:
        database: Any = storage.database if through == "manager" else SqliteDatabase(tmp_path / "own.db")
        for store in (database, storage.cache):
            store.mset({"a": 1, "b": 2, "ab": 3})
            with pytest.raises(TypeError):
                store.delete_many("ab")
            with pytest.raises(TypeError):
                store.mget("ab")
            assert store.mget(["a", "b", "ab"]) == [1, 2, 3]
        if through != "manager":
            database.close()


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_a_trim_entry_replayed_again_after_an_interrupted_replay_is_not_applied_twice(
    postgres_url: str, tmp_path: Path, kind: str
) -> None:
    """A replay that applied and restamped a trim but died before marking it done: the next one keeps it
    as a conflict instead of trimming again (trim(1, -1) twice drops two items)."""
    from kvstore._resilience.failover import _ReplayRun
    from tests.test_degraded_mode import _primary_config

    with StorageManager(_primary_config(kind, postgres_url, tmp_path)) as storage:
        database = _failover(storage)
        database.extend("h", list(range(6)))
        database.breaker.trip("outage for the test")
        database.trim("h", 1, -1)
        journal = database.journal
        assert journal is not None
        (entry,) = journal.pending()
        run = _ReplayRun(journal, database._replay_run(journal).offset)
        database._replay(run, entry)  # applied and restamped; the process dies before journal.done
        database._replay(run, entry)  # the next failback meets the same entry
        assert database.primary.get_range("h", 0, -1) == [1, 2, 3, 4, 5]
        assert [(e.kind, keys) for e, keys in journal.conflicts()] == [("trim", ["h"])]
