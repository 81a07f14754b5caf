# Generated from tests/_async/test_watch_fallback.py by tools/unasync.py: do not edit; edit the async source.
"""A watch that follows the failover tier's fallback ends once the primary serves again (async and sync).

A process that starts while its PostgreSQL primary is down reads from its fallback
(``degraded_reads="auto"``), and so does its `watch`, with the fallback's positions. Once
the primary answers, writes go to it (the outage journal replayed first): the watch must
not go on waiting on the fallback forever. It ends with `WatchRestartError` (a
`BackendUnavailableError`), and a new watch follows the primary.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvstore import StorageManager
from kvstore.errors import BackendUnavailableError, KVStoreError, WatchRestartError
from tests.fixtures_postgres import PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POLL = 0.05
PROBE = 0.3
#: How soon after the primary is back the fallback watch must have ended: a probe interval, a
#: poll interval and the probe itself (connect, replay of the outage journal), with room for a
#: loaded machine. Without the fix it never ends.
BOUND = 5.0


def _config(url: str, tmp_path: Path, fallback: str) -> dict[str, Any]:
    return {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": url,
            "probe_interval": PROBE,
            "connect_timeout": 1.0,
            "statement_timeout": 1.0,
            "pool_timeout": 1.0,
            "fallback": [fallback],
            "state_dir": str(tmp_path / "state"),
        },
    }


@dataclass
class _Outcome:
    """What one watch yielded, and how it ended (the error and when)."""

    items: list[tuple[int, Any]] = field(default_factory=list)
    error: KVStoreError | None = None
    ended_at: float = 0.0


def _follow(items: Any, outcome: _Outcome) -> None:
    try:
        for item in items:
            outcome.items.append((item.position, item.value))
    except KVStoreError as exc:
        outcome.error = exc
        outcome.ended_at = time.monotonic()


def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.02)


def _take(items: Any, n: int) -> list[tuple[int, Any]]:
    got: list[tuple[int, Any]] = []
    for item in items:
        got.append((item.position, item.value))
        if len(got) == n:
            break
    return got


@pytest.mark.parametrize("fallback", ["sqlite", "memory"])
def test_a_fallback_watch_ends_once_the_primary_serves_and_a_new_watch_follows_the_primary(
    tmp_path: Path, owned_postgres: PgServer, fallback: str
) -> None:
    config = _config(owned_postgres.url, tmp_path, fallback)
    with StorageManager(config) as seed:  # history the primary holds before the outage
        seed.database.extend("log", ["h0", "h1", "h2"])
    owned_postgres.pg_ctl("-m", "fast", "-w", "stop")

    outcome = _Outcome()
    with StorageManager(config) as storage:
        database: Any = storage.database
        assert database.active == fallback  # the primary was down at connect: it never served
        items = database.watch("log", start=0, poll_interval=POLL)
        consumer = threading.Thread(target=_follow, args=(items, outcome), daemon=True)
        consumer.start()
        try:
            database.append("log", "a")
            database.append("log", "b")
            _until(lambda: len(outcome.items) == 2, 10, "the fallback watch yields the outage appends")
            assert outcome.items == [(0, "a"), (1, "b")]  # the fallback's positions
            # The primary comes back; nothing more is appended, the watch waits on the fallback.
            owned_postgres.start()
            back = time.monotonic()
            _until(lambda: outcome.error is not None, 3 * BOUND, "the fallback watch ends")
        finally:
            consumer.join(3 * BOUND)
        assert outcome.ended_at - back < BOUND
        assert outcome.items == [(0, "a"), (1, "b")]  # nothing repeated, nothing invented
        error = outcome.error
        assert isinstance(error, WatchRestartError), error  # typed: a planned end, not an outage
        assert isinstance(error, BackendUnavailableError)  # what callers caught before
        assert (error.operation, error.key, error.backend) == ("watch", "log", fallback)
        assert "answers again" in error.message
        assert "new watch" in error.message
        assert database.active == "postgres"
        assert database.events["replayed"] == 2

        # A new watch follows the primary: its positions, the outage's appends replayed after the history.
        again = database.watch("log", start=0, poll_interval=POLL)
        try:
            assert _take(again, 5) == [(0, "h0"), (1, "h1"), (2, "h2"), (3, "a"), (4, "b")]
            database.append("log", "c")
            assert _take(again, 1) == [(5, "c")]
        finally:
            again.close()
