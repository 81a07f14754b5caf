"""Redis Sentinel: the cache follows a promoted replica and never serves a value the old master lost.

Real processes on loopback (tests/fixtures_redis.py): a master, one replica, three Sentinels,
passwords with ``/ # ? @ $ %`` in them. The failover is ``kill -9`` of the master.

What "stale" means here (the slow test counts it; docs/_production_redis.md says the same):
each process owns its keys and keeps a model of them. A read of key ``k`` by that process is
**stale** when it returns a value other than the process's latest acknowledged write of ``k``
(or of a later write of ``k`` that raised, whose fate is unknown). Values are unique, so an
older value, a value of a deleted key, or a value the old master lost on its way to the replica
all count. A **miss** (``None``) is not stale: a cache may lose data, and after a failover the
store turns every write the old master may have lost into a miss on purpose. Misses are allowed
only for keys whose latest acknowledged write was made before the kill (a write acknowledged
by the new master must read back) and are counted apart.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from kvstore import AsyncStorageManager, BackendUnavailableError, StorageManager
from kvstore._core.identity import identity_label, tier_identity
from kvstore.config import RedisCacheConfig, StorageConfig
from kvstore.errors import ConfigError
from kvstore.redis import AsyncRedisCache, RedisCache
from kvstore.redis._common import RecentWrites, parse_sentinel_url, replication_state
from tests.fixtures_redis import SentinelGroup, kill_9, start_sentinel_group, stop_sentinel_group
from tests.forking import CHILDREN, PER_CHILD, run_children

PASSWORD = "p/a#s?w@r$d%x"
SENTINEL_PASSWORD = "s/e#n?t@i$n%y"

# --- I/O-free: URL, config, identity, the write list ---------------------------------------


def test_sentinel_url_parts() -> None:
    url = f"redis+sentinel://app:{PASSWORD}@h1:5000,h2,[::1]:26380/mymaster/3"
    sentinels, service, db, user, password, tls = parse_sentinel_url(url)
    assert sentinels == [("h1", 5000), ("h2", 26379), ("::1", 26380)]
    assert (service, db, user, password, tls) == ("mymaster", 3, "app", PASSWORD, False)
    assert parse_sentinel_url("rediss+sentinel://h1/svc")[1:] == ("svc", None, None, None, True)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no service
        "redis+sentinel://h1:26379/",
        "redis+sentinel://h1:26379/svc/x",
        "redis+sentinel://h1:26379/svc/0/extra",
        "redis+sentinel:///svc",  # no sentinel
        "redis+sentinel://h1:port/svc",
        f"redis+sentinel://h1/svc?sentinel_password={PASSWORD}",
    ],
)
def test_bad_sentinel_urls_fail_without_quoting_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        StorageConfig.from_mapping({"cache": {"type": "redis", "url": url}})
    assert PASSWORD not in str(info.value)
    assert "h1" not in str(info.value) or "h1:port" not in str(info.value)


def test_config_from_url_equals_fields() -> None:
    by_url = RedisCacheConfig(url=f"redis+sentinel://:{PASSWORD}@H1:5000,h2/svc/2", sentinel_password=SENTINEL_PASSWORD)
    by_fields = RedisCacheConfig(
        sentinels=["h2:26379", "h1:5000"], service_name="svc", db=2, password=PASSWORD, sentinel_password="other"
    )
    assert by_url.sentinels == ["H1:5000", "h2:26379"]
    assert (by_url.service_name, by_url.db) == ("svc", 2)
    assert by_url.password is not None
    assert by_url.password.get_secret_value() == PASSWORD
    assert tier_identity(by_url) == tier_identity(by_fields)
    assert tier_identity(by_url) != tier_identity(by_fields.model_copy(update={"service_name": "other"}))
    label = identity_label(by_url)
    assert label.startswith("redis sentinel svc via h1:5000,h2:26379/2"), label
    for shown in (repr(by_url), str(by_url), by_url.model_dump_json(), label):
        assert PASSWORD not in shown
        assert SENTINEL_PASSWORD not in shown
    # From the environment: comma-separated Sentinels.
    env = {
        "KVSTORE_CACHE__TYPE": "redis",
        "KVSTORE_CACHE__SENTINELS": "h1:5000, h2",
        "KVSTORE_CACHE__SERVICE_NAME": "svc",
        "KVSTORE_CACHE__DB": "2",
    }
    assert tier_identity(StorageConfig.from_env(env).cache) == tier_identity(by_url)  # type: ignore[arg-type]


def test_config_rejects_half_a_sentinel_setup() -> None:
    default = StorageConfig.from_mapping({"cache": {"type": "redis", "sentinels": ["h1"]}}).cache
    assert isinstance(default, RedisCacheConfig)
    assert default.service_name == "mymaster"
    with pytest.raises(ConfigError, match="not both"):
        StorageConfig.from_mapping(
            {"cache": {"type": "redis", "sentinels": ["h1"], "service_name": "s", "cluster": True}}
        )


def test_recent_writes_window_is_anchored_at_the_latest_write(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("kvstore.redis._common.time.monotonic", lambda: now[0])
    written = RecentWrites(window=10, limit=3)
    written.add("a")
    now[0] = 105
    written.add("b")
    now[0] = 112  # "a" is now more than 10 s older than the latest write
    written.add("c")
    assert written.snapshot() == ["b", "c"]
    now[0] = 10_000  # idle for hours: nothing is forgotten until the next write
    assert written.snapshot() == ["b", "c"]
    assert not written.everything
    written.add_many(["d", "e", "f", "g"])  # past the limit (b and c fell out of the window): the namespace
    assert written.everything
    assert written.snapshot() == []
    written.forget_before(now[0] + 1)
    assert not written.everything
    written.add("h")
    assert written.snapshot() == ["h"]
    assert not written.everything
    written.add_everything()  # a clear
    assert written.everything


def test_replication_state() -> None:
    info = b"# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_replid:abc\r\nmaster_replid2:000\r\n"
    assert replication_state(info) == ("master", "abc")
    assert replication_state("role:slave\r\n")[0] == "slave"


# --- real Sentinel: a fast failover smoke (default run) -------------------------------------


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A group of this test's own: the test kills its master."""
    group = start_sentinel_group(
        tmp_path / "sentinel", password=PASSWORD, sentinel_password=SENTINEL_PASSWORD, replica_writable=True
    )
    try:
        yield group
    finally:
        stop_sentinel_group(group)


