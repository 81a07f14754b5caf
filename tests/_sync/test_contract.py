# Generated from tests/_async/test_contract.py by tools/unasync.py: do not edit; edit the async source.
"""The contract suite (DESIGN.md §1-§4): every backend, both tiers, the same tests."""

from __future__ import annotations

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
from tests._sync.backends import Harness

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
def test_set_then_get_round_trips_json_values(kv: Harness, value: Any) -> None:
    """Every JSON document reads back equal to what was written."""
    kv.store.set("k", value)
    assert kv.store.get("k") == value


def test_get_missing_is_none(kv: Harness) -> None:
    """A key never written reads as None."""
    assert kv.store.get("missing") is None


def test_set_replaces(kv: Harness) -> None:
    """A second set replaces the value."""
    kv.store.set("k", 1)
    kv.store.set("k", {"two": 2})
    assert kv.store.get("k") == {"two": 2}


def test_stored_value_is_a_copy(kv: Harness) -> None:
    """Mutating an object after set does not change what is stored, nor does mutating what get returned."""
    value = {"a": [1, 2]}
    kv.store.set("k", value)
    value["a"].append(3)
    got = kv.store.get("k")
    assert got == {"a": [1, 2]}
    got["a"].append(4)
    assert kv.store.get("k") == {"a": [1, 2]}


def test_delete_reports_whether_something_was_removed(kv: Harness) -> None:
    """delete is True once for an existing key, then False."""
    kv.store.set("k", 1)
    assert kv.store.delete("k") is True
    assert kv.store.delete("k") is False
    assert kv.store.get("k") is None


def test_exists(kv: Harness) -> None:
    """exists follows set and delete; a stored null still exists."""
    assert kv.store.exists("k") is False
    kv.store.set("k", None)
    assert kv.store.exists("k") is True
    kv.store.delete("k")
    assert kv.store.exists("k") is False


def test_only_if_absent(kv: Harness) -> None:
    """set(only_if_absent=True) writes once and then leaves the value alone."""
    assert kv.store.set("k", 1, only_if_absent=True) is True
    assert kv.store.set("k", 2, only_if_absent=True) is False
    assert kv.store.get("k") == 1
    assert kv.store.set("k", 3) is True
    assert kv.store.get("k") == 3


def test_native_orjson_types_are_stored_as_json(kv: Harness) -> None:
    """datetime, UUID and dataclasses are stored as their JSON forms."""

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    kv.store.set("k", {"when": when, "id": uid, "point": Point(1, 2)})
    assert kv.store.get("k") == {
        "when": "2026-01-02T03:04:05+00:00",
        "id": "12345678-1234-5678-1234-567812345678",
        "point": {"x": 1, "y": 2},
    }


def test_pydantic_models_are_stored_as_model_dump(kv: Harness) -> None:
    """A pydantic model is stored as model_dump(mode='json')."""

    class Message(pydantic.BaseModel):
        role: str
        at: datetime

    kv.store.set("k", Message(role="user", at=datetime(2026, 1, 1, tzinfo=UTC)))
    assert kv.store.get("k") == {"role": "user", "at": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", float("nan"), float("inf"), {"x": [float("-inf")]}, 2**64, {1: "int key"}],
    ids=["object", "set", "bytes", "nan", "inf", "nested-inf", "int>64bit", "int-dict-key"],
)
def test_unencodable_values_raise_and_store_nothing(kv: Harness, value: Any) -> None:
    """What is not a JSON document raises SerializationError naming the key; nothing is written."""
    kv.store.set("k", "before")
    with pytest.raises(SerializationError, match="'k'") as info:
        kv.store.set("k", value)
    assert info.value.key == "k"
    assert isinstance(info.value, ValueError)
    assert kv.store.get("k") == "before"


def test_value_too_large(kv: Harness) -> None:
    """A value over max_value_bytes raises ValueTooLargeError and nothing is stored."""
    small = kv.sibling(max_value_bytes=100)
    small.set("k", "x" * 90)
    with pytest.raises(ValueTooLargeError):
        small.set("k", "x" * 200)
    assert small.get("k") == "x" * 90


# --- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "a" * 1025, "é" * 513, "nul\x00byte", "lone \ud800 surrogate", b"bytes", 42, None],
    ids=["empty", "1025-bytes", "1026-utf8-bytes", "nul", "surrogate", "bytes", "int", "none"],
)
def test_invalid_keys_raise_before_io(kv: Harness, key: Any) -> None:
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
            call()
    assert issubclass(InvalidKeyError, ValueError)


