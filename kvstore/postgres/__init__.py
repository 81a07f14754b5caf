"""PostgreSQL backend: `PostgresDatabase` and `AsyncPostgresDatabase` (needs ``kvstore-sdk[postgres]``)."""

from kvstore.postgres._store import PostgresDatabase
from kvstore.postgres._store_async import AsyncPostgresDatabase

__all__ = ["AsyncPostgresDatabase", "PostgresDatabase"]
