"""Configuration: sources, substitution, secrets, validation (kvstore.config)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvstore.config import (
    MemoryCacheConfig,
    PostgresDatabaseConfig,
    RedisCacheConfig,
    SqliteDatabaseConfig,
    StorageConfig,
    load_config,
)
from kvstore.errors import ConfigError

CANARY = "canary-S3cr3t-7f3a"


def test_default_is_memory_cache_and_sqlite_file() -> None:
    """No config at all: memory cache + SQLite in ./.kvstore/kvstore.db."""
    config = StorageConfig()
    assert isinstance(config.cache, MemoryCacheConfig)
    assert isinstance(config.database, SqliteDatabaseConfig)
    assert config.database.path == "./.kvstore/kvstore.db"


def test_dict_with_discriminated_unions_and_camel_case() -> None:
    """A dict selects backends by type; camelCase aliases load an existing agent.yml section."""
    config = load_config(
        {
            "cache": {"type": "redis", "url": "redis://localhost:6379/0", "keyPrefix": "app:"},
            "database": {"type": "postgres", "url": "postgresql://app@db/app", "maxSize": 4, "schema": "kv"},
        }
    )
    assert isinstance(config.cache, RedisCacheConfig)
    assert config.cache.key_prefix == "app:"
    assert isinstance(config.database, PostgresDatabaseConfig)
    assert config.database.max_size == 4
    assert config.database.schema_name == "kv"


def test_variables_are_substituted(monkeypatch: pytest.MonkeyPatch) -> None:
    """$VAR and ${VAR} come from the environment; $$ is a literal dollar."""
    monkeypatch.setenv("DATABASE_PASSWORD", CANARY)
    monkeypatch.setenv("DB_HOST", "db.internal")
    config = load_config(
        {
            "database": {
                "type": "postgres",
                "url": "postgresql://app@${DB_HOST}/app",
                "password": "$DATABASE_PASSWORD",
            },
            "cache": {"type": "memory", "key_prefix": "cost$$:"},
        }
    )
    assert isinstance(config.database, PostgresDatabaseConfig)
    assert config.database.url == "postgresql://app@db.internal/app"
    assert config.database.password is not None
    assert config.database.password.get_secret_value() == CANARY
    assert config.cache.key_prefix == "cost$:"


def test_missing_variable_is_an_error_not_an_empty_string(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference to an unset variable raises ConfigError naming the variable and the field."""
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"database\.url.*\$NOPE_NOT_SET"):
        load_config({"database": {"type": "postgres", "url": "postgresql://app@${NOPE_NOT_SET}/app"}})
    with pytest.raises(ConfigError, match=r"database\.password refers to an environment variable that is not set"):
        load_config({"database": {"type": "postgres", "password": "${NOPE_NOT_SET}"}})


def test_password_in_url_moves_to_secret() -> None:
    """A password in a URL is taken out of it and kept as a SecretStr; repr never shows it."""
    config = load_config(
        {
            "cache": {"type": "redis", "url": f"redis://user:{CANARY}@cache:6380/2"},
            "database": {"type": "postgres", "url": f"postgresql://app:{CANARY}@db:5432/app"},
        }
    )
    assert isinstance(config.cache, RedisCacheConfig)
    assert config.cache.url == "redis://user@cache:6380/2"
    assert config.cache.password is not None
    assert config.cache.password.get_secret_value() == CANARY
    for text in (repr(config), str(config), config.model_dump_json()):
        assert CANARY not in text


def test_validation_errors_never_echo_input() -> None:
    """A bad field is reported by location and reason, without the (possibly secret) value."""
    with pytest.raises(ConfigError) as info:
        load_config({"database": {"type": "postgres", "password": {"nested": CANARY}, "port": "x"}})
    message = str(info.value)
    assert "database" in message
    assert "port" in message
    assert CANARY not in message


@pytest.mark.parametrize(
    "bad",
    [
        {"cache": {"type": "nosuch"}},
        {"cache": {"type": "redis", "url": "http://x"}},
        {"cache": {"type": "memory", "max_entries": 0}},
        {"cache": {"type": "memory", "unknown_option": 1}},
        {"database": {"type": "postgres", "min_size": 5, "max_size": 2}},
        {"database": {"type": "postgres", "table_prefix": "x; drop table"}},
        {"database": {"type": "sqlite", "url": "postgres://x"}},
        {"cache": {"type": "memory", "key_prefix": "a\x00"}},
        {"cache": {"type": "memory", "connect_timeout": 0}},
    ],
)
def test_invalid_configs_raise_config_error(bad: dict[str, object]) -> None:
    """Invalid configs raise ConfigError, never a raw pydantic error."""
    with pytest.raises(ConfigError):
        load_config(bad)


