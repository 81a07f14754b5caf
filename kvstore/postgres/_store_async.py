"""PostgreSQL database tier on psycopg 3 and a psycopg_pool pool (schema: `kvstore.postgres._sql`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self, cast

from orjson import loads as _loads

from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES, encode
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW, validate_window
from kvstore._core.keys import (
    compile_glob,
    glob_literal_prefix,
    prefix_upper_bound,
    validate_key,
    validate_keys,
    validate_prefix,
)
from kvstore._core.ttl import ttl_ms
from kvstore._core.watch import check_poll_interval, key_tag
from kvstore.base_async import BEYOND_64_BITS, MAX_INT, AsyncDatabase, holds_list, holds_value, not_an_integer
from kvstore.errors import (
    BackendBusyError,
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    InvalidKeyError,
    KVStoreError,
    MissingDependencyError,
    SerializationError,
)
from kvstore.postgres import _watchdog as _wd

if TYPE_CHECKING:
    from pydantic import SecretStr

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

    from kvstore.postgres import _errors as _err
    from kvstore.postgres import _hosts
    from kvstore.postgres import _sql as _pg
except ImportError as _exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("postgres", "postgres", _exc.name or "psycopg") from _exc

__all__ = ["AsyncPostgresDatabase", "AsyncPostgresWatcher"]

logger = logging.getLogger("kvstore")

_Conn = psycopg.AsyncConnection[Any]
_Pool = AsyncConnectionPool[_Conn]

#: Keys fetched per round trip by `iter_keys`.
_KEYS_PAGE = 1000
#: Expired rows removed per purge statement.
_PURGE_BATCH = 1000
_BIG = 2**62
#: ``set[str]`` (inside the class, ``set`` names the method).
_KeySet = set[str]
#: Seconds between a watcher's reconnection attempts while the server is down: doubling, capped.
_RECONNECT_FIRST, _RECONNECT_MAX = 0.05, 2.0
#: Seconds between a call's looks at the server processes it waits for (`_await_fences`): doubling, capped.
_FENCE_FIRST, _FENCE_MAX = 0.005, 0.1
#: Seconds a cut server process is waited for at most (a server frozen longer: see `_await_fences`).
_FENCE_FOR = 300.0
#: Seconds between a registering watcher's tries at a locked list row (`_pg.watcher_settle`): doubling, capped.
_SETTLE_FIRST, _SETTLE_MAX = 0.005, 0.1
#: Seconds a connection must have been idle in the pool before a checkout polls its socket.
_POLL_AFTER = 0.05
_HAS_POLL = hasattr(select, "poll")


def _empty_selection(length: int, start: int, end: int) -> bool:
    """Whether LRANGE ``start..end`` of a list of ``length`` items selects nothing."""
    lo = max(length + start, 0) if start < 0 else start
    hi = length + end if end < 0 else min(end, length - 1)
    return lo > hi


def _clamp(index: int) -> int:
    """A list index within +-2**62: nothing changes beyond (no list is that long) and bigint stays exact."""
    return -_BIG if index < -_BIG else _BIG if index > _BIG else index


def _text(value: object) -> str:
    """A setting as text: a connection whose client encoding is SQL_ASCII answers with bytes."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _looks_alive(conn: Any) -> bool:
    """Whether a pooled connection is not known dead, without a round trip.

    An idle, healthy connection receives nothing; a server that restarted (or
    killed the backend) has closed the socket, which then polls readable. A
    connection handed back less than `_POLL_AFTER` ago skips even the poll: it
    cannot have missed a restart, and a rare one that died that fast is caught
    by the broken-connection retry.
    """
    if conn.closed or conn.broken:
        return False
    if time.monotonic() - getattr(conn, "_kvstore_returned", 0.0) < _POLL_AFTER:
        return True
    if _HAS_POLL:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    return not select.select([conn.pgconn.socket], [], [], 0)[0]  # pragma: no cover - Windows


#: Every store of this module in this process, so a forked child can make them reconnect.
_STORES: weakref.WeakSet[AsyncPostgresDatabase] = weakref.WeakSet()
#: In a forked child, the parent's pools: kept referenced and never used or closed, because
#: closing a connection sends a Terminate message on the socket it shares with the parent
#: (ending the parent's session). psycopg finishes a connection on garbage collection only
#: in the process that opened it.
_INHERITED: list[Any] = []


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        # One store failing to reset must not leave the others on the parent's connections.
        with contextlib.suppress(Exception):
            store._forget_parent()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: conninfo -> `time.monotonic` of the last connection attempt the server refused as saturated
#: (53300, too many connections): a fact about the server, shared by the stores that use it.
_REFUSED_BUSY: dict[str, float] = {}


class _Cursor(psycopg.AsyncCursor[Any]):
    """The cursor of the store's connections: a write refused by a read-only server
    (a standby, or a primary switched read-only under an open connection) discards the
    connection and raises `_hosts.ReadOnlyServer`, an outage (see `kvstore.postgres._hosts`)."""

    __slots__ = ()

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        try:
            return await super().execute(query, params, **kwargs)
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise _hosts.read_only(self._conn, exc) from exc


class _Connection(psycopg.AsyncConnection[Any]):
    """The pool's connections. The pool opens them in the background and only reports a
    timeout to the caller; this remembers when the server refused one as saturated, and
    which host each one reached (of several, libpq picks the one accepting writes)."""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        try:
            conn = await super().connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            if _err.is_busy(exc):
                _REFUSED_BUSY[conninfo] = time.monotonic()
            raise
        conn.cursor_factory = _Cursor
        conn._kvstore_host = _hosts.where(conn)  # type: ignore[attr-defined]  # our mark, see `serving`
        conn._kvstore_pid = conn.info.backend_pid  # type: ignore[attr-defined]  # see `_fence` (0 once cut)
        watch = conn._kvstore_sync = _hosts.SyncWatch()  # type: ignore[attr-defined]  # see `_putconn`
        conn.add_notice_handler(watch)
        return conn


def _cursor(conn: _Conn) -> psycopg.AsyncCursor[Any]:
    """The connection's reusable cursor: a fresh cursor per call re-learns its adapters
    and costs about a fifth of a loopback round trip (measured)."""
    cur: psycopg.AsyncCursor[Any] | None = getattr(conn, "_kvstore_cursor", None)
    if cur is None:
        cur = conn.cursor()
        conn._kvstore_cursor = cur  # type: ignore[attr-defined]  # our own mark on the pooled connection
    return cur


