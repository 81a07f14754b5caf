"""Redis cache backend: `RedisCache` and `AsyncRedisCache` (needs ``pip install "kvstore-sdk[redis]"``)."""

from kvstore.redis._store import RedisCache
from kvstore.redis._store_async import AsyncRedisCache

__all__ = ["AsyncRedisCache", "RedisCache"]
