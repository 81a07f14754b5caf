"""Adversarial review of the PostgreSQL JSON-array append and the async SQLite queue on the loop."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from kvstore import KVStoreError
from kvstore.postgres import PostgresDatabase


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PostgresDatabase]:
    store = PostgresDatabase(postgres_url, key_prefix=f"review-{uuid.uuid4().hex[:8]}:")
    yield store
    store.clear()
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "items",
    [
        [b"1,2"],  # one "item" that the joined array splits in two: a row past the counter
        [b"1", b"2,3"],
        [b""],  # the joined array is empty: a counter bumped with no item (a hole)
        [b"  "],
        [b"[1", b"2]"],  # two "items" that merge into one
    ],
)
def test_extend_json_of_items_that_are_not_one_json_document_each_writes_nothing(
    pg: PostgresDatabase, items: list[bytes]
) -> None:
    """Each item went to the server as its own ``json`` before 5e9fb96's JSON-array parameter; joined,
    a bad item must still be refused, not leave the list with more or fewer items than its counter
    (a row past the counter made every later append fail with a duplicate key, for good)."""
    pg.append("l", "first")
    with pytest.raises(KVStoreError):
        pg.extend_json("l", items)
    assert pg.get_length("l") == 1
    assert pg.get_range("l", 0, -1) == ["first"]
    assert pg.append("l", "next") == 2  # the list still takes appends
    assert pg.get_range("l", 0, -1) == ["first", "next"]
