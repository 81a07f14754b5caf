"""LlamaIndex on kvstore: a chat store (``BaseChatStore``) and a key-value store (``BaseKVStore``).

Install with ``pip install "kvstore-sdk[llama-index]"``. Both take a kvstore store, sync
or async: a sync store serves LlamaIndex's sync methods natively (the async ones then
run it in a worker thread, LlamaIndex's default); an async store serves the async
methods natively and the sync ones raise `TypeError`. Values are JSON; nothing is pickled.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from kvstore import AsyncChatHistory, AsyncDatabase, AsyncStore, ChatHistory, Database, Store
from kvstore.errors import MissingDependencyError

try:
    from llama_index.core.llms import ChatMessage
    from llama_index.core.storage.chat_store.base import BaseChatStore
    from llama_index.core.storage.kvstore.types import DEFAULT_BATCH_SIZE, DEFAULT_COLLECTION, BaseKVStore
    from pydantic import PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError("LlamaIndex integration", "llama-index", "llama-index-core") from exc

__all__ = ["KVStoreChatStore", "KVStoreKVStore"]

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")

_Raw = dict[str, Any]


def _escape_glob(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _seconds(ttl: float | timedelta | None) -> float | None:
    return ttl.total_seconds() if isinstance(ttl, timedelta) else ttl


def _sync_only(obj: object, what: str) -> TypeError:
    return TypeError(
        f"{type(obj).__name__} is on an async kvstore store: call the async method ({what}) "
        "or build it on a sync store (StorageManager instead of AsyncStorageManager)"
    )


def _dump(message: ChatMessage) -> _Raw:
    return message.model_dump(mode="json")


def _load(raw: Sequence[_Raw]) -> list[ChatMessage]:
    return [ChatMessage.model_validate(item) for item in raw]


_log = logging.getLogger("kvstore")

#: Rewrites under way whose caller was cancelled (a strong reference, so they finish).
_REWRITES: set[asyncio.Task[None]] = set()


async def _rewrite(history: AsyncChatHistory[_Raw], raw: list[Any]) -> None:
    """Replace the conversation with ``raw``. The clear and the appends run to the end even when the caller is
    cancelled (the caller still sees the cancellation): cancelled between them, the conversation was lost."""

    async def run() -> None:
        await history.clear()
        if raw:
            await history.extend(raw)

    task = asyncio.ensure_future(run())
    _REWRITES.add(task)
    task.add_done_callback(_rewritten)
    await asyncio.shield(task)


def _rewritten(task: asyncio.Task[None]) -> None:
    _REWRITES.discard(task)
    if not task.cancelled() and task.exception() is not None:  # retrieved here: a cancelled caller never awaits it
        _log.warning("rewriting a LlamaIndex conversation failed", exc_info=task.exception())


def _position(idx: int, length: int) -> int | None:
    """``idx`` (negative counts from the end, as in Python) as a position, or ``None`` when out of range."""
    position = idx + length if idx < 0 else idx
    return position if 0 <= position < length else None


class KVStoreChatStore(BaseChatStore):
    """A LlamaIndex chat store on kvstore's `ChatHistory` (database tier): one list per key.

    Adding a message is one append (O(1)), whatever the conversation's length.
    `delete_message` and `delete_last_message` rewrite the conversation (kvstore
    lists are append-only), so they cost O(n), a concurrent reader of that key
    may see it empty for a moment, and a message another writer adds to it while
    the rewrite runs may be lost or land before the rewritten ones. A cancelled
    caller does not stop a rewrite under way (it finishes in the background)::

        with StorageManager() as storage:
            chat_store = KVStoreChatStore(storage.database)
            memory = ChatMemoryBuffer.from_defaults(chat_store=chat_store, chat_store_key="user-1")

    Args:
        database: A database-tier store: `Database` (sync methods native) or
            `AsyncDatabase` (the ``a``-prefixed methods native).
        namespace: First part of every conversation's keys (``<namespace>:<key>``).
        ttl: When set, a conversation expires this long after its last write.
    """

    namespace: str = "li_chat"
    ttl: float | None = None

    _database: Database | None = PrivateAttr(default=None)
    _adatabase: AsyncDatabase | None = PrivateAttr(default=None)

    def __init__(
        self,
        database: Database | AsyncDatabase,
        *,
        namespace: str = "li_chat",
        ttl: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        if not namespace:
            raise ValueError("namespace must be a non-empty string")
        super().__init__(namespace=namespace, ttl=_seconds(ttl), **kwargs)
        if isinstance(database, Database):
            self._database = database
        elif isinstance(database, AsyncDatabase):
            self._adatabase = database
        else:
            raise TypeError(f"a chat store needs a database-tier store, not {type(database).__name__}")

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this component under."""
        return "KVStoreChatStore"

    def _history(self, key: str, what: str) -> ChatHistory[_Raw]:
        if self._database is None:
            raise _sync_only(self, what)
        return ChatHistory(self._database, key, model=_Raw, ttl=self.ttl, namespace=self.namespace)

    def _ahistory(self, key: str) -> AsyncChatHistory[_Raw] | None:
        if self._adatabase is None:
            return None
        return AsyncChatHistory(self._adatabase, key, model=_Raw, ttl=self.ttl, namespace=self.namespace)

    # --- sync ---------------------------------------------------------------------------

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the conversation ``key`` with ``messages``."""
        history = self._history(key, "aset_messages")
        history.clear()
        if messages:
            history.extend([_dump(m) for m in messages])

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Every message of ``key``, oldest first (``[]`` for an unknown key)."""
        return _load(list(self._history(key, "aget_messages").iter_messages()))

    def add_message(self, key: str, message: ChatMessage) -> None:
        """Append ``message`` to ``key`` (one round trip)."""
        self._history(key, "async_add_message").extend([_dump(message)])

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete the conversation; return its messages, or ``None`` when it had none."""
        history = self._history(key, "adelete_messages")
        messages = _load(list(history.iter_messages()))
        history.clear()
        return messages or None

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at ``idx`` (negative counts from the end); ``None`` when out of range."""
        history = self._history(key, "adelete_message")
        raw = list(history.iter_messages())
        position = _position(idx, len(raw))
        if position is None:
            return None
        removed = raw.pop(position)
        history.clear()
        if raw:
            history.extend(raw)
        return ChatMessage.model_validate(removed)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the newest message of ``key``; ``None`` when there is none."""
        if self._database is None:
            raise _sync_only(self, "adelete_last_message")
        return self.delete_message(key, -1)

    def get_keys(self) -> list[str]:
        """Every conversation key of this namespace, sorted."""
        if self._database is None:
            raise _sync_only(self, "aget_keys")
        return ChatHistory.conversations(self._database, namespace=self.namespace)

    # --- async ---------------------------------------------------------------------------

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async `set_messages`."""
        history = self._ahistory(key)
        if history is None:
            return await super().aset_messages(key, messages)
        await _rewrite(history, [_dump(m) for m in messages])
        return None

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async `get_messages`."""
        history = self._ahistory(key)
        if history is None:
            return await super().aget_messages(key)
        return _load([m async for m in history.iter_messages()])

    async def async_add_message(self, key: str, message: ChatMessage) -> None:
        """Async `add_message`."""
        history = self._ahistory(key)
        if history is None:
            return await super().async_add_message(key, message)
        await history.extend([_dump(message)])
        return None

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async `delete_messages`."""
        history = self._ahistory(key)
        if history is None:
            return await super().adelete_messages(key)
        messages = _load([m async for m in history.iter_messages()])
        await history.clear()
        return messages or None

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async `delete_message`."""
        history = self._ahistory(key)
        if history is None:
            return await super().adelete_message(key, idx)
        raw = [m async for m in history.iter_messages()]
        position = _position(idx, len(raw))
        if position is None:
            return None
        removed = raw.pop(position)
        await _rewrite(history, raw)
        return ChatMessage.model_validate(removed)

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async `delete_last_message`."""
        if self._adatabase is None:
            return await super().adelete_last_message(key)
        return await self.adelete_message(key, -1)

    async def aget_keys(self) -> list[str]:
        """Async `get_keys`."""
        if self._adatabase is None:
            return await super().aget_keys()
        return await AsyncChatHistory.conversations(self._adatabase, namespace=self.namespace)


