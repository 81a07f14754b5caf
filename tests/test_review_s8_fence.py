"""Review of the fence (a call cut at its deadline is never overtaken by the store's next statement).

Real servers, real signals: each test stops only its own store's server process (SIGSTOP; we run as
root, the server as postgres) and continues it at teardown whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kvstore.errors import BackendUnavailableError
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase, _store_async
from tests.fixtures_postgres import PgServer
from tests.forking import FORK
from tests.test_postgres_fence import _wait_gone

pytestmark = pytest.mark.postgres


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("cancels", [1, 2])
async def test_an_append_after_a_cancelled_one_whose_process_is_stopped_does_not_overtake_it(
    postgres_url: str, stopped: list[int], cancels: int
) -> None:
    """An append cancelled (asyncio.wait_for, a task group's teardown) while its server process is
    frozen is an outcome-unknown call like one cut at its deadline: psycopg closes the connection (after
    its 5 s wait for a server-side cancel, or at once when cancelled again) and the frozen process runs
    the statement when it thaws. Found by review: only a watchdog cut was fenced, so the writer's next
    append committed first and the list read [0, 2, 1]."""
    db = AsyncPostgresDatabase(
        postgres_url, key_prefix=f"rvf-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=20
    )
    await db.open()
    try:
        await db.append("l", 0)
        pid = int((await db._run("test", None, "SELECT pg_backend_pid()", None, "one"))[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        first = asyncio.ensure_future(db.append("l", 1))
        await asyncio.sleep(0.3)
        for _ in range(cancels):
            first.cancel()
            await asyncio.sleep(0.05)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(first, 15)
        second = asyncio.ensure_future(db.append("l", 2))
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGCONT)
        assert await asyncio.wait_for(second, 15) in (2, 3)
        _wait_gone(postgres_url, pid)
        assert await db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        await db.clear()
        await db.aclose()


async def test_a_store_whose_login_role_acts_as_another_still_waits_for_its_cut_process(
    owned_postgres: PgServer,
) -> None:
    """A login role that acts as another (``options=-c role=...`` in the URL, or ``ALTER ROLE ... SET
    role``): pg_stat_activity names the session (login) role, ``current_user`` is the other one. Found
    by review: the fence matched ``usename = current_user``, found nothing, dropped the fence, and the
    next append committed before the cut one: [0, 2, 1]. The acting role may not signal the login
    role's processes: the fence then waits for the process to end by itself (it does, once thawed: its
    client is gone)."""
    owned_postgres.psql("CREATE ROLE rvf_app LOGIN")
    owned_postgres.psql("CREATE ROLE rvf_owner NOLOGIN")
    owned_postgres.psql("GRANT rvf_owner TO rvf_app")
    owned_postgres.psql("CREATE SCHEMA rvf AUTHORIZATION rvf_owner")
    url = f"postgresql://rvf_app@127.0.0.1:{owned_postgres.port}/postgres?options=-crole%3Drvf_owner"
    db = AsyncPostgresDatabase(url, schema_name="rvf", min_size=1, max_size=1, statement_timeout=0.5)
    await db.open()
    pid = 0
    try:
        assert await db._run("test", None, "SELECT current_user, session_user", None, "one") == (
            "rvf_owner",
            "rvf_app",
        )
        await db.append("l", 0)
        pid = int((await db._run("test", None, "SELECT pg_backend_pid()", None, "one"))[0])
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(BackendUnavailableError):
            await db.append("l", 1)
        second = asyncio.ensure_future(db.append("l", 2))
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the stopped process
        os.kill(pid, signal.SIGCONT)
        assert await second in (2, 3)
        _wait_gone(owned_postgres.url, pid)
        assert await db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await db.aclose()


class _SlowClock:
    """The ``time`` module as the store sees it on a client whose wall clock is ``behind`` seconds behind
    the server's (NTP not yet settled, a VM restored from a snapshot): monotonic time is untouched."""

    def __init__(self, behind: float) -> None:
        self._behind = behind

    def time(self) -> float:
        return time.time() - self._behind

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


