"""`AsyncChatHistory`: one conversation's messages on the database tier."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Generic, TypeVar, overload

from orjson import loads as _loads

from kvstore._core.acompat import gather_async
from kvstore._core.codec import decode
from kvstore._core.items import LowerBound
from kvstore._core.ttl import TTL, ttl_ms
from kvstore._core.typed import TypeCodec
from kvstore._core.watch import ListItem
from kvstore.base_async import AsyncDatabase
from kvstore.chat._message import (
    DEFAULT_NAMESPACE,
    ChatKeys,
    ChatMessage,
    ChatPage,
    PageReader,
    dump_json,
    message_id,
    with_id,
)
from kvstore.errors import BackendUnavailableError

__all__ = ["AsyncChatHistory"]

M = TypeVar("M")


class AsyncChatHistory(Generic[M]):
    """The messages of one conversation, oldest first, on a database-tier store.

    Five lines for an agent loop::

        history = AsyncChatHistory(storage.database, "conversation-42")
        await history.add({"role": "user", "content": "hi"})
        await history.add(ChatMessage(role="assistant", content="hello", id="turn-2"))
        context = await history.last(20)

    Messages are stored as one list (``chat:<conversation>``), so `last` and
    `page` cost O(log n + k) for k messages however long the conversation is.
    A message's position is its list index: 0 for the oldest message kept (after a
    `trim`, positions count from the oldest kept message, as Redis list indexes do).

    Args:
        database: Any `AsyncDatabase` (memory, SQLite, PostgreSQL, or the manager's tier).
        conversation_id: Names the conversation; any valid key text.
        model: The message type (default `ChatMessage`; ``dict`` for untyped
            messages); writes are validated and serialised by pydantic-core in one
            pass, and a page read is decoded and validated by one pydantic-core call
            on the stored JSON (``dict`` histories skip validation: one orjson pass).
        ttl: When set, the conversation expires this long after its last write
            (sliding: every `add`/`extend` refreshes it).
        namespace: First part of the conversation's keys (default ``"chat"``).
    """

    @overload
    def __init__(
        self: AsyncChatHistory[ChatMessage],
        database: AsyncDatabase,
        conversation_id: str,
        *,
        model: None = None,
        ttl: TTL | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None: ...

    @overload
    def __init__(
        self,
        database: AsyncDatabase,
        conversation_id: str,
        *,
        model: type[M] | Any,
        ttl: TTL | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None: ...

    def __init__(
        self,
        database: AsyncDatabase,
        conversation_id: str,
        *,
        model: Any = None,
        ttl: TTL | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        if not isinstance(database, AsyncDatabase):
            raise TypeError(f"a chat history needs a database-tier store, not {type(database).__name__}")
        if not conversation_id:
            raise ValueError("conversation_id must be a non-empty string")
        ttl_ms(ttl)  # a bad TTL fails here, not at the first write
        self.database = database
        self.conversation_id = conversation_id
        self.ttl = ttl
        self._keys = ChatKeys(namespace, conversation_id)
        self._codec: TypeCodec[M] = TypeCodec(ChatMessage if model is None else model)
        self._reader: PageReader[M] = PageReader(ChatMessage if model is None else model)
        #: Set once this history has read that the conversation has no kvstore 0.1 trim offset
        #: (nothing writes one any more), so later reads skip that lookup.
        self._no_offset = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._keys.messages!r} on {self.database!r}>"

    @property
    def key(self) -> str:
        """The key of the list holding the messages."""
        return self._keys.messages

    # --- writing ----------------------------------------------------------------------

    async def add(self, message: M | Mapping[str, Any], *, id: str | None = None) -> int | None:
        """Append one message; return its position.

        With an idempotency id (``id=`` or the message's own ``id`` field) the
        message and its id are written in one transaction (``append(...,
        idempotency_id=id)``), so a retried call stores nothing new and returns the
        first call's position, in every state: before, during and after a database
        outage (an outage write is journaled with its id and replayed once).
        Returns ``None`` when the position is not known yet: the write was buffered
        during a database outage and the primary will place it at the list's tail.
        """
        mid = id if id is not None else message_id(message)
        if id is not None:
            message = with_id(message, id)
        key = self._keys.messages
        data = dump_json(self._codec, key, message)
        length = await self.database.extend_json(key, [data], idempotency_id=mid)
        if length is None:  # a store that takes decoded values only
            length = await self.database.append(key, _loads(data), idempotency_id=mid)
        await self._refresh_ttl()
        return None if isinstance(length, LowerBound) else length - 1

    async def extend(self, messages: Iterable[M | Mapping[str, Any]], *, id: str | None = None) -> range | None:
        """Append every message in order, in one round trip; return their positions.

        With ``id`` the batch is written once however often it is retried (one
        idempotency id for the whole batch). ``None`` as for `add`.
        """
        key = self._keys.messages
        data = [dump_json(self._codec, key, m) for m in messages]
        if not data:
            count = await self.database.get_length(key)
            return range(count, count)
        length = await self.database.extend_json(key, data, idempotency_id=id)
        if length is None:  # a store that takes decoded values only
            length = await self.database.extend(key, [_loads(d) for d in data], idempotency_id=id)
        await self._refresh_ttl()
        return None if isinstance(length, LowerBound) else range(length - len(data), length)

    # --- reading ----------------------------------------------------------------------

    async def last(self, n: int = 20) -> list[M]:
        """The newest ``n`` messages, oldest first (O(log n + k), any history length)."""
        if n <= 0:
            return []
        if self._no_offset:  # the common case: one read
            return await self._read(-n, -1)
        key = self._keys.messages
        messages: list[M]
        messages, offset = await gather_async(self._read(-n, -1), self._tail_offset())
        if offset:
            # Trimmed by kvstore 0.1: read from the first kept position on (positions are absolute).
            length = await self.database.get_length(key)
            start = max(offset, length - n)
            messages = (await self._read(start, -1))[-n:] if start < length else []
        return messages

    async def page(self, before: int | None = None, limit: int = 20) -> ChatPage[M]:
        """Up to ``limit`` messages older than position ``before`` (default: the newest).

        Follow ``page.before`` to walk back to the oldest message kept.
        """
        if limit <= 0:
            raise ValueError("limit must be > 0")
        key = self._keys.messages
        offset = await self._offset()
        end = await self.database.get_length(key) if before is None else before
        start = max(offset, end - limit)
        if end <= start:
            return ChatPage([], max(end, offset), None)
        messages = await self._read(start, end - 1)
        return ChatPage(messages, start, start if start > offset else None)

    async def iter_messages(self, batch: int = 500) -> AsyncIterator[M]:
        """Every kept message, oldest first, read ``batch`` at a time."""
        position = await self._offset()
        while True:
            messages = await self._read(position, position + batch - 1)
            for message in messages:
                yield message
            if len(messages) < batch:
                return
            position += batch

    async def count(self) -> int:
        """How many messages are kept (added, minus trimmed)."""
        length, offset = await gather_async(self.database.get_length(self._keys.messages), self._offset())
        return max(0, int(length) - int(offset))

    # --- housekeeping -----------------------------------------------------------------

    async def trim(self, max_messages: int) -> int:
        """Keep only the newest ``max_messages``; return how many were dropped.

        The dropped messages are removed from the database (its list ``trim``, Redis
        ``LTRIM``: O(dropped), one round trip), so a long conversation's storage stays
        bounded. Positions then count from the oldest kept message, as list indexes do
        in Redis: a `page` cursor taken before a trim points elsewhere after it. Messages
        appended while the trim runs are kept. (A history trimmed by kvstore 0.1, which
        only recorded a trim offset, is trimmed for real on its next trim.)
        """
        if max_messages.__class__ is not int or max_messages < 0:
            raise ValueError(f"max_messages must be an int >= 0, not {max_messages!r}")
        key = self._keys.messages
        offset = await self._offset()
        if offset:
            # kvstore 0.1 trimmed by an offset: forget it first, so no read ever applies it
            # to the trimmed list (until the trims below, reads see the old messages again),
            # then remove for real what it hid (positions before it; appends land after them).
            await self.database.delete(self._keys.meta)
            await self.database.trim(key, offset, -1)
        return (
            await self.database.trim(key, 1, 0)
            if max_messages == 0
            else await self.database.trim(key, -max_messages, -1)
        )

    async def clear(self) -> bool:
        """Delete the conversation: its messages and trim offset.

        Returns whether there were messages. Message ids outlive it (DESIGN.md §1): a
        late retry of an add returns its old position and does not resurrect the message.
        """
        existed = await self.database.delete(self._keys.messages)
        await self.database.delete(self._keys.meta)
        return existed

    async def expire(self, ttl: TTL | None) -> bool:
        """Set (or with ``None`` remove) the conversation's TTL now; ``False`` when it has no messages."""
        ttl_ms(ttl)
        self.ttl = ttl
        found = await self.database.expire(self._keys.messages, ttl)
        await self.database.expire(self._keys.meta, ttl)
        return found

    @classmethod
    async def conversations(
        cls, database: AsyncDatabase, pattern: str = "*", *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[str]:
        """The ids of the conversations matching the Redis glob ``pattern``, sorted."""
        glob = ChatKeys.conversation_pattern(namespace, pattern)
        skip = len(namespace) + 1
        return sorted([key[skip:] async for key in database.iter_keys(glob)])

    # --- internals --------------------------------------------------------------------

    async def _tail_offset(self) -> int | None:
        """The trim offset, or ``None`` when only the primary knows it (a database outage).

        `last` needs it only when the newest ``n`` messages could reach trimmed ones; during
        an outage, ``get_range(-n, -1)`` answers only from what the outage appended, which
        no earlier trim can have reached.
        """
        try:
            return await self._offset()
        except BackendUnavailableError:
            return None

    async def _offset(self) -> int:
        if self._no_offset:
            return 0
        meta = await self.database.get(self._keys.meta)
        if isinstance(meta, dict):
            return int(meta["offset"])
        self._no_offset = True
        return 0

    async def _refresh_ttl(self) -> None:
        if self.ttl is None:
            return
        await gather_async(
            self.database.expire(self._keys.messages, self.ttl), self.database.expire(self._keys.meta, self.ttl)
        )

    async def _read(self, start: int, end: int) -> list[M]:
        """Messages ``start..end`` (list indexes, ``end`` inclusive), parsed in one pass when the store can."""
        key = self._keys.messages
        raw = await self.database.get_range_json(key, start, end)
        if raw is None:  # a store with decoded items only
            return self._load(await self.database.get_range(key, start, end))
        messages = self._reader.load(raw)
        if messages is None:  # a corrupt or invalid item: item by item, for the error naming the key
            return self._load([decode(item, key) for item in raw])
        return messages

    def _load(self, raw: list[Any]) -> list[M]:
        key = self._keys.messages
        return [self._codec.load(key, item) for item in raw]  # type: ignore[misc]  # list items are never None

    # --- live updates -----------------------------------------------------------------

    def watch(self, *, start: int | None = None, poll_interval: float | None = None) -> AsyncIterator[ListItem]:
        """Stream the conversation: each new message as ``(position, message)``, validated as the model.

        The database's `AsyncDatabase.watch` on the messages list (same ``start`` and
        ``poll_interval``; ``start=-20``: the last 20 messages, then new ones). Positions
        are the watch cursor (never renumbered by `trim`); resume with
        ``start=position + 1``.
        """
        return self._watch(self.database.watch(self._keys.messages, start=start, poll_interval=poll_interval))

    async def _watch(self, items: AsyncIterator[ListItem]) -> AsyncIterator[ListItem]:
        key = self._keys.messages
        try:
            async for position, raw in items:
                yield ListItem(position, self._codec.load(key, raw))
        finally:
            await items.aclose()  # type: ignore[attr-defined]  # an async generator
