"""The contract suite (DESIGN.md §1-§4): every backend, both tiers, the same tests."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from kvstore import (
    InvalidKeyError,
    KVStoreError,
    SerializationError,
    ValueTooLargeError,
    WrongTypeError,
)
from kvstore.errors import ClosedError
from tests._async.backends import AsyncHarness

SPECIAL_KEYS = [
    "*",
    "?",
    "[",
    "]",
    "\\",
    "%",
    "_",
    "'",
    '"',
    ":",
    "a b",
    "[a-z]*",
    "50%_off\\",
    "emoji 🎉",
    "ключ",
    "a" * 1024,
    "é" * 512,
]

JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1.5,
    -0.25,
    "",
    "text with ünïcode and 🎉",
    [],
    {},
    [1, "two", None, [3.0]],
    {"nested": {"list": [1, 2, {"deep": True}]}, "empty": ""},
]


# --- values -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
async def test_set_then_get_round_trips_json_values(kv: AsyncHarness, value: Any) -> None:
    """Every JSON document reads back equal to what was written."""
    await kv.store.set("k", value)
    assert await kv.store.get("k") == value


async def test_get_missing_is_none(kv: AsyncHarness) -> None:
    """A key never written reads as None."""
    assert await kv.store.get("missing") is None


async def test_set_replaces(kv: AsyncHarness) -> None:
    """A second set replaces the value."""
    await kv.store.set("k", 1)
    await kv.store.set("k", {"two": 2})
    assert await kv.store.get("k") == {"two": 2}


async def test_stored_value_is_a_copy(kv: AsyncHarness) -> None:
    """Mutating an object after set does not change what is stored, nor does mutating what get returned."""
    value = {"a": [1, 2]}
    await kv.store.set("k", value)
    value["a"].append(3)
    got = await kv.store.get("k")
    assert got == {"a": [1, 2]}
    got["a"].append(4)
    assert await kv.store.get("k") == {"a": [1, 2]}


async def test_delete_reports_whether_something_was_removed(kv: AsyncHarness) -> None:
    """delete is True once for an existing key, then False."""
    await kv.store.set("k", 1)
    assert await kv.store.delete("k") is True
    assert await kv.store.delete("k") is False
    assert await kv.store.get("k") is None


async def test_exists(kv: AsyncHarness) -> None:
    """exists follows set and delete; a stored null still exists."""
    assert await kv.store.exists("k") is False
    await kv.store.set("k", None)
    assert await kv.store.exists("k") is True
    await kv.store.delete("k")
    assert await kv.store.exists("k") is False


async def test_only_if_absent(kv: AsyncHarness) -> None:
    """set(only_if_absent=True) writes once and then leaves the value alone."""
    assert await kv.store.set("k", 1, only_if_absent=True) is True
    assert await kv.store.set("k", 2, only_if_absent=True) is False
    assert await kv.store.get("k") == 1
    assert await kv.store.set("k", 3) is True
    assert await kv.store.get("k") == 3


async def test_native_orjson_types_are_stored_as_json(kv: AsyncHarness) -> None:
    """datetime, UUID and dataclasses are stored as their JSON forms."""

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await kv.store.set("k", {"when": when, "id": uid, "point": Point(1, 2)})
    assert await kv.store.get("k") == {
        "when": "2026-01-02T03:04:05+00:00",
        "id": "12345678-1234-5678-1234-567812345678",
        "point": {"x": 1, "y": 2},
    }


async def test_pydantic_models_are_stored_as_model_dump(kv: AsyncHarness) -> None:
    """A pydantic model is stored as model_dump(mode='json')."""

    class Message(pydantic.BaseModel):
        role: str
        at: datetime

    await kv.store.set("k", Message(role="user", at=datetime(2026, 1, 1, tzinfo=UTC)))
    assert await kv.store.get("k") == {"role": "user", "at": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", float("nan"), float("inf"), {"x": [float("-inf")]}, 2**64, {1: "int key"}],
    ids=["object", "set", "bytes", "nan", "inf", "nested-inf", "int>64bit", "int-dict-key"],
)
async def test_unencodable_values_raise_and_store_nothing(kv: AsyncHarness, value: Any) -> None:
    """What is not a JSON document raises SerializationError naming the key; nothing is written."""
    await kv.store.set("k", "before")
    with pytest.raises(SerializationError, match="'k'") as info:
        await kv.store.set("k", value)
    assert info.value.key == "k"
    assert isinstance(info.value, ValueError)
    assert await kv.store.get("k") == "before"


async def test_value_too_large(kv: AsyncHarness) -> None:
    """A value over max_value_bytes raises ValueTooLargeError and nothing is stored."""
    small = await kv.sibling(max_value_bytes=100)
    await small.set("k", "x" * 90)
    with pytest.raises(ValueTooLargeError):
        await small.set("k", "x" * 200)
    assert await small.get("k") == "x" * 90


# --- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "a" * 1025, "é" * 513, "nul\x00byte", "lone \ud800 surrogate", b"bytes", 42, None],
    ids=["empty", "1025-bytes", "1026-utf8-bytes", "nul", "surrogate", "bytes", "int", "none"],
)
async def test_invalid_keys_raise_before_io(kv: AsyncHarness, key: Any) -> None:
    """Every operation rejects an invalid key with InvalidKeyError (a ValueError)."""
    calls = [
        lambda: kv.store.get(key),
        lambda: kv.store.set(key, 1),
        lambda: kv.store.delete(key),
        lambda: kv.store.exists(key),
        lambda: kv.store.mget(["ok", key]),
        lambda: kv.store.mset([(key, 1)]),
        lambda: kv.store.ttl(key),
        lambda: kv.store.expire(key, 10),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError):
            await call()
    assert issubclass(InvalidKeyError, ValueError)


@pytest.mark.parametrize("key", SPECIAL_KEYS, ids=lambda k: repr(k[:20]))
async def test_special_characters_are_ordinary(kv: AsyncHarness, key: str) -> None:
    """Glob, LIKE and quote characters, spaces and emoji are ordinary characters in a key."""
    await kv.store.set(key, key)
    assert await kv.store.get(key) == key
    assert await kv.store.keys("*") == [key]
    assert await kv.store.exists(key)


# --- mget / mset ------------------------------------------------------------------------


async def test_mget_in_order_with_none_for_missing(kv: AsyncHarness) -> None:
    """mget returns one result per key, in order, None for missing, duplicates allowed."""
    await kv.store.set("a", 1)
    await kv.store.set("c", 3)
    assert await kv.store.mget(["c", "b", "a", "c"]) == [3, None, 1, 3]
    assert await kv.store.mget([]) == []


async def test_mset_mapping_and_tuples(kv: AsyncHarness) -> None:
    """mset takes a mapping or (key, value[, ttl]) tuples."""
    await kv.store.mset({"a": 1, "b": [2]})
    await kv.store.mset([("c", {"three": 3}), ("d", 4, 60), ("e", 5, timedelta(minutes=1))])
    assert await kv.store.mget(["a", "b", "c", "d", "e"]) == [1, [2], {"three": 3}, 4, 5]
    await kv.store.mset({})


async def test_mset_writes_nothing_when_one_item_is_bad(kv: AsyncHarness) -> None:
    """An invalid key, value or TTL anywhere in mset raises before anything is written."""
    with pytest.raises(InvalidKeyError):
        await kv.store.mset([("a", 1), ("", 2)])
    with pytest.raises(SerializationError):
        await kv.store.mset([("a", 1), ("b", object())])
    with pytest.raises(ValueError, match="ttl"):
        await kv.store.mset([("a", 1), ("b", 2, -1)])
    assert await kv.store.keys() == []


async def test_mset_last_duplicate_wins(kv: AsyncHarness) -> None:
    """A key given twice in mset ends with its last value."""
    await kv.store.mset([("a", 1), ("a", 2)])
    assert await kv.store.get("a") == 2


# --- keys() and clear() -----------------------------------------------------------------


async def test_keys_patterns(kv: AsyncHarness) -> None:
    """keys() follows Redis glob grammar and returns keys without the prefix."""
    for key in ["user:1", "user:2", "user:10", "users", "admin:1", "u*er", "u?er"]:
        await kv.store.set(key, 1)
    assert sorted(await kv.store.keys()) == sorted(["user:1", "user:2", "user:10", "users", "admin:1", "u*er", "u?er"])
    assert sorted(await kv.store.keys("user:*")) == ["user:1", "user:10", "user:2"]
    assert sorted(await kv.store.keys("user:?")) == ["user:1", "user:2"]
    assert sorted(await kv.store.keys("user:[12]")) == ["user:1", "user:2"]
    assert sorted(await kv.store.keys("user:[^1]")) == ["user:2"]
    assert sorted(await kv.store.keys("[a-b]*")) == ["admin:1"]
    assert await kv.store.keys("u\\*er") == ["u*er"]
    assert await kv.store.keys("u\\?er") == ["u?er"]
    assert await kv.store.keys("nothing*") == []


async def test_keys_match_characters_not_bytes(kv: AsyncHarness) -> None:
    """'k?' matches a key whose second character is multi-byte in UTF-8."""
    await kv.store.set("kж", 1)
    await kv.store.set("k🎉", 2)
    assert sorted(await kv.store.keys("k?")) == ["kж", "k🎉"]
    assert await kv.store.keys("k[а-я]") == ["kж"]


async def test_iter_keys_streams_the_same_keys(kv: AsyncHarness) -> None:
    """iter_keys yields exactly what keys() returns."""
    await kv.store.mset({f"k{i}": i for i in range(50)})
    streamed = [key async for key in kv.store.iter_keys("k1*")]
    assert sorted(streamed) == sorted(await kv.store.keys("k1*"))
    assert len(streamed) == 11


async def test_clear_removes_everything_of_the_store(kv: AsyncHarness) -> None:
    """clear() leaves the store empty."""
    await kv.store.mset({"a": 1, "b": 2})
    await kv.store.clear()
    assert await kv.store.keys() == []
    assert await kv.store.get("a") is None


@pytest.mark.parametrize(("mine", "theirs"), [("a:", "a*:"), ("p%", "p_"), ("x[1]", "x1"), ("", "other:")])
async def test_prefixes_isolate_stores(kv: AsyncHarness, mine: str, theirs: str) -> None:
    """Stores with different prefixes never see, list, expire or clear each other's keys."""
    a = await kv.sibling(key_prefix=mine)
    b = await kv.sibling(key_prefix=theirs)
    await a.clear()
    await b.clear()
    await a.set("k", "a")
    await b.set("k", "b")
    await b.set("k2", "b")
    assert await a.get("k") == "a"
    assert await b.get("k") == "b"
    assert sorted(await b.keys("*")) == ["k", "k2"]
    assert await a.keys("*") == ["k"]
    assert await a.exists("k2") is False
    await a.clear()
    assert await b.mget(["k", "k2"]) == ["b", "b"]
    assert await a.keys() == []


