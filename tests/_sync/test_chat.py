# Generated from tests/_async/test_chat.py by tools/unasync.py: do not edit; edit the async source.
"""`ChatHistory` on every database backend (through the contract suite's ``db`` fixture)."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from pydantic import BaseModel, ValidationError

from kvstore import ChatHistory, ChatMessage, MemoryCache, MemoryDatabase
from tests._sync.backends import Harness

#: Message ids outlive a conversation's deletion (DESIGN.md §1): each run uses fresh conversations.
RUN = uuid.uuid4().hex[:8]


class Turn(BaseModel):
    """A custom message model."""

    speaker: str
    text: str
    at: datetime
    id: str | None = None


def test_add_and_last_round_trip_typed_messages(db: Harness) -> None:
    """Messages (models or dicts) come back as ChatMessage, oldest first, with their datetimes."""
    history = ChatHistory(db.store, "conv-1")
    first = ChatMessage(role="user", content="hi")
    assert history.add(first) == 0
    assert history.add({"role": "assistant", "content": "hello", "tool_calls": [1]}) == 1
    messages = history.last(20)
    assert [m.content for m in messages] == ["hi", "hello"]
    assert isinstance(messages[0], ChatMessage)
    assert messages[0].created_at == first.created_at
    assert messages[1].model_extra == {"tool_calls": [1]}
    assert history.count() == 2
    assert history.last(1) == [messages[1]]
    assert history.last(0) == []


def test_extend_returns_positions_in_one_call(db: Harness) -> None:
    """extend appends every message in order with one database call and returns their positions."""
    history = ChatHistory(db.store, "conv-ext")
    history.add({"role": "system", "content": "be brief"})
    calls: list[str] = []
    real, real_json = db.store.extend, db.store.extend_json

    def counting(key: str, values: object, *, idempotency_id: str | None = None) -> int:
        calls.append("extend")
        return real(key, values, idempotency_id=idempotency_id)  # type: ignore[arg-type]

    def counting_json(key: str, items: list[bytes], *, idempotency_id: str | None = None) -> int | None:
        calls.append("extend_json")
        return real_json(key, items, idempotency_id=idempotency_id)

    db.store.extend = counting  # type: ignore[method-assign]
    db.store.extend_json = counting_json  # type: ignore[method-assign]
    try:
        positions = history.extend([{"role": "user", "content": str(i)} for i in range(5)])
    finally:
        del db.store.extend
        del db.store.extend_json
    assert calls == ["extend_json"]  # the encoded messages, stored as they are, in one call
    assert positions == range(1, 6)
    assert [m.content for m in history.last(3)] == ["2", "3", "4"]
    assert history.extend([]) == range(6, 6)


def test_retried_add_with_id_never_duplicates(db: Harness) -> None:
    """add with the same idempotency id (argument or the message's id field) stores the message once."""
    history = ChatHistory(db.store, f"conv-idem-{RUN}")
    assert history.add({"role": "user", "content": "a"}, id="t1") == 0
    assert history.add({"role": "user", "content": "a"}, id="t1") == 0
    assert history.add(ChatMessage(role="assistant", content="b", id="t2")) == 1
    assert history.add(ChatMessage(role="assistant", content="b", id="t2")) == 1
    assert history.count() == 2
    assert [m.id for m in history.last(5)] == ["t1", "t2"]


def test_concurrent_adds_with_one_id_store_one_message(db: Harness) -> None:
    """Several racing adds of the same id (e.g. a client retrying while the first is in flight) store it once."""
    history = ChatHistory(db.store, f"conv-race-{RUN}")
    positions = [history.add({"role": "user", "content": "x"}, id="same") for _ in range(5)]
    assert set(positions) == {0}
    assert history.count() == 1


def test_add_with_an_id_leaves_no_key_in_the_users_keyspace(db: Harness) -> None:
    """Message ids are the append's idempotency ids: no claim or record key appears beside the list."""
    history = ChatHistory(db.store, f"conv-ids-{RUN}")
    assert history.add({"role": "user", "content": "x"}, id="m1") == 0
    history.add({"role": "user", "content": "later"})
    assert history.add({"role": "user", "content": "x"}, id="m1") == 0  # a retry: nothing new
    assert history.count() == 2
    assert db.store.keys() == [history.key]


def test_extend_with_an_id_is_written_once(db: Harness) -> None:
    """A retried batch with one id stores its messages once and returns the same positions."""
    history = ChatHistory(db.store, f"conv-batch-{RUN}", model=dict)
    batch = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert history.extend(batch, id="turn-1") == range(0, 2)
    assert history.extend(batch, id="turn-1") == range(0, 2)
    assert history.count() == 2


def test_page_walks_back_to_the_oldest_message(db: Harness) -> None:
    """page(before=...) returns fixed-size pages, newest first, with a cursor until the oldest."""
    history = ChatHistory(db.store, "conv-page", model=dict)
    history.extend([{"n": i} for i in range(7)])
    seen: list[int] = []
    page = history.page(limit=3)
    pages = 1
    while True:
        seen[:0] = [m["n"] for m in page.messages]
        if page.before is None:
            break
        page = history.page(before=page.before, limit=3)
        pages += 1
    assert seen == list(range(7))
    assert pages == 3
    assert (history.page(before=0)).messages == []
    with pytest.raises(ValueError, match="limit"):
        history.page(limit=0)


def test_trim_keeps_the_newest_and_removes_the_rest(db: Harness) -> None:
    """trim(n) keeps the newest n for last/page/count/iteration; the dropped ones leave the database."""
    history = ChatHistory(db.store, "conv-trim", model=dict)
    history.extend([{"n": i} for i in range(10)])
    assert history.trim(4) == 6
    assert history.trim(4) == 0
    assert history.count() == 4
    assert [m["n"] for m in history.last(20)] == [6, 7, 8, 9]
    assert [m["n"] for m in history.last(2)] == [8, 9]
    assert db.store.get_length(history.key) == 4  # gone from storage, not only hidden
    page = history.page(limit=10)
    assert (page.start, page.before) == (0, None)
    assert [m["n"] for m in history.iter_messages(batch=3)] == [6, 7, 8, 9]
    assert history.add({"n": 10}) == 4  # positions count from the oldest kept message
    assert history.count() == 5
    history.trim(0)
    assert history.last(5) == []
    assert history.count() == 0


def test_a_history_trimmed_by_an_offset_is_trimmed_for_real(db: Harness) -> None:
    """A kvstore 0.1 history (trim offset in a meta value) reads as before and its next trim removes for real."""
    history = ChatHistory(db.store, "conv-legacy", model=dict)
    history.extend([{"n": i} for i in range(10)])
    db.store.set("chat.meta:conv-legacy", {"offset": 6})
    assert history.count() == 4
    assert [m["n"] for m in history.last(20)] == [6, 7, 8, 9]
    assert history.trim(3) == 1
    assert [m["n"] for m in history.last(20)] == [7, 8, 9]
    assert db.store.get_length(history.key) == 3
    assert db.store.exists("chat.meta:conv-legacy") is False


def test_clear_deletes_messages_and_meta_only_of_its_conversation(db: Harness) -> None:
    """Deleting a conversation removes every key it owns, and no other conversation's."""
    a = ChatHistory(db.store, f"a{RUN}")
    ab = ChatHistory(db.store, f"a{RUN}:b")
    a.add({"role": "user", "content": "1"}, id="x")
    a.trim(5)
    ab.add({"role": "user", "content": "2"}, id="x")
    assert a.clear() is True
    assert a.count() == 0
    assert a.clear() is False
    assert db.store.keys() == [ab.key]


def test_conversations_are_listed_by_pattern(db: Harness) -> None:
    """conversations(pattern) lists conversation ids by glob, including ids with glob characters."""
    for conversation in ["user:1", "user:2", "bot*", "other"]:
        ChatHistory(db.store, conversation).add({"role": "user", "content": "hi"}, id=f"i-{RUN}")
    db.store.set("chat.meta:unrelated", 1)
    assert ChatHistory.conversations(db.store) == ["bot*", "other", "user:1", "user:2"]
    assert ChatHistory.conversations(db.store, "user:*") == ["user:1", "user:2"]
    assert ChatHistory.conversations(db.store, "bot\\*") == ["bot*"]
    assert ChatHistory.conversations(db.store, namespace="elsewhere") == []


def test_conversation_ttl_slides_with_each_write(db: Harness) -> None:
    """With ttl, a conversation expires that long after its last write, trimmed offset included."""
    scale = 1.0 if db.clock is not None else 0.2  # a backend on the real clock really waits
    history = ChatHistory(db.store, "conv-ttl", model=dict, ttl=10 * scale)
    history.extend([{"n": 1}, {"n": 2}])
    history.trim(1)
    db.advance(6 * scale)
    history.add({"n": 3})
    db.advance(6 * scale)
    assert [m["n"] for m in history.last(5)] == [2, 3]
    db.advance(5 * scale)
    assert history.count() == 0
    assert db.store.keys("chat*") == []


def test_custom_model_validates_writes(db: Harness) -> None:
    """A custom model is validated on add and parsed on read; an invalid message stores nothing."""
    history = ChatHistory(db.store, "conv-typed", model=Turn)
    history.add({"speaker": "me", "text": "hi", "at": "2024-01-02T03:04:05Z"})
    with pytest.raises(ValidationError):
        history.add({"speaker": "me"})
    (turn,) = history.last(5)
    assert turn.at.year == 2024


def test_history_needs_the_database_tier() -> None:
    """A chat history on a cache store, or with an empty id or bad TTL, is refused at construction."""
    with pytest.raises(TypeError, match="database"):
        ChatHistory(MemoryCache(), "c")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="conversation_id"):
        ChatHistory(MemoryDatabase(), "")
    with pytest.raises(ValueError, match="ttl"):
        ChatHistory(MemoryDatabase(), "c", ttl=0)