@pytest.fixture(scope="module")
def stable_sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A group the tests of this module share and leave as it is (no failover)."""
    group = start_sentinel_group(
        tmp_path_factory.mktemp("sentinel-stable"),
        password=PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        ready_for_failover=False,
    )
    try:
        yield group
    finally:
        stop_sentinel_group(group)


def _literal(password: str) -> str:
    """A password for a config mapping, where ``$NAME`` reads the environment and ``$$`` is a ``$``."""
    return password.replace("$", "$$")


def _wait(call: Any, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        try:
            return call()
        except BackendUnavailableError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


async def _await(call: Any, patience: float = 30.0) -> Any:
    end = time.monotonic() + patience
    while True:
        try:
            return await call()
        except BackendUnavailableError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.redis
async def test_failover_is_followed_and_lost_writes_read_as_misses(sentinel_group: SentinelGroup) -> None:
    """kill -9 of the master: both APIs follow the promoted replica; what the replica missed reads as a miss.

    The replica is made to miss writes for real: after the store's writes replicated, the
    replica (``replica-read-only no``) is given back the OLDER values, which is exactly the
    state a replica is in when the master died before streaming those writes to it. (The
    sync manager blocks this test's event loop now and then; the async store idles meanwhile.)
    """
    g = sentinel_group
    first_master = g.master.port
    config = {
        # No fallback: every answer below comes from Redis, none from a memory fallback.
        "cache": {
            "type": "redis",
            "url": g.url(),
            "sentinel_password": _literal(SENTINEL_PASSWORD),
            "key_prefix": "sm:",
            "fallback": [],
        },
        "database": {"type": "memory"},
    }
    replica = redis.Redis(port=g.replica.port, password=PASSWORD)
    with StorageManager(config) as storage:
        cache = storage.cache
        assert storage.health().cache.serving == f"127.0.0.1:{first_master}"
        cache.set("lost", "new")
        cache.set("deleted", "old")
        cache.delete("deleted")
        cache.set("kept", "v1")
        direct = AsyncRedisCache(g.url(), sentinel_password=SENTINEL_PASSWORD, key_prefix="sm-a:")
        await _async_writes(direct)
        end = time.monotonic() + 10
        while replica.get("sm:\x00kept") != b'"v1"' or replica.get("sm-a:\x00lost") != b'"new"':
            assert time.monotonic() < end, "the replica did not catch up"
            await asyncio.sleep(0.02)
        # The replica "never got" the last writes: it holds the values from before them.
        for prefix in ("sm:\x00", "sm-a:\x00"):
            replica.set(prefix + "lost", b'"old"')
            replica.set(prefix + "deleted", b'"old"')
        # Control: a key this process never wrote, in the same state. Nothing invalidates it, so
        # it reads back old: the setup does produce the stale state the store must hide.
        replica.set("sm:\x00control", b'"old"')

        kill_9(g.master)
        killed = time.monotonic()
        new_master = g.wait_master_not(first_master)
        assert _wait(lambda: cache.get("lost")) is None, "a value the old master lost read back older"
        recovered = time.monotonic() - killed
        assert cache.get("deleted") is None, "a deleted key came back"
        assert cache.get("kept") is None  # written lately: invalidated too (a miss, never stale)
        assert cache.get("control") == "old"
        cache.set("after", 1)
        assert cache.get("after") == 1
        health = storage.health().cache
        assert health.healthy
        assert health.serving == f"127.0.0.1:{new_master}"
        assert PASSWORD not in repr(health)
        assert SENTINEL_PASSWORD not in repr(health)
        assert PASSWORD not in repr(cache)
        assert SENTINEL_PASSWORD not in repr(cache)
        print(f"\nsentinel smoke: kill -9 -> first answer from the promoted master after {recovered:.2f} s")

        await _async_after(direct, new_master)
    replica.close()


async def _async_writes(store: AsyncRedisCache) -> None:
    await store.set("lost", "new")
    await store.set("deleted", "old")
    await store.delete("deleted")


async def _async_after(store: AsyncRedisCache, new_master: int) -> None:
    try:
        assert await _await(lambda: store.get("lost")) is None
        assert await store.get("deleted") is None
        await store.set("after", 2)
        assert await store.get("after") == 2
        assert store.serving == f"127.0.0.1:{new_master}"
        assert store.failovers == 1
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_async_manager_health_names_the_master(stable_sentinel_group: SentinelGroup) -> None:
    """The async manager reports the master; a wrong Sentinel password is a clear error that shows no secret."""
    g = stable_sentinel_group
    config = {
        "cache": {
            "type": "redis",
            "sentinels": g.sentinel_hosts,
            "service_name": g.service,
            "password": _literal(PASSWORD),
            "sentinel_password": _literal(SENTINEL_PASSWORD),
        },
        "database": {"type": "memory"},
    }
    async with AsyncStorageManager(config) as storage:
        await storage.cache.set("k", 1)
        assert (await storage.health()).cache.serving == f"127.0.0.1:{g.master.port}"
    bad = AsyncRedisCache(g.url(), sentinel_password="wrong/#?@$%")
    try:
        with pytest.raises(BackendUnavailableError) as info:
            await bad.get("k")
        assert "wrong/#?@$%" not in str(info.value)
        assert PASSWORD not in str(info.value)
    finally:
        await bad.aclose()


@pytest.mark.redis
def test_a_replica_is_never_used_as_the_master(stable_sentinel_group: SentinelGroup) -> None:
    """If the Sentinels name a server that is not a master (yet), the store refuses it instead of reading from it."""
    g = stable_sentinel_group
    store = RedisCache(
        sentinels=g.sentinel_hosts,
        service_name=g.service,
        password=PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        key_prefix="ro:",
    )
    try:
        store.set("k", 1)
        # Point the store's check at the replica: a connection landing there is refused.
        pool = store._client.connection_pool
        conn = pool.make_connection()
        try:
            with pytest.raises(redis.exceptions.ConnectionError, match="not a master"):
                conn.connect_to(("127.0.0.1", g.replica.port))
        finally:
            conn.disconnect()
        assert store.get("k") == 1
    finally:
        store.close()


# --- the must-show: 3 processes, 90/10 get/set, kill -9 of the master (slow) ----------------

FORK = multiprocessing.get_context("fork")
KEYS_PER_PROCESS = 40


def _worker(wid: int, url: str, start_at: float, stop_at: float, kill_at: Any, out: Any) -> None:
    """One process: its own store and keys; checks every read against its model of what it wrote."""
    store = RedisCache(url, sentinel_password=SENTINEL_PASSWORD, key_prefix=f"sw{wid}:", socket_timeout=0.5)
    rng = random.Random(wid)
    acked: dict[str, tuple[str, float]] = {}  # key -> (value, when acknowledged)
    in_doubt: dict[str, set[str]] = {}  # key -> values of writes that raised since the last ack
    counts = {"ops": 0, "reads": 0, "writes": 0, "stale": 0, "misses": 0, "bad_misses": 0, "errors": 0}
    first_ok_after_kill: float | None = None
    slowest = 0.0
    samples: list[str] = []
    seq = 0
    while time.time() < start_at:
        time.sleep(0.005)
    while time.time() < stop_at:
        key = f"k{rng.randrange(KEYS_PER_PROCESS)}"
        t0 = time.time()
        try:
            if rng.random() < 0.1:
                seq += 1
                value = f"{wid}:{seq}"
                try:
                    store.set(key, value)
                except BackendUnavailableError:
                    in_doubt.setdefault(key, set()).add(value)
                    raise
                acked[key] = (value, time.time())
                in_doubt.pop(key, None)
                counts["writes"] += 1
            else:
                got = store.get(key)
                counts["reads"] += 1
                expected = acked.get(key)
                allowed = {expected[0]} if expected else set()
                allowed |= in_doubt.get(key, set())
                if got is None:
                    counts["misses"] += bool(expected)
                    killed = kill_at.value
                    # A miss is legal for a write the dead master acknowledged, or one in doubt.
                    if expected and not in_doubt.get(key) and not (killed and expected[1] < killed):
                        counts["bad_misses"] += 1
                        samples.append(f"miss {key}: acked {expected}")
                elif got not in allowed:
                    counts["stale"] += 1
                    samples.append(f"stale {key}: read {got!r}, expected {expected} or {in_doubt.get(key)}")
            counts["ops"] += 1
            killed = kill_at.value
            if killed and first_ok_after_kill is None and t0 > killed:
                first_ok_after_kill = time.time()
        except BackendUnavailableError:
            counts["errors"] += 1
            time.sleep(0.01)
        slowest = max(slowest, time.time() - t0)
    store.close()
    out.put({"wid": wid, **counts, "first_ok_after_kill": first_ok_after_kill, "slowest": slowest, "samples": samples})


def _offset(info: str, name: str) -> int:
    return int(next(line.split(":", 1)[1] for line in info.splitlines() if line.startswith(name + ":")))


@pytest.mark.redis
@pytest.mark.slow
def test_kill_master_under_traffic_from_three_processes(tmp_path: Path) -> None:
    """3 processes x (90% get / 10% set) on their own keys; kill -9 of the master mid-run: 0 stale reads."""
    group = start_sentinel_group(tmp_path / "sentinel", password=PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    try:
        kill_at = FORK.Value("d", 0.0)
        out = FORK.Queue()
        start_at = time.time() + 1.0
        stop_at = start_at + 14.0
        procs = [FORK.Process(target=_worker, args=(w, group.url(), start_at, stop_at, kill_at, out)) for w in range(3)]
        for p in procs:
            p.start()
        time.sleep(max(0.0, start_at + 4.0 - time.time()))
        first_master = group.master.port
        # Make the kill lose acknowledged writes for real: cut the replica's link to the master and
        # keep it from reconnecting (a wrong masterauth), let the processes write for 0.3 s, then
        # kill the master. The offsets say how far behind the replica was.
        group.cli(group.replica.port, "CONFIG", "SET", "masterauth", "not-the-password")
        group.cli(group.replica.port, "CLIENT", "KILL", "TYPE", "master")
        time.sleep(0.3)
        replica_offset = _offset(group.cli(group.replica.port, "INFO", "replication"), "master_repl_offset")
        master_offset = _offset(group.cli(first_master, "INFO", "replication"), "master_repl_offset")
        kill_9(group.master)  # dead and reaped: nothing it acknowledges from here on
        kill_at.value = time.time()
        group.cli(group.replica.port, "CONFIG", "SET", "masterauth", PASSWORD)
        group.wait_master_not(first_master)
        promoted_at = time.time()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    finally:
        stop_sentinel_group(group)
    killed = kill_at.value
    recoveries = [r["first_ok_after_kill"] - killed for r in results if r["first_ok_after_kill"]]
    print(
        f"\nsentinel kill -9 under traffic: at the kill the replica was {master_offset - replica_offset} bytes "
        "of replication stream behind the master (acknowledged writes the promoted replica never got); "
        f"Sentinel promoted the replica {promoted_at - killed:.2f} s after the kill; "
        f"first successful call per process after the kill: {', '.join(f'{t:.2f} s' for t in recoveries)}"
    )
    for r in results:
        print(
            f"  process {r['wid']}: {r['ops']} ops ({r['reads']} reads, {r['writes']} writes), "
            f"stale {r['stale']}, misses {r['misses']} (illegal {r['bad_misses']}), "
            f"errors during the failover {r['errors']}, slowest call {r['slowest'] * 1000:.0f} ms"
        )
    assert master_offset > replica_offset, "the kill lost nothing: the test would prove nothing"
    assert len(recoveries) == 3, "a process never recovered"
    assert all(r["reads"] > 500 for r in results), "too little traffic to mean anything"
    assert sum(r["stale"] for r in results) == 0, [r["samples"][:5] for r in results]
    assert sum(r["bad_misses"] for r in results) == 0, [r["samples"][:5] for r in results]
    assert max(r["slowest"] for r in results) < 5.0, "a call hung"
    assert max(recoveries) < 30.0


@pytest.mark.redis
@pytest.mark.parametrize("api", ["sync", "async"])
def test_sentinel_store_in_forked_children(stable_sentinel_group: SentinelGroup, api: str) -> None:
    """Forked children use the parent's Sentinel store on connections of their own; the parent works on."""
    g = stable_sentinel_group
    prefix = f"fork-sentinel-{api}:"
    if api == "sync":
        store = RedisCache(g.url(), sentinel_password=SENTINEL_PASSWORD, key_prefix=prefix)
        store.set("before", 1)

        def child(w: int, errors: Any) -> None:
            try:
                assert store.get("before") == 1
                for i in range(PER_CHILD):
                    store.set(f"{w}:{i}", i)
                    assert store.get(f"{w}:{i}") == i
                store.close()
            except BaseException:
                errors.put(traceback.format_exc())
                raise

        run_children(child)
        assert store.get("before") == 1
        assert len(store.keys("*:*")) == CHILDREN * PER_CHILD
        store.clear()
        store.close()
        return

    async_store = AsyncRedisCache(g.url(), sentinel_password=SENTINEL_PASSWORD, key_prefix=prefix)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(async_store.set("before", 1))

    def async_child(w: int, errors: Any) -> None:
        async def work() -> None:
            assert await async_store.get("before") == 1
            for i in range(PER_CHILD):
                await async_store.set(f"{w}:{i}", i)
                assert await async_store.get(f"{w}:{i}") == i
            await async_store.aclose()

        try:
            asyncio.run(asyncio.wait_for(work(), 60))
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(async_child)

    async def check() -> None:
        assert await async_store.get("before") == 1
        assert len(await async_store.keys("*:*")) == CHILDREN * PER_CHILD
        await async_store.clear()
        await async_store.aclose()

    loop.run_until_complete(check())
    loop.close()


@pytest.mark.redis
def test_a_frozen_sentinel_costs_one_timeout_not_a_hang(stable_sentinel_group: SentinelGroup) -> None:
    """One Sentinel frozen (kill -STOP): a new connection asks the next one after the socket timeout."""
    g = stable_sentinel_group
    frozen = g.sentinels[0]
    frozen.stop()
    try:
        store = RedisCache(
            sentinels=g.sentinel_hosts,  # the frozen one first
            service_name=g.service,
            password=PASSWORD,
            sentinel_password=SENTINEL_PASSWORD,
            key_prefix="frozen:",
            socket_timeout=0.3,
            socket_connect_timeout=0.3,
        )
        try:
            started = time.monotonic()
            store.set("k", 1)
            assert store.get("k") == 1
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, elapsed
            assert store.serving == f"127.0.0.1:{g.master.port}"
            store.delete("k")
        finally:
            store.close()
    finally:
        frozen.cont()


@pytest.mark.redis
@pytest.mark.slow
def test_manager_with_fallback_fails_back_to_the_promoted_master(tmp_path: Path) -> None:
    """With the default memory fallback: the breaker serves from memory meanwhile, then fails back to the new master.

    Keys written during the outage are invalidated on failback; keys written before the kill
    by this process are invalidated by the failover check: neither reads back older.
    """
    group = start_sentinel_group(tmp_path / "sentinel", password=PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    config = {
        "cache": {
            "type": "redis",
            "url": group.url(),
            "sentinel_password": _literal(SENTINEL_PASSWORD),
            "key_prefix": "fb:",
            "state_dir": str(tmp_path / "state"),
            "probe_interval": 0.2,
        },
        "database": {"type": "memory"},
    }
    try:
        with StorageManager(config) as storage:
            cache = storage.cache
            cache.set("before", "v1")
            first = group.master.port
            kill_9(group.master)
            new_master = group.wait_master_not(first)
            written = 0
            end = time.monotonic() + 30
            while True:  # writes and reads go on throughout: errors, then the fallback, then the new master
                written += 1
                try:
                    cache.set("during", written)
                    assert cache.get("during") in (written, None)
                except BackendUnavailableError:
                    pass
                health = storage.health().cache
                if not health.degraded and health.healthy and health.serving == f"127.0.0.1:{new_master}":
                    break
                assert time.monotonic() < end, health
                time.sleep(0.05)
            assert cache.get("before") in (None, "v1")  # a miss is legal; nothing older exists to read
            cache.set("after", 1)
            assert cache.get("after") == 1
            value = cache.get("during")
            assert value in (None, written), value
    finally:
        stop_sentinel_group(group)


# --- the fence (tests/test_redis_fence.py): the Sentinel pools too ---------------------------


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_sentinel_cut_write_never_overtakes_a_later_one(stable_sentinel_group: SentinelGroup, flavour: str) -> None:
    """A write cut on a frozen master (0.3 s, under down-after-milliseconds) never runs after a later one."""
    g = stable_sentinel_group
    is_async = flavour == "async"
    store: Any = (AsyncRedisCache if is_async else RedisCache)(
        sentinels=g.sentinel_hosts,
        service_name=g.service,
        password=PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        key_prefix=f"fence-sentinel-{flavour}:",
        socket_timeout=0.3,
    )
    loop = asyncio.new_event_loop()

    def run(result: Any) -> Any:
        return loop.run_until_complete(result) if is_async else result

    pool = store._client.connection_pool
    try:
        held = [run(pool.get_connection()), run(pool.get_connection())]  # two connections, established
        for conn in held:
            run(pool.release(conn))
        g.master.stop()
        try:
            with pytest.raises(BackendUnavailableError):
                run(store.set("k", "A" * 100_000))  # more than one 16 KiB read of the server
            cut = pool._available_connections.pop()  # another caller holds the cut connection
            assert not cut.is_connected
            if is_async:
                later: Any = loop.create_task(store.set("k", "B"))
                loop.run_until_complete(asyncio.sleep(0.15))
            else:
                outcome: list[Any] = []
                later = threading.Thread(target=lambda: outcome.append(store.set("k", "B")))
                later.start()
                time.sleep(0.15)
        finally:
            g.master.cont()
        if is_async:
            assert loop.run_until_complete(later) is True
        else:
            later.join(5)
            assert outcome == [True]
        pool._available_connections.append(cut)
        assert run(store.get("k")) == "B"
    finally:
        run(store.clear())
        run(store.aclose() if is_async else store.close())
        loop.close()
