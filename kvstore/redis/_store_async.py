"""Redis cache backend on redis-py (hiredis parser): standalone server or Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Self

from orjson import JSONDecodeError
from orjson import loads as _loads
from pydantic import SecretStr

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES, decode, encode
from kvstore._core.items import MsetItems, normalize_items
from kvstore._core.keys import validate_key, validate_keys, validate_prefix
from kvstore._core.ttl import TTL, ttl_ms
from kvstore.base_async import AsyncCache
from kvstore.config import RedisCacheConfig
from kvstore.errors import KVStoreError, MissingDependencyError

try:
    import redis.asyncio
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("redis", "redis", "redis") from exc

from kvstore.redis._common import (
    DRIVER_ERRORS,
    abandon,
    after_fork_in_child,
    clear_match,
    client_options,
    key_filter,
    namespace,
    no_retry,
    normalize_url,
    redact_url,
    scan_match,
    translate,
)

__all__ = ["AsyncRedisCache"]


if True:  # ASYNC

    class _WaitingPool(redis.asyncio.ConnectionPool):
        """redis-py's pool, but a burst beyond ``max_connections`` waits up to ``wait`` seconds.

        redis-py's async ``BlockingConnectionPool`` does the same with a Condition and
        ``wait_for`` on every call (~25 us of CPU per command, a quarter of a GET); an
        uncontended semaphore costs next to nothing. The sync twin uses redis-py's
        ``BlockingConnectionPool``, which is cheap there.
        """

        def __init__(self, *, wait: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._wait = wait
            self._gate = asyncio.Semaphore(self.max_connections)

        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            gate = self._gate
            if gate.locked():
                try:
                    async with asyncio.timeout(self._wait):
                        await gate.acquire()
                except TimeoutError:
                    raise redis.exceptions.MaxConnectionsError(
                        f"no pooled connection became free within {self._wait:g} s"
                    ) from None
            else:
                await gate.acquire()
            try:
                return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated upstream
            except BaseException:
                gate.release()
                raise

        async def release(self, connection: Any) -> None:
            try:
                await super().release(connection)
            finally:
                self._gate.release()

    class _ReadyCluster(RedisCluster):
        """redis-py's asyncio cluster client, discovering the cluster before the first command.

        redis-py resolves a command's routing policy before it initialises the client, so
        a burst of first commands on a new client races the discovery: some go to a wrong
        node, the MOVED reply re-initialises the client, and that disconnects nodes that
        other commands are using ("Connection closed by server", interleaved replies), a
        false outage. Initialising first (redis-py holds a lock for it) costs one flag check.
        """

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            if self._initialize:
                await self.initialize()
            return await super().execute_command(*args, **kwargs)


if True:  # ASYNC

    class _Reconnect:
        """Stands in for the client in a forked child until first use, then builds the child's own."""

        def __init__(self, store: AsyncRedisCache, build: Callable[[], Any]) -> None:
            self._store = store
            self._build = build

        def __getattr__(self, name: str) -> Any:
            client = self._store._client = self._build()
            return getattr(client, name)