@pytest.mark.parametrize("key", SPECIAL_KEYS, ids=lambda k: repr(k[:20]))
def test_special_characters_are_ordinary(kv: Harness, key: str) -> None:
    """Glob, LIKE and quote characters, spaces and emoji are ordinary characters in a key."""
    kv.store.set(key, key)
    assert kv.store.get(key) == key
    assert kv.store.keys("*") == [key]
    assert kv.store.exists(key)


# --- mget / mset ------------------------------------------------------------------------


def test_mget_in_order_with_none_for_missing(kv: Harness) -> None:
    """mget returns one result per key, in order, None for missing, duplicates allowed."""
    kv.store.set("a", 1)
    kv.store.set("c", 3)
    assert kv.store.mget(["c", "b", "a", "c"]) == [3, None, 1, 3]
    assert kv.store.mget([]) == []


def test_mset_mapping_and_tuples(kv: Harness) -> None:
    """mset takes a mapping or (key, value[, ttl]) tuples."""
    kv.store.mset({"a": 1, "b": [2]})
    kv.store.mset([("c", {"three": 3}), ("d", 4, 60), ("e", 5, timedelta(minutes=1))])
    assert kv.store.mget(["a", "b", "c", "d", "e"]) == [1, [2], {"three": 3}, 4, 5]
    kv.store.mset({})


def test_mset_writes_nothing_when_one_item_is_bad(kv: Harness) -> None:
    """An invalid key, value or TTL anywhere in mset raises before anything is written."""
    with pytest.raises(InvalidKeyError):
        kv.store.mset([("a", 1), ("", 2)])
    with pytest.raises(SerializationError):
        kv.store.mset([("a", 1), ("b", object())])
    with pytest.raises(ValueError, match="ttl"):
        kv.store.mset([("a", 1), ("b", 2, -1)])
    assert kv.store.keys() == []


def test_mset_last_duplicate_wins(kv: Harness) -> None:
    """A key given twice in mset ends with its last value."""
    kv.store.mset([("a", 1), ("a", 2)])
    assert kv.store.get("a") == 2


# --- keys() and clear() -----------------------------------------------------------------


def test_keys_patterns(kv: Harness) -> None:
    """keys() follows Redis glob grammar and returns keys without the prefix."""
    for key in ["user:1", "user:2", "user:10", "users", "admin:1", "u*er", "u?er"]:
        kv.store.set(key, 1)
    assert sorted(kv.store.keys()) == sorted(["user:1", "user:2", "user:10", "users", "admin:1", "u*er", "u?er"])
    assert sorted(kv.store.keys("user:*")) == ["user:1", "user:10", "user:2"]
    assert sorted(kv.store.keys("user:?")) == ["user:1", "user:2"]
    assert sorted(kv.store.keys("user:[12]")) == ["user:1", "user:2"]
    assert sorted(kv.store.keys("user:[^1]")) == ["user:2"]
    assert sorted(kv.store.keys("[a-b]*")) == ["admin:1"]
    assert kv.store.keys("u\\*er") == ["u*er"]
    assert kv.store.keys("u\\?er") == ["u?er"]
    assert kv.store.keys("nothing*") == []


def test_keys_match_characters_not_bytes(kv: Harness) -> None:
    """'k?' matches a key whose second character is multi-byte in UTF-8."""
    kv.store.set("kж", 1)
    kv.store.set("k🎉", 2)
    assert sorted(kv.store.keys("k?")) == ["kж", "k🎉"]
    assert kv.store.keys("k[а-я]") == ["kж"]


def test_iter_keys_streams_the_same_keys(kv: Harness) -> None:
    """iter_keys yields exactly what keys() returns."""
    kv.store.mset({f"k{i}": i for i in range(50)})
    streamed = [key for key in kv.store.iter_keys("k1*")]
    assert sorted(streamed) == sorted(kv.store.keys("k1*"))
    assert len(streamed) == 11


def test_clear_removes_everything_of_the_store(kv: Harness) -> None:
    """clear() leaves the store empty."""
    kv.store.mset({"a": 1, "b": 2})
    kv.store.clear()
    assert kv.store.keys() == []
    assert kv.store.get("a") is None


