"""What differs per backend, and only that: its bare-driver floor, its stores, its peers and their data.

Each ``Tier`` subclass opens one backend for one section of the run and declares
its own rows (the floor and the info/variant rows: the bare driver is per
backend by nature) and its peer rows. The kvstore rows and the peers' grid
(get/set/mget 100/mset 100) are written once in ``benchmarks.registry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import orjson

from benchmarks.peers import attempt, reason
from benchmarks.report import Table
from benchmarks.runner import BATCH, HISTORY, KEYS, MESSAGE, SESSION_TTL, Context, chat, msg
from benchmarks.targets import COUNTER_APPEND, MGET_DECODE_FLOOR, NO_COUNTER_APPEND
from kvstore import (
    AsyncChatHistory,
    AsyncMemoryCache,
    AsyncMemoryDatabase,
    AsyncSessionStore,
    ChatHistory,
    MemoryCache,
    MemoryDatabase,
    SessionStore,
)

Op = Callable[[int], object] | Callable[[int], Awaitable[object]]

GRID = ("get", "set", "mget 100", "mset 100")
APPEND, LAST, SESSION = "chat append", f"last 20 of {HISTORY:,} messages", f"session get + touch (TTL {SESSION_TTL} s)"
#: The store operations added in DESIGN.md §1: atomic increment, one-round-trip delete of 100 keys, and a plain
#: ``get(key, touch=ttl)`` (read + slide the TTL, Redis GETEX) beside the session workload above.
INCR, DELETE_MANY, TOUCH = "incr", "delete_many 100", f"store get + touch (TTL {SESSION_TTL} s)"
NEW_OPS = (INCR, DELETE_MANY, TOUCH)
#: 100 point gets issued at once (``asyncio.gather``) against one ``mget`` of the same 100 keys (issue 14: concurrent
#: gets in one event-loop tick should cost about one batch). Async only; on the backends with a network or a file.
GATHER = "100 concurrent gets vs mget 100"
SESSION_DATA = {"user": 7, "cart": ["tea"], "csrf": "x" * 32}
#: The keys every session peer is loaded with.
SESSION_KEYS = [f"sess:{i}" for i in range(100)]
#: The counters of the incr workload and the TTL'd keys of the store get + touch workload (kvstore's side).
COUNTERS = [f"counter:{i}" for i in range(100)]
TOUCH_KEYS = [f"touch:{i}" for i in range(100)]
loads, dumps = orjson.loads, orjson.dumps


@dataclass(frozen=True)
class Peer:
    """An optional peer: ``build(tier)`` once per section on first use, or reported with why it is missing."""

    name: str
    package: str
    build: Callable[[Any], Any]
    #: A section note, added when the peer runs.
    note: str = ""
    close: Callable[[Any, Any], object] | None = None


@dataclass(frozen=True)
class Row:
    """A case a backend declares itself: ``getattr(tier, method)()`` is the op (None: skip the row)."""

    workload: str
    case: str
    role: str  # floor | info | variant
    method: str
    is_async: bool = False


@dataclass(frozen=True)
class PeerRow:
    """A peer's case: ``make(tier, peer)`` is the op; skipped with the peer's reason when it cannot be built."""

    workload: str
    case: str
    peer: Peer
    make: Callable[[Any, Any], Op]
    is_async: bool = False
    #: "peer" (raced: in the summary's verdicts) or "info" (the peer's own reference row, not raced).
    role: str = "peer"


@dataclass(frozen=True)
class Shape:
    """How a peer's API spells the grid: ``ops[workload](tier, peer)`` is the op."""

    is_async: bool
    ops: dict[str, Callable[[Any, Any], Op]]


def grid_peer(peer: Peer, shape: Shape, labels: str) -> list[PeerRow]:
    """A peer's four grid rows; ``labels``: its method names for get, set, mget 100, mset 100 ("get|set|...")."""
    names = labels.split("|")
    return [
        PeerRow(w, f"{peer.name}.{n}", peer, shape.ops[w], shape.is_async) for w, n in zip(GRID, names, strict=True)
    ]


def cache_peers(aiocache_sessions: Peer, aiocache: Peer, litestar: Peer, pkv: Peer) -> list[PeerRow]:
    """The cache peers' rows beyond the grid, the same on every cache backend: touch, incr, delete_many."""
    return [
        *(
            PeerRow(w, f"{aiocache.name} get + expire", aiocache_sessions, touch_get_expire, True)
            for w in (SESSION, TOUCH)
        ),
        *(PeerRow(w, f"{litestar.name}.get(renew_for=)", litestar, touch_renew_for, True) for w in (SESSION, TOUCH)),
        PeerRow(INCR, f"{aiocache.name}.increment", aiocache, incr_increment, True),
        PeerRow(DELETE_MANY, f"{pkv.name}.delete_many", pkv, _pkv_delete_many, True),
    ]


# --- the peers' API shapes, each written once ----------------------------------------------------------


def _lg_mget(_t: Any, p: Any) -> Op:
    from langgraph.store.base import GetOp

    ops = [GetOp(("bench",), k) for k in BATCH]
    return lambda i: p.batch(ops)


def _lg_mset(_t: Any, p: Any) -> Op:
    from langgraph.store.base import PutOp

    return lambda i: p.batch([PutOp(("bench",), k, msg(i + j)) for j, k in enumerate(BATCH)])


def _dc_mset(_t: Any, p: Any) -> Op:
    def mset(i: int) -> object:
        with p.transact():
            for j, k in enumerate(BATCH):
                p.set(k, msg(i + j))
        return None

    return mset


AIOCACHE = Shape(
    True,
    {
        "get": lambda _t, p: lambda i: p.get(KEYS[i % 1000]),
        "set": lambda _t, p: lambda i: p.set(KEYS[i % 1000], msg(i)),
        "mget 100": lambda _t, p: lambda i: p.multi_get(BATCH),
        "mset 100": lambda _t, p: lambda i: p.multi_set([(k, msg(i + j)) for j, k in enumerate(BATCH)]),
    },
)
PKV = Shape(
    True,
    {
        "get": lambda _t, p: lambda i: p.get(KEYS[i % 1000]),
        "set": lambda _t, p: lambda i: p.put(KEYS[i % 1000], msg(i)),
        "mget 100": lambda _t, p: lambda i: p.get_many(BATCH),
        "mset 100": lambda _t, p: lambda i: p.put_many(BATCH, [msg(i + j) for j in range(len(BATCH))]),
    },
)
LANGGRAPH = Shape(
    False,
    {
        "get": lambda _t, p: lambda i: p.get(("bench",), KEYS[i % 1000]),
        "set": lambda _t, p: lambda i: p.put(("bench",), KEYS[i % 1000], msg(i)),
        "mget 100": _lg_mget,
        "mset 100": _lg_mset,
    },
)
LANGGRAPH_LABELS = "get|put|batch(100 GetOp)|batch(100 PutOp)"
DISKCACHE = Shape(
    False,
    {
        "get": lambda _t, p: lambda i: p.get(KEYS[i % 1000]),
        "set": lambda _t, p: lambda i: p.set(KEYS[i % 1000], msg(i)),
        "mget 100": lambda _t, p: lambda i: [p.get(k) for k in BATCH],
        "mset 100": _dc_mset,
    },
)


def touch_get_expire(_t: Any, p: Any) -> Op:
    """aiocache's session touch: GET, then EXPIRE (two calls)."""

    async def touch(i: int) -> object:
        key = SESSION_KEYS[i % 100]
        value = await p.get(key)
        await p.expire(key, SESSION_TTL)
        return value

    return touch


def touch_renew_for(_t: Any, p: Any) -> Op:
    """litestar's session touch: ``get(renew_for=)``, stored bytes decoded like ours."""

    async def touch(i: int) -> object:
        raw = await p.get(SESSION_KEYS[i % 100], renew_for=SESSION_TTL)
        return None if raw is None else loads(raw)

    return touch


def per_round(op: Op, n: int) -> Op:
    """``op`` timed ``n`` times per round instead of a calibrated count (the registry passes it to ``Case.n``)."""
    op.ops_per_round = n  # type: ignore[union-attr]
    return op


def drained(tier: Tier, batches: list[list[str]], delete: Callable[[list[str]], Any]) -> Op:
    """delete_many 100: each call deletes the next pre-loaded batch (every op really removes 100 keys)."""
    pool = iter(batches)

    def op(i: int) -> object:
        batch = next(pool, None)
        if batch is None:
            raise RuntimeError("delete_many pool exhausted: size it with Tier.delete_pool")
        return delete(batch)

    return per_round(op, tier.delete_ops)


def incr_increment(_t: Any, p: Any) -> Op:
    """aiocache's atomic increment (INCRBY on Redis, a dict update in memory)."""
    return lambda i: p.increment(COUNTERS[i % 100])


