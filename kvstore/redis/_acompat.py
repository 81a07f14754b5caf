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
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.connection
import redis.sentinel
from redis.asyncio.cluster import RedisCluster as _AsyncRedisCluster
from redis.cluster import RedisCluster

from kvstore._core.closed import Closed

__all__ = [
    "AsyncCheckedSentinelConnection",
    "AsyncCheckedSentinelSSLConnection",
    "AsyncReadyCluster",
    "AsyncSentinel",
    "AsyncSentinelPool",
    "AsyncWaitingPool",
    "CheckedSentinelConnection",
    "CheckedSentinelSSLConnection",
    "Fences",
    "ReadyCluster",
    "Sentinel",
    "SentinelPool",
    "WaitingPool",
    "watch_fork",
    "watch_fork_async",
]


_log = logging.getLogger("kvstore")


# --- the fence (docs/fallback.md "Deadlines and retries") ----------------------------------
#
# A call cut at its deadline (or by a lost connection, or a cancelled task) may have left its
# command in the server's socket buffer: a frozen server (SIGSTOP, a stalled VM) reads it at
# the thaw, possibly AFTER a later command the store sent on another pooled connection, so an
# older write whose caller got a timeout would overwrite a newer one that succeeded. Redis
# runs one connection's commands in order, so before the store's next command after a cut,
# ``CLIENT KILL ID <id> ADDR <addr>`` of the cut client is sent on the connection that will
# carry that command, and its reply read: either the cut command already ran, or the kill
# discards it. ID and ADDR are the server's own view (``CLIENT INFO``, read once per new
# connection): exact behind a proxy or NAT, and an ID a restarted server hands out again is
# not killed unless its address matches too.


class Fences:
    """The clients of a pool whose call was cut while a reply was pending, each ``(id, addr)``.

    Shared by the pools a store builds (a forked child's new pool keeps its parent's). Dict
    and attribute operations only: safe across threads without a lock, and across fork.
    """

    __slots__ = ("off", "pending")

    def __init__(self) -> None:
        #: Cut clients not yet killed; one dict for every pool of the store.
        self.pending: dict[tuple[str, str], None] = {}
        #: Set once the server refused ``CLIENT INFO`` or ``CLIENT KILL``: no more fences.
        self.off = False

    def refuse(self, exc: BaseException, command: str) -> None:
        """The server refused ``command`` (an ACL, a renamed command): fences stop, with one warning."""
        if self.off:
            return
        self.off = True
        self.pending.clear()
        _log.warning(
            "kvstore cache: Redis refused %s (%s); a call cut at its deadline is no longer fenced, "
            "so its command may still run after a later one (grant +client|info and +client|kill "
            "to restore the fence)",
            command,
            exc,
            extra={"kvstore_event": "redis_fence_refused", "backend": "redis"},
        )


def _client_of(info: Any) -> tuple[str, str] | None:
    """``(id, addr)`` from a ``CLIENT INFO`` reply (``id=7 addr=10.0.0.1:5555 laddr=...``); None if not one."""
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    client_id, addr = fields.get("id", ""), fields.get("addr", "")
    return (client_id, addr) if client_id.isdigit() and addr else None


