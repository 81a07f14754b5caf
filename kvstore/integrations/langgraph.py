"""LangGraph on kvstore: a checkpointer that stores message lists as deltas, and a long-term memory store.

Install with ``pip install "kvstore-sdk[langgraph]"``.

- `KVStoreSaver` / `AsyncKVStoreSaver` are ``BaseCheckpointSaver`` s on the database tier
  (any backend: memory, SQLite, PostgreSQL). A channel whose new value extends its
  previous value (the message list of a chat) costs one ``extend`` of the new items
  on a kvstore list; the checkpoint records which ranges of that list make up the
  value, and a read rebuilds it with ``get_range``. Storage grows with the messages,
  not with messages x checkpoints. Anything else is stored whole, small values inline
  in the checkpoint record and large ones once per checkpoint that changes them.
- `KVStoreStore` / `AsyncKVStoreStore` are ``BaseStore`` s (get, put, delete, search
  by namespace prefix and value filter, list_namespaces) with TTL from kvstore itself:
  an expired item is never returned, on any backend. No vector search: a ``query``
  is ignored and results come newest first.
- `copy_checkpoints` / `copy_store_items` migrate from LangGraph's own savers and stores.

Nothing is pickled. Values that are plain JSON, and LangChain messages, are stored
as JSON; anything else goes through LangGraph's ``JsonPlusSerializer`` with unpickling
off and its strict msgpack allow-list (LangGraph widens it with the types of the
graph's state when the graph is compiled), stored as base64 text.

Each saver and store has one implementation of its logic, written as a generator of
storage requests; the sync classes run it on a `Database`, the async ones on an
`AsyncDatabase`.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
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


class _Codec:
    """Values to JSON documents and back: plain JSON and LangChain messages as JSON, the rest via ``serde``."""

    def __init__(self, serde: SerializerProtocol, *, json_first: bool) -> None:
        self.serde = serde
        self.json_first = json_first

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

    def decode(self, data: Any) -> Any:
        tag = data[0]
        if tag == "j":
            return data[1]
        if tag == "m":
            return _MESSAGE_CLASSES[data[1]](**data[2])
        if tag == "L":
            return [self.decode(v) for v in data[1]]
        if tag == "D":
            return {k: self.decode(v) for k, v in data[1].items()}
        if tag == "s":
            return self.serde.loads_typed((data[1], base64.b64decode(data[2])))
        raise ValueError(f"unknown stored value tag {tag!r}")


class _Cached(NamedTuple):
    version: Any
    items: list[Any] | None  # the list value the segments hold (list channels only)
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

    def drop(self, match: Callable[[Any], bool]) -> None:
        with self._lock:
            for key in [k for k in self._data if match(k)]:
                self._weight -= self._data.pop(key)[1]


def _after(full: list[list[int]], prefix: list[list[int]]) -> list[list[int]] | None:
    """The ranges of ``full`` past its first positions, when those are exactly ``prefix``'s; else None."""
    rest = [list(r) for r in full]
    i = 0
    for a, b in prefix:
        while a <= b:
            if i >= len(rest) or rest[i][0] != a:
                return None
            end = min(b, rest[i][1])
            a = end + 1
            if end == rest[i][1]:
                i += 1
            else:
                rest[i][0] = end + 1
    return rest[i:]


def _merge(segments: list[list[int]], start: int, end: int) -> list[list[int]]:
    if segments and segments[-1][1] + 1 == start:
        return [*segments[:-1], [segments[-1][0], end]]
    return [*segments, [start, end]]


def _exact(length: int) -> bool:
    # A length buffered during an outage (kvstore's LowerBound) is not a position.
    return getattr(length, "exact", True) is not False


# --------------------------------------------------------------------------- checkpointer


