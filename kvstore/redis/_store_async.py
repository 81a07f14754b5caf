"""Redis cache backend on redis-py (hiredis parser): standalone server or Redis Cluster.

The store implements the raw hooks of `AsyncCache` (kvstore/base_async.py holds every
rule), each one command or one pipeline: one round trip. Keys get the store's namespace
(``self._ns``) here, in the hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from pydantic import SecretStr

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.keys import validate_prefix
from kvstore._core.urls import redact_url
from kvstore.base_async import AsyncCache
from kvstore.errors import KVStoreError, MissingDependencyError

try:
    import redis.asyncio
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("redis", "redis", "redis") from exc

from kvstore.redis._acompat import AsyncReadyCluster, AsyncWaitingPool, watch_fork_async
from kvstore.redis._common import (
    DRIVER_ERRORS,
    ErrorMap,
    clear_match,
    client_options,
    key_filter,
    namespace,
    no_retry,
    normalize_url,
    scan_match,
    translate,
)

__all__ = ["AsyncRedisCache"]

if True:  # ASYNC
    #: A batch of gets (`AsyncRedisCache._get_batch`): MGET, plus the 1-based positions of
    #: the keys MGET read as nil that exist (another type than a string: GET would fail).
    _GET_BATCH = (
        "local values = redis.call('MGET', unpack(KEYS))\n"
        "local wrong = {}\n"
        "for i = 1, #KEYS do\n"
        "    if not values[i] and redis.call('EXISTS', KEYS[i]) == 1 then wrong[#wrong + 1] = i end\n"
        "end\n"
        "return {values, wrong}\n"
    )
    _GET_BATCH_SHA = hashlib.sha1(_GET_BATCH.encode(), usedforsecurity=False).hexdigest()


class AsyncRedisCache(AsyncCache):
    """Cache tier on Redis or Redis Cluster.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URL.
            Without one, ``host``/``port``/``db`` are used.
        client: A ready ``redis.asyncio.Redis`` or ``RedisCluster``; the store
            borrows it: uses it as is (it should have ``decode_responses=False``)
            and does not close it. A store built from a URL, host or config
            (`from_config`) owns its client and closes it.
        key_prefix: The store's namespace. A key is stored as ``prefix + NUL + key``
            (``key`` alone without a prefix): no key contains NUL, so stores with
            nested prefixes (``a:`` and ``a:b:``, or ``""`` and ``other:``) never
            see, list, expire or clear each other's keys. ``clear`` and ``keys``
            see only this namespace.
        cluster: Use redis-py's ``RedisCluster`` (also set by a ``+cluster`` URL).
        socket_timeout: Deadline of one reply; a hung server fails the call with
            `BackendUnavailableError` after this long, not redis-py's minute.
        pool_timeout: How long a call waits for a free pooled connection
            (default: connect + socket timeout) before `BackendBusyError`. A server
            at its ``maxclients`` also raises `BackendBusyError`: busy is not an
            outage, so nothing falls back (refused, reset, timed out stay
            `BackendUnavailableError`).
        scan_count: ``COUNT`` hint of each ``SCAN`` and size of ``UNLINK`` batches.

    redis-py's own retries are off (``Retry(NoBackoff(), 0)``): a lost reply to a
    write is never resent by the driver; kvstore's retry policy decides.

    Fork-safe: used in a process forked from its creator, the store connects anew and
    never uses (or closes) the parent's sockets (DESIGN.md §8).
    """

    backend = "redis"
    durable = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        key_prefix: str = "",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        cluster: bool = False,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | SecretStr | None = None,
        tls: bool = False,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_verify: bool = True,
        max_connections: int = 50,
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
        health_check_interval: float = 10.0,
        pool_timeout: float | None = None,
        scan_count: int = 1000,
    ) -> None:
        self.key_prefix = validate_prefix(key_prefix)
        self._ns = namespace(self.key_prefix)
        self.max_value_bytes = max_value_bytes
        self._scan_count = scan_count
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        self._secret: str | None = None
        self._client: Any
        if client is not None:
            self._owns_client = False
            self._cluster = isinstance(client, RedisCluster)
            self._target = f"client={type(client).__name__}"
            self._client = client
            watch_fork_async(self)
            return
        self._owns_client = True
        if url is not None:
            url, url_password, url_cluster = normalize_url(url)
            secret = secret or url_password
            cluster = cluster or url_cluster
            tls = tls or url.startswith("rediss:")
            self._target = redact_url(url)
        else:
            self._target = f"{host}:{port}" + ("" if cluster else f"/{db}")
            if not cluster:
                netloc = f"[{host}]" if ":" in host else host
                url = f"{'rediss' if tls else 'redis'}://{netloc}:{port}/{db}"
        self._cluster = cluster
        self._secret = secret
        options = client_options(
            username=username,
            password=secret,
            tls=tls,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_verify=tls_verify,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
            from_url=url is not None,
        )
        options["retry"] = no_retry(Retry)
        self._url, self._host, self._port, self._options = url, host, port, options
        # A burst of callers waits (briefly) for a free connection instead of failing.
        self._pool_wait = pool_timeout if pool_timeout is not None else socket_connect_timeout + socket_timeout
        # The sync cluster client discovers the cluster while it is built.
        self._client = _Closed(type(self).__name__, "redis")
        with self._errors("connect"):
            self._client = self._new_client()
        watch_fork_async(self)

    def _new_client(self) -> Any:
        """A new client (and pool) with the store's settings."""
        if self._cluster:
            if self._url is not None:
                return AsyncReadyCluster.from_url(self._url, **self._options)
            return AsyncReadyCluster(host=self._host, port=self._port, **self._options)
        assert self._url is not None
        pool = AsyncWaitingPool.from_url(self._url, timeout=self._pool_wait, **self._options)
        return redis.asyncio.Redis.from_pool(pool)

    async def _opened(self) -> None:
        """`from_config` checks the server with one ``PING``.

        One attempt, bounded by the socket timeouts (0.5 s each by default); the
        manager retries within ``config.connect_timeout`` and then falls back.
        """
        await self.ping()

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._client, _Closed) else ("cluster" if self._cluster else "open")
        return f"<{type(self).__name__} {self._target} prefix={self.key_prefix!r} {state}>"

    def _error(self, exc: BaseException, operation: str, key: str | None = None) -> KVStoreError:
        return translate(exc, operation=operation, key=key, secret=self._secret)

    def _errors(self, operation: str, key: str | None = None) -> ErrorMap:
        return ErrorMap(operation, key, self._secret)

    # --- the raw hooks (kvstore/base_async.py): one round trip each -------------------------
    # The hot ones (get, get_touch, set, mget, mset) spell the error map as a bare
    # ``try``, which costs nothing until it raises; the others use ``with self._errors``.

    async def _get(self, key: str) -> bytes | None:
        try:
            return await self._client.execute_command("GET", self._ns + key)  # type: ignore[no-any-return]
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "get", key) from exc

    async def _get_touch(self, key: str, ms: int) -> bytes | None:
        try:
            return await self._client.execute_command("GETEX", self._ns + key, "PX", ms)  # type: ignore[no-any-return]
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "get", key) from exc

    async def _set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        args: list[Any] = ["SET", self._ns + key, data]
        if ms is not None:
            args += ("PX", ms)
        if only_if_absent:
            args.append("NX")
        try:
            return bool(await self._client.execute_command(*args))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "set", key) from exc

    async def _delete(self, key: str) -> bool:
        with self._errors("delete", key):
            return bool(await self._client.execute_command("DEL", self._ns + key))

    async def _delete_many(self, keys: list[str]) -> int:
        prefix = self._ns
        full = [prefix + k for k in keys]
        with self._errors("delete_many"):
            if self._cluster:
                # redis-py sends one DEL per slot, pipelined to every node at once.
                return int(await self._client.delete(*full))
            return int(await self._client.execute_command("DEL", *full))

    async def _exists(self, key: str) -> bool:
        with self._errors("exists", key):
            return bool(await self._client.execute_command("EXISTS", self._ns + key))

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        prefix = self._ns
        full = [prefix + k for k in keys]
        try:
            if self._cluster:
                return await self._client.mget_nonatomic(full)  # type: ignore[no-any-return]
            return await self._client.execute_command("MGET", *full)  # type: ignore[no-any-return]
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "mget") from exc

    if True:  # ASYNC
        #: Set once the server refused the batch script (an ACL without scripting, a server
        #: without Lua): batches then read with MGET and check their misses with EXISTS.
        _no_script = False

        async def _get_batch(self, keys: list[str]) -> list[Any]:
            # A batch of concurrent gets (kvstore._core.batching) in one round trip: MGET reads
            # a key of another type (a list) as nil, where GET fails, so a script tells them apart.
            full = [self._ns + k for k in keys]
            try:
                if self._cluster or self._no_script:  # keys of many slots: no script
                    raws, wrong = await self._mget_checked(keys, full)
                else:
                    try:
                        raws, wrong = await self._client.execute_command("EVALSHA", _GET_BATCH_SHA, len(full), *full)
                    except redis.exceptions.NoScriptError:
                        raws, wrong = await self._client.execute_command("EVAL", _GET_BATCH, len(full), *full)
                    except redis.exceptions.ResponseError as exc:
                        text = str(exc)
                        if not isinstance(exc, redis.exceptions.NoPermissionError) and "unknown command" not in text:
                            raise
                        self._no_script = True
                        raws, wrong = await self._mget_checked(keys, full)
            except DRIVER_ERRORS as exc:
                raise self._error(exc, "get") from exc
            for i in wrong:
                key = keys[i - 1]
                wrong_type = redis.exceptions.ResponseError(f"WRONGTYPE key {key!r} does not hold a string")
                raws[i - 1] = self._error(wrong_type, "get", key)
            return raws

        async def _mget_checked(self, keys: list[str], full: list[str]) -> tuple[list[Any], list[int]]:
            """MGET, then EXISTS of each miss: the 1-based positions of keys of another type."""
            if self._cluster:
                raws: list[Any] = await self._client.mget_nonatomic(full)
            else:
                raws = await self._client.execute_command("MGET", *full)
            misses = [i for i, raw in enumerate(raws) if raw is None]
            found = await asyncio.gather(*[self._exists(keys[i]) for i in misses])
            return raws, [i + 1 for i, there in zip(misses, found, strict=True) if there]

    async def _mset(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        prefix = self._ns
        try:
            if not self._cluster and all(ms is None for _, _, ms in rows):
                # One MSET: atomic, one round trip.
                flat: list[Any] = ["MSET"]
                for key, data, _ in rows:
                    flat += (prefix + key, data)
                await self._client.execute_command(*flat)
                return
            # Per-item TTLs: SET ... PX pipelined in one round trip, inside MULTI/EXEC
            # on a single server. A cluster cannot be atomic across slots, so there
            # the pipeline is sent to each node at once.
            pipe = self._client.pipeline(transaction=not self._cluster)
            for key, data, ms in rows:
                if ms is None:
                    pipe.execute_command("SET", prefix + key, data)
                else:
                    pipe.execute_command("SET", prefix + key, data, "PX", ms)
            await pipe.execute()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "mset") from exc

    async def _iter_keys(self, pattern: str) -> AsyncIterator[str]:
        """Stream matching keys with ``SCAN MATCH``; like SCAN, a key may rarely repeat."""
        accept = key_filter(self.key_prefix, pattern)
        client = self._client
        with self._errors("keys"):
            async for raw in client.scan_iter(match=scan_match(self.key_prefix, pattern), count=self._scan_count):
                key = accept(raw)
                if key is not None:
                    yield key

    async def _clear(self) -> None:
        """``SCAN`` this prefix and ``UNLINK`` in batches; never a whole-keyspace listing or a database flush."""
        client = self._client
        accept = key_filter(self.key_prefix, "*")  # this store's keys only, never another namespace's
        batch: list[bytes] = []
        with self._errors("clear"):
            # The escaped namespace makes MATCH literal: every reply starts with it.
            async for raw in client.scan_iter(match=clear_match(self.key_prefix), count=self._scan_count):
                if accept(raw) is None:
                    continue
                batch.append(raw)
                if len(batch) >= self._scan_count:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)

    async def _ttl(self, key: str) -> float | None:
        with self._errors("ttl", key):
            ms = await self._client.execute_command("PTTL", self._ns + key)
        return None if ms < 0 else ms / 1000

    async def _expire(self, key: str, ms: int | None) -> bool:
        full = self._ns + key
        with self._errors("expire", key):
            if ms is not None:
                return bool(await self._client.execute_command("PEXPIRE", full, ms))
            # PERSIST answers 0 for a key without TTL too: ask EXISTS in the same round trip.
            pipe = self._client.pipeline(transaction=False)
            pipe.execute_command("PERSIST", full)
            pipe.execute_command("EXISTS", full)
            _, present = await pipe.execute()
            return bool(present)

    async def _incr(self, key: str, by: int) -> int:
        # Stored integers are orjson's plain ASCII digits, which INCRBY reads; it refuses
        # anything else kvstore writes (floats, strings, true/false/null, arrays,
        # objects) and a result beyond 64 bits: the error map makes both not_an_integer.
        with self._errors("incr", key):
            return int(await self._client.execute_command("INCRBY", self._ns + key, by))

    # --- lifecycle ------------------------------------------------------------------

    async def ping(self) -> None:
        with self._errors("ping"):
            await self._client.ping()

    async def aclose(self) -> None:
        client = self._client
        if isinstance(client, _Closed):
            return
        self._client = _Closed(type(self).__name__, "redis")
        if self._owns_client:
            # Closing a broken connection must not fail shutdown.
            with contextlib.suppress(*DRIVER_ERRORS):
                await client.aclose()
