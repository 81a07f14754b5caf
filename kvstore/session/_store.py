# Generated from kvstore/session/_store_async.py by tools/unasync.py: do not edit; edit the async source.
"""`SessionStore`: sessions cached aside over both tiers, with a sliding TTL."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from kvstore._core.ttl import TTL, ttl_ms
from kvstore._core.typed import TypeCodec
from kvstore.base import Cache, Database, Store
from kvstore.errors import BackendUnavailableError

__all__ = ["SessionStore"]

S = TypeVar("S")

logger = logging.getLogger("kvstore")

#: Keys the store remembers to invalidate when the cache comes back (beyond it, cache TTLs bound staleness).
MAX_DIRTY = 100_000


class SessionStore(Generic[S]):
    """Sessions on the database tier (the truth), read through a cache (the speed).

    Five lines for a web app::

        sessions = SessionStore.from_backends(storage, ttl=1800)
        sid = sessions.create({"user": 7})
        data = sessions.get(sid, touch=True)     # sliding expiry
        sessions.delete(sid)                     # log out

    Reads try the cache, then the database, and re-warm the cache; writes go to
    the database first, then the cache. When the cache raises
    `BackendUnavailableError` the store keeps working on the database alone,
    skips the cache for ``cache_retry_after`` seconds, and on its return first
    deletes the cached copies of sessions written meanwhile (in this process;
    elsewhere a cached copy lives at most ``cache_ttl``).

    Args:
        cache: The cache tier, or ``None`` to use the database alone.
        database: The database tier: sessions survive a cache restart.
        model: The session type (default ``dict[str, Any]``), validated on write
            and parsed on read by pydantic.
        ttl: Session lifetime in seconds (default 1 hour), restarted by `touch`.
        cache_ttl: Upper bound of a cached copy's life (default 5 minutes);
            ``None`` for the session's own TTL.
        namespace: First part of the session keys (``session:<id>``).
        cache_retry_after: Seconds the cache is skipped after it failed.
        touch_interval: A session touched again within this many seconds (by
            this process) slides only its cached copy, sparing the database a
            write per request; so a session may expire up to this much before
            ``ttl`` after its last use. Default: a tenth of ``ttl``, at most
            60 s; ``0`` writes the database on every touch.
        clock: Monotonic seconds (tests pass a fake clock).
    """

    @overload
    def __init__(
        self: SessionStore[dict[str, Any]],
        cache: Cache | Store | None,
        database: Database | Store,
        *,
        model: None = None,
        ttl: TTL = 3600,
        cache_ttl: TTL | None = 300,
        namespace: str = "session",
        cache_retry_after: float = 5.0,
        touch_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None: ...

    @overload
    def __init__(
        self,
        cache: Cache | Store | None,
        database: Database | Store,
        *,
        model: type[S] | Any,
        ttl: TTL = 3600,
        cache_ttl: TTL | None = 300,
        namespace: str = "session",
        cache_retry_after: float = 5.0,
        touch_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None: ...

    def __init__(
        self,
        cache: Cache | Store | None,
        database: Database | Store,
        *,
        model: Any = None,
        ttl: TTL = 3600,
        cache_ttl: TTL | None = 300,
        namespace: str = "session",
        cache_retry_after: float = 5.0,
        touch_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ttl_ms(ttl)
        ttl_ms(cache_ttl)
        self.cache = cache
        self.database = database
        self.ttl = ttl
        self.cache_ttl = cache_ttl
        self.namespace = namespace
        self.cache_retry_after = cache_retry_after
        seconds = _seconds(ttl) or 0.0
        self.touch_interval = min(60.0, seconds / 10) if touch_interval is None else touch_interval
        self._touched: dict[str, float] = {}
        self._clock = clock
        self._codec: TypeCodec[S] = TypeCodec(dict[str, Any] if model is None else model)
        self._cache_down_until: float | None = None
        self._dirty: set[str] = set()

    @classmethod
    def from_backends(cls, storage: Any, **options: Any) -> SessionStore[Any]:
        """A store over a manager's connected tiers (``storage.cache`` and ``storage.database``)."""
        return cls(storage.cache, storage.database, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.namespace!r} cache={self.cache!r} database={self.database!r}>"

    def key(self, session_id: str) -> str:
        """The key of a session in both tiers."""
        return f"{self.namespace}:{session_id}"

    @property
    def cache_available(self) -> bool:
        """Whether the cache is used now (``False`` for a while after it failed)."""
        return self.cache is not None and self._cache_down_until is None

    # --- the API ----------------------------------------------------------------------

    def create(self, data: S | Any, *, ttl: TTL | None = None) -> str:
        """Store a new session under a random, unguessable id; return the id."""
        session_id = secrets.token_urlsafe(24)
        self.set(session_id, data, ttl=ttl)
        return session_id

    def get(self, session_id: str, *, touch: bool = False) -> S | None:
        """The session, or ``None``; with ``touch`` its TTL restarts (sliding expiry).

        A cache hit reads and slides the cached copy in one round trip (Redis ``GETEX``);
        the database is slid too unless this process did it less than ``touch_interval`` ago.
        """
        key = self.key(session_id)
        cache = self._usable_cache()
        if cache is not None:
            try:
                raw = cache.get(key, touch=self._cache_seconds(_seconds(self.ttl)) if touch else None)
            except BackendUnavailableError as exc:
                self._cache_failed(exc)
            else:
                if raw is not None:
                    if touch and not self._touched_lately(key) and not self._touch_database(key, self.ttl, cache):
                        return None  # deleted or expired in the database meanwhile
                    return self._codec.load(key, raw)
        if touch and self.ttl is not None:
            raw = self.database.get(key, touch=self.ttl)  # read and slide in one round trip
        else:
            raw = self.database.get(key)
        if raw is None:
            return None
        if touch:
            if self.ttl is None and not self.database.expire(key, None):
                return None  # deleted since the read: nothing to touch, nothing to cache
            self._remember_touch(key)
            remaining = _seconds(self.ttl)
        else:
            remaining = self.database.ttl(key)
            # ``None`` means "no TTL" or "gone": a session that expired after the read must not be
            # cached back for the whole cache TTL.
            if remaining is None and not self.database.exists(key):
                return self._codec.load(key, raw)
        self._cache_set(key, raw, remaining)
        return self._codec.load(key, raw)

    def set(self, session_id: str, data: S | Any, *, ttl: TTL | None = None) -> None:
        """Validate and write the session: the database first, then the cache."""
        key = self.key(session_id)
        raw = self._codec.dump(key, data)
        ttl = self.ttl if ttl is None else ttl
        self.database.set(key, raw, ttl)
        self._remember_touch(key)
        self._cache_set(key, raw, _seconds(ttl))

    def touch(self, session_id: str, ttl: TTL | None = None) -> bool:
        """Restart the session's TTL in both tiers; ``False`` when there is no such session."""
        key = self.key(session_id)
        ttl = self.ttl if ttl is None else ttl
        cache = self._usable_cache()
        if cache is not None and self._touched_lately(key):
            try:
                if cache.expire(key, self._cache_seconds(_seconds(ttl))):
                    return True  # the database was slid less than touch_interval ago
            except BackendUnavailableError as exc:
                self._cache_failed(exc, key)
                cache = None
        found = self._touch_database(key, ttl, cache)
        if found and cache is not None:
            try:
                cache.expire(key, self._cache_seconds(_seconds(ttl)))
            except BackendUnavailableError as exc:
                self._cache_failed(exc, key)
        return found

    def ttl_of(self, session_id: str) -> float | None:
        """Seconds the session has left (from the database), ``None`` when absent."""
        return self.database.ttl(self.key(session_id))

    def delete(self, session_id: str) -> bool:
        """Delete the session everywhere (log out); ``True`` when it existed."""
        key = self.key(session_id)
        self.invalidate(session_id)
        existed = self.database.delete(key)
        self._touched.pop(key, None)
        # Again: a reader that fetched the session before the database delete may have re-warmed the cache.
        self.invalidate(session_id)
        return existed

    def invalidate(self, session_id: str) -> None:
        """Drop the cached copy only: the next read comes from the database."""
        key = self.key(session_id)
        cache = self._usable_cache()
        if cache is None:
            if self.cache is not None:
                self._mark_dirty(key)
            return
        try:
            cache.delete(key)
        except BackendUnavailableError as exc:
            self._cache_failed(exc, key)

    # --- cache bookkeeping ------------------------------------------------------------

    def _cache_seconds(self, remaining: float | None) -> float | None:
        limit = _seconds(self.cache_ttl)
        if remaining is None:
            return limit
        return remaining if limit is None else min(remaining, limit)

    def _cache_set(self, key: str, raw: Any, remaining: float | None) -> None:
        cache = self._usable_cache()
        if cache is None:
            if self.cache is not None:
                self._mark_dirty(key)
            return
        try:
            cache.set(key, raw, self._cache_seconds(remaining))
        except BackendUnavailableError as exc:
            self._cache_failed(exc, key)

    def _usable_cache(self) -> Cache | Store | None:
        """The cache when it may be used now; first invalidates what changed while it was away."""
        if self.cache is None:
            return None
        if self._cache_down_until is not None:
            if self._clock() < self._cache_down_until:
                return None
            self._cache_down_until = None
            logger.info("kvstore sessions: retrying the cache", extra={"kvstore_event": "cache_retry"})
        while self._dirty:
            key = next(iter(self._dirty))
            try:
                self.cache.delete(key)
            except BackendUnavailableError as exc:
                self._cache_failed(exc)
                return None
            self._dirty.discard(key)
        return self.cache

    def _cache_failed(self, exc: BaseException, key: str | None = None) -> None:
        if self._cache_down_until is None:
            logger.warning(
                "kvstore sessions: cache unavailable, using the database alone for %.0f s: %s",
                self.cache_retry_after,
                exc,
                extra={"kvstore_event": "cache_down"},
            )
        self._cache_down_until = self._clock() + self.cache_retry_after
        if key is not None:
            self._mark_dirty(key)

    def _touched_lately(self, key: str) -> bool:
        """Whether this process slid the database copy less than ``touch_interval`` ago."""
        last = self._touched.get(key)
        return last is not None and self._clock() - last < self.touch_interval

    def _touch_database(self, key: str, ttl: TTL, cache: Cache | Store | None) -> bool:
        """Slide the database copy; when it is gone, forget it and drop the cached copy too."""
        if self.database.expire(key, ttl):
            self._remember_touch(key)
            return True
        self._touched.pop(key, None)
        if cache is not None:
            try:
                cache.delete(key)
            except BackendUnavailableError as exc:
                self._cache_failed(exc, key)
        return False

    def _remember_touch(self, key: str) -> None:
        if len(self._touched) >= MAX_DIRTY:
            self._touched.clear()
        self._touched[key] = self._clock()

    def _mark_dirty(self, key: str) -> None:
        if len(self._dirty) < MAX_DIRTY:
            self._dirty.add(key)


def _seconds(ttl: TTL | None) -> float | None:
    ms = ttl_ms(ttl)
    return None if ms is None else ms / 1000
