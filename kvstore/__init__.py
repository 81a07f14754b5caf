"""kvstore: a two-tier key-value and list store with fallback and health."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvstore._async.base import AsyncCache, AsyncDatabase, AsyncStore, AsyncTypedStore
from kvstore._async.chat import AsyncChatHistory
from kvstore._async.manager import AsyncStorageBackends, AsyncStorageManager
from kvstore._async.memory import AsyncMemoryCache, AsyncMemoryDatabase
from kvstore._async.session import AsyncSessionStore
from kvstore._chat import ChatMessage, ChatPage
from kvstore._health import HealthReport, TierHealth
from kvstore._sync.base import Cache, Database, Store, TypedStore
from kvstore._sync.chat import ChatHistory
from kvstore._sync.manager import StorageBackends, StorageManager
from kvstore._sync.memory import MemoryCache, MemoryDatabase
from kvstore._sync.session import SessionStore
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
    WrongTypeError,
)

if TYPE_CHECKING:
    from kvstore._async.postgres import AsyncPostgresDatabase
    from kvstore._async.redis import AsyncRedisCache
    from kvstore._async.sqlite import AsyncSqliteDatabase
    from kvstore._sync.postgres import PostgresDatabase
    from kvstore._sync.redis import RedisCache
    from kvstore._sync.sqlite import SqliteDatabase

__version__ = "0.1.0"

__all__ = [
    "AsyncCache",
    "AsyncChatHistory",
    "AsyncDatabase",
    "AsyncMemoryCache",
    "AsyncMemoryDatabase",
    "AsyncPostgresDatabase",
    "AsyncRedisCache",
    "AsyncSessionStore",
    "AsyncSqliteDatabase",
    "AsyncStorageBackends",
    "AsyncStorageManager",
    "AsyncStore",
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
    "KVStoreError",
    "MemoryCache",
    "MemoryDatabase",
    "MissingDependencyError",
    "PostgresDatabase",
    "RedisCache",
    "SerializationError",
    "SessionStore",
    "SqliteDatabase",
    "StorageBackends",
    "StorageConfig",
    "StorageManager",
    "Store",
    "TierHealth",
    "TypedStore",
    "ValueTooLargeError",
    "WrongTypeError",
    "__version__",
]

# Backends whose drivers are optional: imported on first access, never by `import kvstore`.
_LAZY = {
    "AsyncRedisCache": "kvstore._async.redis",
    "RedisCache": "kvstore._sync.redis",
    "AsyncSqliteDatabase": "kvstore._async.sqlite",
    "SqliteDatabase": "kvstore._sync.sqlite",
    "AsyncPostgresDatabase": "kvstore._async.postgres",
    "PostgresDatabase": "kvstore._sync.postgres",
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
