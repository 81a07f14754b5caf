"""Value encoding (kvstore._core.codec)."""

from __future__ import annotations

import pytest

from kvstore._core.codec import decode, encode
from kvstore.errors import SerializationError, ValueTooLargeError


def test_encode_is_compact_json() -> None:
    """Values encode as compact orjson JSON."""
    assert encode("k", {"a": [1, 2.5, None, True]}) == b'{"a":[1,2.5,null,true]}'


def test_null_alone_is_fine() -> None:
    """A real null is not mistaken for NaN."""
    assert decode(encode("k", [None, {"x": None}])) == [None, {"x": None}]


def test_size_limit_is_on_encoded_bytes() -> None:
    """The limit applies to the encoded length, inclusive."""
    assert encode("k", "abc", max_bytes=5) == b'"abc"'
    with pytest.raises(ValueTooLargeError, match="6 bytes"):
        encode("k", "abcd", max_bytes=5)


def test_decode_error_is_typed() -> None:
    """Corrupt stored bytes raise SerializationError naming the key."""
    with pytest.raises(SerializationError, match="'k'"):
        decode(b"{not json", "k")


def test_deeply_nested_value_is_rejected_cleanly() -> None:
    """orjson's recursion limit surfaces as SerializationError, not a crash."""
    value: list[object] = []
    for _ in range(300):
        value = [value]
    with pytest.raises(SerializationError):
        encode("k", value)
