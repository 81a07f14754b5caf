"""A PostgreSQL primary and one streaming-replication standby, owned by the test (DESIGN.md §10).

`PgPair` starts a primary (initdb) and a standby made from it with ``pg_basebackup -R``, both
on loopback, as the ``postgres`` user when the tests run as root (as `tests.fixtures_postgres`).
With ``synchronous=True`` the primary waits for the standby's flush before it acknowledges a
commit (``synchronous_standby_names = '*'``, ``synchronous_commit = on``); without, replication
is asynchronous. `PgPair.fail_over` is the nemesis step: ``kill -9`` of every process of the
primary, ``pg_ctl promote`` of the standby, and a new standby re-seeded from the new primary on
the dead primary's port (so the client's host list never changes: two ``host:port`` entries).

fsync is off (a ``kill -9`` is a process crash: the page cache survives it, so this costs
nothing in what the tests show) and ``synchronous_commit`` stays on: commits are acknowledged
only once written, and with the synchronous standby only once the standby has them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.fixtures_postgres import PgServer, _find, _free_port

#: Seconds a fixture step may take before it is a failure (CI budget).
STEP_TIMEOUT = 60.0


class PgNode(PgServer):
    """One server of a `PgPair`: a primary made by initdb, or a standby by ``pg_basebackup -R``."""

    def __init__(self, *, port: int | None = None, source: PgNode | None = None) -> None:
        initdb, self._pg_ctl = _find("initdb"), _find("pg_ctl")
        basebackup = _find("pg_basebackup")
        if initdb is None or self._pg_ctl is None or basebackup is None:
            raise RuntimeError("initdb/pg_ctl/pg_basebackup not found (install PostgreSQL)")
        self._as_postgres = os.geteuid() == 0  # initdb and pg_ctl refuse to run as root
        self.dir = Path(tempfile.mkdtemp(prefix="kvstore-pgha-"))
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = port or _free_port()
        if source is None:
            self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            hba = self.data / "pg_hba.conf"
            # A password-checked role (the secrets test); everyone else, replication included, is trusted.
            self._write(hba, "host all kvstore_secret 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        else:
            self._run(
                [basebackup, "-D", str(self.data), "-h", "127.0.0.1", "-p", str(source.port), "-U", "postgres",
                 "-X", "stream", "-c", "fast", "-R", "--no-sync"],
                timeout=STEP_TIMEOUT,
            )  # fmt: skip
        self._options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=100 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=on -c wal_receiver_status_interval=1 "
            "-c wal_sender_timeout=5s -c wal_receiver_timeout=5s"
        )
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.standby = source is not None

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    def query(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def kill9(self) -> float:
        """SIGKILL every process of this server at once (postmaster first: it restarts nothing);
        returns the `time.time` by which every one was sent its SIGKILL (the server is dead from then)."""
        pids = self.pids()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed = time.time()
        deadline = time.monotonic() + STEP_TIMEOUT
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        return killed

    def promote(self) -> None:
        self.pg_ctl("-w", "-t", str(int(STEP_TIMEOUT)), "promote")
        self.standby = False

    def remove(self) -> None:
        """Stop (if still running) and delete the data directory."""
        with suppress(subprocess.SubprocessError, OSError):
            self.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process of the same pid
        return True
    # A killed child of a dead postmaster is a zombie until init reaps it: gone for our purpose.
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return False


class PgPair:
    """A primary and its standby (see the module docstring); `fail_over` promotes and re-seeds."""

    def __init__(self, *, synchronous: bool) -> None:
        self.synchronous = synchronous
        self.primary = PgNode()
        self.standby: PgNode | None = None
        try:
            self.ports = (self.primary.port, _free_port())
            self._seed(self.ports[1])
        except BaseException:
            self.stop()
            raise
        #: One record per `fail_over`: kill, promoted and ready times (``time.time()``).
        self.failovers: list[dict[str, Any]] = []

    @property
    def hosts(self) -> list[str]:
        """The client's host list: both ports, standby's first (libpq must skip it)."""
        return [f"127.0.0.1:{port}" for port in sorted(self.ports, reverse=True)]

    def url(self, user: str = "postgres", password: str | None = None) -> str:
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@{','.join(self.hosts)}/postgres?target_session_attrs=read-write"

    def _seed(self, port: int) -> None:
        """A new standby of the current primary on ``port``, attached (and synchronous when asked)."""
        self.standby = PgNode(port=port, source=self.primary)
        if self.synchronous:
            self.primary.query("ALTER SYSTEM SET synchronous_standby_names = '*'")
            self.primary.query("SELECT pg_reload_conf()")
        self.wait_attached()

    def wait_attached(self) -> None:
        """Until the standby streams (``sync`` with synchronous replication) and a commit made now
        has reached it: every commit acknowledged before this returns is on the standby too."""
        want = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            rows = self.primary.query("SELECT state, sync_state FROM pg_stat_replication")
            if ("streaming", want) in rows:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not attach as {want}: {rows}")
            time.sleep(0.05)
        # A commit now, then the standby's replay position past it.
        self.primary.query("CREATE TABLE IF NOT EXISTS pgha_mark (n int)")
        self.primary.query("INSERT INTO pgha_mark VALUES (1)")
        lsn = self.primary.query("SELECT pg_current_wal_lsn()::text")[0][0]
        assert self.standby is not None
        while True:
            rows = self.standby.query("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))
            if rows[0][0]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not replay the primary's last commit")
            time.sleep(0.02)

    def wait_replayed(self) -> None:
        """On the standby of a dead primary: until everything it received is replayed (its final state)."""
        assert self.standby is not None
        deadline = time.monotonic() + STEP_TIMEOUT
        while not self.standby.query("SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()")[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not finish replaying")
            time.sleep(0.01)

    def fail_over(self, *, before_promote: Any = None, lag: float = 0.0) -> dict[str, Any]:
        """``kill -9`` the primary, promote the standby, re-seed a standby on the dead primary's port.

        ``lag`` > 0: the primary's WAL sender is stopped (SIGSTOP) for that many seconds before
        the kill, as replication falls behind under load or a slow link: with asynchronous
        replication the commits acknowledged meanwhile never reach the standby; with synchronous
        replication they are not acknowledged.

        ``before_promote(t_kill)`` runs between the kill and the promotion, when the standby has
        replayed all it received (it holds exactly what the promotion will keep); ``t_kill`` is
        when the primary was dead (every process sent SIGKILL).
        """
        assert self.standby is not None
        old, new = self.primary, self.standby
        record: dict[str, Any] = {"killed": old.where, "promoted": new.where, "lag": lag}
        if lag > 0:
            for (pid,) in old.query("SELECT pid FROM pg_stat_replication"):
                os.kill(pid, signal.SIGSTOP)
            time.sleep(lag)
        record["t_kill"] = old.kill9()
        if before_promote is not None:
            self.wait_replayed()
            record["t_snapshot0"] = time.time()
            before_promote(record["t_kill"])
            record["t_snapshot1"] = time.time()
        new.promote()
        record["t_promoted"] = time.time()
        self.primary, self.standby = new, None
        old.remove()
        self._seed(old.port)
        record["t_reseeded"] = time.time()
        self.failovers.append(record)
        return record

    def stop(self) -> None:
        for node in (self.primary, self.standby):
            if node is not None:
                node.remove()


def start_pair(synchronous: bool) -> PgPair:
    """Start a primary and a standby or report them unavailable (skip locally, fail in CI)."""
    try:
        return PgPair(synchronous=synchronous)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        unavailable(f"cannot start a PostgreSQL primary and standby: {exc} {detail.decode(errors='replace')[-300:]}")
        raise  # unreachable: unavailable() raises


@pytest.fixture(scope="module")
def pg_pair_sync() -> Iterator[PgPair]:
    """A primary and a synchronous standby owned by the tests of one module (each leaves them as it found
    them: a primary with an attached standby; which port is the primary may change)."""
    pair = start_pair(synchronous=True)
    try:
        yield pair
    finally:
        pair.stop()
