"""Redis server fixtures: a throwaway redis-server, an owned one for fault tests, a 3-master cluster.

``KVSTORE_TEST_REDIS_URL`` points the contract suite at an existing server; otherwise
the session starts ``redis-server --save "" --appendonly no`` on a free loopback port.
Fault tests (``kill -STOP``) always use a server this session started and owns.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import unavailable

REDIS_URL_ENV = "KVSTORE_TEST_REDIS_URL"


@dataclass
class RedisServer:
    """A Redis server the tests can use; ``proc`` is set when this session owns it."""

    url: str
    host: str = "127.0.0.1"
    port: int = 6379
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def stop(self) -> None:
        """Freeze the server process (``kill -STOP``): connections stay open, nothing answers."""
        assert self.proc is not None, "only an owned server can be stopped"
        os.kill(self.proc.pid, signal.SIGSTOP)

    def cont(self) -> None:
        """Resume a frozen server (``kill -CONT``)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


def _free_port(*, with_bus: bool = False) -> int:
    """A free loopback port (and, for cluster nodes, a free bus port at +10000)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.stdout + result.stderr


def _wait_ping(port: int, proc: subprocess.Popen[bytes], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


def start_redis_server(workdir: Path, *extra: str, port: int | None = None) -> RedisServer:
    """Start a throwaway ``redis-server`` on a free loopback port, without persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server is not installed and KVSTORE_TEST_REDIS_URL is not set")
    port = port or _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(exe),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    try:
        _wait_ping(port, proc)
    except RuntimeError as exc:
        proc.kill()
        proc.wait()
        unavailable(f"could not start redis-server: {exc}")
    return RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, proc=proc, workdir=workdir)


def stop_redis_server(server: RedisServer) -> None:
    """Terminate an owned server (resuming it first if a test left it frozen)."""
    if server.proc is None:
        return
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.proc.terminate()
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The Redis of the contract suite: ``KVSTORE_TEST_REDIS_URL`` or a throwaway server."""
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        yield RedisServer(url=url)
        return
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop_redis_server(server)


@pytest.fixture(scope="session")
def owned_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server this session started and may freeze (fault tests); never a shared one."""
    server = start_redis_server(tmp_path_factory.mktemp("redis-owned"))
    try:
        yield server
    finally:
        stop_redis_server(server)


