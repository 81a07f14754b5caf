"""PostgreSQL statement parameters keep every key and value exact, whatever its characters.

The store sends key and value arrays as binary ``text[]`` parameters and an append's items as
one JSON array text (`Queries.push`): neither goes through the text array syntax (quotes,
backslashes, commas, braces, ``NULL``), and an item's JSON keeps its exact text. These
tests write such keys and values through every statement that takes an array or the items
and read them back, on the sync and the async store, with a second connection checking
what the server holds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kvstore import SerializationError
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

pytestmark = [pytest.mark.postgres]

#: Keys that the text array syntax would have to quote or escape, and a few that look like its words.
AWKWARD_KEYS = [
    'quote"in',
    "back\\slash",
    "comma,key",
    "{braces}",
    "NULL",
    "null",
    "",
    " spaced key ",
    "tab\tkey",
    "new\nline",
    "é ü 日本 🎉",
    "semi;colon'apostrophe",
    "\\N",
    "a" * 300,
]

#: Values whose JSON text has quotes, escapes, nested arrays and objects, and characters outside ASCII.
AWKWARD_VALUES: list[Any] = [
    'he said "hi" \\ and left',
    {"role": "user", "content": 'a "quoted" {brace} [bracket], comma'},
    [1, [2, [3, "x,y"]], {"k": None}],
    "\u0000 nul escape and \u001f control",
    "🎉 日本",
    None,
    True,
    0,
    -1.5,
    2**63 - 1,
    "",
    [],
    {},
]


@pytest.fixture
def db(postgres_url: str) -> Iterator[PostgresDatabase]:
    store = PostgresDatabase(postgres_url, key_prefix=f"params-{uuid.uuid4().hex[:8]}:")
    yield store
    store.clear()
    store.close()


def _keys() -> list[str]:
    return [k for k in AWKWARD_KEYS if k]  # the empty key is refused by key validation everywhere


def test_mset_mget_delete_many_keep_awkward_keys(db: PostgresDatabase, postgres_url: str) -> None:
    keys = _keys()
    values = {key: AWKWARD_VALUES[i % len(AWKWARD_VALUES)] for i, key in enumerate(keys)}
    db.mset(values)
    assert db.mget(keys) == [values[key] for key in keys]
    with psycopg.connect(postgres_url) as conn:  # what the server holds, key by key
        held = dict(conn.execute("SELECT key, value::text FROM kvstore_entries WHERE ns = %s", (db.key_prefix,)))
    assert sorted(held) == sorted(keys)
    assert {key: db.get(key) for key in keys} == values
    half = keys[::2]
    assert db.delete_many(half) == len(half)
    assert db.mget(keys) == [None if key in half else values[key] for key in keys]


def test_mset_with_ttls_keeps_each_rows_ttl(db: PostgresDatabase) -> None:
    db.mset([('t"1', 1, 60), ("t,2", 2, None), ("t{3}", 3, 120)])
    ttl1, ttl2, ttl3 = db.ttl('t"1'), db.ttl("t,2"), db.ttl("t{3}")
    assert ttl1 is not None
    assert 59 < ttl1 <= 60
    assert ttl2 is None
    assert ttl3 is not None
    assert 119 < ttl3 <= 120
    assert db.mget(['t"1', "t,2", "t{3}"]) == [1, 2, 3]


def test_append_keeps_every_items_exact_value(db: PostgresDatabase) -> None:
    for key in ['list"q', "list,c", "list{b}", "NULL"]:
        assert db.extend(key, AWKWARD_VALUES) == len(AWKWARD_VALUES)
        assert db.append(key, 'tail "x"') == len(AWKWARD_VALUES) + 1
        assert db.get_range(key, 0, -1) == [*AWKWARD_VALUES, 'tail "x"']
        # A single item that is itself a JSON array stays one item.
        assert db.append(key, [1, 2, 3]) == len(AWKWARD_VALUES) + 2
        assert db.get_range(key, -1, -1) == [[1, 2, 3]]


def test_append_json_keeps_the_stored_text(db: PostgresDatabase) -> None:
    """The bytes `extend_json` hands over are what `get_range_json` reads back (the json type keeps text)."""
    items = [b'{"b":1,"a":2}', b'[1,"x,y",{"q":"\\""}]', b'"\\u00e9"', b"1.50", b"-0"]
    assert db.extend_json("exact", items) == len(items)
    assert [raw.encode() if isinstance(raw, str) else raw for raw in db.get_range_json("exact", 0, -1) or []] == items


def test_append_of_invalid_json_writes_nothing(db: PostgresDatabase) -> None:
    db.append("guarded", "first")
    with pytest.raises(SerializationError):
        db.append("guarded", float("nan"))
    assert db.get_range("guarded", 0, -1) == ["first"]
    assert db.get_length("guarded") == 1


def test_idempotent_append_with_awkward_id_applies_once(db: PostgresDatabase) -> None:
    token = 'id "with" ,{all} \\ of it'
    assert db.append("once", {"m": 1}, idempotency_id=token) == 1
    assert db.append("once", {"m": 1}, idempotency_id=token) == 1
    assert db.get_range("once", 0, -1) == [{"m": 1}]


def test_async_store_keeps_awkward_keys_and_items(postgres_url: str) -> None:
    async def run() -> None:
        store = AsyncPostgresDatabase(postgres_url, key_prefix=f"params-a-{uuid.uuid4().hex[:8]}:")
        try:
            keys = _keys()
            await store.mset({key: {"k": key} for key in keys})
            # Concurrent gets are batched into one mget statement: each caller gets its own key's value.
            got = await asyncio.gather(*(store.get(key) for key in keys))
            assert got == [{"k": key} for key in keys]
            assert await store.extend('a"list', AWKWARD_VALUES) == len(AWKWARD_VALUES)
            assert await store.get_range('a"list', 0, -1) == AWKWARD_VALUES
            assert await store.delete_many(keys) == len(keys)
            assert await store.mget(keys) == [None] * len(keys)
        finally:
            await store.clear()
            await store.aclose()

    asyncio.run(run())