# --- TTL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ttl", [0, -1, float("nan"), float("inf"), timedelta(0), timedelta(seconds=-1), 1e13, timedelta(days=10**7)]
)
async def test_ttl_must_be_positive(kv: AsyncHarness, ttl: Any) -> None:
    """A TTL that is not > 0 raises ValueError and nothing is stored."""
    with pytest.raises(ValueError, match="ttl"):
        await kv.store.set("k", 1, ttl=ttl)
    assert await kv.store.exists("k") is False


async def test_ttl_of_wrong_type(kv: AsyncHarness) -> None:
    """A TTL that is not a number or timedelta raises TypeError."""
    with pytest.raises(TypeError):
        await kv.store.set("k", 1, ttl="60")


async def test_expired_keys_are_invisible_at_once(kv: AsyncHarness) -> None:
    """After its TTL a key is gone from get, mget, exists and keys, before any sweep."""
    await kv.store.set("short", 1, ttl=0.2)
    await kv.store.set("fraction", 1, ttl=timedelta(milliseconds=250))
    await kv.store.set("long", 2, ttl=3600)
    await kv.store.set("forever", 3)
    assert await kv.store.mget(["short", "long", "forever"]) == [1, 2, 3]
    await kv.advance(0.4)
    assert await kv.store.get("short") is None
    assert await kv.store.get("fraction") is None
    assert await kv.store.mget(["short", "long", "forever"]) == [None, 2, 3]
    assert await kv.store.exists("short") is False
    assert sorted(await kv.store.keys()) == ["forever", "long"]
    assert await kv.store.delete("short") is False