@pytest.mark.parametrize(("mine", "theirs"), [("a:", "a*:"), ("p%", "p_"), ("x[1]", "x1"), ("", "other:")])
def test_prefixes_isolate_stores(kv: Harness, mine: str, theirs: str) -> None:
    """Stores with different prefixes never see, list, expire or clear each other's keys."""
    a = kv.sibling(key_prefix=mine)
    b = kv.sibling(key_prefix=theirs)
    a.clear()
    b.clear()
    a.set("k", "a")
    b.set("k", "b")
    b.set("k2", "b")
    assert a.get("k") == "a"
    assert b.get("k") == "b"
    assert sorted(b.keys("*")) == ["k", "k2"]
    assert a.keys("*") == ["k"]
    assert a.exists("k2") is False
    a.clear()
    assert b.mget(["k", "k2"]) == ["b", "b"]
    assert a.keys() == []


# --- TTL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ttl", [0, -1, float("nan"), float("inf"), timedelta(0), timedelta(seconds=-1), 1e13, timedelta(days=10**7)]
)
def test_ttl_must_be_positive(kv: Harness, ttl: Any) -> None:
    """A TTL that is not > 0 raises ValueError and nothing is stored."""
    with pytest.raises(ValueError, match="ttl"):
        kv.store.set("k", 1, ttl=ttl)
    assert kv.store.exists("k") is False


def test_ttl_of_wrong_type(kv: Harness) -> None:
    """A TTL that is not a number or timedelta raises TypeError."""
    with pytest.raises(TypeError):
        kv.store.set("k", 1, ttl="60")


def test_expired_keys_are_invisible_at_once(kv: Harness) -> None:
    """After its TTL a key is gone from get, mget, exists and keys, before any sweep."""
    kv.store.set("short", 1, ttl=0.2)
    kv.store.set("fraction", 1, ttl=timedelta(milliseconds=250))
    kv.store.set("long", 2, ttl=3600)
    kv.store.set("forever", 3)
    assert kv.store.mget(["short", "long", "forever"]) == [1, 2, 3]
    kv.advance(0.4)
    assert kv.store.get("short") is None
    assert kv.store.get("fraction") is None
    assert kv.store.mget(["short", "long", "forever"]) == [None, 2, 3]
    assert kv.store.exists("short") is False
    assert sorted(kv.store.keys()) == ["forever", "long"]
    assert kv.store.delete("short") is False


def test_ttl_reports_remaining_time(kv: Harness) -> None:
    """ttl() gives seconds left, None without a TTL or for a missing key."""
    kv.store.set("k", 1, ttl=100)
    kv.store.set("forever", 1)
    left = kv.store.ttl("k")
    assert left is not None
    assert 98 < left <= 100
    assert kv.store.ttl("forever") is None
    assert kv.store.ttl("missing") is None


def test_set_without_ttl_clears_the_old_ttl(kv: Harness) -> None:
    """Replacing a value without ttl makes it permanent, as Redis SET does."""
    kv.store.set("k", 1, ttl=0.2)
    kv.store.set("k", 2)
    kv.advance(0.4)
    assert kv.store.get("k") == 2


def test_expire(kv: Harness) -> None:
    """expire sets or removes the TTL of an existing key; False for a missing one."""
    kv.store.set("k", 1)
    assert kv.store.expire("missing", 10) is False
    assert kv.store.expire("k", 0.2) is True
    assert kv.store.ttl("k") is not None
    assert kv.store.expire("k", None) is True
    assert kv.store.ttl("k") is None
    assert kv.store.expire("k", 0.2) is True
    kv.advance(0.4)
    assert kv.store.exists("k") is False


def test_mset_ttl_per_item(kv: Harness) -> None:
    """Each mset tuple keeps its own TTL."""
    kv.store.mset([("short", 1, 0.2), ("long", 2, 3600), ("forever", 3)])
    kv.advance(0.4)
    assert kv.store.mget(["short", "long", "forever"]) == [None, 2, 3]


# --- typed views ------------------------------------------------------------------------


class Turn(pydantic.BaseModel):
    role: str
    at: datetime
    tags: list[str] = []