def _pkv_delete_many(tier: Tier, p: Any) -> Op:
    batches = tier.delete_pool("pkv")
    for batch in batches:
        tier.wait(p.put_many(batch, [MESSAGE] * len(batch)))
    return drained(tier, batches, p.delete_many)


def _loaded(tier: Tier, peer: Any, put: Callable[[Any, str], Any]) -> Any:
    """``peer`` after ``put(peer, key)`` for every session key (awaited when it is a coroutine)."""
    for k in SESSION_KEYS:
        done = put(peer, k)
        if hasattr(done, "__await__"):
            tier.wait(done)
    return peer


def _close_async(tier: Tier, peer: Any) -> None:
    if hasattr(peer, "close"):
        tier.wait(peer.close())


# --- one section's resources ----------------------------------------------------------------------------


class Tier:
    """One backend opened for one section: its stores, its floor's driver, its peers (built on first use)."""

    section: ClassVar[str]
    #: kvstore's grid classes (sync, async) and the SessionStore labels of the session rows.
    classes: ClassVar[tuple[str, str]]
    sessions: ClassVar[tuple[str, str]] = ("SessionStore", "AsyncSessionStore")
    #: Whether the chat workloads (append, last 20) run on this backend.
    chat: ClassVar[bool] = True
    #: Whether the GATHER workload (100 concurrent gets vs one mget 100, async) runs on this backend.
    gather: ClassVar[bool] = False
    rows: ClassVar[tuple[Row, ...]] = ()
    peers: ClassVar[tuple[PeerRow, ...]] = ()
    #: Peers reported but not raced, with the reason.
    uncompared: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.wait, self.tmp, self.tag = ctx, ctx.wait, ctx.tmp, ctx.tag
        self.stack = contextlib.ExitStack()
        #: Per-workload notes printed under its table.
        self.notes: dict[str, list[str]] = {}
        self._peers: dict[str, Any] = {}

    # kvstore's side, the same on every backend: (sync, async) objects.
    stores: tuple[Any, Any]  # the grid's store
    chat_dbs: tuple[Any, Any]  # the database chat histories live on

    def open(self) -> None:
        """Open the stores and the floor's connection and load the grid's 1,000 keys."""

    @cached_property
    def session_stores(self) -> tuple[Any, Any]:
        """kvstore's session stores (sync, async): by default on the grid's database alone."""
        return SessionStore(None, self.stores[0], ttl=SESSION_TTL), AsyncSessionStore(
            None, self.stores[1], ttl=SESSION_TTL
        )

    def fill(self) -> None:
        """Load the ``HISTORY``-message conversation "big" into the floor's own table (kvstore's is loaded already)."""

    def peer(self, spec: Peer) -> Any:
        if spec.name not in self._peers:
            built = attempt(self.ctx.report, self.section, spec.name, spec.package, lambda: spec.build(self))
            self._peers[spec.name] = built
            if built is not None:
                if spec.note:
                    self.ctx.report.note(self.section, spec.note)
                if spec.close is not None:
                    self.stack.callback(self._close_peer, spec, built)
        return self._peers[spec.name]

    def _close_peer(self, spec: Peer, built: Any) -> None:
        assert spec.close is not None
        try:
            spec.close(self, built)
        except Exception as exc:  # closing a peer never hides the results
            print(f"  closing {spec.name}: {reason(exc)}")

    def note(self, workload: str, text: str) -> None:
        self.notes.setdefault(workload, []).append(text)

    @cached_property
    def histories(self) -> tuple[Any, Any]:
        """kvstore's "big" conversation (sync, async) of ``HISTORY`` messages, and the floor's, filled once."""
        started = time.perf_counter()
        big = ChatHistory(self.chat_dbs[0], "big", **self.big_options)
        abig = AsyncChatHistory(self.chat_dbs[1], "big")
        for first in range(0, HISTORY, 10_000):
            chunk = [chat(i) for i in range(first, first + 10_000)]
            big.extend(chunk)
            self.wait(abig.extend(chunk))
        self.fill()
        self.note(LAST, f"histories filled in {time.perf_counter() - started:.1f} s{self.fill_note}")
        return big, abig

    big_options: ClassVar[dict[str, Any]] = {}
    fill_note: ClassVar[str] = "."

    #: delete_many 100: ops per round, fixed rather than calibrated, so that every case deletes from its own pool
    #: of pre-loaded batches (a delete of keys that are gone writes nothing; see ``delete_pool``).
    delete_ops: ClassVar[int] = 50

    def delete_pool(self, label: str) -> list[list[str]]:
        """Batches of 100 fresh key names for one delete_many case: the probe, the warm-up and every round."""
        count = 3 + self.delete_ops // 5 + self.ctx.rounds * self.delete_ops
        return [[f"del:{label}:{b}:{j}" for j in range(100)] for b in range(count)]

    def after(self, workload: str, table: Table) -> None:
        """Called with each workload's table (a tier's own targets)."""

    def finish(self) -> None:
        for name, status in self.uncompared:
            self.ctx.report.peer(self.section, name, status)

    def close(self) -> None:
        self.stack.close()


# --- memory ---------------------------------------------------------------------------------------------


def _build_aiocache_memory(tier: Tier) -> Any:
    from aiocache import SimpleMemoryCache

    peer = SimpleMemoryCache()  # its default: NullSerializer, stores the object itself
    tier.wait(peer.multi_set([(k, MESSAGE) for k in KEYS]))
    return peer


def _build_pkv_memory(tier: Tier) -> Any:
    from key_value.aio.stores.memory import MemoryStore

    peer = MemoryStore()
    tier.wait(peer.put_many(KEYS, [MESSAGE] * len(KEYS)))
    return peer


def _build_langgraph_memory(_tier: Tier) -> Any:
    from langgraph.store.memory import InMemoryStore

    peer = InMemoryStore()
    for k in KEYS:
        peer.put(("bench",), k, MESSAGE)
    return peer


def _build_langchain_memory(_tier: Tier) -> Any:
    from langchain_core.chat_history import InMemoryChatMessageHistory
    from langchain_core.messages import HumanMessage

    return InMemoryChatMessageHistory(), HumanMessage


def _build_aiocache_memory_sessions(tier: Tier) -> Any:
    from aiocache import SimpleMemoryCache

    return _loaded(tier, SimpleMemoryCache(), lambda p, k: p.set(k, SESSION_DATA, ttl=SESSION_TTL))


def _build_litestar_memory(tier: Tier) -> Any:
    from litestar.stores.memory import MemoryStore

    return _loaded(tier, MemoryStore(), lambda p, k: p.set(k, dumps(SESSION_DATA), expires_in=SESSION_TTL))


def _lc_memory_last(_t: Tier, lc: Any) -> Op:
    history, human = lc
    big = history.__class__()
    big.add_messages([human(content=chat(i)["content"]) for i in range(HISTORY)])
    return lambda i: big.messages[-20:]


LC_MEMORY = Peer(
    "LangChain InMemoryChatMessageHistory",
    "langchain-core",
    _build_langchain_memory,
    note="LangChain's InMemoryChatMessageHistory is a Python list of live message objects: "
    "`messages[-20:]` copies 20 references and parses nothing, while kvstore's memory tier stores "
    "encoded bytes (the same bytes as SQLite/Postgres/Redis, so a read never aliases a writer's object) "
    "and validates 20 `ChatMessage` models per `last(20)`.",
)


AIOCACHE_MEMORY = Peer(
    "aiocache SimpleMemoryCache",
    "aiocache",
    _build_aiocache_memory,
    note="aiocache's SimpleMemoryCache keeps the caller's object (NullSerializer, its default); kvstore stores encoded bytes, so a read returns a copy.",
    close=_close_async,
)
AIOCACHE_MEMORY_SESSIONS = Peer(
    "aiocache SimpleMemoryCache (sessions)", "aiocache", _build_aiocache_memory_sessions, close=_close_async
)
LITESTAR_MEMORY = Peer("litestar MemoryStore", "litestar", _build_litestar_memory)
PKV_MEMORY = Peer("py-key-value MemoryStore", "py-key-value-aio[memory]", _build_pkv_memory, close=_close_async)