class AsyncRedisCache(AsyncCache):
    """Cache tier on Redis or Redis Cluster.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URL.
            Without one, ``host``/``port``/``db`` are used.
        client: A ready ``redis.asyncio.Redis`` or ``RedisCluster``; the store
            uses it as is (it should have ``decode_responses=False``) and does not
            close it.
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
            if True:  # ASYNC
                after_fork_in_child(self)
            return
        self._owns_client = True
        if url is not None:
            url, url_password, url_cluster = normalize_url(url)
            secret = secret or url_password
            cluster = cluster or url_cluster
            tls = tls or url.startswith("rediss:")
            self._target = redact_url(url) or url
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
        try:
            self._client = self._new_client()
        except DRIVER_ERRORS as exc:
            # The sync cluster client discovers the cluster while it is built.
            self._client = _Closed(type(self).__name__, "redis")
            raise self._error(exc, "connect") from exc
        if True:  # ASYNC
            after_fork_in_child(self)

    def _new_client(self) -> Any:
        """A new client (and pool) with the store's settings."""
        if self._cluster:
            if True:  # ASYNC
                cluster_class: type[RedisCluster] = _ReadyCluster
            else:
                cluster_class = RedisCluster
            if self._url is not None:
                return cluster_class.from_url(self._url, **self._options)
            return cluster_class(host=self._host, port=self._port, **self._options)
        assert self._url is not None
        if True:  # ASYNC
            pool = _WaitingPool.from_url(self._url, wait=self._pool_wait, **self._options)
        else:
            pool = redis.asyncio.BlockingConnectionPool.from_url(self._url, timeout=self._pool_wait, **self._options)
        return redis.asyncio.Redis.from_pool(pool)

    if True:  # ASYNC

        def _after_fork_in_child(self) -> None:
            """In a forked child: never touch the parent's connections; connect anew on first use.

            redis-py's asyncio pool has no fork check (its sync pool has one, so the sync
            store needs nothing here). The inherited client is kept alive, untouched: closing
            or collecting it would close transports the parent still uses (a TLS close
            would even write to the parent's session).
            """
            client = self._client
            if isinstance(client, _Closed | _Reconnect):
                return
            if self._owns_client:
                abandon(client)
                self._client = _Reconnect(self, self._new_client)
            elif isinstance(client, redis.asyncio.Redis):
                # A handed client stays the caller's; the store opens a pool of its own like it.
                pool = client.connection_pool
                self._owns_client = True
                self._client = _Reconnect(
                    self,
                    lambda: redis.asyncio.Redis.from_pool(
                        redis.asyncio.ConnectionPool(
                            connection_class=pool.connection_class,
                            max_connections=pool.max_connections,
                            **pool.connection_kwargs,
                        )
                    ),
                )
            else:
                self._client = _Closed(type(self).__name__, "redis")

    @classmethod
    async def from_config(cls, config: RedisCacheConfig) -> Self:
        """Build from a `RedisCacheConfig` and verify it with one ``PING``.

        One attempt, bounded by the socket timeouts (0.5 s each by default); the
        manager retries within ``config.connect_timeout`` and then falls back.

        Raises:
            BackendUnavailableError: Redis cannot be reached or refused the credentials.
        """
        store = cls(
            config.url,
            key_prefix=config.key_prefix,
            max_value_bytes=config.max_value_bytes,
            cluster=config.cluster,
            host=config.host,
            port=config.port,
            db=config.db,
            username=config.username,
            password=config.password,
            tls=config.tls,
            tls_ca_file=config.tls_ca_file,
            tls_cert_file=config.tls_cert_file,
            tls_key_file=config.tls_key_file,
            tls_verify=config.tls_verify,
            max_connections=config.max_connections,
            socket_timeout=config.socket_timeout,
            socket_connect_timeout=config.socket_connect_timeout,
            health_check_interval=config.health_check_interval,
        )
        try:
            await store.ping()
        except BaseException:
            await store.aclose()
            raise
        return store

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._client, _Closed) else ("cluster" if self._cluster else "open")
        return f"<{type(self).__name__} {self._target} prefix={self.key_prefix!r} {state}>"

    def _error(self, exc: BaseException, operation: str, key: str | None = None) -> KVStoreError:
        return translate(exc, operation=operation, key=key, secret=self._secret)

    # --- single keys ----------------------------------------------------------------

    async def get(self, key: str) -> Any:
        full = self._ns + validate_key(key)
        try:
            raw = await self._client.execute_command("GET", full)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "get", key) from exc
        if raw is None:
            return None
        try:
            return _loads(raw)
        except JSONDecodeError:
            return decode(raw, key)  # raises SerializationError naming the key

    async def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        full = self._ns + validate_key(key)
        ms = ttl_ms(ttl)
        args: list[Any] = ["SET", full, encode(key, value, self.max_value_bytes)]
        if ms is not None:
            args += ("PX", ms)
        if only_if_absent:
            args.append("NX")
        try:
            return bool(await self._client.execute_command(*args))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "set", key) from exc

    async def delete(self, key: str) -> bool:
        full = self._ns + validate_key(key)
        try:
            return bool(await self._client.execute_command("DEL", full))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "delete", key) from exc

    async def exists(self, key: str) -> bool:
        full = self._ns + validate_key(key)
        try:
            return bool(await self._client.execute_command("EXISTS", full))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "exists", key) from exc

    async def ttl(self, key: str) -> float | None:
        full = self._ns + validate_key(key)
        try:
            ms = await self._client.execute_command("PTTL", full)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "ttl", key) from exc
        return None if ms < 0 else ms / 1000

    async def expire(self, key: str, ttl: TTL | None) -> bool:
        full = self._ns + validate_key(key)
        ms = ttl_ms(ttl)
        try:
            if ms is not None:
                return bool(await self._client.execute_command("PEXPIRE", full, ms))
            # PERSIST answers 0 for a key without TTL too: ask EXISTS in the same round trip.
            pipe = self._client.pipeline(transaction=False)
            pipe.execute_command("PERSIST", full)
            pipe.execute_command("EXISTS", full)
            _, present = await pipe.execute()
            return bool(present)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "expire", key) from exc

    # --- many keys ------------------------------------------------------------------

    async def mget(self, keys: Iterable[str]) -> list[Any]:
        names = validate_keys(keys)
        if not names:
            return []
        prefix = self._ns
        full = [prefix + k for k in names]
        try:
            if self._cluster:
                raws = await self._client.mget_nonatomic(full)
            else:
                raws = await self._client.execute_command("MGET", *full)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "mget") from exc
        try:
            return [None if raw is None else _loads(raw) for raw in raws]
        except JSONDecodeError:
            return [None if raw is None else decode(raw, k) for raw, k in zip(raws, names, strict=True)]

    async def mset(self, items: MsetItems) -> None:
        prefix, limit = self._ns, self.max_value_bytes
        rows = [(prefix + k, encode(k, v, limit), ms) for k, v, ms in normalize_items(items)]
        if not rows:
            return
        try:
            if not self._cluster and all(ms is None for _, _, ms in rows):
                # One MSET: atomic, one round trip.
                flat: list[Any] = ["MSET"]
                for full, data, _ in rows:
                    flat += (full, data)
                await self._client.execute_command(*flat)
                return
            # Per-item TTLs: SET ... PX pipelined in one round trip, inside MULTI/EXEC
            # on a single server. A cluster cannot be atomic across slots, so there
            # the pipeline is sent to each node at once.
            pipe = self._client.pipeline(transaction=not self._cluster)
            for full, data, ms in rows:
                if ms is None:
                    pipe.execute_command("SET", full, data)
                else:
                    pipe.execute_command("SET", full, data, "PX", ms)
            await pipe.execute()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "mset") from exc

    async def iter_keys(self, pattern: str = "*") -> AsyncIterator[str]:
        """Stream matching keys with ``SCAN MATCH``; like SCAN, a key may rarely repeat."""
        accept = key_filter(self.key_prefix, pattern)
        client = self._client
        try:
            async for raw in client.scan_iter(match=scan_match(self.key_prefix, pattern), count=self._scan_count):
                key = accept(raw)
                if key is not None:
                    yield key
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "keys") from exc

    async def keys(self, pattern: str = "*") -> list[str]:
        # SCAN may return a key twice (while Redis rehashes): report each once.
        return list(dict.fromkeys([key async for key in self.iter_keys(pattern)]))

    async def clear(self) -> None:
        """``SCAN`` this prefix and ``UNLINK`` in batches; never a whole-keyspace listing or a database flush."""
        client = self._client
        accept = key_filter(self.key_prefix, "*")  # this store's keys only, never another namespace's
        batch: list[bytes] = []
        try:
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
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "clear") from exc

    # --- lifecycle ------------------------------------------------------------------

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "ping") from exc

    async def aclose(self) -> None:
        client = self._client
        if isinstance(client, _Closed):
            return
        self._client = _Closed(type(self).__name__, "redis")
        if self._owns_client:
            # Closing a broken connection must not fail shutdown.
            with contextlib.suppress(*DRIVER_ERRORS):
                await client.aclose()
