# Generated from kvstore/session/_store_async.py by tools/unasync.py: do not edit; edit the async source.
"""`SessionStore`: sessions cached aside over both tiers, with a sliding TTL."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from kvstore._core.keys import validate_namespace
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
        self.namespace = validate_namespace(namespace)
        self.cache_retry_after = cache_retry_after
        seconds = _seconds(ttl) or 0.0
        self.touch_interval = min(60.0, seconds / 10) if touch_interval is None else touch_interval
        #: Key -> (when this process last slid or wrote the database copy, the monotonic time
        #: that copy expires then or ``None``); see `_touched_lately`.
        self._touched: dict[str, tuple[float, float | None]] = {}
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
            # Slid lately by this process, the database copy is not slid now: the cached copy
            # is slid no further than the database copy lives.
            lately = touch and self._touched_lately(key, self.ttl)
            try:
                raw = cache.get(key, touch=self._slide_seconds(key, self.ttl, lately) if touch else None)
            except BackendUnavailableError as exc:
                self._cache_failed(exc)
            except BaseException:
                if touch:  # cancelled: the GETEX may have slid the cached copy, the database copy not
                    self._drop_cached(cache, key)
                raise
            else:
                if raw is not None:
                    if touch and not lately:
                        try:
                            found = self._touch_database(key, self.ttl, cache)
                        except BaseException:
                            self._drop_cached(cache, key)  # the cached copy was slid, the database's maybe not
                            raise
                        if not found:
                            return None  # deleted or expired in the database meanwhile
                    return self._codec.load(key, raw)
        started = self._clock()
        if touch and self.ttl is not None:
            raw = self.database.get(key, touch=self.ttl)  # read and slide in one round trip
        else:
            raw = self.database.get(key)
        if raw is None:
            return None
        if touch:
            if self.ttl is None and not self.database.expire(key, None):
                return None  # deleted since the read: nothing to touch, nothing to cache
            self._remember_touch(key, self.ttl, started)
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
        started = self._clock()
        try:
            self.database.set(key, raw, ttl)
        except BaseException:
            # Maybe written (a lost reply, a cancellation): the cached copy may be the old session.
            if self.cache is not None:
                self._drop_cached(self.cache, key)
            raise
        self._remember_touch(key, ttl, started)
        self._cache_set(key, raw, _seconds(ttl))

    def touch(self, session_id: str, ttl: TTL | None = None) -> bool:
        """Restart the session's TTL in both tiers; ``False`` when there is no such session."""
        key = self.key(session_id)
        ttl = self.ttl if ttl is None else ttl
        cache = self._usable_cache()
        if cache is not None and self._touched_lately(key, ttl):
            try:
                if cache.expire(key, self._slide_seconds(key, ttl, True)):
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
        """Cache what was just read from (or written to) the database, unless it is gone there since.

        Another process may delete the session between this process's database call and its
        cache write, and finish its own cache invalidations before that write lands: the
        database, asked after the write, says whether the cached copy may stay.
        """
        cache = self._usable_cache()
        if cache is None:
            if self.cache is not None:
                self._mark_dirty(key)
            return
        try:
            cache.set(key, raw, self._cache_seconds(remaining))
        except BackendUnavailableError as exc:
            self._cache_failed(exc, key)
            return
        except BaseException:
            self._drop_cached(cache, key)  # cancelled: the cached copy may outlive the database's
            raise
        try:
            there = self.database.exists(key)
        except Exception:
            self._drop_cached(cache, key)  # unknown: the next read comes from the database
            return
        except BaseException:
            self._drop_cached(cache, key)
            raise
        if not there:
            try:
                cache.delete(key)
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

    def _touched_lately(self, key: str, ttl: TTL | None) -> bool:
        """Whether this process slid the database copy less than ``touch_interval`` ago, to
        (nearly) ``ttl``: a slide to ``ttl`` now may then spare the database."""
        seen = self._touched.get(key)
        if seen is None:
            return False
        now = self._clock()
        last, deadline = seen
        if now - last >= self.touch_interval:
            return False
        full = _seconds(ttl)
        if full is None or deadline is None:
            return full is None and deadline is None
        left = deadline - now
        return left >= 0.01 and left >= full - self.touch_interval  # e.g. not a session set with a shorter ttl

    def _slide_seconds(self, key: str, ttl: TTL | None, lately: bool) -> float | None:
        """The TTL of the cached copy slid to ``ttl``: never past the database copy when that was not slid."""
        full = _seconds(ttl)
        seen = self._touched.get(key) if lately else None
        if seen is not None and seen[1] is not None:
            left = seen[1] - self._clock()
            full = left if full is None else min(full, left)
        return self._cache_seconds(full)

    def _drop_cached(self, cache: Cache | Store, key: str) -> None:
        """A call was cut off after a cache write whose database twin is not known: drop the cached copy."""
        self._mark_dirty(key)  # at the latest, this process's next call deletes it

    def _touch_database(self, key: str, ttl: TTL, cache: Cache | Store | None) -> bool:
        """Slide the database copy; when it is gone, forget it and drop the cached copy too."""
        started = self._clock()
        if self.database.expire(key, ttl):
            self._remember_touch(key, ttl, started)
            return True
        self._touched.pop(key, None)
        if cache is not None:
            try:
                cache.delete(key)
            except BackendUnavailableError as exc:
                self._cache_failed(exc, key)
        return False

    def _remember_touch(self, key: str, ttl: TTL | None, started: float) -> None:
        """The database copy was slid or written to ``ttl`` by a call that began at ``started``."""
        if len(self._touched) >= MAX_DIRTY:
            self._touched.clear()
        full = _seconds(ttl)
        self._touched[key] = (started, None if full is None else started + full)

    def _mark_dirty(self, key: str) -> None:
        if len(self._dirty) < MAX_DIRTY:
            self._dirty.add(key)


def _seconds(ttl: TTL | None) -> float | None:
    ms = ttl_ms(ttl)
    return None if ms is None else ms / 1000