async def test_ttl_reports_remaining_time(kv: AsyncHarness) -> None:
    """ttl() gives seconds left, None without a TTL or for a missing key."""
    await kv.store.set("k", 1, ttl=100)
    await kv.store.set("forever", 1)
    left = await kv.store.ttl("k")
    assert left is not None
    assert 98 < left <= 100
    assert await kv.store.ttl("forever") is None
    assert await kv.store.ttl("missing") is None


async def test_set_without_ttl_clears_the_old_ttl(kv: AsyncHarness) -> None:
    """Replacing a value without ttl makes it permanent, as Redis SET does."""
    await kv.store.set("k", 1, ttl=0.2)
    await kv.store.set("k", 2)
    await kv.advance(0.4)
    assert await kv.store.get("k") == 2


async def test_expire(kv: AsyncHarness) -> None:
    """expire sets or removes the TTL of an existing key; False for a missing one."""
    await kv.store.set("k", 1)
    assert await kv.store.expire("missing", 10) is False
    assert await kv.store.expire("k", 0.2) is True
    assert await kv.store.ttl("k") is not None
    assert await kv.store.expire("k", None) is True
    assert await kv.store.ttl("k") is None
    assert await kv.store.expire("k", 0.2) is True
    await kv.advance(0.4)
    assert await kv.store.exists("k") is False


async def test_mset_ttl_per_item(kv: AsyncHarness) -> None:
    """Each mset tuple keeps its own TTL."""
    await kv.store.mset([("short", 1, 0.2), ("long", 2, 3600), ("forever", 3)])
    await kv.advance(0.4)
    assert await kv.store.mget(["short", "long", "forever"]) == [None, 2, 3]