class KVStoreKVStore(BaseKVStore):
    """A LlamaIndex key-value store (docstore, index store...) on a kvstore store of either tier.

    Each collection is a key range ``<namespace>:<len>:<collection>:<key>`` (the
    length keeps ``a`` + ``b:c`` apart from ``a:b`` + ``c``); `put_all` is one
    ``mset`` round trip per batch, `get_all` one key scan plus one ``mget``::

        docstore = KVDocumentStore(KVStoreKVStore(storage.database))

    Args:
        store: A kvstore store, sync or async, of either tier.
        namespace: First part of every key.
        ttl: Seconds (or a timedelta) each written entry lives; ``None`` for ever.
    """

    def __init__(
        self, store: Store | AsyncStore, *, namespace: str = "li_kv", ttl: float | timedelta | None = None
    ) -> None:
        if not isinstance(store, Store | AsyncStore):
            raise TypeError(f"expected a kvstore store (cache or database tier), not {type(store).__name__}")
        if not namespace:
            raise ValueError("namespace must be a non-empty string")
        self.store = store
        self.namespace = namespace
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r} on {self.store!r}>"

    def _prefix(self, collection: str) -> str:
        return f"{self.namespace}:{len(collection)}:{collection}:"

    def _sync(self, what: str) -> Store:
        if isinstance(self.store, Store):
            return self.store
        raise _sync_only(self, what)

    def _async(self) -> AsyncStore | None:
        return self.store if isinstance(self.store, AsyncStore) else None

    @staticmethod
    def _check(val: Any) -> dict[str, Any]:
        if not isinstance(val, dict):
            raise TypeError(f"a LlamaIndex key-value store stores dicts, not {type(val).__name__}")
        return val

    def _batches(
        self, kv_pairs: Sequence[tuple[str, dict[str, Any]]], collection: str, batch_size: int
    ) -> list[list[tuple[str, Any, float | timedelta | None]]]:
        prefix = self._prefix(collection)
        items = [(prefix + key, self._check(val), self.ttl) for key, val in kv_pairs]
        size = batch_size if batch_size > 1 else max(len(items), 1)  # the default (1) is one round trip
        return [items[i : i + size] for i in range(0, len(items), size)]

    # --- sync ---------------------------------------------------------------------------

    def put(self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION) -> None:
        """Store ``val`` under ``key`` in ``collection``."""
        self._sync("aput").set(self._prefix(collection) + key, self._check(val), self.ttl)

    def put_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """Store every pair: one round trip per ``batch_size`` pairs (all at once for the default 1)."""
        store = self._sync("aput_all")
        for batch in self._batches(kv_pairs, collection, batch_size):
            store.mset(batch)

    def get(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        """The value of ``key`` in ``collection``, or ``None``."""
        value = self._sync("aget").get(self._prefix(collection) + key)
        return value if isinstance(value, dict) else None

    def get_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        """Every key and value of ``collection``."""
        store, prefix = self._sync("aget_all"), self._prefix(collection)
        keys = list(store.iter_keys(_escape_glob(prefix) + "*"))
        values = store.mget(keys) if keys else []
        return {k[len(prefix) :]: v for k, v in zip(keys, values, strict=True) if isinstance(v, dict)}

    def delete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        """Delete ``key`` from ``collection``; whether it existed."""
        return self._sync("adelete").delete(self._prefix(collection) + key)

    # --- async ---------------------------------------------------------------------------

    async def aput(self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION) -> None:
        """Async `put`."""
        store = self._async()
        if store is None:
            await asyncio.to_thread(self.put, key, val, collection)
            return
        await store.set(self._prefix(collection) + key, self._check(val), self.ttl)

    async def aput_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """Async `put_all`."""
        store = self._async()
        if store is None:
            await asyncio.to_thread(self.put_all, kv_pairs, collection, batch_size)
            return
        for batch in self._batches(kv_pairs, collection, batch_size):
            await store.mset(batch)

    async def aget(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        """Async `get`."""
        store = self._async()
        if store is None:
            return await asyncio.to_thread(self.get, key, collection)
        value = await store.get(self._prefix(collection) + key)
        return value if isinstance(value, dict) else None

    async def aget_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        """Async `get_all`."""
        store = self._async()
        if store is None:
            return await asyncio.to_thread(self.get_all, collection)
        prefix = self._prefix(collection)
        keys = [key async for key in store.iter_keys(_escape_glob(prefix) + "*")]
        values = await store.mget(keys) if keys else []
        return {k[len(prefix) :]: v for k, v in zip(keys, values, strict=True) if isinstance(v, dict)}

    async def adelete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        """Async `delete`."""
        store = self._async()
        if store is None:
            return await asyncio.to_thread(self.delete, key, collection)
        return await store.delete(self._prefix(collection) + key)