def test_typed_view_round_trips_models(kv: Harness) -> None:
    """A typed view parses what it stored back into the model, datetime included."""
    turns = kv.store.typed(Turn)
    turn = Turn(role="user", at=datetime(2026, 3, 4, 5, 6, tzinfo=UTC), tags=["x"])
    turns.set("t", turn)
    assert turns.get("t") == turn
    assert turns.get("missing") is None
    turns.mset({"u": turn})
    assert turns.mget(["t", "u", "missing"]) == [turn, turn, None]


def test_typed_view_rejects_invalid_data(kv: Harness) -> None:
    """Invalid data raises pydantic's ValidationError naming the key, on write and on read."""
    turns = kv.store.typed(Turn)
    with pytest.raises(pydantic.ValidationError, match="'bad'"):
        turns.set("bad", {"role": 1})
    assert kv.store.exists("bad") is False
    kv.store.set("raw", {"role": "user"})
    with pytest.raises(pydantic.ValidationError, match="'raw'"):
        turns.get("raw")


# --- lifecycle --------------------------------------------------------------------------


def test_closed_store_raises(kv: Harness) -> None:
    """After close every call raises ClosedError, and close is idempotent."""
    other = kv.sibling()
    other.set("k", 1)
    other.close()
    other.close()
    with pytest.raises(ClosedError):
        other.get("k")
    kv._opened.remove(other)
    assert issubclass(ClosedError, KVStoreError)


def test_ping(kv: Harness) -> None:
    """ping answers on a live store."""
    kv.store.ping()


def test_repr_is_informative(kv: Harness) -> None:
    """repr names the class and the prefix."""
    text = repr(kv.store)
    assert type(kv.store).__name__ in text


# --- lists (database tier) --------------------------------------------------------------


def test_append_returns_new_length_and_keeps_order(db: Harness) -> None:
    """append pushes to the tail and returns the new length."""
    for i in range(5):
        assert db.store.append("h", {"n": i}) == i + 1
    assert db.store.get_range("h", 0, -1) == [{"n": i} for i in range(5)]
    assert db.store.get_length("h") == 5


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
def test_get_range_has_lrange_semantics(db: Harness, start: int, end: int) -> None:
    """get_range matches Redis LRANGE: end inclusive, negatives from the tail, clamped."""
    items = list(range(10))
    for item in items:
        db.store.append("h", item)
    n = len(items)
    lo = max(start + n, 0) if start < 0 else start
    hi = end + n if end < 0 else min(end, n - 1)
    expected = items[lo : hi + 1] if lo <= hi else []
    assert db.store.get_range("h", start, end) == expected


def test_empty_and_missing_lists(db: Harness) -> None:
    """A missing list has length 0 and an empty range; bad indexes raise TypeError even then."""
    assert db.store.get_length("nope") == 0
    assert db.store.get_range("nope", 0, -1) == []
    with pytest.raises(TypeError):
        db.store.get_range("nope", 0, True)


def test_extend_appends_in_order(db: Harness) -> None:
    """extend appends every value in order and returns the new length."""
    db.store.append("h", 0)
    assert db.store.extend("h", [1, 2, 3]) == 4
    assert db.store.extend("h", []) == 4
    assert db.store.get_range("h", 0, -1) == [0, 1, 2, 3]
    with pytest.raises(SerializationError):
        db.store.extend("h", [4, object()])
    assert db.store.get_length("h") == 4


def test_extend_json_items_that_are_not_json_raise_and_write_nothing(db: Harness) -> None:
    """extend_json stores encoded items as they are, but one that is not one JSON document raises
    SerializationError naming the key on every backend and nothing of the call is written (before,
    memory and SQLite stored it and every later read of the list failed)."""
    db.store.append("h", 0)
    bad_batches = [[b"{"], [b"1", b"nope"], [b"1,2"], [b"1 2"], [b'"\xff"'], [b""]]
    for bad in bad_batches:
        with pytest.raises(SerializationError) as info:
            db.store.extend_json("h", bad)
        assert info.value.key == "h", bad
    assert db.store.get_range("h", 0, -1) == [0]
    assert db.store.extend_json("h", [b'{"a": 1}', b"2"]) == 3
    assert db.store.get_range("h", 0, -1) == [0, {"a": 1}, 2]


