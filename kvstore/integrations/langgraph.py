"""LangGraph on kvstore: a checkpointer that stores each message once, and a long-term memory store.

Install with ``pip install "kvstore-sdk[langgraph]"``.

- `KVStoreSaver` / `AsyncKVStoreSaver` are ``BaseCheckpointSaver`` s on the database tier
  (any backend: memory, SQLite, PostgreSQL). A channel whose new value extends its
  previous value (the message list of a chat) stores only the new items, each under a
  key of its own written once; the checkpoint records which runs of items make up the
  value, and a read rebuilds it with one ``mget``. A message that a pending write or
  the input checkpoint held inline is rewritten into a reference to its item when a
  put appends it. Storage grows with the messages, not with messages x checkpoints.
  Anything else is stored whole, small values inline in the checkpoint record and
  large ones once per checkpoint that changes them. A ``put`` is one ``mset``, a
  ``put_writes`` one ``set``.
- `KVStoreStore` / `AsyncKVStoreStore` are ``BaseStore`` s (get, put, delete, search
  by namespace prefix and value filter, list_namespaces) with TTL from kvstore itself:
  an expired item is never returned, on any backend. No vector search: a ``query``
  is ignored and results come newest first.
- `copy_checkpoints` / `copy_store_items` migrate from LangGraph's own savers and stores.

Nothing is pickled. Values that are plain JSON, and LangChain messages, are stored
as JSON; anything else goes through LangGraph's ``JsonPlusSerializer`` with unpickling
off and its strict msgpack allow-list (LangGraph widens it with the types of the
graph's state when the graph is compiled), stored as base64 text.

Each saver and store has one implementation of its logic, free of I/O, written as
generators of storage requests, and one set of public methods (sync and async); the
sync classes run the generators on a `Database` (their async methods in a worker
thread), the async ones on an `AsyncDatabase`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar, cast

import orjson

from kvstore import AsyncDatabase, Database
from kvstore.errors import MissingDependencyError

try:
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        ChatMessage,
        ChatMessageChunk,
        FunctionMessage,
        FunctionMessageChunk,
        HumanMessage,
        HumanMessageChunk,
        RemoveMessage,
        SystemMessage,
        SystemMessageChunk,
        ToolMessage,
        ToolMessageChunk,
    )
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        PendingWrite,
        get_serializable_checkpoint_metadata,
        writes_sort_key,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        TTLConfig,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError("LangGraph integration", "langgraph", "langgraph") from exc

__all__ = [
    "AsyncKVStoreSaver",
    "AsyncKVStoreStore",
    "KVStoreSaver",
    "KVStoreStore",
    "copy_checkpoints",
    "copy_store_items",
    "safe_serializer",
]

T = TypeVar("T")

#: One storage request: ``(method, *args)`` on the database, ``("gather", [requests])``
#: (several independent requests; concurrent on the async tier) or ``("emit", items)``
#: (results handed to the caller of an iterator).
Request: TypeAlias = tuple[Any, ...]
Steps: TypeAlias = Generator[Request, Any, T]
_Items: TypeAlias = list[Any]  # spelled once here: inside the savers, `list` is a method

_MESSAGE_CLASSES: dict[str, type[BaseMessage]] = {
    cls.__name__: cls
    for cls in (
        AIMessage,
        AIMessageChunk,
        ChatMessage,
        ChatMessageChunk,
        FunctionMessage,
        FunctionMessageChunk,
        HumanMessage,
        HumanMessageChunk,
        RemoveMessage,
        SystemMessage,
        SystemMessageChunk,
        ToolMessage,
        ToolMessageChunk,
    )
}
#: Values encoded larger than this are stored under their own key, not inline in the record.
_INLINE_MAX = 2048
_PAGE = 100
#: Short names of the checkpoint fields in a record (the record's own keys are one letter).
_SHORT = {
    "v": "v",
    "ts": "ts",
    "channel_versions": "cv",
    "versions_seen": "vs",
    "updated_channels": "uc",
    "pending_sends": "ps",
}
_INT64 = (-(2**63), 2**63 - 1)
#: A list value made of more runs than this is stored whole again, as one run.
_MAX_RUNS = 32
#: A document holding messages inline is rewritten only by the next few puts of its thread, and
#: at most this many are kept per thread.
_DOC_AGE = 4
_DOCS_KEPT = 32
_RECENT = 16


def safe_serializer() -> JsonPlusSerializer:
    """LangGraph's serializer with unpickling off and only its built-in safe msgpack types allowed."""
    return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)


# --------------------------------------------------------------------------- keys and codec


def _part(text: str) -> str:
    """One key component: ``%`` and ``:`` escaped so components never run into each other."""
    return text.replace("%", "%25").replace(":", "%3A")


def _unpart(text: str) -> str:
    return text.replace("%3A", ":").replace("%25", "%")


_GLOB = re.compile(r"([*?\[\]\\])")