# --- typed views ------------------------------------------------------------------------


class Turn(pydantic.BaseModel):
    role: str
    at: datetime
    tags: list[str] = []


async def test_typed_view_round_trips_models(kv: AsyncHarness) -> None:
    """A typed view parses what it stored back into the model, datetime included."""
    turns = kv.store.typed(Turn)
    turn = Turn(role="user", at=datetime(2026, 3, 4, 5, 6, tzinfo=UTC), tags=["x"])
    await turns.set("t", turn)
    assert await turns.get("t") == turn
    assert await turns.get("missing") is None
    await turns.mset({"u": turn})
    assert await turns.mget(["t", "u", "missing"]) == [turn, turn, None]


async def test_typed_view_rejects_invalid_data(kv: AsyncHarness) -> None:
    """Invalid data raises pydantic's ValidationError naming the key, on write and on read."""
    turns = kv.store.typed(Turn)
    with pytest.raises(pydantic.ValidationError, match="'bad'"):
        await turns.set("bad", {"role": 1})
    assert await kv.store.exists("bad") is False
    await kv.store.set("raw", {"role": "user"})
    with pytest.raises(pydantic.ValidationError, match="'raw'"):
        await turns.get("raw")


# --- lifecycle --------------------------------------------------------------------------


async def test_closed_store_raises(kv: AsyncHarness) -> None:
    """After aclose every call raises ClosedError, and aclose is idempotent."""
    other = await kv.sibling()
    await other.set("k", 1)
    await other.aclose()
    await other.aclose()
    with pytest.raises(ClosedError):
        await other.get("k")
    kv._opened.remove(other)
    assert issubclass(ClosedError, KVStoreError)


async def test_ping(kv: AsyncHarness) -> None:
    """ping answers on a live store."""
    await kv.store.ping()


async def test_repr_is_informative(kv: AsyncHarness) -> None:
    """repr names the class and the prefix."""
    text = repr(kv.store)
    assert type(kv.store).__name__ in text


# --- lists (database tier) --------------------------------------------------------------


async def test_append_returns_new_length_and_keeps_order(db: AsyncHarness) -> None:
    """append pushes to the tail and returns the new length."""
    for i in range(5):
        assert await db.store.append("h", {"n": i}) == i + 1
    assert await db.store.get_range("h", 0, -1) == [{"n": i} for i in range(5)]
    assert await db.store.get_length("h") == 5


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, -1),
        (0, 0),
        (-1, -1),
        (-3, -1),
        (2, 4),
        (-100, 100),
        (5, 2),
        (10, 20),
        (-20, -1),
        (0, -11),
        (3, 3),
        (-10, -1),
    ],
)
async def test_get_range_has_lrange_semantics(db: AsyncHarness, start: int, end: int) -> None:
    """get_range matches Redis LRANGE: end inclusive, negatives from the tail, clamped."""
    items = list(range(10))
    for item in items:
        await db.store.append("h", item)
    n = len(items)
    lo = max(start + n, 0) if start < 0 else start
    hi = end + n if end < 0 else min(end, n - 1)
    expected = items[lo : hi + 1] if lo <= hi else []
    assert await db.store.get_range("h", start, end) == expected


async def test_empty_and_missing_lists(db: AsyncHarness) -> None:
    """A missing list has length 0 and an empty range; bad indexes raise TypeError even then."""
    assert await db.store.get_length("nope") == 0
    assert await db.store.get_range("nope", 0, -1) == []
    with pytest.raises(TypeError):
        await db.store.get_range("nope", 0, True)


async def test_extend_appends_in_order(db: AsyncHarness) -> None:
    """extend appends every value in order and returns the new length."""
    await db.store.append("h", 0)
    assert await db.store.extend("h", [1, 2, 3]) == 4
    assert await db.store.extend("h", []) == 4
    assert await db.store.get_range("h", 0, -1) == [0, 1, 2, 3]
    with pytest.raises(SerializationError):
        await db.store.extend("h", [4, object()])
    assert await db.store.get_length("h") == 4


async def test_extend_json_items_that_are_not_json_raise_and_write_nothing(db: AsyncHarness) -> None:
    """extend_json stores encoded items as they are, but one that is not one JSON document raises
    SerializationError naming the key on every backend and nothing of the call is written (before,
    memory and SQLite stored it and every later read of the list failed)."""
    await db.store.append("h", 0)
    bad_batches = [[b"{"], [b"1", b"nope"], [b"1,2"], [b"1 2"], [b'"\xff"'], [b""]]
    for bad in bad_batches:
        with pytest.raises(SerializationError) as info:
            await db.store.extend_json("h", bad)
        assert info.value.key == "h", bad
    assert await db.store.get_range("h", 0, -1) == [0]
    assert await db.store.extend_json("h", [b'{"a": 1}', b"2"]) == 3
    assert await db.store.get_range("h", 0, -1) == [0, {"a": 1}, 2]


