"""`watch` in the contract suite: every database backend, async and (generated) sync."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kvstore import InvalidKeyError, WrongTypeError
from kvstore.chat import AsyncChatHistory, ChatMessage
from tests._async.backends import AsyncHarness

#: Fast polling keeps the SQLite runs short; PostgreSQL and memory are woken anyway.
POLL = 0.02


async def take(items: Any, n: int) -> list[tuple[int, Any]]:
    """The next ``n`` items of a watch, as plain ``(position, value)`` tuples."""
    got: list[tuple[int, Any]] = []
    if n == 0:
        return got
    async for item in items:
        got.append((item.position, item.value))
        if len(got) == n:
            break
    return got


async def writer_of(db: AsyncHarness) -> Any:
    """Another connection to the same data (a memory database has only its own store)."""
    return db.store if db.name == "memory" else await db.sibling()


async def test_watch_from_start_yields_existing_items_with_positions(db: AsyncHarness) -> None:
    await db.store.extend("w", ["a", {"b": 1}, [3]])
    items = db.store.watch("w", start=0, poll_interval=POLL)
    try:
        assert await take(items, 3) == [(0, "a"), (1, {"b": 1}), (2, [3])]
    finally:
        await items.aclose()


async def test_watch_streams_appends_of_another_connection_in_order(db: AsyncHarness) -> None:
    writer = await writer_of(db)
    items = db.store.watch("w", start=0, poll_interval=POLL)

    async def write_all() -> None:
        for i in range(30):
            if i % 3 == 0:
                await writer.extend("w", [i, i + 1, i + 2])
            if i % 10 == 0:
                await asyncio.sleep(0.01)

    try:
        if True:  # ASYNC
            task = asyncio.create_task(write_all())
            got = await take(items, 30)
            await task
        else:
            with ThreadPoolExecutor(1) as pool:
                done = pool.submit(write_all)
                got = take(items, 30)
                done.result()
    finally:
        await items.aclose()
    assert got == [(i, i) for i in range(30)]


async def test_watch_start_none_is_only_new_items_and_negative_is_the_tail(db: AsyncHarness) -> None:
    await db.store.extend("w", list(range(5)))
    tail = db.store.watch("w", start=-2, poll_interval=POLL)
    try:
        assert await take(tail, 2) == [(3, 3), (4, 4)]
        await db.store.append("w", 5)
        assert await take(tail, 1) == [(5, 5)]
    finally:
        await tail.aclose()
    wide = db.store.watch("w", start=-100, poll_interval=POLL)
    try:
        assert await take(wide, 1) == [(0, 0)]
    finally:
        await wide.aclose()


async def test_watch_resumes_from_a_position_with_no_gap_and_no_duplicate(db: AsyncHarness) -> None:
    await db.store.extend("w", ["a", "b", "c"])
    first = db.store.watch("w", start=0, poll_interval=POLL)
    try:
        seen = await take(first, 2)
    finally:
        await first.aclose()
    await db.store.extend("w", ["d", "e"])
    again = db.store.watch("w", start=seen[-1][0] + 1, poll_interval=POLL)
    try:
        seen += await take(again, 3)
    finally:
        await again.aclose()
    assert seen == [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")]


async def test_watch_positions_are_not_renumbered_by_a_front_trim(db: AsyncHarness) -> None:
    await db.store.extend("w", list(range(10)))
    assert await db.store.trim("w", 6, -1) == 6
    items = db.store.watch("w", start=0, poll_interval=POLL)
    try:
        # Trimmed items are skipped; the kept ones keep their positions.
        assert await take(items, 4) == [(6, 6), (7, 7), (8, 8), (9, 9)]
        await db.store.append("w", 10)
        assert await take(items, 1) == [(10, 10)]
    finally:
        await items.aclose()
    assert await db.store.get_range("w", 0, -1) == [6, 7, 8, 9, 10]


async def test_a_list_started_where_one_expired_or_was_replaced_counts_positions_from_zero(db: AsyncHarness) -> None:
    """A list whose key expired, or was replaced by a value that then expired, is gone like a deleted one: the
    list appended there next is a new list, positions from 0, on every backend. (PostgreSQL went on from the old
    list's end, 3 and 2 here, where memory and SQLite started at 0; and only until its sweep removed the
    expired row, after which it started at 0 too.)"""
    for key, replace in (("expired", False), ("replaced", True), ("touched", False)):
        await db.store.extend(key, ["a", "b", "c"])
        assert await db.store.trim(key, 1, -1) == 1
        if replace:
            await db.store.set(key, "value", ttl=0.1)
        else:
            assert await db.store.expire(key, 0.1) is True
    await db.advance(0.3)
    assert await db.store.extend("touched", ["new", "next"]) == 2  # an extend restarts it the same way
    for key in ("expired", "replaced", "touched"):
        if key != "touched":
            assert await db.store.append(key, "new") == 1
        items = db.store.watch(key, start=0, poll_interval=POLL)
        try:
            wanted = [(0, "new"), (1, "next")] if key == "touched" else [(0, "new")]
            assert await take(items, len(wanted)) == wanted, key
        finally:
            await items.aclose()
        assert await db.store.get_range(key, 0, -1) == [v for _, v in wanted]
        assert await db.store.get_length(key) == len(wanted)


async def test_watch_of_a_missing_list_waits_for_its_first_item(db: AsyncHarness) -> None:
    items = db.store.watch("later", poll_interval=POLL)
    writer = await writer_of(db)

    async def write_soon() -> None:
        await asyncio.sleep(0.1)
        await writer.append("later", "first")

    try:
        if True:  # ASYNC
            # start=None resolves on the first read: wait for it before writing.
            task = asyncio.create_task(write_soon())
            got = await take(items, 1)
            await task
        else:
            with ThreadPoolExecutor(1) as pool:
                done = pool.submit(write_soon)
                got = take(items, 1)
                done.result()
    finally:
        await items.aclose()
    assert got == [(0, "first")]


async def test_watch_of_a_value_raises_wrong_type(db: AsyncHarness) -> None:
    await db.store.set("v", 1)
    items = db.store.watch("v", poll_interval=POLL)
    try:
        with pytest.raises(WrongTypeError):
            await take(items, 1)
    finally:
        await items.aclose()


async def test_watch_checks_its_arguments_before_any_io(db: AsyncHarness) -> None:
    with pytest.raises(InvalidKeyError):
        db.store.watch("")
    with pytest.raises(TypeError):
        db.store.watch("w", start="0")
    with pytest.raises(TypeError):
        db.store.watch("w", start=True)
    for bad in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="poll_interval"):
            db.store.watch("w", poll_interval=bad)


async def test_chat_history_watch_yields_validated_messages(db: AsyncHarness) -> None:
    history = AsyncChatHistory(db.store, "conv-watch")
    await history.add({"role": "user", "content": "hi"})
    stream = history.watch(start=0, poll_interval=POLL)
    try:
        first = await take(stream, 1)
        await history.add(ChatMessage(role="assistant", content="hello"))
        second = await take(stream, 1)
    finally:
        await stream.aclose()
    assert [position for position, _ in first + second] == [0, 1]
    messages = [message for _, message in first + second]
    assert all(isinstance(m, ChatMessage) for m in messages)
    assert [(m.role, m.content) for m in messages] == [("user", "hi"), ("assistant", "hello")]