def _kill_commands(pending: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
    return [("CLIENT", "KILL", "ID", client_id, "ADDR", addr) for client_id, addr in pending]


class _AsyncFenced:
    """Pool mixin: learns each new connection's client, fences the cut ones (see `Fences`)."""

    fences: Fences

    def use_fences(self, fences: Fences) -> None:
        """Share the store's fences (a forked child's pool keeps its parent's pending ones)."""
        self.fences = fences

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[misc]  # a mixin
        connection.register_connect_callback(self._learn_client)
        return connection

    async def _learn_client(self, connection: Any) -> None:
        """After each (re)connect: the server's ``id`` and ``addr`` of this client, one round trip."""
        connection._kvstore_client = None
        if self.fences.off:
            return
        await connection.send_command("CLIENT", "INFO")
        try:
            reply = await connection.read_response()
        except redis.exceptions.ResponseError as exc:
            self.fences.refuse(exc, "CLIENT INFO")
            return
        client = _client_of(reply)
        if client is None:  # not Redis' own reply (a proxy?): never kill on a guess
            self.fences.refuse(ValueError(f"unexpected reply {reply!r:.80}"), "CLIENT INFO")
        connection._kvstore_client = client

    def _cut(self, connection: Any) -> None:
        """``connection`` comes back closed: the command it carried may still be in the server's buffer."""
        client = getattr(connection, "_kvstore_client", None)
        if client is not None:
            connection._kvstore_client = None
            if not self.fences.off:
                self.fences.pending[client] = None

    async def _fence(self, connection: Any) -> None:
        """Kill, on ``connection``, every cut client (one pipelined round trip): their commands ran, or never will.

        A timeout or lost connection here raises (the server is still frozen or gone: the
        call fails as unavailable) and the fences stay; a refusal drops them, with a warning.
        """
        fences = self.fences
        pending = list(fences.pending)
        await connection.send_packed_command(connection.pack_commands(_kill_commands(pending)))
        refused: BaseException | None = None
        for _ in pending:  # every reply is read, so the connection stays in step
            try:
                await connection.read_response()
            except redis.exceptions.ResponseError as exc:
                refused = exc
        if refused is not None:
            fences.refuse(refused, "CLIENT KILL")
            return
        for client in pending:
            fences.pending.pop(client, None)


class _AsyncWaiting(_AsyncFenced):
    """Pool mixin: a burst beyond ``max_connections`` waits up to ``timeout`` seconds; fenced."""

    max_connections: int

    def __init__(self, *args: Any, timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The store sets its own (one for all its pools, kept by a forked child).
        self.fences = Fences()
        self._wait = timeout
        self._gate = asyncio.Semaphore(self.max_connections)
        # Connections holding a permit. redis-py releases a connection that failed to
        # connect itself, before get_connection raises: that one never got a permit
        # here, and the permit is returned by get_connection (once, not twice).
        self._gated: set[int] = set()
        #: Set by `aclose`: redis-py's pool would connect anew for the callers still waiting.
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        await super().aclose()  # type: ignore[misc]  # a mixin

    def _refuse(self) -> redis.exceptions.ConnectionError:
        return redis.exceptions.ConnectionError("the connection pool was closed")

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise self._refuse()
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
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[misc]  # a mixin
        except BaseException:
            gate.release()
            raise
        self._gated.add(id(connection))
        if self._closed:  # closed while this caller waited or connected: never a socket left open
            with contextlib.suppress(Exception):
                await connection.disconnect()
            await self.release(connection)
            raise self._refuse()
        if self.fences.pending:  # only after a cut: the hot path pays one dict check
            try:
                await self._fence(connection)
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def release(self, connection: Any) -> None:
        if connection._writer is None:  # closed while in use: a cut (a deliberate release keeps it open)
            self._cut(connection)
        try:
            await super().release(connection)  # type: ignore[misc]  # a mixin
        finally:
            if id(connection) in self._gated:
                self._gated.discard(id(connection))
                self._gate.release()


class AsyncWaitingPool(_AsyncWaiting, redis.asyncio.ConnectionPool):
    """redis-py's pool, but a burst beyond ``max_connections`` waits up to ``timeout`` seconds.

    redis-py's async ``BlockingConnectionPool`` does the same with a Condition and
    ``wait_for`` on every call (~25 us of CPU per command, a quarter of a GET); an
    uncontended semaphore costs next to nothing. The sync twin uses redis-py's
    ``BlockingConnectionPool`` (`WaitingPool`), which is cheap there; both take ``timeout``.
    """


class _Fenced:
    """Sync pool mixin: learns each new connection's client, fences the cut ones (see `Fences`).

    The hot path pays one attribute check per release: the fence's check of each call is
    installed on the pool (an instance attribute over ``get_connection``) only while a
    fence is pending, and removed once none is.
    """

    fences: Fences

    def use_fences(self, fences: Fences) -> None:
        """Share the store's fences (a forked child's pool keeps its parent's pending ones)."""
        self.fences = fences
        if fences.pending:
            self._arm()

    def _arm(self) -> None:
        self.__dict__["get_connection"] = self._fenced_get_connection

    def _disarm(self) -> None:
        self.__dict__.pop("get_connection", None)
        if self.fences.pending:  # a cut in another thread meanwhile: its fence stays armed
            self._arm()

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[misc]  # a mixin
        connection.register_connect_callback(self._learn_client)
        return connection

    def _learn_client(self, connection: Any) -> None:
        connection._kvstore_client = None
        if self.fences.off:
            return
        connection.send_command("CLIENT", "INFO")
        try:
            reply = connection.read_response()
        except redis.exceptions.ResponseError as exc:
            self.fences.refuse(exc, "CLIENT INFO")
            return
        client = _client_of(reply)
        if client is None:  # not Redis' own reply (a proxy?): never kill on a guess
            self.fences.refuse(ValueError(f"unexpected reply {reply!r:.80}"), "CLIENT INFO")
        connection._kvstore_client = client

    def _cut(self, connection: Any) -> None:
        client = getattr(connection, "_kvstore_client", None)
        if client is not None:
            connection._kvstore_client = None
            if not self.fences.off:
                self.fences.pending[client] = None
                self._arm()

    def _fence(self, connection: Any) -> None:
        fences = self.fences
        pending = list(fences.pending)
        connection.send_packed_command(connection.pack_commands(_kill_commands(pending)))
        refused: BaseException | None = None
        for _ in pending:  # every reply is read, so the connection stays in step
            try:
                connection.read_response()
            except redis.exceptions.ResponseError as exc:
                refused = exc
        if refused is not None:
            fences.refuse(refused, "CLIENT KILL")
            return
        for client in pending:
            fences.pending.pop(client, None)

    def _fenced_get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """``get_connection`` while a fence is pending: the fences run first, on the connection returned."""
        connection = type(self).get_connection(self, *args, **kwargs)  # type: ignore[attr-defined]  # a mixin
        if self.fences.pending:
            try:
                self._fence(connection)
            except BaseException:
                self.release(connection)
                raise
        if not self.fences.pending:
            self._disarm()
        return connection

    def release(self, connection: Any) -> None:
        if connection._sock is None:  # closed while in use: a cut (a deliberate release keeps it open)
            self._cut(connection)
        super().release(connection)  # type: ignore[misc]  # a mixin


class WaitingPool(_Fenced, redis.BlockingConnectionPool):
    """The sync pool whose callers wait up to ``timeout`` for a free connection; fenced."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated upstream
        #: The store sets its own (one for all its pools; a forked child keeps it).
        self.fences = Fences()


# --- Redis Sentinel -----------------------------------------------------------------------
#
# redis-py's Sentinel pool asks the Sentinels for the master's address before each new
# connection. kvstore adds one check per new connection, before its first command: the
# store's ``check_master`` (is this a master? the same one as before? after a failover,
# invalidate what the old master may have lost), set on the pool by the store.

#: redis-py's Sentinel manager (queries the Sentinels for the master's address).
AsyncSentinel = redis.asyncio.sentinel.Sentinel
Sentinel = redis.sentinel.Sentinel


class AsyncCheckedSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """A connection to the master Sentinel names, checked by the store before it is used."""

    async def connect_to(self, address: Any) -> None:
        await super().connect_to(address)  # type: ignore[no-untyped-call]  # unannotated upstream
        try:
            await self.connection_pool.check_master(self)
        except BaseException:
            await self.disconnect()
            raise


class AsyncCheckedSentinelSSLConnection(AsyncCheckedSentinelConnection, redis.asyncio.connection.SSLConnection):
    """The TLS variant (``rediss+sentinel://`` or ``tls: true``)."""


class CheckedSentinelConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to the master Sentinel names, checked by the store before it is used."""

    def connect_to(self, address: Any) -> None:
        super().connect_to(address)  # type: ignore[no-untyped-call]  # unannotated upstream
        try:
            self.connection_pool.check_master(self)
        except BaseException:
            self.disconnect()  # type: ignore[no-untyped-call]  # unannotated upstream
            raise


class CheckedSentinelSSLConnection(CheckedSentinelConnection, redis.connection.SSLConnection):
    """The TLS variant (``rediss+sentinel://`` or ``tls: true``)."""


class AsyncSentinelPool(_AsyncWaiting, redis.asyncio.sentinel.SentinelConnectionPool):
    """redis-py's Sentinel pool: waits for a free connection, and holds the store's ``check_master``."""

    check_master: Callable[[Any], Any]


class SentinelPool(_Fenced, redis.sentinel.SentinelConnectionPool):
    """redis-py's sync Sentinel pool; a burst beyond ``max_connections`` waits up to ``timeout`` seconds; fenced."""

    def __init__(self, *args: Any, timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated upstream
        self.fences = Fences()
        self._wait = timeout
        self._gate_pid = os.getpid()
        self._gate = threading.BoundedSemaphore(self.max_connections)
        self._gated: set[int] = set()

    def _current_gate(self) -> threading.BoundedSemaphore:
        if self._gate_pid != os.getpid():  # a forked child counts its own connections
            self._gate_pid = os.getpid()
            self._gate = threading.BoundedSemaphore(self.max_connections)
            self._gated = set()
        return self._gate

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        gate = self._current_gate()
        if not gate.acquire(timeout=self._wait):
            raise redis.exceptions.MaxConnectionsError(f"no pooled connection became free within {self._wait:g} s")
        try:
            connection = super().get_connection(*args, **kwargs)
        except BaseException:
            gate.release()  # redis-py released the connection itself; the permit is returned here
            raise
        self._gated.add(id(connection))
        return connection

    def release(self, connection: Any) -> None:
        try:
            super().release(connection)
        finally:
            if id(connection) in self._gated:
                self._gated.discard(id(connection))
                self._current_gate().release()

    @property
    def check_master(self) -> Callable[[Any], Any]:
        """The store's check of a new connection; the connections reach it through redis-py's pool proxy."""
        return getattr(self.proxy, "check_master")  # type: ignore[no-any-return]  # noqa: B009  # set below

    @check_master.setter
    def check_master(self, check: Callable[[Any], Any]) -> None:
        setattr(self.proxy, "check_master", check)  # noqa: B010  # redis-py's proxy has no such attribute


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
        sentinel = getattr(store, "_sentinel", None)
        if sentinel is not None:  # its clients hold the parent's sockets to the Sentinels
            _abandon(sentinel)
            store._sentinel = None
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