class MemoryTier(Tier):
    section = "memory"
    classes = ("MemoryCache", "AsyncMemoryCache")
    big_options: ClassVar[dict[str, Any]] = {"model": None}
    fill_note = ""
    rows = (
        Row("get", "dict + orjson.loads (floor)", "floor", "floor_get"),
        Row("set", "dict + orjson.dumps (floor)", "floor", "floor_set"),
        Row("mget 100", "dict + orjson.loads x100 (floor)", "floor", "floor_mget"),
        Row("mget 100", MGET_DECODE_FLOOR, "info", "decode_mget"),
        Row("mset 100", "dict.update + orjson.dumps x100 (floor)", "floor", "floor_mset"),
        Row(APPEND, "list.append + orjson.dumps (floor)", "floor", "floor_append"),
        Row(LAST, "list[-20:] + orjson.loads (floor)", "floor", "floor_last"),
        Row(SESSION, "dict get + expiry check + slide (floor)", "floor", "floor_touch"),
        Row(INCR, "dict + int (floor)", "floor", "floor_incr"),
        Row(INCR, "dict + orjson.loads/dumps (stored bytes, like kvstore)", "info", "bytes_incr"),
        Row(DELETE_MANY, "dict.pop x100 (floor)", "floor", "floor_delete_many"),
        Row(TOUCH, "dict get + expiry check + slide (floor)", "floor", "floor_touch"),
    )
    peers = (
        *grid_peer(AIOCACHE_MEMORY, AIOCACHE, "get|set|mget|mset"),
        *grid_peer(PKV_MEMORY, PKV, "get|set|mget|mset"),
        *grid_peer(
            Peer("LangGraph InMemoryStore", "langgraph-checkpoint", _build_langgraph_memory),
            LANGGRAPH,
            LANGGRAPH_LABELS,
        ),
        PeerRow(
            APPEND,
            "LangChain InMemoryChatMessageHistory.add_message",
            LC_MEMORY,
            lambda _t, lc: lambda i: lc[0].add_message(lc[1](content=chat(i)["content"])),
        ),
        PeerRow(LAST, "LangChain InMemoryChatMessageHistory.messages[-20:]", LC_MEMORY, _lc_memory_last),
        *cache_peers(AIOCACHE_MEMORY_SESSIONS, AIOCACHE_MEMORY, LITESTAR_MEMORY, PKV_MEMORY),
    )
    uncompared = (
        ("py-key-value MemoryStore (sessions)", "not compared: no sliding-expiry call (a touch is a full put)"),
    )

    def open(self) -> None:
        self.stores = cache, acache = MemoryCache(), AsyncMemoryCache()
        cache.mset({k: MESSAGE for k in KEYS})
        self.wait(acache.mset({k: MESSAGE for k in KEYS}))
        self.raw: dict[str, bytes] = {k: dumps(MESSAGE) for k in KEYS}

    @cached_property
    def chat_dbs(self) -> tuple[Any, Any]:
        return MemoryDatabase(max_entries=None), AsyncMemoryDatabase(max_entries=None)

    @cached_property
    def session_stores(self) -> tuple[Any, Any]:
        return (
            SessionStore(MemoryCache(), MemoryDatabase(), ttl=SESSION_TTL),
            AsyncSessionStore(AsyncMemoryCache(), AsyncMemoryDatabase(), ttl=SESSION_TTL),
        )

    def fill(self) -> None:
        self.raw_big = [dumps(chat(i)) for i in range(HISTORY)]

    def floor_get(self) -> Op:
        raw = self.raw
        return lambda i: loads(raw[KEYS[i % 1000]])

    def floor_set(self) -> Op:
        raw = self.raw
        return lambda i: raw.__setitem__(KEYS[i % 1000], dumps(msg(i)))

    def floor_mget(self) -> Op:
        raw = self.raw
        return lambda i: [loads(raw[k]) for k in BATCH]

    def decode_mget(self) -> Op:
        """The least an ``mget`` of stored bytes can cost: one ``orjson.loads`` of the 100 values joined (the
        dict lookups and the join done once, outside the timing), so no per-key work is counted at all."""
        raw = self.raw
        joined = b"[" + b",".join(raw[k] for k in BATCH) + b"]"
        return lambda i: loads(joined)

    def floor_mset(self) -> Op:
        raw = self.raw

        def mset(i: int) -> object:
            raw.update({k: dumps(msg(i + j)) for j, k in enumerate(BATCH)})
            return None

        return mset

    def floor_append(self) -> Op:
        items: list[bytes] = []
        return lambda i: items.append(dumps(chat(i)))

    def floor_last(self) -> Op:
        self.histories  # noqa: B018 - fills the floor's list too
        big = self.raw_big
        return lambda i: [loads(b) for b in big[-20:]]

    def floor_last_raw(self) -> Op:
        self.histories  # noqa: B018 - fills the floor's list too
        big = self.raw_big
        return lambda i: big[-20:]

    def floor_touch(self) -> Op:
        now = time.monotonic
        values = {k: dumps(SESSION_DATA) for k in SESSION_KEYS}
        expiry = dict.fromkeys(values, now() + SESSION_TTL)

        def touch(i: int) -> object:
            key = SESSION_KEYS[i % 100]
            t = now()
            if expiry[key] <= t:
                return None
            expiry[key] = t + SESSION_TTL
            return loads(values[key])

        return touch

    def floor_incr(self) -> Op:
        counters: dict[str, int] = {}

        def incr(i: int) -> int:
            key = COUNTERS[i % 100]
            counters[key] = value = counters.get(key, 0) + 1
            return value

        return incr

    def bytes_incr(self) -> Op:
        counters: dict[str, bytes] = {}

        def incr(i: int) -> int:
            key = COUNTERS[i % 100]
            old = counters.get(key)
            value = (0 if old is None else loads(old)) + 1
            counters[key] = dumps(value)
            return value

        return incr

    def floor_delete_many(self) -> Op:
        batches = self.delete_pool("raw")
        raw = {k: dumps(MESSAGE) for batch in batches for k in batch}

        def delete(batch: list[str]) -> int:
            pop, missing = raw.pop, None
            return sum(pop(k, missing) is not missing for k in batch)

        return drained(self, batches, delete)


# --- SQLite ---------------------------------------------------------------------------------------------

#: The floor's statements on kvstore's own table (the schema is made by kvstore; the SQL is ours).
SQLITE_SET = (
    "INSERT INTO kvstore_keys (ns, key, kind, value, head, tail, expires_at) VALUES (?, ?, 0, ?, 0, 0, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET kind = 0, value = excluded.value, head = 0, tail = 0,"
    " expires_at = excluded.expires_at"
)
SQLITE_GET = "SELECT value FROM kvstore_keys WHERE ns = ? AND key = ?"
SQLITE_MGET = "SELECT key, value FROM kvstore_keys WHERE ns = ? AND key IN (SELECT value FROM json_each(?))"
#: incr: one upsert (a missing key counts from 0), the integer's JSON text kept as a BLOB like kvstore's values.
SQLITE_INCR = (
    "INSERT INTO kvstore_keys (ns, key, kind, value, head, tail, expires_at) VALUES ('', ?1, 0, CAST(?2 AS BLOB), 0, 0,"
    " NULL) ON CONFLICT (ns, key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + ?2 AS BLOB) RETURNING value"
)
SQLITE_DELETE_MANY = "DELETE FROM kvstore_keys WHERE ns = '' AND key IN (SELECT value FROM json_each(?))"
SQLITE_GET_TOUCH = (
    "UPDATE kvstore_keys SET expires_at = ?1 WHERE ns = '' AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)"
    " RETURNING value"
)


#: The event-loop stall probe (SqliteTier.loop_stall): how long the other connection holds the write lock (s),
#: and the async gets and sets made meanwhile (the sets wait for the lock).
STALL_HOLD, STALL_GETS, STALL_SETS = 0.3, 200, 5


def _wal(conn: Any) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def _build_diskcache(tier: Tier) -> Any:
    import diskcache

    peer = diskcache.Cache(str(tier.tmp / "diskcache"))  # defaults: WAL, synchronous=NORMAL, pickle
    for k in KEYS:
        peer.set(k, MESSAGE)
    return peer


def _build_langgraph_sqlite(tier: Tier) -> Any:
    from langgraph.store.sqlite import SqliteStore

    conn = sqlite3.connect(str(tier.tmp / "langgraph.db"), check_same_thread=False, isolation_level=None)
    _wal(conn)
    store = SqliteStore(conn)
    store.setup()
    for k in KEYS:
        store.put(("bench",), k, MESSAGE)
    return store


def _build_langchain_sqlite(tier: Tier) -> Any:
    from langchain_core.messages import HumanMessage
    from sqlalchemy import create_engine, event

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langchain_community.chat_message_histories import SQLChatMessageHistory

    engine = create_engine(f"sqlite:///{tier.tmp / 'langchain.db'}")
    event.listen(engine, "connect", lambda dbapi_conn, _record: _wal(dbapi_conn))
    append = SQLChatMessageHistory(session_id="append", connection=engine, table_name="bench_message_store")
    big = SQLChatMessageHistory(session_id="big", connection=engine, table_name="bench_message_store")
    return engine, append, big, HumanMessage


def _lc_template(human: Any) -> str:
    from langchain_core.messages import message_to_dict

    return json.dumps(message_to_dict(human(content="What is the weather in Lisbon tomorrow? #N")))


