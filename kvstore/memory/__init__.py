"""Memory backends: `MemoryCache`, `MemoryDatabase` and their async twins."""

from kvstore.memory._store import MemoryCache, MemoryDatabase
from kvstore.memory._store_async import AsyncMemoryCache, AsyncMemoryDatabase

__all__ = ["AsyncMemoryCache", "AsyncMemoryDatabase", "MemoryCache", "MemoryDatabase"]
