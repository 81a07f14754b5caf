"""Tier identity: every config field is declared identity or not, and the digest follows that."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import kvstore.config as config_module
from kvstore._core.identity import identity_label, tier_identity
from kvstore.config import (
    MemoryCacheConfig,
    MemoryDatabaseConfig,
    PostgresDatabaseConfig,
    RedisCacheConfig,
    SqliteDatabaseConfig,
    _TierConfig,
)

MODELS: list[type[_TierConfig]] = [
    MemoryCacheConfig,
    RedisCacheConfig,
    MemoryDatabaseConfig,
    SqliteDatabaseConfig,
    PostgresDatabaseConfig,
]

#: The config each model is varied from: one field at a time changes below.
BASES: dict[type[_TierConfig], dict[str, Any]] = {
    MemoryCacheConfig: {},
    RedisCacheConfig: {},
    MemoryDatabaseConfig: {},
    SqliteDatabaseConfig: {"path": "/tmp/kvstore-identity/base.db"},
    # dbname given, so the user (libpq's default dbname) does not move the data.
    PostgresDatabaseConfig: {"dbname": "app"},
}

#: A different value for EVERY field of every model (``type`` aside: it has one value per model).
#: A new field without an entry here fails test_every_field_has_a_test_value.
OTHER_VALUES: dict[str, Any] = {
    # _TierConfig
    "key_prefix": "other:",
    "max_value_bytes": 1024,
    "connect_timeout": 9.0,
    "on_outage": "fail",
    "failure_threshold": 7,
    "probe_interval": 3.0,
    "state_dir": "/tmp/kvstore-identity/state",
    "degraded_reads": "strict",
    "fallback": [],
    "max_entries": 10,
    "batching": False,
    # URL-based
    "url": None,  # per model below
    "password": "s3cret",
    # Redis
    "host": "other-host",
    "port": 7000,
    "db": 5,
    "username": "someone",
    "cluster": True,
    "sentinels": ["sentinel-1:26379"],
    "service_name": "other-service",
    "sentinel_username": "watcher",
    "sentinel_password": "s3ntinel",
    "failover_invalidation": "namespace",
    "failover_window": 3.0,
    "tls": True,
    "tls_ca_file": "/etc/ca.pem",
    "tls_cert_file": "/etc/cert.pem",
    "tls_key_file": "/etc/key.pem",
    "tls_verify": False,
    "max_connections": 3,
    "socket_timeout": 2.0,
    "socket_connect_timeout": 2.0,
    "health_check_interval": 0.0,
    # SQLite
    "path": "/tmp/kvstore-identity/other.db",
    "synchronous": "FULL",
    "busy_timeout": 1.0,
    "purge_interval": 5.0,
    # PostgreSQL
    "dbname": "otherdb",
    "user": "someone",
    "sslmode": "verify-full",
    "sslrootcert": "/etc/root.pem",
    "schema_name": "other_schema",
    "table_prefix": "t_",
    "min_size": 0,
    "max_size": 3,
    "pool_timeout": 1.0,
    "max_waiting": 4,
    "statement_timeout": 1.0,
    "call_timeout": 1.5,
    "tcp_user_timeout": 1.0,
    "hosts": ["h1:5432", "h2:5433"],
    "target_session_attrs": "primary",
}
OTHER_URLS: dict[type[_TierConfig], str] = {
    RedisCacheConfig: "redis://other-host:6379/0",
    SqliteDatabaseConfig: "sqlite:////tmp/kvstore-identity/from-url.db",
    PostgresDatabaseConfig: "postgresql://other-host/app",
}


def fields_of(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_every_tier_config_model_is_walked() -> None:
    """Every tier config class in kvstore.config is in MODELS (or is a base of them)."""
    found = {
        obj
        for obj in vars(config_module).values()
        if isinstance(obj, type) and issubclass(obj, _TierConfig) and not obj.__name__.startswith("_")
    }
    assert found == set(MODELS)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_is_declared_identity_or_not(model: type[_TierConfig]) -> None:
    """Each field of the model and of each base is in exactly one of identity_fields / non_identity_fields."""
    for cls in model.__mro__:
        if not (isinstance(cls, type) and issubclass(cls, _TierConfig)):
            continue
        fields = fields_of(cls)
        identity, other = cls.identity_fields, cls.non_identity_fields
        assert not identity & other, f"{cls.__name__}: declared both ways: {sorted(identity & other)}"
        undeclared = fields - identity - other
        assert not undeclared, (
            f"{cls.__name__}: declare {sorted(undeclared)} in identity_fields (changes where data lives) "
            "or non_identity_fields"
        )
        stale = (identity | other) - fields
        # A base may declare fields only its subclasses have ("type", "fallback", "max_entries").
        if cls is model:
            assert not stale, f"{cls.__name__}: declares fields it does not have: {sorted(stale)}"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_test_value(model: type[_TierConfig]) -> None:
    """The tests below vary every field: a new field needs a value in OTHER_VALUES."""
    missing = fields_of(model) - set(OTHER_VALUES) - {"type"}
    assert not missing, f"add a value for {sorted(missing)} to OTHER_VALUES"


def _cases() -> list[tuple[type[_TierConfig], str]]:
    return [(model, name) for model in MODELS for name in sorted(fields_of(model) - {"type"})]


@pytest.mark.parametrize(("model", "name"), _cases(), ids=lambda v: getattr(v, "__name__", v))
def test_one_field_changes_the_identity_exactly_when_declared(model: type[_TierConfig], name: str) -> None:
    """One identity field changed: another identity; one other field (timeout, pool, password): the same."""
    base = model(**BASES[model])
    value = OTHER_URLS[model] if name == "url" else OTHER_VALUES[name]
    changed = model(**{**BASES[model], name: value})
    assert getattr(changed, name) != getattr(base, name) or name == "password"
    if name in model.identity_fields:
        assert tier_identity(changed) != tier_identity(base), f"{model.__name__}.{name} is identity"
        assert identity_label(changed) != identity_label(base)
    else:
        assert tier_identity(changed) == tier_identity(base), f"{model.__name__}.{name} is not identity"
        assert identity_label(changed) == identity_label(base)


def test_identity_is_a_short_stable_digest() -> None:
    """20 lowercase hex digits, the same for equal configs; pinned, since journals are filed under it."""
    config = PostgresDatabaseConfig(url="postgresql://app@127.0.0.1:5432/app", key_prefix="app:")
    digest = tier_identity(config)
    assert re.fullmatch(r"[0-9a-f]{20}", digest)
    assert digest == tier_identity(PostgresDatabaseConfig(url="postgresql://app@127.0.0.1:5432/app", key_prefix="app:"))
    # Changing this value moves every existing journal and fallback file: do it on purpose only.
    assert tier_identity(MemoryCacheConfig()) == "d0677b8a825422bd5b5e"


def test_tiers_and_backends_never_share_an_identity() -> None:
    """A memory cache and a memory database with one prefix differ; so do backends on the same prefix."""
    configs = [
        MemoryCacheConfig(),
        MemoryDatabaseConfig(),
        RedisCacheConfig(),
        SqliteDatabaseConfig(),
        PostgresDatabaseConfig(),
    ]
    assert len({tier_identity(c) for c in configs}) == len(configs)


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("postgresql://app@127.0.0.1:5432/app", {"host": "127.0.0.1", "port": 5432, "dbname": "app", "user": "app"}),
        ("postgresql://app:s3cret@127.0.0.1/app", {"host": "127.0.0.1", "dbname": "app"}),
        ("postgresql://DB.Example.COM/app", {"host": "db.example.com", "dbname": "app"}),
        ("postgresql://app@db", {"host": "db", "dbname": "app"}),  # libpq's default dbname is the user's
        ("postgresql:///app?host=db&port=5433", {"host": "db", "port": 5433, "dbname": "app"}),
        ("postgresql://h2:5433,h1:5432/app", {"url": "postgresql://h1:5432,h2:5433/app"}),
        ("postgresql://h2:5433,h1:5432/app", {"hosts": ["h1", "h2:5433"], "dbname": "app"}),
        ("postgresql://db1/app", {"url": "postgresql://db2/app", "host": "db1"}),  # a field overrides the URL
        ("postgresql://[::1]:5432/app", {"host": "::1", "dbname": "app"}),
    ],
)
def test_postgres_url_and_fields_agree(url: str, fields: dict[str, Any]) -> None:
    """A PostgreSQL URL and the equivalent separate fields give the same identity."""
    assert tier_identity(PostgresDatabaseConfig(url=url)) == tier_identity(PostgresDatabaseConfig(**fields))


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("redis://cache:6380/2", {"host": "cache", "port": 6380, "db": 2}),
        ("rediss://user:pw@Cache:6380/2", {"host": "cache", "port": 6380, "db": 2, "tls": True}),
        ("redis://cache/0?db=2", {"host": "cache", "db": 2}),
        ("redis://", {}),
        ("redis+cluster://node:7000", {"host": "node", "port": 7000, "cluster": True}),
        ("redis+cluster://node:7000/3", {"host": "node", "port": 7000, "cluster": True}),  # a cluster has db 0 only
    ],
)
def test_redis_url_and_fields_agree(url: str, fields: dict[str, Any]) -> None:
    """A Redis URL and the equivalent separate fields give the same identity."""
    assert tier_identity(RedisCacheConfig(url=url)) == tier_identity(RedisCacheConfig(**fields))


def test_redis_socket_and_db_distinguish() -> None:
    """A unix socket is its own place; so is each db and the cluster flag."""
    ids = {
        tier_identity(RedisCacheConfig(url=url))
        for url in ("unix:///tmp/a.sock", "unix:///tmp/b.sock", "redis://h/0", "redis://h/1", "redis+cluster://h")
    }
    assert len(ids) == 5


def test_sqlite_paths_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path, its absolute form and a sqlite:/// URL are one place; ':memory:' is its own."""
    monkeypatch.chdir(tmp_path)
    relative = tier_identity(SqliteDatabaseConfig(path="data/kv.db"))
    assert relative == tier_identity(SqliteDatabaseConfig(path=str(tmp_path / "data" / "kv.db")))
    assert relative == tier_identity(SqliteDatabaseConfig(url="sqlite:///data/kv.db"))
    assert relative == tier_identity(SqliteDatabaseConfig(path="./data/../data/kv.db"))
    memory = tier_identity(SqliteDatabaseConfig(path=":memory:"))
    assert memory == tier_identity(SqliteDatabaseConfig(url="sqlite:///:memory:"))
    assert memory != relative
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert tier_identity(SqliteDatabaseConfig(path="data/kv.db")) != relative  # another file