def _glob(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return _GLOB.sub(r"\\\1", text)


def _is_json(value: Any) -> bool:
    """Whether ``value`` is plain JSON that reads back equal (and of the same types)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(_INT64[0] <= value <= _INT64[1])
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_is_json(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    return False


#: A message met while encoding: the object and its ``["m", ...]`` node (rewritten in place into an item reference).
Leaf: TypeAlias = tuple[Any, list[Any]]
#: Where an item lives: (generation, position); its key is ``p i:t:n:<generation>:<position>``.
ItemId: TypeAlias = tuple[str, int]
_MISSING = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Codec:
    """Values to JSON documents and back: plain JSON and LangChain messages as JSON, the rest via ``serde``.

    Tags: ``j`` plain JSON, ``m`` a message, ``L``/``D`` a list/dict of encoded values, ``s`` the
    serializer's bytes (base64), ``i`` a reference to a stored item (a message stored once).
    """

    def __init__(self, serde: SerializerProtocol, *, json_first: bool, leaves: list[Leaf] | None = None) -> None:
        self.serde = serde
        self.json_first = json_first
        self.leaves = leaves

    def encode(self, value: Any) -> list[Any]:
        if self.json_first:
            if _is_json(value):
                return ["j", value]
            kind = type(value)
            if kind is list:
                return ["L", [self.encode(v) for v in value]]
            if kind is dict and all(type(k) is str for k in value):
                return ["D", {k: self.encode(v) for k, v in value.items()}]
            if isinstance(value, BaseMessage):
                encoded = self._message(value)
                if encoded is not None:
                    if self.leaves is not None:
                        self.leaves.append((value, encoded))
                    return encoded
        type_, data = self.serde.dumps_typed(value)
        return ["s", type_, base64.b64encode(data).decode("ascii")]

    @staticmethod
    def _message(message: BaseMessage) -> list[Any] | None:
        cls = _MESSAGE_CLASSES.get(type(message).__name__)
        if cls is not type(message):
            return None
        for fields in (message.model_dump(exclude_defaults=True), message.model_dump()):
            # Kept only when it rebuilds an equal message (validators may derive fields).
            if _is_json(fields) and cls(**fields) == message:
                return ["m", cls.__name__, fields]
        return None

    def decode(self, data: Any, items: dict[ItemId, Any] | None = None) -> Any:
        tag = data[0]
        if tag == "j":
            return data[1]
        if tag == "m":
            return _MESSAGE_CLASSES[data[1]](**data[2])
        if tag == "L":
            decoded = (self.decode(v, items) for v in data[1])
            return [v for v in decoded if v is not _MISSING]
        if tag == "D":
            return {k: self.decode(v, items) for k, v in data[1].items()}
        if tag == "i":
            stored = (items or {}).get((data[1], data[2]))
            # An item deleted underneath (another process deleted the thread) is left out of its list.
            return _MISSING if stored is None else self.decode(stored, items)
        if tag == "s":
            return self.serde.loads_typed((data[1], base64.b64decode(data[2])))
        raise ValueError(f"unknown stored value tag {tag!r}")


def _item_refs(data: Any, out: set[ItemId]) -> set[ItemId]:
    """Every item an encoded value refers to (its ``i`` nodes), added to ``out``."""
    tag = data[0]
    if tag == "i":
        out.add((data[1], data[2]))
    elif tag == "L":
        for v in data[1]:
            _item_refs(v, out)
    elif tag == "D":
        for v in data[1].values():
            _item_refs(v, out)
    return out


def _ts_delta(checkpoint_id: str, ts: Any) -> int | None:
    """``ts`` as microseconds after the time in the checkpoint's uuid6 id, when that rebuilds it exactly."""
    if not isinstance(ts, str):
        return None
    base = _uuid6_micros(checkpoint_id)
    if base is None:
        return None
    try:
        delta = (datetime.fromisoformat(ts) - _EPOCH) // timedelta(microseconds=1) - base
    except (TypeError, ValueError):  # not ISO 8601, or without a time zone
        return None
    return delta if _ts_from(checkpoint_id, delta) == ts else None


def _ts_from(checkpoint_id: str, delta: int) -> str:
    micros = (_uuid6_micros(checkpoint_id) or 0) + delta
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


def _uuid6_micros(checkpoint_id: str) -> int | None:
    try:
        value = uuid.UUID(checkpoint_id)
    except ValueError:
        return None
    if value.version != 6:
        return None
    n = value.int
    stamp = ((n >> 80) << 12) | ((n >> 64) & 0x0FFF)  # 100 ns since 1582-10-15
    return (stamp - 0x01B21DD213814000) // 10


class _Cached(NamedTuple):
    version: Any
    items: list[Any] | None  # the list value the runs hold (list channels only)
    ref: list[Any]


class _LRU(Generic[T]):
    """A small thread-safe LRU map bounded by the total weight of its entries."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[Any, tuple[T, int]] = OrderedDict()
        self._size = size
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> T | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            self._data.move_to_end(key)
            return found[0]

    def put(self, key: Any, value: T, weight: int = 1) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._data[key] = (value, weight)
            self._weight += weight
            while self._weight > self._size and self._data:
                self._weight -= self._data.popitem(last=False)[1][1]

    def pop(self, key: Any) -> T | None:
        with self._lock:
            found = self._data.pop(key, None)
            if found is None:
                return None
            self._weight -= found[1]
            return found[0]

    def drop(self, match: Callable[[Any], bool]) -> None:
        with self._lock:
            for key in [k for k in self._data if match(k)]:
                self._weight -= self._data.pop(key)[1]


def _after(full: list[list[Any]], prefix: list[list[Any]]) -> list[list[Any]] | None:
    """The runs of ``full`` past its first items, when those are exactly ``prefix``'s; else None."""
    rest = [list(r) for r in full]
    i = 0
    for gen, a, b in prefix:
        while a <= b:
            if i >= len(rest) or rest[i][0] != gen or rest[i][1] != a:
                return None
            end = min(b, rest[i][2])
            a = end + 1
            if end == rest[i][2]:
                i += 1
            else:
                rest[i][1] = end + 1
    return rest[i:]


def _merge(runs: list[list[Any]], gen: str, start: int, end: int) -> list[list[Any]]:
    if runs and runs[-1][0] == gen and runs[-1][2] + 1 == start:
        return [*runs[:-1], [gen, runs[-1][1], end]]
    return [*runs, [gen, start, end]]


def _positions(runs: list[list[Any]]) -> Iterator[ItemId]:
    for gen, a, b in runs:
        for position in range(a, b + 1):
            yield gen, position


class _Doc:
    """A stored document (record, blob or pending writes) holding messages inline, kept for a few puts.

    When a later put appends one of those messages to a list channel, the message's node is
    rewritten into a reference to the list's item and the document stored again in the same
    ``mset``: each message of a chat is stored once, in its list.
    """

    __slots__ = ("born", "doc", "key", "leaves")

    def __init__(self, key: str, doc: Any, leaves: list[Leaf], born: int) -> None:
        self.key, self.doc, self.leaves, self.born = key, doc, leaves, born


# --------------------------------------------------------------------------- checkpointer


class _Pending:
    """The documents of one (thread, namespace) that still hold messages inline, and its put count."""

    __slots__ = ("docs", "puts", "recent")

    def __init__(self) -> None:
        self.docs: list[_Doc] = []
        self.puts = 0
        # The items the last puts appended: a document stored after the put that appended its message (the
        # put and put_writes of a step may run concurrently) is rewritten by the next put.
        self.recent: list[tuple[Any, list[Any], ItemId]] = []


class _SaverCore(BaseCheckpointSaver[int]):
    """The checkpointer's logic, free of I/O: each operation is a generator of storage requests.

    Keys (``p`` = ``prefix``, ``t``/``n``/``c`` = escaped thread id, namespace, channel):
    ``p c:t:n:<checkpoint id>`` the record (checkpoint, metadata, parent, how to rebuild
    each channel), ``p h:t:n`` a copy of the newest record, ``p w:t:n:<id>:<task>:<idx>`` the
    pending writes of one ``put_writes`` call, ``p i:t:n:<generation>:<position>`` one item of
    a list channel (written once, never changed), ``p b:t:n:<id>:c`` a large value,
    ``p u:<run id>:t`` which threads a run wrote to.

    A list channel's value is a list of runs ``[generation, first, last]`` of items. Each
    (thread, namespace, channel) appends in this process under a generation of its own
    (random, new after a restart or a detected change by another process), so positions
    are never handed out twice and a run read once never changes.

    The public methods are defined once here; a subclass says how a generator of storage
    requests runs (`_SyncRunner`, `_AsyncRunner`).
    """

    def __init__(self, *, serde: SerializerProtocol | None, prefix: str, cache_size: int) -> None:
        super().__init__(serde=serde or safe_serializer())
        self.prefix = prefix
        # Plain JSON and messages bypass the serializer only when the caller chose none.
        self._json_first = serde is None
        self._cache: _LRU[_Cached] = _LRU(cache_size)
        self._heads: _LRU[str] = _LRU(cache_size)
        self._epochs: _LRU[list[Any]] = _LRU(cache_size)  # (t, ns, channel) -> [generation, next position]
        self._pending: _LRU[_Pending] = _LRU(max(1, cache_size // 100))
        self._names: _LRU[tuple[str, list[str], dict[str, int]]] = _LRU(max(1, cache_size // 100))
        self._tables: _LRU[list[str]] = _LRU(max(1, cache_size // 100))  # (t, ns, hash) -> channel names
        self._lock = threading.Lock()

    @property
    def _codec(self) -> _Codec:
        return _Codec(self.serde, json_first=self._json_first)

    # ------------------------------------------------------------------ runners (see _SyncRunner/_AsyncRunner)
    def _run(self, steps: Steps[T]) -> T:
        raise NotImplementedError

    async def _arun(self, steps: Steps[T]) -> T:
        raise NotImplementedError

    def _iter(self, steps: Steps[None]) -> Iterator[Any]:
        raise NotImplementedError

    def _aiter(self, steps: Steps[None]) -> AsyncIterator[Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ keys
    def _k(self, kind: str, thread_id: str, ns: str, *rest: str) -> str:
        return ":".join([f"{self.prefix}{kind}", _part(thread_id), _part(ns), *rest])

    def _item_key(self, thread_id: str, ns: str, item: ItemId) -> str:
        return self._k("i", thread_id, ns, item[0], str(item[1]))

    def _pattern(self, kind: str, thread_id: str, ns: str | None = None) -> str:
        base = f"{_glob(self.prefix)}{kind}:{_glob(_part(thread_id))}:"
        return base + "*" if ns is None else f"{base}{_glob(_part(ns))}:*"

    def _writes_pattern(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return _glob(self._k("w", thread_id, ns, checkpoint_id)) + ":*"

    def _head_namespaces(self, thread_id: str) -> Steps[list[str]]:
        keys = yield ("keys", f"{_glob(self.prefix)}h:{_glob(_part(thread_id))}:*")
        return [_unpart(k.rsplit(":", 1)[1]) for k in keys]

    def _checkpoint_ids(self, thread_id: str, ns: str) -> Steps[list[str]]:
        keys = yield ("keys", self._pattern("c", thread_id, ns))
        return [k.rsplit(":", 1)[1] for k in keys]

    def get_next_version(self, current: Any, channel: None) -> Any:
        """Integer versions (compact); a thread written with string versions keeps their format."""
        if isinstance(current, str):
            return f"{int(current.split('.')[0]) + 1:032}.{random.random():016}"
        return 1 if current is None else current + 1

    # ------------------------------------------------------------------ records
    def _body(self, thread_id: str, ns: str, checkpoint: Checkpoint, out: list[tuple[str, Any]]) -> dict[str, Any]:
        """The checkpoint minus its id and values: plain JSON under short names when it can be, channel names
        as positions in the thread's name table (``p n:t:n:<hash>``, written once, added to ``out`` when new)."""
        body = {k: v for k, v in checkpoint.items() if k not in ("channel_values", "id")}
        if not (self._json_first and set(body) <= _SHORT.keys() and _is_json(body)):
            return {"c": self._codec.encode(body)}
        short = {_SHORT[k]: v for k, v in body.items()}
        delta = _ts_delta(checkpoint["id"], body.get("ts"))
        if delta is not None:  # the time is in the id already: keep the few microseconds between them
            del short["ts"]
            short["td"] = delta
        versions, seen, updated = (body.get(k) for k in ("channel_versions", "versions_seen", "updated_channels"))
        if isinstance(versions, dict) and isinstance(seen, dict) and all(isinstance(s, dict) for s in seen.values()):
            names = [*versions, *seen, *(c for s in seen.values() for c in s)]
            if isinstance(updated, list):
                names += updated
            table, index = self._table(thread_id, ns, names, out)
            short["n"] = table
            short["cv"] = [[index[c], v] for c, v in versions.items()]
            short["vs"] = [[index[node], [[index[c], v] for c, v in s.items()]] for node, s in seen.items()]
            if isinstance(updated, list):
                short["uc"] = [index[c] for c in updated]
        return short

    def _unbody(self, checkpoint_id: str, record: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
        if "c" in record:
            body: dict[str, Any] = self._codec.decode(record["c"])
        else:
            body = {long: record[short] for long, short in _SHORT.items() if short in record}
            if "td" in record:
                body["ts"] = _ts_from(checkpoint_id, record["td"])
            if "n" in record:
                if names is None:
                    raise ValueError(f"checkpoint {checkpoint_id}: its channel name table {record['n']} is missing")
                body["channel_versions"] = {names[i]: v for i, v in record["cv"]}
                body["versions_seen"] = {names[i]: {names[j]: v for j, v in s} for i, s in record["vs"]}
                if isinstance(record.get("uc"), list):
                    body["updated_channels"] = [names[i] for i in record["uc"]]
        return {**body, "id": checkpoint_id}

    def _table(
        self, thread_id: str, ns: str, names: list[str], out: list[tuple[str, Any]]
    ) -> tuple[str, dict[str, int]]:
        """The thread's name table holding ``names``: the current one, or a new one extending it (added to ``out``)."""
        current = self._names.get((thread_id, ns))
        if current is not None and all(n in current[2] for n in names):
            return current[0], current[2]
        old: list[str] = current[1] if current is not None else []
        table = [*old, *dict.fromkeys(n for n in names if current is None or n not in current[2])]
        digest = hashlib.sha1(orjson.dumps(table), usedforsecurity=False).hexdigest()[:10]
        out.append((self._k("n", thread_id, ns, digest), table))
        self._names.put((thread_id, ns), (digest, table, {n: i for i, n in enumerate(table)}))
        self._tables.put((thread_id, ns, digest), table)
        return digest, {n: i for i, n in enumerate(table)}

    # ------------------------------------------------------------------ caches shared across calls
    def _allocate(self, thread_id: str, ns: str, channel: str, count: int) -> tuple[str, int]:
        """``count`` fresh positions for a list channel's new items: (generation, first)."""
        with self._lock:
            epoch = self._epochs.get((thread_id, ns, channel))
            if epoch is None:
                epoch = [uuid.uuid4().hex[:10], 0]
                self._epochs.put((thread_id, ns, channel), epoch)
            start = epoch[1]
            epoch[1] += count
            return epoch[0], start

    def _remember(self, thread_id: str, ns: str, doc: _Doc) -> None:
        """Keep a stored document that holds messages inline, for `_dedupe`."""
        with self._lock:
            pending = self._pending.get((thread_id, ns))
            if pending is None:
                pending = _Pending()
                self._pending.put((thread_id, ns), pending)
            doc.born = pending.puts
            pending.docs = [*[d for d in pending.docs if d.key != doc.key][-_DOCS_KEPT:], doc]

    def _dedupe(
        self, thread_id: str, ns: str, appended: list[tuple[Any, list[Any], ItemId]], docs: list[_Doc]
    ) -> list[_Doc]:
        """Rewrite messages held inline (by this put's ``docs`` and recent ones) into references to the items
        this put appends; returns the earlier documents to store again."""
        with self._lock:
            pending = self._pending.get((thread_id, ns))
            if pending is None:
                pending = _Pending()
                self._pending.put((thread_id, ns), pending)
            pending.puts += 1
            earlier = [d for d in pending.docs if pending.puts - d.born <= _DOC_AGE]
            rewritten: list[_Doc] = []
            candidates = [*pending.recent, *appended]
            pending.recent = candidates[-_RECENT:]
            if candidates:
                by_object = {id(obj): (obj, item) for obj, _, item in candidates}
                by_json = {orjson.dumps(encoded): item for _, encoded, item in candidates}
                for doc in [*earlier, *docs]:
                    left: list[Leaf] = []
                    for obj, node in doc.leaves:
                        hit = by_object.get(id(obj))
                        # The same object (LangGraph may have set its id since it was written), or an equal one.
                        item = hit[1] if hit is not None and hit[0] is obj else by_json.get(orjson.dumps(node))
                        if item is None:
                            left.append((obj, node))
                        else:
                            node[:] = ["i", item[0], item[1]]
                    if len(left) < len(doc.leaves) and doc.born >= 0:
                        rewritten.append(doc)
                    doc.leaves = left
            for doc in docs:
                doc.born = pending.puts
            pending.docs = [d for d in [*earlier, *docs] if d.leaves][-_DOCS_KEPT:]
        return [d for d in rewritten if d not in docs]

    def _forget(self, thread_id: str, ns: str | None = None) -> None:
        def match(key: Any) -> bool:
            return bool(key[0] == thread_id and (ns is None or key[1] == ns))

        for lru in (self._cache, self._heads, self._epochs, self._pending, self._names, self._tables):
            lru.drop(match)

    # ------------------------------------------------------------------ put
    def _put_steps(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Steps[RunnableConfig]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        checkpoint_id, parent_id = checkpoint["id"], conf.get("checkpoint_id")
        codec = self._codec
        values = checkpoint["channel_values"]
        record_key = self._k("c", thread_id, ns, checkpoint_id)
        refs: dict[str, list[Any]] = {}
        out: list[tuple[str, Any]] = []  # the new items first
        appended: list[tuple[Any, list[Any], ItemId]] = []
        docs: list[_Doc] = []
        record_leaves: list[Leaf] = []
        for channel, version in checkpoint["channel_versions"].items():
            if channel not in values:
                continue
            value = values[channel]
            key = (thread_id, ns, channel)
            cached = self._cache.get(key)
            if channel not in new_versions and cached is not None and cached.version == version:
                refs[channel] = cached.ref
                continue
            if type(value) is list and value:
                runs: list[list[Any]] = []
                new = value
                if cached is not None and cached.items is not None:
                    old = cached.items
                    if len(value) >= len(old) and value[: len(old)] == old:
                        runs, new = cached.ref[1], value[len(old) :]
                if new and len(runs) >= _MAX_RUNS:
                    runs, new = [], value  # too many runs (restarts, forks): stored whole, as one run
                if new:
                    gen, start = self._allocate(thread_id, ns, channel, len(new))
                    for position, item in enumerate(new, start):
                        encoded = codec.encode(item)
                        out.append((self._item_key(thread_id, ns, (gen, position)), encoded))
                        appended.append((item, encoded, (gen, position)))
                    runs = _merge(runs, gen, start, start + len(new) - 1)
                refs[channel] = ["l", runs]
                self._cache.put(key, _Cached(version, list(value), refs[channel]), len(value))
                continue
            leaves: list[Leaf] = []
            encoded = _Codec(self.serde, json_first=self._json_first, leaves=leaves).encode(value)
            if len(orjson.dumps(encoded)) > _INLINE_MAX:
                blob = self._k("b", thread_id, ns, checkpoint_id, _part(channel))
                docs.append(_Doc(blob, encoded, leaves, -1))
                encoded = ["k", blob]
            else:
                record_leaves.extend(leaves)
            refs[channel] = encoded
            self._cache.put(key, _Cached(version, None, encoded))
        meta = get_serializable_checkpoint_metadata(config, metadata)
        record = {"p": parent_id, **self._body(thread_id, ns, checkpoint, out), "m": codec.encode(meta), "r": refs}
        docs.append(_Doc(record_key, record, record_leaves, -1))
        out.extend((d.key, d.doc) for d in self._dedupe(thread_id, ns, appended, docs))
        out.extend((d.key, d.doc) for d in docs)
        head = self._heads.get((thread_id, ns))
        if head is None or head <= checkpoint_id:
            out.append((self._k("h", thread_id, ns), {**record, "id": checkpoint_id}))
            self._heads.put((thread_id, ns), checkpoint_id)
        run_id = meta.get("run_id")
        if isinstance(run_id, str) and run_id:
            out.append((f"{self.prefix}u:{_part(run_id)}:{_part(thread_id)}", thread_id))
        yield ("mset", out)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}

    def _put_writes_steps(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Steps[None]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        # Regular writes of a task are stored once (a repeated call keeps the first, as LangGraph's savers do);
        # special ones (error, interrupt...) replace the previous of the same kind. Each kind is one value.
        kinds: dict[bool, tuple[list[list[Any]], list[Leaf]]] = {True: ([], []), False: ([], [])}
        for idx, (channel, value) in enumerate(writes):
            index = WRITES_IDX_MAP.get(channel, idx)
            entries, leaves = kinds[index >= 0]
            entries.append(
                [index, channel, _Codec(self.serde, json_first=self._json_first, leaves=leaves).encode(value)]
            )
        base = self._k("w", thread_id, ns, conf["checkpoint_id"], _part(task_id))
        for regular, (entries, leaves) in kinds.items():
            if not entries:
                continue
            key = f"{base}:{entries[0][0]}"
            doc = [task_path, entries]
            stored = yield ("set", key, doc, _Kw(only_if_absent=regular))
            if stored and leaves:
                self._remember(thread_id, ns, _Doc(key, doc, leaves, 0))

    # ------------------------------------------------------------------ read
    def _decode_writes(self, writes: list[tuple[str, Any]], items: dict[ItemId, Any]) -> list[PendingWrite]:
        chosen: dict[tuple[str, int], tuple[str, str, int, Any]] = {}
        for key, (path, entries) in writes:
            task_id = _unpart(key.rsplit(":", 2)[1])
            for idx, channel, value in entries:
                if idx >= 0 and (task_id, idx) in chosen:
                    continue  # a repeated put_writes does not replace regular writes
                chosen[(task_id, idx)] = (path, task_id, idx, (channel, value))
        ordered = sorted(chosen.values(), key=lambda e: writes_sort_key(e[0], e[1], e[2]))
        codec = self._codec
        return [(e[1], e[3][0], codec.decode(e[3][1], items)) for e in ordered]

    def _items_steps(self, thread_id: str, ns: str, wanted: Iterable[ItemId]) -> Steps[dict[ItemId, Any]]:
        """The stored items ``wanted`` (one ``mget``); missing ones are left out."""
        ids = list(dict.fromkeys(wanted))
        if not ids:
            return {}
        found = yield ("mget", [self._item_key(thread_id, ns, i) for i in ids])
        return {i: v for i, v in zip(ids, found, strict=True) if v is not None}

    def _tuple_steps(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        record: dict[str, Any],
        *,
        remember: bool,
        writes: list[tuple[str, Any]] | None = None,
    ) -> Steps[CheckpointTuple]:
        """Rebuild a checkpoint from its record (``writes``: its pending writes' (key, value), when already read)."""
        refs: dict[str, list[Any]] = record["r"]
        requests: list[Request] = []
        if writes is None:
            requests.append(("keys", self._writes_pattern(thread_id, ns, checkpoint_id)))
        known: dict[str, list[Any]] = {}
        to_read: dict[str, list[list[Any]]] = {}
        wanted: set[ItemId] = set()
        for channel, ref in refs.items():
            if ref[0] == "l":
                # What this process already holds of the value is not read again (runs never change).
                runs = ref[1]
                cached = self._cache.get((thread_id, ns, channel))
                if cached is not None and cached.items is not None:
                    rest = _after(runs, cached.ref[1])
                    if rest is not None:  # we hold its start
                        known[channel], runs = cached.items, rest
                    elif _after(cached.ref[1], runs) is not None:  # we hold all of it (an older value)
                        known[channel], runs = cached.items[: sum(b - a + 1 for _, a, b in runs)], []
                to_read[channel] = runs
                wanted.update(_positions(runs))
            elif ref[0] != "k":
                _item_refs(ref, wanted)
        names = self._tables.get((thread_id, ns, record["n"])) if "n" in record else None
        table_keys = [self._k("n", thread_id, ns, record["n"])] if "n" in record and names is None else []
        blob_keys = [*table_keys, *(ref[1] for ref in refs.values() if ref[0] == "k")]
        item_ids = list(wanted)
        fetch = blob_keys + [self._item_key(thread_id, ns, i) for i in item_ids]
        if fetch:
            requests.append(("mget", fetch))
        results = (yield ("gather", requests)) if requests else []
        if writes is None:
            write_keys = results[0]
            stored = (yield ("mget", write_keys)) if write_keys else []
            writes = [(k, v) for k, v in zip(write_keys, stored, strict=True) if v is not None]
        fetched = results[-1] if fetch else []
        blobs = dict(zip(blob_keys, fetched[: len(blob_keys)], strict=True))
        if table_keys:
            names = blobs.pop(table_keys[0])
            if names is not None:
                self._tables.put((thread_id, ns, record["n"]), names)
        items = {i: v for i, v in zip(item_ids, fetched[len(blob_keys) :], strict=True) if v is not None}
        more: set[ItemId] = set()  # items that pending writes and large values refer to
        for _, (_, entries) in writes:
            for entry in entries:
                _item_refs(entry[2], more)
        for blob in blobs.values():
            if blob is not None:
                _item_refs(blob, more)
        items.update((yield from self._items_steps(thread_id, ns, more - items.keys())))
        codec = self._codec
        body = self._unbody(checkpoint_id, record, names)
        versions = body.get("channel_versions", {})
        values: dict[str, Any] = {}
        for channel, ref in refs.items():
            if ref[0] == "l":
                read = [items.get(i) for i in _positions(to_read[channel])]
                values[channel] = [*known.get(channel, ()), *(codec.decode(v, items) for v in read if v is not None)]
                complete = all(v is not None for v in read)
                if remember and complete and channel in versions:
                    value = values[channel]
                    self._cache.put((thread_id, ns, channel), _Cached(versions[channel], list(value), ref), len(value))
            elif ref[0] == "k":
                stored_blob = blobs.get(ref[1])
                if stored_blob is not None:
                    values[channel] = codec.decode(stored_blob, items)
            else:
                values[channel] = codec.decode(ref, items)
        checkpoint = cast(Checkpoint, {**body, "channel_values": values})
        parent = record.get("p")
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
            checkpoint=checkpoint,
            metadata=cast(CheckpointMetadata, codec.decode(record["m"])),
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
                if parent
                else None
            ),
            pending_writes=self._decode_writes(writes, items),
        )

    def _record_steps(self, config: RunnableConfig) -> Steps[tuple[str, str, str, dict[str, Any]] | None]:
        """(thread, namespace, checkpoint id, record) of ``config``'s checkpoint, else of the newest."""
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        checkpoint_id = conf.get("checkpoint_id")
        if checkpoint_id:
            record = yield ("get", self._k("c", thread_id, ns, checkpoint_id))
            return None if record is None else (thread_id, ns, checkpoint_id, record)
        record = yield ("get", self._k("h", thread_id, ns))
        known = self._heads.get((thread_id, ns))
        if record is None or record["id"] != known:
            # Not the head this process wrote or read last: another process changed the thread (or deleted
            # it). What this process remembers of it is dropped, so the next put stores no stale reference.
            self._forget(thread_id, ns)
        if record is None:
            return None
        self._heads.put((thread_id, ns), record["id"])
        return thread_id, ns, record["id"], record

    def _get_tuple_steps(self, config: RunnableConfig) -> Steps[CheckpointTuple | None]:
        found = yield from self._record_steps(config)
        if found is None:
            return None
        thread_id, ns, checkpoint_id, record = found
        return (yield from self._tuple_steps(thread_id, ns, checkpoint_id, record, remember=True))

    def _tail_steps(self, config: RunnableConfig, channel: str, n: int) -> Steps[_Items]:
        found = yield from self._record_steps(config)
        ref = found[3]["r"].get(channel) if found is not None else None
        if found is None or ref is None or n <= 0:
            return []
        thread_id, ns = found[0], found[1]
        codec = self._codec
        if ref[0] != "l":
            stored = (yield ("get", ref[1])) if ref[0] == "k" else ref
            if stored is None:
                return []
            items = yield from self._items_steps(thread_id, ns, _item_refs(stored, set()))
            value = codec.decode(stored, items)
            return list(value[-n:]) if isinstance(value, list) else [value]
        picks: list[list[Any]] = []
        need = n
        for gen, start, end in reversed(ref[1]):
            take = min(need, end - start + 1)
            picks.append([gen, end - take + 1, end])
            need -= take
            if need == 0:
                break
        wanted = list(_positions(picks[::-1]))
        items = yield from self._items_steps(thread_id, ns, wanted)
        return [codec.decode(items[i], items) for i in wanted if i in items]

    def _list_steps(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Steps[None]:
        if config is not None:
            conf = config["configurable"]
            thread_id = str(conf["thread_id"])
            ns_given = conf.get("checkpoint_ns")
            namespaces = [str(ns_given)] if ns_given is not None else (yield from self._head_namespaces(thread_id))
            scopes = [(thread_id, ns) for ns in namespaces]
            only_id = conf.get("checkpoint_id")
        else:
            heads = yield ("keys", f"{_glob(self.prefix)}h:*")
            scopes = []
            for key in heads:
                thread_part, ns_part = key[len(self.prefix) + 2 :].split(":")
                scopes.append((_unpart(thread_part), _unpart(ns_part)))
            only_id = None
        before_id = before["configurable"].get("checkpoint_id") if before else None
        found: list[tuple[str, str, str]] = []
        for thread_id, ns in scopes:
            for checkpoint_id in (yield from self._checkpoint_ids(thread_id, ns)):
                if only_id and checkpoint_id != only_id:
                    continue
                if before_id and checkpoint_id >= before_id:
                    continue
                found.append((checkpoint_id, thread_id, ns))
        found.sort(reverse=True)
        write_keys: dict[tuple[str, str, str], list[str]] = {}
        for thread_id, ns in scopes if found else ():
            prefix_len = len(self._k("w", thread_id, ns, ""))
            for key in (yield ("keys", _glob(self._k("w", thread_id, ns, "")) + "*")):
                checkpoint_id = key[prefix_len:].split(":", 1)[0]
                write_keys.setdefault((thread_id, ns, checkpoint_id), []).append(key)
        remaining = limit
        codec = self._codec
        for page_start in range(0, len(found), _PAGE):
            if remaining is not None and remaining <= 0:
                return
            page = found[page_start : page_start + _PAGE]
            records = yield ("mget", [self._k("c", t, n, c) for c, t, n in page])
            # The page's pending writes in one read: their keys are listed once per namespace.
            page_write_keys = [k for c, t, n in page for k in write_keys.get((t, n, c), ())]
            stored_writes = (yield ("mget", page_write_keys)) if page_write_keys else []
            stored_of = dict(zip(page_write_keys, stored_writes, strict=True))
            out: list[CheckpointTuple] = []
            for scope, record in zip(page, records, strict=True):
                if record is None:
                    continue
                checkpoint_id, thread_id, ns = scope
                keys = write_keys.get((thread_id, ns, checkpoint_id), [])
                writes = [(k, stored_of[k]) for k in keys if stored_of.get(k) is not None]
                if filter:
                    meta = codec.decode(record["m"])
                    if not all(meta.get(k) == v for k, v in filter.items()):
                        continue
                out.append(
                    (yield from self._tuple_steps(thread_id, ns, checkpoint_id, record, remember=False, writes=writes))
                )
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        break
            yield ("emit", out)

    # ------------------------------------------------------------------ delete, copy, prune
    def _thread_keys(self, thread_id: str) -> Steps[list[str]]:
        """Every key of the thread, in the order they can be deleted without a checkpoint ever reading back
        partly: the heads first (the thread is then gone for ``get_tuple`` and ``list``), the records, and only
        then what records refer to (writes, large values, name tables, items)."""
        keys: list[str] = []
        for kind in "hcwbni":
            keys.extend((yield ("keys", self._pattern(kind, thread_id))))
        return keys

    def _delete_keys(self, keys: list[str]) -> Steps[None]:
        for start in range(0, len(keys), _PAGE):
            yield ("gather", [("delete", k) for k in keys[start : start + _PAGE]])

    def _run_markers(self, thread_id: str, record_keys: list[str]) -> Steps[list[str]]:
        markers: set[str] = set()
        codec = self._codec
        for start in range(0, len(record_keys), _PAGE):
            records = yield ("mget", record_keys[start : start + _PAGE])
            for record in records:
                if record is not None:
                    run_id = codec.decode(record["m"]).get("run_id")
                    if isinstance(run_id, str) and run_id:
                        markers.add(f"{self.prefix}u:{_part(run_id)}:{_part(thread_id)}")
        return sorted(markers)

    def _delete_thread_steps(self, thread_id: str) -> Steps[None]:
        self._forget(thread_id)
        keys = yield from self._thread_keys(thread_id)
        record_prefix = f"{self.prefix}c:"
        markers = yield from self._run_markers(thread_id, [k for k in keys if k.startswith(record_prefix)])
        yield from self._delete_keys(keys + markers)
        self._forget(thread_id)

    def _drop_checkpoints(self, thread_id: str, ns: str, doomed: list[str]) -> Steps[None]:
        """Delete some checkpoints of one namespace (records, writes, large values) and fix its head.

        The head moves off the doomed checkpoints first, so an interrupted call leaves no head naming a
        checkpoint that is partly deleted (and its retry still finds what is left to delete).
        Items stay: the checkpoints left may hold them (a chat's messages).
        """
        gone = set(doomed)
        left = [c for c in (yield from self._checkpoint_ids(thread_id, ns)) if c not in gone]
        head_key = self._k("h", thread_id, ns)
        self._forget(thread_id)
        if left:
            newest = max(left)
            record = yield ("get", self._k("c", thread_id, ns, newest))
            if record is not None:
                yield ("set", head_key, {**record, "id": newest})
        else:
            yield ("delete", head_key)
        keys: list[str] = []
        for checkpoint_id in doomed:
            keys += yield ("keys", self._writes_pattern(thread_id, ns, checkpoint_id))
            keys += yield ("keys", _glob(self._k("b", thread_id, ns, checkpoint_id)) + ":*")
        # The records last: a retry finds a doomed checkpoint by its record.
        yield from self._delete_keys(keys + [self._k("c", thread_id, ns, c) for c in doomed])
        self._forget(thread_id)

    def _delete_for_runs_steps(self, run_ids: Sequence[str]) -> Steps[None]:
        wanted = set(run_ids)
        codec = self._codec
        for run_id in run_ids:
            markers = yield ("keys", f"{_glob(self.prefix)}u:{_glob(_part(run_id))}:*")
            for marker in markers:
                thread_id = _unpart(marker.rsplit(":", 1)[1])
                # From the records, not the heads: a namespace whose head an interrupted call deleted first
                # still has records to delete.
                records = yield ("keys", self._pattern("c", thread_id))
                for ns in sorted({_unpart(key.rsplit(":", 2)[1]) for key in records}):
                    ids = yield from self._checkpoint_ids(thread_id, ns)
                    records = yield ("mget", [self._k("c", thread_id, ns, c) for c in ids])
                    doomed = [
                        c
                        for c, r in zip(ids, records, strict=True)
                        if r is not None and codec.decode(r["m"]).get("run_id") in wanted
                    ]
                    if doomed:
                        yield from self._drop_checkpoints(thread_id, ns, doomed)
            yield from self._delete_keys(markers)

    def _prune_steps(self, thread_ids: Sequence[str], strategy: str) -> Steps[None]:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            if strategy == "delete":
                yield from self._delete_thread_steps(thread_id)
                continue
            for ns in (yield from self._head_namespaces(thread_id)):
                ids = yield from self._checkpoint_ids(thread_id, ns)
                if len(ids) > 1:
                    yield from self._drop_checkpoints(thread_id, ns, sorted(ids)[:-1])

    def _copy_thread_steps(self, source: str, target: str) -> Steps[None]:
        """Every key of ``source`` stored again under ``target`` (items keep their generation and position)."""
        self._forget(target)
        codec = self._codec
        for ns in (yield from self._head_namespaces(source)):
            keys: list[str] = []
            for kind in "cwibn":
                keys += yield ("keys", self._pattern(kind, source, ns))
            keys.append(self._k("h", source, ns))
            cut = len(self._k("c", source, ns))  # every kind is one letter
            for start in range(0, len(keys), _PAGE):
                page = keys[start : start + _PAGE]
                out: list[tuple[str, Any]] = []
                for key, stored in zip(page, (yield ("mget", page)), strict=True):
                    if stored is None:
                        continue
                    kind = key[len(self.prefix)]
                    if kind in "ch":
                        refs = {
                            channel: ["k", self._k("b", target, ns) + ref[1][len(self._k("b", source, ns)) :]]
                            if ref[0] == "k"
                            else ref
                            for channel, ref in stored["r"].items()
                        }
                        stored = {**stored, "r": refs}
                        run_id = codec.decode(stored["m"]).get("run_id")
                        if isinstance(run_id, str) and run_id:
                            out.append((f"{self.prefix}u:{_part(run_id)}:{_part(target)}", target))
                    out.append((self._k(kind, target, ns) + key[cut:], stored))
                if out:
                    yield ("mset", out)


class _Saver(_SaverCore):
    """The checkpointer's public methods, sync and async, each running one generator of `_SaverCore`."""

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint of ``config`` (its ``checkpoint_id``, else the newest), with its pending writes."""
        return self._run(self._get_tuple_steps(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async `get_tuple`."""
        return await self._arun(self._get_tuple_steps(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of one thread (and namespace, when given) or of every thread."""
        return self._iter(self._list_steps(config, filter=filter, before=before, limit=limit))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async `list`."""
        async for item in self._aiter(self._list_steps(config, filter=filter, before=before, limit=limit)):
            yield item

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint in one ``mset``: a list channel's new items, the record and the thread's head."""
        return self._run(self._put_steps(config, checkpoint, metadata, new_versions))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async `put`."""
        return await self._arun(self._put_steps(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Store a task's pending writes for the checkpoint of ``config`` (one ``set``)."""
        self._run(self._put_writes_steps(config, writes, task_id, task_path))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Async `put_writes`."""
        await self._arun(self._put_writes_steps(config, writes, task_id, task_path))

    def tail(self, config: RunnableConfig, channel: str = "messages", n: int = 20) -> _Items:
        """The last ``n`` items of a list channel (the newest checkpoint's, or ``config``'s checkpoint_id's).

        Reads only those items (two round trips); ``graph.get_state(config).values[channel][-n:]``
        must rebuild the whole state first.
        """
        return self._run(self._tail_steps(config, channel, n))

    async def atail(self, config: RunnableConfig, channel: str = "messages", n: int = 20) -> _Items:
        """Async `tail`."""
        return await self._arun(self._tail_steps(config, channel, n))

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and item of ``thread_id``."""
        self._run(self._delete_thread_steps(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async `delete_thread`."""
        await self._arun(self._delete_thread_steps(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        self._run(self._delete_for_runs_steps(run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async `delete_for_runs`."""
        await self._arun(self._delete_for_runs_steps(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and item of a thread to another thread."""
        self._run(self._copy_thread_steps(source_thread_id, target_thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async `copy_thread`."""
        await self._arun(self._copy_thread_steps(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the newest checkpoint of each namespace (``keep_latest``), or delete the threads (``delete``)."""
        self._run(self._prune_steps(thread_ids, strategy))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async `prune`."""
        await self._arun(self._prune_steps(thread_ids, strategy))


# --------------------------------------------------------------------------- running the steps


class _Kw(dict[str, Any]):
    """Keyword arguments of a storage request (its last element)."""


def _split_args(request: Request) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if len(request) > 1 and type(request[-1]) is _Kw:
        return request[1:-1], request[-1]
    return request[1:], {}


def _call_sync(db: Database, request: Request) -> Any:
    op = request[0]
    if op == "gather":
        return [_call_sync(db, r) for r in request[1]]
    if op == "emit":
        raise RuntimeError("emit outside an iterator")
    args, kwargs = _split_args(request)
    return getattr(db, op)(*args, **kwargs)


async def _call_async(db: AsyncDatabase, request: Request) -> Any:
    op = request[0]
    if op == "gather":
        return list(await asyncio.gather(*(_call_async(db, r) for r in request[1])))
    if op == "emit":
        raise RuntimeError("emit outside an iterator")
    args, kwargs = _split_args(request)
    return await getattr(db, op)(*args, **kwargs)


def _operation(steps: Steps[Any]) -> str:
    """The public name of the operation a generator of steps implements (``_put_steps`` -> ``put``)."""
    name = str(getattr(steps, "__name__", "call"))
    return name.removeprefix("_").removesuffix("_steps")


class _SyncRunner:
    """Runs generators of storage requests on a sync `Database`; the async methods run them in a worker thread."""

    database: Database

    def _run(self, steps: Steps[T]) -> T:
        result: Any = None
        while True:
            try:
                request = steps.send(result)
            except StopIteration as stop:
                return cast(T, stop.value)
            result = _call_sync(self.database, request)

    async def _arun(self, steps: Steps[T]) -> T:
        return await asyncio.to_thread(self._run, steps)

    def _iter(self, steps: Steps[None]) -> Iterator[Any]:
        result: Any = None
        while True:
            try:
                request = steps.send(result)
            except StopIteration:
                return
            if request[0] == "emit":
                yield from request[1]
                result = None
            else:
                result = _call_sync(self.database, request)

    async def _aiter(self, steps: Steps[None]) -> AsyncIterator[Any]:
        for item in await asyncio.to_thread(lambda: [*self._iter(steps)]):
            yield item


class _AsyncRunner:
    """Runs generators of storage requests on an `AsyncDatabase`; the sync methods work from other threads
    while the event loop that first used the object is running (as LangGraph's async savers do)."""

    database: AsyncDatabase
    _loop: asyncio.AbstractEventLoop | None = None

    async def _arun(self, steps: Steps[T]) -> T:
        self._loop = asyncio.get_running_loop()
        result: Any = None
        while True:
            try:
                request = steps.send(result)
            except StopIteration as stop:
                return cast(T, stop.value)
            result = await _call_async(self.database, request)

    async def _aiter(self, steps: Steps[None]) -> AsyncIterator[Any]:
        self._loop = asyncio.get_running_loop()
        result: Any = None
        while True:
            try:
                request = steps.send(result)
            except StopIteration:
                return
            if request[0] == "emit":
                for item in request[1]:
                    yield item
                result = None
            else:
                result = await _call_async(self.database, request)

    def _run(self, steps: Steps[T]) -> T:
        return cast(T, self._blocking(self._arun(steps), _operation(steps)))

    def _iter(self, steps: Steps[None]) -> Iterator[Any]:
        async def collect() -> list[Any]:
            return [item async for item in self._aiter(steps)]

        return iter(cast(list[Any], self._blocking(collect(), _operation(steps))))

    def _blocking(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            coro.close()
            raise asyncio.InvalidStateError(
                f"{type(self).__name__}.{name} is synchronous: use the async method (a{name}) in the event "
                "loop, or call it from another thread while the loop that first used this object runs"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


class KVStoreSaver(_SyncRunner, _Saver):
    """A LangGraph checkpointer on a sync kvstore database (memory, SQLite or PostgreSQL).

    The ``a``-prefixed methods run the sync ones in a worker thread, so the saver also
    serves ``graph.ainvoke``; `AsyncKVStoreSaver` is native on an `AsyncDatabase`.

    Storage: a ``put`` is one ``mset`` (the list channels' new items, the record, the
    thread's head) and a ``put_writes`` one ``set``; reading the newest checkpoint in a
    warm saver is a ``get`` and a ``keys``. Each message of a chat is stored once, as an
    item of its list channel: pending writes and the input checkpoint that held it inline
    are stored again with a reference to that item by the put that appends it.

    A list value is recognised as extending the stored one by comparing its items with
    the value this process last stored or read for that (thread, namespace, channel),
    by identity then ``==``: a message mutated *in place* after it was checkpointed is
    not stored again (LangGraph changes state through reducers; ``add_messages``
    replacing a message by id is a new value and is stored whole). A thread changed or
    deleted by another process is noticed when this saver next reads its newest
    checkpoint (every graph invocation starts with that read): what it remembered of
    the thread is dropped and the next put stores the value whole. Reading a checkpoint
    reads only the items of a list this process does not already hold (a turn of a chat
    reads no message back). `tail` reads the last items of a list channel without
    rebuilding the state. ``delete_thread``, ``prune`` and ``delete_for_runs`` cost one
    round trip per key removed (kvstore has no multi-key delete); ``prune`` keeps the
    items of a list channel (the checkpoints left refer to them).

    Args:
        database: The database tier, e.g. ``StorageManager().database``. Not closed by the saver.
        serde: A serializer for every value; by default plain JSON and LangChain messages
            are stored as JSON and the rest goes through `safe_serializer`.
        prefix: Prepended to every key the saver writes.
        cache_size: How many list items (messages), across threads, this process keeps to
            recognise a list that extends the stored one and to rebuild it without reading
            what it already holds.

    Example:
        >>> saver = KVStoreSaver(StorageManager().database)
        >>> graph = builder.compile(checkpointer=saver)
    """

    def __init__(
        self,
        database: Database,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "langgraph:",
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(serde=serde, prefix=prefix, cache_size=cache_size)
        self.database = database

    def __repr__(self) -> str:
        return f"<KVStoreSaver prefix={self.prefix!r} on {self.database!r}>"


class AsyncKVStoreSaver(_AsyncRunner, _Saver):
    """`KVStoreSaver` on an async kvstore database: the ``a``-methods are native.

    The sync methods work from other threads while the event loop that first used
    the saver is running (as LangGraph's async savers do), e.g. ``graph.get_state``
    called from a worker thread. Arguments as for `KVStoreSaver`, with ``database`` an
    `AsyncDatabase` (e.g. ``AsyncStorageManager().database``).
    """

    def __init__(
        self,
        database: AsyncDatabase,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "langgraph:",
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(serde=serde, prefix=prefix, cache_size=cache_size)
        self.database = database

    def __repr__(self) -> str:
        return f"<AsyncKVStoreSaver prefix={self.prefix!r} on {self.database!r}>"


def copy_checkpoints(
    source: BaseCheckpointSaver[Any], target: BaseCheckpointSaver[Any], *, thread_ids: Iterable[str] | None = None
) -> int:
    """Copy checkpoints and their pending writes from any saver (``PostgresSaver``, ``SqliteSaver``...) to another.

    Oldest first, thread by thread, so a `KVStoreSaver` target stores each message once.
    ``thread_ids`` limits the copy (and keeps memory bounded: without it the source's
    ``list(None)`` is read once to find the threads). Returns how many checkpoints were copied.
    """
    if thread_ids is None:
        thread_ids = sorted({str(t.config["configurable"]["thread_id"]) for t in source.list(None)})
    copied = 0
    for thread_id in thread_ids:
        tuples = [*source.list({"configurable": {"thread_id": thread_id}})]
        tuples.sort(key=lambda t: (t.config["configurable"].get("checkpoint_ns", ""), t.checkpoint["id"]))
        for found in tuples:
            conf = found.config["configurable"]
            parent = found.parent_config["configurable"].get("checkpoint_id") if found.parent_config else None
            config: RunnableConfig = {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": conf.get("checkpoint_ns", ""),
                    **({"checkpoint_id": parent} if parent else {}),
                }
            }
            stored = target.put(config, found.checkpoint, found.metadata, dict(found.checkpoint["channel_versions"]))
            by_task: dict[str, list[tuple[str, Any]]] = {}
            for task_id, channel, value in found.pending_writes or ():
                by_task.setdefault(task_id, []).append((channel, value))
            for task_id, writes in by_task.items():
                target.put_writes(stored, writes, task_id)
            copied += 1
    return copied


def copy_store_items(source: BaseStore, target: BaseStore, *, page: int = 1000) -> int:
    """Copy every item of a LangGraph store (``SqliteStore``, ``PostgresStore``...) to another; returns the count.

    TTLs are not carried over (LangGraph's store API does not expose them): pass
    ``ttl`` when re-putting if you need it.
    """
    copied, offset = 0, 0
    while namespaces := source.list_namespaces(limit=page, offset=offset):
        offset += len(namespaces)
        for namespace in namespaces:
            start = 0
            while found := source.search(namespace, limit=page, offset=start, refresh_ttl=False):
                start += len(found)
                mine = [i for i in found if i.namespace == namespace]  # deeper namespaces come on their own
                target.batch([PutOp(i.namespace, i.key, i.value) for i in mine])
                copied += len(mine)
    return copied


# --------------------------------------------------------------------------- store


def _now() -> datetime:
    return datetime.now(UTC)


def _compare(actual: Any, wanted: Any) -> bool:
    """LangGraph's filter semantics: nested dicts match field by field, ``$``-operators compare."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(actual, op, v) for op, v in wanted.items())
        return isinstance(actual, dict) and all(_compare(actual.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(wanted)
            and all(_compare(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def _operator(actual: Any, op: str, wanted: Any) -> bool:
    if op == "$eq":
        return bool(actual == wanted)
    if op == "$ne":
        return bool(actual != wanted)
    compare: dict[str, Callable[[float, float], bool]] = {
        "$gt": float.__gt__,
        "$gte": float.__ge__,
        "$lt": float.__lt__,
        "$lte": float.__le__,
    }
    if op not in compare:
        raise ValueError(f"unsupported filter operator {op!r}")
    try:
        return compare[op](float(actual), float(wanted))
    except (TypeError, ValueError):
        return False


def _matches(namespace: tuple[str, ...], condition: MatchCondition) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    if condition.match_type == "suffix":
        namespace, path = namespace[::-1], tuple(path)[::-1]
    return all(p == "*" or n == p for n, p in zip(namespace, path, strict=False))


class _StoreCore:
    """The store's logic, free of I/O. An item lives at ``prefix + "a.b.c" + ".." + key``
    (labels cannot contain ``.`` nor be empty, so the first ``..`` ends the namespace),
    as ``{"v": value, "c": created, "u": updated, "t": ttl minutes}`` with kvstore's TTL.
    """

    supports_ttl: bool = True
    ttl_config: TTLConfig | None

    def __init__(self, *, prefix: str, ttl: TTLConfig | None) -> None:
        self.prefix = prefix
        self.ttl_config = ttl

    def _run(self, steps: Steps[T]) -> T:
        raise NotImplementedError

    async def _arun(self, steps: Steps[T]) -> T:
        raise NotImplementedError

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: reads in one ``mget``, writes in one ``mset``."""
        return self._run(self._batch_steps(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async `batch`."""
        return await self._arun(self._batch_steps(list(ops)))

    def _key(self, namespace: tuple[str, ...], key: str) -> str:
        return f"{self.prefix}{'.'.join(namespace)}..{key}"

    def _split(self, stored_key: str) -> tuple[tuple[str, ...], str]:
        rest = stored_key[len(self.prefix) :]
        cut = rest.index("..")
        return tuple(rest[:cut].split(".")), rest[cut + 2 :]

    def _ns_pattern(self, prefix: Sequence[str]) -> str:
        return f"{_glob(self.prefix)}{_glob('.'.join(prefix))}.*" if prefix else f"{_glob(self.prefix)}*"

    @staticmethod
    def _item(cls: Callable[..., T], namespace: tuple[str, ...], key: str, stored: dict[str, Any]) -> T:
        return cls(
            namespace=namespace,
            key=key,
            value=stored["v"],
            created_at=datetime.fromisoformat(stored["c"]),
            updated_at=datetime.fromisoformat(stored["u"]),
        )

    def _refresh(self, pairs: Iterable[tuple[str, dict[str, Any]]]) -> list[Request]:
        return [("expire", k, s["t"] * 60) for k, s in pairs if s.get("t")]

    def _batch_steps(self, ops: Iterable[Op]) -> Steps[list[Result]]:
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        puts: dict[str, tuple[int, PutOp]] = {}
        reads: list[tuple[int, GetOp]] = []
        for i, op in enumerate(ops):
            if isinstance(op, PutOp):
                puts[self._key(op.namespace, op.key)] = (i, op)  # the last put of a key wins
            elif isinstance(op, GetOp):
                reads.append((i, op))
        read_keys = [self._key(op.namespace, op.key) for _, op in reads]
        write_keys = [k for k, (_, op) in puts.items() if op.value is not None]
        stored = (yield ("mget", read_keys + write_keys)) if read_keys or write_keys else []
        refresh: list[tuple[str, dict[str, Any]]] = []
        for (i, op), key, found in zip(reads, read_keys, stored, strict=False):
            if found is not None:
                results[i] = self._item(Item, op.namespace, op.key, found)
                if op.refresh_ttl:
                    refresh.append((key, found))
        previous = dict(zip(write_keys, stored[len(read_keys) :], strict=True))
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[i], hits = yield from self._search_steps(op)
                if op.refresh_ttl:
                    refresh.extend(hits)
            elif isinstance(op, ListNamespacesOp):
                results[i] = yield from self._list_namespaces_steps(op)
        if refresh:
            yield ("gather", self._refresh(refresh))
        now = _now().isoformat()
        writes: list[tuple[str, Any, float | None]] = []
        deletes: list[str] = []
        for key, (_, op) in puts.items():
            if op.value is None:
                deletes.append(key)
                continue
            old = previous.get(key)
            ttl = op.ttl
            value = {"v": dict(op.value), "c": old["c"] if old else now, "u": now, "t": ttl}
            writes.append((key, value, ttl * 60 if ttl else None))
        if writes:
            yield ("mset", writes)
        if deletes:
            yield ("gather", [("delete", k) for k in deletes])
        return results

    def _search_steps(self, op: SearchOp) -> Steps[tuple[list[SearchItem], list[tuple[str, dict[str, Any]]]]]:
        keys = yield ("keys", self._ns_pattern(op.namespace_prefix))
        found: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(keys), 500):
            page = keys[start : start + 500]
            for key, stored in zip(page, (yield ("mget", page)), strict=True):
                if stored is None:
                    continue  # expired between the listing and the read
                if op.filter and not all(_compare(stored["v"].get(k), v) for k, v in op.filter.items()):
                    continue
                found.append((key, stored))
        found.sort(key=lambda pair: pair[1]["u"], reverse=True)
        chosen = found[op.offset : op.offset + op.limit]
        items = [self._item(SearchItem, *self._split(k), s) for k, s in chosen]
        return items, chosen

    def _list_namespaces_steps(self, op: ListNamespacesOp) -> Steps[list[tuple[str, ...]]]:
        literal: list[str] = []
        for condition in op.match_conditions or ():
            if condition.match_type == "prefix":
                for label in condition.path:
                    if label == "*":
                        break
                    literal.append(label)
                break
        seen: set[tuple[str, ...]] = set()
        for key in (yield ("keys", self._ns_pattern(literal))):
            namespace = self._split(key)[0]
            if all(_matches(namespace, c) for c in op.match_conditions or ()):
                seen.add(namespace[: op.max_depth] if op.max_depth is not None else namespace)
        return sorted(seen)[op.offset : op.offset + op.limit]


class KVStoreStore(_SyncRunner, _StoreCore, BaseStore):
    """LangGraph's long-term memory store on a sync kvstore database (any backend).

    ``put(..., ttl=minutes)`` uses kvstore's own TTL, so an expired item is never
    returned (``get``, ``search``, ``list_namespaces``) on any backend; reads refresh
    the TTL unless ``refresh_ttl=False`` (or ``ttl={"refresh_on_read": False}``).
    ``search`` filters by namespace prefix and by value fields (LangGraph's operators
    ``$eq $ne $gt $gte $lt $lte``), newest first; there is no vector index, so a
    ``query`` is ignored. ``abatch`` runs ``batch`` in a worker thread.

    Args:
        database: The database tier, e.g. ``StorageManager().database``. Not closed by the store.
        prefix: Prepended to every key the store writes.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` in minutes, ``refresh_on_read``).
    """

    def __init__(self, database: Database, *, prefix: str = "langgraph-store:", ttl: TTLConfig | None = None) -> None:
        _StoreCore.__init__(self, prefix=prefix, ttl=ttl)
        self.database = database

    def __repr__(self) -> str:
        return f"<KVStoreStore prefix={self.prefix!r} on {self.database!r}>"


class AsyncKVStoreStore(_AsyncRunner, _StoreCore, BaseStore):
    """`KVStoreStore` on an async kvstore database: ``abatch`` is native; ``batch`` works
    from other threads while the event loop that first used the store is running.
    Arguments as for `KVStoreStore`, with ``database`` an `AsyncDatabase`.
    """

    def __init__(
        self, database: AsyncDatabase, *, prefix: str = "langgraph-store:", ttl: TTLConfig | None = None
    ) -> None:
        _StoreCore.__init__(self, prefix=prefix, ttl=ttl)
        self.database = database

    def __repr__(self) -> str:
        return f"<AsyncKVStoreStore prefix={self.prefix!r} on {self.database!r}>"
