"""`AsyncChatHistory` on every database backend (through the contract suite's ``db`` fixture)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest
from pydantic import BaseModel, ValidationError

from kvstore import AsyncChatHistory, AsyncMemoryCache, AsyncMemoryDatabase, ChatMessage
from tests._async.backends import AsyncHarness

#: Message ids outlive a conversation's deletion (DESIGN.md §1): each run uses fresh conversations.
RUN = uuid.uuid4().hex[:8]


class Turn(BaseModel):
    """A custom message model."""

    speaker: str
    text: str
    at: datetime
    id: str | None = None


async def test_add_and_last_round_trip_typed_messages(db: AsyncHarness) -> None:
    """Messages (models or dicts) come back as ChatMessage, oldest first, with their datetimes."""
    history = AsyncChatHistory(db.store, "conv-1")
    first = ChatMessage(role="user", content="hi")
    assert await history.add(first) == 0
    assert await history.add({"role": "assistant", "content": "hello", "tool_calls": [1]}) == 1
    messages = await history.last(20)
    assert [m.content for m in messages] == ["hi", "hello"]
    assert isinstance(messages[0], ChatMessage)
    assert messages[0].created_at == first.created_at
    assert messages[1].model_extra == {"tool_calls": [1]}
    assert await history.count() == 2
    assert await history.last(1) == [messages[1]]
    assert await history.last(0) == []


async def test_extend_returns_positions_in_one_call(db: AsyncHarness) -> None:
    """extend appends every message in order with one database call and returns their positions."""
    history = AsyncChatHistory(db.store, "conv-ext")
    await history.add({"role": "system", "content": "be brief"})
    calls: list[str] = []
    real, real_json = db.store.extend, db.store.extend_json

    async def counting(key: str, values: object, *, idempotency_id: str | None = None) -> int:
        calls.append("extend")
        return await real(key, values, idempotency_id=idempotency_id)  # type: ignore[arg-type]

    async def counting_json(key: str, items: list[bytes], *, idempotency_id: str | None = None) -> int | None:
        calls.append("extend_json")
        return await real_json(key, items, idempotency_id=idempotency_id)

    db.store.extend = counting  # type: ignore[method-assign]
    db.store.extend_json = counting_json  # type: ignore[method-assign]
    try:
        positions = await history.extend([{"role": "user", "content": str(i)} for i in range(5)])
    finally:
        del db.store.extend
        del db.store.extend_json
    assert calls == ["extend_json"]  # the encoded messages, stored as they are, in one call
    assert positions == range(1, 6)
    assert [m.content for m in await history.last(3)] == ["2", "3", "4"]
    assert await history.extend([]) == range(6, 6)


async def test_retried_add_with_id_never_duplicates(db: AsyncHarness) -> None:
    """add with the same idempotency id (argument or the message's id field) stores the message once."""
    history = AsyncChatHistory(db.store, f"conv-idem-{RUN}")
    assert await history.add({"role": "user", "content": "a"}, id="t1") == 0
    assert await history.add({"role": "user", "content": "a"}, id="t1") == 0
    assert await history.add(ChatMessage(role="assistant", content="b", id="t2")) == 1
    assert await history.add(ChatMessage(role="assistant", content="b", id="t2")) == 1
    assert await history.count() == 2
    assert [m.id for m in await history.last(5)] == ["t1", "t2"]


async def test_concurrent_adds_with_one_id_store_one_message(db: AsyncHarness) -> None:
    """Several racing adds of the same id (e.g. a client retrying while the first is in flight) store it once."""
    history = AsyncChatHistory(db.store, f"conv-race-{RUN}")
    if True:  # ASYNC
        positions = await asyncio.gather(*(history.add({"role": "user", "content": "x"}, id="same") for _ in range(5)))
    else:
        positions = [history.add({"role": "user", "content": "x"}, id="same") for _ in range(5)]
    assert set(positions) == {0}
    assert await history.count() == 1


async def test_add_with_an_id_leaves_no_key_in_the_users_keyspace(db: AsyncHarness) -> None:
    """Message ids are the append's idempotency ids: no claim or record key appears beside the list."""
    history = AsyncChatHistory(db.store, f"conv-ids-{RUN}")
    assert await history.add({"role": "user", "content": "x"}, id="m1") == 0
    await history.add({"role": "user", "content": "later"})
    assert await history.add({"role": "user", "content": "x"}, id="m1") == 0  # a retry: nothing new
    assert await history.count() == 2
    assert await db.store.keys() == [history.key]


async def test_extend_with_an_id_is_written_once(db: AsyncHarness) -> None:
    """A retried batch with one id stores its messages once and returns the same positions."""
    history = AsyncChatHistory(db.store, f"conv-batch-{RUN}", model=dict)
    batch = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert await history.extend(batch, id="turn-1") == range(0, 2)
    assert await history.extend(batch, id="turn-1") == range(0, 2)
    assert await history.count() == 2


async def test_page_walks_back_to_the_oldest_message(db: AsyncHarness) -> None:
    """page(before=...) returns fixed-size pages, newest first, with a cursor until the oldest."""
    history = AsyncChatHistory(db.store, "conv-page", model=dict)
    await history.extend([{"n": i} for i in range(7)])
    seen: list[int] = []
    page = await history.page(limit=3)
    pages = 1
    while True:
        seen[:0] = [m["n"] for m in page.messages]
        if page.before is None:
            break
        page = await history.page(before=page.before, limit=3)
        pages += 1
    assert seen == list(range(7))
    assert pages == 3
    assert (await history.page(before=0)).messages == []
    with pytest.raises(ValueError, match="limit"):
        await history.page(limit=0)


async def test_trim_keeps_the_newest_and_removes_the_rest(db: AsyncHarness) -> None:
    """trim(n) keeps the newest n for last/page/count/iteration; the dropped ones leave the database."""
    history = AsyncChatHistory(db.store, "conv-trim", model=dict)
    await history.extend([{"n": i} for i in range(10)])
    assert await history.trim(4) == 6
    assert await history.trim(4) == 0
    assert await history.count() == 4
    assert [m["n"] for m in await history.last(20)] == [6, 7, 8, 9]
    assert [m["n"] for m in await history.last(2)] == [8, 9]
    assert await db.store.get_length(history.key) == 4  # gone from storage, not only hidden
    page = await history.page(limit=10)
    assert (page.start, page.before) == (0, None)
    assert [m["n"] async for m in history.iter_messages(batch=3)] == [6, 7, 8, 9]
    assert await history.add({"n": 10}) == 4  # positions count from the oldest kept message
    assert await history.count() == 5
    await history.trim(0)
    assert await history.last(5) == []
    assert await history.count() == 0


async def test_a_history_trimmed_by_an_offset_is_trimmed_for_real(db: AsyncHarness) -> None:
    """A kvstore 0.1 history (trim offset in a meta value) reads as before and its next trim removes for real."""
    history = AsyncChatHistory(db.store, "conv-legacy", model=dict)
    await history.extend([{"n": i} for i in range(10)])
    await db.store.set("chat.meta:conv-legacy", {"offset": 6})
    assert await history.count() == 4
    assert [m["n"] for m in await history.last(20)] == [6, 7, 8, 9]
    assert await history.trim(3) == 1
    assert [m["n"] for m in await history.last(20)] == [7, 8, 9]
    assert await db.store.get_length(history.key) == 3
    assert await db.store.exists("chat.meta:conv-legacy") is False


async def test_clear_deletes_messages_and_meta_only_of_its_conversation(db: AsyncHarness) -> None:
    """Deleting a conversation removes every key it owns, and no other conversation's."""
    a = AsyncChatHistory(db.store, f"a{RUN}")
    ab = AsyncChatHistory(db.store, f"a{RUN}:b")
    await a.add({"role": "user", "content": "1"}, id="x")
    await a.trim(5)
    await ab.add({"role": "user", "content": "2"}, id="x")
    assert await a.clear() is True
    assert await a.count() == 0
    assert await a.clear() is False
    assert await db.store.keys() == [ab.key]


async def test_conversations_are_listed_by_pattern(db: AsyncHarness) -> None:
    """conversations(pattern) lists conversation ids by glob, including ids with glob characters."""
    for conversation in ["user:1", "user:2", "bot*", "other"]:
        await AsyncChatHistory(db.store, conversation).add({"role": "user", "content": "hi"}, id=f"i-{RUN}")
    await db.store.set("chat.meta:unrelated", 1)
    assert await AsyncChatHistory.conversations(db.store) == ["bot*", "other", "user:1", "user:2"]
    assert await AsyncChatHistory.conversations(db.store, "user:*") == ["user:1", "user:2"]
    assert await AsyncChatHistory.conversations(db.store, "bot\\*") == ["bot*"]
    assert await AsyncChatHistory.conversations(db.store, namespace="elsewhere") == []


async def test_conversation_ttl_slides_with_each_write(db: AsyncHarness) -> None:
    """With ttl, a conversation expires that long after its last write, trimmed offset included."""
    scale = 1.0 if db.clock is not None else 0.2  # a backend on the real clock really waits
    history = AsyncChatHistory(db.store, "conv-ttl", model=dict, ttl=10 * scale)
    await history.extend([{"n": 1}, {"n": 2}])
    await history.trim(1)
    await db.advance(6 * scale)
    await history.add({"n": 3})
    await db.advance(6 * scale)
    assert [m["n"] for m in await history.last(5)] == [2, 3]
    await db.advance(5 * scale)
    assert await history.count() == 0
    assert await db.store.keys("chat*") == []


async def test_custom_model_validates_writes(db: AsyncHarness) -> None:
    """A custom model is validated on add and parsed on read; an invalid message stores nothing."""
    history = AsyncChatHistory(db.store, "conv-typed", model=Turn)
    await history.add({"speaker": "me", "text": "hi", "at": "2024-01-02T03:04:05Z"})
    with pytest.raises(ValidationError):
        await history.add({"speaker": "me"})
    (turn,) = await history.last(5)
    assert turn.at.year == 2024


async def test_history_needs_the_database_tier() -> None:
    """A chat history on a cache store, or with an empty id or bad TTL, is refused at construction."""
    with pytest.raises(TypeError, match="database"):
        AsyncChatHistory(AsyncMemoryCache(), "c")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="conversation_id"):
        AsyncChatHistory(AsyncMemoryDatabase(), "")
    with pytest.raises(ValueError, match="ttl"):
        AsyncChatHistory(AsyncMemoryDatabase(), "c", ttl=0)


