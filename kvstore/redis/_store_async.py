"""Redis cache backend on redis-py (hiredis parser): standalone server, Sentinel or Redis Cluster.

The store implements the raw hooks of `AsyncCache` (kvstore/base_async.py holds every
rule), each one command or one pipeline: one round trip. Keys get the store's namespace
(``self._ns``) here, in the hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from pydantic import SecretStr

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.keys import validate_prefix
from kvstore._core.urls import redact_url
from kvstore.base_async import AsyncCache
from kvstore.errors import BackendUnavailableError, ClosedError, ConfigError, KVStoreError, MissingDependencyError

try:
    import redis.asyncio
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.crc import key_slot
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("redis", "redis", "redis") from exc

from kvstore.redis._acompat import (
    AsyncCheckedSentinelConnection,
    AsyncCheckedSentinelSSLConnection,
    AsyncReadyCluster,
    AsyncSentinel,
    AsyncSentinelPool,
    AsyncWaitingPool,
    Fences,
    watch_fork_async,
)
from kvstore.redis._common import (
    DRIVER_ERRORS,
    ClusterView,
    ErrorMap,
    RecentWrites,
    clear_match,
    client_options,
    key_filter,
    namespace,
    no_retry,
    normalize_url,
    not_executed_while_moving,
    parse_sentinel_url,
    parse_sentinels,
    replication_state,
    scan_is_complete,
    scan_match,
    scan_order,
    translate,
)

__all__ = ["AsyncRedisCache", "AsyncRedisChannel"]


def _by_slot(keys: list[Any]) -> list[list[Any]]:
    """``keys`` (str or bytes) grouped by cluster slot, each group in the keys' order."""
    groups: dict[int, list[Any]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode() if isinstance(key, str) else key), []).append(key)
    return list(groups.values())


_log = logging.getLogger("kvstore")

#: How many times a cluster-wide listing is walked again when slots moved in a way its order
#: did not foresee, before `BackendUnavailableError`.
CLUSTER_SCAN_ATTEMPTS = 10
#: How long a cluster multi-key call keeps sending again the part of it whose slot is being
#: migrated (``TRYAGAIN``, redirections), before it raises `BackendUnavailableError`.
CLUSTER_MIGRATION_WAIT = 2.0

if True:  # ASYNC
    #: A batch of gets (`AsyncRedisCache._get_batch`): MGET, plus the 1-based positions of
    #: the keys MGET read as nil that exist (another type than a string: GET would fail).
    #: ``KEYS`` here is the script's argument array (the keys EVALSHA passes), not the command: allowed.
    _GET_BATCH = (
        "local values = redis.call('MGET', unpack(KEYS))\n"  # allowed: Lua's argument array
        "local wrong = {}\n"
        "for i = 1, #KEYS do\n"  # allowed: Lua's argument array
        "    if not values[i] and redis.call('EXISTS', KEYS[i]) == 1 then wrong[#wrong + 1] = i end\n"  # allowed
        "end\n"
        "return {values, wrong}\n"
    )
    _GET_BATCH_SHA = hashlib.sha1(_GET_BATCH.encode(), usedforsecurity=False).hexdigest()


class _StoreErrors(ErrorMap):
    """The store's error boundary: `ClosedError` for a call the store's own close cut off."""

    __slots__ = ("store",)

    def __init__(self, store: AsyncRedisCache, operation: str, key: str | None) -> None:
        super().__init__(operation, key, store._secret)
        self.store = store

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, DRIVER_ERRORS):
            raise self.store._error(exc, self.operation, self.key) from exc