async def test_extend_json_an_item_with_a_nul_byte_raises_serialization_error(db: AsyncHarness) -> None:
    """A raw NUL byte is never JSON text: extend_json raises SerializationError on every backend, over a
    list, a missing key or a value, and writes nothing (PostgreSQL raised a bare KVStoreError from
    psycopg's "text fields cannot contain NUL" instead; found by test_model_keyspace)."""
    await db.store.append("h", 0)
    await db.store.set("v", 1)
    for key in ("h", "new", "v"):
        for bad in ([b"\x00"], [b"1", b'"a\x00"'], [b"[1]\x00"]):
            with pytest.raises(SerializationError) as info:
                await db.store.extend_json(key, bad)
            assert info.value.key == key, bad
    assert await db.store.get_range("h", 0, -1) == [0]
    assert await db.store.exists("new") is False
    assert await db.store.get("v") == 1


async def test_one_keyspace(db: AsyncHarness) -> None:
    """A key holds a value or a list: get on a list and append on a value raise WrongTypeError."""
    await db.store.append("list", 1)
    await db.store.set("value", 1)
    with pytest.raises(WrongTypeError):
        await db.store.get("list")
    with pytest.raises(WrongTypeError):
        await db.store.append("value", 2)
    with pytest.raises(WrongTypeError):
        await db.store.get_range("value", 0, -1)
    with pytest.raises(WrongTypeError):
        await db.store.get_length("value")
    assert issubclass(WrongTypeError, TypeError)
    assert await db.store.mget(["list", "value"]) == [None, 1]
    assert await db.store.exists("list") is True
    assert sorted(await db.store.keys()) == ["list", "value"]
    assert await db.store.delete("list") is True
    assert await db.store.exists("list") is False
    assert await db.store.append("list", 2) == 1


async def test_set_replaces_a_list(db: AsyncHarness) -> None:
    """set on a list key replaces the list with a value, as Redis SET does."""
    await db.store.extend("k", [1, 2])
    await db.store.set("k", "value")
    assert await db.store.get("k") == "value"
    assert await db.store.delete("k") is True
    assert await db.store.append("k", 3) == 1
    assert await db.store.get_range("k", 0, -1) == [3]


async def test_clear_removes_lists(db: AsyncHarness) -> None:
    """clear removes lists as well as values."""
    await db.store.extend("h", [1, 2])
    await db.store.set("v", 1)
    await db.store.clear()
    assert await db.store.get_length("h") == 0
    assert await db.store.keys() == []


async def test_list_items_are_validated(db: AsyncHarness) -> None:
    """append checks keys and values like set does, writing nothing on error."""
    with pytest.raises(InvalidKeyError):
        await db.store.append("", 1)
    with pytest.raises(SerializationError):
        await db.store.append("h", float("nan"))
    small = await db.sibling(max_value_bytes=50)
    with pytest.raises(ValueTooLargeError):
        await small.append("h", "x" * 100)
    assert await db.store.get_length("h") == 0


async def test_list_ttl(db: AsyncHarness) -> None:
    """expire works on a list key: the whole list disappears after its TTL."""
    await db.store.extend("h", [1, 2, 3])
    assert await db.store.expire("h", 0.2) is True
    assert await db.store.ttl("h") is not None
    await db.advance(0.4)
    assert await db.store.get_length("h") == 0
    assert await db.store.exists("h") is False
    assert await db.store.append("h", 4) == 1


async def test_typed_lists(db: AsyncHarness) -> None:
    """A typed view appends and reads list items as models."""
    turns = db.store.typed(Turn)
    turn = Turn(role="assistant", at=datetime(2026, 1, 1, tzinfo=UTC))
    assert await turns.append("h", turn) == 1
    assert await turns.extend("h", [turn, turn]) == 3
    assert await turns.get_range("h", -2, -1) == [turn, turn]


# --- idempotency ids of list writes (DESIGN.md §8a) ------------------------------------
# Ids are fresh uuids: a PostgreSQL server is shared by the whole session and ids
# outlive clear() by design, so a fixed id would leak from one test into the next.


def _id() -> str:
    return uuid.uuid4().hex


async def test_append_with_the_same_id_twice_stores_one_item(db: AsyncHarness) -> None:
    """A repeated append with one idempotency id writes nothing and returns the first call's length."""
    first, other = _id(), _id()
    assert await db.store.append("h", "a", idempotency_id=first) == 1
    assert await db.store.append("h", "a", idempotency_id=first) == 1
    assert await db.store.append("h", "b") == 2
    assert await db.store.append("h", "changed", idempotency_id=first) == 1  # the id alone makes it a retry
    assert await db.store.append("h", "c", idempotency_id=other) == 3
    assert await db.store.append("h", "c", idempotency_id=other) == 3
    assert await db.store.get_range("h", 0, -1) == ["a", "b", "c"]


