"""Redis-specific behaviour: prefix isolation with glob characters, the commands sent, error mapping, cluster."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from redis import exceptions as rex

from kvstore import BackendBusyError, BackendUnavailableError, KVStoreError, SerializationError, WrongTypeError
from kvstore._core.urls import redact_url
from kvstore.config import RedisCacheConfig
from kvstore.redis import RedisCache
from kvstore.redis._common import DRIVER_ERRORS, ERROR_MAP, ErrorMap, normalize_url, scan_match, translate
from tests.fixtures_redis import RedisServer

# --- two caches "a:" and "a*:" on one Redis (must show) ----------------------------------


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "fakeredis"])
def raw(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A raw redis-py client on a real Redis (the suite's server) or on fakeredis."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = redis.Redis.from_url(server.url)
    else:
        client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    yield client
    client.close()


def test_clear_on_a_leaves_every_a_star_key(raw: Any) -> None:
    """clear() on prefix 'a:' leaves every 'a*:' key in place; keys('*') of each lists only its own."""
    a = RedisCache(client=raw, key_prefix="a:")
    a_star = RedisCache(client=raw, key_prefix="a*:")
    try:
        a.mset({"x": 1, "y": 2, "*": 3})
        a_star.mset({"x": 10, "z": 30, "[a]": 40})
        assert sorted(a.keys("*")) == ["*", "x", "y"]
        assert sorted(a_star.keys("*")) == ["[a]", "x", "z"]
        a.clear()
        assert a.keys("*") == []
        assert sorted(a_star.keys("*")) == ["[a]", "x", "z"]
        assert sorted(raw.scan_iter(match=scan_match("a*:", "*"))) == [b"a*:\x00[a]", b"a*:\x00x", b"a*:\x00z"]
        assert a_star.mget(["x", "z", "[a]"]) == [10, 30, 40]
    finally:
        a_star.clear()


def test_clear_leaves_the_key_equal_to_the_bare_prefix() -> None:
    """Raw key 'a:' is key '' of no 'a:' store (keys are non-empty): clear() on 'a:' leaves it."""
    raw_client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    a = RedisCache(client=raw_client, key_prefix="a:")
    raw_client.set("a:", b"1")
    a.set("k", 1)
    assert a.keys() == ["k"]
    a.clear()
    assert raw_client.get("a:") == b"1"
    assert a.keys() == []


def test_scan_match_escapes_the_prefix_and_widens_the_pattern() -> None:
    """The SCAN MATCH glob has the namespace (prefix + NUL) escaped and each ? or [...] widened to *."""
    assert scan_match("a*:", "*") == "a\\*:\x00*"
    assert scan_match("x[1]", "k?[ab]z") == "x\\[1\\]\x00k*z"
    assert scan_match("", "u\\*er") == "u\\*er"


# --- the commands actually sent (INFO commandstats on a server we own) -------------------


@pytest.fixture
def counted(owned_redis_server: RedisServer) -> Iterator[tuple[RedisCache, Any]]:
    """A store on the owned server and a raw client whose commandstats start at zero."""
    raw_client = redis.Redis.from_url(owned_redis_server.url)
    store = RedisCache(owned_redis_server.url, key_prefix="cmd:")
    store.clear()
    raw_client.config_resetstat()
    yield store, raw_client
    store.clear()
    store.close()
    raw_client.close()


def _calls(raw_client: Any) -> dict[str, int]:
    stats = raw_client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.redis
def test_commands_sent(counted: tuple[RedisCache, Any]) -> None:
    """mget is one MGET, mset one MSET or one MULTI/EXEC of SET PX, ttl is SET PX, keys/clear use SCAN+UNLINK."""
    store, raw_client = counted
    store.mset({f"k{i}": i for i in range(100)})
    assert store.mget([f"k{i}" for i in range(100)]) == list(range(100))
    store.mset([(f"t{i}", i, 1.5) for i in range(10)])
    store.set("frac", 1, ttl=0.25)
    pttl = raw_client.pttl("cmd:\x00frac")
    assert 150 < pttl <= 250
    assert 1400 < raw_client.pttl("cmd:\x00t3") <= 1500
    assert len(store.keys("k1*")) == 11
    store.clear()
    calls = _calls(raw_client)
    assert calls["mset"] == 1
    assert calls["mget"] == 1
    assert calls["multi"] == 1
    assert calls["exec"] == 1
    assert calls["set"] == 11
    assert calls.get("scan", 0) >= 2
    assert calls["unlink"] >= 1
    for forbidden in ("keys", "flushdb", "flushall"):
        assert forbidden not in calls


@pytest.mark.redis
def test_new_operations_are_one_command_each(counted: tuple[RedisCache, Any]) -> None:
    """incr is one INCRBY, delete_many one DEL of every key, get(touch=) one GETEX PX."""
    store, raw_client = counted
    store.mset({"a": 1, "b": 2, "c": 3})
    raw_client.config_resetstat()
    assert store.incr("a", 5) == 6
    assert store.get("b", touch=30) == 2
    assert 29_000 < raw_client.pttl("cmd:\x00b") <= 30_000
    assert store.delete_many(["a", "b", "c", "missing"]) == 3
    calls = _calls(raw_client)
    del calls["pttl"], calls["config|resetstat"]
    assert calls == {"incrby": 1, "getex": 1, "del": 1}


@pytest.mark.redis
def test_session_get_touch_on_a_cache_hit_is_one_round_trip(owned_redis_server: RedisServer) -> None:
    """SessionStore(RedisCache).get(touch=True) is one GETEX when the database was slid lately, nothing more."""
    from kvstore.memory import MemoryDatabase
    from kvstore.session import SessionStore

    raw_client = redis.Redis.from_url(owned_redis_server.url)
    cache = RedisCache(owned_redis_server.url, key_prefix="sess:")
    sessions = SessionStore(cache, MemoryDatabase(), ttl=600)
    try:
        sid = sessions.create({"user": 1})
        raw_client.config_resetstat()
        for _ in range(3):
            assert sessions.get(sid, touch=True) == {"user": 1}
        calls = _calls(raw_client)
        del calls["config|resetstat"]
        assert calls == {"getex": 3}
        remaining = raw_client.pttl(f"sess:\x00session:{sid}")
        assert 299_000 < remaining <= 300_000  # slid to the cache TTL (5 minutes)
    finally:
        cache.clear()
        cache.close()
        raw_client.close()


# --- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (rex.ConnectionError("Error 111 connecting"), BackendUnavailableError),
        (rex.TimeoutError("Timeout reading from socket"), BackendUnavailableError),
        (rex.AuthenticationError("invalid username-password pair"), BackendUnavailableError),
        (rex.AuthorizationError("not allowed"), BackendUnavailableError),
        (rex.AuthenticationWrongNumberOfArgsError("wrong number"), BackendUnavailableError),
        (rex.NoPermissionError("NOPERM"), BackendUnavailableError),
        (rex.BusyLoadingError("LOADING"), BackendUnavailableError),
        (rex.MaxConnectionsError("Too many connections"), BackendBusyError),
        (rex.ConnectionError("No connection available."), BackendBusyError),
        (rex.ConnectionError("max number of clients reached"), BackendBusyError),
        (rex.ClusterDownError("CLUSTERDOWN"), BackendUnavailableError),
        (rex.MasterDownError("MASTERDOWN"), BackendUnavailableError),
        (rex.TryAgainError("TRYAGAIN"), BackendUnavailableError),
        (rex.ReadOnlyError("READONLY"), BackendUnavailableError),
        (rex.RedisClusterException("Redis Cluster cannot be connected"), BackendUnavailableError),
        (rex.SlotNotCoveredError("slot not covered"), BackendUnavailableError),
        (TimeoutError(), BackendUnavailableError),
        (ConnectionResetError(), BackendUnavailableError),
        (rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), WrongTypeError),
        (rex.ResponseError("ERR something else"), KVStoreError),
        (rex.DataError("bad data"), KVStoreError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_every_driver_exception_is_mapped(exc: BaseException, expected: type[KVStoreError]) -> None:
    """Each redis-py exception we care about becomes the documented kvstore error with context."""
    err = translate(exc, operation="get", key="k", secret="s3cret")
    assert type(err) is expected
    assert (err.backend, err.key, err.operation) == ("redis", "k", "get")


def _redis_exceptions() -> list[type[BaseException]]:
    classes = [getattr(rex, name) for name in dir(rex)]
    return [c for c in classes if isinstance(c, type) and issubclass(c, DRIVER_ERRORS)]


@pytest.mark.parametrize("cls", _redis_exceptions(), ids=lambda c: c.__name__)
def test_every_redis_py_exception_class_has_a_rule(cls: type[BaseException]) -> None:
    """Each exception class redis-py defines meets a rule of ERROR_MAP (none falls through) and keeps its context."""
    try:
        exc = cls("some message")
    except ValueError:  # MOVED and ASK parse "slot host:port"
        exc = cls("3999 127.0.0.1:6381")
    assert any(isinstance(exc, types) for types, _, _ in ERROR_MAP)
    err = translate(exc, operation="incr", key="k")
    assert isinstance(err, KVStoreError)
    assert (err.backend, err.key, err.operation) == ("redis", "k", "incr")


def test_the_error_map_is_one_boundary() -> None:
    """ErrorMap raises the translated error from the driver's, and lets kvstore's own errors pass."""
    with pytest.raises(BackendUnavailableError) as info, ErrorMap("ping", secret="pw"):
        raise rex.ConnectionError("Error 111 connecting pw")
    assert isinstance(info.value.__cause__, rex.ConnectionError)
    assert "pw" not in str(info.value)
    with pytest.raises(WrongTypeError, match="not an integer"), ErrorMap("incr", "n"):
        raise rex.ResponseError("value is not an integer or out of range")
    with pytest.raises(SerializationError), ErrorMap("get", "k"):
        raise SerializationError("already kvstore's")


def test_translate_scrubs_the_password() -> None:
    """A driver message that echoes the password is scrubbed."""
    err = translate(rex.ResponseError("ERR bad s3cret here"), operation="set", secret="s3cret")
    assert "s3cret" not in str(err)


def test_value_op_on_a_list_key_is_wrong_type() -> None:
    """get on a Redis list raises WrongTypeError (a TypeError); mget reads it as None, like MGET."""
    raw_client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    store = RedisCache(client=raw_client, key_prefix="p:")
    raw_client.rpush("p:\x00l", b"1")
    with pytest.raises(WrongTypeError) as info:
        store.get("l")
    assert isinstance(info.value, TypeError)
    assert info.value.key == "l"
    assert store.mget(["l"]) == [None]
    assert store.exists("l") is True
    assert store.keys() == ["l"]


def test_stored_bytes_that_are_not_json_raise_serialization_error() -> None:
    """A value written by another client that is not JSON raises SerializationError naming the key."""
    raw_client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    store = RedisCache(client=raw_client, key_prefix="p:")
    raw_client.set("p:\x00bad", b"not json")
    store.set("good", 1)
    with pytest.raises(SerializationError) as info:
        store.get("bad")
    assert info.value.key == "bad"
    with pytest.raises(SerializationError, match="'bad'"):
        store.mget(["good", "bad"])


def test_a_ready_client_with_decode_responses_works() -> None:
    """A ready client built with decode_responses=True still reads values and lists keys."""
    raw_client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    store = RedisCache(client=raw_client, key_prefix="d:")
    store.mset({"a": {"x": 1}, "ключ": [1]})
    assert store.mget(["a", "ключ"]) == [{"x": 1}, [1]]
    assert sorted(store.keys("*")) == ["a", "ключ"]
    store.clear()
    assert store.keys() == []


def test_ready_client_is_not_closed() -> None:
    """A store handed a ready client does not close it."""
    raw_client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    store = RedisCache(client=raw_client)
    store.close()
    raw_client.set("still", b"1")
    assert raw_client.get("still") == b"1"


@pytest.mark.redis
def test_a_store_built_from_config_owns_its_client(owned_redis_server: RedisServer) -> None:
    """from_config keeps the config; close() disconnects the client it opened, a handed client is only borrowed."""
    raw_client = redis.Redis.from_url(owned_redis_server.url)
    before = {c["id"] for c in raw_client.client_list()}
    config = RedisCacheConfig(url=owned_redis_server.url, key_prefix="own:")
    store = RedisCache.from_config(config)
    assert store.config is config
    store.set("k", 1)
    opened = {c["id"] for c in raw_client.client_list()} - before
    assert opened
    store.close()
    deadline = time.monotonic() + 5
    while opened & {c["id"] for c in raw_client.client_list()} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not opened & {c["id"] for c in raw_client.client_list()}
    borrowed = RedisCache(client=raw_client)
    borrowed.close()
    assert raw_client.ping() is True
    raw_client.close()


def test_config_url_flags() -> None:
    """A redis+cluster:// URL selects the cluster client; the URL password moves into SecretStr."""
    config = RedisCacheConfig(url="redis+cluster://:pw@127.0.0.1:7000")
    assert config.cluster is True
    assert config.password is not None
    assert "pw" not in repr(config)


