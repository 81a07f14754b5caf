"""PostgreSQL busy is not an outage: a saturated pool, a role at its connection limit and a
held lock raise BackendBusyError; a server that is gone raises plain BackendUnavailableError."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from kvstore.errors import BackendBusyError, BackendUnavailableError
from kvstore.postgres import AsyncPostgresDatabase
from tests.fixtures_postgres import PgServer

pytestmark = pytest.mark.postgres

#: A value of about 4 MB (encoded), so a get holds its connection for a while.
BIG = {"blob": "x" * (4 * 1024 * 1024)}


def _prefix() -> str:
    return f"busy-{uuid.uuid4().hex[:8]}:"


@pytest.mark.slow
async def test_80_concurrent_gets_of_4mb_on_2_connections_succeed_or_are_busy(postgres_url: str) -> None:
    """80 concurrent gets of a 4 MB value on a pool of 2: each returns the exact value or raises
    BackendBusyError (a saturated pool against a healthy server), never a plain outage error."""
    db = AsyncPostgresDatabase(postgres_url, key_prefix=_prefix(), min_size=2, max_size=2, pool_timeout=0.05)
    db.batching = False  # 80 concurrent gets of one key would be one batched read: here each takes a connection
    try:
        await db.set("big", BIG)
        results = await asyncio.gather(*(db.get("big") for _ in range(80)), return_exceptions=True)
        outage = [r for r in results if isinstance(r, BaseException) and not isinstance(r, BackendBusyError)]
        assert outage == []
        ok = [r for r in results if not isinstance(r, BaseException)]
        busy = [r for r in results if isinstance(r, BackendBusyError)]
        assert all(r == BIG for r in ok)
        assert ok, "some calls must get through"
        assert busy, "80 gets of 4 MB on 2 connections cannot all fit in 0.05 s of waiting"
        assert all(b.backend == "postgres" and b.operation == "get" for b in busy)
        assert await db.get("big") == BIG  # the pool is fine afterwards
    finally:
        await db.clear()
        await db.aclose()


async def test_a_full_wait_queue_against_a_healthy_server_is_busy(postgres_url: str) -> None:
    """With max_waiting reached (TooManyRequests) while the server answers, calls raise BackendBusyError."""
    db = AsyncPostgresDatabase(postgres_url, key_prefix=_prefix(), min_size=1, max_size=1, max_waiting=1)
    db.batching = False  # each get takes its own connection (batched, the 12 would share one read)
    try:
        await db.set("big", BIG)
        results = await asyncio.gather(*(db.get("big") for _ in range(12)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors, "1 connection and a queue of 1 cannot take 12 calls at once"
        assert all(isinstance(e, BackendBusyError) for e in errors), errors
        assert all(r == BIG for r in results if not isinstance(r, BaseException))
    finally:
        await db.clear()
        await db.aclose()


async def test_a_role_at_its_connection_limit_is_busy(postgres_url: str) -> None:
    """A server refusing a connection with SQLSTATE 53300 (too many connections) is busy, not down."""
    role = f"kv_busy_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        await admin.execute(f"GRANT ALL ON SCHEMA public TO {role}")
        try:
            holder = await psycopg.AsyncConnection.connect(postgres_url, user=role, autocommit=True)
            try:
                db = AsyncPostgresDatabase(postgres_url, user=role, key_prefix=_prefix(), min_size=1, max_size=1)
                with pytest.raises(BackendBusyError, match="busy"):
                    await db.open()
                await db.aclose()
            finally:
                await holder.close()
        finally:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")


async def test_a_pool_whose_new_connections_are_refused_as_too_many_is_busy(postgres_url: str) -> None:
    """When the pool's connections die and the server refuses their replacements with 53300,
    a call that times out waiting for the pool raises BackendBusyError (the server is up)."""
    role = f"kv_busy_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
        await admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
        holders: list[psycopg.AsyncConnection[Any]] = []
        db = AsyncPostgresDatabase(postgres_url, user=role, schema_name=role, min_size=1, max_size=1, pool_timeout=1.0)
        try:
            await db.set("k", 1)
            holders.append(await psycopg.AsyncConnection.connect(postgres_url, user=role, autocommit=True))
            # The store's one pooled session goes; another client takes its slot at once.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> %s",
                (role, holders[0].info.backend_pid),
            )
            for _ in range(100):
                try:
                    holders.append(await psycopg.AsyncConnection.connect(postgres_url, user=role, autocommit=True))
                    break
                except psycopg.OperationalError:
                    await asyncio.sleep(0.02)
            assert len(holders) == 2
            with pytest.raises(BackendBusyError, match="busy"):
                await db.get("k")
        finally:
            for holder in holders:
                await holder.close()
            await db.aclose()
            await admin.execute(f"DROP SCHEMA {role} CASCADE")
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")


async def test_a_row_lock_past_lock_timeout_is_busy(postgres_url: str) -> None:
    """A write that waits on a row lock held by another transaction past lock_timeout (55P03) is busy."""
    schema = f"kv_lock_{uuid.uuid4().hex[:8]}"
    url = postgres_url + ("&" if "?" in postgres_url else "?") + "options=-c%20lock_timeout%3D100"
    db = AsyncPostgresDatabase(url, schema_name=schema, key_prefix="p:", max_size=1)
    try:
        await db.set("k", 1)
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute(
                psycopg.sql.SQL("SELECT 1 FROM {} WHERE ns = 'p:' AND key = 'k' FOR UPDATE").format(
                    psycopg.sql.Identifier(schema, "kvstore_entries")
                )
            )
            with pytest.raises(BackendBusyError) as info:
                await db.set("k", 2)
            assert info.value.key == "k"
            await other.rollback()
        await db.set("k", 3)
        assert await db.get("k") == 3
    finally:
        await db.aclose()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


@pytest.mark.slow
async def test_a_stopped_server_is_unavailable_not_busy(owned_postgres: PgServer) -> None:
    """Against a server that is gone (refused), every call raises BackendUnavailableError, never Busy."""
    db = AsyncPostgresDatabase(owned_postgres.url, key_prefix=_prefix(), min_size=2, max_size=2, pool_timeout=0.5)
    try:
        await db.set("k", 1)
        owned_postgres.pg_ctl("-m", "immediate", "-w", "stop")
        try:
            results = await asyncio.gather(*(db.get("k") for _ in range(8)), return_exceptions=True)
            assert all(isinstance(r, BackendUnavailableError) for r in results), results
            assert not any(isinstance(r, BackendBusyError) for r in results), results
        finally:
            owned_postgres.start()
    finally:
        await db.aclose()