def test_a_page_is_parsed_in_one_pydantic_call(db: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """last/page/iter_messages read the stored JSON undecoded and validate the page in one validate_json call."""
    history = ChatHistory(db.store, f"conv-one-pass-{RUN}")
    history.extend([{"role": "user", "content": f"m{i}", "extra": {"i": i}} for i in range(30)])
    calls: list[object] = []
    adapter = history._reader._adapter
    assert adapter is not None
    real = adapter.validator

    class Spy:  # the adapter's pydantic-core validator, counting its validate_json calls
        def validate_json(self, data: object, *args: object, **kwargs: object) -> object:
            calls.append(data)
            return real.validate_json(data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(adapter, "validator", Spy())
    messages = history.last(20)
    assert [m.content for m in messages] == [f"m{i}" for i in range(10, 30)]
    assert messages[0].model_extra == {"extra": {"i": 10}}
    assert len(calls) == 1  # the whole page, once
    page = history.page(before=10, limit=5)
    assert [m.content for m in page.messages] == [f"m{i}" for i in range(5, 10)]
    assert [m.content for m in history.iter_messages(batch=7)] == [f"m{i}" for i in range(30)]
    assert len(calls) == 1 + 1 + 5  # one per page read (30 messages in batches of 7: 5 reads)


def test_dict_histories_skip_validation_and_stay_dicts(db: Harness) -> None:
    """model=dict: one orjson pass, the stored objects come back as they were written."""
    history = ChatHistory(db.store, f"conv-dict-{RUN}", model=dict)
    history.extend([{"role": "user", "content": "a", "n": [1, 2.5, None]}, {"x": {"y": "z"}}])
    assert history.last(5) == [{"role": "user", "content": "a", "n": [1, 2.5, None]}, {"x": {"y": "z"}}]


def test_an_invalid_stored_item_still_names_the_key(db: Harness) -> None:
    """A stored item that is not a valid message (written past the history) fails the read with the key's title;
    a dict history refuses a stored non-object the same way."""
    key = f"conv-bad-{RUN}"
    history = ChatHistory(db.store, key)
    history.add({"role": "user", "content": "ok"})
    db.store.append(f"chat:{key}", {"role": "user"})  # no content
    with pytest.raises(ValidationError, match=f"chat:{key}"):
        history.last(5)
    db.store.append(f"chat:{key}-d", 5)
    with pytest.raises(ValidationError, match=f"chat:{key}-d"):
        ChatHistory(db.store, f"{key}-d", model=dict).last(5)


def test_the_legacy_offset_is_looked_up_until_there_is_none(db: Harness) -> None:
    """Once a history has read that its conversation has no kvstore 0.1 trim offset, last() is one read."""
    history = ChatHistory(db.store, f"conv-reads-{RUN}")
    history.add({"role": "user", "content": "a"})
    gets = 0
    real = db.store.get

    def counting(key: str, **kwargs: object) -> object:
        nonlocal gets
        gets += 1
        return real(key, **kwargs)  # type: ignore[arg-type]

    db.store.get = counting  # type: ignore[method-assign]
    try:
        assert len(history.last(5)) == 1
        assert gets == 1  # looked up once
        assert len(history.last(5)) == 1
        assert history.count() == 1
        assert gets == 1  # not again
    finally:
        del db.store.get
