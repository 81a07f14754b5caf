"""A statement cancelled on request (pg_cancel_backend) and the URL's own lock_timeout, on a real server."""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import quote

import psycopg
import pytest

from kvstore import BackendBusyError, PostgresDatabase

pytestmark = pytest.mark.postgres


def _with_options(url: str, options: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options={quote(options)}"


def test_a_statement_cancelled_by_pg_cancel_backend_is_busy_and_says_it_was_a_request(postgres_url: str) -> None:
    """A set waiting on a row lock, cancelled by pg_cancel_backend: BackendBusyError naming a cancel
    request, not the statement_timeout; the value is unchanged and the store keeps working."""
    prefix, app = f"cancel-{uuid.uuid4().hex[:6]}:", f"kvstore-cancel-{uuid.uuid4().hex[:6]}"
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}application_name={app}"
    db = PostgresDatabase(url, key_prefix=prefix, statement_timeout=20)
    errors: list[BaseException] = []
    try:
        db.set("row", 1)
        with psycopg.connect(postgres_url) as holder, psycopg.connect(postgres_url, autocommit=True) as admin:
            holder.execute("SELECT 1 FROM kvstore_entries WHERE ns = %s AND key = %s FOR UPDATE", (prefix, "row"))

            def blocked_set() -> None:
                try:
                    db.set("row", 2)
                except BaseException as exc:  # recorded for the assertions below
                    errors.append(exc)

            writer = threading.Thread(target=blocked_set)
            writer.start()
            deadline, cancelled = time.monotonic() + 10, False
            while not cancelled and time.monotonic() < deadline:
                row = admin.execute(
                    "SELECT bool_or(pg_cancel_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s AND wait_event_type = 'Lock'",
                    (app,),
                ).fetchone()
                cancelled = bool(row and row[0])
                time.sleep(0.02)
            writer.join(10)
            holder.rollback()
        assert cancelled, "the set never waited on the lock"
        assert len(errors) == 1
        error = errors[0]
        assert isinstance(error, BackendBusyError), repr(error)
        assert "cancelled set on request" in str(error)
        assert "statement_timeout" not in str(error)
        assert error.operation == "set"
        assert db.get("row") == 1
        db.set("row", 3)
        assert db.get("row") == 3
    finally:
        db.close()


def test_the_urls_own_lock_timeout_is_kept(postgres_url: str) -> None:
    """options=-c lock_timeout=200 in the URL: a write on a row locked elsewhere is busy after ~0.2 s,
    not after kvstore's default (0.8 x statement_timeout = 8 s here)."""
    prefix = f"lockt-{uuid.uuid4().hex[:6]}:"
    db = PostgresDatabase(_with_options(postgres_url, "-c lock_timeout=200"), key_prefix=prefix, statement_timeout=10)
    try:
        db.set("row", 1)
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT 1 FROM kvstore_entries WHERE ns = %s AND key = %s FOR UPDATE", (prefix, "row"))
            began = time.monotonic()
            with pytest.raises(BackendBusyError):
                db.set("row", 2)
            took = time.monotonic() - began
            holder.rollback()
        assert took < 2.0, f"busy after {took:.2f} s: the URL's lock_timeout was overridden"
        assert db.get("row") == 1
    finally:
        db.close()