class AsyncPostgresDatabase(AsyncDatabase):
    """Database tier on PostgreSQL: values, append-only lists and TTL, shared by many processes.

    Args:
        url: A ``postgresql://`` URL or libpq conninfo string, or a ready
            `AsyncConnectionPool` which the store borrows: it uses the pool and never
            closes it (its connections must be in autocommit mode). A store built from a
            URL or a config opens its own pool and closes it in `aclose`.
        password: The password, a str or a pydantic ``SecretStr`` (kept out of every
            string the store prints).
        host, port, dbname, user, sslmode, sslrootcert: Override the URL's fields.
        hosts: Several servers (a primary and its standbys), ``"host:port"`` each, instead
            of ``host``/``port``; a URL may list them too (``postgresql://h1:5432,h2:5433/app``).
        target_session_attrs: ``read-write`` (the default with several hosts: connections
            go only to the server accepting writes, so the pool follows a promoted standby)
            or ``primary``; ``any`` (libpq's default) with one host only.
        key_prefix: Namespace of this store; other prefixes are never seen.
        schema_name: PostgreSQL schema of the tables, created if missing.
        table_prefix: Prefix of the table names (``<p>entries``, ``<p>items``, ``<p>meta``).
        min_size, max_size, pool_timeout, max_waiting: Pool sizing and the
            deadline for getting a connection.
        connect_timeout, statement_timeout, tcp_user_timeout: Deadlines (seconds).
        call_timeout: Client-side deadline of one call, pool checkout included
            (default ``statement_timeout`` + 0.25 s): past it the watchdog cuts the
            connection and the call raises `BackendUnavailableError`, even against a
            server that is frozen but whose kernel still acknowledges packets.
        purge_interval: Seconds between sweeps of expired rows (they are invisible at once anyway).
        idempotency_window: Seconds an append's idempotency id is remembered (default
            one day, server clock); the sweep removes older ids of every prefix, and the
            tombstones and clear marks that `changed_since` reads.

    Busy is not an outage (DESIGN.md §8): a call that finds the pool saturated while the
    server answers (every connection held by a call within its deadline, or another call
    answered meanwhile), a server refusing connections as too many (53300) and a lock not
    obtained within ``lock_timeout`` (55P03) raise `BackendBusyError`; refused, reset, a
    missed call deadline and a pool that cannot open connections raise
    `BackendUnavailableError`.

    Fork-safe: in a process forked from one that used the store (gunicorn ``--preload``,
    multiprocessing), the first call opens a pool of the child's own; the parent's
    connections are never used or closed by the child (closing would send a Terminate on
    the shared socket and end the parent's session). A store handed a ready pool cannot
    follow a fork and raises `ConfigError` in the child.

    Raises:
        InvalidKeyError: ``key_prefix`` is not a str, or holds NUL or a lone surrogate.
        ConfigError: ``schema_name`` or ``table_prefix`` cannot name PostgreSQL objects exactly
            (empty, NUL, a lone surrogate, or a name past 63 bytes).
    """

    backend = "postgres"
    durable = True
    tracks_changes = True

    def __init__(
        self,
        url: str | _Pool | None = None,
        *,
        password: str | SecretStr | None = None,
        host: str | None = None,
        port: int | None = None,
        dbname: str | None = None,
        user: str | None = None,
        sslmode: str | None = None,
        sslrootcert: str | None = None,
        hosts: Sequence[str] | None = None,
        target_session_attrs: str | None = None,
        key_prefix: str = "",
        schema_name: str = "public",
        table_prefix: str = "kvstore_",
        min_size: int = 1,
        max_size: int = 10,
        pool_timeout: float = 5.0,
        max_waiting: int = 0,
        connect_timeout: float = 2.0,
        statement_timeout: float = 5.0,
        tcp_user_timeout: float = 5.0,
        call_timeout: float | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        purge_interval: float = 60.0,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        # Checked before anything else (InvalidKeyError, like the other backends), so a bad
        # prefix fails here and not as a driver encoding error after the DDL ran.
        try:
            self.key_prefix = validate_prefix(key_prefix)
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"invalid key_prefix: {exc.message}", backend="postgres") from None
        self.schema = schema_name
        self.table_prefix = table_prefix
        self.max_value_bytes = max_value_bytes
        self._q = _pg.Queries.build(schema_name, table_prefix)
        self._lock_id = _pg.lock_id(schema_name)
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._call_timeout = _pg.call_timeout(statement_timeout, call_timeout)
        self._purge_interval = purge_interval
        self._window = validate_window(idempotency_window)
        self._next_purge = time.monotonic() + purge_interval
        self._ready = False
        self._closed = False
        self._inherited = False
        #: ids of the connections this store has checked out now (set add/discard: thread-safe).
        self._held: set[int] = set()
        #: `time.monotonic` when a connection last came back from a call the server answered.
        self._last_ok = 0.0
        #: ``host:port`` of the server that answered the last call (`serving`).
        self._serving: str | None = None
        #: (host, server pid) of the connections cut at a deadline -> (wall time of the cut, monotonic
        #: time to stop waiting): their statement may still run (`_await_fences`). Dict ops: thread-safe.
        self._fences: dict[tuple[str | None, int], tuple[float, float]] = {}
        self._start_lock = asyncio.Lock()
        _STORES.add(self)
        self._conninfo = ""
        if password is not None and not isinstance(password, str):
            password = password.get_secret_value()
        if isinstance(url, AsyncConnectionPool):
            self._pool: _Pool = url
            self._owns_pool = False
            self._secret: str | None = password
            self._where = f"pool={url.name!r}"
            return
        host, port = _hosts.merge_fields(hosts, host, port)
        conninfo, url_password = _pg.build_conninfo(
            url,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            tcp_user_timeout=tcp_user_timeout,
            host=host,
            port=port,
            dbname=dbname,
            user=user,
            sslmode=sslmode,
            sslrootcert=sslrootcert,
        )
        conninfo = _hosts.session_attrs(conninfo, target_session_attrs)
        self._secret = password if password is not None else url_password
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
        self._where = " ".join(f"{k}={info[k]}" for k in ("host", "port", "dbname", "user") if info.get(k))
        if not _pg.is_local(conninfo) and info.get("sslmode") not in ("verify-ca", "verify-full"):
            logger.warning(
                "kvstore: PostgreSQL at %s is not local and its certificate is not verified "
                "(sslmode=%s); set sslmode=verify-full",
                info.get("host"),
                info.get("sslmode", "prefer"),
            )
        # UTF8 whatever the URL or the server's default says: keys and values are UTF-8 text
        # (a SQL_ASCII database stores the bytes as they come; other encodings are refused).
        kwargs: dict[str, Any] = {"autocommit": True, "client_encoding": "UTF8"}
        if self._secret is not None:
            kwargs["password"] = self._secret
        self._conninfo, self._connect_kwargs = conninfo, kwargs
        self._sizes = (min_size, max_size, max_waiting)
        self._pool = self._new_pool()
        self._owns_pool = True

    def _new_pool(self) -> _Pool:
        min_size, max_size, max_waiting = self._sizes
        pool: _Pool = AsyncConnectionPool(
            self._conninfo,
            connection_class=cast(Any, _Connection),
            kwargs=self._connect_kwargs,
            min_size=min_size,
            max_size=max_size,
            timeout=self._pool_timeout,
            max_waiting=max_waiting,
            open=False,
            name=f"kvstore-postgres-{id(self):x}",
        )
        return pool

    def _forget_parent(self) -> None:
        """Run in a child just forked from a process that had this store (``os.register_at_fork``).

        The child never touches the parent's pool: its sockets are shared with the parent,
        and its locks and worker threads (or tasks) did not survive the fork. The next call
        opens a pool of the child's own (`_start`); the hot path keeps its one flag check.
        """
        if self._closed:
            return
        self._ready = False
        self._held = set()
        self._last_ok = 0.0
        # The parent's cut calls precede whatever the child does: the child waits for them too
        # (the fence asks the server by pid, start time and role, which any process can).
        self._fences = dict(self._fences)
        self._start_lock = asyncio.Lock()
        _INHERITED.append(self._pool)
        self._inherited = True

    async def _opened(self) -> None:
        """`from_config` connects and migrates within ``connect_timeout`` (else `BackendUnavailableError`)."""
        await self.open()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._ready else "not connected")
        return (
            f"<{type(self).__name__} {self._where} schema={self.schema!r} "
            f"tables={self.table_prefix}* prefix={self.key_prefix!r} {state}>"
        )

    # --- connection handling --------------------------------------------------------

    async def open(self) -> None:
        """Open the pool and create or migrate the schema (done on first use otherwise)."""
        await self._start()

    async def _start(self) -> _Pool:
        if self._closed:
            raise ClosedError(f"{type(self).__name__} is closed", backend="postgres")
        async with self._start_lock:
            if self._ready:
                return self._pool
            if self._inherited:
                if not self._owns_pool:
                    raise ConfigError(
                        "this PostgreSQL store was handed a ready pool and is used in a forked child "
                        "process, where the parent's connections must not be used; build the store "
                        "from a URL (it then opens its own pool in each process)",
                        backend="postgres",
                    )
                self._pool = self._new_pool()
                self._inherited = False
            with _err.map_errors("connect", None, self._secret):
                if self._owns_pool:
                    # One direct attempt first, so a refused or rejecting server fails this
                    # call at once (the manager retries within its budget) instead of the
                    # pool retrying in the background until the deadline.
                    first: _Conn = await _Connection.connect(self._conninfo, **self._connect_kwargs)
                    self._serving = getattr(first, "_kvstore_host", None)
                    try:
                        await self._migrate(first)
                    finally:
                        await first.close()
                    try:
                        await self._pool.open(wait=True, timeout=self._connect_timeout)
                    except BaseException:
                        # psycopg_pool closes a pool whose wait timed out for good, and a wait that was
                        # cancelled leaves it unable to wait again: the next attempt starts a new pool.
                        pool, self._pool = self._pool, self._new_pool()
                        await pool.close()
                        raise
                else:
                    conn = await self._pool.getconn(timeout=self._connect_timeout)
                    try:
                        await self._migrate(conn)
                    finally:
                        await self._pool.putconn(conn)
            self._ready = True
        return self._pool

    async def _migrate(self, conn: _Conn) -> None:
        # A connect-time step of a dozen statements: the connect budget plus one call's.
        budget = self._connect_timeout + self._call_timeout
        _wd.current.arm(conn, time.monotonic() + budget)
        try:
            await self._migrate_armed(conn)
        except psycopg.Error as exc:
            await self._raise_if_cut(conn, exc, "connect", None, budget)
            raise
        finally:
            if _wd.current.disarm(conn):  # cut just as it finished: never hand the dead socket back
                await conn.close()

    async def _migrate_armed(self, conn: _Conn) -> None:
        q = self._q
        async with conn.transaction():
            # Concurrent first connects (many processes) queue here instead of racing the DDL.
            await conn.execute(q.lock, (self._lock_id,))
            cur = await conn.execute(q.server_encoding)
            server, client, isolation = (_text(v) for v in (await cur.fetchone() or ("", "", "")))
            if server not in ("UTF8", "SQL_ASCII"):
                raise ConfigError(f"kvstore needs a UTF8 PostgreSQL database; this one is {server}", backend="postgres")
            if client != "UTF8":  # a borrowed pool's connections (kvstore's own always ask for UTF8)
                raise ConfigError(
                    f"kvstore needs client_encoding UTF8 on its connections; these use {client}", backend="postgres"
                )
            if isolation != "read committed":  # a borrowed pool's (kvstore's own always ask for it)
                logger.warning(
                    "kvstore: the pool's PostgreSQL connections default to %s isolation; kvstore's statements "
                    "rely on read committed (concurrent writes to one key fail as busy under %s): set "
                    "default_transaction_isolation to read committed on the pool's connections",
                    isolation,
                    isolation,
                )
            cur = await conn.execute(q.schema_exists, (self.schema,))
            if await cur.fetchone() is None:
                await conn.execute(q.create_schema)
            cur = await conn.execute(q.meta_exists, (self.schema, f"{self.table_prefix}meta"))
            if await cur.fetchone() is None:
                await conn.execute(q.create_meta)
            cur = await conn.execute(q.read_version)
            row = await cur.fetchone()
            version = row[0] if row else 0
            if version > _pg.SCHEMA_VERSION:
                raise ConfigError(
                    f"the kvstore tables in schema {self.schema!r} are at version {version}, newer than "
                    f"this kvstore ({_pg.SCHEMA_VERSION}); upgrade kvstore",
                    backend="postgres",
                )
            for statements in _pg.migrations(self.schema, self.table_prefix, fresh=version == 0)[version:]:
                for statement in statements:
                    await conn.execute(statement)
            if version != _pg.SCHEMA_VERSION:
                await conn.execute(q.write_version, (_pg.SCHEMA_VERSION,))

    async def _getconn(self, pool: _Pool, deadline: float, op: str, key: str | None) -> _Conn:
        """A pooled connection that is not known dead, armed with the call's ``deadline``.

        The checkout waits at most ``pool_timeout`` and never past the deadline. A
        dead connection is closed and replaced: psycopg_pool's own ``check`` backs off
        1 s, 2 s, 4 s between failed checks, so a few dead connections after a server
        restart would exhaust ``pool_timeout``; here one costs nothing but its replacement.
        Every connection this returns must go back through `_putconn` (which disarms it).
        """
        for _ in range(pool.max_size + 1):
            started = time.monotonic()
            wait = min(self._pool_timeout, deadline - started)
            try:
                conn = await pool.getconn(timeout=max(0.001, wait))
            except (PoolTimeout, TooManyRequests) as exc:
                raise self._checkout_error(exc, pool, started, wait, op, key) from exc
            self._held.add(id(conn))
            if not hasattr(conn, "_kvstore_pid"):  # a borrowed pool's connection
                conn._kvstore_pid = conn.info.backend_pid  # type: ignore[attr-defined]  # see `_fence`
            _wd.current.arm(conn, deadline)
            if _looks_alive(conn):
                return conn
            try:
                await AsyncConnectionPool.check_connection(conn)
            except BaseException as exc:
                # Closed and handed back also when the call is cancelled during the check: a
                # connection never returned stays counted as taken, and the pool shrinks for good.
                cut = _wd.current.disarm(conn)
                self._held.discard(id(conn))
                await conn.close()
                await pool.putconn(conn)
                if not isinstance(exc, psycopg.Error):
                    raise
                if cut:
                    raise _err.deadline_error(op, key, self._call_timeout) from exc
                continue
            return conn
        raise BackendUnavailableError("no live PostgreSQL connection in the pool", backend="postgres")

    def _checkout_error(
        self, exc: Exception, pool: _Pool, started: float, wait: float, op: str, key: str | None
    ) -> BackendUnavailableError:
        """What a checkout that found no free connection means: busy, or unavailable.

        Busy (DESIGN.md §8: not an outage) when the server is demonstrably answering: a
        call of this store got its reply while this one waited (for a full wait queue,
        within the last ``pool_timeout``), or the server refused a new connection of the
        pool as saturated (53300) meanwhile, or every connection of the pool is held by a
        call of this store that is still within its deadline (the watchdog cuts the others,
        and a cut connection is never held). Otherwise the pool could not open or keep
        connections: the server is unavailable.
        """
        queue_full = isinstance(exc, TooManyRequests)
        since = started - self._pool_timeout if queue_full else started
        if self._last_ok > since or len(self._held) >= pool.max_size or _REFUSED_BUSY.get(self._conninfo, 0.0) > since:
            return _err.busy_error(op, key, time.monotonic() - started, queue_full=queue_full)
        if wait < self._pool_timeout:  # the call's deadline, not pool_timeout, ran out
            return _err.deadline_error(op, key, self._call_timeout, checkout=True)
        mapped = _err.map_error(exc, op, key, self._secret)
        assert isinstance(mapped, BackendUnavailableError)
        return mapped

    async def _putconn(self, pool: _Pool, conn: _Conn) -> None:
        """Disarm ``conn`` and hand it back; one whose deadline passed is closed, so the pool drops it.

        A commit of the call that the synchronous standby did not confirm (`_hosts.SyncWatch`)
        raises `BackendUnavailableError` here, once the connection is back: never acknowledged.
        """
        if _wd.current.disarm(conn):
            self._fence(conn)
            await conn.close()
        elif conn.closed:
            # Closed under the call: a cancelled call whose server did not answer psycopg's cancel
            # (it closes the connection), or a lost connection. Its statement may still run, like a
            # cut one's (its process frozen, or waiting on a lock): the next statement waits for it.
            self._fence(conn)
        now = time.monotonic()
        self._held.discard(id(conn))
        if not (conn.closed or conn.broken):
            self._last_ok = now  # the server answered this call: it is up
            self._serving = getattr(conn, "_kvstore_host", self._serving)
        conn._kvstore_returned = now  # type: ignore[attr-defined]  # our mark, see _looks_alive
        await pool.putconn(conn)
        watch = getattr(conn, "_kvstore_sync", None)
        if watch is not None and watch.hit:
            watch.hit = False
            raise _hosts.unreplicated()

    async def _raise_if_cut(self, conn: _Conn, exc: BaseException, op: str, key: str | None, budget: float) -> None:
        """After a driver error: if the watchdog cut ``conn`` at its deadline, close it and say so."""
        if _wd.current.disarm(conn):
            self._fence(conn)
            await conn.close()
            raise _err.deadline_error(op, key, budget) from exc

    def _fence(self, conn: _Conn) -> None:
        """Remember the server process of ``conn``, just cut at its deadline (`_await_fences`)."""
        pid = getattr(conn, "_kvstore_pid", 0)  # libpq says 0 once the connection is bad
        if pid:
            self._fences[(getattr(conn, "_kvstore_host", None), pid)] = (time.time(), time.monotonic() + _FENCE_FOR)

    async def _await_fences(self, conn: _Conn, deadline: float, op: str, key: str | None) -> None:
        """Before a statement: wait until the server processes this store cut at a deadline have ended.

        A call cut at its deadline (a frozen server, a stalled VM) may still run: the server
        thaws and runs the statement it received. Had this statement gone first, it could
        commit before it, and an ``append`` after one whose call failed would land ahead of it
        (each writer's items must stay in its order, DESIGN.md §5). So each such process is
        asked to end (`Queries.fence`: one that has not read the statement yet ends without
        running it) and this call waits until none is left. Asked of the server, by pid and
        start time and role, so a reused pid is never waited for or ended; a process of another
        host (libpq moved to another server) is not waited for, nor one cut more than
        `_FENCE_FOR` seconds ago. Still there at the call's deadline: `BackendBusyError` (the
        server answers; that process does not end), and the next call waits again.
        """
        host = getattr(conn, "_kvstore_host", None)
        pause = _FENCE_FIRST
        while True:
            now = time.monotonic()
            waiting: dict[tuple[str | None, int], float] = {}
            for fence, (cut_at, until) in list(self._fences.items()):
                if fence[0] != host or until <= now:
                    self._fences.pop(fence, None)
                else:
                    waiting[fence] = cut_at
            if not waiting:
                return
            params = {"pids": [pid for _, pid in waiting], "cuts": list(waiting.values()), "now": time.time()}
            try:
                cur = await _cursor(conn).execute(self._q.fence, params)
                left = {row[0] for row in await cur.fetchall()}
            except psycopg.errors.InsufficientPrivilege as exc:
                # A hardened server (EXECUTE on pg_stat_get_activity or pg_terminate_backend
                # revoked from PUBLIC): the fence cannot be asked. Waiting would refuse every call
                # for `_FENCE_FOR` seconds; the fence is dropped, the order unguarded, as said.
                for fence in waiting:
                    self._fences.pop(fence, None)
                logger.warning(
                    "kvstore: PostgreSQL %s does not wait for the server process of a call cut at its deadline "
                    "(it may still run its statement, after this one): %s",
                    op,
                    exc,
                )
                return
            for fence in waiting:
                if fence[1] not in left:
                    self._fences.pop(fence, None)
            if not left:
                return
            if time.monotonic() + pause >= deadline:
                raise BackendBusyError(
                    f"PostgreSQL {op}: server process {min(left)}, whose call this store cut at its deadline, "
                    "has not ended; this call waits for it so as not to overtake its statement (the server "
                    "answers: retry later)",
                    backend="postgres",
                    key=key,
                    operation=op,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, _FENCE_MAX)

    async def _run(self, op: str, key: str | None, query: str, params: Any, result: str, retry: bool = True) -> Any:
        """Run one statement; ``result`` is ``"one"`` (first row), ``"all"`` or ``"rowcount"``.

        With ``retry`` (idempotent statements only, DESIGN.md §8a), a connection that broke
        under the call (server restart) is dropped and the statement retried on the next
        one; without it, the error is raised (the statement may have run).
        """
        try:
            pool = self._pool if self._ready else await self._start()
            deadline = time.monotonic() + self._call_timeout
            with _err.map_errors(op, key, self._secret):
                for attempt in range(pool.max_size + 1):
                    conn = await self._getconn(pool, deadline, op, key)
                    try:
                        if self._fences:
                            await self._await_fences(conn, deadline, op, key)
                        cur = await _cursor(conn).execute(query, params)
                        if result == "one":
                            return await cur.fetchone()
                        if result == "all":
                            return await cur.fetchall()
                        return cur.rowcount
                    except psycopg.Error as exc:
                        await self._raise_if_cut(conn, exc, op, key, self._call_timeout)
                        # A connection that died under us (restart) is dropped by the pool; try the
                        # next one. Each dead connection is tried once, so this loop is bounded.
                        if (
                            not retry
                            or not isinstance(exc, psycopg.OperationalError)
                            or attempt == pool.max_size
                            or not conn.broken
                        ):
                            raise
                    finally:
                        await self._putconn(pool, conn)
        except BackendUnavailableError as exc:
            if self._closed and not isinstance(exc, ClosedError):
                # This store was closed under the call (its pool closed: "pool is closed"):
                # not an outage, so nothing may count it as one (a failover tier's breaker).
                raise ClosedError(
                    f"{type(self).__name__} was closed while {op} ran", backend="postgres", key=key, operation=op
                ) from exc
            raise
        raise AssertionError("unreachable")

    async def _write(self, op: str, key: str | None, query: str, params: Any) -> int:
        """Run one idempotent write; return its row count (and sweep expired rows when due)."""
        count: int = await self._run(op, key, query, params, "rowcount")
        if time.monotonic() >= self._next_purge:
            await self._purge_quietly()
        return count

    async def _purge_quietly(self) -> None:
        self._next_purge = time.monotonic() + self._purge_interval
        try:
            await self.purge_expired()
        except Exception as exc:  # a failed sweep must not fail the write that triggered it
            logger.debug("kvstore: purge of expired PostgreSQL rows failed: %s", type(exc).__name__)

    async def purge_expired(self) -> int:
        """Delete expired rows (of every prefix) now; return how many went. They are invisible anyway."""
        params, total = {"batch": _PURGE_BATCH, "window": self._window}, 0
        while True:
            # One statement per batch: expired entries, and ids, tombstones and clear marks past the window.
            removed, ids = await self._run("purge_expired", None, self._q.purge, params, "one")
            total += int(removed)
            if max(removed, ids) < _PURGE_BATCH:
                return total

    # --- the raw hooks (kvstore.base_async): keys validated, values encoded, TTLs in ms -----
    #
    # Values travel as the stored JSON text: psycopg hands ``value::text`` back as str, which
    # the base decodes as it would bytes (a bytes copy per value would cost ~15 % of an mget).

    async def _get(self, key: str) -> bytes | None:
        row = await self._run("get", key, self._q.get, (self.key_prefix, key), "one")
        if row is None:
            return None
        if row[0] == "l":
            raise holds_list(key, "get", "postgres")
        return row[1]  # type: ignore[no-any-return]  # the JSON text (see above)

    async def _get_touch(self, key: str, ms: int) -> bytes | None:
        params = {"ns": self.key_prefix, "key": key, "ms": ms}
        row = await self._run("get", key, self._q.get_touch, params, "one")
        if row is None:
            return None
        if row[0] == "l":
            raise holds_list(key, "get", "postgres")
        return row[1]  # type: ignore[no-any-return]

    async def _set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        if only_if_absent:
            return await self._write("set", key, self._q.set_nx, (self.key_prefix, key, data.decode(), ms)) > 0
        await self._write("set", key, self._q.set, (self.key_prefix, key, data.decode(), ms))
        return True

    async def _delete(self, key: str) -> bool:
        row = await self._run("delete", key, self._q.delete, {"ns": self.key_prefix, "key": key}, "one")
        if time.monotonic() >= self._next_purge:  # a delete writes a tombstone: it sweeps too
            await self._purge_quietly()
        return bool(row and row[0])

    async def _delete_many(self, keys: list[str]) -> int:
        params = {"ns": self.key_prefix, "keys": keys}
        row = await self._run("delete_many", None, self._q.delete_many, params, "one")
        if time.monotonic() >= self._next_purge:
            await self._purge_quietly()
        return int(row[0])

    async def _exists(self, key: str) -> bool:
        return await self._run("exists", key, self._q.exists, (self.key_prefix, key), "one") is not None

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        rows = await self._run("mget", None, self._q.mget, (self.key_prefix, list(dict.fromkeys(keys))), "all")
        # Like Redis MGET, a list key reads as missing rather than failing the batch.
        found = {k: v for k, kind, v in rows if kind == "v"}
        return [found.get(k) for k in keys]

    if True:  # ASYNC

        async def _get_batch(self, keys: list[str]) -> list[Any]:
            # A batch of concurrent gets (kvstore._core.batching): the mget statement, whose
            # kind column tells a list (that caller's holds_list) from a missing key.
            rows = await self._run("get", None, self._q.mget, (self.key_prefix, keys), "all")
            found = {k: (kind, v) for k, kind, v in rows}
            out: list[Any] = []
            for key in keys:
                hit = found.get(key)
                out.append(None if hit is None else hit[1] if hit[0] == "v" else holds_list(key, "get", "postgres"))
            return out

    async def _mset(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        # One multi-row statement: one round trip, atomic. Duplicates are folded first (last
        # wins) because ON CONFLICT cannot touch a row twice; rows are written in key order,
        # so two msets of the same keys lock them in the same order and never deadlock.
        latest = {key: (data, ms) for key, data, ms in rows}
        keys = sorted(latest)
        values = [latest[key][0].decode() for key in keys]
        params = (self.key_prefix, keys, values, [latest[key][1] for key in keys])
        await self._write("mset", None, self._q.mset, params)

    async def _iter_keys(self, pattern: str) -> AsyncIterator[str]:
        match = compile_glob(pattern)
        low = glob_literal_prefix(pattern)
        high = prefix_upper_bound(low)
        after = ""
        while True:
            # Keyset pagination over the (ns, key) index: constant memory, no long transaction.
            if high is None:
                params: tuple[Any, ...] = (self.key_prefix, low, after, _KEYS_PAGE)
                rows = await self._run("keys", None, self._q.keys_page, params, "all")
            else:
                params = (self.key_prefix, low, after, high, _KEYS_PAGE)
                rows = await self._run("keys", None, self._q.keys_page_bounded, params, "all")
            for (key,) in rows:
                if match(key):
                    yield key
            if len(rows) < _KEYS_PAGE:
                return
            after = rows[-1][0]

    async def _clear(self) -> None:
        # Items and entries in one statement, with the namespace's clear mark (the replay
        # guard's "cleared after").
        await self._write("clear", None, self._q.clear, {"ns": self.key_prefix})

    async def _ttl(self, key: str) -> float | None:
        row = await self._run("ttl", key, self._q.ttl, (self.key_prefix, key), "one")
        if row is None or row[0] is None:
            return None
        return max(0.0, float(row[0]))

    async def _expire(self, key: str, ms: int | None) -> bool:
        return await self._write("expire", key, self._q.expire, (ms, self.key_prefix, key)) > 0

    async def _incr(self, key: str, by: int) -> int:
        params = {"ns": self.key_prefix, "key": key, "by": by}
        deadline = time.monotonic() + self._call_timeout
        while True:
            # Not idempotent: never retried on a broken connection (DESIGN.md §8a).
            row = await self._run("incr", key, self._q.incr, params, "one", retry=False)
            if row is not None:
                total, kind, text = row
                if total is not None:
                    return int(total)
                if kind == "l":
                    raise holds_list(key, "incr", "postgres")
                try:
                    value = _loads(text)
                except ValueError:
                    value = None
                if value.__class__ is not int:
                    raise not_an_integer(key, "postgres")
                if not -MAX_INT - 1 <= value <= MAX_INT:
                    raise not_an_integer(key, "postgres", detail=BEYOND_64_BITS)
                if not -MAX_INT - 1 <= value + by <= MAX_INT:
                    raise not_an_integer(key, "postgres", detail="would leave the signed 64-bit range")
            # Nothing was written, and this statement's snapshot does not show why: another
            # writer changed the key between the update and the report. The next one sees it.
            if time.monotonic() >= deadline:
                raise _err.busy_error("incr", key, self._call_timeout)

    async def ping(self) -> None:
        await self._run("ping", None, "SELECT 1", None, "one")

    @property
    def serving(self) -> str | None:
        """``host:port`` of the server that answered this store's last call (``None`` before
        the first, or for a borrowed pool): with several hosts, the current primary."""
        return self._serving

    # --- replay guard ---------------------------------------------------------------

    async def server_time(self) -> float:
        """The server's clock now (``clock_timestamp()``), Unix seconds: the clock of `changed_since`."""
        row = await self._run("server_time", None, self._q.server_time, None, "one")
        return float(row[0])

    async def changed_since(self, keys: Iterable[str], since: float) -> _KeySet:
        """Which of ``keys`` were written, re-expired, appended to, deleted or cleared after ``since``.

        ``since`` is a `server_time` reading. One round trip for any number of keys. A
        key counts as changed when its entry was written after ``since`` (also if it has
        expired since: it was written), when `delete` removed it after ``since``, or when
        the namespace was cleared after ``since``. Deletions and clears are remembered for
        ``idempotency_window``: for an older ``since`` every key is reported (a replay then
        records conflicts instead of overwriting what it cannot see).
        """
        wanted = list(dict.fromkeys(validate_keys(keys)))
        if not wanted:
            return set()
        params = {"keys": wanted, "ns": self.key_prefix, "since": float(since), "window": self._window}
        rows = await self._run("changed_since", None, self._q.changed_since, params, "all")
        return {k for (k,) in rows}

    async def replay_set(self, key: str, value: Any, ttl: float | None, since: float) -> bool:
        """One atomic statement: written and dated ``since`` unless ``key`` changed after ``since``."""
        key = validate_key(key)
        ms = ttl_ms(ttl) if ttl is not None else None
        data = encode(key, value, self.max_value_bytes).decode()
        params = {"ns": self.key_prefix, "key": key, "value": data, "ms": ms, "since": float(since)}
        params["window"] = self._window
        return await self._write("set", key, self._q.replay_set, params) > 0

    async def replay_delete(self, key: str, since: float) -> bool:
        """One atomic statement: deleted (tombstone dated ``since``) unless ``key`` changed after ``since``."""
        key = validate_key(key)
        params = {"ns": self.key_prefix, "key": key, "since": float(since), "window": self._window}
        row = await self._run("delete", key, self._q.replay_delete, params, "one")
        return not (row and row[0])

    async def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (a `server_time` reading; never moved back)."""
        await self._write("clear", None, self._q.mark_cleared, {"ns": self.key_prefix, "at": float(at)})

    async def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` at ``at`` (a `server_time` reading); one round trip."""
        wanted = list(dict.fromkeys(validate_keys(keys)))
        if wanted:
            params = {"keys": wanted, "ns": self.key_prefix, "at": float(at)}
            await self._run("restamp", None, self._q.restamp, params, "rowcount")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready = False
        if self._owns_pool and not self._inherited:  # never close the pool of the parent process
            await self._pool.close()

    # --- list hooks -----------------------------------------------------------------

    async def _extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> int:
        if not items:
            return await self._get_length(key)
        # The items travel as one JSON array text: a text[] parameter would have psycopg escape
        # every quote of every item in Python (measured: ~60 µs of a ~150 µs append). One item
        # travels alone: no array for the server to take apart (see `push_function`).
        data = bytes(items[0]) if len(items) == 1 else b"[" + b",".join(items) + b"]"
        return await self._push("append", key, len(items), data, idempotency_id)

    async def _push(self, op: str, key: str, n: int, data: bytes, idempotency_id: str | None) -> int:
        """Append ``n`` items with one statement (`Queries.push`, a call of the schema's function
        `push_function`): one round trip, atomic. ``data``: the item's JSON text when ``n`` is 1,
        else the items' JSON texts joined as one JSON array.

        The statement looks the idempotency id up (applied within the window: its length
        is the answer and nothing is written), bumps the list's counter row, whose row lock
        queues concurrent appenders so positions stay consecutive and gapless, inserts the
        items and records the id. An expired key counts as absent: an expired list starts
        again empty (its old items are deleted by the same statement).

        Nothing is written when the key holds a live value (`WrongTypeError`), and when
        the row changed between the statement's snapshot and its row lock in a way the
        statement cannot settle (an expired list that another writer touched meanwhile, or
        a racing call with the same id that committed first): the statement then runs again
        and sees the other writer's result. With an id the write is idempotent, so it is
        retried on a broken connection like any other (DESIGN.md §8a); without one it is
        not (it may have committed).
        """
        try:
            text = data.decode()
        except UnicodeDecodeError:  # extend_json's items, as given: JSON text is UTF-8
            raise SerializationError(
                f"the items appended to key {key!r} are not UTF-8 JSON text", key=key, operation=op, backend="postgres"
            ) from None
        if "\x00" in text:  # never in JSON text (orjson writes \u0000); psycopg refuses it in a text parameter
            raise SerializationError(
                f"the items appended to key {key!r} are not JSON: a NUL byte", key=key, operation=op, backend="postgres"
            )
        params = {
            "ns": self.key_prefix,
            "key": key,
            "n": n,
            "items": text,
            "id": idempotency_id,
            "window": self._window,
        }
        deadline = time.monotonic() + self._call_timeout
        while True:
            try:
                row = await self._run(op, key, self._q.push, params, "one", retry=idempotency_id is not None)
            except KVStoreError as exc:
                if isinstance(exc.__cause__, psycopg.errors.InvalidTextRepresentation):
                    # The server's json input refused an item (extend_json's, as given): nothing written.
                    raise SerializationError(
                        f"the items appended to key {key!r} are not JSON: {exc.__cause__.diag.message_primary}",
                        key=key,
                        operation=op,
                        backend="postgres",
                    ) from exc.__cause__
                if not self._lost_id_race(exc.__cause__):
                    raise
            else:
                (result,) = row
                if result is not None and result > 0:
                    return int(result)  # written, or an id applied before: answered as the first time
                if result is not None and result <= _pg.PUSH_MISCOUNT:  # nothing written
                    raise SerializationError(
                        f"the {n} items appended to key {key!r} are not {n} JSON documents "
                        f"(joined, they make a JSON array of {_pg.PUSH_MISCOUNT - result})",
                        key=key,
                        operation=op,
                        backend="postgres",
                    )
                if result == _pg.PUSH_HOLDS_VALUE:
                    raise holds_value(key, op, "postgres")
            # Raced: nothing was written; the next statement's snapshot shows the other writer's work.
            if time.monotonic() >= deadline:
                raise _err.busy_error(op, key, self._call_timeout)

    def _lost_id_race(self, cause: BaseException | None) -> bool:
        """Whether ``cause`` is the unique violation of `Queries.push` recording an id a racing call recorded first."""
        return (
            isinstance(cause, psycopg.errors.UniqueViolation)
            and cause.diag.schema_name == self.schema
            and cause.diag.table_name == f"{self.table_prefix}ids"
        )

    def _watcher(self, key: str, poll_interval: float | None) -> AsyncPostgresWatcher:
        return AsyncPostgresWatcher(self, key, check_poll_interval(poll_interval, 1.0))

    async def _get_range(self, key: str, start: int, end: int) -> list[bytes]:
        # Beyond +-2**62 nothing changes (no list is that long) and bigint arithmetic stays exact.
        params = {"ns": self.key_prefix, "key": key, "start": _clamp(start), "end": _clamp(end)}
        deadline = time.monotonic() + self._call_timeout
        while True:
            rows = await self._run("get_range", key, self._q.range, params, "all")
            if rows:
                return [row[0] for row in rows]
            # No item. Which of: no list, an empty selection, a key holding a value (an error)?
            # Asked in a second snapshot: when what it finds would have given items, the key
            # changed in between, and the range is read again.
            row = await self._run("get_range", key, self._q.length, (self.key_prefix, key), "one")
            if row is None:
                return []
            if row[0] != "l":
                raise holds_value(key, "get_range", "postgres")
            if _empty_selection(int(row[1]), start, end):
                return []
            if time.monotonic() >= deadline:
                raise _err.busy_error("get_range", key, self._call_timeout)

    async def _get_length(self, key: str) -> int:
        row = await self._run("get_length", key, self._q.length, (self.key_prefix, key), "one")
        if row is None:
            return 0
        if row[0] != "l":
            raise holds_value(key, "get_length", "postgres")
        return int(row[1])

    async def _trim(self, key: str, start: int, end: int) -> int:
        params = {"ns": self.key_prefix, "key": key, "start": _clamp(start), "end": _clamp(end)}
        deadline = time.monotonic() + self._call_timeout
        while True:
            # Not idempotent (trim(1, -1) twice removes two items): never retried on a broken connection.
            row = await self._run("trim", key, self._q.trim, params, "one", retry=False)
            if row is None:
                return 0
            kind, raced, removed = row
            if kind != "l":
                raise holds_value(key, "trim", "postgres")
            if not raced:
                if removed and time.monotonic() >= self._next_purge:
                    await self._purge_quietly()
                return int(removed)
            # An append committed between the statement's snapshot and its row lock: nothing
            # was done; the next statement sees it (the lock holder has finished).
            if time.monotonic() >= deadline:
                raise _err.busy_error("trim", key, self._call_timeout)


class AsyncPostgresWatcher:
    """One `watch` of one list: a dedicated connection (never the pool's) that ``LISTEN``s.

    Woken by the append statement's ``NOTIFY`` when its list grows; it re-reads every
    ``interval`` seconds even without a notification, so a lost one can never stall it.
    An append notifies only a watched list (version 6): after ``LISTEN`` (and after every
    reconnect) the watcher registers a row of its own in ``<p>watchers``, live for
    ``WATCHER_TTL`` (30) seconds, refreshed about every 10 s
    from its wait loop and deleted when it closes (an abandoned row just expires). An append
    whose statement began before the registration committed sends nothing: the watcher waits
    for those queued on the list's row lock (`_settle`) before it reads, and the safety-net
    read finds the rest.
    Every read is armed with the store's call deadline (a frozen server is cut by the
    watchdog). A connection that breaks (server restart, network) is dropped and a new one
    is opened, retrying every 0.05 s doubling to 2 s until the server answers; the next
    read then starts again from the watcher's cursor, so nothing is lost or repeated.
    """

    def __init__(self, store: AsyncPostgresDatabase, key: str, interval: float) -> None:
        self._store = store
        self._key = key
        self._interval = interval
        self._tag = key_tag(store.key_prefix, key)
        self._channel = _pg.watch_channel(store.schema, store.table_prefix)
        self._query = _pg.watch_read(store.schema, store.table_prefix)
        self._register, self._unregister = _pg.watcher_statements(store.schema, store.table_prefix)
        self._settle_query = _pg.watcher_settle(store.schema, store.table_prefix)
        self._row = {"ns": store.key_prefix, "key": key, "id": os.urandom(12).hex()}
        self._refresh_at = 0.0
        self._conn: _Conn | None = None
        self._down_since: float | None = None

    async def __aenter__(self) -> AsyncPostgresWatcher:
        # Migrated (the watchers table exists) and reachable now, or BackendUnavailableError.
        await self._store._start()
        with _err.map_errors("watch", self._key, self._store._secret):
            self._conn = await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await self._unregister_quietly(conn)
        finally:
            await conn.close()

    async def _unregister_quietly(self, conn: _Conn) -> None:
        # Best effort, bounded by the call deadline: a row left behind just expires.
        try:
            _wd.current.arm(conn, time.monotonic() + self._store._call_timeout)
            await conn.execute(self._unregister, self._row)
        except psycopg.Error:
            pass
        finally:
            _wd.current.disarm(conn)

    async def _connect(self) -> _Conn:
        store = self._store
        if store._owns_pool:
            conninfo, kwargs = store._conninfo, store._connect_kwargs
        else:  # a borrowed pool: its own connection parameters
            given, extra = store._pool.conninfo, store._pool.kwargs
            if not isinstance(given, str) or not (extra is None or isinstance(extra, dict)):
                raise ConfigError(
                    "watch opens a connection of its own, and this borrowed pool's conninfo or kwargs is a "
                    "callable; build the store from a URL",
                    backend="postgres",
                )
            conninfo, kwargs = given, {**(extra or {}), "autocommit": True}
        conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
        registered = False
        try:
            _wd.current.arm(conn, time.monotonic() + store._call_timeout)
            await conn.execute(f'LISTEN "{self._channel}"')
            # Registered after LISTEN: every notification the row asks for reaches this session.
            await conn.execute(self._register, self._row)
            registered = True
            self._refresh_at = time.monotonic() + _pg.WATCHER_REFRESH
            if _wd.current.disarm(conn):
                raise _err.deadline_error("watch", self._key, store._call_timeout)
            await self._settle(conn)
        except BaseException:
            _wd.current.disarm(conn)
            # Failed or cancelled while settling: the row would make the list's appends notify
            # for WATCHER_TTL. Deleted when the connection can still take a statement.
            if registered and not conn.broken and conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                await self._unregister_quietly(conn)
            await conn.close()
            raise
        return conn

    async def _settle(self, conn: _Conn) -> None:
        """Wait for the appends that were queued on the list's row lock when the watcher registered.

        Such an append's statement began before the registration committed, so it sends no
        ``NOTIFY`` (`_pg.watcher_settle`): once the row is free, each has committed and the
        next read finds its items. Tried without waiting on the server (``NOWAIT``), so no
        server setting bounds it; given up after the call deadline or the poll interval,
        whichever is shorter (a lock held that long: the safety-net read finds them).
        """
        store = self._store
        give_up = time.monotonic() + min(store._call_timeout, self._interval)
        pause = _SETTLE_FIRST
        while True:
            _wd.current.arm(conn, time.monotonic() + store._call_timeout)
            try:
                await conn.execute(self._settle_query, self._row)
                locked = False
            except psycopg.errors.LockNotAvailable:
                locked = True
            except psycopg.errors.InsufficientPrivilege:
                locked = False  # a role that may not lock the row: the safety-net read covers it
            if _wd.current.disarm(conn):
                raise _err.deadline_error("watch", self._key, store._call_timeout)
            if not locked or time.monotonic() >= give_up:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, _SETTLE_MAX)

    def _check_open(self) -> None:
        """`ClosedError` once the store is closed: its watches end with it, as its other calls do."""
        if self._store._closed:
            raise ClosedError(
                f"{type(self._store).__name__} is closed", backend="postgres", operation="watch", key=self._key
            )

    async def _reconnect(self) -> _Conn:
        """A new listening connection, waiting (with backoff) for as long as the server is down."""
        pause = _RECONNECT_FIRST
        while True:
            self._check_open()
            try:
                conn = await self._connect()
            except (psycopg.Error, BackendUnavailableError) as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("kvstore: watch of %r lost PostgreSQL, reconnecting: %s", self._key, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RECONNECT_MAX)
                continue
            if self._down_since is not None:
                logger.info("kvstore: watch of %r reconnected to PostgreSQL", self._key)
                self._down_since = None
            return conn

    async def _drop(self, conn: _Conn) -> None:
        self._conn = None
        _wd.current.disarm(conn)
        await conn.close()

    async def read(self, position: int, limit: int) -> tuple[list[tuple[int, str]], int]:
        store = self._store
        # A position past bigint (``start=2**70``) is past every item: read from the last one there can be.
        params = {"ns": store.key_prefix, "key": self._key, "pos": min(position, 2**63 - 1), "limit": limit}
        while True:
            self._check_open()
            conn = self._conn if self._conn is not None else await self._reconnect()
            self._conn = conn
            _wd.current.arm(conn, time.monotonic() + store._call_timeout)
            try:
                cur = await conn.execute(self._query, params)
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                cut = _wd.current.disarm(conn)
                if not (cut or conn.broken or isinstance(exc, psycopg.OperationalError)):
                    with _err.map_errors("watch", self._key, store._secret):
                        raise
                # Lost (restart, network, frozen server): reconnect and read again from the cursor.
                logger.info("kvstore: watch of %r lost its PostgreSQL connection: %s", self._key, type(exc).__name__)
                await self._drop(conn)
                continue
            if _wd.current.disarm(conn):  # cut as it finished: the socket is gone
                await self._drop(conn)
            break
        end, items = 0, []
        for pos, kind, value in rows:
            if kind == "i":
                items.append((int(pos), value))
            elif kind != "l":
                raise holds_value(self._key, "watch", "postgres")
            else:
                end = int(pos)
        items.sort()
        return items, end

    async def wait(self) -> bool:
        """Wait for a notification of this list, at most the poll interval; always read again
        (after the interval that read is the safety net)."""
        conn = self._conn
        if conn is None:
            return True  # the next read reconnects
        tag = self._tag
        try:
            if time.monotonic() >= self._refresh_at:
                await self._refresh(conn)
                if self._conn is None:
                    return True  # cut by the deadline: the next read reconnects (and registers again)
            # Ends at the first notification of this list, or after the interval (the safety net).
            # A notification that arrived during the refresh is kept in psycopg's backlog.
            gen = conn.notifies(timeout=self._interval)
            try:
                async for note in gen:
                    if note.payload.startswith(tag):
                        break
            finally:
                await gen.aclose()
        except psycopg.Error as exc:
            logger.info("kvstore: watch of %r lost its PostgreSQL connection: %s", self._key, type(exc).__name__)
            await self._drop(conn)
        return True

    async def _refresh(self, conn: _Conn) -> None:
        """Push the watcher's row ``expires_at`` forward (and sweep the list's long-expired rows)."""
        _wd.current.arm(conn, time.monotonic() + self._store._call_timeout)
        try:
            await conn.execute(self._register, self._row)
        finally:
            if _wd.current.disarm(conn):
                await self._drop(conn)
        self._refresh_at = time.monotonic() + _pg.WATCHER_REFRESH
