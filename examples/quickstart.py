"""Quickstart: both tiers on the embedded default (memory cache + SQLite file), sync and async.

Run: python examples/quickstart.py   (no server needed)
"""

from __future__ import annotations

import asyncio

from kvstore import AsyncStorageManager, StorageManager


def sync_demo() -> None:
    with StorageManager() as storage:
        storage.cache.set("session:42", {"user": 7}, ttl=3600)
        storage.database.append("history:42", {"role": "user", "content": "hi"})
        print("session:", storage.cache.get("session:42"))
        print("last turns:", storage.database.get_range("history:42", -20, -1)[-3:])
        print("health ok:", storage.health().ok)


async def async_demo() -> None:
    async with AsyncStorageManager() as storage:
        await storage.cache.set("session:43", {"user": 8}, ttl=3600)
        await storage.database.append("history:43", {"role": "assistant", "content": "hello"})
        print("async session:", await storage.cache.get("session:43"))
        print("async turns:", await storage.database.get_length("history:43"))


if __name__ == "__main__":
    sync_demo()
    asyncio.run(async_demo())
