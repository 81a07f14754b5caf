"""The reference glob matcher and key helpers (kvstore._core.keys)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore._core.keys import (
    compile_glob,
    escape_glob,
    glob_literal_prefix,
    glob_match,
    prefix_upper_bound,
    validate_key,
    widen_glob,
)
from kvstore.errors import InvalidKeyError


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("*", "", True),
        ("*", "anything", True),
        ("a*", "abc", True),
        ("a*", "ba", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("[abc]", "b", True),
        ("[abc]", "d", False),
        ("[^abc]", "d", True),
        ("[^abc]", "a", False),
        ("[a-c]", "b", True),
        ("[c-a]", "b", True),  # Redis swaps reversed ranges
        ("[a-c]", "d", False),
        ("[]", "]", False),  # an empty class never matches
        ("[^]", "x", True),  # a negated empty class matches any one character
        ("[abc", "b", True),  # an unclosed class closes at the end of the pattern
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("a\\", "a\\", True),  # a trailing backslash is literal
        ("[\\]]", "]", True),
        ("[\\-]", "-", True),
        ("[a-]", "-", False),  # "a-]" is the range ']'..'a'; the class then closes at the end
        ("[a-]", "_", True),
        ("%_", "%_", True),
        ("%_", "ab", False),
        ("k?", "kж", True),  # characters, not bytes
        ("k?", "k🎉", True),
        ("*\n*", "a\nb", True),
    ],
)
def test_reference_matcher_follows_redis(pattern: str, key: str, expected: bool) -> None:
    """The matcher implements Redis's stringmatchlen grammar, edge cases included."""
    assert glob_match(pattern, key) is expected


def test_compile_glob_rejects_non_str() -> None:
    """A pattern must be a str."""
    with pytest.raises(TypeError):
        compile_glob(b"*")  # type: ignore[arg-type]  # the point of the test


@given(st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s))
def test_escape_glob_matches_itself_only(text: str) -> None:
    """An escaped text matches exactly itself."""
    assert glob_match(escape_glob(text), text)
    assert not glob_match(escape_glob(text), text + "x")


@given(st.text(alphabet="ab*?[]\\^-", max_size=8), st.text(alphabet="ab*?[]\\^-ж", max_size=6))
def test_widened_pattern_matches_a_superset(pattern: str, key: str) -> None:
    """widen_glob never loses a match of the original pattern."""
    if glob_match(pattern, key):
        assert glob_match(widen_glob(pattern), key)


@given(st.text(alphabet="ab*?[]\\^-", max_size=8), st.text(alphabet="ab*?[]\\^-", max_size=6))
def test_every_match_starts_with_the_literal_prefix(pattern: str, key: str) -> None:
    """glob_literal_prefix is a prefix of every key the pattern matches."""
    if glob_match(pattern, key):
        assert key.startswith(glob_literal_prefix(pattern))


@given(st.text(min_size=1, max_size=5), st.text(max_size=5))
def test_prefix_upper_bound_bounds_the_range(prefix: str, rest: str) -> None:
    """Every string with the prefix sorts below the bound (code-point order)."""
    bound = prefix_upper_bound(prefix)
    if bound is not None:
        assert prefix + rest < bound
        assert not bound.startswith(prefix)


def test_prefix_upper_bound_edges() -> None:
    """An empty prefix has no bound; U+10FFFF carries over."""
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff") is None
    assert prefix_upper_bound("\ud7ff") == "\ue000"


def test_validate_key_error_carries_the_key() -> None:
    """InvalidKeyError has the offending key as an attribute and names it in the message."""
    with pytest.raises(InvalidKeyError, match="NUL") as info:
        validate_key("a\x00b")
    assert info.value.key == "a\x00b"


def test_validate_key_rejects_str_subclass_with_bad_content() -> None:
    """A str subclass is checked like a str."""

    class Key(str):
        pass

    assert validate_key(Key("ok")) == "ok"
    with pytest.raises(InvalidKeyError):
        validate_key(Key(""))
