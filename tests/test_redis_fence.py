"""The Redis fence: a call cut at its deadline on a frozen server is never overtaken by a later one.

A frozen server (kill -STOP) already holds the cut call's command in its socket buffer; at
the thaw it used to run a later command, sent on another pooled connection, FIRST and the
cut one after it: ``SET k A`` (timed out) then ``SET k B`` (succeeded) left k = A. The store
now kills the cut client (``CLIENT KILL ID .. ADDR ..``) on the next command's connection,
before that command (kvstore/redis/_acompat.py `Fences`, docs/fallback.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from kvstore import BackendUnavailableError
from kvstore.redis import AsyncRedisCache, RedisCache
from tests.fixtures_redis import RedisServer, _cli, start_redis_server, stop_redis_server
from tests.forking import FORK

pytestmark = pytest.mark.redis

TIMEOUT = 0.3
TRIALS = 3
#: The cut write: larger than Redis' 16 KiB read per event-loop turn, so at the thaw the
#: server needs two turns to read it and runs the small later write (one turn) first, every
#: time. (A small command overtaken needs the two connections' readiness in the other order.)
BIG = "A" * 100_000


def test_cut_write_never_overtakes_a_later_one(owned_redis_server: RedisServer) -> None:
    """Sync: set A times out on a frozen server; set B, sent on another connection while still frozen, wins."""
    store = RedisCache(owned_redis_server.url, key_prefix="fence-sync:", socket_timeout=TIMEOUT)
    pool = store._client.connection_pool
    try:
        for trial in range(TRIALS):
            key = f"k{trial}"
            held = [pool.get_connection(), pool.get_connection()]  # two connections, established
            for conn in held:
                pool.release(conn)
            owned_redis_server.stop()
            try:
                with pytest.raises(BackendUnavailableError):
                    store.set(key, BIG)
                # Another caller holds the cut connection (now closed): B goes out on the other.
                cut = pool.pool.get_nowait()
                assert cut is not None
                assert not cut.is_connected
                outcome: list[Any] = []
                later = threading.Thread(target=lambda: outcome.append(store.set(key, "B")))  # noqa: B023
                later.start()
                time.sleep(TIMEOUT / 2)  # B (and its fence) sent, still frozen
            finally:
                owned_redis_server.cont()
            later.join(5)
            pool.pool.put_nowait(cut)
            assert outcome == [True], outcome
            assert store.get(key) == "B", f"trial {trial}: the timed-out write ran after the later one"
    finally:
        store.clear()
        store.close()


async def test_cut_write_never_overtakes_a_later_one_async(owned_redis_server: RedisServer) -> None:
    """Async: the same with tasks: the later write B is what get reads."""
    store = AsyncRedisCache(owned_redis_server.url, key_prefix="fence-async:", socket_timeout=TIMEOUT)
    pool = store._client.connection_pool
    try:
        for trial in range(TRIALS):
            key = f"k{trial}"
            held = [await pool.get_connection(), await pool.get_connection()]
            for conn in held:
                await pool.release(conn)
            owned_redis_server.stop()
            try:
                with pytest.raises(BackendUnavailableError):
                    await store.set(key, BIG)
                cut = pool._available_connections.pop()  # another caller holds the cut connection
                assert not cut.is_connected
                later = asyncio.create_task(store.set(key, "B"))
                await asyncio.sleep(TIMEOUT / 2)
            finally:
                owned_redis_server.cont()
            await later
            pool._available_connections.append(cut)
            assert await store.get(key) == "B", f"trial {trial}: the timed-out write ran after the later one"
    finally:
        await store.clear()
        await store.aclose()


def test_fence_whose_kill_times_out_keeps_failing_as_unavailable(owned_redis_server: RedisServer) -> None:
    """Still frozen: the next call's fence times out, the call fails as unavailable; after the thaw all works."""
    store = RedisCache(owned_redis_server.url, key_prefix="fence-kill-timeout:", socket_timeout=TIMEOUT)
    pool = store._client.connection_pool
    try:
        held = [pool.get_connection(), pool.get_connection()]
        for conn in held:
            pool.release(conn)
        owned_redis_server.stop()
        try:
            with pytest.raises(BackendUnavailableError):
                store.set("k", "A")
            cut = pool.pool.get_nowait()
            with pytest.raises(BackendUnavailableError):
                store.set("k", "B")  # its fence (CLIENT KILL) times out: B is never sent
            assert store._fences.pending
        finally:
            owned_redis_server.cont()
        pool.pool.put_nowait(cut)
        store.set("k", "C")
        assert not store._fences.pending
        assert store.get("k") == "C"
    finally:
        store.clear()
        store.close()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Any:
    server = start_redis_server(tmp_path / "redis-acl")
    try:
        yield server
    finally:
        stop_redis_server(server)