def test_labels_are_readable_and_hold_no_secret() -> None:
    """identity_label says where the data lives, never the password."""
    postgres = PostgresDatabaseConfig(url="postgresql://app:s3cret-pw@127.0.0.1:5432/app", key_prefix="app:")
    assert identity_label(postgres) == "postgres 127.0.0.1:5432/app schema=public prefix=kvstore_ key_prefix=app:"
    redis = RedisCacheConfig(url="redis://:s3cret-pw@cache:6380/2", key_prefix="sess:")
    assert identity_label(redis) == "redis cache:6380/2 key_prefix=sess:"
    assert identity_label(RedisCacheConfig(url="redis+cluster://n1:7000")) == "redis n1:7000/0 cluster key_prefix=''"
    assert identity_label(SqliteDatabaseConfig(path="/var/lib/app/kv.db")) == "sqlite /var/lib/app/kv.db key_prefix=''"
    assert identity_label(MemoryCacheConfig(key_prefix="a b")) == "memory key_prefix='a b'"
    for config in (postgres, redis):
        assert "s3cret" not in identity_label(config)
        assert "s3cret" not in tier_identity(config)


@pytest.mark.parametrize("parameter", ["hostaddr=10.0.0.1", "service=tenant_a", "options=-csearch_path%3Dother"])
def test_libpq_parameters_that_pick_another_server_change_the_identity(parameter: str) -> None:
    """hostaddr, service and options in a PostgreSQL URL name other data: the identity differs."""
    from kvstore._core.identity import tier_identity
    from kvstore.config import PostgresDatabaseConfig

    plain = PostgresDatabaseConfig(url="postgresql://app@db/app")
    other = PostgresDatabaseConfig(url=f"postgresql://app@db/app?{parameter}")
    assert tier_identity(plain) != tier_identity(other)