def test_extend_json_an_item_with_a_nul_byte_raises_serialization_error(db: Harness) -> None:
    """A raw NUL byte is never JSON text: extend_json raises SerializationError on every backend, over a
    list, a missing key or a value, and writes nothing (PostgreSQL raised a bare KVStoreError from
    psycopg's "text fields cannot contain NUL" instead; found by test_model_keyspace)."""
    db.store.append("h", 0)
    db.store.set("v", 1)
    for key in ("h", "new", "v"):
        for bad in ([b"\x00"], [b"1", b'"a\x00"'], [b"[1]\x00"]):
            with pytest.raises(SerializationError) as info:
                db.store.extend_json(key, bad)
            assert info.value.key == key, bad
    assert db.store.get_range("h", 0, -1) == [0]
    assert db.store.exists("new") is False
    assert db.store.get("v") == 1


def test_one_keyspace(db: Harness) -> None:
    """A key holds a value or a list: get on a list and append on a value raise WrongTypeError."""
    db.store.append("list", 1)
    db.store.set("value", 1)
    with pytest.raises(WrongTypeError):
        db.store.get("list")
    with pytest.raises(WrongTypeError):
        db.store.append("value", 2)
    with pytest.raises(WrongTypeError):
        db.store.get_range("value", 0, -1)
    with pytest.raises(WrongTypeError):
        db.store.get_length("value")
    assert issubclass(WrongTypeError, TypeError)
    assert db.store.mget(["list", "value"]) == [None, 1]
    assert db.store.exists("list") is True
    assert sorted(db.store.keys()) == ["list", "value"]
    assert db.store.delete("list") is True
    assert db.store.exists("list") is False
    assert db.store.append("list", 2) == 1


def test_set_replaces_a_list(db: Harness) -> None:
    """set on a list key replaces the list with a value, as Redis SET does."""
    db.store.extend("k", [1, 2])
    db.store.set("k", "value")
    assert db.store.get("k") == "value"
    assert db.store.delete("k") is True
    assert db.store.append("k", 3) == 1
    assert db.store.get_range("k", 0, -1) == [3]


def test_clear_removes_lists(db: Harness) -> None:
    """clear removes lists as well as values."""
    db.store.extend("h", [1, 2])
    db.store.set("v", 1)
    db.store.clear()
    assert db.store.get_length("h") == 0
    assert db.store.keys() == []


def test_list_items_are_validated(db: Harness) -> None:
    """append checks keys and values like set does, writing nothing on error."""
    with pytest.raises(InvalidKeyError):
        db.store.append("", 1)
    with pytest.raises(SerializationError):
        db.store.append("h", float("nan"))
    small = db.sibling(max_value_bytes=50)
    with pytest.raises(ValueTooLargeError):
        small.append("h", "x" * 100)
    assert db.store.get_length("h") == 0


def test_list_ttl(db: Harness) -> None:
    """expire works on a list key: the whole list disappears after its TTL."""
    db.store.extend("h", [1, 2, 3])
    assert db.store.expire("h", 0.2) is True
    assert db.store.ttl("h") is not None
    db.advance(0.4)
    assert db.store.get_length("h") == 0
    assert db.store.exists("h") is False
    assert db.store.append("h", 4) == 1


def test_typed_lists(db: Harness) -> None:
    """A typed view appends and reads list items as models."""
    turns = db.store.typed(Turn)
    turn = Turn(role="assistant", at=datetime(2026, 1, 1, tzinfo=UTC))
    assert turns.append("h", turn) == 1
    assert turns.extend("h", [turn, turn]) == 3
    assert turns.get_range("h", -2, -1) == [turn, turn]


# --- idempotency ids of list writes (DESIGN.md §8a) ------------------------------------
# Ids are fresh uuids: a PostgreSQL server is shared by the whole session and ids
# outlive clear() by design, so a fixed id would leak from one test into the next.


def _id() -> str:
    return uuid.uuid4().hex


def test_append_with_the_same_id_twice_stores_one_item(db: Harness) -> None:
    """A repeated append with one idempotency id writes nothing and returns the first call's length."""
    first, other = _id(), _id()
    assert db.store.append("h", "a", idempotency_id=first) == 1
    assert db.store.append("h", "a", idempotency_id=first) == 1
    assert db.store.append("h", "b") == 2
    assert db.store.append("h", "changed", idempotency_id=first) == 1  # the id alone makes it a retry
    assert db.store.append("h", "c", idempotency_id=other) == 3
    assert db.store.append("h", "c", idempotency_id=other) == 3
    assert db.store.get_range("h", 0, -1) == ["a", "b", "c"]