def test_urls_are_normalized_and_redacted() -> None:
    """+cluster schemes select the cluster client and passwords never stay in a printable URL."""
    assert normalize_url("redis+cluster://u:pw@h:7000") == ("redis://u@h:7000", "pw", True)
    assert normalize_url("rediss+cluster://h:7000/0") == ("rediss://h:7000/0", None, True)
    assert normalize_url("redis://:p%40ss@h/1") == ("redis://h/1", "p@ss", False)
    assert redact_url("redis://u:pw@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"
    store = RedisCache("redis://user:hunter2-canary@127.0.0.1:1/0")
    assert "hunter2-canary" not in repr(store)
    store.close()


def test_missing_redis_extra_names_the_pip_command() -> None:
    """Without redis installed, the backend module raises MissingDependencyError naming kvstore-sdk[redis]."""
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import kvstore\n"
        "try:\n"
        "    import kvstore.redis._store_async\n"
        "except kvstore.MissingDependencyError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "kvstore-sdk[redis]"' in out


# --- cluster ------------------------------------------------------------------------------


@pytest.mark.redis
def test_cluster_multi_key_calls_span_slots_and_nodes(redis_cluster: list[RedisServer]) -> None:
    """On a 3-master cluster, mget/mset/keys/clear work for keys spread over every node."""
    store = RedisCache(redis_cluster[0].url, key_prefix="spread:")
    try:
        store.clear()
        items = {f"key{i}": i for i in range(200)}
        store.mset(items)
        store.mset([(f"ttl{i}", i, 60) for i in range(30)])
        assert store.mget(list(items)) == list(items.values())
        assert len(store.keys("key*")) == 200
        assert len(store.keys()) == 230
        per_node = []
        for node in redis_cluster:
            raw_client = redis.Redis(host="127.0.0.1", port=node.port)
            per_node.append(raw_client.dbsize())
            raw_client.close()
        assert all(n > 0 for n in per_node), per_node
        store.clear()
        assert store.keys() == []
    finally:
        store.close()
