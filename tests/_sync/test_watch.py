# Generated from tests/_async/test_watch.py by tools/unasync.py: do not edit; edit the async source.
"""`watch` in the contract suite: every database backend, async and (generated) sync."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kvstore import InvalidKeyError, WrongTypeError
from kvstore.chat import ChatHistory, ChatMessage
from tests._sync.backends import Harness

#: Fast polling keeps the SQLite runs short; PostgreSQL and memory are woken anyway.
POLL = 0.02


def take(items: Any, n: int) -> list[tuple[int, Any]]:
    """The next ``n`` items of a watch, as plain ``(position, value)`` tuples."""
    got: list[tuple[int, Any]] = []
    if n == 0:
        return got
    for item in items:
        got.append((item.position, item.value))
        if len(got) == n:
            break
    return got


def writer_of(db: Harness) -> Any:
    """Another connection to the same data (a memory database has only its own store)."""
    return db.store if db.name == "memory" else db.sibling()


def test_watch_from_start_yields_existing_items_with_positions(db: Harness) -> None:
    db.store.extend("w", ["a", {"b": 1}, [3]])
    items = db.store.watch("w", start=0, poll_interval=POLL)
    try:
        assert take(items, 3) == [(0, "a"), (1, {"b": 1}), (2, [3])]
    finally:
        items.close()


def test_watch_streams_appends_of_another_connection_in_order(db: Harness) -> None:
    writer = writer_of(db)
    items = db.store.watch("w", start=0, poll_interval=POLL)

    def write_all() -> None:
        for i in range(30):
            if i % 3 == 0:
                writer.extend("w", [i, i + 1, i + 2])
            if i % 10 == 0:
                time.sleep(0.01)

    try:
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(write_all)
            got = take(items, 30)
            done.result()
    finally:
        items.close()
    assert got == [(i, i) for i in range(30)]


def test_watch_start_none_is_only_new_items_and_negative_is_the_tail(db: Harness) -> None:
    db.store.extend("w", list(range(5)))
    tail = db.store.watch("w", start=-2, poll_interval=POLL)
    try:
        assert take(tail, 2) == [(3, 3), (4, 4)]
        db.store.append("w", 5)
        assert take(tail, 1) == [(5, 5)]
    finally:
        tail.close()
    wide = db.store.watch("w", start=-100, poll_interval=POLL)
    try:
        assert take(wide, 1) == [(0, 0)]
    finally:
        wide.close()


def test_watch_resumes_from_a_position_with_no_gap_and_no_duplicate(db: Harness) -> None:
    db.store.extend("w", ["a", "b", "c"])
    first = db.store.watch("w", start=0, poll_interval=POLL)
    try:
        seen = take(first, 2)
    finally:
        first.close()
    db.store.extend("w", ["d", "e"])
    again = db.store.watch("w", start=seen[-1][0] + 1, poll_interval=POLL)
    try:
        seen += take(again, 3)
    finally:
        again.close()
    assert seen == [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")]


def test_watch_positions_are_not_renumbered_by_a_front_trim(db: Harness) -> None:
    db.store.extend("w", list(range(10)))
    assert db.store.trim("w", 6, -1) == 6
    items = db.store.watch("w", start=0, poll_interval=POLL)
    try:
        # Trimmed items are skipped; the kept ones keep their positions.
        assert take(items, 4) == [(6, 6), (7, 7), (8, 8), (9, 9)]
        db.store.append("w", 10)
        assert take(items, 1) == [(10, 10)]
    finally:
        items.close()
    assert db.store.get_range("w", 0, -1) == [6, 7, 8, 9, 10]


def test_a_list_started_where_one_expired_or_was_replaced_counts_positions_from_zero(db: Harness) -> None:
    """A list whose key expired, or was replaced by a value that then expired, is gone like a deleted one: the
    list appended there next is a new list, positions from 0, on every backend. (PostgreSQL went on from the old
    list's end, 3 and 2 here, where memory and SQLite started at 0; and only until its sweep removed the
    expired row, after which it started at 0 too.)"""
    for key, replace in (("expired", False), ("replaced", True), ("touched", False)):
        db.store.extend(key, ["a", "b", "c"])
        assert db.store.trim(key, 1, -1) == 1
        if replace:
            db.store.set(key, "value", ttl=0.1)
        else:
            assert db.store.expire(key, 0.1) is True
    db.advance(0.3)
    assert db.store.extend("touched", ["new", "next"]) == 2  # an extend restarts it the same way
    for key in ("expired", "replaced", "touched"):
        if key != "touched":
            assert db.store.append(key, "new") == 1
        items = db.store.watch(key, start=0, poll_interval=POLL)
        try:
            wanted = [(0, "new"), (1, "next")] if key == "touched" else [(0, "new")]
            assert take(items, len(wanted)) == wanted, key
        finally:
            items.close()
        assert db.store.get_range(key, 0, -1) == [v for _, v in wanted]
        assert db.store.get_length(key) == len(wanted)


def test_watch_of_a_missing_list_waits_for_its_first_item(db: Harness) -> None:
    items = db.store.watch("later", poll_interval=POLL)
    writer = writer_of(db)

    def write_soon() -> None:
        time.sleep(0.1)
        writer.append("later", "first")

    try:
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(write_soon)
            got = take(items, 1)
            done.result()
    finally:
        items.close()
    assert got == [(0, "first")]


def test_watch_of_a_value_raises_wrong_type(db: Harness) -> None:
    db.store.set("v", 1)
    items = db.store.watch("v", poll_interval=POLL)
    try:
        with pytest.raises(WrongTypeError):
            take(items, 1)
    finally:
        items.close()


def test_watch_checks_its_arguments_before_any_io(db: Harness) -> None:
    with pytest.raises(InvalidKeyError):
        db.store.watch("")
    with pytest.raises(TypeError):
        db.store.watch("w", start="0")
    with pytest.raises(TypeError):
        db.store.watch("w", start=True)
    for bad in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="poll_interval"):
            db.store.watch("w", poll_interval=bad)


def test_chat_history_watch_yields_validated_messages(db: Harness) -> None:
    history = ChatHistory(db.store, "conv-watch")
    history.add({"role": "user", "content": "hi"})
    stream = history.watch(start=0, poll_interval=POLL)
    try:
        first = take(stream, 1)
        history.add(ChatMessage(role="assistant", content="hello"))
        second = take(stream, 1)
    finally:
        stream.close()
    assert [position for position, _ in first + second] == [0, 1]
    messages = [message for _, message in first + second]
    assert all(isinstance(m, ChatMessage) for m in messages)
    assert [(m.role, m.content) for m in messages] == [("user", "hi"), ("assistant", "hello")]