async def test_different_ids_append_twice(db: AsyncHarness) -> None:
    """Two appends with different ids are two writes, even with the same value."""
    assert await db.store.append("h", "x", idempotency_id=_id()) == 1
    assert await db.store.append("h", "x", idempotency_id=_id()) == 2
    assert await db.store.get_range("h", 0, -1) == ["x", "x"]


async def test_extend_with_an_id_applies_once(db: AsyncHarness) -> None:
    """A repeated extend with one id appends its items once and returns the first call's length."""
    batch = _id()
    await db.store.append("h", 0)
    assert await db.store.extend("h", [1, 2, 3], idempotency_id=batch) == 4
    assert await db.store.extend("h", [1, 2, 3], idempotency_id=batch) == 4
    assert await db.store.extend("h", [4], idempotency_id=_id()) == 5
    assert await db.store.get_range("h", 0, -1) == [0, 1, 2, 3, 4]
    typed = db.store.typed(int)
    assert await typed.extend("t", [7, 8], idempotency_id=batch) == 2  # ids are per key
    assert await typed.append("t", 9, idempotency_id=batch) == 2  # append and extend share them
    assert await typed.get_range("t", 0, -1) == [7, 8]


async def test_ids_are_scoped_to_the_key_and_the_prefix(db: AsyncHarness) -> None:
    """One id on another key, or in a store with another prefix, is another write."""
    shared = _id()
    other = await db.sibling(key_prefix="other:")
    assert await db.store.append("h", 1, idempotency_id=shared) == 1
    assert await db.store.append("g", 1, idempotency_id=shared) == 1
    assert await other.append("h", 1, idempotency_id=shared) == 1
    assert await db.store.get_length("h") == 1
    assert await db.store.get_length("g") == 1
    assert await other.get_length("h") == 1


@pytest.mark.parametrize("bad", ["", "x" * 201, 7, b"bytes", "nul\x00", "lone \ud800"], ids=repr)
async def test_invalid_idempotency_ids_raise_before_io(db: AsyncHarness, bad: Any) -> None:
    """An id that is not a 1-200 character str (no NUL, no lone surrogate) raises ValueError; nothing is written."""
    with pytest.raises(ValueError, match="idempotency_id"):
        await db.store.append("h", 1, idempotency_id=bad)
    with pytest.raises(ValueError, match="idempotency_id"):
        await db.store.extend("h", [1], idempotency_id=bad)
    assert await db.store.exists("h") is False
    longest = "é" * 200
    assert await db.store.append("h", 1, idempotency_id=longest) == 1
    assert await db.store.append("h", 1, idempotency_id=longest) == 1


async def test_ids_outlive_delete_and_replace(db: AsyncHarness) -> None:
    """Deleting or replacing a list does not forget its ids: a late retry returns the old length, writes nothing."""
    late = _id()
    await db.store.append("h", "first")
    assert await db.store.append("h", "second", idempotency_id=late) == 2
    assert await db.store.delete("h") is True
    assert await db.store.append("h", "second", idempotency_id=late) == 2  # not resurrected
    assert await db.store.exists("h") is False
    assert await db.store.append("h", "new", idempotency_id=_id()) == 1
    await db.store.set("h", "a value")
    assert await db.store.append("h", "second", idempotency_id=late) == 2  # a retry, not a WrongTypeError
    assert await db.store.get("h") == "a value"
    await db.store.clear()
    assert await db.store.append("h", "second", idempotency_id=late) == 2
    assert await db.store.exists("h") is False


async def test_ids_are_forgotten_after_the_window(db: AsyncHarness) -> None:
    """An id older than idempotency_window is forgotten: the same id then appends again."""
    store = await db.sibling(key_prefix="window:", idempotency_window=0.5)
    old = _id()
    assert await store.append("h", 1, idempotency_id=old) == 1
    await db.advance(0.1)
    assert await store.append("h", 1, idempotency_id=old) == 1
    await db.advance(0.7)
    assert await store.append("h", 1, idempotency_id=old) == 2
    assert await store.append("h", 1, idempotency_id=old) == 2  # remembered again, with its new length
    assert await store.get_length("h") == 2


async def test_racing_appends_with_one_id_store_one_item(db: AsyncHarness) -> None:
    """Concurrent appends carrying one id (a retry racing the first attempt) write exactly one item."""
    same = _id()
    if True:  # ASYNC
        lengths = await asyncio.gather(*(db.store.append("h", i, idempotency_id=same) for i in range(6)))
    else:
        with ThreadPoolExecutor(6) as pool:
            lengths = list(pool.map(lambda i: db.store.append("h", i, idempotency_id=same), range(6)))
    assert set(lengths) == {1}
    assert await db.store.get_length("h") == 1


