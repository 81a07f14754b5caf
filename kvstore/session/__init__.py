"""Sessions cached aside over both tiers: `SessionStore` and `AsyncSessionStore`."""

from kvstore.session._store import SessionStore
from kvstore.session._store_async import AsyncSessionStore

__all__ = ["AsyncSessionStore", "SessionStore"]