class AsyncRedisCache(AsyncCache):
    """Cache tier on Redis or Redis Cluster.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or
            ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``
            URL (Sentinels on port 26379 unless named; the password is the master's).
            Without one, ``host``/``port``/``db`` are used, or ``sentinels``.
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
        sentinels: Redis Sentinel daemons (``"host:port"``, port 26379 by default) that
            name the master of ``service_name``; the store follows a promoted replica.
            Every new connection asks them for the master and checks it is one (one
            ``INFO replication``); each Sentinel query is bounded by the socket timeouts.
        service_name: The Sentinel service (``sentinel monitor <name> ...``); default ``mymaster``.
        sentinel_username, sentinel_password: Credentials of the Sentinels themselves
            (``password``/``username`` are the master's).
        failover_invalidation: What a failover removes from the promoted master before
            the store uses it: ``"written"`` (default), the keys this store wrote in the
            ``failover_window`` seconds before its last write (the ones asynchronous
            replication may have lost, which would read back older, or deleted keys
            that would come back); ``"namespace"``, every key of this prefix (for keys
            that several processes write, at the cost of a cold cache per failover).
        failover_window: How far back (before its latest write) the store remembers
            the keys it wrote; at least the replication lag you accept (Redis'
            ``min-replicas-max-lag``).
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
        sentinels: Sequence[str | tuple[str, int]] | None = None,
        service_name: str | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | SecretStr | None = None,
        failover_invalidation: Literal["written", "namespace"] = "written",
        failover_window: float = 10.0,
    ) -> None:
        self.key_prefix = validate_prefix(key_prefix)
        self._ns = namespace(self.key_prefix)
        self.max_value_bytes = max_value_bytes
        self._scan_count = scan_count
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        self._secret: str | None = None
        self._client: Any
        #: Sentinel mode: the Sentinel manager, the master last checked (host, port,
        #: replication id), the keys written lately, the failovers this store followed.
        self._sentinel: Any = None
        self._master: tuple[str, int, str] | None = None
        self._written: RecentWrites | None = None
        self.failovers = 0
        #: Cluster: slot moves seen by the last listing (source, target node ids), to order the next.
        self._cluster_moves: set[tuple[str, str]] = set()
        #: The Redis clients whose call was cut while a reply was pending: each is killed
        #: before this store's next command (`Fences`). Kept by the pool a forked child builds.
        self._fences = Fences()
        if client is not None:
            self._owns_client = False
            self._cluster = isinstance(client, RedisCluster)
            self._target = f"client={type(client).__name__}"
            self._client = client
            watch_fork_async(self)
            return
        self._owns_client = True
        if url is not None and url.split("://", 1)[0].lower().endswith("+sentinel"):
            sentinels, service_name, url_db, url_user, url_password, url_tls = parse_sentinel_url(url)
            db = db if url_db is None else url_db
            username = username or url_user
            secret = secret or url_password
            tls = tls or url_tls
            url = None
        if sentinels is not None:
            if cluster:
                raise ValueError("a store uses either Sentinel or Redis Cluster, not both")
            service_name = service_name or "mymaster"  # sentinel.conf's own example name, as in the config
            if failover_invalidation not in ("written", "namespace"):
                raise ValueError("failover_invalidation is 'written' or 'namespace'")
            self._sentinels = parse_sentinels(sentinels)
            self._service = service_name
            self._db = db
            self._invalidate_all = failover_invalidation == "namespace"
            self._written = RecentWrites(failover_window)
            self._failover_lock = asyncio.Lock()
            self._sentinel_secret = (
                sentinel_password.get_secret_value() if isinstance(sentinel_password, SecretStr) else sentinel_password
            )
            self._sentinel_username = sentinel_username
            shown = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self._sentinels)
            self._target = f"sentinel {service_name} via {shown}/{db}"
        elif url is not None:
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
        from_url = url is not None
        # The same transport for the server and, with Sentinel, for the sentinels.
        transport: dict[str, Any] = {
            "tls": tls,
            "tls_ca_file": tls_ca_file,
            "tls_cert_file": tls_cert_file,
            "tls_key_file": tls_key_file,
            "tls_verify": tls_verify,
            "max_connections": max_connections,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "health_check_interval": health_check_interval,
        }
        options = client_options(username=username, password=secret, from_url=from_url, **transport)
        options["retry"] = no_retry(Retry)
        if self._written is not None:
            sentinel_options = client_options(username=sentinel_username, password=self._sentinel_secret, **transport)
            sentinel_options["retry"] = no_retry(Retry)
            self._sentinel_options = sentinel_options
            options.pop("ssl", None)  # the Sentinel pool picks the TLS connection class itself
            options["db"] = db
        self._url, self._host, self._port, self._options = url, host, port, options
        # A burst of callers waits (briefly) for a free connection instead of failing.
        self._pool_wait = pool_timeout if pool_timeout is not None else socket_connect_timeout + socket_timeout
        # The sync cluster client discovers the cluster while it is built.
        self._client = _Closed(type(self).__name__, "redis")
        with ErrorMap("connect", None, self._secret):  # not closed: not yet open
            self._client = self._new_client()
        watch_fork_async(self)

    def _new_client(self) -> Any:
        """A new client (and pool) with the store's settings."""
        if self._written is not None:
            # Sentinel: a manager that asks the Sentinels (each query bounded by the socket
            # timeouts), and a pool whose every new connection the store checks first.
            # Called through Any: redis-py's Sentinel() is untyped before 8.x and typed since.
            sentinel: Any = AsyncSentinel
            self._sentinel = sentinel(self._sentinels, sentinel_kwargs=self._sentinel_options)
            options = dict(self._options)
            tls = bool(options.get("ssl_cert_reqs"))
            options["connection_class"] = AsyncCheckedSentinelSSLConnection if tls else AsyncCheckedSentinelConnection
            sentinel_pool = AsyncSentinelPool(self._service, self._sentinel, timeout=self._pool_wait, **options)
            sentinel_pool.check_master = self._check_master
            sentinel_pool.use_fences(self._fences)
            return redis.asyncio.Redis.from_pool(sentinel_pool)
        if self._cluster:
            if self._url is not None:
                return AsyncReadyCluster.from_url(self._url, **self._options)
            return AsyncReadyCluster(host=self._host, port=self._port, **self._options)
        assert self._url is not None
        pool = AsyncWaitingPool.from_url(self._url, timeout=self._pool_wait, **self._options)
        pool.use_fences(self._fences)
        return redis.asyncio.Redis.from_pool(pool)

    async def _check_master(self, conn: Any) -> None:
        """Sentinel: every new connection, before its first command (`AsyncCheckedSentinelConnection`).

        One ``INFO replication``: a server that is not (or no longer) a master is never
        used. A master with another replication id than the one this store last used is
        a failover (a promoted replica takes a new id; so does a restarted master): the
        keys the old master may have lost are removed from the new one first, under a
        lock, so that no command of this store runs on the new master before that is done.
        """
        await conn.send_command("INFO", "replication")
        role, replid = replication_state(await conn.read_response())
        if role != "master":
            raise RedisConnectionError(
                f"{conn.host}:{conn.port} is not a master (role {role or 'unknown'}); Sentinel has not settled yet"
            )
        seen = self._master
        if seen is not None and seen[2] == replid:
            return
        async with self._failover_lock:
            seen = self._master
            if seen is None:
                # The first master this store meets: it has written nothing anywhere yet.
                self._master = (conn.host, int(conn.port), replid)
                return
            if seen[2] == replid:
                return
            moment = time.monotonic()
            removed = await self._invalidate_on(conn)
            assert self._written is not None
            self._written.forget_before(moment)
            self._master = (conn.host, int(conn.port), replid)
            self.failovers += 1
        _log.warning(
            "kvstore cache: Redis master of %s changed from %s:%s to %s:%s (failover); "
            "removed %s key(s) the old master may have lost",
            self._service,
            seen[0],
            seen[1],
            conn.host,
            conn.port,
            removed,
            extra={"kvstore_event": "redis_failover", "backend": "redis"},
        )

    async def _invalidate_on(self, conn: Any) -> int:
        """Remove, on the new master, what this store wrote lately (or its whole namespace)."""
        written = self._written
        assert written is not None
        count = 0
        batch: list[Any] = []

        async def unlink() -> None:
            nonlocal count, batch
            await conn.send_command("UNLINK", *batch)
            count += int(await conn.read_response())
            batch = []

        if self._invalidate_all or written.everything:
            accept = key_filter(self.key_prefix, "*")
            cursor: Any = 0
            while True:
                await conn.send_command(
                    "SCAN", cursor, "MATCH", clear_match(self.key_prefix), "COUNT", self._scan_count
                )
                cursor, raws = await conn.read_response()
                batch += [raw for raw in raws if accept(raw) is not None]
                if batch:
                    await unlink()
                if int(cursor) == 0:
                    return count
        for key in written.snapshot():
            batch.append(self._ns + key)
            if len(batch) >= self._scan_count:
                await unlink()
        if batch:
            await unlink()
        return count

    @property
    def serving(self) -> str | None:
        """Sentinel: ``host:port`` of the master this store last connected to (``None`` before that)."""
        master = self._master
        if master is None:
            return None
        host, port, _ = master
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def _opened(self) -> None:
        """`from_config` checks the server with one ``PING``.

        One attempt, bounded by the socket timeouts (0.5 s each by default); the
        manager retries within ``config.connect_timeout`` and then falls back.
        """
        await self.ping()

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._client, _Closed) else ("cluster" if self._cluster else "open")
        if self._written is not None and state == "open":
            state = f"master={self.serving}"
        return f"<{type(self).__name__} {self._target} prefix={self.key_prefix!r} {state}>"

    def _error(self, exc: BaseException, operation: str, key: str | None = None) -> KVStoreError:
        if isinstance(self._client, _Closed):
            # The call lost its connection because this store was closed under it (aclose
            # drops every connection, also those in use): not an outage of the server, so
            # nothing may count it as one (a failover tier's breaker, a session store's cache).
            return ClosedError(
                f"{type(self).__name__} was closed while {operation} ran; its outcome is unknown",
                backend="redis",
                key=key,
                operation=operation,
            )
        return translate(exc, operation=operation, key=key, secret=self._secret)

    def _errors(self, operation: str, key: str | None = None) -> ErrorMap:
        return _StoreErrors(self, operation, key)

    # --- the raw hooks (kvstore/base_async.py): one round trip each -------------------------
    # The hot ones (get, get_touch, set, mget, mset) spell the error map as a bare
    # ``try``, which costs nothing until it raises; the others use ``with self._errors``.

    async def _get(self, key: str) -> bytes | None:
        try:
            return await self._client.execute_command("GET", self._ns + key)  # type: ignore[no-any-return]
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "get", key) from exc

    async def _get_touch(self, key: str, ms: int) -> bytes | None:
        if self._written is not None:
            self._written.add(key)
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
        if self._written is not None:
            self._written.add(key)
        try:
            return bool(await self._client.execute_command(*args))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "set", key) from exc

    async def _delete(self, key: str) -> bool:
        if self._written is not None:
            self._written.add(key)
        with self._errors("delete", key):
            return bool(await self._client.execute_command("DEL", self._ns + key))

    async def _delete_many(self, keys: list[str]) -> int:
        prefix = self._ns
        full = [prefix + k for k in keys]
        if self._written is not None:
            self._written.add_many(keys)
        with self._errors("delete_many"):
            if self._cluster:
                # One DEL per slot, pipelined to every node at once.
                replies = await self._settled([("DEL", *group) for group in _by_slot(full)])
                return sum(int(count) for count in replies)
            return int(await self._client.execute_command("DEL", *full))

    async def _exists(self, key: str) -> bool:
        with self._errors("exists", key):
            return bool(await self._client.execute_command("EXISTS", self._ns + key))

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        prefix = self._ns
        full = [prefix + k for k in keys]
        try:
            if self._cluster:
                # One MGET per slot, pipelined to every node at once.
                groups = _by_slot(full)
                replies = await self._settled([("MGET", *group) for group in groups])
                found = {
                    key: value
                    for group, values in zip(groups, replies, strict=True)
                    for key, value in zip(group, values, strict=True)
                }
                return [found[key] for key in full]
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
        if self._written is not None:
            self._written.add_many(key for key, _, _ in rows)
        try:
            if not self._cluster and all(ms is None for _, _, ms in rows):
                # One MSET: atomic, one round trip.
                flat: list[Any] = ["MSET"]
                for key, data, _ in rows:
                    flat += (prefix + key, data)
                await self._client.execute_command(*flat)
                return
            if self._cluster:
                # A cluster cannot be atomic across slots: one SET per key, pipelined to each
                # node at once (sent again while its slot migrates).
                await self._settled(
                    [
                        ("SET", prefix + key, data) if ms is None else ("SET", prefix + key, data, "PX", ms)
                        for key, data, ms in rows
                    ]
                )
                return
            # Per-item TTLs: SET ... PX pipelined in one round trip, inside MULTI/EXEC.
            pipe = self._client.pipeline(transaction=True)
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
        match = scan_match(self.key_prefix, pattern)
        with self._errors("keys"):
            if self._cluster:
                raws = self._cluster_scan(match)
            else:
                raws = client.scan_iter(match=match, count=self._scan_count)
            async for raw in raws:
                key = accept(raw)
                if key is not None:
                    yield key

    async def _clear(self) -> None:
        """``SCAN`` this prefix and ``UNLINK`` in batches; never a whole-keyspace listing or a database flush."""
        client = self._client
        accept = key_filter(self.key_prefix, "*")  # this store's keys only, never another namespace's
        batch: list[bytes] = []
        if self._written is not None:
            self._written.add_everything()
        with self._errors("clear"):
            # The escaped namespace makes MATCH literal: every reply starts with it.
            match = clear_match(self.key_prefix)
            if self._cluster:
                raws = self._cluster_scan(match)
            else:
                raws = client.scan_iter(match=match, count=self._scan_count)
            async for raw in raws:
                if accept(raw) is None:
                    continue
                batch.append(raw)
                if len(batch) >= self._scan_count:
                    await self._unlink(batch)
                    batch = []
            if batch:
                await self._unlink(batch)

    async def _unlink(self, raws: list[bytes]) -> None:
        if self._cluster:
            await self._settled([("UNLINK", *group) for group in _by_slot(raws)])
        else:
            await self._client.unlink(*raws)

    async def _settled(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Cluster: each command (its keys in one slot) pipelined to every node at once; the replies, in order.

        A command whose slot is being migrated (``TRYAGAIN``, redirections redis-py gave up
        following) was not executed: it alone is sent again, after a short pause, until the
        slot settles or `CLUSTER_MIGRATION_WAIT` runs out. Any other error is raised.
        """
        client = self._client
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        deadline = time.monotonic() + CLUSTER_MIGRATION_WAIT
        pause = 0.01
        while True:
            pipe = client.pipeline()
            for i in pending:
                pipe.execute_command(*commands[i])
            answers = await pipe.execute(raise_on_error=False)
            again: list[int] = []
            moving: BaseException | None = None
            for i, answer in zip(pending, answers, strict=True):
                if isinstance(answer, BaseException):
                    if not not_executed_while_moving(answer):
                        raise answer
                    again.append(i)
                    moving = answer
                else:
                    replies[i] = answer
            if moving is None:
                return replies
            if time.monotonic() + pause > deadline:
                raise moving
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)
            pending = again

    async def _cluster_scan(self, match: str) -> AsyncIterator[bytes]:
        """Every key of the cluster matching ``match``, also while slots migrate (a key may repeat).

        The masters are walked one after another, each migration's source before its
        target, between two reads of the masters' own slot tables; a move that order did
        not foresee walks them all again (see `scan_is_complete`).
        """
        client = self._client
        for _ in range(CLUSTER_SCAN_ATTEMPTS):
            before = await self._cluster_view()
            order = scan_order(before, self._cluster_moves)
            for name in order:
                node = client.get_node(node_name=name)
                cursor = 0
                while True:
                    cursors, raws = await client.scan(
                        cursor=cursor, match=match, count=self._scan_count, target_nodes=node
                    )
                    for raw in raws:
                        yield raw
                    cursor = int(cursors[node.name])
                    if cursor == 0:
                        break
            after = await self._cluster_view()
            complete, self._cluster_moves = scan_is_complete(before, after, order)
            if complete:
                return
        raise BackendUnavailableError(
            f"the Redis cluster kept moving slots while listing keys ({CLUSTER_SCAN_ATTEMPTS} walks); retry later",
            backend="redis",
            operation="keys",
        )

    async def _cluster_view(self) -> ClusterView:
        client = self._client
        primaries = client.get_primaries()
        if True:  # ASYNC
            if not primaries:
                await client.initialize()
                primaries = client.get_primaries()
        replies = {}
        for node in primaries:
            replies[node.name] = await client.execute_command("CLUSTER NODES", target_nodes=node)
        return ClusterView(replies)

    async def _ttl(self, key: str) -> float | None:
        with self._errors("ttl", key):
            ms = await self._client.execute_command("PTTL", self._ns + key)
        return None if ms < 0 else ms / 1000

    async def _expire(self, key: str, ms: int | None) -> bool:
        full = self._ns + key
        if self._written is not None:
            self._written.add(key)
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
        if self._written is not None:
            self._written.add(key)
        with self._errors("incr", key):
            return int(await self._client.execute_command("INCRBY", self._ns + key, by))

    # --- pub/sub ------------------------------------------------------------------------

    async def _publish(self, channel: str, data: bytes) -> int:
        with self._errors("publish", channel):
            return int(await self._client.execute_command("PUBLISH", self._ns + channel, data))

    async def _subscribe(self, channel: str) -> AsyncRedisChannel:
        if self._cluster:
            raise ConfigError("publish/subscribe on Redis Cluster is not supported by kvstore yet", backend="redis")
        subscription = AsyncRedisChannel(self, channel)
        await subscription.open()
        return subscription

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
            sentinel, self._sentinel = self._sentinel, None
            if sentinel is not None:
                for sentinel_client in sentinel.sentinels:
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await sentinel_client.aclose()


class AsyncRedisChannel:
    """One Redis subscription: a connection of its own (``SUBSCRIBE``), taken from the store's pool.

    A lost connection raises `BackendUnavailableError` from the next `receive`: pub/sub is
    at most once, so subscribe again (messages published meanwhile are gone).
    """

    def __init__(self, store: AsyncRedisCache, channel: str) -> None:
        self._store = store
        self._channel = channel
        self._name = store._ns + channel
        self._pubsub = store._client.pubsub()
        self._closed = False

    async def open(self) -> None:
        try:
            with self._store._errors("subscribe", self._channel):
                await self._pubsub.subscribe(self._name)
        except BaseException:
            await self.aclose()
            raise

    async def receive(self) -> bytes:
        with self._store._errors("subscribe", self._channel):
            while True:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "message":
                    return message["data"]  # type: ignore[no-any-return]  # bytes (decode_responses is off)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*DRIVER_ERRORS):
            if self._pubsub.subscribed:
                await self._pubsub.unsubscribe()  # at once, not when the server notices the closed socket
        connection = self._pubsub.connection
        if connection is not None:
            # Closed on purpose, and it carried only (un)subscriptions, which change no data:
            # nothing for the pool's fence to kill before the store's next command (`Fences`).
            connection._kvstore_client = None
        with contextlib.suppress(*DRIVER_ERRORS):
            await self._pubsub.aclose()