@pytest.mark.parametrize("refused", ["client|kill", "client|info"])
def test_refused_fence_warns_once_and_calls_keep_working(
    acl_redis: RedisServer, refused: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user without the fence's command: one warning naming the refusal; every later call works."""
    _cli(acl_redis.port, "ACL", "SETUSER", "fenced", "on", ">pw", "~*", "&*", "+@all", f"-{refused}")
    store = RedisCache(acl_redis.url, username="fenced", password="pw", key_prefix="fence-acl:", socket_timeout=TIMEOUT)
    caplog.set_level(logging.WARNING, logger="kvstore")
    try:
        store.set("k", "0")
        for round_ in range(2):  # two cuts: one warning in all
            acl_redis.stop()
            try:
                with pytest.raises(BackendUnavailableError):
                    store.set("k", "A")
            finally:
                acl_redis.cont()
            store.set("k", f"B{round_}")
            assert store.get("k") == f"B{round_}"
        warnings = [r for r in caplog.records if getattr(r, "kvstore_event", None) == "redis_fence_refused"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "NOPERM" in warnings[0].getMessage() or "permission" in warnings[0].getMessage()
        assert refused.replace("|", " ").upper() in warnings[0].getMessage()
    finally:
        store.clear()
        store.close()


def _kills(url: str) -> int:
    """How many ``CLIENT KILL`` the server ran so far (``INFO commandstats``)."""
    admin = redis.Redis.from_url(url)
    try:
        stats = admin.info("commandstats")
    finally:
        admin.close()
    return int(stats.get("cmdstat_client|kill", {}).get("calls", 0))


def _child_report(results: Any, run: Any) -> None:
    try:
        results.put(run())
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_forked_child_keeps_the_fence(owned_redis_server: RedisServer, flavour: str) -> None:
    """A child forked after a cut (its fence still pending) kills the cut client before its own first command."""
    url = owned_redis_server.url
    is_async = flavour == "async"
    store: Any = (AsyncRedisCache if is_async else RedisCache)(
        url, key_prefix=f"fence-fork-{flavour}:", socket_timeout=TIMEOUT
    )
    loop = asyncio.new_event_loop()

    def run(result: Any) -> Any:  # the parent's calls, in either flavour
        return loop.run_until_complete(result) if is_async else result

    try:
        run(store.set("k", "0"))
        owned_redis_server.stop()
        try:
            with pytest.raises(BackendUnavailableError):
                run(store.set("k", "A"))
        finally:
            owned_redis_server.cont()
        assert len(store._fences.pending) == 1  # no command since the cut: the fence waits

        def child() -> tuple[int, int, Any]:
            before = _kills(url)
            if is_async:

                async def work() -> Any:
                    await store.set("k", "B")
                    return await store.get("k")

                value = asyncio.run(work())
            else:
                store.set("k", "B")
                value = store.get("k")
            return len(store._fences.pending), _kills(url) - before, value

        results = FORK.Queue()
        proc = FORK.Process(target=_child_report, args=(results, child))
        proc.start()
        proc.join(30)
        assert proc.exitcode == 0
        assert results.get(timeout=5) == (0, 1, "B")
    finally:
        run(store.clear())
        run(store.aclose() if is_async else store.close())
        loop.close()


def test_closing_a_subscription_leaves_no_fence(redis_server: RedisServer) -> None:
    """A subscription's connection, closed on purpose, carried no data command: the next call pays no kill."""
    store = RedisCache(redis_server.url, key_prefix="fence-pubsub:")
    try:
        subscription = store.subscribe("c")
        subscription.close()
        assert store._fences.pending == {}
        store.set("k", 1)
        assert store.get("k") == 1
    finally:
        store.clear()
        store.close()