def test_different_ids_append_twice(db: Harness) -> None:
    """Two appends with different ids are two writes, even with the same value."""
    assert db.store.append("h", "x", idempotency_id=_id()) == 1
    assert db.store.append("h", "x", idempotency_id=_id()) == 2
    assert db.store.get_range("h", 0, -1) == ["x", "x"]


def test_extend_with_an_id_applies_once(db: Harness) -> None:
    """A repeated extend with one id appends its items once and returns the first call's length."""
    batch = _id()
    db.store.append("h", 0)
    assert db.store.extend("h", [1, 2, 3], idempotency_id=batch) == 4
    assert db.store.extend("h", [1, 2, 3], idempotency_id=batch) == 4
    assert db.store.extend("h", [4], idempotency_id=_id()) == 5
    assert db.store.get_range("h", 0, -1) == [0, 1, 2, 3, 4]
    typed = db.store.typed(int)
    assert typed.extend("t", [7, 8], idempotency_id=batch) == 2  # ids are per key
    assert typed.append("t", 9, idempotency_id=batch) == 2  # append and extend share them
    assert typed.get_range("t", 0, -1) == [7, 8]


def test_ids_are_scoped_to_the_key_and_the_prefix(db: Harness) -> None:
    """One id on another key, or in a store with another prefix, is another write."""
    shared = _id()
    other = db.sibling(key_prefix="other:")
    assert db.store.append("h", 1, idempotency_id=shared) == 1
    assert db.store.append("g", 1, idempotency_id=shared) == 1
    assert other.append("h", 1, idempotency_id=shared) == 1
    assert db.store.get_length("h") == 1
    assert db.store.get_length("g") == 1
    assert other.get_length("h") == 1


@pytest.mark.parametrize("bad", ["", "x" * 201, 7, b"bytes", "nul\x00", "lone \ud800"], ids=repr)
def test_invalid_idempotency_ids_raise_before_io(db: Harness, bad: Any) -> None:
    """An id that is not a 1-200 character str (no NUL, no lone surrogate) raises ValueError; nothing is written."""
    with pytest.raises(ValueError, match="idempotency_id"):
        db.store.append("h", 1, idempotency_id=bad)
    with pytest.raises(ValueError, match="idempotency_id"):
        db.store.extend("h", [1], idempotency_id=bad)
    assert db.store.exists("h") is False
    longest = "é" * 200
    assert db.store.append("h", 1, idempotency_id=longest) == 1
    assert db.store.append("h", 1, idempotency_id=longest) == 1


def test_ids_outlive_delete_and_replace(db: Harness) -> None:
    """Deleting or replacing a list does not forget its ids: a late retry returns the old length, writes nothing."""
    late = _id()
    db.store.append("h", "first")
    assert db.store.append("h", "second", idempotency_id=late) == 2
    assert db.store.delete("h") is True
    assert db.store.append("h", "second", idempotency_id=late) == 2  # not resurrected
    assert db.store.exists("h") is False
    assert db.store.append("h", "new", idempotency_id=_id()) == 1
    db.store.set("h", "a value")
    assert db.store.append("h", "second", idempotency_id=late) == 2  # a retry, not a WrongTypeError
    assert db.store.get("h") == "a value"
    db.store.clear()
    assert db.store.append("h", "second", idempotency_id=late) == 2
    assert db.store.exists("h") is False


def test_ids_are_forgotten_after_the_window(db: Harness) -> None:
    """An id older than idempotency_window is forgotten: the same id then appends again."""
    store = db.sibling(key_prefix="window:", idempotency_window=0.5)
    old = _id()
    assert store.append("h", 1, idempotency_id=old) == 1
    db.advance(0.1)
    assert store.append("h", 1, idempotency_id=old) == 1
    db.advance(0.7)
    assert store.append("h", 1, idempotency_id=old) == 2
    assert store.append("h", 1, idempotency_id=old) == 2  # remembered again, with its new length
    assert store.get_length("h") == 2


def test_racing_appends_with_one_id_store_one_item(db: Harness) -> None:
    """Concurrent appends carrying one id (a retry racing the first attempt) write exactly one item."""
    same = _id()
    with ThreadPoolExecutor(6) as pool:
        lengths = list(pool.map(lambda i: db.store.append("h", i, idempotency_id=same), range(6)))
    assert set(lengths) == {1}
    assert db.store.get_length("h") == 1


# --- incr, delete_many, get(touch=), trim (DESIGN.md §1) -----------------------------------