class _SaverLogic(BaseCheckpointSaver[int]):
    """The checkpointer's logic, free of I/O: each operation is a generator of storage requests.

    Keys (``p`` = ``prefix``, ``t``/``n``/``c`` = escaped thread id, namespace, channel):
    ``p c:t:n:<checkpoint id>`` the record (checkpoint, metadata, parent, how to rebuild
    each channel), ``p h:t:n`` a copy of the newest record, ``p w:t:n:<id>:<task>:<idx>`` the
    pending writes of one ``put_writes`` call, ``p l:t:n:c`` the list of a list channel's
    items, ``p b:t:n:<id>:c`` a large value, ``p u:<run id>:t`` which threads a run wrote to.
    """

    def __init__(self, *, serde: SerializerProtocol | None, prefix: str, cache_size: int) -> None:
        super().__init__(serde=serde or safe_serializer())
        self.prefix = prefix
        # Plain JSON and messages bypass the serializer only when the caller chose none.
        self._json_first = serde is None
        self._cache: _LRU[_Cached] = _LRU(cache_size)
        self._heads: _LRU[str] = _LRU(cache_size)
        self._lengths: _LRU[int] = _LRU(cache_size)  # list lengths this process saw after its own appends

    @property
    def _codec(self) -> _Codec:
        return _Codec(self.serde, json_first=self._json_first)

    # keys
    def _k(self, kind: str, thread_id: str, ns: str, *rest: str) -> str:
        return ":".join([f"{self.prefix}{kind}", _part(thread_id), _part(ns), *rest])

    def _pattern(self, kind: str, thread_id: str, ns: str | None = None) -> str:
        base = f"{_glob(self.prefix)}{kind}:{_glob(_part(thread_id))}:"
        return base + "*" if ns is None else f"{base}{_glob(_part(ns))}:*"

    def _head_namespaces(self, thread_id: str) -> Steps[list[str]]:
        keys = yield ("keys", f"{_glob(self.prefix)}h:{_glob(_part(thread_id))}:*")
        return [_unpart(k.rsplit(":", 1)[1]) for k in keys]

    def get_next_version(self, current: Any, channel: None) -> Any:
        """Integer versions (compact); a thread written with string versions keeps their format."""
        if isinstance(current, str):
            return f"{int(current.split('.')[0]) + 1:032}.{random.random():016}"
        return 1 if current is None else current + 1

    def _body(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """The checkpoint minus its values, for the record: plain JSON under short names when it can be."""
        body = {k: v for k, v in checkpoint.items() if k not in ("channel_values", "id")}
        if self._json_first and set(body) <= _SHORT.keys() and _is_json(body):
            return {_SHORT[k]: v for k, v in body.items()}
        return {"c": self._codec.encode(body)}

    def _unbody(self, record: dict[str, Any]) -> dict[str, Any]:
        if "c" in record:
            body: dict[str, Any] = self._codec.decode(record["c"])
        else:
            body = {long: record[short] for long, short in _SHORT.items() if short in record}
        return {**body, "id": record["id"]}

    # put
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
        refs: dict[str, list[Any]] = {}
        blobs: list[tuple[str, Any]] = []
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
                base: list[list[int]] = []
                new = value
                if cached is not None and cached.items is not None:
                    old = cached.items
                    if len(value) >= len(old) and value[: len(old)] == old:
                        base, new = cached.ref[1], value[len(old) :]
                if not new:
                    refs[channel] = ["l", base, cached.ref[2]] if cached is not None else ["l", base, None]
                    self._cache.put(key, _Cached(version, list(value), refs[channel]), len(value))
                    continue
                log = self._k("l", thread_id, ns, _part(channel))
                known = self._lengths.get(key)
                expected = known if known is not None else max(end for _, end in base) + 1 if base else None
                length = yield ("extend", log, [codec.encode(v) for v in new])
                start = length - len(new)
                if base and (not _exact(length) or start != expected):
                    # Someone else changed the list since we saw it (another process appended, or deleted
                    # the thread): the base may not be what it was. Store the whole value, safely.
                    base, new = [], value
                    length = yield ("extend", log, [codec.encode(v) for v in new])
                    start = length - len(new)
                if _exact(length):
                    self._lengths.put(key, length)
                if not _exact(length):
                    refs[channel] = codec.encode(value)
                    continue
                segments = _merge(base, start, length - 1) if base else [[start, length - 1]]
                # The generation names one lineage of appends: a value stored whole starts a new one,
                # so a cache holding an older lineage is never taken for this one.
                generation = cached.ref[2] if base and cached is not None else uuid.uuid4().hex[:12]
                refs[channel] = ["l", segments, generation]
                self._cache.put(key, _Cached(version, list(value), refs[channel]), len(value))
                continue
            encoded = codec.encode(value)
            if len(orjson.dumps(encoded)) > _INLINE_MAX:
                blob = self._k("b", thread_id, ns, checkpoint_id, _part(channel))
                blobs.append((blob, encoded))
                encoded = ["k", blob]
            refs[channel] = encoded
            self._cache.put(key, _Cached(version, None, encoded))
        meta = get_serializable_checkpoint_metadata(config, metadata)
        record = {"id": checkpoint_id, "p": parent_id, **self._body(checkpoint), "m": codec.encode(meta), "r": refs}
        items: list[tuple[str, Any]] = [*blobs, (self._k("c", thread_id, ns, checkpoint_id), record)]
        head = self._heads.get((thread_id, ns))
        if head is None or head <= checkpoint_id:
            items.append((self._k("h", thread_id, ns), record))
            self._heads.put((thread_id, ns), checkpoint_id)
        run_id = meta.get("run_id")
        if isinstance(run_id, str) and run_id:
            items.append((f"{self.prefix}u:{_part(run_id)}:{_part(thread_id)}", thread_id))
        yield ("mset", items)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}

    def _put_writes_steps(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Steps[None]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        codec = self._codec
        entries: list[list[Any]] = [
            [task_id, WRITES_IDX_MAP.get(channel, idx), channel, codec.encode(value), task_path]
            for idx, (channel, value) in enumerate(writes)
        ]
        # One value per call (a set is one statement; a list append is a transaction). Regular
        # writes of a task are stored once (a repeated call keeps the first, as LangGraph's savers
        # do); special ones (error, interrupt...) replace the previous of the same kind.
        regular = [e for e in entries if e[1] >= 0]
        special = [e for e in entries if e[1] < 0]
        base = self._k("w", thread_id, ns, conf["checkpoint_id"], _part(task_id))
        if regular:
            yield ("set", f"{base}:{regular[0][1]}", regular, _Kw(only_if_absent=True))
        if special:
            yield ("set", f"{base}:{special[0][1]}", special)

    def _writes_pattern(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return _glob(self._k("w", thread_id, ns, checkpoint_id)) + ":*"

    def _read_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> Steps[list[Any]]:
        """The stored write entries of a checkpoint, and their keys."""
        keys = yield ("keys", self._writes_pattern(thread_id, ns, checkpoint_id))
        stored = (yield ("mget", keys)) if keys else []
        return [(k, v) for k, v in zip(keys, stored, strict=True) if v is not None]

    # read
    def _decode_writes(self, entries: list[Any]) -> list[PendingWrite]:
        chosen: dict[tuple[str, int], Any] = {}
        for entry in entries:
            task_id, idx = entry[0], entry[1]
            if idx >= 0 and (task_id, idx) in chosen:
                continue  # a repeated put_writes does not replace regular writes
            chosen[(task_id, idx)] = entry
        ordered = sorted(chosen.values(), key=lambda e: writes_sort_key(e[4], e[0], e[1]))
        codec = self._codec
        return [(e[0], e[2], codec.decode(e[3])) for e in ordered]

    def _tuple_steps(
        self,
        thread_id: str,
        ns: str,
        record: dict[str, Any],
        *,
        remember: bool,
        write_entries: _Items | None = None,
    ) -> Steps[CheckpointTuple]:
        """Rebuild a checkpoint from its record (``write_entries``: its writes, when already read)."""
        checkpoint_id = record["id"]
        refs: dict[str, list[Any]] = record["r"]
        requests: list[Request] = []
        if write_entries is None:
            requests.append(("keys", self._writes_pattern(thread_id, ns, checkpoint_id)))
        plan: list[tuple[str, int]] = []  # (channel, how many requests)
        blob_keys = [ref[1] for ref in refs.values() if ref[0] == "k"]
        if blob_keys:
            requests.append(("mget", blob_keys))
        known: dict[str, list[Any]] = {}
        for channel, ref in refs.items():
            if ref[0] == "l":
                # What this process already holds of the value (same lineage) is not read again.
                segments = ref[1]
                cached = self._cache.get((thread_id, ns, channel))
                if cached is not None and cached.items is not None and cached.ref[2:] == ref[2:] and ref[2:]:
                    rest = _after(ref[1], cached.ref[1])
                    if rest is not None:  # we hold its start
                        known[channel], segments = cached.items, rest
                    elif _after(cached.ref[1], ref[1]) is not None:  # we hold all of it (an older value)
                        known[channel], segments = cached.items[: sum(b - a + 1 for a, b in ref[1])], []
                log = self._k("l", thread_id, ns, _part(channel))
                requests.extend(("get_range", log, a, b) for a, b in segments)
                plan.append((channel, len(segments)))
        results = (yield ("gather", requests)) if requests else []
        codec = self._codec
        position = 0
        if write_entries is None:
            write_keys = results[0]
            position = 1
            stored_writes = (yield ("mget", write_keys)) if write_keys else []
            write_entries = [e for stored in stored_writes if stored is not None for e in stored]
        writes = self._decode_writes(write_entries)
        blobs: dict[str, Any] = {}
        if blob_keys:
            blobs = dict(zip(blob_keys, results[position], strict=True))
            position += 1
        body = self._unbody(record)
        versions = body.get("channel_versions", {})
        values: dict[str, Any] = {}
        lists = dict(plan)
        for channel, ref in refs.items():
            if ref[0] == "l":
                items = [
                    *known.get(channel, ()),
                    *(codec.decode(v) for part in results[position : position + lists[channel]] for v in part),
                ]
                position += lists[channel]
                values[channel] = items
                if remember and channel in versions:
                    self._cache.put((thread_id, ns, channel), _Cached(versions[channel], list(items), ref), len(items))
            elif ref[0] == "k":
                stored = blobs.get(ref[1])
                if stored is not None:
                    values[channel] = codec.decode(stored)
            else:
                values[channel] = codec.decode(ref)
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
            pending_writes=writes,
        )

    def _get_tuple_steps(self, config: RunnableConfig) -> Steps[CheckpointTuple | None]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        checkpoint_id = conf.get("checkpoint_id")
        key = self._k("c", thread_id, ns, checkpoint_id) if checkpoint_id else self._k("h", thread_id, ns)
        record = yield ("get", key)
        if record is None:
            return None
        if not checkpoint_id:
            self._heads.put((thread_id, ns), record["id"])
        return (yield from self._tuple_steps(thread_id, ns, record, remember=True))

    def _tail_steps(self, config: RunnableConfig, channel: str, n: int) -> Steps[_Items]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        checkpoint_id = conf.get("checkpoint_id")
        key = self._k("c", thread_id, ns, checkpoint_id) if checkpoint_id else self._k("h", thread_id, ns)
        record = yield ("get", key)
        ref = record["r"].get(channel) if record is not None else None
        if ref is None or n <= 0:
            return []
        codec = self._codec
        if ref[0] != "l":
            value = codec.decode((yield ("get", ref[1]))) if ref[0] == "k" else codec.decode(ref)
            return list(value[-n:]) if isinstance(value, list) else [value]
        picks: list[tuple[int, int]] = []
        need = n
        for start, end in reversed(ref[1]):
            take = min(need, end - start + 1)
            picks.append((end - take + 1, end))
            need -= take
            if need == 0:
                break
        log = self._k("l", thread_id, ns, _part(channel))
        parts = yield ("gather", [("get_range", log, a, b) for a, b in reversed(picks)])
        return [codec.decode(v) for part in parts for v in part]

    def _checkpoint_ids(self, thread_id: str, ns: str) -> Steps[list[str]]:
        keys = yield ("keys", self._pattern("c", thread_id, ns))
        return [k.rsplit(":", 1)[1] for k in keys]

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
            entries_of: dict[str, list[Any]] = {}
            for key, stored in zip(page_write_keys, stored_writes, strict=True):
                if stored is not None:
                    entries_of.setdefault(key.rsplit(":", 2)[0], []).extend(stored)
            out: list[CheckpointTuple] = []
            for (checkpoint_id, thread_id, ns), record in zip(page, records, strict=True):
                if record is None:
                    continue
                if filter:
                    meta = codec.decode(record["m"])
                    if not all(meta.get(k) == v for k, v in filter.items()):
                        continue
                entries = entries_of.get(self._k("w", thread_id, ns, checkpoint_id), [])
                out.append((yield from self._tuple_steps(thread_id, ns, record, remember=False, write_entries=entries)))
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        break
            yield ("emit", out)

    # delete, copy, prune
    def _thread_keys(self, thread_id: str) -> Steps[list[str]]:
        keys: list[str] = []
        for kind in "cwlbh":
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

    def _forget(self, thread_id: str) -> None:
        for lru in (self._cache, self._heads, self._lengths):
            lru.drop(lambda k: k[0] == thread_id)

    def _delete_thread_steps(self, thread_id: str) -> Steps[None]:
        self._forget(thread_id)
        keys = yield from self._thread_keys(thread_id)
        record_prefix = f"{self.prefix}c:"
        markers = yield from self._run_markers(thread_id, [k for k in keys if k.startswith(record_prefix)])
        yield from self._delete_keys(keys + markers)
        self._forget(thread_id)

    def _drop_checkpoints(self, thread_id: str, ns: str, doomed: list[str]) -> Steps[None]:
        """Delete some checkpoints of one namespace (records, writes, large values) and fix its head."""
        keys: list[str] = []
        for checkpoint_id in doomed:
            keys.append(self._k("c", thread_id, ns, checkpoint_id))
            keys += yield ("keys", self._writes_pattern(thread_id, ns, checkpoint_id))
            keys += yield ("keys", _glob(self._k("b", thread_id, ns, checkpoint_id)) + ":*")
        yield from self._delete_keys(keys)
        left = yield from self._checkpoint_ids(thread_id, ns)
        head_key = self._k("h", thread_id, ns)
        if left:
            record = yield ("get", self._k("c", thread_id, ns, max(left)))
            if record is not None:
                yield ("set", head_key, record)
        else:
            yield ("delete", head_key)
        self._forget(thread_id)

    def _delete_for_runs_steps(self, run_ids: Sequence[str]) -> Steps[None]:
        wanted = set(run_ids)
        codec = self._codec
        for run_id in run_ids:
            markers = yield ("keys", f"{_glob(self.prefix)}u:{_glob(_part(run_id))}:*")
            for marker in markers:
                thread_id = _unpart(marker.rsplit(":", 1)[1])
                for ns in (yield from self._head_namespaces(thread_id)):
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
        self._forget(target)
        codec = self._codec
        for ns in (yield from self._head_namespaces(source)):
            ids = sorted((yield from self._checkpoint_ids(source, ns)))
            records = yield ("mget", [self._k("c", source, ns, c) for c in ids])
            # Lists first: the target's list may already hold items, so positions shift.
            shift: dict[str, int] = {}
            for log in (yield ("keys", self._pattern("l", source, ns))):
                channel = log.rsplit(":", 1)[1]
                items = yield ("get_range", log, 0, -1)
                if items:
                    length = yield ("extend", self._k("l", target, ns, channel), items)
                    shift[_unpart(channel)] = length - len(items)
            items_out: list[tuple[str, Any]] = []
            for checkpoint_id, record in zip(ids, records, strict=True):
                if record is None:
                    continue
                refs: dict[str, list[Any]] = {}
                for channel, ref in record["r"].items():
                    if ref[0] == "l":
                        delta = shift.get(channel, 0)
                        refs[channel] = ["l", [[a + delta, b + delta] for a, b in ref[1]], *ref[2:]]
                    elif ref[0] == "k":
                        blob = self._k("b", target, ns, checkpoint_id, _part(channel))
                        items_out.append((blob, (yield ("get", ref[1]))))
                        refs[channel] = ["k", blob]
                    else:
                        refs[channel] = ref
                copied = {**record, "r": refs}
                items_out.append((self._k("c", target, ns, checkpoint_id), copied))
                source_writes = self._k("w", source, ns, checkpoint_id)
                for key, stored in (yield from self._read_writes(source, ns, checkpoint_id)):
                    items_out.append((self._k("w", target, ns, checkpoint_id) + key[len(source_writes) :], stored))
                run_id = codec.decode(record["m"]).get("run_id")
                if isinstance(run_id, str) and run_id:
                    items_out.append((f"{self.prefix}u:{_part(run_id)}:{_part(target)}", target))
            if items_out:
                last = [v for k, v in items_out if k.startswith(f"{self.prefix}c:")][-1]
                items_out.append((self._k("h", target, ns), last))
                yield ("mset", items_out)


class _Kw(dict[str, Any]):
    """Keyword arguments of a storage request (its last element)."""


def _split_args(request: Request) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if len(request) > 1 and type(request[-1]) is _Kw:
        return request[1:-1], request[-1]
    return request[1:], {}


def _run_sync(db: Database, steps: Steps[T]) -> T:
    """Drive ``steps`` against a sync database."""
    result: Any = None
    while True:
        try:
            request = steps.send(result)
        except StopIteration as stop:
            return cast(T, stop.value)
        result = _call_sync(db, request)


def _call_sync(db: Database, request: Request) -> Any:
    op = request[0]
    if op == "gather":
        return [_call_sync(db, r) for r in request[1]]
    if op == "emit":
        raise RuntimeError("emit outside an iterator")
    args, kwargs = _split_args(request)
    return getattr(db, op)(*args, **kwargs)


def _iter_sync(db: Database, steps: Steps[None]) -> Iterator[Any]:
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
            result = _call_sync(db, request)


async def _run_async(db: AsyncDatabase, steps: Steps[T]) -> T:
    """Drive ``steps`` against an async database (``gather`` requests run concurrently)."""
    result: Any = None
    while True:
        try:
            request = steps.send(result)
        except StopIteration as stop:
            return cast(T, stop.value)
        result = await _call_async(db, request)


async def _call_async(db: AsyncDatabase, request: Request) -> Any:
    op = request[0]
    if op == "gather":
        return list(await asyncio.gather(*(_call_async(db, r) for r in request[1])))
    if op == "emit":
        raise RuntimeError("emit outside an iterator")
    args, kwargs = _split_args(request)
    return await getattr(db, op)(*args, **kwargs)


async def _iter_async(db: AsyncDatabase, steps: Steps[None]) -> AsyncIterator[Any]:
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
            result = await _call_async(db, request)


class KVStoreSaver(_SaverLogic):
    """A LangGraph checkpointer on a sync kvstore database (memory, SQLite or PostgreSQL).

    The ``a``-prefixed methods run the sync ones in a worker thread, so the saver also
    serves ``graph.ainvoke``; `AsyncKVStoreSaver` is native on an `AsyncDatabase`.

    A list value is recognised as extending the stored one by comparing its items with
    the value this process last stored or read for that (thread, namespace, channel),
    by identity then ``==``: a message mutated *in place* after it was checkpointed is
    not stored again (LangGraph changes state through reducers; ``add_messages``
    replacing a message by id is a new value and is stored whole). A list changed by
    another process since is detected by its length and the value stored whole.
    Reading a checkpoint reads only the items of a list this process does not already
    hold (a turn of a chat reads no message back). `tail` reads the last items of a
    list channel without rebuilding the state.
    ``delete_thread``, ``prune`` and ``delete_for_runs`` cost one round trip per key
    removed (kvstore has no multi-key delete; the async saver runs them concurrently).

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

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint of ``config`` (its ``checkpoint_id``, else the newest), with its pending writes."""
        return _run_sync(self.database, self._get_tuple_steps(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of one thread (and namespace, when given) or of every thread."""
        return _iter_sync(self.database, self._list_steps(config, filter=filter, before=before, limit=limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint: a list channel's new items are appended, the rest stored whole."""
        return _run_sync(self.database, self._put_steps(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Store a task's pending writes for the checkpoint of ``config`` (one round trip)."""
        _run_sync(self.database, self._put_writes_steps(config, writes, task_id, task_path))

    def tail(self, config: RunnableConfig, channel: str = "messages", n: int = 20) -> _Items:
        """The last ``n`` items of a list channel (the newest checkpoint's, or ``config``'s checkpoint_id's).

        Reads only those items (O(log size + n)); ``graph.get_state(config).values[channel][-n:]``
        must rebuild the whole state first.
        """
        return _run_sync(self.database, self._tail_steps(config, channel, n))

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and list of ``thread_id``."""
        _run_sync(self.database, self._delete_thread_steps(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        _run_sync(self.database, self._delete_for_runs_steps(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and list of a thread to another thread."""
        _run_sync(self.database, self._copy_thread_steps(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the newest checkpoint of each namespace (``keep_latest``), or delete the threads (``delete``)."""
        _run_sync(self.database, self._prune_steps(thread_ids, strategy))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """`get_tuple` in a worker thread."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """`list` in a worker thread."""
        found = await asyncio.to_thread(lambda: [*self.list(config, filter=filter, before=before, limit=limit)])
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """`put` in a worker thread."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """`put_writes` in a worker thread."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def atail(self, config: RunnableConfig, channel: str = "messages", n: int = 20) -> _Items:
        """`tail` in a worker thread."""
        return await asyncio.to_thread(self.tail, config, channel, n)

    async def adelete_thread(self, thread_id: str) -> None:
        """`delete_thread` in a worker thread."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """`delete_for_runs` in a worker thread."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """`copy_thread` in a worker thread."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`prune` in a worker thread."""
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


class _LoopBound:
    """For async classes: run a coroutine from a sync method called outside the event loop's thread."""

    _loop: asyncio.AbstractEventLoop | None = None

    def _bind(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _blocking(self, coro_factory: Callable[[], Any], name: str) -> Any:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            raise asyncio.InvalidStateError(
                f"{type(self).__name__}.{name} is synchronous: use the async method (a{name}) in the event "
                "loop, or call it from another thread while the loop that first used this object runs"
            )
        return asyncio.run_coroutine_threadsafe(coro_factory(), loop).result()


class AsyncKVStoreSaver(_LoopBound, _SaverLogic):
    """A LangGraph checkpointer on an async kvstore database (memory, SQLite or PostgreSQL).

    The sync methods work from other threads while the event loop that first used
    the saver is running (as LangGraph's async savers do), e.g. ``graph.get_state``
    called from a worker thread.

    Args:
        database: The database tier, e.g. ``AsyncStorageManager().database``. Not closed by the saver.
        serde: A serializer for every value; by default plain JSON and LangChain messages
            are stored as JSON and the rest goes through `safe_serializer`.
        prefix: Prepended to every key the saver writes.
        cache_size: How many list items (messages), across threads, this process keeps to
            recognise a list that extends the stored one and to rebuild it without reading
            what it already holds.
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

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint of ``config`` (its ``checkpoint_id``, else the newest), with its pending writes."""
        self._bind()
        return await _run_async(self.database, self._get_tuple_steps(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first: of one thread (and namespace, when given) or of every thread."""
        self._bind()
        async for item in _iter_async(
            self.database, self._list_steps(config, filter=filter, before=before, limit=limit)
        ):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint: a list channel's new items are appended, the rest stored whole."""
        self._bind()
        return await _run_async(self.database, self._put_steps(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Store a task's pending writes for the checkpoint of ``config`` (one round trip)."""
        self._bind()
        await _run_async(self.database, self._put_writes_steps(config, writes, task_id, task_path))

    async def atail(self, config: RunnableConfig, channel: str = "messages", n: int = 20) -> _Items:
        """The last ``n`` items of a list channel, reading only those items (see `KVStoreSaver.tail`)."""
        self._bind()
        return await _run_async(self.database, self._tail_steps(config, channel, n))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and list of ``thread_id``."""
        self._bind()
        await _run_async(self.database, self._delete_thread_steps(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        self._bind()
        await _run_async(self.database, self._delete_for_runs_steps(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and list of a thread to another thread."""
        self._bind()
        await _run_async(self.database, self._copy_thread_steps(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the newest checkpoint of each namespace (``keep_latest``), or delete the threads (``delete``)."""
        self._bind()
        await _run_async(self.database, self._prune_steps(thread_ids, strategy))

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """`aget_tuple` from another thread."""
        return cast(CheckpointTuple | None, self._blocking(lambda: self.aget_tuple(config), "get_tuple"))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """`alist` from another thread."""

        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        return iter(cast(list[CheckpointTuple], self._blocking(collect, "list")))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """`aput` from another thread."""
        return cast(
            RunnableConfig, self._blocking(lambda: self.aput(config, checkpoint, metadata, new_versions), "put")
        )

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """`aput_writes` from another thread."""
        self._blocking(lambda: self.aput_writes(config, writes, task_id, task_path), "put_writes")

    def delete_thread(self, thread_id: str) -> None:
        """`adelete_thread` from another thread."""
        self._blocking(lambda: self.adelete_thread(thread_id), "delete_thread")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """`adelete_for_runs` from another thread."""
        self._blocking(lambda: self.adelete_for_runs(run_ids), "delete_for_runs")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """`acopy_thread` from another thread."""
        self._blocking(lambda: self.acopy_thread(source_thread_id, target_thread_id), "copy_thread")

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`aprune` from another thread."""
        self._blocking(lambda: self.aprune(thread_ids, strategy=strategy), "prune")


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


class _StoreLogic:
    """The store's logic, free of I/O. An item lives at ``prefix + "a.b.c" + ".." + key``
    (labels cannot contain ``.`` nor be empty, so the first ``..`` ends the namespace),
    as ``{"v": value, "c": created, "u": updated, "t": ttl minutes}`` with kvstore's TTL.
    """

    supports_ttl: bool = True
    ttl_config: TTLConfig | None

    def __init__(self, *, prefix: str, ttl: TTLConfig | None) -> None:
        self.prefix = prefix
        self.ttl_config = ttl

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


class KVStoreStore(_StoreLogic, BaseStore):
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
        _StoreLogic.__init__(self, prefix=prefix, ttl=ttl)
        self.database = database

    def __repr__(self) -> str:
        return f"<KVStoreStore prefix={self.prefix!r} on {self.database!r}>"

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: reads in one ``mget``, writes in one ``mset``."""
        return _run_sync(self.database, self._batch_steps(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch` in a worker thread."""
        ops = list(ops)
        return await asyncio.to_thread(self.batch, ops)


class AsyncKVStoreStore(_LoopBound, _StoreLogic, BaseStore):
    """`KVStoreStore` on an async kvstore database: ``abatch`` is native; ``batch`` works
    from other threads while the event loop that first used the store is running.

    Args:
        database: The database tier, e.g. ``AsyncStorageManager().database``. Not closed by the store.
        prefix: Prepended to every key the store writes.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` in minutes, ``refresh_on_read``).
    """

    def __init__(
        self, database: AsyncDatabase, *, prefix: str = "langgraph-store:", ttl: TTLConfig | None = None
    ) -> None:
        _StoreLogic.__init__(self, prefix=prefix, ttl=ttl)
        self.database = database

    def __repr__(self) -> str:
        return f"<AsyncKVStoreStore prefix={self.prefix!r} on {self.database!r}>"

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: reads in one ``mget``, writes in one ``mset``."""
        self._bind()
        return await _run_async(self.database, self._batch_steps(ops))

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """`abatch` from another thread."""
        ops = list(ops)
        return cast(list[Result], self._blocking(lambda: self.abatch(ops), "batch"))
