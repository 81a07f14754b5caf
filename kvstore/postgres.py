"""PostgreSQL backend: `PostgresDatabase` and `AsyncPostgresDatabase` (needs ``kvstore-sdk[postgres]``)."""

from kvstore._async.postgres import AsyncPostgresDatabase
from kvstore._sync.postgres import PostgresDatabase

__all__ = ["AsyncPostgresDatabase", "PostgresDatabase"]