def test_incr_counts_from_zero_and_adds(kv: Harness) -> None:
    """incr on a missing key starts at 0; later calls add ``by`` (negative too) and return the result."""
    assert kv.store.incr("n") == 1
    assert kv.store.incr("n", 41) == 42
    assert kv.store.incr("n", -50) == -8
    assert kv.store.get("n") == -8
    assert kv.store.incr("fresh", 0) == 0
    assert kv.store.get("fresh") == 0


def test_incr_continues_a_value_written_by_set(kv: Harness) -> None:
    """An integer stored with set is a counter; the result reads back as an int."""
    kv.store.set("n", 10)
    assert kv.store.incr("n", 5) == 15
    assert kv.store.mget(["n"]) == [15]


@pytest.mark.parametrize("value", [1.5, 2.0, "3", True, None, [1], {"n": 1}])
def test_incr_refuses_a_value_that_is_not_an_integer(kv: Harness, value: Any) -> None:
    """A float, string, bool, null, array or object raises WrongTypeError and stays as it was."""
    kv.store.set("n", value)
    with pytest.raises(WrongTypeError):
        kv.store.incr("n")
    assert kv.store.get("n") == value


def test_incr_refuses_to_leave_the_64_bit_range(kv: Harness) -> None:
    """A result beyond a signed 64-bit integer raises WrongTypeError and changes nothing."""
    kv.store.set("n", 2**63 - 2)
    assert kv.store.incr("n") == 2**63 - 1
    with pytest.raises(WrongTypeError):
        kv.store.incr("n")
    assert kv.store.get("n") == 2**63 - 1
    assert kv.store.incr("m", -(2**63)) == -(2**63)
    with pytest.raises(WrongTypeError):
        kv.store.incr("m", -1)


def test_incr_refuses_a_stored_integer_beyond_64_bits(kv: Harness) -> None:
    """A stored integer outside the signed 64-bit range is not a counter on any backend (as on Redis)."""
    kv.store.set("big", 2**63)
    with pytest.raises(WrongTypeError):
        kv.store.incr("big", -1)
    assert kv.store.get("big") == 2**63


@pytest.mark.parametrize("by", [1.0, "1", True, None, 2**63])
def test_incr_checks_by_before_io(kv: Harness, by: Any) -> None:
    """``by`` must be an int in the 64-bit range (not a bool): TypeError or ValueError, nothing written."""
    with pytest.raises((TypeError, ValueError)):
        kv.store.incr("n", by)
    assert kv.store.exists("n") is False


def test_incr_keeps_the_ttl(kv: Harness) -> None:
    """incr changes the number, not the expiry (as Redis INCRBY)."""
    kv.store.set("n", 1, ttl=0.5)
    assert kv.store.incr("n") == 2
    remaining = kv.store.ttl("n")
    assert remaining is not None
    assert 0 < remaining <= 0.5
    kv.advance(0.7)
    assert kv.store.get("n") is None
    assert kv.store.incr("n") == 1  # expired: counts from 0 again, without a TTL
    assert kv.store.ttl("n") is None


def test_incr_is_atomic_under_concurrency(kv: Harness) -> None:
    """Concurrent increments lose nothing."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: kv.store.incr("n"), range(50)))
    assert kv.store.get("n") == 50


def test_delete_many_counts_what_it_removed(kv: Harness) -> None:
    """delete_many removes values and reports how many existed; missing and repeated keys count once or not."""
    kv.store.mset({"a": 1, "b": 2, "c": 3})
    assert kv.store.delete_many(["a", "b", "missing", "a"]) == 2
    assert kv.store.mget(["a", "b", "c"]) == [None, None, 3]
    assert kv.store.delete_many([]) == 0
    assert kv.store.delete_many(iter(["c"])) == 1


def test_delete_many_checks_every_key_before_io(kv: Harness) -> None:
    """One invalid key raises InvalidKeyError and nothing is deleted."""
    kv.store.set("a", 1)
    with pytest.raises(InvalidKeyError):
        kv.store.delete_many(["a", ""])
    assert kv.store.get("a") == 1


def test_delete_many_respects_the_prefix(kv: Harness) -> None:
    """Another prefix's keys of the same name survive."""
    other = kv.sibling(key_prefix="other:")
    kv.store.set("a", 1)
    other.set("a", 2)
    assert kv.store.delete_many(["a"]) == 1
    assert other.get("a") == 2