def test_url_schemes_set_flags() -> None:
    """rediss:// turns TLS on; redis+cluster:// turns cluster mode on; sqlite:/// sets the path."""
    config = load_config(
        {
            "cache": {"type": "redis", "url": "rediss+cluster://h:7000"},
            "database": {"type": "sqlite", "url": "sqlite:////var/lib/app/kv.db"},
        }
    )
    assert isinstance(config.cache, RedisCacheConfig)
    assert config.cache.tls
    assert config.cache.cluster
    assert isinstance(config.database, SqliteDatabaseConfig)
    assert config.database.path == "/var/lib/app/kv.db"


def test_toml_file(tmp_path: Path) -> None:
    """A TOML file loads, at top level or under [storage]."""
    path = tmp_path / "kv.toml"
    path.write_text('[storage.cache]\ntype = "memory"\nkey_prefix = "t:"\n[storage.database]\ntype = "memory"\n')
    config = load_config(path)
    assert config.cache.key_prefix == "t:"
    assert config.database.type == "memory"


def test_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML file loads with variables substituted."""
    monkeypatch.setenv("PG_PASSWORD", CANARY)
    path = tmp_path / "agent.yml"
    path.write_text(
        "storage:\n  cache:\n    type: redis\n    keyPrefix: 'agent:'\n"
        "  database:\n    type: postgres\n    password: $PG_PASSWORD\n"
    )
    config = load_config(str(path))
    assert isinstance(config.database, PostgresDatabaseConfig)
    assert config.database.password is not None
    assert config.database.password.get_secret_value() == CANARY


@pytest.mark.parametrize(
    ("name", "text"),
    [("bad.toml", "[cache\n"), ("bad.yaml", "cache: [\n"), ("bad.ini", "x"), ("list.yaml", "- 1\n")],
)
def test_bad_files_raise_config_error(tmp_path: Path, name: str, text: str) -> None:
    """Unreadable, malformed or mis-shaped files raise ConfigError."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml")


def test_environment_variables() -> None:
    """KVSTORE_CACHE__TYPE-style variables configure each tier; unset tiers keep defaults."""
    config = StorageConfig.from_env(
        {"KVSTORE_CACHE__TYPE": "redis", "KVSTORE_CACHE__PORT": "7000", "KVSTORE_CACHE__KEY_PREFIX": "e:"}
    )
    assert isinstance(config.cache, RedisCacheConfig)
    assert config.cache.port == 7000
    assert config.cache.key_prefix == "e:"
    assert isinstance(config.database, SqliteDatabaseConfig)


