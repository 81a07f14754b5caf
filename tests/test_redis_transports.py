"""Redis over TLS (rediss://, CA file) and over a unix socket (unix://), on throwaway servers."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore import BackendUnavailableError
from kvstore.config import RedisCacheConfig
from kvstore.redis import AsyncRedisCache, RedisCache
from tests.conftest import unavailable
from tests.fixtures_redis import _free_port

pytestmark = pytest.mark.redis


def _start(workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server is not installed")
    cmd = [str(exe), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir), *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait(store: RedisCache, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end and proc.poll() is None:
        try:
            store.ping()
            return
        except BackendUnavailableError:
            time.sleep(0.05)
    unavailable("the throwaway redis-server did not come up")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server with a certificate for 127.0.0.1 signed by a throwaway CA."""
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed: cannot make a test certificate")
    d = Path(tmp_path_factory.mktemp("redis-tls"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=kvstore test CA", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    port = _free_port()
    proc = _start(
        d,
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(d / "server.crt"),
        "--tls-key-file", str(d / "server.key"),
        "--tls-ca-cert-file", str(d / "ca.crt"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    try:
        probe = RedisCache(f"rediss://127.0.0.1:{port}/0", tls_ca_file=str(d / "ca.crt"))
        _wait(probe, proc)
        probe.close()
        yield port, d / "ca.crt"
    finally:
        _stop(proc)


def test_tls_with_ca_file(tls_server: tuple[int, Path]) -> None:
    """A rediss:// URL plus the CA file from the config connects over verified TLS."""
    port, ca = tls_server
    store = RedisCache.from_config(
        RedisCacheConfig(url=f"rediss://127.0.0.1:{port}/0", tls_ca_file=str(ca), key_prefix="tls:")
    )
    try:
        store.set("k", {"secure": True}, ttl=5)
        assert store.get("k") == {"secure": True}
        assert store.keys() == ["k"]
    finally:
        store.clear()
        store.close()


async def test_tls_with_host_and_port_async(tls_server: tuple[int, Path]) -> None:
    """tls=True with host/port fields works for the async store too."""
    port, ca = tls_server
    store = AsyncRedisCache(host="127.0.0.1", port=port, tls=True, tls_ca_file=str(ca), key_prefix="tls-a:")
    try:
        await store.set("k", 1)
        assert await store.get("k") == 1
    finally:
        await store.clear()
        await store.aclose()


def test_tls_rejects_an_unknown_ca(tls_server: tuple[int, Path]) -> None:
    """Without the CA the certificate is not trusted: BackendUnavailableError, no silent downgrade."""
    port, _ = tls_server
    store = RedisCache(f"rediss://127.0.0.1:{port}/0")
    try:
        with pytest.raises(BackendUnavailableError):
            store.ping()
    finally:
        store.close()


def test_unix_socket(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A unix:// URL reaches a server listening on a unix socket only."""
    d = Path(tmp_path_factory.mktemp("redis-unix"))
    sock = d / "redis.sock"
    proc = _start(d, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700")
    store = RedisCache(f"unix://{sock}?db=0", key_prefix="unix:")
    try:
        _wait(store, proc)
        store.mset({"a": 1, "b": 2})
        assert sorted(store.keys()) == ["a", "b"]
        assert "unix://" in repr(store)
    finally:
        store.close()
        _stop(proc)
