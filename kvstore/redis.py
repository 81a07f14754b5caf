"""Redis cache backend: `RedisCache` and `AsyncRedisCache` (needs ``pip install "kvstore-sdk[redis]"``)."""

from kvstore._async.redis import AsyncRedisCache
from kvstore._sync.redis import RedisCache

__all__ = ["AsyncRedisCache", "RedisCache"]
