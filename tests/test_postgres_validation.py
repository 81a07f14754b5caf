"""PostgreSQL store arguments are checked in the constructor, before any I/O or DDL."""

from __future__ import annotations

import pytest

from kvstore.errors import ConfigError, InvalidKeyError
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

#: Nothing listens there: any I/O would fail differently (and slowly).
URL = "postgresql://nobody@127.0.0.1:9/none"
STORES = [PostgresDatabase, AsyncPostgresDatabase]


@pytest.mark.parametrize("cls", STORES)
@pytest.mark.parametrize(
    "prefix", ["a\ud800", "\udfff", "a\x00b", "\x00"], ids=["surrogate", "lone-low", "nul", "only-nul"]
)
def test_bad_key_prefix_is_invalid_key_error_at_construction(cls: type, prefix: str) -> None:
    """A key_prefix with a lone surrogate or NUL raises InvalidKeyError naming key_prefix, before any I/O."""
    with pytest.raises(InvalidKeyError, match="key_prefix") as info:
        cls(URL, key_prefix=prefix)
    assert info.value.backend == "postgres"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("cls", STORES)
def test_non_str_key_prefix_is_invalid_key_error(cls: type) -> None:
    """A key_prefix that is not a str is rejected the same way."""
    with pytest.raises(InvalidKeyError, match="key_prefix"):
        cls(URL, key_prefix=b"app:")


@pytest.mark.parametrize("cls", STORES)
@pytest.mark.parametrize(
    "schema",
    ["s" * 64, "é" * 32, "", "a\x00b", "sch\ud800"],
    ids=["64-bytes", "64-utf8-bytes", "empty", "nul", "surrogate"],
)
def test_bad_schema_name_is_config_error_at_construction(cls: type, schema: str) -> None:
    """A schema name over 63 UTF-8 bytes, empty, with NUL or a lone surrogate raises ConfigError at once."""
    with pytest.raises(ConfigError, match="schema name"):
        cls(URL, schema_name=schema)


@pytest.mark.parametrize("cls", STORES)
def test_a_table_prefix_that_postgres_would_truncate_is_config_error(cls: type) -> None:
    """A table_prefix long enough that a derived name passes 63 bytes (silently truncated) is refused."""
    cls(URL, table_prefix="p" * 35)  # the longest that fits
    with pytest.raises(ConfigError, match="table prefix"):
        cls(URL, table_prefix="p" * 36)


@pytest.mark.parametrize("cls", STORES)
def test_valid_unusual_arguments_are_accepted(cls: type) -> None:
    """Glob and LIKE metacharacters, emoji and a 63-byte schema are fine."""
    store = cls(URL, key_prefix="a*%_[x]\\😀:", schema_name="s" * 63)
    assert store.key_prefix == "a*%_[x]\\😀:"
