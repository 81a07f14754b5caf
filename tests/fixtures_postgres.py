"""PostgreSQL server fixtures: ``KVSTORE_TEST_POSTGRES_URL`` when set, else a throwaway server we own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.conftest import unavailable

ENV_URL = "KVSTORE_TEST_POSTGRES_URL"
CANARY_USER = "kvstore_canary"
CANARY_RIGHT_PASSWORD = "right-horse-battery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / tool).exists():
            return str(base / tool)
    return None


class PgServer:
    """A PostgreSQL cluster in a temporary directory, started and stopped with pg_ctl."""

    def __init__(self, *, fsync: bool) -> None:
        initdb, self._pg_ctl = _find("initdb"), _find("pg_ctl")
        if initdb is None or self._pg_ctl is None:
            raise RuntimeError("initdb/pg_ctl not found (install PostgreSQL or set KVSTORE_TEST_POSTGRES_URL)")
        self._as_postgres = os.geteuid() == 0  # initdb and pg_ctl refuse to run as root
        self.dir = Path(tempfile.mkdtemp(prefix="kvstore-pg-"))
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = _free_port()
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        hba = self.data / "pg_hba.conf"
        # A password-checked role for the canary test; everyone else is trusted.
        self._write(hba, f"host all {CANARY_USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not fsync:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._options = options
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.psql(f"CREATE ROLE {CANARY_USER} LOGIN PASSWORD '{CANARY_RIGHT_PASSWORD}'")

    def _write(self, path: Path, text: str) -> None:
        if self._as_postgres:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", "tee", str(path)],
                input=text.encode(),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        else:
            path.write_text(text)

    def _run(self, cmd: list[str], timeout: float = 60) -> None:
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def pg_ctl(self, *args: str) -> None:
        assert self._pg_ctl is not None
        self._run([self._pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), *args])

    def start(self) -> None:
        self.pg_ctl("-o", self._options, "-w", "-t", "30", "start")

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m <mode>`` (``fast`` or ``immediate``)."""
        self.pg_ctl("-o", self._options, "-m", mode, "-w", "-t", "30", "restart")

    def stop(self) -> None:
        try:
            self.pg_ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self) -> list[int]:
        """The postmaster (first line of postmaster.pid) and its children."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False)
        return [postmaster, *(int(pid) for pid in found.stdout.split())]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the cluster stopped (SIGSTOP) inside the block: the kernel still
        completes handshakes and acknowledges packets, nothing answers. SIGCONT on the way out."""
        stopped: list[int] = []
        try:
            postmaster, *_ = self.pids()
            os.kill(postmaster, signal.SIGSTOP)  # first, so it forks nothing new meanwhile
            stopped.append(postmaster)
            for pid in self.pids()[1:]:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def psql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(statement)


def start_server(fsync: bool) -> PgServer:
    """Start a throwaway server or report it unavailable (skip locally, fail in CI)."""
    try:
        return PgServer(fsync=fsync)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        unavailable(f"cannot start a throwaway PostgreSQL: {exc} {detail.decode(errors='replace')[-300:]}")
        raise  # unreachable: unavailable() raises


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer | None]:
    """The session's throwaway server (fsync off), or None when ``KVSTORE_TEST_POSTGRES_URL`` is used."""
    if os.environ.get(ENV_URL):
        yield None
        return
    server = start_server(fsync=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PgServer | None) -> str:
    """URL of a PostgreSQL for the contract suite: ``KVSTORE_TEST_POSTGRES_URL`` or the throwaway server."""
    if postgres_server is None:
        url = os.environ[ENV_URL]
        try:
            import psycopg

            psycopg.connect(url, connect_timeout=3).close()
        except Exception as exc:
            unavailable(f"{ENV_URL} is set but the server does not answer: {type(exc).__name__}")
        return url
    return postgres_server.url


@pytest.fixture
def owned_postgres() -> Iterator[PgServer]:
    """A fresh server this test owns, with fsync on, for restart and crash tests."""
    server = start_server(fsync=True)
    try:
        yield server
    finally:
        server.stop()