def test_environment_mapping_never_touches_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env(mapping) reads only the mapping, ``$VAR`` included, and leaves os.environ as it was."""
    monkeypatch.setenv("KVSTORE_DATABASE__TYPE", "postgres")
    monkeypatch.setenv("DB_PASSWORD", "from-process")
    before = dict(os.environ)
    config = StorageConfig.from_env(
        {
            "KVSTORE_DATABASE__TYPE": "postgres",
            "kvstore_database__password": "$DB_PASSWORD",
            "DB_PASSWORD": "from-mapping",
            "KVSTORE_CACHE__TYPE": "memory",
            "KVSTORE_CACHE__MAX_ENTRIES": "10",
            "OTHER__THING": "ignored",
        }
    )
    assert dict(os.environ) == before
    assert isinstance(config.database, PostgresDatabaseConfig)
    assert config.database.password is not None
    assert config.database.password.get_secret_value() == "from-mapping"
    assert config.cache.max_entries == 10  # type: ignore[union-attr]  # a memory cache
    assert isinstance(StorageConfig.from_env({}).database, SqliteDatabaseConfig)


def test_environment_can_name_a_file(tmp_path: Path) -> None:
    """KVSTORE_CONFIG names a config file."""
    path = tmp_path / "kv.toml"
    path.write_text('[database]\ntype = "memory"\n')
    assert StorageConfig.from_env({"KVSTORE_CONFIG": str(path)}).database.type == "memory"


def test_fallback_entries() -> None:
    """fallback takes type names or full configs, and [] means no fallback."""
    config = load_config(
        {
            "database": {
                "type": "postgres",
                "fallback": [{"type": "sqlite", "path": "/tmp/fb.db"}, "memory"],
            },
            "cache": {"type": "redis", "fallback": []},
        }
    )
    assert isinstance(config.database, PostgresDatabaseConfig)
    assert config.database.fallback is not None
    assert isinstance(config.database.fallback[0], SqliteDatabaseConfig)
    assert config.cache.fallback == []


def test_config_is_frozen() -> None:
    """Configs are immutable values."""
    config = StorageConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.cache.key_prefix = "x"  # type: ignore[misc]  # the point of the test


def test_password_in_the_query_string_is_a_secret_too() -> None:
    """?password= is taken out of the URL like user:password@ is, and redacted wherever URLs are printed."""
    from kvstore._core.urls import redact_url

    config = load_config(
        {"cache": {"type": "redis", "url": f"redis://cache:6379/0?password={CANARY}&ssl_cert_reqs=none"}}
    )
    assert isinstance(config.cache, RedisCacheConfig)
    assert config.cache.url == "redis://cache:6379/0?ssl_cert_reqs=none"
    assert config.cache.password is not None
    assert config.cache.password.get_secret_value() == CANARY
    assert CANARY not in repr(config)
    shown = redact_url(f"postgresql://app@db/app?password={CANARY}")
    assert CANARY not in shown
    assert "***" in shown


def test_a_dollar_in_a_password_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A literal password with a $ fails with advice, without printing any part of the password."""
    monkeypatch.delenv("sw0rd", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config({"database": {"type": "postgres", "password": "pa$sw0rd"}})
    assert "sw0rd" not in str(info.value)
    assert "$$" in str(info.value)


@pytest.mark.parametrize(
    "schema",
    ["s" * 64, "é" * 32, "x\x00y", "", "\ud800"],
    ids=["64-bytes", "64-utf8-bytes", "nul", "empty", "lone-surrogate"],
)
def test_postgres_schema_name_is_checked_at_config_time(schema: str) -> None:
    """A schema over 63 UTF-8 bytes (PostgreSQL would truncate it), with NUL or empty fails validation."""
    with pytest.raises(ConfigError, match=r"database\.postgres\.schema"):
        load_config({"database": {"type": "postgres", "schema": schema}})


def test_postgres_schema_name_of_63_bytes_is_fine() -> None:
    """63 bytes is PostgreSQL's limit exactly (NAMEDATALEN - 1)."""
    config = load_config({"database": {"type": "postgres", "schema": "é" * 31 + "x"}})
    assert isinstance(config.database, PostgresDatabaseConfig)
    assert len(config.database.schema_name.encode()) == 63


@pytest.mark.parametrize("prefix", ["a\x00b", "\ud800", "x\udfff"], ids=["nul", "high-surrogate", "low-surrogate"])
@pytest.mark.parametrize("tier", ["cache", "database"])
def test_key_prefix_with_nul_or_lone_surrogate_is_rejected(tier: str, prefix: str) -> None:
    """key_prefix with NUL or a lone surrogate fails validation, on every tier and backend."""
    with pytest.raises(ConfigError, match="key_prefix"):
        load_config({tier: {"type": "memory", "key_prefix": prefix}})
    backend = "redis" if tier == "cache" else "postgres"
    with pytest.raises(ConfigError, match="key_prefix"):
        load_config({tier: {"type": backend, "key_prefix": prefix}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[]", []),
        ('["memory"]', ["memory"]),
        ('["sqlite", "memory"]', ["sqlite", "memory"]),
        ("sqlite,memory", ["sqlite", "memory"]),
        (" sqlite , memory ", ["sqlite", "memory"]),
        ("memory", ["memory"]),
        ("", []),
    ],
)
def test_fallback_from_the_environment(value: str, expected: list[str]) -> None:
    """KVSTORE_DATABASE__FALLBACK takes a JSON list, a comma-separated list, or '' for []."""
    config = StorageConfig.from_env({"KVSTORE_DATABASE__TYPE": "postgres", "KVSTORE_DATABASE__FALLBACK": value})
    assert config.database.fallback == expected
    cache = StorageConfig.from_env(
        {"KVSTORE_CACHE__TYPE": "redis", "KVSTORE_CACHE__FALLBACK": value.replace("sqlite", "memory")}
    )
    assert cache.cache.fallback == [name.replace("sqlite", "memory") for name in expected]


def test_fallback_from_the_environment_as_full_configs() -> None:
    """A JSON list may hold full fallback configs; bad JSON or unknown names are ConfigError."""
    config = StorageConfig.from_env(
        {
            "KVSTORE_DATABASE__TYPE": "postgres",
            "KVSTORE_DATABASE__FALLBACK": '[{"type": "sqlite", "path": "/tmp/f.db"}]',
        }
    )
    assert config.database.fallback is not None
    assert isinstance(config.database.fallback[0], SqliteDatabaseConfig)
    for bad in ("[sqlite", "redis", '["nosuch"]'):
        with pytest.raises(ConfigError, match=r"(?i)fallback"):
            StorageConfig.from_env({"KVSTORE_DATABASE__TYPE": "postgres", "KVSTORE_DATABASE__FALLBACK": bad})


def test_state_dir_and_degraded_reads_on_every_tier() -> None:
    """state_dir and degraded_reads exist on every tier config (and journal_path is gone)."""
    config = load_config(
        {
            "cache": {"type": "redis", "state_dir": "/tmp/s", "degraded_reads": "strict"},
            "database": {"type": "sqlite", "stateDir": "/tmp/s", "degradedReads": "fallback"},
        }
    )
    assert (config.cache.state_dir, config.cache.degraded_reads) == ("/tmp/s", "strict")
    assert (config.database.state_dir, config.database.degraded_reads) == ("/tmp/s", "fallback")
    with pytest.raises(ConfigError):
        load_config({"database": {"type": "sqlite", "journal_path": "/tmp/j.db"}})
