"""Sessions cached aside over both tiers: `SessionStore` and `AsyncSessionStore`."""

from kvstore._async.session import AsyncSessionStore
from kvstore._sync.session import SessionStore

__all__ = ["AsyncSessionStore", "SessionStore"]