def _lc_sqlite_last(tier: Tier, lc: Any) -> Op:
    _engine, _append, big, human = lc
    raw = sqlite3.connect(str(tier.tmp / "langchain.db"), isolation_level=None)
    raw.execute("BEGIN")
    template = _lc_template(human)
    raw.executemany(  # the rows LangChain's own add_messages writes, bulk-loaded
        "INSERT INTO bench_message_store (session_id, message) VALUES ('big', ?)",
        ((template.replace("#N", f"#{i}"),) for i in range(HISTORY)),
    )
    raw.execute("COMMIT")
    raw.close()
    assert len(big.messages) == HISTORY
    tier.note(
        LAST,
        "LangChain's `messages` reads and parses the whole conversation (it has no limit), so its cost grows"
        " with the history; kvstore reads 20 rows by index.",
    )
    return lambda i: big.messages[-20:]


def _dc_touch(_t: Tier, dc: Any) -> Op:
    for k in SESSION_KEYS:
        dc.set(k, SESSION_DATA, expire=SESSION_TTL)

    def touch(i: int) -> object:
        key = SESSION_KEYS[i % 100]
        value = dc.get(key)
        dc.touch(key, expire=SESSION_TTL)
        return value

    return touch


DISKCACHE_PEER = Peer(
    "diskcache Cache",
    "diskcache",
    _build_diskcache,
    note="diskcache pickles values (its default); kvstore and the floor store orjson.",
    close=lambda _t, p: p.close(),
)
LC_SQLITE = Peer(
    "LangChain SQLChatMessageHistory",
    "langchain-community + SQLAlchemy",
    _build_langchain_sqlite,
    close=lambda _t, lc: lc[0].dispose(),
)


class SqliteTier(Tier):
    """Both kvstore and the raw floor run WAL + synchronous=NORMAL on their own files; the peers get the same
    two settings (diskcache has them by default; LangGraph's and LangChain's connections are set to them here)."""

    section = "sqlite"
    classes = ("SqliteDatabase", "AsyncSqliteDatabase")
    sessions = ("SessionStore(db alone)", "AsyncSessionStore(db alone)")
    rows = (
        Row("get", "raw apsw SELECT + orjson.loads (floor)", "floor", "floor_get"),
        Row("set", "raw apsw autocommit upsert (floor)", "floor", "floor_set"),
        Row("mget 100", "raw apsw SELECT ... IN json_each (floor)", "floor", "floor_mget"),
        Row("mset 100", "raw apsw executemany, 1 transaction (floor)", "floor", "floor_mset"),
        Row(APPEND, "raw apsw INSERT, autocommit (floor)", "floor", "floor_append"),
        Row(LAST, "raw apsw ORDER BY seq DESC LIMIT 20 (floor)", "floor", "floor_last"),
        Row(SESSION, "raw apsw SELECT + UPDATE expires_at (floor)", "floor", "floor_touch"),
        Row(
            SESSION,
            "kvstore SessionStore(MemoryCache over SQLite).get(touch=True)",
            "variant",
            "cached_touch",
        ),
        Row(INCR, "raw apsw upsert ... RETURNING (floor)", "floor", "floor_incr"),
        Row(DELETE_MANY, "raw apsw DELETE ... IN json_each (floor)", "floor", "floor_delete_many"),
        Row(TOUCH, "raw apsw UPDATE expires_at ... RETURNING (floor)", "floor", "floor_get_touch"),
        Row(TOUCH, "raw apsw SELECT + UPDATE expires_at (2 statements)", "info", "floor_touch"),
        Row(GATHER, "raw apsw SELECT ... IN json_each, 100 keys (floor)", "floor", "floor_mget"),
    )
    gather = True
    delete_ops = 40
    peers = (
        *grid_peer(DISKCACHE_PEER, DISKCACHE, "get|set|get x100|set x100 in transact()"),
        *grid_peer(
            Peer("LangGraph SqliteStore", "langgraph-checkpoint-sqlite", _build_langgraph_sqlite),
            LANGGRAPH,
            LANGGRAPH_LABELS,
        ),
        PeerRow(
            APPEND,
            "LangChain SQLChatMessageHistory.add_message",
            LC_SQLITE,
            lambda _t, lc: lambda i: lc[1].add_message(lc[3](content=chat(i)["content"])),
        ),
        PeerRow(LAST, "LangChain SQLChatMessageHistory.messages[-20:]", LC_SQLITE, _lc_sqlite_last),
        PeerRow(SESSION, "diskcache Cache.get + touch", DISKCACHE_PEER, _dc_touch),
        PeerRow(INCR, "diskcache Cache.incr", DISKCACHE_PEER, lambda _t, p: lambda i: p.incr(COUNTERS[i % 100])),
        PeerRow(TOUCH, "diskcache Cache.get + touch", DISKCACHE_PEER, _dc_touch),
    )

    def open(self) -> None:
        import apsw

        from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase

        self.stores = db, adb = SqliteDatabase(self.tmp / "kv.db"), AsyncSqliteDatabase(self.tmp / "akv.db")
        self.chat_dbs = self.stores
        self.stack.callback(lambda: (db.clear(), self.wait(adb.clear()), db.close(), self.wait(adb.aclose())))
        SqliteDatabase(self.tmp / "raw.db").close()  # kvstore's schema for the floor
        self.conn = conn = apsw.Connection(str(self.tmp / "raw.db"))
        self.stack.callback(conn.close)
        conn.execute("PRAGMA journal_mode=WAL").fetchall()  # one PRAGMA per call, read back (BENCHMARKS.md)
        conn.execute("PRAGMA synchronous=NORMAL").fetchall()
        assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchall()[0][0] == 1
        self.cur = conn.cursor()
        db.mset({k: MESSAGE for k in KEYS})
        self.wait(adb.mset({k: MESSAGE for k in KEYS}))
        with conn:
            self.cur.executemany(SQLITE_SET, [("", k, dumps(MESSAGE), None) for k in KEYS])
        conn.execute(
            "CREATE TABLE bench_messages (conv TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL,"
            " PRIMARY KEY (conv, seq)) WITHOUT ROWID"
        )

    def fill(self) -> None:
        for first in range(0, HISTORY, 10_000):
            with self.conn:
                self.cur.executemany(
                    "INSERT INTO bench_messages VALUES ('big', ?, ?)",
                    [(i, dumps(chat(i))) for i in range(first, first + 10_000)],
                )
        self.conn.execute("ANALYZE")

    def floor_get(self) -> Op:
        cur = self.cur

        def get(i: int) -> object:
            rows = cur.execute(SQLITE_GET, ("", KEYS[i % 1000])).fetchall()
            return loads(rows[0][0]) if rows else None

        return get

    def floor_set(self) -> Op:
        cur = self.cur
        return lambda i: cur.execute(SQLITE_SET, ("", KEYS[i % 1000], dumps(msg(i)), None))

    def floor_mget(self) -> Op:
        cur, batch_json = self.cur, dumps(BATCH).decode()

        def mget(i: int) -> object:
            found = dict(cur.execute(SQLITE_MGET, ("", batch_json)))
            return [loads(found[k]) if k in found else None for k in BATCH]

        return mget

    def floor_mset(self) -> Op:
        conn, cur = self.conn, self.cur

        def mset(i: int) -> object:
            with conn:
                cur.executemany(SQLITE_SET, [("", k, dumps(msg(i + j)), None) for j, k in enumerate(BATCH)])
            return None

        return mset

    def floor_append(self) -> Op:
        cur, seq = self.cur, [0]

        def append(i: int) -> object:
            seq[0] += 1
            return cur.execute("INSERT INTO bench_messages VALUES ('append', ?, ?)", (seq[0], dumps(chat(i))))

        return append

    def floor_last(self) -> Op:
        self.histories  # noqa: B018 - fills the floor's table too
        cur = self.cur
        query = "SELECT value FROM bench_messages WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
        return lambda i: [loads(r[0]) for r in cur.execute(query).fetchall()][::-1]

    def floor_last_raw(self) -> Op:
        self.histories  # noqa: B018 - fills the floor's table too
        cur = self.cur
        query = "SELECT value FROM bench_messages WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
        return lambda i: [r[0] for r in cur.execute(query).fetchall()][::-1]

    def floor_touch(self) -> Op:
        conn, cur = self.conn, self.cur
        expires = int(time.time() * 1000) + SESSION_TTL * 1000
        with conn:
            cur.executemany(SQLITE_SET, [("", k, dumps(SESSION_DATA), expires) for k in SESSION_KEYS])

        def touch(i: int) -> object:
            key = SESSION_KEYS[i % 100]
            now = int(time.time() * 1000)
            rows = cur.execute(
                "SELECT value, expires_at FROM kvstore_keys WHERE ns = '' AND key = ?", (key,)
            ).fetchall()
            if not rows or (rows[0][1] is not None and rows[0][1] <= now):
                return None
            cur.execute(
                "UPDATE kvstore_keys SET expires_at = ? WHERE ns = '' AND key = ?", (now + SESSION_TTL * 1000, key)
            )
            return loads(rows[0][0])

        return touch

    def floor_incr(self) -> Op:
        cur = self.cur
        return lambda i: int(cur.execute(SQLITE_INCR, (COUNTERS[i % 100], 1)).fetchall()[0][0])

    def floor_delete_many(self) -> Op:
        conn, cur = self.conn, self.cur
        batches = self.delete_pool("raw")
        with conn:
            cur.executemany(SQLITE_SET, [("", k, dumps(MESSAGE), None) for batch in batches for k in batch])

        def delete(batch: list[str]) -> int:
            cur.execute(SQLITE_DELETE_MANY, (dumps(batch).decode(),))
            return conn.changes()

        return drained(self, batches, delete)

    def floor_get_touch(self) -> Op:
        conn, cur = self.conn, self.cur
        expires = int(time.time() * 1000) + SESSION_TTL * 1000
        with conn:
            cur.executemany(SQLITE_SET, [("", k, dumps(SESSION_DATA), expires) for k in SESSION_KEYS])

        def touch(i: int) -> object:
            now = int(time.time() * 1000)
            rows = cur.execute(SQLITE_GET_TOUCH, (now + SESSION_TTL * 1000, SESSION_KEYS[i % 100], now)).fetchall()
            return loads(rows[0][0]) if rows else None

        return touch

    def cached_touch(self) -> Op:
        store = SessionStore(MemoryCache(), self.stores[0], ttl=SESSION_TTL)
        sids = [store.create(SESSION_DATA) for _ in range(100)]
        self.note(
            SESSION,
            "kvstore's main rows use the database alone (every touch writes the row); the variant puts a memory "
            "cache in front, where a touch within `touch_interval` slides only the cached copy.",
        )
        return lambda i: store.get(sids[i % 100], touch=True)

    def finish(self) -> None:
        super().finish()
        try:
            worst, idle = self.loop_stall()
        except Exception as exc:  # reported, never fatal to the section's tables
            self.ctx.report.note(self.section, f"event-loop stall probe failed: {reason(exc)}")
            return
        self.ctx.report.stalls["sqlite"] = (worst, idle)
        text = (
            f"event loop with another connection holding the write lock: worst stall {worst:.1f} ms during "
            f"{STALL_GETS} async gets and {STALL_SETS} async sets (the idle loop's worst gap in the same run: "
            f"{idle:.1f} ms; target < 20 ms)."
        )
        self.ctx.report.note(self.section, text)
        print(f"  {text}")

    def loop_stall(self) -> tuple[float, float]:
        """Worst gap (ms) of a 1 ms ticker while AsyncSqliteDatabase gets and sets run with another connection
        holding the file's write lock (released after ``STALL_HOLD`` s), and the idle ticker's worst gap."""
        import apsw

        adb, holder = self.stores[1], apsw.Connection(str(self.tmp / "akv.db"))
        clock = time.perf_counter

        async def ticker(seconds: float, gaps: list[float]) -> None:
            last, end = clock(), clock() + seconds
            while clock() < end:
                await asyncio.sleep(0.001)
                now = clock()
                gaps.append(now - last - 0.001)
                last = now

        async def probe() -> tuple[float, float]:
            idle: list[float] = []
            await ticker(STALL_HOLD, idle)
            busy: list[float] = []
            holder.execute("BEGIN IMMEDIATE")
            held = clock()
            # Released from another thread: a store that blocked the loop on the lock cannot keep it held.
            release = threading.Timer(STALL_HOLD, holder.execute, ("COMMIT",))
            release.start()
            try:
                tick = asyncio.ensure_future(ticker(STALL_HOLD * 1.5, busy))
                for i in range(STALL_GETS):
                    await adb.get(KEYS[i % 1000])
                await asyncio.gather(*(adb.set(f"stall:{j}", msg(j)) for j in range(STALL_SETS)))
                if clock() - held < STALL_HOLD * 0.8:  # the probe must really have made the writers wait
                    raise RuntimeError("the async sets did not wait for the held write lock")
                await tick
            finally:
                release.cancel()
                release.join()
                if holder.in_transaction:
                    holder.execute("COMMIT")
            return max(busy) * 1000, max(idle) * 1000

        try:
            result: tuple[float, float] = self.wait(probe())
        finally:
            holder.close()
        return result

    def after(self, workload: str, table: Table) -> None:
        lc = [v for v in table.verdicts() if workload == LAST and not v.ours.is_async]
        if lc:
            target = "OK" if lc[0].ratio >= 50 else "MISS"
            self.ctx.report.note(
                self.section,
                f"last 20 of {HISTORY:,}: kvstore is {lc[0].ratio:,.0f}x LangChain's SQL chat history (target >= 50x: {target}).",
            )
            print(f"  target: kvstore last(20) >= 50x LangChain SQLChatMessageHistory: {lc[0].ratio:,.0f}x {target}")


