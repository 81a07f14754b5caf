"""The backend registry: one entry per backend, read by the manager, the URLs, the chains and the lazy imports.

Adding a backend is its package (store + generated twin), its config model and one
`register` call. The entry is data only: nothing here imports a driver.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["REGISTRY", "Backend", "backend_for_scheme", "lookup", "register"]

Tier = Literal["cache", "database"]


@dataclass(frozen=True)
class Backend:
    """One backend of one tier.

    Attributes:
        type: The config ``type`` (also its name in ``fallback`` lists).
        tier: ``"cache"`` or ``"database"``.
        module_async: The module of the async store; the sync twin is the same path without ``_async``.
        name_async: The async class; the sync class is the same name without ``Async``.
        config: ``"module:Class"`` of the config model.
        extra: The pip extra that installs the driver (``None``: no driver needed).
        fallback: The default fallback chain (backend types of the same tier).
        schemes: URL schemes that select this backend.
    """

    type: str
    tier: Tier
    module_async: str
    name_async: str
    config: str
    extra: str | None = None
    fallback: tuple[str, ...] = ()
    schemes: tuple[str, ...] = field(default=())

    @property
    def module(self) -> str:
        """The module of the sync store (generated twin of `module_async`)."""
        return re.sub(r"_async$", "", self.module_async)

    @property
    def name(self) -> str:
        """The sync class name."""
        return self.name_async.removeprefix("Async")

    def config_model(self) -> Any:
        """The config model class."""
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


#: (tier, type) -> entry, in registration order.
REGISTRY: dict[tuple[str, str], Backend] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend`` (replacing an entry of the same tier and type); return it."""
    if backend.tier not in ("cache", "database"):
        raise ValueError(f"tier must be 'cache' or 'database', not {backend.tier!r}")
    REGISTRY[(backend.tier, backend.type)] = backend
    return backend


def lookup(tier: str, type_: str) -> Backend:
    """The entry of backend ``type_`` on ``tier``; `KeyError` naming the known ones."""
    try:
        return REGISTRY[(tier, type_)]
    except KeyError:
        known = ", ".join(t for (tr, t) in REGISTRY if tr == tier)
        raise KeyError(f"no {tier} backend {type_!r} (known: {known})") from None


def backend_for_scheme(scheme: str) -> Backend | None:
    """The backend a URL scheme selects, or ``None``."""
    scheme = scheme.lower()
    return next((b for b in REGISTRY.values() if scheme in b.schemes), None)


register(
    Backend("memory", "cache", "kvstore.memory._store_async", "AsyncMemoryCache", "kvstore.config:MemoryCacheConfig")
)
register(
    Backend(
        "redis",
        "cache",
        "kvstore.redis._store_async",
        "AsyncRedisCache",
        "kvstore.config:RedisCacheConfig",
        extra="redis",
        fallback=("memory",),
        schemes=("redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel", "unix"),
    )
)
register(
    Backend(
        "memory",
        "database",
        "kvstore.memory._store_async",
        "AsyncMemoryDatabase",
        "kvstore.config:MemoryDatabaseConfig",
        schemes=("memory",),
    )
)
register(
    Backend(
        "sqlite",
        "database",
        "kvstore.sqlite._store_async",
        "AsyncSqliteDatabase",
        "kvstore.config:SqliteDatabaseConfig",
        extra="sqlite",
        fallback=("memory",),
        schemes=("sqlite",),
    )
)
register(
    Backend(
        "postgres",
        "database",
        "kvstore.postgres._store_async",
        "AsyncPostgresDatabase",
        "kvstore.config:PostgresDatabaseConfig",
        extra="postgres",
        fallback=("sqlite", "memory"),
        schemes=("postgres", "postgresql"),
    )
)