# --- incr, delete_many, get(touch=), trim (DESIGN.md §1) -----------------------------------


async def test_incr_counts_from_zero_and_adds(kv: AsyncHarness) -> None:
    """incr on a missing key starts at 0; later calls add ``by`` (negative too) and return the result."""
    assert await kv.store.incr("n") == 1
    assert await kv.store.incr("n", 41) == 42
    assert await kv.store.incr("n", -50) == -8
    assert await kv.store.get("n") == -8
    assert await kv.store.incr("fresh", 0) == 0
    assert await kv.store.get("fresh") == 0


async def test_incr_continues_a_value_written_by_set(kv: AsyncHarness) -> None:
    """An integer stored with set is a counter; the result reads back as an int."""
    await kv.store.set("n", 10)
    assert await kv.store.incr("n", 5) == 15
    assert await kv.store.mget(["n"]) == [15]


@pytest.mark.parametrize("value", [1.5, 2.0, "3", True, None, [1], {"n": 1}])
async def test_incr_refuses_a_value_that_is_not_an_integer(kv: AsyncHarness, value: Any) -> None:
    """A float, string, bool, null, array or object raises WrongTypeError and stays as it was."""
    await kv.store.set("n", value)
    with pytest.raises(WrongTypeError):
        await kv.store.incr("n")
    assert await kv.store.get("n") == value


async def test_incr_refuses_to_leave_the_64_bit_range(kv: AsyncHarness) -> None:
    """A result beyond a signed 64-bit integer raises WrongTypeError and changes nothing."""
    await kv.store.set("n", 2**63 - 2)
    assert await kv.store.incr("n") == 2**63 - 1
    with pytest.raises(WrongTypeError):
        await kv.store.incr("n")
    assert await kv.store.get("n") == 2**63 - 1
    assert await kv.store.incr("m", -(2**63)) == -(2**63)
    with pytest.raises(WrongTypeError):
        await kv.store.incr("m", -1)


async def test_incr_refuses_a_stored_integer_beyond_64_bits(kv: AsyncHarness) -> None:
    """A stored integer outside the signed 64-bit range is not a counter on any backend (as on Redis)."""
    await kv.store.set("big", 2**63)
    with pytest.raises(WrongTypeError):
        await kv.store.incr("big", -1)
    assert await kv.store.get("big") == 2**63


@pytest.mark.parametrize("by", [1.0, "1", True, None, 2**63])
async def test_incr_checks_by_before_io(kv: AsyncHarness, by: Any) -> None:
    """``by`` must be an int in the 64-bit range (not a bool): TypeError or ValueError, nothing written."""
    with pytest.raises((TypeError, ValueError)):
        await kv.store.incr("n", by)
    assert await kv.store.exists("n") is False


async def test_incr_keeps_the_ttl(kv: AsyncHarness) -> None:
    """incr changes the number, not the expiry (as Redis INCRBY)."""
    await kv.store.set("n", 1, ttl=0.5)
    assert await kv.store.incr("n") == 2
    remaining = await kv.store.ttl("n")
    assert remaining is not None
    assert 0 < remaining <= 0.5
    await kv.advance(0.7)
    assert await kv.store.get("n") is None
    assert await kv.store.incr("n") == 1  # expired: counts from 0 again, without a TTL
    assert await kv.store.ttl("n") is None


async def test_incr_is_atomic_under_concurrency(kv: AsyncHarness) -> None:
    """Concurrent increments lose nothing."""
    if True:  # ASYNC
        await asyncio.gather(*(kv.store.incr("n") for _ in range(50)))
    else:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: kv.store.incr("n"), range(50)))
    assert await kv.store.get("n") == 50


async def test_delete_many_counts_what_it_removed(kv: AsyncHarness) -> None:
    """delete_many removes values and reports how many existed; missing and repeated keys count once or not."""
    await kv.store.mset({"a": 1, "b": 2, "c": 3})
    assert await kv.store.delete_many(["a", "b", "missing", "a"]) == 2
    assert await kv.store.mget(["a", "b", "c"]) == [None, None, 3]
    assert await kv.store.delete_many([]) == 0
    assert await kv.store.delete_many(iter(["c"])) == 1


async def test_delete_many_checks_every_key_before_io(kv: AsyncHarness) -> None:
    """One invalid key raises InvalidKeyError and nothing is deleted."""
    await kv.store.set("a", 1)
    with pytest.raises(InvalidKeyError):
        await kv.store.delete_many(["a", ""])
    assert await kv.store.get("a") == 1