# --- PostgreSQL -----------------------------------------------------------------------------------------


def _peer_conninfo(tier: Tier) -> dict[str, Any]:
    return {"autocommit": True, "prepare_threshold": 0, "options": f"-c search_path={tier.tag}peers"}


def _build_langgraph_postgres(tier: Tier) -> Any:
    import psycopg
    from langgraph.store.postgres import PostgresStore
    from psycopg.rows import dict_row

    conn = psycopg.connect(tier.ctx.postgres_url, row_factory=dict_row, **_peer_conninfo(tier))
    store = PostgresStore(conn)  # type: ignore[arg-type]
    store.setup()
    for k in KEYS:
        store.put(("bench",), k, MESSAGE)
    return store


def _build_langchain_postgres(tier: Tier) -> Any:
    import psycopg
    from langchain_core.messages import HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    conn = psycopg.connect(tier.ctx.postgres_url, **_peer_conninfo(tier))
    PostgresChatMessageHistory.create_tables(conn, "bench_chat")
    append = PostgresChatMessageHistory("bench_chat", str(uuid.uuid4()), sync_connection=conn)
    big_id = str(uuid.uuid4())
    big = PostgresChatMessageHistory("bench_chat", big_id, sync_connection=conn)
    return conn, append, big, big_id, HumanMessage


def _lc_postgres_last(tier: Tier, lc: Any) -> Op:
    conn, _append, big, big_id, human = lc
    conn.execute(  # the rows add_messages writes, bulk-loaded
        "INSERT INTO bench_chat (session_id, message) "
        "SELECT %s::uuid, replace(%s, '#N', '#' || g)::jsonb FROM generate_series(1, %s) g",
        (big_id, _lc_template(human), HISTORY),
    )
    conn.execute("ANALYZE bench_chat")
    assert len(big.get_messages()) == HISTORY
    tier.note(
        LAST, "langchain-postgres reads and parses the whole conversation (no limit); kvstore reads 20 rows by index."
    )
    return lambda i: big.get_messages()[-20:]


def _langgraph_postgres_touch(_t: Tier, store: Any) -> Op:
    from langgraph.store.postgres import PostgresStore

    sessions = PostgresStore(store.conn, ttl={"default_ttl": SESSION_TTL / 60, "refresh_on_read": True})
    for k in SESSION_KEYS:
        sessions.put(("sessions",), k, SESSION_DATA)
    return lambda i: sessions.get(("sessions",), SESSION_KEYS[i % 100], refresh_ttl=True)


def _build_langgraph_apostgres(tier: Tier) -> Any:
    """LangGraph's AsyncPostgresStore on one autocommit connection (kvstore's async store has a pool of one too)."""

    async def build() -> Any:
        import psycopg
        from langgraph.store.base import PutOp
        from langgraph.store.postgres import AsyncPostgresStore
        from psycopg.rows import dict_row

        conn = await psycopg.AsyncConnection.connect(
            tier.ctx.postgres_url, row_factory=dict_row, **_peer_conninfo(tier)
        )
        store = AsyncPostgresStore(conn)  # type: ignore[arg-type]  # its background batcher needs the running loop
        await store.setup()
        await store.abatch([PutOp(("bench_async",), k, MESSAGE) for k in KEYS])
        return store

    return tier.wait(build())


def _close_langgraph_apostgres(tier: Tier, store: Any) -> None:
    task = getattr(store, "_task", None)
    if task is not None:
        task.cancel()
    tier.wait(store.conn.close())


def _lg_gather(_t: Tier, store: Any) -> Op:
    async def op(i: int) -> object:
        return await asyncio.gather(*[store.aget(("bench_async",), k) for k in BATCH])

    return op


