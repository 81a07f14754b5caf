# Generated from tests/_async/test_properties.py by tools/unasync.py: do not edit; edit the async source.
"""Property tests: every backend against one Python model (lists, globs, prefixes, TTL)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore._core.keys import glob_match
from tests._sync.backends import Harness

GLOB_ALPHABET = "ab*?[]\\^-%_"
keys_st = st.text(alphabet="ab*?[]\\%_^-ж", min_size=1, max_size=5)
patterns_st = st.text(alphabet=GLOB_ALPHABET + "ж", min_size=0, max_size=6)

list_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(-5, 5) | st.text(max_size=3) | st.none()),
        st.tuples(st.just("extend"), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
        st.tuples(st.just("range"), st.tuples(st.integers(-15, 15), st.integers(-15, 15))),
        st.tuples(st.just("length"), st.none()),
    ),
    max_size=25,
)


@given(ops=list_ops)
def test_lists_behave_like_a_python_list(db: Harness, ops: list[tuple[str, Any]]) -> None:
    """append/extend/get_range/get_length agree with a Python list under LRANGE index rules."""
    db.store.delete("h")
    model: list[Any] = []
    for op, arg in ops:
        if op == "append":
            model.append(arg)
            assert db.store.append("h", arg) == len(model)
        elif op == "extend":
            model.extend(arg)
            assert db.store.extend("h", arg) == len(model)
        elif op == "range":
            start, end = arg
            n = len(model)
            lo = max(start + n, 0) if start < 0 else start
            hi = end + n if end < 0 else min(end, n - 1)
            assert db.store.get_range("h", start, end) == (model[lo : hi + 1] if lo <= hi else [])
        else:
            assert db.store.get_length("h") == len(model)


@given(keys=st.sets(keys_st, max_size=12), pattern=patterns_st)
def test_keys_agree_with_the_reference_matcher(kv: Harness, keys: set[str], pattern: str) -> None:
    """keys(pattern) returns exactly the keys the reference glob matcher accepts."""
    kv.store.clear()
    if keys:
        kv.store.mset({k: 1 for k in keys})
    expected = sorted(k for k in keys if glob_match(pattern, k))
    assert sorted(kv.store.keys(pattern)) == expected


@settings(max_examples=15)
@given(
    prefixes=st.lists(st.text(alphabet="a*?[]%_\\:", min_size=0, max_size=3), min_size=2, max_size=2, unique=True),
    keys=st.sets(keys_st, min_size=1, max_size=5),
)
def test_prefixes_never_leak(kv: Harness, prefixes: list[str], keys: set[str]) -> None:
    """Stores with different prefixes on one backend see only their own keys, whatever the characters."""
    a = kv.sibling(key_prefix=prefixes[0])
    b = kv.sibling(key_prefix=prefixes[1])
    try:
        a.clear()
        b.clear()
        a.mset({k: "a" for k in keys})
        assert sorted(a.keys("*")) == sorted(keys)
        assert b.keys("*") == []
        assert b.mget(sorted(keys)) == [None] * len(keys)
        b.mset({k: "b" for k in keys})
        b.clear()
        assert a.mget(sorted(keys)) == ["a"] * len(keys)
    finally:
        a.clear()
        b.clear()


@settings(max_examples=10)
@given(
    # Margins of a second or more either side of the wait: real clocks (Redis, Postgres) on a
    # loaded machine spend real time between the writes and the check.
    ttls=st.lists(st.sampled_from([None, 0.05, 1.5, 10.0]), min_size=1, max_size=6),
    wait=st.sampled_from([0.3, 0.45]),
)
def test_ttl_against_a_model(kv: Harness, ttls: list[float | None], wait: float) -> None:
    """After waiting, exactly the keys whose TTL has passed are gone (margins keep real clocks honest)."""
    kv.store.clear()
    for i, ttl in enumerate(ttls):
        kv.store.set(f"k{i}", i, ttl=ttl)
    kv.advance(wait)
    alive = sorted(f"k{i}" for i, ttl in enumerate(ttls) if ttl is None or ttl > wait)
    assert sorted(kv.store.keys()) == alive
    values = kv.store.mget([f"k{i}" for i in range(len(ttls))])
    assert [v is not None for v in values] == [ttl is None or ttl > wait for ttl in ttls]