def test_get_touch_slides_the_ttl(kv: Harness) -> None:
    """get(key, touch=ttl) returns the value and restarts its TTL at ``ttl``."""
    kv.store.set("s", {"user": 1}, ttl=1.5)
    kv.advance(0.5)
    assert kv.store.get("s", touch=3) == {"user": 1}
    kv.advance(1.2)
    assert kv.store.get("s") == {"user": 1}  # past the first TTL, alive thanks to the touch
    remaining = kv.store.ttl("s")
    assert remaining is not None
    assert remaining <= 1.85
    kv.store.set("forever", 1)
    assert kv.store.get("forever", touch=timedelta(seconds=30)) == 1
    remaining = kv.store.ttl("forever")
    assert remaining is not None
    assert 0 < remaining <= 30


def test_get_touch_of_missing_or_expired_is_none(kv: Harness) -> None:
    """Touching what is not there creates nothing."""
    assert kv.store.get("nope", touch=10) is None
    kv.store.set("old", 1, ttl=0.2)
    kv.advance(0.4)
    assert kv.store.get("old", touch=10) is None
    assert kv.store.exists("nope") is False
    assert kv.store.exists("old") is False


@pytest.mark.parametrize("touch", [0, -1, float("nan"), "10", True])
def test_get_touch_checks_the_ttl(kv: Harness, touch: Any) -> None:
    """An invalid touch TTL raises before any I/O."""
    kv.store.set("s", 1)
    with pytest.raises((TypeError, ValueError)):
        kv.store.get("s", touch=touch)
    assert kv.store.ttl("s") is None


def test_new_operations_refuse_list_keys(db: Harness) -> None:
    """incr and get(touch=) on a list raise WrongTypeError; delete_many removes lists too."""
    db.store.append("l", 1)
    with pytest.raises(WrongTypeError):
        db.store.incr("l")
    with pytest.raises(WrongTypeError):
        db.store.get("l", touch=10)
    assert db.store.get_range("l", 0, -1) == [1]
    db.store.set("v", 1)
    assert db.store.delete_many(["l", "v"]) == 2
    assert db.store.exists("l") is False


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, -1), (0, 0), (2, 5), (-3, -1), (-20, 2), (5, 100), (7, 3), (10, 20), (0, -11), (-1, -1), (3, -4)],
)
def test_trim_has_ltrim_semantics(db: Harness, start: int, end: int) -> None:
    """trim keeps what get_range(start, end) returned, and reports how many items it removed."""
    items = list(range(10))
    db.store.extend("h", items)
    kept = db.store.get_range("h", start, end)
    assert db.store.trim("h", start, end) == len(items) - len(kept)
    assert db.store.get_range("h", 0, -1) == kept
    assert db.store.get_length("h") == len(kept)
    assert db.store.exists("h") is bool(kept)


def test_trim_then_append_and_read(db: Harness) -> None:
    """After a trim, appends go to the tail and indexes count from the new head."""
    db.store.extend("h", list(range(6)))
    assert db.store.trim("h", -3, -1) == 3
    assert db.store.append("h", 6) == 4
    assert db.store.get_range("h", 0, -1) == [3, 4, 5, 6]
    assert db.store.get_range("h", 1, 1) == [4]
    assert db.store.get_range("h", -2, -1) == [5, 6]
    assert db.store.trim("h", 1, -1) == 1
    assert db.store.get_range("h", 0, 0) == [4]


def test_trim_of_missing_list_and_of_a_value(db: Harness) -> None:
    """A missing list trims nothing; a value key raises WrongTypeError and stays."""
    assert db.store.trim("nope", 0, -1) == 0
    db.store.set("v", 1)
    with pytest.raises(WrongTypeError):
        db.store.trim("v", 0, 0)
    assert db.store.get("v") == 1
    with pytest.raises(TypeError):
        db.store.trim("nope", 0, 1.5)  # type: ignore[arg-type]


def test_trim_keeps_idempotency_ids(db: Harness) -> None:
    """A retried append after a trim is still recognised by its id."""
    assert db.store.append("h", "a", idempotency_id="first") == 1
    db.store.append("h", "b")
    db.store.trim("h", -1, -1)
    assert db.store.append("h", "a", idempotency_id="first") == 1
    assert db.store.get_range("h", 0, -1) == ["b"]
