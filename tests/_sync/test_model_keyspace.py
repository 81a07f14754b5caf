# Generated from tests/_async/test_model_keyspace.py by tools/unasync.py: do not edit; edit the async source.
"""A model test of one keyspace: random sequences of operations on one store per database backend
against one pure-Python model (DESIGN.md §1-§4, docs/watch.md "Positions are the cursor").

Every step compares the backend's result, or the exact type of the error it raised, with the
model's. "Semantics that differ between backends are bugs": every backend is held to the same
model, so a difference shows up as a failing example naming the backend.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import InvalidKeyError, SerializationError, WrongTypeError
from kvstore._core.keys import glob_match
from tests._sync.backends import Harness

MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
KEYS = ["a", "b", "ab"]
PATTERNS = ["*", "a*", "?", "[ab]", "*b", "[^a]*", "c", "a\\b"]
BIG_TTL = 1000.0
POLL = 0.02

keys_st = st.sampled_from(KEYS)
scalars_st = st.one_of(
    st.integers(-3, 3),
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([MAX_INT, MIN_INT, MAX_INT - 1, MIN_INT + 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([1.0, -0.0, 2.5]),
    st.text(alphabet="ab\x00\u00e9\U0001f600", max_size=3),
    st.just("\ud800"),  # a lone surrogate: orjson refuses it
)
values_st = st.one_of(
    scalars_st,
    st.lists(scalars_st, max_size=2),
    st.dictionaries(st.sampled_from(["k", "\x00"]), scalars_st, max_size=2),
)
index_st = st.integers(-6, 6) | st.sampled_from([MAX_INT, MIN_INT, 100, -100])
#: Mostly trims that keep something (a front trim, a tail trim); now and then an empty selection.
trim_start_st = st.sampled_from([0, 0, 1, 1, 2, -2, -3, 5, MIN_INT, -100])
trim_end_st = st.sampled_from([-1, -1, -2, -2, 3, 1, MAX_INT, 0, -100])
by_st = st.one_of(
    st.integers(-3, 3),
    st.integers(-3, 3),
    st.integers(-3, 3),
    st.sampled_from([MAX_INT, MIN_INT, 2**63, MIN_INT - 1]),
    st.sampled_from([True, 1.5, "1"]),  # TypeError before any I/O
)
#: Items that are not one JSON document: `extend_json` raises SerializationError on every backend.
INVALID_JSON = [b"{", b"", b"1 2", b"nul", b'"\xff"', b"'a'", b"[1,]", b"\x00", b"NaN", b" "]

#: The list operations come three more times: lists must grow for trims and watch positions to matter.
_list_ops = [
    st.tuples(st.just("append"), keys_st, values_st),
    st.tuples(st.just("extend"), keys_st, st.lists(values_st, max_size=4)),
    st.tuples(st.just("trim"), keys_st, trim_start_st, trim_end_st),
    st.tuples(st.just("watch"), keys_st, st.sampled_from([0, 0, 1, 3, -1, -2, -10])),
    st.tuples(st.just("extend_id"), keys_st, st.lists(values_st, max_size=2), st.sampled_from(["x", "y"])),
]
ops_st = st.lists(
    st.one_of(
        *_list_ops,
        *_list_ops,
        *_list_ops,
        st.tuples(st.just("set"), keys_st, values_st, st.booleans(), st.sampled_from([None, None, BIG_TTL])),
        st.tuples(st.just("get"), keys_st, st.sampled_from([None, None, BIG_TTL])),
        st.tuples(st.just("delete"), keys_st),
        st.tuples(st.just("delete_many"), st.lists(keys_st, max_size=3)),
        st.tuples(st.just("exists"), keys_st),
        st.tuples(st.just("mget"), st.lists(keys_st, max_size=3)),
        st.tuples(
            st.just("mset"),
            st.lists(st.tuples(keys_st, values_st) | st.tuples(keys_st, values_st, st.just(BIG_TTL)), max_size=3),
        ),
        st.tuples(st.just("incr"), keys_st, by_st),
        st.tuples(st.just("append"), keys_st, values_st),
        st.tuples(st.just("extend"), keys_st, st.lists(values_st, max_size=3)),
        st.tuples(
            st.just("extend_json"),
            keys_st,
            st.lists(values_st.map(lambda v: _encode(v)).filter(lambda b: b is not None), max_size=3),
            st.none() | st.none() | st.none() | st.sampled_from(INVALID_JSON),
        ),
        st.tuples(st.just("get_range"), keys_st, index_st, index_st),
        st.tuples(st.just("get_length"), keys_st),
        st.tuples(st.just("keys"), st.sampled_from(PATTERNS)),
        st.tuples(st.just("expire"), keys_st, st.sampled_from([None, BIG_TTL])),
        st.tuples(st.just("ttl"), keys_st),
        st.tuples(st.just("expire_now"), keys_st),
        st.tuples(st.just("watch"), keys_st, st.sampled_from([0, 0, 1, 3, -1, -2, -10])),
        st.tuples(st.just("invalid_key"), st.sampled_from(["", "a\x00", "\udc00"])),
        st.tuples(st.just("clear")),
    ),
    min_size=10,
    max_size=40,
)

#: Lists and their positions: mostly appends, trims from either end, and what ends a list.
small_values_st = st.integers(0, 9)
list_key_st = st.sampled_from(["a", "b"])
list_ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("append"), list_key_st, small_values_st),
        st.tuples(st.just("extend"), list_key_st, st.lists(small_values_st, max_size=4)),
        st.tuples(st.just("extend"), list_key_st, st.lists(small_values_st, min_size=2, max_size=6)),
        st.tuples(st.just("trim"), list_key_st, trim_start_st, trim_end_st),
        st.tuples(st.just("trim"), list_key_st, st.integers(0, 3), st.just(-1)),
        st.tuples(st.just("trim"), list_key_st, st.just(0), st.integers(-3, -1)),
        st.tuples(st.just("watch"), list_key_st, st.sampled_from([0, 0, 2, -1, -3])),
        st.tuples(st.just("get_range"), list_key_st, index_st, index_st),
        st.tuples(st.just("get_length"), list_key_st),
        st.tuples(st.just("delete"), list_key_st),
        st.tuples(st.just("expire_now"), list_key_st),
        st.tuples(st.just("set"), list_key_st, small_values_st, st.booleans(), st.sampled_from([None, BIG_TTL])),
        st.tuples(st.just("incr"), list_key_st, st.integers(-2, 2)),
        st.tuples(st.just("expire"), list_key_st, st.sampled_from([None, BIG_TTL])),
        st.tuples(st.just("extend_id"), list_key_st, st.lists(small_values_st, max_size=2), st.sampled_from("xyz")),
        st.tuples(st.just("clear")),
    ),
    min_size=5,
    max_size=40,
)


def _encode(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except TypeError:
        return None


class Model:
    """The keyspace: key -> ["value", decoded] or ["list", first position, items]; and which keys have a TTL."""

    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {}
        self.ttl: set[str] = set()
        #: (key, idempotency id) -> the length its first append returned: outlives delete and clear (§8a)
        self.ids: dict[tuple[str, str], int] = {}

    def remove(self, key: str) -> bool:
        self.ttl.discard(key)
        return self.data.pop(key, None) is not None

    def put_value(self, key: str, value: Any, ttl: float | None) -> None:
        self.remove(key)
        self.data[key] = ["value", value]
        if ttl is not None:
            self.ttl.add(key)

    def value_of(self, key: str) -> Any:
        entry = self.data.get(key)
        if entry is None:
            return None
        if entry[0] == "list":
            raise WrongTypeError("list")
        return entry[1]

    def list_of(self, key: str) -> list[Any] | None:
        entry = self.data.get(key)
        if entry is not None and entry[0] == "value":
            raise WrongTypeError("value")
        return entry

    def extend(self, key: str, items: list[Any]) -> int:
        entry = self.list_of(key)
        if not items:
            return 0 if entry is None else len(entry[2])
        if entry is None:
            entry = self.data[key] = ["list", 0, []]
        entry[2].extend(items)
        return len(entry[2])


def _span(n: int, start: int, end: int) -> tuple[int, int]:
    """LRANGE/LTRIM bounds as a Python slice [lo, hi)."""
    lo = max(start + n, 0) if start < 0 else start
    hi = end + n + 1 if end < 0 else min(end, n - 1) + 1
    lo = min(lo, n)
    return lo, max(hi, lo)


def _decoded(value: Any) -> Any:
    data = _encode(value)
    if data is None:
        raise SerializationError("model: not encodable")
    return orjson.loads(data)


def _expected(model: Model, op: tuple[Any, ...]) -> Any:
    """What the contract says ``op`` returns (or raises) on ``model``, applying it."""
    name, *args = op
    if name == "set":
        key, value, only_if_absent, ttl = args
        decoded = _decoded(value)
        if only_if_absent and key in model.data:
            return False
        model.put_value(key, decoded, ttl)
        return True
    if name == "get":
        key, touch = args
        value = model.value_of(key)
        if touch is not None and key in model.data:
            model.ttl.add(key)
        return value
    if name == "delete":
        return model.remove(args[0])
    if name == "delete_many":
        return sum(model.remove(k) for k in set(args[0]))
    if name == "exists":
        return args[0] in model.data
    if name == "mget":
        return [None if model.data.get(k, ["list"])[0] == "list" else model.data[k][1] for k in args[0]]
    if name == "mset":
        rows = [(row[0], _decoded(row[1]), row[2] if len(row) > 2 else None) for row in args[0]]
        for k, v, ttl in rows:
            model.put_value(k, v, ttl)
        return None
    if name == "incr":
        key, by = args
        if by.__class__ is not int:
            raise TypeError
        if not MIN_INT <= by <= MAX_INT:
            raise ValueError
        entry = model.data.get(key)
        if entry is None:
            model.data[key] = ["value", by]
            return by
        if entry[0] == "list" or entry[1].__class__ is not int or not MIN_INT <= entry[1] + by <= MAX_INT:
            raise WrongTypeError("incr")
        if not MIN_INT <= entry[1] <= MAX_INT:
            raise WrongTypeError("incr")
        entry[1] += by
        return entry[1]
    if name == "append":
        key, value = args
        return model.extend(key, [_decoded(value)])
    if name == "extend":
        key, values = args
        return model.extend(key, [_decoded(v) for v in values])
    if name == "extend_id":  # DESIGN.md §8a; an empty extend neither looks its id up nor records it
        key, values, iid = args
        items = [_decoded(v) for v in values]
        if items and (key, iid) in model.ids:
            return model.ids[key, iid]
        length = model.extend(key, items)
        if items:
            model.ids[key, iid] = length
        return length
    if name == "extend_json":
        key, items, invalid = args
        if invalid is not None:
            raise SerializationError("model: not JSON")
        return model.extend(key, [orjson.loads(i) for i in items])
    if name == "trim":
        key, start, end = args
        entry = model.list_of(key)
        if entry is None:
            return 0
        n = len(entry[2])
        lo, hi = _span(n, start, end)
        if lo >= hi:
            model.remove(key)
            return n
        entry[1] += lo
        entry[2] = entry[2][lo:hi]
        return n - (hi - lo)
    if name == "get_range":
        key, start, end = args
        entry = model.list_of(key)
        if entry is None:
            return []
        lo, hi = _span(len(entry[2]), start, end)
        return entry[2][lo:hi]
    if name == "get_length":
        entry = model.list_of(args[0])
        return 0 if entry is None else len(entry[2])
    if name == "keys":
        return sorted(k for k in model.data if glob_match(args[0], k))
    if name == "expire":
        key, ttl = args
        if key not in model.data:
            return False
        if ttl is None:
            model.ttl.discard(key)
        else:
            model.ttl.add(key)
        return True
    if name == "ttl":
        return args[0] in model.ttl  # presence only
    if name == "expire_now":
        model.remove(args[0])
        return None
    if name == "watch":  # docs/watch.md: positions count from the first item ever appended
        key, start = args
        entry = model.list_of(key)
        if entry is None:
            return []
        head, items = entry[1], entry[2]
        first = start if start >= 0 else max(head + len(items) + start, 0)
        return [(head + i, v) for i, v in enumerate(items) if head + i >= first]
    if name == "invalid_key":
        raise InvalidKeyError("model")
    if name == "clear":
        model.data.clear()
        model.ttl.clear()
        return None
    raise AssertionError(name)


def _take(store: Any, key: str, start: int, n: int) -> list[tuple[int, Any]]:
    items = store.watch(key, start=start, poll_interval=POLL)
    got: list[tuple[int, Any]] = []
    try:
        for item in items:
            got.append((item.position, item.value))
            if len(got) >= n:
                break
    finally:
        items.close()
    return got


def _read_watch(store: Any, key: str, start: int, n: int) -> list[tuple[int, Any]]:
    """The first ``n`` items a watch from ``start`` yields; ``n = -1`` for a value key (WrongTypeError)."""
    # Never wait for an item that may not come: read what the list holds from 0 (as many as
    # get_length says) and apply ``start`` to those positions as the contract does.
    length = 1 if n == -1 else store.get_length(key)
    got = _take(store, key, 0, length) if length else []
    first = start if start >= 0 or not got else max(got[-1][0] + 1 + start, 0)
    return [item for item in got if item[0] >= first]


def _actual(db: Harness, op: tuple[Any, ...], expected_len: int) -> Any:
    store = db.store
    name, *args = op
    if name == "set":
        key, value, only_if_absent, ttl = args
        return store.set(key, value, ttl=ttl, only_if_absent=only_if_absent)
    if name == "get":
        key, touch = args
        return store.get(key) if touch is None else store.get(key, touch=touch)
    if name == "delete":
        return store.delete(args[0])
    if name == "delete_many":
        return store.delete_many(args[0])
    if name == "exists":
        return store.exists(args[0])
    if name == "mget":
        return store.mget(args[0])
    if name == "mset":
        return store.mset(args[0])
    if name == "incr":
        return store.incr(*args)
    if name == "append":
        return store.append(*args)
    if name == "extend":
        return store.extend(*args)
    if name == "extend_id":
        key, values, iid = args
        if len(values) == 1 and iid.startswith("x"):  # `append` for one value, `extend` else
            return store.append(key, values[0], idempotency_id=iid)
        return store.extend(key, values, idempotency_id=iid)
    if name == "extend_json":
        key, items, invalid = args
        if invalid is not None:
            items = [*items, invalid]
        return store.extend_json(key, items)
    if name == "trim":
        return store.trim(*args)
    if name == "get_range":
        return store.get_range(*args)
    if name == "get_length":
        return store.get_length(args[0])
    if name == "keys":
        return sorted(store.keys(args[0]))
    if name == "expire":
        return store.expire(*args)
    if name == "ttl":
        ttl = store.ttl(args[0])
        assert ttl is None or 0 < ttl <= BIG_TTL, ttl
        return ttl is not None
    if name == "expire_now":
        if store.exists(args[0]):
            assert store.expire(args[0], 0.001) is True
            db.advance(0.01)
        return None
    if name == "watch":
        return _read_watch(store, args[0], args[1], expected_len)
    if name == "invalid_key":
        return store.get(args[0])
    if name == "clear":
        return store.clear()
    raise AssertionError(name)


def _outcome_of_model(model: Model, op: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return ("ok", _expected(model, op))
    except (WrongTypeError, SerializationError, InvalidKeyError, TypeError, ValueError) as exc:
        return ("error", type(exc).__name__)


def run_against_model(db: Harness, ops: list[tuple[Any, ...]]) -> None:
    db.store.clear()
    model = Model()
    # Ids outlive clear (DESIGN.md §8a): each sequence gets ids of its own, as its fresh model has none.
    token = uuid.uuid4().hex
    ops = [(*op[:3], op[3] + token) if op[0] == "extend_id" else op for op in ops]
    for step, op in enumerate(ops):
        want = _outcome_of_model(model, op)
        n = 0
        if op[0] == "watch":
            n = len(want[1]) if want[0] == "ok" else -1
        try:
            got: tuple[str, Any] = ("ok", _actual(db, op, n))
        except (WrongTypeError, SerializationError, InvalidKeyError, TypeError, ValueError) as exc:
            got = ("error", type(exc).__name__)
        assert got == want, f"{db.name}: step {step} {op!r}"
    # At the end, every list's positions (from 0) and every key's kind, whatever the steps checked.
    for key in KEYS:
        op = ("watch", key, 0)
        want = _outcome_of_model(model, op)
        if want[0] == "ok" and want[1]:
            assert ("ok", _actual(db, op, len(want[1]))) == want, f"{db.name}: final watch of {key!r}"


@settings(max_examples=25)
@given(ops=ops_st)
def test_the_keyspace_behaves_like_the_model(db: Harness, ops: list[tuple[Any, ...]]) -> None:
    """Every result and every error type of a random sequence of operations agrees with the model."""
    run_against_model(db, ops)


@settings(max_examples=25)
@given(ops=list_ops_st)
def test_list_positions_behave_like_the_model(db: Harness, ops: list[tuple[Any, ...]]) -> None:
    """Lists that grow, are trimmed from either end, end and start again: items and watch positions."""
    run_against_model(db, ops)


@pytest.mark.slow
@settings(max_examples=400)
@given(ops=ops_st)
def test_the_keyspace_behaves_like_the_model_long(db: Harness, ops: list[tuple[Any, ...]]) -> None:
    """The same, with many more sequences (``-m slow``)."""
    run_against_model(db, ops)


@pytest.mark.slow
@settings(max_examples=400)
@given(ops=list_ops_st)
def test_list_positions_behave_like_the_model_long(db: Harness, ops: list[tuple[Any, ...]]) -> None:
    """The same, with many more sequences (``-m slow``)."""
    run_against_model(db, ops)
