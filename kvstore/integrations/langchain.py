"""LangChain on kvstore: byte and value stores, a chat message history and an LLM cache.

Install with ``pip install "kvstore-sdk[langchain]"``. Every class takes a kvstore store
of either tier (the LLM cache and the key-value stores) or a database-tier store (the
chat history), sync or async: a sync store serves LangChain's sync methods natively
(their ``a``-prefixed twins then run it in a worker thread, as LangChain does by
default); an async store serves the ``a``-prefixed methods natively and the sync ones
raise `TypeError`. Nothing is pickled: values are JSON, bytes are base64 text and
LangChain objects go through LangChain's own JSON serializer (``dumpd``/``load``)
with an explicit allow-list of classes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from kvstore import AsyncChatHistory, AsyncDatabase, AsyncStore, ChatHistory, Database, Store
from kvstore.errors import MissingDependencyError

try:
    from langchain_core._api import suppress_langchain_beta_warning
    from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.load import dumpd, load
    from langchain_core.load.serializable import Serializable
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        ChatMessage,
        FunctionMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        message_to_dict,
        messages_from_dict,
    )
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk
    from langchain_core.stores import BaseStore
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError("LangChain integration", "langchain", "langchain-core") from exc

__all__ = ["KVStoreByteStore", "KVStoreChatMessageHistory", "KVStoreLLMCache", "KVStoreValueStore"]

V = TypeVar("V")

#: Seconds (float) or a `timedelta`; ``None`` means the entry never expires.
TTL: TypeAlias = float | timedelta

#: What `load` may build from a cached generation: generations and the messages they carry.
_GENERATION_CLASSES: list[type[Serializable]] = [
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
]

AllowedObjects: TypeAlias = Sequence[type[Serializable]] | Literal["messages", "core"]

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _escape_glob(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _revive(data: Any, allowed: AllowedObjects) -> Any:
    # `load` is marked beta and warns once per process; the allow-list is what we rely on.
    with suppress_langchain_beta_warning():
        return load(data, allowed_objects=allowed)


def _sync_only(obj: object, what: str) -> TypeError:
    return TypeError(
        f"{type(obj).__name__} is on an async kvstore store: call the async method ({what}) "
        "or build it on a sync store (StorageManager instead of AsyncStorageManager)"
    )


def _delete_keys(store: Store, keys: list[str]) -> None:
    many = getattr(store, "delete_many", None)  # one round trip once the store offers it
    if many is not None:
        many(keys)
        return
    for key in keys:
        store.delete(key)


async def _adelete_keys(store: AsyncStore, keys: list[str]) -> None:
    many = getattr(store, "delete_many", None)
    if many is not None:
        await many(keys)
        return
    await asyncio.gather(*(store.delete(key) for key in keys))


class _KVStoreBaseStore(BaseStore[str, V], Generic[V]):
    """The key-value plumbing shared by the byte and value stores; subclasses encode and decode."""

    def __init__(self, store: Store | AsyncStore, *, namespace: str | None = None, ttl: TTL | None = None) -> None:
        if not isinstance(store, Store | AsyncStore):
            raise TypeError(f"expected a kvstore store (cache or database tier), not {type(store).__name__}")
        if namespace is not None and not namespace:
            raise ValueError("namespace must be a non-empty string or None")
        self.store = store
        self.namespace = namespace
        self.ttl = ttl
        self._prefix = "" if namespace is None else f"{namespace}:"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r} on {self.store!r}>"

    def _encode(self, value: V) -> Any:
        raise NotImplementedError

    def _decode(self, raw: Any) -> V:
        raise NotImplementedError

    def _items(self, key_value_pairs: Sequence[tuple[str, V]]) -> list[tuple[str, Any, TTL | None]]:
        return [(self._prefix + key, self._encode(value), self.ttl) for key, value in key_value_pairs]

    def _decoded(self, raw: list[Any]) -> list[V | None]:
        return [None if item is None else self._decode(item) for item in raw]

    def _pattern(self, prefix: str | None) -> str:
        return _escape_glob(self._prefix + (prefix or "")) + "*"

    def _sync(self, what: str) -> Store:
        if isinstance(self.store, Store):
            return self.store
        raise _sync_only(self, what)

    def mget(self, keys: Sequence[str]) -> list[V | None]:
        """The values of ``keys``, in order, ``None`` for missing ones; one round trip."""
        return self._decoded(self._sync("amget").mget([self._prefix + key for key in keys]))

    async def amget(self, keys: Sequence[str]) -> list[V | None]:
        """Async `mget`; one round trip."""
        if isinstance(self.store, AsyncStore):
            return self._decoded(await self.store.mget([self._prefix + key for key in keys]))
        return await super().amget(keys)

    def mset(self, key_value_pairs: Sequence[tuple[str, V]]) -> None:
        """Write every pair (with the store's ``ttl``); one round trip, atomic where the backend can."""
        if key_value_pairs:
            self._sync("amset").mset(self._items(key_value_pairs))

    async def amset(self, key_value_pairs: Sequence[tuple[str, V]]) -> None:
        """Async `mset`; one round trip."""
        if isinstance(self.store, AsyncStore):
            if key_value_pairs:
                await self.store.mset(self._items(key_value_pairs))
            return
        await super().amset(key_value_pairs)

    def mdelete(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; missing ones are ignored."""
        _delete_keys(self._sync("amdelete"), [self._prefix + key for key in keys])

    async def amdelete(self, keys: Sequence[str]) -> None:
        """Async `mdelete` (the deletes run concurrently)."""
        if isinstance(self.store, AsyncStore):
            await _adelete_keys(self.store, [self._prefix + key for key in keys])
            return
        await super().amdelete(keys)

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """Stream the keys (of this namespace) starting with ``prefix``, in constant memory."""
        store, skip = self._sync("ayield_keys"), len(self._prefix)
        for key in store.iter_keys(self._pattern(prefix)):
            yield key[skip:]

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        """Async `yield_keys`."""
        if isinstance(self.store, AsyncStore):
            skip = len(self._prefix)
            async for key in self.store.iter_keys(self._pattern(prefix)):
                yield key[skip:]
            return
        async for key in super().ayield_keys(prefix=prefix):
            yield key


class KVStoreByteStore(_KVStoreBaseStore[bytes]):
    """A LangChain ``ByteStore`` (``BaseStore[str, bytes]``) on a kvstore store of either tier.

    Bytes are stored as base64 text (kvstore values are JSON). Use it wherever
    LangChain takes a byte store, e.g. ``CacheBackedEmbeddings`` or
    ``create_kv_docstore``::

        with StorageManager() as storage:
            store = KVStoreByteStore(storage.cache, namespace="embeddings", ttl=86400)
            store.mset([("a", b"\\x00\\x01")])
            assert store.mget(["a", "b"]) == [b"\\x00\\x01", None]

    Args:
        store: A kvstore store, sync (`Cache`, `Database`) or async (`AsyncCache`, `AsyncDatabase`).
        namespace: When set, keys are stored as ``<namespace>:<key>`` and `yield_keys`
            lists only this namespace.
        ttl: Seconds (or a timedelta) each written entry lives; ``None`` for ever.

    Raises:
        InvalidKeyError: (from kvstore) for an empty key or one above 1024 UTF-8 bytes.
    """

    def _encode(self, value: bytes) -> str:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"a byte store stores bytes, not {type(value).__name__}")
        return base64.b64encode(value).decode("ascii")

    def _decode(self, raw: Any) -> bytes:
        if not isinstance(raw, str):
            raise TypeError(f"not a byte-store entry (expected base64 text, found {type(raw).__name__})")
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise TypeError("not a byte-store entry (invalid base64)") from exc


class KVStoreValueStore(_KVStoreBaseStore[Any]):
    """A LangChain ``BaseStore[str, Any]`` of JSON values on a kvstore store of either tier.

    Values are what kvstore stores: JSON documents (dict, list, str, numbers, bool,
    None). LangChain objects (``Document``, messages...) need ``allowed_objects``: then
    every value is written with LangChain's ``dumpd`` and read back with ``load``
    restricted to those classes, so stored data can never build anything else::

        docs = KVStoreValueStore(storage.database, namespace="docs", allowed_objects=[Document])
        docs.mset([("d1", Document(page_content="hello"))])

    Args:
        store: A kvstore store, sync or async, of either tier.
        namespace: When set, keys are stored as ``<namespace>:<key>``.
        ttl: Seconds (or a timedelta) each written entry lives; ``None`` for ever.
        allowed_objects: ``None`` for plain JSON values (a LangChain object then raises
            `TypeError` instead of silently coming back as a dict); else the classes (or
            ``"messages"``/``"core"``) that ``load`` may build.
    """

    def __init__(
        self,
        store: Store | AsyncStore,
        *,
        namespace: str | None = None,
        ttl: TTL | None = None,
        allowed_objects: AllowedObjects | None = None,
    ) -> None:
        super().__init__(store, namespace=namespace, ttl=ttl)
        self.allowed_objects = allowed_objects

    def _encode(self, value: Any) -> Any:
        if self.allowed_objects is not None:
            return dumpd(value)
        if isinstance(value, Serializable):
            raise TypeError(
                f"{type(value).__name__} is a LangChain object: pass allowed_objects=[{type(value).__name__}] "
                "to store it with LangChain's JSON serializer"
            )
        return value

    def _decode(self, raw: Any) -> Any:
        if self.allowed_objects is not None:
            return _revive(raw, self.allowed_objects)
        return raw


class KVStoreChatMessageHistory(BaseChatMessageHistory):
    """A LangChain ``BaseChatMessageHistory`` on kvstore's `ChatHistory` (database tier).

    Messages are stored as LangChain's message dicts (``message_to_dict``), one list
    item each, so `add_messages` is one append round trip and a ``window`` read is
    O(log n + window) however long the conversation is. Works under
    ``RunnableWithMessageHistory``::

        chain = RunnableWithMessageHistory(
            prompt | model,
            lambda session_id: KVStoreChatMessageHistory(storage.database, session_id, window=20),
            input_messages_key="question",
            history_messages_key="history",
        )

    Args:
        database: A database-tier store: `Database` (sync methods native) or
            `AsyncDatabase` (`aget_messages`, `aadd_messages`, `aclear` native).
        session_id: The conversation; any valid kvstore key text.
        window: When set, `messages` returns only the newest ``window`` messages (all
            messages stay stored). ``None`` reads the whole conversation.
        ttl: When set, the conversation expires this long after its last write.
        namespace: First part of the conversation's keys (``<namespace>:<session_id>``).
    """

    def __init__(
        self,
        database: Database | AsyncDatabase,
        session_id: str,
        *,
        window: int | None = None,
        ttl: TTL | None = None,
        namespace: str = "lc_chat",
    ) -> None:
        if window is not None and window <= 0:
            raise ValueError("window must be > 0 or None")
        self.session_id = session_id
        self.window = window
        self._history: ChatHistory[dict[str, Any]] | None = None
        self._ahistory: AsyncChatHistory[dict[str, Any]] | None = None
        if isinstance(database, Database):
            self._history = ChatHistory(database, session_id, model=dict[str, Any], ttl=ttl, namespace=namespace)
        elif isinstance(database, AsyncDatabase):
            self._ahistory = AsyncChatHistory(database, session_id, model=dict[str, Any], ttl=ttl, namespace=namespace)
        else:
            raise TypeError(f"a chat history needs a database-tier store, not {type(database).__name__}")

    def __repr__(self) -> str:
        history = self._history if self._history is not None else self._ahistory
        return f"<{type(self).__name__} {self.session_id!r} window={self.window} history={history!r}>"

    @property
    def history(self) -> ChatHistory[dict[str, Any]] | AsyncChatHistory[dict[str, Any]]:
        """The kvstore history underneath (for `trim`, `page`, `count`...)."""
        return self._history if self._history is not None else self._ahistory  # type: ignore[return-value]

    def _sync(self, what: str) -> ChatHistory[dict[str, Any]]:
        if self._history is None:
            raise _sync_only(self, what)
        return self._history

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]  # LangChain declares a plain attribute
        """The conversation (or its newest ``window`` messages), oldest first."""
        history = self._sync("aget_messages")
        raw = history.last(self.window) if self.window is not None else list(history.iter_messages())
        return messages_from_dict(raw)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async `messages`."""
        history = self._ahistory
        if history is None:
            return await super().aget_messages()
        if self.window is not None:
            raw = await history.last(self.window)
        else:
            raw = [message async for message in history.iter_messages()]
        return messages_from_dict(raw)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in order, in one round trip."""
        if messages:
            self._sync("aadd_messages").extend([message_to_dict(m) for m in messages])

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async `add_messages`; one round trip."""
        if self._ahistory is None:
            await super().aadd_messages(messages)
        elif messages:
            await self._ahistory.extend([message_to_dict(m) for m in messages])

    def clear(self) -> None:
        """Delete the conversation."""
        self._sync("aclear").clear()

    async def aclear(self) -> None:
        """Async `clear`."""
        if self._ahistory is None:
            await super().aclear()
        else:
            await self._ahistory.clear()


class KVStoreLLMCache(BaseCache):
    """A LangChain LLM cache (``BaseCache``) on a kvstore store, with a TTL.

    The key is a SHA-256 of the prompt and the LLM's parameters (``llm_string``),
    so prompts of any length fit kvstore's key limit; generations are stored with
    LangChain's JSON serializer and revived only as generation and message classes
    (JSON only, never unpickled)::

        from langchain_core.globals import set_llm_cache

        set_llm_cache(KVStoreLLMCache(storage.cache, ttl=3600))

    Args:
        store: A kvstore store of either tier, sync or async.
        ttl: Seconds (or a timedelta) a cached answer lives; ``None`` for ever.
        namespace: Keys are ``<namespace>:<sha256 hex>``; `clear` removes this namespace only.
    """

    def __init__(self, store: Store | AsyncStore, *, ttl: TTL | None = None, namespace: str = "llm_cache") -> None:
        if not isinstance(store, Store | AsyncStore):
            raise TypeError(f"expected a kvstore store (cache or database tier), not {type(store).__name__}")
        if not namespace:
            raise ValueError("namespace must be a non-empty string")
        self.store = store
        self.ttl = ttl
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r} ttl={self.ttl!r} on {self.store!r}>"

    def _key(self, prompt: str, llm_string: str) -> str:
        digest = hashlib.sha256()
        for part in (prompt, llm_string):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "big"))  # length-prefixed: ("ab", "c") != ("a", "bc")
            digest.update(data)
        return f"{self.namespace}:{digest.hexdigest()}"

    @property
    def _pattern(self) -> str:
        return _escape_glob(f"{self.namespace}:") + "*"

    def _own(self, keys: Iterable[str]) -> list[str]:
        """The keys of this namespace's answers among ``keys``: not those of a namespace nested in it
        (``llm_cache:v2`` under ``llm_cache``), whose keys have a ``:`` after the prefix."""
        cut = len(self.namespace) + 1
        return [key for key in keys if ":" not in key[cut:]]

    @staticmethod
    def _dump(return_val: RETURN_VAL_TYPE) -> list[Any]:
        return [dumpd(generation) for generation in return_val]

    @staticmethod
    def _load(raw: Any) -> list[Generation] | None:
        if not isinstance(raw, list):
            return None
        return [_revive(item, _GENERATION_CLASSES) for item in raw]

    def _sync(self, what: str) -> Store:
        if isinstance(self.store, Store):
            return self.store
        raise _sync_only(self, what)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for ``prompt`` with this LLM, or ``None``."""
        return self._load(self._sync("alookup").get(self._key(prompt, llm_string)))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async `lookup`."""
        if isinstance(self.store, AsyncStore):
            return self._load(await self.store.get(self._key(prompt, llm_string)))
        return await super().alookup(prompt, llm_string)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Cache ``return_val`` for ``prompt`` with this LLM (with the cache's ``ttl``)."""
        self._sync("aupdate").set(self._key(prompt, llm_string), self._dump(return_val), self.ttl)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async `update`."""
        if isinstance(self.store, AsyncStore):
            await self.store.set(self._key(prompt, llm_string), self._dump(return_val), self.ttl)
            return
        await super().aupdate(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        """Remove every cached answer of this namespace (nothing else in the store)."""
        store = self._sync("aclear")
        _delete_keys(store, self._own(store.iter_keys(self._pattern)))

    async def aclear(self, **kwargs: Any) -> None:
        """Async `clear`."""
        if isinstance(self.store, AsyncStore):
            keys = self._own([key async for key in self.store.iter_keys(self._pattern)])
            await _adelete_keys(self.store, keys)
            return
        await super().aclear(**kwargs)


def _listed(keys: Iterable[str]) -> list[str]:
    # Listed before deleting: no backend is asked to delete under a live key scan.
    return list(keys)
