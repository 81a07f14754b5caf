"""Fallback chains: which backends a tier tries, in order (I/O-free)."""

from __future__ import annotations

from typing import Any

from kvstore.config import (
    MemoryCacheConfig,
    MemoryDatabaseConfig,
    SqliteDatabaseConfig,
)

__all__ = ["DEFAULT_CHAINS", "EXTRAS", "fallback_chain"]

#: Where each backend falls back to when no explicit ``fallback`` is configured.
DEFAULT_CHAINS: dict[tuple[str, str], tuple[str, ...]] = {
    ("cache", "redis"): ("memory",),
    ("cache", "memory"): (),
    ("database", "postgres"): ("sqlite", "memory"),
    ("database", "sqlite"): ("memory",),
    ("database", "memory"): (),
}

#: backend type -> (extra to install, driver module it needs)
EXTRAS: dict[str, tuple[str, str]] = {
    "redis": ("redis", "redis"),
    "postgres": ("postgres", "psycopg"),
    "sqlite": ("sqlite", "apsw"),
}

_FALLBACK_MODELS: dict[tuple[str, str], Any] = {
    ("cache", "memory"): MemoryCacheConfig,
    ("database", "memory"): MemoryDatabaseConfig,
    ("database", "sqlite"): SqliteDatabaseConfig,
}


def fallback_chain(tier: str, config: Any, *, fallback_path: str | None = None) -> list[Any]:
    """The configs a tier tries in order: ``config`` first, then its fallbacks.

    A fallback given as a type name inherits the primary's ``key_prefix``,
    ``max_value_bytes`` and ``connect_timeout``; a SQLite fallback lives at
    ``fallback_path`` (the primary identity's own file under the state directory),
    never at the embedded default's ``./.kvstore/kvstore.db``.
    """
    entries = config.fallback if config.fallback is not None else DEFAULT_CHAINS[(tier, config.type)]
    chain = [config]
    inherited = {
        "key_prefix": config.key_prefix,
        "max_value_bytes": config.max_value_bytes,
        "connect_timeout": config.connect_timeout,
    }
    for entry in entries:
        if isinstance(entry, str):
            options = dict(inherited)
            if entry == "sqlite":
                if fallback_path is None:
                    raise ValueError("a SQLite fallback needs the path of the primary's state directory")
                options["path"] = fallback_path
            entry = _FALLBACK_MODELS[(tier, entry)](**options)
        chain.append(entry)
    return chain
