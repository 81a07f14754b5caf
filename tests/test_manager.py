"""StorageManager basics on the memory tiers: connect, context managers, health."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from kvstore import AsyncStorageManager, BackendUnavailableError, ConfigError, StorageManager
from kvstore._registry import REGISTRY
from kvstore._resilience.chain import fallback_chain
from kvstore.config import load_config

MEMORY = {"cache": {"type": "memory"}, "database": {"type": "memory"}}


def test_sync_manager_round_trip() -> None:
    """The documented shape works: with StorageManager(config) as storage: storage.cache / .database / .health()."""
    with StorageManager(MEMORY) as storage:
        storage.cache.set("session:42", {"user": 7}, ttl=3600)
        storage.database.append("history:42", {"role": "user", "content": "hi"})
        assert storage.database.get_range("history:42", -20, -1) == [{"role": "user", "content": "hi"}]
        report = storage.health()
        assert report.ok
        assert not report.degraded
        assert report.cache.durable is False
        assert report.database.active == "memory"
        assert report.cache.latency_ms is not None


async def test_async_manager_round_trip() -> None:
    """The async manager mirrors the sync one."""
    async with AsyncStorageManager(MEMORY) as storage:
        await storage.cache.set("session:42", {"user": 7}, ttl=3600)
        assert await storage.cache.get("session:42") == {"user": 7}
        assert (await storage.health()).ok


def test_disconnect_is_idempotent_and_closes_tiers() -> None:
    """disconnect closes both tiers; calling it twice is fine; health then needs connect."""
    manager = StorageManager(MEMORY)
    storage = manager.connect()
    assert manager.connect() is storage
    manager.disconnect()
    manager.disconnect()
    with pytest.raises(BackendUnavailableError):
        storage.cache.get("k")
    with pytest.raises(BackendUnavailableError, match="connect"):
        manager.health()


def test_registry_entries_name_twin_classes() -> None:
    """Every registered backend has an async store and its generated sync twin, of the right tier."""
    from kvstore import AsyncCache, AsyncDatabase, Cache, Database
    from kvstore.manager import backend_class
    from kvstore.manager_async import backend_class as async_backend_class

    for (tier, type_), entry in REGISTRY.items():
        sync_cls, async_cls = backend_class(tier, type_), async_backend_class(tier, type_)
        assert async_cls.__name__ == f"Async{sync_cls.__name__}" == entry.name_async
        assert issubclass(async_cls, AsyncCache if tier == "cache" else AsyncDatabase)
        assert issubclass(sync_cls, Cache if tier == "cache" else Database)
        assert entry.config_model().model_fields["type"].default == type_


def test_default_chains() -> None:
    """redis -> memory; postgres -> sqlite -> memory; explicit [] means none."""
    config = load_config({"cache": {"type": "redis"}, "database": {"type": "postgres", "key_prefix": "p:"}})
    assert [c.type for c in fallback_chain("cache", config.cache)] == ["redis", "memory"]
    chain = fallback_chain("database", config.database, fallback_path="/state/postgres-abc/fallback.db")
    assert [c.type for c in chain] == ["postgres", "sqlite", "memory"]
    assert {c.key_prefix for c in chain} == {"p:"}
    assert chain[1].path == "/state/postgres-abc/fallback.db"  # never the embedded default's file
    strict = load_config({"cache": {"type": "redis", "fallback": []}})
    assert [c.type for c in fallback_chain("cache", strict.cache)] == ["redis"]


def test_a_fallback_config_inherits_what_it_does_not_set() -> None:
    """A fallback given as a full config takes the primary's key_prefix, max_value_bytes and
    connect_timeout unless it sets them itself (then its own are kept)."""
    config = load_config(
        {
            "database": {
                "type": "postgres",
                "key_prefix": "tenant-a:",
                "max_value_bytes": 1000,
                "connect_timeout": 0.7,
                "fallback": [
                    {"type": "sqlite", "path": "/elsewhere/fallback.db"},
                    {"type": "memory", "key_prefix": "own:", "max_value_bytes": 50},
                ],
            }
        }
    )
    _, sqlite, memory = fallback_chain("database", config.database, fallback_path="/state/unused.db")
    assert (sqlite.path, sqlite.key_prefix, sqlite.max_value_bytes) == ("/elsewhere/fallback.db", "tenant-a:", 1000)
    assert sqlite.connect_timeout == 0.7
    assert (memory.key_prefix, memory.max_value_bytes, memory.connect_timeout) == ("own:", 50, 0.7)


def _down_tenant(tmp_path: Path, shared: Path, **fields: object) -> dict[str, object]:
    """A tier whose PostgreSQL is refused at connect, naming ``shared`` as its SQLite fallback."""
    return {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": "postgresql://nobody@127.0.0.1:1/none",
            "connect_timeout": 0.5,
            "state_dir": str(tmp_path / "state"),
            "fallback": [{"type": "sqlite", "path": str(shared)}],
            **fields,
        },
    }


@pytest.mark.parametrize(
    ("field", "a", "b"),
    [("key_prefix", "a:", "b:"), ("table_prefix", "tenant_a_", "tenant_b_"), ("schema_name", "a", "b")],
)
def test_a_fallback_file_named_by_two_tenants_serves_the_first_only(tmp_path: Path, field: str, a: str, b: str) -> None:
    """Two tenants differing by one field name the same SQLite fallback file: the second is refused
    at connect (ConfigError naming the file and the other primary, never a password) and never
    reads the first's outage data; the first's processes share it as before."""
    shared = tmp_path / "shared-fallback.db"
    with StorageManager(_down_tenant(tmp_path, shared, **{field: a})) as first:
        assert first.health().database.active == "sqlite"
        first.database.set("secret", "tenant a")
        with pytest.raises(ConfigError, match="serves another primary") as refused:
            StorageManager(_down_tenant(tmp_path, shared, **{field: b})).connect()
        assert str(shared) in str(refused.value)
        assert "nobody@" not in str(refused.value)
        with StorageManager(_down_tenant(tmp_path, shared, **{field: a})) as again:  # the same primary
            assert again.database.get("secret") == "tenant a"
    assert oct((tmp_path / "shared-fallback.db.owner").stat().st_mode & 0o777) == "0o600"


def test_a_tenant_that_loses_the_race_for_a_fallback_file_moves_to_its_next_fallback(
    tmp_path: Path, postgres_url: str
) -> None:
    """Both tenants connected before either had an outage; the other claims the file first: this
    tenant's first outage write goes to its next fallback (memory), never into the other's file."""
    shared = tmp_path / "shared-fallback.db"
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": postgres_url,
            "key_prefix": f"race-{uuid.uuid4().hex[:6]}:",
            "state_dir": str(tmp_path / "state"),
            "fallback": [{"type": "sqlite", "path": str(shared)}, "memory"],
        },
    }
    with StorageManager(config) as late:
        with StorageManager(_down_tenant(tmp_path, shared, key_prefix="other:")) as first:
            first.database.set("k", "other tenant")
        late.database.breaker.trip("outage for the test")  # type: ignore[attr-defined]
        late.database.set("k", "mine")
        assert late.database.active == "memory"  # type: ignore[attr-defined]
        assert late.database.get("k") == "mine"
    with closing(sqlite3.connect(shared)) as raw:
        assert {row[0] for row in raw.execute("SELECT DISTINCT ns FROM kvstore_keys")} == {"other:"}


def test_unreachable_backend_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A refused Redis at connect falls back to memory and logs one warning with the reason."""
    config = {
        "cache": {"type": "redis", "url": "redis://127.0.0.1:1/0", "connect_timeout": 0.5},
        "database": {"type": "memory"},
    }
    with caplog.at_level(logging.WARNING, logger="kvstore"), StorageManager(config) as storage:
        report = storage.health()
        assert report.cache.active == "memory"
        assert report.cache.degraded
        assert report.cache.last_error
        assert report.ok
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "falling back to memory" in warnings[0].getMessage()


def test_no_fallback_raises() -> None:
    """With fallback: [] an unreachable backend raises BackendUnavailableError."""
    config = {
        "cache": {"type": "redis", "url": "redis://127.0.0.1:1/0", "fallback": [], "connect_timeout": 0.5},
        "database": {"type": "memory"},
    }
    with pytest.raises(BackendUnavailableError):
        StorageManager(config).connect()