async def test_a_client_clock_behind_the_server_still_fences_a_young_connection(
    postgres_url: str, stopped: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut time was the client's wall clock, backend_start the server's: with the client 5 s behind,
    a connection opened less than 5 s before its cut seemed to have started after it (a reused pid), the
    fence was dropped and the next append committed first: [0, 2, 1] (found by review). The fence now
    compares in the server's clock (the skew measured by the fence statement itself)."""
    monkeypatch.setattr(_store_async, "time", _SlowClock(5.0))
    db = AsyncPostgresDatabase(
        postgres_url, key_prefix=f"rvf-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=0.5
    )
    await db.open()
    try:
        await db.append("l", 0)
        pid = int((await db._run("test", None, "SELECT pg_backend_pid()", None, "one"))[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):
            await db.append("l", 1)
        second = asyncio.ensure_future(db.append("l", 2))
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the stopped process
        os.kill(pid, signal.SIGCONT)
        assert await second in (2, 3)
        _wait_gone(postgres_url, pid)
        assert await db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        await db.clear()
        await db.aclose()


async def test_a_client_clock_ahead_of_the_server_never_ends_a_process_started_after_the_cut(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way round (client 5 s ahead): a fence on a pid whose process started after the cut (here
    made up: another session's process, as a reused pid would be) must neither be waited for nor ended."""
    monkeypatch.setattr(_store_async, "time", _SlowClock(-5.0))
    db = AsyncPostgresDatabase(postgres_url, key_prefix=f"rvf-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1)
    await db.open()
    try:
        await db.ping()
        cut = _store_async.time.time()
        await asyncio.sleep(0.2)
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as innocent:
            pid = innocent.info.backend_pid
            db._fences[(db._serving, pid)] = (cut, time.monotonic() + 60)
            assert await db.set("k", 1) is True
            assert not db._fences
            assert (await (await innocent.execute("SELECT 1")).fetchone()) == (1,)
    finally:
        await db.clear()
        await db.aclose()


def _append_in_child(db: PostgresDatabase, out: Any) -> None:
    try:
        out.put(db.append("l", 2))
    except BaseException as exc:
        out.put(repr(exc))


def test_a_child_forked_after_a_cut_append_does_not_overtake_it(postgres_url: str, stopped: list[int]) -> None:
    """A child forked after a cut append runs after it in the program's order: its first append must not
    commit before the cut one. Found by review: the child forgot the parent's fences at the fork
    (`_forget_parent`), appended at once, and the list read [0, 2, 1] once the process thawed. The
    child now keeps a copy (the fence asks the server, by pid, start time and role: any process of the
    role may ask)."""
    db = PostgresDatabase(
        postgres_url, key_prefix=f"rvf-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=0.5
    )
    db.open()
    try:
        db.append("l", 0)
        pid = int(db._run("test", None, "SELECT pg_backend_pid()", None, "one")[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):
            db.append("l", 1)
        out = FORK.Queue()
        child = FORK.Process(target=_append_in_child, args=(db, out))
        child.start()
        child.join(0.5)
        assert child.is_alive()  # waiting for the stopped process
        os.kill(pid, signal.SIGCONT)
        child.join(15)
        assert child.exitcode == 0
        assert out.get(timeout=1) in (2, 3)
        _wait_gone(postgres_url, pid)
        assert db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        db.clear()
        db.close()


def _connect_with_pid(url: str, pid: int) -> psycopg.Connection[Any] | None:
    """A new session whose server process gets ``pid`` (the kernel's next pid set through ns_last_pid, as
    root), or None when another fork on the machine took it first."""
    for _ in range(20):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            pytest.skip("cannot set the next pid (needs root and /proc/sys/kernel/ns_last_pid)")
        conn = psycopg.connect(url, autocommit=True)
        if conn.info.backend_pid == pid:
            return conn
        conn.close()
    return None


async def test_a_pid_reused_after_a_restart_is_neither_waited_for_nor_ended(
    owned_postgres: PgServer, stopped: list[int]
) -> None:
    """The cut process dies with its server (restart); a new session of the same role gets its pid (forced
    through ns_last_pid). The store's next statements neither wait for it nor end it; the fence is gone."""
    db = AsyncPostgresDatabase(owned_postgres.url, min_size=1, max_size=1, statement_timeout=0.5)
    await db.open()
    try:
        await db.append("l", 0)
        pid = int((await db._run("test", None, "SELECT pg_backend_pid()", None, "one"))[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):
            await db.append("l", 1)
        assert db._fences
        os.kill(pid, signal.SIGCONT)
        owned_postgres.restart("immediate")
        await asyncio.sleep(0.1)
        innocent = _connect_with_pid(owned_postgres.url, pid)
        if innocent is None:
            pytest.skip("another process took the pid")
        with innocent:
            started = time.monotonic()
            assert await db.append("l", 2) in (2, 3)
            assert time.monotonic() - started < 2.0
            assert not db._fences
            assert innocent.execute("SELECT 1").fetchone() == (1,)
    finally:
        await db.aclose()


async def test_a_call_cancelled_while_it_waits_for_a_cut_process_hands_its_connection_back(
    postgres_url: str, stopped: list[int]
) -> None:
    """Cancelled in the fence's wait: the connection goes back to the pool (not counted as held), the
    fence stays, and once the process has ended the next call goes through on the same pool of one."""
    db = AsyncPostgresDatabase(
        postgres_url, key_prefix=f"rvf-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=2
    )
    await db.open()
    try:
        await db.append("l", 0)
        pid = int((await db._run("test", None, "SELECT pg_backend_pid()", None, "one"))[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):
            await db.append("l", 1)
        for _ in range(3):
            waiting = asyncio.ensure_future(db.append("l", 2))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert not db._held
            assert len(db._fences) == 1
        os.kill(pid, signal.SIGCONT)
        _wait_gone(postgres_url, pid)
        assert await asyncio.wait_for(db.append("l", 3), 5) in (2, 3)
        assert not db._fences
        assert await db.get_range("l", 0, -1) in ([0, 3], [0, 1, 3])
    finally:
        await db.clear()
        await db.aclose()


async def test_a_role_that_may_not_read_the_pg_stat_activity_view_is_still_fenced(
    owned_postgres: PgServer, stopped: list[int]
) -> None:
    """A hardened server (SELECT on the pg_stat_activity view revoked from PUBLIC): the fence asks
    pg_stat_get_activity(pid), which the view is made of, and still waits for the cut process."""
    owned_postgres.psql("CREATE ROLE rvf_app LOGIN")
    owned_postgres.psql("GRANT ALL ON SCHEMA public TO rvf_app")
    owned_postgres.psql("REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC")
    url = f"postgresql://rvf_app@127.0.0.1:{owned_postgres.port}/postgres"
    db = AsyncPostgresDatabase(url, min_size=1, max_size=1, statement_timeout=0.5)
    await db.open()
    try:
        await db.append("l", 0)
        pid = int((await db._run("test", None, "SELECT pg_backend_pid()", None, "one"))[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):
            await db.append("l", 1)
        second = asyncio.ensure_future(db.append("l", 2))
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the stopped process
        os.kill(pid, signal.SIGCONT)
        assert await second in (2, 3)
        _wait_gone(owned_postgres.url, pid)
        assert await db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        await db.aclose()


async def test_a_role_that_may_not_read_server_activity_keeps_working_after_a_cut(
    owned_postgres: PgServer, stopped: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """A hardened server (pg_stat_activity and pg_stat_get_activity revoked from PUBLIC): the fence cannot
    be asked.
    Found by review: every later call of the store failed with "permission denied for view
    pg_stat_activity" for the fence's 300 s, though the server answered. The store now drops the
    fence with a warning (the order guarantee as before the fence) and the call goes through."""
    owned_postgres.psql("CREATE ROLE rvf_app LOGIN")
    owned_postgres.psql("GRANT ALL ON SCHEMA public TO rvf_app")
    owned_postgres.psql("REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC")
    owned_postgres.psql("REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC")
    url = f"postgresql://rvf_app@127.0.0.1:{owned_postgres.port}/postgres"
    db = AsyncPostgresDatabase(url, min_size=1, max_size=1, statement_timeout=0.5)
    await db.open()
    try:
        await db.append("l", 0)
        pid = int((await db._run("test", None, "SELECT pg_backend_pid()", None, "one"))[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):
            await db.append("l", 1)
        os.kill(pid, signal.SIGCONT)
        _wait_gone(owned_postgres.url, pid)
        with caplog.at_level(logging.WARNING, logger="kvstore"):
            assert await db.append("l", 2) in (2, 3)
        assert not db._fences
        assert "pg_stat_get_activity" in caplog.text
        assert await db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        await db.aclose()
