# Generated from tests/_async/test_postgres_freeze.py by tools/unasync.py: do not edit; edit the async source.
"""PostgreSQL client-side call deadline against a frozen server (every cluster process SIGSTOPped)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import pytest

from kvstore.config import PostgresDatabaseConfig
from kvstore.errors import BackendUnavailableError
from kvstore.postgres import PostgresDatabase
from kvstore.postgres import _watchdog as _wd
from tests.fixtures_postgres import PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEADLINE = 0.5
SLACK = 0.1


def _calls(db: PostgresDatabase) -> dict[str, Callable[[], Any]]:
    return {
        "get": lambda: db.get("k"),
        "set": lambda: db.set("k", {"v": 2}),
        "append": lambda: db.append("h", {"m": 2}),
        "mget": lambda: db.mget(["k", "k2"]),
        "get_range": lambda: db.get_range("h", -20, -1),
    }


def test_frozen_server_fails_each_call_within_its_deadline_then_recovers(owned_postgres: PgServer) -> None:
    """Frozen server: get, set, append, mget, get_range each raise BackendUnavailableError within the
    deadline + 100 ms; a normal workload before is never cut; after SIGCONT calls succeed, no stale connection."""
    db = PostgresDatabase(owned_postgres.url, key_prefix="fz:", min_size=2, max_size=4, call_timeout=DEADLINE)
    try:
        db.set("k", {"v": 1})
        db.append("h", {"m": 1})
        cuts = _wd.current.cuts
        for i in range(100):  # a normal workload: every call far inside the deadline, none cut
            db.set(f"w{i}", i)
            assert db.get(f"w{i}") == i
            db.append("w", i)
            assert db.get_range("w", -1, -1) == [i]
        assert _wd.current.cuts == cuts
        took: dict[str, float] = {}
        # The harness's own garbage now, not a full collection (a pause of the whole process,
        # the watchdog thread's cut included) inside the timed calls.
        gc.collect()
        with owned_postgres.frozen():
            for name, call in _calls(db).items():
                start = time.monotonic()
                with pytest.raises(BackendUnavailableError) as info:
                    call()
                took[name] = time.monotonic() - start
                assert info.value.backend == "postgres"
                assert info.value.operation == name
        print(
            f"\nfrozen postgres, deadline {DEADLINE * 1000:.0f} ms: "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in took.items())
        )
        assert max(took.values()) < DEADLINE + SLACK
        assert _wd.current.cuts > cuts  # the watchdog did it, not a driver timeout
        # Thawed: the cut connections were discarded, so the next calls succeed (the pool may
        # need a moment to reconnect, which a call waits for within its deadline).
        start, waits = time.monotonic(), 0
        while True:
            try:
                db.ping()
                break
            except BackendUnavailableError as exc:
                message = str(exc)
                assert "pool" in message, message  # waiting for a new connection, never a stale one
                waits += 1
                assert time.monotonic() - start < 10, "the pool did not reconnect after SIGCONT"
        print(
            f"first call after SIGCONT succeeded after {waits} pool wait(s), {(time.monotonic() - start) * 1000:.0f} ms"
        )
        for _ in range(20):
            for call in _calls(db).values():
                call()
        assert db.get("k") == {"v": 2}
    finally:
        db.close()


def test_connect_to_a_frozen_server_fails_within_connect_timeout(owned_postgres: PgServer) -> None:
    """from_config against a frozen postmaster (TCP connects, nothing answers) raises within connect_timeout."""
    config = PostgresDatabaseConfig(url=owned_postgres.url, connect_timeout=1.0)
    with owned_postgres.frozen():
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            PostgresDatabase.from_config(config)
        elapsed = time.monotonic() - start
    print(f"\nconnect to a frozen postmaster failed after {elapsed * 1000:.0f} ms (libpq minimum 2 s)")
    assert elapsed < 2.0 + SLACK  # libpq rounds connect_timeout up to whole seconds, at least 2
