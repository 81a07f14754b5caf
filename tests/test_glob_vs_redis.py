"""The reference glob matcher held against a real Redis, and the Redis backend against the matcher."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore._core.keys import compile_glob
from kvstore.redis import RedisCache
from tests.fixtures_redis import RedisServer

pytestmark = pytest.mark.redis

# Rich in the characters the glob grammar gives a meaning to.
GLOB_ALPHABET = "*?[]^-\\ab"
ASCII_KEYS = st.lists(st.text(alphabet=GLOB_ALPHABET, min_size=1, max_size=6), min_size=1, max_size=12, unique=True)
PATTERNS = st.text(alphabet=GLOB_ALPHABET, min_size=1, max_size=8)
# Keys the backend must match by characters although Redis matches bytes.
UNICODE_KEYS = st.lists(
    st.text(alphabet=GLOB_ALPHABET + "жé🎉", min_size=1, max_size=5), min_size=1, max_size=10, unique=True
)
UNICODE_PATTERNS = st.text(alphabet=GLOB_ALPHABET + "жé🎉", min_size=1, max_size=6)

DB = 15  # a database of the owned, throwaway server that nothing else uses


@pytest.fixture(scope="module")
def raw(owned_redis_server: RedisServer) -> Iterator[Any]:
    """A raw client on a dedicated database of the owned server."""
    client = redis.Redis(host="127.0.0.1", port=owned_redis_server.port, db=DB)
    yield client
    client.close()


def _scan(client: Any, pattern: str) -> set[str]:
    """Redis's own matcher: SCAN MATCH with a COUNT larger than the keyspace (never KEYS)."""
    found: set[str] = set()
    cursor = 0
    while True:
        cursor, batch = client.scan(cursor, match=pattern, count=10_000)
        found.update(k.decode() for k in batch)
        if cursor == 0:
            return found


@settings(max_examples=150)
@given(keys=ASCII_KEYS, pattern=PATTERNS)
def test_reference_matcher_agrees_with_redis(raw: Any, keys: list[str], pattern: str) -> None:
    """compile_glob accepts exactly the ASCII keys Redis's SCAN MATCH returns, for any pattern."""
    raw.mset(dict.fromkeys(keys, b"1"))
    try:
        expected = _scan(raw, pattern)
        matches = compile_glob(pattern)
        assert {k for k in keys if matches(k)} == expected
    finally:
        raw.unlink(*keys)


@settings(max_examples=60)
@given(keys=UNICODE_KEYS, pattern=UNICODE_PATTERNS, prefix=st.sampled_from(["", "p*[?]\\:", "glob:"]))
def test_backend_keys_equal_the_reference_matcher(
    owned_redis_server: RedisServer, keys: list[str], pattern: str, prefix: str
) -> None:
    """RedisCache.keys(pattern) equals the reference matcher's result, prefix and multi-byte keys included."""
    store = RedisCache(f"redis://127.0.0.1:{owned_redis_server.port}/{DB - 1}", key_prefix=prefix)
    try:
        store.mset(dict.fromkeys(keys, 1))
        matches = compile_glob(pattern)
        assert sorted(store.keys(pattern)) == sorted(k for k in keys if matches(k))
    finally:
        store.clear()
        store.close()
