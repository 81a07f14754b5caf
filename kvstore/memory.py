"""Memory backends: `MemoryCache`, `MemoryDatabase` and their async twins."""

from kvstore._async.memory import AsyncMemoryCache, AsyncMemoryDatabase
from kvstore._sync.memory import MemoryCache, MemoryDatabase

__all__ = ["AsyncMemoryCache", "AsyncMemoryDatabase", "MemoryCache", "MemoryDatabase"]
