"""Run-time failover: a tier that serves from its fallback while the primary is down.

`AsyncFailoverCache` and `AsyncFailoverDatabase` implement the store interface
over a primary and a fallback store with a `CircuitBreaker`:

* While the breaker is closed every call goes to the primary. Idempotent calls
  are retried (tenacity, a short bounded budget); so are ``append``/``extend``,
  which always carry an idempotency id (the caller's, else a fresh uuid4): a
  retry whose first attempt did land returns that attempt's length instead of
  appending again (DESIGN.md §8a).
  A call that still finds the primary unavailable raises `BackendUnavailableError`
  until ``failure_threshold`` consecutive failures open the breaker; the call
  that opens it, and every call after, is served by the fallback, so once the
  primary is known down no exception reaches the caller.
* While open, calls go straight to the fallback; after ``probe_interval`` one
  call probes the primary (``ping``), and on success the tier fails back:
  the cache invalidates in the primary every key written during the outage (a
  restored Redis would otherwise serve stale values); the database replays its
  outage journal to the primary, in order, before any new call reaches it.
  An append diverted to the fallback is journaled with its idempotency id, and
  replay passes the id on, so a write whose reply was lost before the outage, or
  an entry replayed twice (a crash before the journal forgot it), lands once.
* With ``on_outage="fail"`` writes raise `BackendUnavailableError` instead of
  going to the fallback (reads still fall back).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from kvstore._async.base import AsyncCache, AsyncDatabase
from kvstore._breaker import BreakerState, CircuitBreaker, Route
from kvstore._idempotency import validate_idempotency_id
from kvstore._items import MsetItems, normalize_items
from kvstore._journal import Journal, JournalEntry
from kvstore._keys import validate_key
from kvstore._ttl import TTL, ttl_ms
from kvstore.errors import BackendBusyError, BackendUnavailableError, KVStoreError

__all__ = ["AsyncFailoverCache", "AsyncFailoverDatabase"]

logger = logging.getLogger("kvstore")

OnOutage = Literal["buffer", "fail"]
#: Keys remembered per outage before the cache gives up listing them and clears its prefix on failback.
MAX_TRACKED_KEYS = 100_000
#: Seconds within which a failed idempotent call may be retried on the primary.
RETRY_BUDGET = 0.25


class _AsyncFailover:
    """Routing shared by both tiers: breaker, retries, probe and failback."""

    backend = "failover"
    tier = "tier"

    def __init__(
        self,
        primary: Any,
        fallback: Any,
        *,
        breaker: CircuitBreaker,
        on_outage: OnOutage = "buffer",
        reopen: Callable[[], Awaitable[Any]] | None = None,
        retry_attempts: int = 2,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.on_outage = on_outage
        self.key_prefix = fallback.key_prefix
        self._reopen = reopen
        self._retry_attempts = retry_attempts
        self._outage_lock = asyncio.Lock()
        self.events: dict[str, int] = {"failover": 0, "failback": 0, "replayed": 0}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.active} ({self.breaker.state.value}) prefix={self.key_prefix!r}>"

    @property
    def active(self) -> str:
        """The backend serving calls now."""
        return str(self.active_store.backend)

    @property
    def active_store(self) -> Any:
        """The store serving calls now (the primary, or the fallback during an outage)."""
        if self.breaker.state is BreakerState.CLOSED and self.primary is not None:
            return self.primary
        return self.fallback

    # --- routing ---------------------------------------------------------------------

    async def _on_primary(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], idempotent: bool) -> Any:
        method = getattr(self.primary, name)
        if not idempotent:
            return await method(*args, **kwargs)
        retrying = AsyncRetrying(
            # Retry only failures that came fast (refused, reset): one that used up its
            # deadline is not repeated, so a hung server costs one deadline, not several.
            stop=stop_after_attempt(self._retry_attempts) | stop_after_delay(RETRY_BUDGET),
            wait=wait_exponential(multiplier=0.02, max=0.2) + wait_random(0, 0.02),
            # A busy server (pool exhausted, lock held) already waited out its deadline: not retried.
            retry=retry_if_exception_type(BackendUnavailableError) & retry_if_not_exception_type(BackendBusyError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await method(*args, **kwargs)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _route(self) -> Route:
        route = self.breaker.route()
        if route is Route.PROBE:
            return Route.PRIMARY if await self._probe() else Route.FALLBACK
        return route

    async def _call(self, name: str, *args: Any, idempotent: bool = True, **kwargs: Any) -> Any:
        """A read (or an idempotent op with no outage bookkeeping): primary, else fallback."""
        if await self._route() is Route.PRIMARY:
            try:
                result = await self._on_primary(name, args, kwargs, idempotent)
            except BackendUnavailableError as exc:
                if not self._primary_failed(exc):
                    raise  # not known down yet: the caller hears of it, nothing is diverted
            else:
                self.breaker.success(Route.PRIMARY)
                return result
        return await getattr(self.fallback, name)(*args, **kwargs)

    async def _write(
        self, name: str, keys: list[str] | None, *args: Any, idempotent: bool = True, **kwargs: Any
    ) -> Any:
        """A write: primary, else the fallback with the outage bookkeeping of the tier."""
        if await self._route() is Route.PRIMARY:
            try:
                result = await self._on_primary(name, args, kwargs, idempotent)
            except BackendUnavailableError as exc:
                if not self._primary_failed(exc) or self.on_outage == "fail":
                    raise  # not known down yet (or told to fail): nothing is diverted
            else:
                self.breaker.success(Route.PRIMARY)
                return result
        elif self.on_outage == "fail":
            raise BackendUnavailableError(
                f"the {self.tier} primary is unavailable and on_outage is 'fail': {self.breaker.last_error}",
                backend=self.primary.backend if self.primary is not None else None,
                operation=name,
            )
        async with self._outage_lock:
            if self.breaker.state is BreakerState.CLOSED:
                # Failback finished while we waited: this write belongs to the primary.
                return await getattr(self.primary, name)(*args, **kwargs)
            return await self._write_during_outage(name, keys, args, kwargs)

    async def _write_during_outage(
        self, name: str, keys: list[str] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        raise NotImplementedError

    def _primary_failed(self, exc: BackendUnavailableError) -> bool:
        """Report unavailability to the breaker; whether the primary is now known down.

        A busy primary (`BackendBusyError`) is up: it never counts, and nothing moves.
        """
        if isinstance(exc, BackendBusyError):
            return False
        was_closed = self.breaker.state is BreakerState.CLOSED
        is_open = self.breaker.failure(Route.PRIMARY, str(exc))
        if is_open and was_closed:
            self.events["failover"] += 1
            logger.warning(
                "kvstore %s tier: %s unavailable, serving from %s: %s",
                self.tier,
                getattr(self.primary, "backend", "primary"),
                self.fallback.backend,
                exc,
                extra={"kvstore_event": "failover", "tier": self.tier},
            )
        return is_open

    async def _probe(self) -> bool:
        """Probe the primary once; on success fail back (replay/invalidate) and close the breaker."""
        try:
            if self.primary is None:
                if self._reopen is None:
                    raise BackendUnavailableError(f"the {self.tier} primary was never connected")
                self.primary = await self._reopen()
            await self.primary.ping()
            await self._failback()
        except KVStoreError as exc:
            # Unavailable again, or it cannot be opened at all (e.g. a missing extra): either
            # way the tier stays on its fallback; the caller who happened to probe never hears of it.
            self.breaker.failure(Route.PROBE, str(exc))
            return False
        except BaseException:
            self.breaker.failure(Route.PROBE, "probe interrupted")
            raise
        self.events["failback"] += 1
        logger.warning(
            "kvstore %s tier: %s answers again, failed back from %s",
            self.tier,
            self.primary.backend,
            self.fallback.backend,
            extra={"kvstore_event": "failback", "tier": self.tier},
        )
        return True

    async def _failback(self) -> None:
        """Bring the primary up to date, then close the breaker (holding the outage lock)."""
        raise NotImplementedError

    # --- the store interface ---------------------------------------------------------

    async def get(self, key: str) -> Any:
        return await self._call("get", key)

    async def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        validate_key(key)
        if only_if_absent:
            # A conditional write decided on the fallback (which lacks the primary's data) could
            # acknowledge a lock the primary's owner still holds: it is never buffered.
            return bool(await self._conditional("set", key, value, ttl, only_if_absent=True))
        return bool(await self._write("set", [key], key, value, ttl))

    async def _conditional(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.breaker.state is BreakerState.CLOSED:
            try:
                result = await self._on_primary(name, args, kwargs, True)
            except BackendUnavailableError as exc:
                self._primary_failed(exc)
                raise
            self.breaker.success(Route.PRIMARY)
            return result
        raise BackendUnavailableError(
            f"the {self.tier} primary is unavailable, and a conditional write (only_if_absent) cannot be "
            f"decided on the fallback: {self.breaker.last_error}",
            operation=name,
        )

    async def delete(self, key: str) -> bool:
        validate_key(key)
        return bool(await self._write("delete", [key], key))

    async def exists(self, key: str) -> bool:
        return bool(await self._call("exists", key))

    async def mget(self, keys: Iterable[str]) -> list[Any]:
        return list(await self._call("mget", list(keys)))

    async def mset(self, items: MsetItems) -> None:
        normalized = normalize_items(items)
        triples = [(k, v, None if ms is None else ms / 1000) for k, v, ms in normalized]
        await self._write("mset", [k for k, _, _ in normalized], triples)

    async def iter_keys(self, pattern: str = "*") -> AsyncIterator[str]:
        store = self.primary if await self._route() is Route.PRIMARY else self.fallback
        async for key in store.iter_keys(pattern):
            yield key

    async def keys(self, pattern: str = "*") -> list[str]:
        return list(await self._call("keys", pattern))

    async def clear(self) -> None:
        await self._write("clear", None)

    async def ttl(self, key: str) -> float | None:
        result = await self._call("ttl", key)
        return None if result is None else float(result)

    async def expire(self, key: str, ttl: TTL | None) -> bool:
        validate_key(key)
        ttl_ms(ttl)
        return bool(await self._write("expire", [key], key, ttl))

    async def ping(self) -> None:
        await self.active_store.ping()

    async def aclose(self) -> None:
        for store in (self.primary, self.fallback):
            if store is not None:
                await store.aclose()


class AsyncFailoverCache(_AsyncFailover, AsyncCache):
    """A cache tier with run-time failover (e.g. Redis, then memory)."""

    tier = "cache"

    def __init__(self, primary: AsyncCache | None, fallback: AsyncCache, **options: Any) -> None:
        super().__init__(primary, fallback, **options)
        self._written: set[str] = set()
        self._cleared = False

    async def _write_during_outage(
        self, name: str, keys: list[str] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if keys is None:
            self._cleared = True
        elif not self._cleared:
            self._written.update(keys)
            if len(self._written) > MAX_TRACKED_KEYS:
                self._cleared, self._written = True, set()
        return await getattr(self.fallback, name)(*args, **kwargs)

    async def _failback(self) -> None:
        async with self._outage_lock:
            if self._cleared:
                await self.primary.clear()
            elif self._written:
                keys = sorted(self._written)
                for start in range(0, len(keys), 500):
                    for key in keys[start : start + 500]:
                        await self.primary.delete(key)
            invalidated = "all" if self._cleared else len(self._written)
            self._written, self._cleared = set(), False
            # The fallback's copies are now stale too: the next outage starts empty.
            await self.fallback.clear()
            self.breaker.success(Route.PROBE)  # under the lock: no outage write slips in after
        logger.info(
            "kvstore cache tier: invalidated %s key(s) written during the outage",
            invalidated,
            extra={"kvstore_event": "invalidate", "tier": "cache"},
        )


class AsyncFailoverDatabase(_AsyncFailover, AsyncDatabase):
    """A database tier with run-time failover and an outage journal replayed on failback."""

    tier = "database"

    def __init__(
        self, primary: AsyncDatabase | None, fallback: AsyncDatabase, *, journal: Journal, **options: Any
    ) -> None:
        super().__init__(primary, fallback, **options)
        self.journal = journal
        self._touched: set[str] = set()

    async def _write_during_outage(
        self, name: str, keys: list[str] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # Apply locally first (it validates and encodes), then journal: what is
        # acknowledged is in the journal, and nothing invalid ever is.
        result = await getattr(self.fallback, name)(*args, **kwargs)
        self.journal.record(name, _journal_args(name, args, kwargs), kwargs.get("idempotency_id"))
        return result

    async def _failback(self) -> None:
        if not self.journal.acquire_replay():
            raise BackendUnavailableError("another process is replaying the shared outage journal; probing again later")
        try:
            replayed = await self._replay_pending()
            async with self._outage_lock:
                replayed += await self._replay_pending()
                touched = self._touched
                self._touched = set()
                self.breaker.success(Route.PROBE)  # under the lock: no outage write slips in after
        finally:
            self.journal.release_replay()
        for key in sorted(touched):  # the primary now has these; the fallback's copies would go stale
            await self.fallback.delete(key)
        if replayed:
            self.events["replayed"] += replayed
            logger.warning(
                "kvstore database tier: replayed %d journaled write(s) to %s",
                replayed,
                self.primary.backend,
                extra={"kvstore_event": "replay", "tier": "database", "count": replayed},
            )

    async def _replay_pending(self) -> int:
        """Replay every journaled write in order; an entry the primary refuses for good is dead-lettered."""
        count = 0
        while True:
            if True:  # ASYNC
                entries = await asyncio.to_thread(self.journal.pending)
            else:
                entries = self.journal.pending()
            if not entries:
                return count
            for entry in entries:
                try:
                    await self._replay(entry)
                except BackendUnavailableError:
                    raise  # the primary went away again: stay on the fallback, keep the entry
                except KVStoreError as exc:
                    # e.g. WrongTypeError: the primary's data conflicts with this write. Retrying can
                    # never succeed, and one such entry must not block every later one.
                    self.journal.dead_letter(entry, f"{type(exc).__name__}: {exc}")
                    self.events["dead_letters"] = self.events.get("dead_letters", 0) + 1
                    logger.error(
                        "kvstore database tier: journaled %s of key %r refused by %s, kept as a dead letter in %s: %s",
                        entry.op,
                        exc.key,
                        self.primary.backend,
                        self.journal.path,
                        exc,
                        extra={"kvstore_event": "dead_letter", "tier": "database"},
                    )
                else:
                    self.journal.done(entry.seq)
                    count += 1
            self.journal.acquire_replay()  # heartbeat: a long replay keeps its lease

    async def _replay(self, entry: JournalEntry) -> None:
        args = entry.args
        op = entry.op
        if op in ("set", "expire", "mset"):
            args = _remaining_ttls(op, args, entry.created)
        if op == "set":
            key, value, ttl, only_if_absent = args
            if ttl is not None and ttl <= 0:
                await self.primary.delete(key)
            else:
                await self.primary.set(key, value, ttl, only_if_absent=only_if_absent)
        elif op == "mset":
            live = [(k, v, t) for k, v, t in args if t is None or t > 0]
            for k, _, t in args:
                if t is not None and t <= 0:
                    await self.primary.delete(k)
            if live:
                await self.primary.mset([(k, v, t) if t is not None else (k, v) for k, v, t in live])
        elif op == "expire":
            key, ttl = args
            if ttl is not None and ttl <= 0:
                await self.primary.delete(key)
            else:
                await self.primary.expire(key, ttl)
        elif op == "delete":
            await self.primary.delete(args[0])
        elif op == "clear":
            await self.primary.clear()
        elif op == "append":
            # The write's own idempotency id: applied once however often it is replayed.
            await self.primary.append(args[0], args[1], idempotency_id=entry.id)
        elif op == "extend":
            await self.primary.extend(args[0], args[1], idempotency_id=entry.id)
        else:  # pragma: no cover - the journal only ever records the ops above
            raise AssertionError(f"unknown journal op {op!r}")
        self._touched.update(_journal_keys(op, args))

    async def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        """Append on the active store; see `AsyncDatabase` for ``idempotency_id``.

        Without one a fresh id is made, so this call's own retries (and the journal's
        replay) never duplicate; give your own to make *your* retries safe too.
        """
        validate_key(key)
        idempotency_id = validate_idempotency_id(idempotency_id) or uuid.uuid4().hex
        return int(await self._write("append", [key], key, value, idempotency_id=idempotency_id))

    async def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        """Extend on the active store; ids as for `append`."""
        validate_key(key)
        idempotency_id = validate_idempotency_id(idempotency_id) or uuid.uuid4().hex
        return int(await self._write("extend", [key], key, list(values), idempotency_id=idempotency_id))

    async def get_range(self, key: str, start: int, end: int) -> list[Any]:
        return list(await self._call("get_range", key, start, end))

    async def get_length(self, key: str) -> int:
        return int(await self._call("get_length", key))

    async def aclose(self) -> None:
        await super().aclose()
        self.journal.close()


def _journal_args(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The JSON form of a write's arguments; TTLs become absolute wall-clock expiries."""
    now = time.time()

    def expiry(ttl: TTL | None) -> float | None:
        ms = ttl_ms(ttl)
        return None if ms is None else now + ms / 1000

    if name == "set":
        key, value, ttl = args
        return [key, value, expiry(ttl), bool(kwargs.get("only_if_absent", False))]
    if name == "mset":
        return [[k, v, expiry(t)] for k, v, t in args[0]]
    if name == "expire":
        return [args[0], expiry(args[1])]
    return list(args)


def _remaining_ttls(op: str, args: Any, created: float) -> Any:
    """Turn the journal's absolute expiries back into TTLs left now (<= 0: already expired)."""
    now = time.time()

    def left(expires: float | None) -> float | None:
        return None if expires is None else expires - now

    if op == "set":
        return [args[0], args[1], left(args[2]), args[3]]
    if op == "mset":
        return [[k, v, left(e)] for k, v, e in args]
    return [args[0], left(args[1])]


def _journal_keys(op: str, args: Any) -> list[str]:
    if op == "mset":
        return [item[0] for item in args]
    if op == "clear":
        return []
    return [args[0]]