def _lg_abatch(_t: Tier, store: Any) -> Op:
    from langgraph.store.base import GetOp

    ops = [GetOp(("bench_async",), k) for k in BATCH]
    return lambda i: store.abatch(ops)


LG_APOSTGRES = Peer(
    "LangGraph AsyncPostgresStore",
    "langgraph-checkpoint-postgres",
    _build_langgraph_apostgres,
    note="LangGraph's AsyncPostgresStore queues every `aget` for a background task that runs what is queued as one "
    "`abatch`: its gather row is its own auto-batching, its abatch row the same 100 gets as one call.",
    close=_close_langgraph_apostgres,
)
LG_POSTGRES = Peer(
    "LangGraph PostgresStore",
    "langgraph-checkpoint-postgres",
    _build_langgraph_postgres,
    close=lambda _t, p: p.conn.close(),
)
LC_POSTGRES = Peer(
    "langchain-postgres PostgresChatMessageHistory",
    "langchain-postgres",
    _build_langchain_postgres,
    close=lambda _t, lc: lc[0].close(),
)


class PostgresTier(Tier):
    """kvstore's tables live in schema ``bench_<pid>_kv``, the peers' in ``bench_<pid>_peers`` (both dropped at
    the end). The floor is one autocommit psycopg connection running the same statement shapes on kvstore's
    own table (a plain messages table for the chat rows), orjson on both ends."""

    section = "postgres"
    classes = ("PostgresDatabase", "AsyncPostgresDatabase")
    sessions = ("SessionStore(db alone)", "AsyncSessionStore(db alone)")
    fill_note = ", then ANALYZE."
    rows = (
        Row("get", "raw psycopg SELECT + orjson.loads (floor)", "floor", "floor_get"),
        Row("set", "raw psycopg upsert (floor)", "floor", "floor_set"),
        Row("mget 100", "raw psycopg key = ANY(...) (floor)", "floor", "floor_mget"),
        Row("mset 100", "raw psycopg unnest upsert (floor)", "floor", "floor_mset"),
        Row(APPEND, "raw psycopg INSERT (floor)", "floor", "floor_append"),
        Row(
            APPEND,
            "raw psycopg INSERT into kvstore's items table (its index, no checks)",
            "info",
            "items_append",
        ),
        Row(APPEND, COUNTER_APPEND, "info", "counter_append"),
        Row(APPEND, NO_COUNTER_APPEND, "info", "no_counter_append"),
        Row(LAST, "raw psycopg ORDER BY seq DESC LIMIT 20 (floor)", "floor", "floor_last"),
        Row(SESSION, "raw psycopg SELECT + UPDATE expires_at (floor)", "floor", "floor_touch"),
        Row(SESSION, "raw psycopg UPDATE ... RETURNING (1 round trip)", "info", "touch_returning"),
        Row(INCR, "raw psycopg upsert ... RETURNING (floor)", "floor", "floor_incr"),
        Row(DELETE_MANY, "raw psycopg DELETE ... key = ANY(...) (floor)", "floor", "floor_delete_many"),
        Row(TOUCH, "raw psycopg UPDATE expires_at ... RETURNING (floor)", "floor", "touch_returning"),
        Row(TOUCH, "raw psycopg SELECT + UPDATE expires_at (2 round trips)", "info", "floor_touch"),
        Row(GATHER, "raw psycopg AsyncConnection key = ANY(...) (floor)", "floor", "async_floor_mget", is_async=True),
    )
    gather = True
    delete_ops = 30
    peers = (
        *grid_peer(LG_POSTGRES, LANGGRAPH, LANGGRAPH_LABELS),
        PeerRow(
            APPEND,
            "langchain-postgres PostgresChatMessageHistory.add_messages([m])",
            LC_POSTGRES,
            lambda _t, lc: lambda i: lc[1].add_messages([lc[4](content=chat(i)["content"])]),
        ),
        PeerRow(
            LAST, "langchain-postgres PostgresChatMessageHistory.get_messages()[-20:]", LC_POSTGRES, _lc_postgres_last
        ),
        *(
            PeerRow(w, "LangGraph PostgresStore(ttl refresh_on_read).get", LG_POSTGRES, _langgraph_postgres_touch)
            for w in (SESSION, TOUCH)
        ),
        PeerRow(GATHER, "LangGraph AsyncPostgresStore: asyncio.gather(100 x aget)", LG_APOSTGRES, _lg_gather, True),
        PeerRow(GATHER, "LangGraph AsyncPostgresStore.abatch(100 GetOp)", LG_APOSTGRES, _lg_abatch, True, "info"),
    )

    def open(self) -> None:
        import psycopg

        from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

        url, kv = self.ctx.postgres_url, f"{self.tag}kv"
        admin = psycopg.connect(url, autocommit=True)
        self.stack.callback(admin.close)
        for schema in (kv, f"{self.tag}peers"):
            self.stack.callback(admin.execute, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA IF NOT EXISTS {self.tag}peers")
        db = PostgresDatabase(url, key_prefix="s:", schema_name=kv, min_size=1, max_size=1)
        adb = AsyncPostgresDatabase(url, key_prefix="a:", schema_name=kv, min_size=1, max_size=1)
        self.stores = self.chat_dbs = db, adb
        db.open()
        self.stack.callback(db.close)
        self.wait(adb.open())
        self.stack.callback(lambda: self.wait(adb.aclose()))
        self.conn = conn = psycopg.connect(url, autocommit=True)
        self.stack.callback(conn.close)
        self.t, self.m = t, m = f"{kv}.kvstore_entries", f"{kv}.bench_messages"
        db.mset({k: MESSAGE for k in KEYS})
        self.wait(adb.mset({k: MESSAGE for k in KEYS}))
        conn.execute(
            f"INSERT INTO {t} (ns, key, value) SELECT 'raw', k, %s::json FROM unnest(%s::text[]) k",
            (dumps(MESSAGE).decode(), KEYS),
        )
        conn.execute(f"ANALYZE {t}")
        conn.execute(
            f"CREATE TABLE {m} (conv text NOT NULL, seq bigint NOT NULL, value json NOT NULL, PRIMARY KEY (conv, seq))"
        )

    def fill(self) -> None:
        self.conn.execute(
            f"INSERT INTO {self.m} SELECT 'big', g, json_build_object('role', 'user', 'content', 'message #' || g) "
            "FROM generate_series(0, %s) g",
            (HISTORY - 1,),
        )
        for table in (self.m, f"{self.tag}kv.kvstore_list_items", self.t):
            self.conn.execute(f"ANALYZE {table}")

    @cached_property
    def aconn(self) -> Any:
        """The async floor's one autocommit connection (opened on first use)."""
        import psycopg

        conn = self.wait(psycopg.AsyncConnection.connect(self.ctx.postgres_url, autocommit=True))
        self.stack.callback(lambda: self.wait(conn.close()))
        return conn

    def async_floor_mget(self) -> Op:
        conn, query = self.aconn, f"SELECT key, value::text FROM {self.t} WHERE ns = 'raw' AND key = ANY(%s::text[])"

        async def mget(i: int) -> object:
            cur = await conn.execute(query, (BATCH,))
            rows = dict(await cur.fetchall())
            return [loads(rows[k]) if k in rows else None for k in BATCH]

        return mget

    def floor_get(self) -> Op:
        conn, query = self.conn, f"SELECT value::text FROM {self.t} WHERE ns = 'raw' AND key = %s"

        def get(i: int) -> object:
            row = conn.execute(query, (KEYS[i % 1000],)).fetchone()
            return loads(row[0]) if row else None

        return get

    def floor_set(self) -> Op:
        conn = self.conn
        query = (
            f"INSERT INTO {self.t} (ns, key, value) VALUES ('raw', %s, %s::json) "
            "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
        )
        return lambda i: conn.execute(query, (KEYS[i % 1000], dumps(msg(i)).decode()))

    def floor_mget(self) -> Op:
        conn, query = self.conn, f"SELECT key, value::text FROM {self.t} WHERE ns = 'raw' AND key = ANY(%s::text[])"

        def mget(i: int) -> object:
            rows = dict(conn.execute(query, (BATCH,)).fetchall())
            return [loads(rows[k]) if k in rows else None for k in BATCH]

        return mget

    def floor_mset(self) -> Op:
        conn = self.conn
        query = (
            f"INSERT INTO {self.t} (ns, key, value) SELECT 'raw', k, v::json FROM unnest(%s::text[], %s::text[]) "
            "AS u(k, v) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
        )
        return lambda i: conn.execute(query, (BATCH, [dumps(msg(i + j)).decode() for j in range(len(BATCH))]))

    def floor_append(self) -> Op:
        conn, seq, query = self.conn, [0], f"INSERT INTO {self.m} VALUES ('append', %s, %s::json)"

        def append(i: int) -> object:
            seq[0] += 1
            return conn.execute(query, (seq[0], dumps(chat(i)).decode()))

        return append

    def items_append(self) -> Op:
        """A bare INSERT into kvstore's own items table: its key and its index, no checks."""
        conn, seq = self.conn, [0]
        query = (
            f"INSERT INTO {self.tag}kv.kvstore_list_items (ns, key, seq, value) VALUES ('raw', 'append', %s, %s::json)"
        )

        def append(i: int) -> object:
            seq[0] += 1
            return conn.execute(query, (seq[0], dumps(chat(i)).decode()))

        return append

    def _design_append(self, key: str, query: str) -> Op:
        """Appends to the list ``key`` (ns 'raw') of kvstore's own tables by ``query`` (parameter: the item)."""
        self.conn.execute(
            f"INSERT INTO {self.tag}kv.kvstore_entries (ns, key, kind, length) VALUES ('raw', %s, 'l', 0) "
            "ON CONFLICT (ns, key) DO NOTHING",
            (key,),
        )
        conn = self.conn
        return lambda i: conn.execute(query, (dumps(chat(i)).decode(),))

    def counter_append(self) -> Op:
        """The least any append keeping a counter row can do: bump it and insert the item, one statement."""
        kv = f"{self.tag}kv"
        return self._design_append(
            "counter",
            f"WITH up AS (UPDATE {kv}.kvstore_entries SET length = length + 1, modified_at = now() "
            "WHERE ns = 'raw' AND key = 'counter' AND kind = 'l' RETURNING head + length AS seq) "
            f"INSERT INTO {kv}.kvstore_list_items (ns, key, seq, value) SELECT 'raw', 'counter', seq, %s::json FROM up",
        )

    def no_counter_append(self) -> Op:
        """An append with no counter row: read the entry (kind, TTL), the next position from the items' own
        index (max + 1), insert; no row lock (racing appends would need a retry on the unique key)."""
        kv = f"{self.tag}kv"
        return self._design_append(
            "nocounter",
            f"INSERT INTO {kv}.kvstore_list_items (ns, key, seq, value) SELECT 'raw', 'nocounter', "
            f"coalesce((SELECT max(seq) FROM {kv}.kvstore_list_items WHERE ns = 'raw' AND key = 'nocounter'), e.head) "
            f"+ 1, %s::json FROM {kv}.kvstore_entries e WHERE e.ns = 'raw' AND e.key = 'nocounter' AND e.kind = 'l' "
            "AND (e.expires_at IS NULL OR e.expires_at > now())",
        )

    def floor_last(self) -> Op:
        self.histories  # noqa: B018 - fills the floor's table too
        conn, query = self.conn, f"SELECT value::text FROM {self.m} WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
        return lambda i: [loads(r[0]) for r in conn.execute(query).fetchall()][::-1]

    def floor_last_raw(self) -> Op:
        self.histories  # noqa: B018 - fills the floor's table too
        conn, query = self.conn, f"SELECT value::text FROM {self.m} WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
        return lambda i: [r[0] for r in conn.execute(query).fetchall()][::-1]

    @cached_property
    def raw_sessions(self) -> list[str]:
        """The floor's session rows (SESSION_KEYS under ns 'raw'), inserted once for the touch rows."""
        self.conn.execute(
            f"INSERT INTO {self.t} (ns, key, value, expires_at) SELECT 'raw', k, %s::json, "
            "now() + make_interval(secs => %s) FROM unnest(%s::text[]) k",
            (dumps(SESSION_DATA).decode(), SESSION_TTL, SESSION_KEYS),
        )
        return SESSION_KEYS

    def floor_touch(self) -> Op:
        conn, t = self.conn, self.t
        self.raw_sessions  # noqa: B018 - inserts them once
        select = (
            f"SELECT value::text FROM {t} WHERE ns = 'raw' AND key = %s AND (expires_at IS NULL OR expires_at > now())"
        )
        update = f"UPDATE {t} SET expires_at = now() + make_interval(secs => %s) WHERE ns = 'raw' AND key = %s"

        def touch(i: int) -> object:
            key = SESSION_KEYS[i % 100]
            row = conn.execute(select, (key,)).fetchone()
            if row is None:
                return None
            conn.execute(update, (SESSION_TTL, key))
            return loads(row[0])

        return touch

    def touch_returning(self) -> Op:
        conn = self.conn
        self.raw_sessions  # noqa: B018 - inserts them once
        query = (
            f"UPDATE {self.t} SET expires_at = now() + make_interval(secs => %s) WHERE ns = 'raw' AND key = %s "
            "AND (expires_at IS NULL OR expires_at > now()) RETURNING value::text"
        )

        def touch(i: int) -> object:
            row = conn.execute(query, (SESSION_TTL, SESSION_KEYS[i % 100])).fetchone()
            return loads(row[0]) if row else None

        return touch

    def floor_incr(self) -> Op:
        conn = self.conn
        query = (
            f"INSERT INTO {self.t} AS e (ns, key, value) VALUES ('raw', %s, to_json(%s::bigint)) ON CONFLICT (ns, key) "
            "DO UPDATE SET value = to_json(e.value::text::bigint + excluded.value::text::bigint) RETURNING value::text"
        )
        return lambda i: int(conn.execute(query, (COUNTERS[i % 100], 1)).fetchone()[0])  # type: ignore[index]

    def floor_delete_many(self) -> Op:
        conn, t = self.conn, self.t
        batches = self.delete_pool("raw")
        for first in range(0, len(batches), 100):
            conn.execute(
                f"INSERT INTO {t} (ns, key, value) SELECT 'raw', k, %s::json FROM unnest(%s::text[]) k",
                (dumps(MESSAGE).decode(), [k for batch in batches[first : first + 100] for k in batch]),
            )
        conn.execute(f"ANALYZE {t}")
        query = f"DELETE FROM {t} WHERE ns = 'raw' AND key = ANY(%s::text[])"
        return drained(self, batches, lambda batch: conn.execute(query, (batch,)).rowcount)


# --- Redis ----------------------------------------------------------------------------------------------


def _redis_address(tier: Tier) -> tuple[str, int, int]:
    import redis

    parsed = redis.connection.parse_url(tier.ctx.redis_url)
    return parsed.get("host", "127.0.0.1"), parsed.get("port", 6379), parsed.get("db", 0)


def _build_aiocache_redis(tier: Tier, namespace: str = "aio:") -> Any:
    from aiocache import RedisCache as AioRedisCache

    host, port, db = _redis_address(tier)
    return AioRedisCache(endpoint=host, port=port, db=db, namespace=tier.tag + namespace)  # JsonSerializer, its default


def _build_pkv_redis(tier: Tier) -> Any:
    from key_value.aio.stores.redis import RedisStore

    peer = RedisStore(url=tier.ctx.redis_url, default_collection=tier.tag + "pkv")
    tier.wait(peer.put_many(KEYS, [MESSAGE] * len(KEYS)))
    return peer


def _build_litestar_redis(tier: Tier) -> Any:
    import redis.asyncio
    from litestar.stores.redis import RedisStore

    peer = RedisStore(redis.asyncio.Redis.from_url(tier.ctx.redis_url), namespace=tier.tag + "ls")
    return _loaded(tier, peer, lambda p, k: p.set(k, dumps(SESSION_DATA), expires_in=SESSION_TTL))


def _loaded_aiocache(tier: Tier) -> Any:
    peer = _build_aiocache_redis(tier)
    tier.wait(peer.multi_set([(k, MESSAGE) for k in KEYS]))
    return peer


AIOCACHE_REDIS = Peer("aiocache RedisCache", "aiocache[redis]", _loaded_aiocache, close=_close_async)
AIOCACHE_REDIS_SESSIONS = Peer(
    "aiocache RedisCache (sessions)",
    "aiocache[redis]",
    lambda t: _loaded(t, _build_aiocache_redis(t, "aios:"), lambda p, k: p.set(k, SESSION_DATA, ttl=SESSION_TTL)),
    close=_close_async,
)
LITESTAR_REDIS = Peer(
    "litestar RedisStore", "litestar", _build_litestar_redis, close=lambda t, p: t.wait(p._redis.aclose())
)
PKV_REDIS = Peer("py-key-value RedisStore", "py-key-value-aio[redis]", _build_pkv_redis, close=_close_async)


class RedisTier(Tier):
    """Floors: one connection used sequentially, hiredis parser, orjson on both ends. Every key is written under
    ``bench_<pid>_`` and removed at the end (SCAN + UNLINK)."""

    section = "redis"
    classes = ("RedisCache", "AsyncRedisCache")
    sessions = ("SessionStore(RedisCache)", "AsyncSessionStore(AsyncRedisCache)")
    chat = False
    rows = (
        Row("get", "redis-py GET + orjson.loads (floor)", "floor", "floor_get"),
        Row("get", "redis.asyncio GET + orjson.loads", "info", "async_get", is_async=True),
        Row("set", "redis-py SET + orjson.dumps (floor)", "floor", "floor_set"),
        Row("set", "redis.asyncio SET + orjson.dumps", "info", "async_set", is_async=True),
        Row("mget 100", "redis-py MGET 100 + loads (floor)", "floor", "floor_mget"),
        Row("mget 100", "redis.asyncio MGET 100 + loads", "info", "async_mget", is_async=True),
        Row("mset 100", "redis-py MSET 100 + dumps (floor)", "floor", "floor_mset"),
        Row("mset 100", "redis-py pipelined 100 SET", "info", "pipelined_mset"),
        Row("mset 100", "redis.asyncio pipelined 100 SET", "info", "async_pipelined_mset", is_async=True),
        Row(SESSION, "redis-py GET + PEXPIRE (floor)", "floor", "floor_touch"),
        Row(SESSION, "redis-py GETEX PX (1 round trip)", "info", "touch_getex"),
        Row(INCR, "redis-py INCRBY (floor)", "floor", "floor_incr"),
        Row(INCR, "redis.asyncio INCRBY", "info", "async_incr", is_async=True),
        Row(DELETE_MANY, "redis-py DEL 100 keys (floor)", "floor", "floor_delete_many"),
        Row(TOUCH, "redis-py GETEX PX (floor)", "floor", "touch_getex"),
        Row(TOUCH, "redis-py GET + PEXPIRE (2 round trips)", "info", "floor_touch"),
        Row(GATHER, "redis.asyncio MGET 100 + loads (floor)", "floor", "async_mget", is_async=True),
    )
    gather = True
    delete_ops = 100
    peers = (
        *grid_peer(AIOCACHE_REDIS, AIOCACHE, "get|set|multi_get|multi_set"),
        *grid_peer(PKV_REDIS, PKV, "get|put|get_many|put_many"),
        *cache_peers(AIOCACHE_REDIS_SESSIONS, AIOCACHE_REDIS, LITESTAR_REDIS, PKV_REDIS),
    )
    uncompared = (
        ("py-key-value RedisStore (sessions)", "not compared: no sliding-expiry call (a touch is a full put)"),
    )

    def open(self) -> None:
        import redis
        import redis.asyncio

        from kvstore.redis import AsyncRedisCache, RedisCache

        url, tag = self.ctx.redis_url, self.tag
        self.stack.callback(self._cleanup)
        self.raw = raw = redis.Redis.from_url(url)
        self.araw = araw = redis.asyncio.Redis.from_url(url)
        self.stores = cache, acache = (
            RedisCache(url, key_prefix=tag + "kv:"),
            AsyncRedisCache(url, key_prefix=tag + "kv:"),
        )
        self.stack.callback(lambda: (raw.close(), cache.close(), self.wait(araw.aclose()), self.wait(acache.aclose())))
        self.keys = [tag + "raw:" + k for k in KEYS]
        self.batch = self.keys[:100]
        raw.mset({k: dumps(MESSAGE) for k in self.keys})
        cache.mset({k: MESSAGE for k in KEYS})

    def _cleanup(self) -> None:
        import redis

        client, removed, batch = redis.Redis.from_url(self.ctx.redis_url), 0, []
        try:
            for key in client.scan_iter(match=self.tag + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += client.unlink(*batch)
                    batch = []
            if batch:
                removed += client.unlink(*batch)
        finally:
            client.close()
        print(f"  removed {removed} {self.tag}* keys")

    @cached_property
    def session_stores(self) -> tuple[Any, Any]:
        self.note(
            SESSION,
            "kvstore: a SessionStore over RedisCache (a memory database behind it is not touched on a cache hit "
            "within `touch_interval`): GET + PEXPIRE, two round trips like the floor.",
        )
        return (
            SessionStore(self.stores[0], MemoryDatabase(), ttl=SESSION_TTL),
            AsyncSessionStore(self.stores[1], AsyncMemoryDatabase(), ttl=SESSION_TTL),
        )

    def floor_get(self) -> Op:
        raw, keys = self.raw, self.keys
        return lambda i: loads(raw.get(keys[i % 1000]))

    def async_get(self) -> Op:
        araw, keys = self.araw, self.keys

        async def get(i: int) -> object:
            return loads(await araw.get(keys[i % 1000]))

        return get

    def floor_set(self) -> Op:
        raw, keys = self.raw, self.keys
        return lambda i: raw.set(keys[i % 1000], dumps(msg(i)))

    def async_set(self) -> Op:
        araw, keys = self.araw, self.keys
        return lambda i: araw.set(keys[i % 1000], dumps(msg(i)))

    def floor_mget(self) -> Op:
        raw, batch = self.raw, self.batch
        return lambda i: [loads(v) for v in raw.mget(batch)]

    def async_mget(self) -> Op:
        araw, batch = self.araw, self.batch

        async def mget(i: int) -> object:
            return [loads(v) for v in await araw.mget(batch)]

        return mget

    def floor_mset(self) -> Op:
        raw, batch = self.raw, self.batch
        return lambda i: raw.mset({k: dumps(msg(i + j)) for j, k in enumerate(batch)})

    def pipelined_mset(self) -> Op:
        raw, batch = self.raw, self.batch

        def mset(i: int) -> object:
            pipe = raw.pipeline(transaction=False)
            for j, k in enumerate(batch):
                pipe.set(k, dumps(msg(i + j)))
            return pipe.execute()

        return mset

    def async_pipelined_mset(self) -> Op:
        araw, batch = self.araw, self.batch

        def mset(i: int) -> object:
            pipe = araw.pipeline(transaction=False)
            for j, k in enumerate(batch):
                pipe.set(k, dumps(msg(i + j)))
            return pipe.execute()

        return mset

    @cached_property
    def session_keys(self) -> list[str]:
        keys = [f"{self.tag}raw:{k}" for k in SESSION_KEYS]
        for k in keys:
            self.raw.set(k, dumps(SESSION_DATA), ex=SESSION_TTL)
        return keys

    def floor_touch(self) -> Op:
        raw, keys, ms = self.raw, self.session_keys, SESSION_TTL * 1000

        def touch(i: int) -> object:
            key = keys[i % 100]
            value = raw.get(key)
            if value is None:
                return None
            raw.pexpire(key, ms)
            return loads(value)

        return touch

    def floor_incr(self) -> Op:
        raw, keys = self.raw, [f"{self.tag}raw:{k}" for k in COUNTERS]
        return lambda i: raw.incrby(keys[i % 100], 1)

    def async_incr(self) -> Op:
        araw, keys = self.araw, [f"{self.tag}raw:{k}" for k in COUNTERS]
        return lambda i: araw.incrby(keys[i % 100], 1)

    def floor_delete_many(self) -> Op:
        raw, value = self.raw, dumps(MESSAGE)
        batches = [[f"{self.tag}raw:{k}" for k in batch] for batch in self.delete_pool("raw")]
        for first in range(0, len(batches), 10):
            raw.mset({k: value for batch in batches[first : first + 10] for k in batch})
        return drained(self, batches, lambda batch: raw.delete(*batch))

    def touch_getex(self) -> Op:
        raw, keys, ms = self.raw, self.session_keys, SESSION_TTL * 1000

        def touch(i: int) -> object:
            value = raw.getex(keys[i % 100], px=ms)
            return None if value is None else loads(value)

        return touch

    def finish(self) -> None:
        """kvstore keeps chat histories on the database tier; LangChain's Redis histories are reported, not raced."""
        super().finish()
        name = "langchain-redis RedisChatMessageHistory"
        try:
            from langchain_core.messages import HumanMessage
            from langchain_redis import RedisChatMessageHistory

            history = RedisChatMessageHistory(
                f"{self.tag}probe", redis_url=self.ctx.redis_url, key_prefix=f"{self.tag}lcr:"
            )
            history.add_message(HumanMessage("hi"))
        except ImportError as exc:
            self.ctx.report.peer(self.section, name, f"not installed (langchain-redis): {reason(exc)}")
        except Exception as exc:
            self.ctx.report.peer(self.section, name, f"not runnable on plain Redis (needs RediSearch): {reason(exc)}")
        else:
            self.ctx.report.peer(self.section, name, "runs here (this Redis has RediSearch); not raced")
        self.ctx.report.peer(
            self.section,
            "LangChain (community) RedisChatMessageHistory",
            "not compared: kvstore's Redis backend is the cache tier (no lists); its chat histories live on the "
            "database tier (SQLite/PostgreSQL sections)",
        )


TIERS: dict[str, type[Tier]] = {t.section: t for t in (MemoryTier, SqliteTier, PostgresTier, RedisTier)}
