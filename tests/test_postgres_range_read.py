"""PostgreSQL ``get_range``: one statement returning only the items; a read that finds none asks which case it is.

The range statement returns the items alone (no kind row, no sort). When it returns nothing, a second statement
tells apart a missing list, an empty selection and a key holding a value (an error). When the key changed between
the two (what the second finds would have given items), the range is read again: never an empty answer for a
list that has the items, never an error for a key that no longer holds a value.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kvstore import WrongTypeError
from kvstore.postgres import PostgresDatabase
from kvstore.postgres._store import _empty_selection

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def db(postgres_url: str) -> Iterator[PostgresDatabase]:
    store = PostgresDatabase(postgres_url, key_prefix=f"range-{uuid.uuid4().hex[:8]}:")
    yield store
    store.clear()
    store.close()


def _redis_lrange_is_empty(length: int, start: int, end: int) -> bool:
    """Redis LRANGE's own rule, spelled differently: normalise, clamp, compare."""
    lo = start + length if start < 0 else start
    hi = end + length if end < 0 else end
    lo, hi = max(lo, 0), min(hi, length - 1)
    return lo > hi


@pytest.mark.parametrize("length", [0, 1, 2, 5])
def test_empty_selection_agrees_with_lrange(length: int) -> None:
    for start in range(-8, 8):
        for end in range(-8, 8):
            assert _empty_selection(length, start, end) == _redis_lrange_is_empty(length, start, end), (
                length,
                start,
                end,
            )


def test_the_no_item_cases(db: PostgresDatabase) -> None:
    assert db.get_range("missing", 0, -1) == []
    db.extend("list", [1, 2, 3])
    assert db.get_range("list", 5, 9) == []
    assert db.get_range("list", -1, -2) == []
    assert db.get_range("list", -2, -1) == [2, 3]
    db.set("value", "x")
    with pytest.raises(WrongTypeError):
        db.get_range("value", 0, -1)
    db.extend(
        "gone",
        [1],
    )
    db.expire("gone", 0.001)
    import time

    time.sleep(0.01)
    assert db.get_range("gone", 0, -1) == []


class _Interleaved(PostgresDatabase):
    """Runs ``between`` once, right after the first range statement came back empty (a real second connection)."""

    between: Any = None

    def _run(self, op: str, key: str | None, query: str, params: Any, result: str, retry: bool = True) -> Any:
        rows = super()._run(op, key, query, params, result, retry)
        if query == self._q.range and not rows and self.between is not None:
            between, self.between = self.between, None
            between()
        return rows


@pytest.fixture
def pair(postgres_url: str) -> Iterator[tuple[_Interleaved, PostgresDatabase]]:
    prefix = f"range-{uuid.uuid4().hex[:8]}:"
    reader, writer = _Interleaved(postgres_url, key_prefix=prefix), PostgresDatabase(postgres_url, key_prefix=prefix)
    yield reader, writer
    writer.clear()
    reader.close()
    writer.close()


def test_a_value_replaced_by_a_list_between_the_two_statements_reads_the_list(
    pair: tuple[_Interleaved, PostgresDatabase],
) -> None:
    reader, writer = pair
    writer.set("k", "a value")

    def replace() -> None:
        writer.delete("k")
        writer.extend("k", ["a", "b", "c"])

    reader.between = replace
    assert reader.get_range("k", 0, -1) == ["a", "b", "c"]  # not [] (the list has them), not an error


def test_a_list_filled_between_the_two_statements_is_read_again(pair: tuple[_Interleaved, PostgresDatabase]) -> None:
    reader, writer = pair
    reader.between = lambda: writer.extend("k", [1, 2])
    assert reader.get_range("k", 0, -1) == [1, 2]


def test_a_list_replaced_by_a_value_between_the_two_statements_is_the_error(
    pair: tuple[_Interleaved, PostgresDatabase],
) -> None:
    reader, writer = pair
    writer.extend("k", [1])
    writer.trim("k", 1, 0)  # emptied: the list is gone

    def to_value() -> None:
        writer.set("k", 5)

    reader.between = to_value
    with pytest.raises(WrongTypeError):
        reader.get_range("k", 0, -1)
