"""Paired names for the Redis backend: ``AsyncName`` in the async source, ``Name`` in its sync twin.

``tools/unasync.py`` turns ``AsyncWaitingPool`` into ``WaitingPool`` and
``watch_fork_async`` into ``watch_fork``, so the async source names what it needs and
the generated sync store gets its counterpart with no ``if True:  # ASYNC`` block
(psycopg's ``_acompat`` shape). The async names are real classes (the asyncio client
needs them); the sync names are redis-py's own classes, or nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as _AsyncRedisCluster
from redis.cluster import RedisCluster

from kvstore._core.closed import Closed

__all__ = ["AsyncReadyCluster", "AsyncWaitingPool", "ReadyCluster", "WaitingPool", "watch_fork", "watch_fork_async"]


class AsyncWaitingPool(redis.asyncio.ConnectionPool):
    """redis-py's pool, but a burst beyond ``max_connections`` waits up to ``timeout`` seconds.

    redis-py's async ``BlockingConnectionPool`` does the same with a Condition and
    ``wait_for`` on every call (~25 us of CPU per command, a quarter of a GET); an
    uncontended semaphore costs next to nothing. The sync twin uses redis-py's
    ``BlockingConnectionPool`` (`WaitingPool`), which is cheap there; both take ``timeout``.
    """

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wait = timeout
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


#: The sync pool whose callers wait up to ``timeout`` for a free connection.
WaitingPool = redis.BlockingConnectionPool


class AsyncReadyCluster(_AsyncRedisCluster):
    """redis-py's asyncio cluster client, discovering the cluster before the first command.

    redis-py resolves a command's routing policy before it initialises the client, so
    a burst of first commands on a new client races the discovery: some go to a wrong
    node, the MOVED reply re-initialises the client, and that disconnects nodes that
    other commands are using ("Connection closed by server", interleaved replies), a
    false outage. Initialising first (redis-py holds a lock for it) costs one flag check.
    The sync client (`ReadyCluster`) discovers the cluster while it is built.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


#: The sync cluster client, ready once built.
ReadyCluster = RedisCluster


# --- fork safety (DESIGN.md §8) ---------------------------------------------------------

_forkables: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_fork_async(store: Any) -> None:
    """Give ``store`` a client of its own in every process forked while it is alive.

    redis-py's asyncio pool has no fork check (its sync pool has one: `watch_fork` does
    nothing). The hot path pays nothing: the child's stores swap their client out once,
    right after fork.
    """
    _forkables.add(store)


def watch_fork(store: Any) -> None:
    """Nothing to do: redis-py's sync pool notices a fork and connects anew in the child."""


def _reset_in_child() -> None:
    for store in list(_forkables):
        # One store failing to reset must not leave the others on the parent's sockets.
        with contextlib.suppress(Exception):
            _reconnect_in_child(store)


os.register_at_fork(after_in_child=_reset_in_child)


def _reconnect_in_child(store: Any) -> None:
    """In a forked child: never touch the parent's connections; connect anew on first use.

    The inherited client is kept alive, untouched: closing or collecting it would close
    transports the parent still uses (a TLS close would even write to the parent's session).
    """
    client = store._client
    if isinstance(client, Closed | _Reconnect):
        return
    if store._owns_client:
        _abandon(client)
        store._client = _Reconnect(store, store._new_client)
    elif isinstance(client, redis.asyncio.Redis):
        # A handed client stays the caller's; the store opens a pool of its own like it.
        pool = client.connection_pool
        store._owns_client = True
        store._client = _Reconnect(
            store,
            lambda: redis.asyncio.Redis.from_pool(
                redis.asyncio.ConnectionPool(
                    connection_class=pool.connection_class,
                    max_connections=pool.max_connections,
                    **pool.connection_kwargs,
                )
            ),
        )
    else:
        store._client = Closed(type(store).__name__, "redis")


class _Reconnect:
    """Stands in for the client in a forked child until first use, then builds the child's own."""

    def __init__(self, store: Any, build: Callable[[], Any]) -> None:
        self._store = store
        self._build = build

    def __getattr__(self, name: str) -> Any:
        client = self._store._client = self._build()
        return getattr(client, name)


def _abandon(obj: object) -> None:
    """Keep ``obj``, inherited from the parent process, alive and untouched for good.

    A collected redis-py asyncio connection closes its transport (and warns); in a child
    that would act on a socket the parent still uses. The process's exit releases the
    child's copies of the descriptors.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