def start_redis_cluster(root: Path, masters: int = 3) -> list[RedisServer]:
    """A real Redis Cluster of ``masters`` masters on free loopback ports, waited on until ``cluster_state:ok``."""
    if shutil.which("redis-cli") is None:
        unavailable("redis-cli is not installed: cannot create a Redis Cluster")
    nodes: list[RedisServer] = []
    try:
        for i in range(masters):
            port = _free_port(with_bus=True)
            nodes.append(
                start_redis_server(
                    root / f"node{i}",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(root / f"node{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    port=port,
                )
            )
        out = _cli(
            nodes[0].port,
            "--cluster",
            "create",
            *(f"127.0.0.1:{n.port}" for n in nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
            timeout=30,
        )
        end = time.monotonic() + 20
        while time.monotonic() < end:
            states = [_cli(n.port, "cluster", "info") for n in nodes]
            if all("cluster_state:ok" in s for s in states):
                break
            time.sleep(0.1)
        else:
            unavailable(f"the Redis Cluster did not reach cluster_state:ok: {out[-500:]}")
        for n in nodes:
            n.url = f"redis+cluster://127.0.0.1:{n.port}"
            n.extra["node_id"] = _cli(n.port, "cluster", "myid").strip()
        return nodes
    except BaseException:
        for n in nodes:
            stop_redis_server(n)
        raise


def reshard(nodes: list[RedisServer], source: RedisServer, target: RedisServer, slots: int) -> str:
    """``redis-cli --cluster reshard``: move ``slots`` slots (the source's lowest) from ``source`` to ``target``."""
    result = subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "reshard",
            f"127.0.0.1:{nodes[0].port}",
            "--cluster-from",
            str(source.extra["node_id"]),
            "--cluster-to",
            str(target.extra["node_id"]),
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"redis-cli --cluster reshard failed: {(result.stdout + result.stderr)[-1000:]}")
    return result.stdout


def slots_of(node: RedisServer) -> list[int]:
    """The slots ``node`` serves, from its own ``CLUSTER NODES`` line."""
    for line in _cli(node.port, "cluster", "nodes").splitlines():
        fields = line.split()
        if "myself" not in fields[2]:
            continue
        slots: list[int] = []
        for span in fields[8:]:
            if span.startswith("["):
                continue
            lo, _, hi = span.partition("-")
            slots.extend(range(int(lo), int(hi or lo) + 1))
        return slots
    raise AssertionError("no myself line in CLUSTER NODES")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A real 3-master Redis Cluster on free loopback ports, waited on until ``cluster_state:ok``."""
    nodes = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield nodes
    finally:
        for n in nodes:
            stop_redis_server(n)


# --- Redis Sentinel: a master, one replica, three Sentinels ---------------------------


@dataclass
class SentinelGroup:
    """A master, one replica and three Sentinels on free loopback ports, owned by the test.

    ``password`` protects the master and the replica (``requirepass`` + ``masterauth``,
    so either can be promoted); ``sentinel_password`` protects the Sentinels.
    """

    service: str
    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def sentinel_hosts(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def url(self, db: int = 0) -> str:
        """``redis+sentinel://`` URL, the master's password in it as is (unencoded)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{auth}{','.join(self.sentinel_hosts)}/{self.service}/{db}"

    def cli(self, port: int, *args: str) -> str:
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        return _cli(port, *auth, *args)

    def sentinel_cli(self, *args: str) -> str:
        auth = ["--no-auth-warning", "-a", self.sentinel_password] if self.sentinel_password else []
        return _cli(self.sentinels[0].port, *auth, *args)

    def master_port(self) -> int:
        """The master's port as the Sentinels report it now."""
        out = self.sentinel_cli("SENTINEL", "get-master-addr-by-name", self.service).split()
        return int(out[1])

    def wait_master_not(self, port: int, timeout: float = 30.0) -> int:
        """Wait until the Sentinels name another master than ``port`` and it answers as master."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                current = self.master_port()
            except (IndexError, ValueError):
                current = port
            if current != port and "role:master" in self.cli(current, "INFO", "replication"):
                return current
            time.sleep(0.05)
        raise AssertionError(f"Sentinel did not promote a replica within {timeout:g} s")


def _start_sentinel(
    workdir: Path, service: str, master_port: int, password: str | None, own: str | None
) -> RedisServer:
    exe = shutil.which("redis-server")
    assert exe is not None
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{workdir}"',
        f"sentinel monitor {service} 127.0.0.1 {master_port} 2",
        f"sentinel down-after-milliseconds {service} 1000",
        f"sentinel failover-timeout {service} 5000",
        f"sentinel parallel-syncs {service} 1",
    ]
    # Config strings are double-quoted with \\ and \" escaped (sdssplitargs): any password works.
    if password:
        lines.append(f"sentinel auth-pass {service} {_quoted(password)}")
    if own:
        lines += [f"requirepass {_quoted(own)}", f"sentinel sentinel-pass {_quoted(own)}"]
    conf = workdir / "sentinel.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [str(exe), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir
    )
    try:
        _wait_ping(port, proc)
    except RuntimeError as exc:
        proc.kill()
        proc.wait()
        unavailable(f"could not start redis-server --sentinel: {exc}")
    return RedisServer(url=f"redis://127.0.0.1:{port}", port=port, proc=proc, workdir=workdir)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_sentinel_group(
    root: Path,
    *,
    service: str = "kvstore-svc",
    password: str | None = None,
    sentinel_password: str | None = None,
    replica_writable: bool = False,
    ready_for_failover: bool = True,
) -> SentinelGroup:
    """Start master, replica (``replica-read-only no`` if ``replica_writable``) and 3 Sentinels; wait until settled."""
    if shutil.which("redis-cli") is None:
        unavailable("redis-cli is not installed: cannot drive Redis Sentinel")
    auth: list[str] = []
    if password:
        auth = ["--requirepass", password, "--masterauth", password]
    started: list[RedisServer] = []
    group: SentinelGroup | None = None
    try:
        master = start_redis_server(root / "master", *auth)
        started.append(master)
        replica = start_redis_server(
            root / "replica",
            *auth,
            "--replicaof",
            "127.0.0.1",
            str(master.port),
            *(["--replica-read-only", "no"] if replica_writable else []),
        )
        started.append(replica)
        group = SentinelGroup(service, master, replica, [], password, sentinel_password)
        end = time.monotonic() + 20
        while "master_link_status:up" not in group.cli(replica.port, "INFO", "replication"):
            if time.monotonic() > end:
                unavailable("the Redis replica did not sync with its master")
            time.sleep(0.05)
        for i in range(3):
            sentinel = _start_sentinel(root / f"sentinel{i}", service, master.port, password, sentinel_password)
            started.append(sentinel)
            group.sentinels.append(sentinel)
        # Settled: every Sentinel knows the replica and (for a failover) the two other Sentinels,
        # which they learn from each other's hello messages, sent every 2 s.
        others = "num-other-sentinels\n2\n" if ready_for_failover else "num-other-sentinels\n"
        end = time.monotonic() + 30
        auth_s = ["--no-auth-warning", "-a", sentinel_password] if sentinel_password else []
        while True:
            views = [_cli(s.port, *auth_s, "SENTINEL", "master", service) for s in group.sentinels]
            if all("num-slaves\n1\n" in v and others in v for v in views):
                break
            if time.monotonic() > end:
                unavailable(f"the Sentinels did not settle: {views[0][-300:]}")
            time.sleep(0.1)
        return group
    except BaseException:
        for server in started:
            stop_redis_server(server)
        raise


def stop_sentinel_group(group: SentinelGroup) -> None:
    """Stop every process of the group (Sentinels first, so none starts a failover while the rest stop)."""
    for server in [*group.sentinels, group.replica, group.master]:
        stop_redis_server(server)


def kill_9(server: RedisServer) -> None:
    """``kill -9`` an owned server and reap it."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
