"""kvstore: a two-tier key-value and list store with fallback and health."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvstore._core.health import HealthReport, TierHealth
from kvstore._core.watch import ListItem
from kvstore._registry import REGISTRY
from kvstore.base import Cache, Database, Store, Subscription, TypedStore
from kvstore.base_async import AsyncCache, AsyncDatabase, AsyncStore, AsyncSubscription, AsyncTypedStore
from kvstore.chat._history import ChatHistory
from kvstore.chat._history_async import AsyncChatHistory
from kvstore.chat._message import ChatMessage, ChatPage
from kvstore.config import StorageConfig
from kvstore.errors import (
    BackendBusyError,
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    InvalidKeyError,
    KVStoreError,
    MissingDependencyError,
    SerializationError,
    ValueTooLargeError,
    WatchRestartError,
    WrongTypeError,
)
from kvstore.manager import StorageBackends, StorageManager
from kvstore.manager_async import AsyncStorageBackends, AsyncStorageManager
from kvstore.memory._store import MemoryCache, MemoryDatabase
from kvstore.memory._store_async import AsyncMemoryCache, AsyncMemoryDatabase
from kvstore.queue import AsyncQueue, Job, LeaseLostError, Queue, QueueStats
from kvstore.session._store import SessionStore
from kvstore.session._store_async import AsyncSessionStore
from kvstore.telemetry import StorageStats, StoreStats, TierStats, instrument  # never imports opentelemetry

if TYPE_CHECKING:
    from kvstore.postgres._store import PostgresDatabase
    from kvstore.postgres._store_async import AsyncPostgresDatabase
    from kvstore.redis._store import RedisCache
    from kvstore.redis._store_async import AsyncRedisCache
    from kvstore.sqlite._store import SqliteDatabase
    from kvstore.sqlite._store_async import AsyncSqliteDatabase

__version__ = "0.1.0"

__all__ = [
    "AsyncCache",
    "AsyncChatHistory",
    "AsyncDatabase",
    "AsyncMemoryCache",
    "AsyncMemoryDatabase",
    "AsyncPostgresDatabase",
    "AsyncQueue",
    "AsyncRedisCache",
    "AsyncSessionStore",
    "AsyncSqliteDatabase",
    "AsyncStorageBackends",
    "AsyncStorageManager",
    "AsyncStore",
    "AsyncSubscription",
    "AsyncTypedStore",
    "BackendBusyError",
    "BackendUnavailableError",
    "Cache",
    "ChatHistory",
    "ChatMessage",
    "ChatPage",
    "ClosedError",
    "ConfigError",
    "Database",
    "HealthReport",
    "InvalidKeyError",
    "Job",
    "KVStoreError",
    "LeaseLostError",
    "ListItem",
    "MemoryCache",
    "MemoryDatabase",
    "MissingDependencyError",
    "PostgresDatabase",
    "Queue",
    "QueueStats",
    "RedisCache",
    "SerializationError",
    "SessionStore",
    "SqliteDatabase",
    "StorageBackends",
    "StorageConfig",
    "StorageManager",
    "StorageStats",
    "Store",
    "StoreStats",
    "Subscription",
    "TierHealth",
    "TierStats",
    "TypedStore",
    "ValueTooLargeError",
    "WatchRestartError",
    "WrongTypeError",
    "__version__",
    "instrument",
]

# Backends whose drivers are optional: imported on first access, never by `import kvstore`.
_LAZY = {
    name: module
    for entry in REGISTRY.values()
    if entry.extra is not None
    for name, module in ((entry.name_async, entry.module_async), (entry.name, entry.module))
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kvstore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