async def test_a_page_is_parsed_in_one_pydantic_call(db: AsyncHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """last/page/iter_messages read the stored JSON undecoded and validate the page in one validate_json call."""
    history = AsyncChatHistory(db.store, f"conv-one-pass-{RUN}")
    await history.extend([{"role": "user", "content": f"m{i}", "extra": {"i": i}} for i in range(30)])
    calls: list[object] = []
    adapter = history._reader._adapter
    assert adapter is not None
    real = adapter.validator

    class Spy:  # the adapter's pydantic-core validator, counting its validate_json calls
        def validate_json(self, data: object, *args: object, **kwargs: object) -> object:
            calls.append(data)
            return real.validate_json(data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(adapter, "validator", Spy())
    messages = await history.last(20)
    assert [m.content for m in messages] == [f"m{i}" for i in range(10, 30)]
    assert messages[0].model_extra == {"extra": {"i": 10}}
    assert len(calls) == 1  # the whole page, once
    page = await history.page(before=10, limit=5)
    assert [m.content for m in page.messages] == [f"m{i}" for i in range(5, 10)]
    assert [m.content async for m in history.iter_messages(batch=7)] == [f"m{i}" for i in range(30)]
    assert len(calls) == 1 + 1 + 5  # one per page read (30 messages in batches of 7: 5 reads)


async def test_dict_histories_skip_validation_and_stay_dicts(db: AsyncHarness) -> None:
    """model=dict: one orjson pass, the stored objects come back as they were written."""
    history = AsyncChatHistory(db.store, f"conv-dict-{RUN}", model=dict)
    await history.extend([{"role": "user", "content": "a", "n": [1, 2.5, None]}, {"x": {"y": "z"}}])
    assert await history.last(5) == [{"role": "user", "content": "a", "n": [1, 2.5, None]}, {"x": {"y": "z"}}]


async def test_an_invalid_stored_item_still_names_the_key(db: AsyncHarness) -> None:
    """A stored item that is not a valid message (written past the history) fails the read with the key's title;
    a dict history refuses a stored non-object the same way."""
    key = f"conv-bad-{RUN}"
    history = AsyncChatHistory(db.store, key)
    await history.add({"role": "user", "content": "ok"})
    await db.store.append(f"chat:{key}", {"role": "user"})  # no content
    with pytest.raises(ValidationError, match=f"chat:{key}"):
        await history.last(5)
    await db.store.append(f"chat:{key}-d", 5)
    with pytest.raises(ValidationError, match=f"chat:{key}-d"):
        await AsyncChatHistory(db.store, f"{key}-d", model=dict).last(5)


async def test_the_legacy_offset_is_looked_up_until_there_is_none(db: AsyncHarness) -> None:
    """Once a history has read that its conversation has no kvstore 0.1 trim offset, last() is one read."""
    history = AsyncChatHistory(db.store, f"conv-reads-{RUN}")
    await history.add({"role": "user", "content": "a"})
    gets = 0
    real = db.store.get

    async def counting(key: str, **kwargs: object) -> object:
        nonlocal gets
        gets += 1
        return await real(key, **kwargs)  # type: ignore[arg-type]

    db.store.get = counting  # type: ignore[method-assign]
    try:
        assert len(await history.last(5)) == 1
        assert gets == 1  # looked up once
        assert len(await history.last(5)) == 1
        assert await history.count() == 1
        assert gets == 1  # not again
    finally:
        del db.store.get
