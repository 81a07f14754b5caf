# Generated from kvstore/_async/manager.py by tools/unasync.py: do not edit; edit the async source.
"""`StorageManager`: config in, two connected tiers out, with fallback and health."""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kvstore._chain import fallback_chain
from kvstore._health import HealthReport, TierHealth
from kvstore._sync.base import Cache, Database, Store
from kvstore.config import StorageConfig, load_config
from kvstore.errors import BackendUnavailableError, KVStoreError, MissingDependencyError

__all__ = ["StorageBackends", "StorageManager"]

logger = logging.getLogger("kvstore")

#: (tier, backend type) -> (module, class); imported only when chosen.
BACKENDS: dict[tuple[str, str], tuple[str, str]] = {
    ("cache", "memory"): ("kvstore._sync.memory", "MemoryCache"),
    ("cache", "redis"): ("kvstore._sync.redis", "RedisCache"),
    ("database", "memory"): ("kvstore._sync.memory", "MemoryDatabase"),
    ("database", "sqlite"): ("kvstore._sync.sqlite", "SqliteDatabase"),
    ("database", "postgres"): ("kvstore._sync.postgres", "PostgresDatabase"),
}

#: How long `health()` waits for one tier's probe.
HEALTH_TIMEOUT = 1.0


def backend_class(tier: str, backend: str) -> Any:
    """Import and return the class for ``backend`` on ``tier`` (lazy driver import)."""
    module, name = BACKENDS[(tier, backend)]
    return getattr(importlib.import_module(module), name)


@dataclass
class _Tier:
    name: str
    configured: str
    store: Any
    active: str
    last_error: str | None = None


@dataclass
class StorageBackends:
    """The connected tiers: ``.cache``, ``.database`` and ``.health()``."""

    cache: Cache
    database: Database
    _manager: StorageManager = field(repr=False)

    def health(self) -> HealthReport:
        """Health of both tiers (see `StorageManager.health`)."""
        return self._manager.health()


class StorageManager:
    """Reads one config, connects a cache and a database tier, reports their health.

    Args:
        config: A `StorageConfig`, a dict of the same shape, a path to a TOML or
            YAML file, or ``None`` for ``KVSTORE_*`` environment variables and
            otherwise the embedded default (memory cache, SQLite database in
            ``./.kvstore/kvstore.db``).

    When a backend cannot be reached (or its extra is not installed) the tier
    falls back along its chain (``redis -> memory``, ``postgres -> sqlite ->
    memory``, ``sqlite -> memory``) and logs one warning; with ``fallback: []``
    it raises `BackendUnavailableError` instead.
    """

    def __init__(self, config: StorageConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None) -> None:
        self.config = load_config(config)
        self._tiers: dict[str, _Tier] = {}
        self._backends: StorageBackends | None = None

    def __repr__(self) -> str:
        state = "connected" if self._backends else "not connected"
        return f"<{type(self).__name__} cache={self.config.cache.type} database={self.config.database.type} {state}>"

    @property
    def backends(self) -> StorageBackends:
        """The connected tiers; raises `BackendUnavailableError` before `connect`."""
        if self._backends is None:
            raise BackendUnavailableError("the storage manager is not connected; call connect() first")
        return self._backends

    def connect(self) -> StorageBackends:
        """Connect both tiers (idempotent) and return them."""
        if self._backends is not None:
            return self._backends
        cache = self._open_tier("cache", self.config.cache)
        try:
            database = self._open_tier("database", self.config.database)
        except BaseException:
            cache.store.close()  # roll back what was opened
            raise
        self._tiers = {"cache": cache, "database": database}
        self._backends = StorageBackends(cache.store, database.store, self)
        return self._backends

    def _open_tier(self, tier: str, config: Any) -> _Tier:
        chain = fallback_chain(tier, config)
        reasons: list[str] = []
        for position, candidate in enumerate(chain):
            try:
                store = backend_class(tier, candidate.type).from_config(candidate)
            except (BackendUnavailableError, MissingDependencyError) as exc:
                reasons.append(f"{candidate.type}: {exc}")
                if position + 1 == len(chain):
                    if len(chain) == 1:
                        raise
                    raise BackendUnavailableError(
                        f"no {tier} backend could be connected ({'; '.join(reasons)})", backend=candidate.type
                    ) from exc
                logger.warning(
                    "kvstore %s tier: %s unavailable, falling back to %s: %s",
                    tier,
                    candidate.type,
                    chain[position + 1].type,
                    exc,
                    extra={"kvstore_event": "fallback", "tier": tier, "backend": candidate.type},
                )
                continue
            return _Tier(tier, config.type, store, candidate.type, "; ".join(reasons) or None)
        raise AssertionError("unreachable: a chain has at least one backend")

    def disconnect(self) -> None:
        """Close both tiers. Idempotent."""
        tiers, self._tiers, self._backends = self._tiers, {}, None
        for state in tiers.values():
            state.store.close()

    def health(self) -> HealthReport:
        """Probe both tiers (each within its own deadline) and report."""
        tiers = self._tiers or {}
        if not tiers:
            raise BackendUnavailableError("the storage manager is not connected; call connect() first")
        return HealthReport(
            cache=self._probe(tiers["cache"]),
            database=self._probe(tiers["database"]),
        )

    def _probe(self, state: _Tier) -> TierHealth:
        store: Store = state.store
        error = state.last_error
        latency: float | None = None
        start = time.perf_counter()
        try:
            store.ping()
            latency = (time.perf_counter() - start) * 1000
            healthy = True
        except (KVStoreError, TimeoutError) as exc:
            healthy = False
            error = str(exc) or type(exc).__name__
        return TierHealth(
            tier=state.name,
            configured=state.configured,
            active=state.active,
            healthy=healthy,
            degraded=state.active != state.configured,
            durable=store.durable,
            latency_ms=latency,
            last_error=error,
        )

    def __enter__(self) -> StorageBackends:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()
