"""PostgreSQL through config and the manager: separate fields, URL, sslmode warning, fallback-free connect."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest

from kvstore import StorageManager
from kvstore.config import PostgresDatabaseConfig
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

pytestmark = pytest.mark.postgres


def test_separate_fields_are_honoured(postgres_url: str) -> None:
    """host/port/dbname/user/password given as fields (no URL) reach the server."""
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    config = PostgresDatabaseConfig(
        host=str(info["host"]),
        port=int(str(info["port"])),
        dbname=str(info["dbname"]),
        user=str(info["user"]),
        password="ignored-by-trust",
        key_prefix=f"fields-{uuid.uuid4().hex[:6]}:",
    )
    with PostgresDatabase.from_config(config) as db:
        db.set("k", 1)
        assert db.get("k") == 1
        assert f"port={info['port']}" in repr(db)
        db.clear()


def test_fields_override_the_url() -> None:
    """An explicit field wins over the URL's; an unset field leaves the URL's value."""
    config = PostgresDatabaseConfig(url="postgresql://app@db.internal:5433/app", dbname="other", sslmode="verify-full")
    db = PostgresDatabase(config.url, dbname=config.dbname, sslmode=config.sslmode)
    info = psycopg.conninfo.conninfo_to_dict(db._conninfo)
    assert (info["host"], info["port"], info["dbname"], info["user"]) == ("db.internal", "5433", "other", "app")
    db.close()


def test_unverified_remote_server_warns(caplog: pytest.LogCaptureFixture) -> None:
    """A non-local host without certificate verification logs a warning; verify-full or localhost do not."""
    with caplog.at_level(logging.WARNING, logger="kvstore"):
        PostgresDatabase("postgresql://app@db.example.com/app").close()
    assert "sslmode=verify-full" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kvstore"):
        PostgresDatabase("postgresql://app@db.example.com/app", sslmode="verify-full").close()
        PostgresDatabase("postgresql://app@127.0.0.1/app").close()
    assert caplog.text == ""


def test_manager_connects_postgres_tier(postgres_url: str) -> None:
    """StorageManager with a postgres database config (no fallback) serves lists and values from it."""
    prefix = f"mgr-{uuid.uuid4().hex[:6]}:"
    config = {
        "cache": {"type": "memory"},
        "database": {"type": "postgres", "url": postgres_url, "key_prefix": prefix, "fallback": []},
    }
    with StorageManager(config) as storage:
        assert storage.database.append("history:42", {"role": "user", "content": "hi"}) == 1
        assert storage.database.get_range("history:42", -20, -1) == [{"role": "user", "content": "hi"}]
        report = storage.health()
        assert report.database.active == "postgres"
        assert report.database.healthy
        storage.database.clear()


async def test_async_store_opens_lazily(postgres_url: str) -> None:
    """An async store built from a URL connects and migrates on first use."""
    db = AsyncPostgresDatabase(postgres_url, key_prefix=f"lazy-{uuid.uuid4().hex[:6]}:")
    assert "not connected" in repr(db)
    await db.set("k", "v")
    assert await db.get("k") == "v"
    assert " open>" in repr(db)
    await db.clear()
    await db.aclose()
    assert "closed" in repr(db)


@pytest.mark.postgres
def test_call_timeout_comes_from_config(postgres_url: str) -> None:
    """call_timeout in the config sets the client-side deadline; without it, statement_timeout + 0.25 s."""
    explicit = PostgresDatabase.from_config(
        PostgresDatabaseConfig(url=postgres_url, call_timeout=0.7, key_prefix="ct:")
    )
    default = PostgresDatabase.from_config(
        PostgresDatabaseConfig(url=postgres_url, statement_timeout=1.0, key_prefix="ct:")
    )
    try:
        assert explicit._call_timeout == pytest.approx(0.7)
        assert default._call_timeout == pytest.approx(1.25)
    finally:
        explicit.close()
        default.close()
