"""A frozen PostgreSQL (SIGSTOP) behind the storage manager: calls fail over to SQLite within the call
deadline, and traffic returns to PostgreSQL with the journaled writes replayed after SIGCONT."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kvstore import BackendUnavailableError, StorageManager
from kvstore.postgres import PostgresDatabase
from tests.fixtures_postgres import PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_frozen_postgres_fails_over_to_sqlite_within_the_deadline_and_back(
    tmp_path: Path, owned_postgres: PgServer
) -> None:
    """Frozen Postgres: every call returns within the call deadline + 100 ms, fewer than failure_threshold
    raise, the rest are served by SQLite; after SIGCONT the tier is back on Postgres with the writes replayed."""
    statement_timeout, threshold = 0.25, 3
    deadline = statement_timeout + 0.25  # the default call deadline: statement_timeout + 0.25 s
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": owned_postgres.url,
            "statement_timeout": statement_timeout,
            "probe_interval": 0.5,
            "failure_threshold": threshold,
            "fallback": [{"type": "sqlite", "path": str(tmp_path / "fb.db")}],
            "state_dir": str(tmp_path / "state"),
        },
    }
    acked_sets: dict[str, int] = {}
    acked_appends: list[int] = []
    raised: list[str] = []
    worst = 0.0
    with StorageManager(config) as storage:
        database: Any = storage.database
        database.set("before", 1)
        database.append("chat", -1)
        acked_appends.append(-1)
        with owned_postgres.frozen():
            i, end = 0, time.monotonic() + 3.0
            while time.monotonic() < end:
                for op in ("set", "append", "get", "mget", "get_range"):
                    start = time.monotonic()
                    try:
                        if op == "set":
                            database.set(f"k{i}", i)
                            acked_sets[f"k{i}"] = i
                        elif op == "append":
                            database.append("chat", i)
                            acked_appends.append(i)
                        elif op == "get":
                            database.get(f"k{i}")
                        elif op == "mget":
                            database.mget([f"k{i}"])
                        else:
                            database.get_range("chat", -1, -1)  # the tail this outage appended
                    except BackendUnavailableError as exc:
                        raised.append(f"{op}: {exc}")  # allowed only until the breaker opens
                    worst = max(worst, time.monotonic() - start)
                i += 1
                time.sleep(0.01)  # a few hundred journaled writes, replayed in well under a second
            assert database.active == "sqlite"
            # Degraded reads never pretend: what only Postgres knows raises instead of reading as absent.
            with pytest.raises(BackendUnavailableError, match="truthfully"):
                database.mget([f"k{i - 1}", "before"])
            with pytest.raises(BackendUnavailableError, match="truthfully"):
                database.get_length("chat")
        last = next(reversed(acked_sets))  # written during the outage: readable before failback too
        thawed = time.monotonic()
        while database.active != "postgres" and time.monotonic() - thawed < 10:
            database.get(last)  # a call after probe_interval probes Postgres and fails back
            time.sleep(0.05)
        back_after = time.monotonic() - thawed
        report = storage.health()
        replayed = database.events["replayed"]
    print(
        f"\nfrozen postgres: {i} rounds, worst call {worst * 1000:.0f} ms (deadline {deadline * 1000:.0f} ms); "
        f"{len(raised)} call(s) raised before the breaker opened; back on postgres {back_after:.2f} s after "
        f"SIGCONT; {replayed} journaled write(s) replayed"
    )
    print("\n".join(raised))
    assert worst < deadline + 0.1
    # Reads of what only Postgres knows raise by design (strict degraded reads); the rest only before the breaker opens.
    assert len([r for r in raised if "truthfully" not in r]) < threshold, raised
    assert report.database.active == "postgres"
    assert replayed >= len(acked_sets)
    with PostgresDatabase(owned_postgres.url) as check:
        assert check.mget(list(acked_sets)) == list(acked_sets.values())
        chat = check.get_range("chat", 0, -1)
    # Every acknowledged append is there once and in order (an append that raised may be there or not).
    assert [m for m in chat if m in acked_appends] == acked_appends
    assert len(chat) == len(set(chat))
