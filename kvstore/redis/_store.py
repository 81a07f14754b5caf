# Generated from kvstore/redis/_store_async.py by tools/unasync.py: do not edit; edit the async source.
"""Redis cache backend on redis-py (hiredis parser): standalone server or Redis Cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Self

from orjson import JSONDecodeError
from orjson import loads as _loads
from pydantic import SecretStr

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES, decode, encode
from kvstore._core.items import MsetItems, normalize_items
from kvstore._core.keys import validate_key, validate_keys, validate_prefix
from kvstore._core.ttl import TTL, ttl_ms
from kvstore.base import Cache
from kvstore.config import RedisCacheConfig
from kvstore.errors import KVStoreError, MissingDependencyError

try:
    import redis
    from redis.cluster import RedisCluster
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("redis", "redis", "redis") from exc

from kvstore.redis._common import (
    DRIVER_ERRORS,
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

__all__ = ["RedisCache"]


class RedisCache(Cache):
    """Cache tier on Redis or Redis Cluster.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URL.
            Without one, ``host``/``port``/``db`` are used.
        client: A ready ``redis.Redis`` or ``RedisCluster``; the store
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

    def _new_client(self) -> Any:
        """A new client (and pool) with the store's settings."""
        if self._cluster:
            cluster_class = RedisCluster
            if self._url is not None:
                return cluster_class.from_url(self._url, **self._options)
            return cluster_class(host=self._host, port=self._port, **self._options)
        assert self._url is not None
        pool = redis.BlockingConnectionPool.from_url(self._url, timeout=self._pool_wait, **self._options)
        return redis.Redis.from_pool(pool)

    @classmethod
    def from_config(cls, config: RedisCacheConfig) -> Self:
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
            store.ping()
        except BaseException:
            store.close()
            raise
        return store

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._client, _Closed) else ("cluster" if self._cluster else "open")
        return f"<{type(self).__name__} {self._target} prefix={self.key_prefix!r} {state}>"

    def _error(self, exc: BaseException, operation: str, key: str | None = None) -> KVStoreError:
        return translate(exc, operation=operation, key=key, secret=self._secret)

    # --- single keys ----------------------------------------------------------------

    def get(self, key: str) -> Any:
        full = self._ns + validate_key(key)
        try:
            raw = self._client.execute_command("GET", full)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "get", key) from exc
        if raw is None:
            return None
        try:
            return _loads(raw)
        except JSONDecodeError:
            return decode(raw, key)  # raises SerializationError naming the key

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        full = self._ns + validate_key(key)
        ms = ttl_ms(ttl)
        args: list[Any] = ["SET", full, encode(key, value, self.max_value_bytes)]
        if ms is not None:
            args += ("PX", ms)
        if only_if_absent:
            args.append("NX")
        try:
            return bool(self._client.execute_command(*args))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "set", key) from exc

    def delete(self, key: str) -> bool:
        full = self._ns + validate_key(key)
        try:
            return bool(self._client.execute_command("DEL", full))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "delete", key) from exc

    def exists(self, key: str) -> bool:
        full = self._ns + validate_key(key)
        try:
            return bool(self._client.execute_command("EXISTS", full))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "exists", key) from exc

    def ttl(self, key: str) -> float | None:
        full = self._ns + validate_key(key)
        try:
            ms = self._client.execute_command("PTTL", full)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "ttl", key) from exc
        return None if ms < 0 else ms / 1000

    def expire(self, key: str, ttl: TTL | None) -> bool:
        full = self._ns + validate_key(key)
        ms = ttl_ms(ttl)
        try:
            if ms is not None:
                return bool(self._client.execute_command("PEXPIRE", full, ms))
            # PERSIST answers 0 for a key without TTL too: ask EXISTS in the same round trip.
            pipe = self._client.pipeline(transaction=False)
            pipe.execute_command("PERSIST", full)
            pipe.execute_command("EXISTS", full)
            _, present = pipe.execute()
            return bool(present)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "expire", key) from exc

    # --- many keys ------------------------------------------------------------------

    def mget(self, keys: Iterable[str]) -> list[Any]:
        names = validate_keys(keys)
        if not names:
            return []
        prefix = self._ns
        full = [prefix + k for k in names]
        try:
            if self._cluster:
                raws = self._client.mget_nonatomic(full)
            else:
                raws = self._client.execute_command("MGET", *full)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "mget") from exc
        try:
            return [None if raw is None else _loads(raw) for raw in raws]
        except JSONDecodeError:
            return [None if raw is None else decode(raw, k) for raw, k in zip(raws, names, strict=True)]

    def mset(self, items: MsetItems) -> None:
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
                self._client.execute_command(*flat)
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
            pipe.execute()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "mset") from exc

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        """Stream matching keys with ``SCAN MATCH``; like SCAN, a key may rarely repeat."""
        accept = key_filter(self.key_prefix, pattern)
        client = self._client
        try:
            for raw in client.scan_iter(match=scan_match(self.key_prefix, pattern), count=self._scan_count):
                key = accept(raw)
                if key is not None:
                    yield key
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "keys") from exc

    def keys(self, pattern: str = "*") -> list[str]:
        # SCAN may return a key twice (while Redis rehashes): report each once.
        return list(dict.fromkeys([key for key in self.iter_keys(pattern)]))

    def clear(self) -> None:
        """``SCAN`` this prefix and ``UNLINK`` in batches; never a whole-keyspace listing or a database flush."""
        client = self._client
        accept = key_filter(self.key_prefix, "*")  # this store's keys only, never another namespace's
        batch: list[bytes] = []
        try:
            # The escaped namespace makes MATCH literal: every reply starts with it.
            for raw in client.scan_iter(match=clear_match(self.key_prefix), count=self._scan_count):
                if accept(raw) is None:
                    continue
                batch.append(raw)
                if len(batch) >= self._scan_count:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "clear") from exc

    # --- lifecycle ------------------------------------------------------------------

    def ping(self) -> None:
        try:
            self._client.ping()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "ping") from exc

    def close(self) -> None:
        client = self._client
        if isinstance(client, _Closed):
            return
        self._client = _Closed(type(self).__name__, "redis")
        if self._owns_client:
            # Closing a broken connection must not fail shutdown.
            with contextlib.suppress(*DRIVER_ERRORS):
                client.close()