async def test_delete_many_respects_the_prefix(kv: AsyncHarness) -> None:
    """Another prefix's keys of the same name survive."""
    other = await kv.sibling(key_prefix="other:")
    await kv.store.set("a", 1)
    await other.set("a", 2)
    assert await kv.store.delete_many(["a"]) == 1
    assert await other.get("a") == 2


async def test_get_touch_slides_the_ttl(kv: AsyncHarness) -> None:
    """get(key, touch=ttl) returns the value and restarts its TTL at ``ttl``."""
    await kv.store.set("s", {"user": 1}, ttl=1.5)
    await kv.advance(0.5)
    assert await kv.store.get("s", touch=3) == {"user": 1}
    await kv.advance(1.2)
    assert await kv.store.get("s") == {"user": 1}  # past the first TTL, alive thanks to the touch
    remaining = await kv.store.ttl("s")
    assert remaining is not None
    assert remaining <= 1.85
    await kv.store.set("forever", 1)
    assert await kv.store.get("forever", touch=timedelta(seconds=30)) == 1
    remaining = await kv.store.ttl("forever")
    assert remaining is not None
    assert 0 < remaining <= 30


async def test_get_touch_of_missing_or_expired_is_none(kv: AsyncHarness) -> None:
    """Touching what is not there creates nothing."""
    assert await kv.store.get("nope", touch=10) is None
    await kv.store.set("old", 1, ttl=0.2)
    await kv.advance(0.4)
    assert await kv.store.get("old", touch=10) is None
    assert await kv.store.exists("nope") is False
    assert await kv.store.exists("old") is False


@pytest.mark.parametrize("touch", [0, -1, float("nan"), "10", True])
async def test_get_touch_checks_the_ttl(kv: AsyncHarness, touch: Any) -> None:
    """An invalid touch TTL raises before any I/O."""
    await kv.store.set("s", 1)
    with pytest.raises((TypeError, ValueError)):
        await kv.store.get("s", touch=touch)
    assert await kv.store.ttl("s") is None


async def test_new_operations_refuse_list_keys(db: AsyncHarness) -> None:
    """incr and get(touch=) on a list raise WrongTypeError; delete_many removes lists too."""
    await db.store.append("l", 1)
    with pytest.raises(WrongTypeError):
        await db.store.incr("l")
    with pytest.raises(WrongTypeError):
        await db.store.get("l", touch=10)
    assert await db.store.get_range("l", 0, -1) == [1]
    await db.store.set("v", 1)
    assert await db.store.delete_many(["l", "v"]) == 2
    assert await db.store.exists("l") is False


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, -1), (0, 0), (2, 5), (-3, -1), (-20, 2), (5, 100), (7, 3), (10, 20), (0, -11), (-1, -1), (3, -4)],
)
async def test_trim_has_ltrim_semantics(db: AsyncHarness, start: int, end: int) -> None:
    """trim keeps what get_range(start, end) returned, and reports how many items it removed."""
    items = list(range(10))
    await db.store.extend("h", items)
    kept = await db.store.get_range("h", start, end)
    assert await db.store.trim("h", start, end) == len(items) - len(kept)
    assert await db.store.get_range("h", 0, -1) == kept
    assert await db.store.get_length("h") == len(kept)
    assert await db.store.exists("h") is bool(kept)


async def test_trim_then_append_and_read(db: AsyncHarness) -> None:
    """After a trim, appends go to the tail and indexes count from the new head."""
    await db.store.extend("h", list(range(6)))
    assert await db.store.trim("h", -3, -1) == 3
    assert await db.store.append("h", 6) == 4
    assert await db.store.get_range("h", 0, -1) == [3, 4, 5, 6]
    assert await db.store.get_range("h", 1, 1) == [4]
    assert await db.store.get_range("h", -2, -1) == [5, 6]
    assert await db.store.trim("h", 1, -1) == 1
    assert await db.store.get_range("h", 0, 0) == [4]


async def test_trim_of_missing_list_and_of_a_value(db: AsyncHarness) -> None:
    """A missing list trims nothing; a value key raises WrongTypeError and stays."""
    assert await db.store.trim("nope", 0, -1) == 0
    await db.store.set("v", 1)
    with pytest.raises(WrongTypeError):
        await db.store.trim("v", 0, 0)
    assert await db.store.get("v") == 1
    with pytest.raises(TypeError):
        await db.store.trim("nope", 0, 1.5)  # type: ignore[arg-type]


async def test_trim_keeps_idempotency_ids(db: AsyncHarness) -> None:
    """A retried append after a trim is still recognised by its id."""
    assert await db.store.append("h", "a", idempotency_id="first") == 1
    await db.store.append("h", "b")
    await db.store.trim("h", -1, -1)
    assert await db.store.append("h", "a", idempotency_id="first") == 1
    assert await db.store.get_range("h", 0, -1) == ["b"]
