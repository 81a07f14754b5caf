"""PostgreSQL busy is not an outage, sync API under threads; and the busy error mapping."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

from kvstore.errors import BackendBusyError, BackendUnavailableError
from kvstore.postgres import PostgresDatabase
from kvstore.postgres import _errors as pg

BIG = {"blob": "y" * (4 * 1024 * 1024)}


@pytest.mark.postgres
@pytest.mark.slow
def test_40_threads_getting_4mb_on_2_connections_succeed_or_are_busy(postgres_url: str) -> None:
    """40 threads x 2 gets of a 4 MB value on a pool of 2: exact value or BackendBusyError, never an outage."""
    db = PostgresDatabase(
        postgres_url, key_prefix=f"busy-{uuid.uuid4().hex[:8]}:", min_size=2, max_size=2, pool_timeout=0.05
    )
    results: list[Any] = []
    start = threading.Barrier(40)

    def worker() -> None:
        start.wait()
        for _ in range(2):
            try:
                results.append(db.get("big"))
            except Exception as exc:  # collected and checked below
                results.append(exc)

    try:
        db.set("big", BIG)
        threads = [threading.Thread(target=worker) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 80
        outage = [r for r in results if isinstance(r, BaseException) and not isinstance(r, BackendBusyError)]
        assert outage == []
        assert all(r == BIG for r in results if not isinstance(r, BaseException))
        assert any(isinstance(r, BackendBusyError) for r in results)
        assert any(not isinstance(r, BaseException) for r in results)
        assert db.get("big") == BIG
    finally:
        db.clear()
        db.close()


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.errors.LockNotAvailable("could not obtain lock on row"),
        psycopg.errors.TooManyConnections("too many connections for role"),
        psycopg.OperationalError("connection failed: FATAL:  sorry, too many clients already"),
        psycopg.OperationalError("connection failed: FATAL:  remaining connection slots are reserved"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    ],
    ids=["55P03", "53300", "too-many-clients", "reserved-slots", "statement-timeout"],
)
def test_server_saturation_maps_to_busy(exc: BaseException) -> None:
    """Lock not available, too many connections and a statement cancelled at statement_timeout become
    BackendBusyError, chained, with context."""
    with pytest.raises(BackendBusyError) as info, pg.map_errors("set", "k"):
        raise exc
    assert info.value.__cause__ is exc
    assert (info.value.backend, info.value.key, info.value.operation) == ("postgres", "k", "set")


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("connection failed: Connection refused"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    ],
    ids=["refused", "shutdown"],
)
def test_outages_stay_unavailable(exc: BaseException) -> None:
    """Refused and server shut down stay plain BackendUnavailableError (a statement the server
    cancelled at statement_timeout is a busy server: it answered)."""
    with pytest.raises(BackendUnavailableError) as info, pg.map_errors("get", "k"):
        raise exc
    assert type(info.value) is BackendUnavailableError
