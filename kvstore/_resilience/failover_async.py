"""Run-time failover: a tier that serves from its fallback while the primary is down.

`AsyncFailoverCache` and `AsyncFailoverDatabase` implement the store interface
over a primary and a fallback with a `CircuitBreaker` (DESIGN.md §8):

* While the breaker is closed every call goes to the primary. Idempotent calls
  (and appends, which always carry an idempotency id) are retried within a short
  budget. A call that still finds the primary unavailable raises
  `BackendUnavailableError` until ``failure_threshold`` consecutive failures open
  the breaker; the call that opens it, and every call after, is served without the
  primary. A busy primary (`BackendBusyError`: pool exhausted, lock held) is up:
  it is never retried here, never counted, and nothing moves.
* The database tier journals every outage write (a typed record, see
  ``kvstore._resilience.records_async``) before it mirrors it onto the fallback, both in one
  task that a cancelled caller cannot interrupt. Degraded reads answer from the
  journal what this outage wrote (read-your-writes) and raise
  `BackendUnavailableError` for what only the primary knows — unless
  ``degraded_reads`` says to answer from the fallback (the default when the
  primary never served this process: the embedded demo, a laptop).
* After ``probe_interval`` one call probes the primary; on success the cache
  invalidates in the primary every key written during the outage, and the
  database replays its journal in order, skipping (and keeping, as a conflict)
  any write whose keys another instance changed after it was made.
* With ``on_outage="fail"`` writes raise instead of being buffered.

Operations whose outage outcome depends on what only the primary knows are decided
from the journal or refused: ``set(only_if_absent=True)`` always needs the primary;
``incr`` is answered when this outage wrote the key (see `IncrRecord`), else refused.
``delete_many``, ``get(touch=)`` and ``trim`` are journaled like ``delete``, ``expire``
and an ordered list write (see each method and ``records_async``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from tenacity import AsyncRetrying

from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES, decode, encode
from kvstore._core.idempotency import validate_idempotency_id
from kvstore._core.items import LowerBound, MsetItems, normalize_items
from kvstore._core.keys import validate_key, validate_keys
from kvstore._core.lists import check_index, lrange_bounds
from kvstore._core.ttl import TTL, ttl_ms
from kvstore._core.watch import ListItem, check_poll_interval
from kvstore._resilience.breaker import BreakerState, CircuitBreaker, Route
from kvstore._resilience.journal import JOURNAL_TIMEOUT, LEASE_SECONDS, Journal, JournalEntry
from kvstore._resilience.records_async import (
    AppendRecord,
    ClearRecord,
    DeleteManyRecord,
    DeleteRecord,
    ExpireRecord,
    IncrRecord,
    KeyView,
    MsetRecord,
    SetRecord,
    TrimRecord,
    WriteRecord,
    decode_record,
    seconds_left,
)
from kvstore._resilience.retry import IDEMPOTENT_CALL
from kvstore.base_async import (
    MAX_INT,
    AsyncCache,
    AsyncDatabase,
    AsyncSubscription,
    check_incr_by,
    holds_list,
    holds_value,
    not_an_integer,
)
from kvstore.errors import BackendBusyError, BackendUnavailableError, ClosedError, KVStoreError, WatchRestartError

__all__ = ["AsyncFailoverCache", "AsyncFailoverDatabase"]

logger = logging.getLogger("kvstore")

T = TypeVar("T")
OnOutage = Literal["buffer", "fail"]
DegradedReads = Literal["auto", "strict", "fallback"]
#: Keys remembered per outage before the cache gives up listing them and clears its prefix on failback.
MAX_TRACKED_KEYS = 100_000


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
        key_prefix: str | None = None,
        on_outage: OnOutage = "buffer",
        reopen: Callable[[], Awaitable[Any]] | None = None,
        retry_attempts: int = 2,
    ) -> None:
        self.primary = primary
        self._fallback = fallback
        self.breaker = breaker
        self.on_outage = on_outage
        self.key_prefix = key_prefix if key_prefix is not None else fallback.key_prefix
        self._reopen = reopen
        self._retry_attempts = retry_attempts
        self._locks_pid = -1
        #: Whether the primary has answered this process (degraded reads are strict from then on).
        self.served = primary is not None
        self.events: dict[str, int] = {"failover": 0, "failback": 0, "replayed": 0, "conflicts": 0, "dead_letters": 0}
        #: Set when `aclose` begins: a `ClosedError` of the primary from then on is this tier's own doing.
        self._closing = False
        if True:  # ASYNC
            #: The number of the last failed batch of gets counted by the breaker (`_primary_failed`).
            self._counted_batch = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.active} ({self.breaker.state.value}) prefix={self.key_prefix!r}>"

    def _locks(self) -> None:
        """(Re)make the locks in a new process: a forked child must not inherit a parent's held lock."""
        self._locks_pid = os.getpid()
        self._outage = asyncio.Lock()
        self._fallback_opening = asyncio.Lock()

    @property
    def _outage_lock(self) -> asyncio.Lock:
        """Serialises outage writes with failback (one per process)."""
        if self._locks_pid != os.getpid():
            self._locks()
        return self._outage

    @property
    def _fallback_lock(self) -> asyncio.Lock:
        if self._locks_pid != os.getpid():
            self._locks()
        return self._fallback_opening

    @property
    def fallback(self) -> Any:
        """The fallback store (``None`` until the first outage needs it, for the database tier)."""
        return self._fallback

    @property
    def active(self) -> str:
        """The backend serving calls now."""
        if self.breaker.state is BreakerState.CLOSED and self.primary is not None:
            return str(self.primary.backend)
        return str(self._fallback.backend) if self._fallback is not None else self._fallback_name

    _fallback_name = "fallback"

    @property
    def active_store(self) -> Any:
        """The store serving calls now (the primary, or the fallback during an outage)."""
        if self.breaker.state is BreakerState.CLOSED and self.primary is not None:
            return self.primary
        return self._fallback

    @property
    def active_durable(self) -> bool:
        """Whether what this tier acknowledges now survives a restart."""
        store = self.active_store
        return bool(store.durable) if store is not None else True

    # --- routing ---------------------------------------------------------------------

    async def _on_primary(self, call: Callable[[Any], Awaitable[T]], idempotent: bool) -> T:
        # The healthy path is one plain call: the retry machinery is built only after a failure.
        started = time.monotonic()
        try:
            return await call(self.primary)
        except BackendBusyError:
            raise  # a busy server already waited out its deadline: not retried
        except ClosedError:
            raise  # a closed store stays closed: not retried
        except BackendUnavailableError:
            # Retry only failures that came fast (refused, reset): one that used up its
            # deadline is not repeated, so a hung server costs one deadline, not several.
            if not idempotent or self._retry_attempts < 2 or time.monotonic() - started >= IDEMPOTENT_CALL.deadline:
                raise
        retrying = AsyncRetrying(**IDEMPOTENT_CALL.within(attempts=self._retry_attempts - 1).options())
        async for attempt in retrying:
            with attempt:
                return await call(self.primary)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _route(self) -> Route:
        route = self.breaker.route()
        if route is Route.PROBE:
            return Route.PRIMARY if await self._probe() else Route.FALLBACK
        return route

    async def _primary(
        self, call: Callable[[Any], Awaitable[T]], *, idempotent: bool = True, divert_unknown: bool = True
    ) -> tuple[bool, T | None]:
        """``(True, result)`` from the primary, or ``(False, None)`` once it is known down.

        Before the breaker opens, unavailability reaches the caller and nothing is
        diverted; a busy primary always reaches the caller. Without ``divert_unknown`` a
        call that reached the primary and failed is never diverted, even when its failure
        opens the breaker: a lost reply leaves its outcome unknown (the primary may have
        applied it), so a non-idempotent write journaled now would be applied twice on replay.
        """
        breaker = self.breaker
        if breaker.state is not BreakerState.CLOSED and await self._route() is not Route.PRIMARY:
            return False, None
        try:
            result = await self._on_primary(call, idempotent)
        except BackendUnavailableError as exc:
            if not self._primary_failed(exc) or not divert_unknown:
                raise
            return False, None
        breaker.success(Route.PRIMARY)
        return True, result

    def _primary_failed(self, exc: BackendUnavailableError) -> bool:
        """Report unavailability to the breaker; whether the primary is now known down.

        A busy primary (`BackendBusyError`) is up: it never counts, and nothing moves. Nor
        does a primary this tier closed (`ClosedError` once `aclose` began, also for a call
        in flight): its own shutdown is no outage, to count, fall back to or journal. A
        primary closed by anyone else, the tier still open, is unavailable like any other.
        """
        if isinstance(exc, BackendBusyError) or (self._closing and isinstance(exc, ClosedError)):
            return False
        if True:  # ASYNC
            # The callers of one batch of gets (kvstore._core.batching) each get a copy of its
            # round trip's failure: one failure of the primary, counted once, as unbatched calls.
            failure = getattr(exc, "batch_failure", 0)
            if failure:
                if failure == self._counted_batch:
                    return self.breaker.state is not BreakerState.CLOSED
                self._counted_batch = failure
        was_closed = self.breaker.state is BreakerState.CLOSED
        is_open = self.breaker.failure(Route.PRIMARY, str(exc))
        if is_open and was_closed:
            self.events["failover"] += 1
            logger.warning(
                "kvstore %s tier: %s unavailable, serving from %s: %s",
                self.tier,
                getattr(self.primary, "backend", "primary"),
                self._fallback_name if self._fallback is None else self._fallback.backend,
                exc,
                extra={"kvstore_event": "failover", "tier": self.tier},
            )
        return is_open

    def _refuse_write(self, operation: str) -> None:
        """With ``on_outage="fail"`` an outage write raises instead of being buffered."""
        if self.on_outage == "fail":
            raise BackendUnavailableError(
                f"the {self.tier} primary is unavailable and on_outage is 'fail': {self.breaker.last_error}",
                backend=getattr(self.primary, "backend", None),
                operation=operation,
            )

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
        self.served = True
        self.events["failback"] += 1
        logger.warning(
            "kvstore %s tier: %s answers again, failed back from %s",
            self.tier,
            self.primary.backend,
            self._fallback_name if self._fallback is None else self._fallback.backend,
            extra={"kvstore_event": "failback", "tier": self.tier},
        )
        return True

    async def _failback(self) -> None:
        """Bring the primary up to date, then close the breaker (holding the outage lock)."""
        raise NotImplementedError

    async def _conditional_set(self, key: str, value: Any, ttl: TTL | None) -> bool:
        """``set(only_if_absent=True)``: decided by the primary only, never buffered.

        A conditional write decided on the fallback (which lacks the primary's data)
        could acknowledge a lock the primary's owner still holds.
        """
        served, result = await self._primary(lambda p: p.set(key, value, ttl, only_if_absent=True))
        if served:
            return bool(result)
        raise BackendUnavailableError(
            f"the {self.tier} primary is unavailable, and a conditional write (only_if_absent) cannot be "
            f"decided on the fallback: {self.breaker.last_error}",
            operation="set",
            key=key,
        )

    async def reach_primary(self) -> Any:
        """The primary store, or ``None`` while this process has never reached it.

        For what runs on the primary alone and never fails over (a job queue). A primary
        that was down at connect is opened here when a probe is due, as any call of the
        tier would open it (the probe also fails back).
        """
        if self.primary is None and self.breaker.state is not BreakerState.CLOSED:
            await self._route()
        return self.primary

    async def ping(self) -> None:
        store = self.active_store
        if store is None:
            raise BackendUnavailableError(f"the {self.tier} primary is unavailable: {self.breaker.last_error}")
        await store.ping()

    async def aclose(self) -> None:
        self._closing = True
        for store in (self.primary, self._fallback):
            if store is not None:
                await store.aclose()


class AsyncFailoverCache(_AsyncFailover, AsyncCache):
    """A cache tier with run-time failover (e.g. Redis, then memory).

    A cache miss during an outage is a legal answer for a cache, so reads are
    served by the fallback; on failback every key written during the outage is
    invalidated in the primary (a restored Redis would otherwise serve stale values).

    The newer operations follow the same rules: ``incr`` during an outage counts on
    the fallback (from 0 for a key the outage did not write, as after an eviction) and
    its key is invalidated on failback; ``delete_many`` deletes on the fallback and
    invalidates its keys; ``get(key, touch=)`` is a read: it slides the TTL of the
    fallback's copy only (the primary's copy is not stale, at worst it expires
    earlier: a miss), so nothing is invalidated and ``on_outage="fail"`` allows it.
    """

    tier = "cache"

    def __init__(self, primary: AsyncCache | None, fallback: AsyncCache, **options: Any) -> None:
        super().__init__(primary, fallback, **options)
        self._written: set[str] = set()
        self._cleared = False

    async def _write(
        self, keys: list[str] | None, call: Callable[[Any], Awaitable[T]], operation: str, idempotent: bool = True
    ) -> T:
        served, result = await self._primary(call, idempotent=idempotent)
        if served:
            return result  # type: ignore[return-value]  # served: the primary's own result
        self._refuse_write(operation)
        async with self._outage_lock:
            if self.breaker.state is BreakerState.CLOSED:
                return await call(self.primary)  # failback finished while we waited
            if keys is None:
                self._cleared = True
            elif not self._cleared:
                self._written.update(keys)
                if len(self._written) > MAX_TRACKED_KEYS:
                    self._cleared, self._written = True, set()
            return await call(self._fallback)

    async def _read(self, call: Callable[[Any], Awaitable[T]]) -> T:
        served, result = await self._primary(call)
        if served:
            return result  # type: ignore[return-value]  # served: the primary's own result
        return await call(self._fallback)

    async def get(self, key: str, *, touch: TTL | None = None) -> Any:
        if touch is None:
            return await self._read(lambda s: s.get(key))
        return await self._read(lambda s: s.get(key, touch=touch))

    async def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        validate_key(key)
        if only_if_absent:
            return await self._conditional_set(key, value, ttl)
        return bool(await self._write([key], lambda s: s.set(key, value, ttl), "set"))

    async def delete(self, key: str) -> bool:
        validate_key(key)
        return bool(await self._write([key], lambda s: s.delete(key), "delete"))

    async def delete_many(self, keys: Iterable[str]) -> int:
        names = validate_keys(keys)
        return int(await self._write(names, lambda s: s.delete_many(names), "delete_many"))

    async def incr(self, key: str, by: int = 1) -> int:
        validate_key(key)
        # Not idempotent: never retried on the primary (a lost reply would count twice).
        return int(await self._write([key], lambda s: s.incr(key, by), "incr", idempotent=False))

    async def exists(self, key: str) -> bool:
        return bool(await self._read(lambda s: s.exists(key)))

    async def mget(self, keys: Iterable[str]) -> list[Any]:
        keys = validate_keys(keys)
        return list(await self._read(lambda s: s.mget(keys)))

    async def mset(self, items: MsetItems) -> None:
        normalized = normalize_items(items)
        triples = [(k, v, None if ms is None else ms / 1000) for k, v, ms in normalized]
        await self._write([k for k, _, _ in normalized], lambda s: s.mset(triples), "mset")

    async def iter_keys(self, pattern: str = "*") -> AsyncIterator[str]:
        store = self.primary if await self._route() is Route.PRIMARY else self._fallback
        async for key in store.iter_keys(pattern):
            yield key

    async def keys(self, pattern: str = "*") -> list[str]:
        return list(await self._read(lambda s: s.keys(pattern)))

    async def clear(self) -> None:
        await self._write(None, lambda s: s.clear(), "clear")

    async def ttl(self, key: str) -> float | None:
        result = await self._read(lambda s: s.ttl(key))
        return None if result is None else float(result)

    async def expire(self, key: str, ttl: TTL | None) -> bool:
        validate_key(key)
        ttl_ms(ttl)
        return bool(await self._write([key], lambda s: s.expire(key, ttl), "expire"))

    async def publish(self, channel: str, message: Any) -> int:
        """`AsyncCache.publish` on the store serving now (during an outage: this process's fallback only)."""
        result: int = await self._read(lambda s: s.publish(channel, message))
        return result

    async def subscribe(self, channel: str) -> AsyncSubscription:
        """`AsyncCache.subscribe` on the store serving now (a subscription stays on the store it began on)."""
        result: AsyncSubscription = await self._read(lambda s: s.subscribe(channel))
        return result

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
            await self._fallback.clear()
            self.breaker.success(Route.PROBE)  # under the lock: no outage write slips in after
        logger.info(
            "kvstore cache tier: invalidated %s key(s) written during the outage",
            invalidated,
            extra={"kvstore_event": "invalidate", "tier": "cache"},
        )


class AsyncFailoverDatabase(_AsyncFailover, AsyncDatabase):
    """A database tier with run-time failover, an outage journal and truthful degraded reads.

    Args:
        primary: The configured store (``None`` when it could not be reached at connect).
        fallback: The fallback store, or ``None`` to open it with ``open_fallback``
            on the first outage (nothing touches the filesystem while the primary is healthy).
        journal_path: The outage journal of this primary identity, created on the first outage.
        open_fallback: Opens the fallback store when first needed.
        degraded_reads: ``"strict"``, ``"fallback"`` or ``"auto"`` (see the config reference).
        max_value_bytes: The tier's value size limit (outage writes are checked before journaling).
    """

    tier = "database"
    tracks_changes = False

    def __init__(
        self,
        primary: AsyncDatabase | None,
        fallback: AsyncDatabase | None,
        *,
        journal_path: str | Path,
        open_fallback: Callable[[], Awaitable[AsyncDatabase]] | None = None,
        degraded_reads: DegradedReads = "auto",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        fallback_name: str = "fallback",
        fallback_path: str | Path | None = None,
        owns_fallback: bool = True,
        **options: Any,
    ) -> None:
        if fallback is None and open_fallback is None:
            raise ValueError("a failover database needs a fallback store or a way to open one")
        super().__init__(primary, fallback, **options)
        self.journal_path = Path(journal_path)
        self._journal: Journal | None = None
        self._open_fallback = open_fallback
        self._fallback_name = fallback_name
        #: The fallback's file when it is one (checked before emptying a fallback not opened here).
        self.fallback_path = None if fallback_path is None else Path(fallback_path)
        #: Whether the fallback is this tier's own (emptied after a replay) or a configured file left alone.
        self.owns_fallback = owns_fallback
        self.degraded_reads = degraded_reads
        self.max_value_bytes = max_value_bytes
        if True:  # ASYNC
            #: Outage writes running in their own task (their callers may have been cancelled).
            self._in_flight: set[asyncio.Future[Any]] = set()

    # --- journal and fallback, both created on first need ----------------------------

    @property
    def journal(self) -> Journal | None:
        """The outage journal, when one exists for this primary (opened if another process made it)."""
        if self._journal is None and self.journal_path.exists():
            self._journal = Journal(self.journal_path)
        return self._journal

    async def _existing_journal(self) -> Journal | None:
        """`journal`, opened off the event loop (another connection may hold its lock)."""
        if self._journal is not None or not self.journal_path.exists():
            return self._journal
        return await self._journal_call(lambda: self.journal)

    async def _journal_for_write(self) -> Journal:
        journal = await self._existing_journal()
        if journal is None:
            journal = await self._journal_call(Journal.create, self.journal_path)
            self._journal = journal
        return journal

    async def _fallback_store(self) -> AsyncDatabase:
        if self._fallback is None:
            async with self._fallback_lock:
                if self._fallback is None:
                    assert self._open_fallback is not None
                    self._fallback = await self._open_fallback()
        return self._fallback  # type: ignore[no-any-return]

    def _reads_from_fallback(self) -> bool:
        mode = self.degraded_reads
        return mode == "fallback" or (mode == "auto" and not self.served)

    # --- outage writes -----------------------------------------------------------------

    async def _buffer(self, record: WriteRecord, operation: str) -> Any:
        """Journal ``record``, then mirror it onto the fallback; a cancelled caller interrupts neither."""

        async def prepare(before: dict[str, KeyView], strict: bool) -> Prepared:
            return _prepare(record, before, strict)

        return await self._outage_write(operation, record.keys(), record.apply, prepare)

    async def _outage_write(
        self,
        operation: str,
        keys: list[str],
        direct: Callable[[Any], Awaitable[Any]],
        prepare: Prepare,
        *,
        needs_views: bool = False,
    ) -> Any:
        """Decide, journal and mirror one outage write in a task a cancelled caller cannot interrupt.

        Under the outage lock ``prepare`` gets what the journal knows of ``keys`` (in strict
        mode, or always with ``needs_views``) and returns the record to journal (``None``:
        nothing to journal) and the answer (`_MIRRORED`: the fallback's result, or in strict
        mode what the journal knew). ``direct`` runs instead when failback finished meanwhile.
        """
        self._refuse_write(operation)
        self._refuse_closed(operation)
        if True:  # ASYNC
            task = asyncio.ensure_future(self._journal_then_mirror(operation, keys, direct, prepare, needs_views))
            task.add_done_callback(_consume_exception)
            # Kept until done: `aclose` lets a cancelled caller's write finish before closing the stores.
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            return await asyncio.shield(task)
        else:
            return self._journal_then_mirror(operation, keys, direct, prepare, needs_views)

    def _refuse_closed(self, operation: str) -> None:
        """Once closing began, an outage write raises `ClosedError` (as the closed primary would):
        the stores it needs are closed, or about to be."""
        if self._closing:
            raise ClosedError(
                f"the {self.tier} tier is closed", backend=getattr(self.primary, "backend", None), operation=operation
            )

    async def _journal_then_mirror(
        self,
        operation: str,
        keys: list[str],
        direct: Callable[[Any], Awaitable[Any]],
        prepare: Prepare,
        needs_views: bool,
    ) -> Any:
        async with self._outage_lock:
            if True:  # ASYNC
                pass  # `aclose` lets the writes in flight finish before it closes the stores
            else:
                # `close` waits for the write holding this lock; one that waited for it is refused
                # (the stores are closed under it: journaled, never mirrored, answered after close).
                self._refuse_closed(operation)
            if self.breaker.state is BreakerState.CLOSED and self.primary is not None:
                return await direct(self.primary)  # failback finished while we waited
            journal = await self._journal_for_write()
            turn = await self._take_turn(journal)
            try:
                if True:  # ASYNC
                    pass
                else:
                    self._refuse_closed(operation)  # closed while it waited for the turn (close's wait is bounded)
                return await self._journal_and_mirror(journal, keys, prepare, needs_views)
            finally:
                journal.end_turn(turn)

    async def _take_turn(self, journal: Journal) -> int:
        """This process's turn to journal and mirror a write (`Journal.try_take_turn`), waiting
        for other processes' outage writes at most ``JOURNAL_TIMEOUT`` (then busy)."""
        deadline, pause = time.monotonic() + JOURNAL_TIMEOUT, 0.0005
        while (turn := journal.try_take_turn()) is None:
            if time.monotonic() >= deadline:
                raise BackendBusyError(
                    f"another process kept the outage journal {journal.path} for {JOURNAL_TIMEOUT:g} s; "
                    "nothing was written",
                    operation="journal",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
        return turn

    async def _journal_and_mirror(self, journal: Journal, keys: list[str], prepare: Prepare, needs_views: bool) -> Any:
        """Journal one outage write, then apply it to the fallback (this process's turn held)."""
        strict = not self._reads_from_fallback()
        before = await self._views(journal, keys) if strict or needs_views else {}
        record, answer = await prepare(before, strict)
        if record is None:
            return answer
        if True:  # ASYNC
            seq = await asyncio.to_thread(journal.record, record.kind, record.to_json(), record.keys())
        else:
            seq = journal.record(record.kind, record.to_json(), record.keys())
        try:
            result = await record.apply(await self._fallback_store())
        except KVStoreError as exc:
            if not strict:
                await self._journal_call(journal.done, seq)  # the fallback refused it: neither happened
                raise
            # The journal is the truth of this outage; the fallback is only a mirror of it.
            logger.debug("kvstore database tier: fallback mirror skipped %s: %s", record.kind, exc)
            result = None
        if answer is not _MIRRORED:
            return answer
        if not strict:
            return result
        return _outage_result(record, before)

    async def _journal_call(self, fn: Callable[..., T], *args: Any) -> T:
        if True:  # ASYNC
            return await asyncio.to_thread(fn, *args)
        else:
            return fn(*args)

    # --- degraded reads ----------------------------------------------------------------

    async def _views(self, journal: Journal | None, keys: list[str]) -> dict[str, KeyView]:
        """What this outage's journal says about each of ``keys`` (computed off the event loop)."""
        if journal is None or not keys:
            return {key: KeyView() for key in keys}
        return await self._journal_call(_fold_views, journal, keys)

    def _unknown(self, operation: str, key: str | None = None) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"the database primary is unavailable ({self.breaker.last_error}) and {operation} "
            f"{'of key ' + repr(key) + ' ' if key is not None else ''}cannot be answered truthfully from "
            "the writes made during the outage (degraded_reads='strict'; 'fallback' answers from the fallback)",
            backend=getattr(self.primary, "backend", None),
            operation=operation,
            key=key,
        )

    async def _view(self, key: str, operation: str) -> KeyView:
        view = (await self._views(await self._existing_journal(), [key]))[key]
        if view.state == "unknown":
            raise self._unknown(operation, key)
        return view

    # --- the store interface -----------------------------------------------------------

    async def get(self, key: str, *, touch: TTL | None = None) -> Any:
        """The value of ``key``; with ``touch``, its TTL restarts (see `AsyncStore.get`).

        During an outage ``get(key, touch=)`` is the degraded read (the same rules as
        ``get``) plus a journaled expiry, as ``expire``: a value this outage wrote is
        journaled whole with its new expiry; a key it knows absent slides nothing. With
        ``degraded_reads`` answering from the fallback, the fallback's value is returned
        and an ``expire`` is journaled when it holds one.
        """
        if touch is None:
            served, result = await self._primary(lambda p: p.get(key))
        else:
            served, result = await self._primary(lambda p: p.get(key, touch=touch))
        if served:
            return result
        if touch is not None:
            return await self._touch(validate_key(key), touch)
        if self._reads_from_fallback():
            return await (await self._fallback_store()).get(key)
        validate_key(key)
        view = await self._view(key, "get")
        if view.state == "list":
            raise holds_list(key, "get")
        return view.value if view.state == "value" else None

    async def _touch(self, key: str, touch: TTL) -> Any:
        expires_at = _expiry(ttl_ms(touch))

        async def prepare(before: dict[str, KeyView], strict: bool) -> Prepared:
            if not strict:
                value = await (await self._fallback_store()).get(key)
                return (None if value is None else ExpireRecord(key, expires_at)), value
            view = before[key]
            if view.state == "unknown":
                raise self._unknown("get", key)
            if view.state == "list":
                raise holds_list(key, "get")
            if view.state == "absent":
                return None, None  # nothing to slide, here or on the primary (replay deletes it first)
            return SetRecord(key, view.value, expires_at, view.basis), view.value

        return await self._outage_write("get", [key], lambda p: p.get(key, touch=touch), prepare)

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` (see `AsyncStore.incr`).

        During an outage the result is computed from this outage's journal when it knows
        the key's value (it set, deleted or counted the key) and journaled as an
        `IncrRecord`: the new value, replayed as a set of it unless the key changed (see
        there for why not as ``INCRBY``). A key the journal does not know raises
        `BackendUnavailableError`, as a conditional write does: only the primary knows the
        count, and a guess would be a wrong answer.
        """
        # Not idempotent: never retried on the primary (a lost reply would count twice), nor
        # journaled after a failure of its own (the primary may have counted it).
        served, result = await self._primary(lambda p: p.incr(key, by), idempotent=False, divert_unknown=False)
        if served:
            return result  # type: ignore[return-value]  # served: the primary's own result
        key, by = validate_key(key), check_incr_by(by)

        async def prepare(before: dict[str, KeyView], strict: bool) -> Prepared:
            view = before[key]
            if view.state == "unknown":
                raise BackendUnavailableError(
                    f"the database primary is unavailable ({self.breaker.last_error}), and incr of key {key!r} "
                    "cannot be decided from the writes made during the outage: only the primary knows its count",
                    backend=getattr(self.primary, "backend", None),
                    operation="incr",
                    key=key,
                )
            if view.state == "list":
                raise holds_list(key, "incr")
            current, expires_at = (0, None) if view.state == "absent" else (view.value, view.expires_at)
            if current.__class__ is not int:
                raise not_an_integer(key)
            value = current + by
            if not -MAX_INT - 1 <= value <= MAX_INT:
                raise not_an_integer(key, detail="would leave the signed 64-bit range")
            return IncrRecord(key, value, expires_at, view.basis, by), value

        return int(await self._outage_write("incr", [key], lambda p: p.incr(key, by), prepare, needs_views=True))

    async def exists(self, key: str) -> bool:
        served, result = await self._primary(lambda p: p.exists(key))
        if served:
            return bool(result)
        if self._reads_from_fallback():
            return await (await self._fallback_store()).exists(key)
        validate_key(key)
        return (await self._view(key, "exists")).state != "absent"

    async def mget(self, keys: Iterable[str]) -> list[Any]:
        keys = validate_keys(keys)
        served, result = await self._primary(lambda p: p.mget(keys))
        if served:
            return list(result or [])
        if self._reads_from_fallback():
            return await (await self._fallback_store()).mget(keys)
        for key in keys:
            validate_key(key)
        views = await self._views(await self._existing_journal(), keys)
        unknown = [k for k, v in views.items() if v.state == "unknown"]
        if unknown:
            raise self._unknown("mget", unknown[0])
        return [views[k].value if views[k].state == "value" else None for k in keys]

    async def ttl(self, key: str) -> float | None:
        served, result = await self._primary(lambda p: p.ttl(key))
        if served:
            return None if result is None else float(result)
        if self._reads_from_fallback():
            return await (await self._fallback_store()).ttl(key)
        validate_key(key)
        view = await self._view(key, "ttl")
        if view.state == "absent" or view.expires_at is None:
            return None
        return max(view.expires_at - time.time(), 0.001)

    async def iter_keys(self, pattern: str = "*") -> AsyncIterator[str]:
        if await self._route() is Route.PRIMARY:
            store: Any = self.primary
        elif self._reads_from_fallback():
            store = await self._fallback_store()
        else:
            raise self._unknown("listing keys")
        async for key in store.iter_keys(pattern):
            yield key

    async def keys(self, pattern: str = "*") -> list[str]:
        served, result = await self._primary(lambda p: p.keys(pattern))
        if served:
            return list(result or [])
        if self._reads_from_fallback():
            return await (await self._fallback_store()).keys(pattern)
        raise self._unknown("listing keys")

    async def get_range(self, key: str, start: int, end: int) -> list[Any]:
        served, result = await self._primary(lambda p: p.get_range(key, start, end))
        if served:
            return list(result or [])
        if self._reads_from_fallback():
            return await (await self._fallback_store()).get_range(key, start, end)
        return await self._outage_range(validate_key(key), start, end)

    async def get_range_json(self, key: str, start: int, end: int) -> list[bytes] | list[str] | None:
        """`get_range` undecoded (see `AsyncDatabase.get_range_json`): the primary's stored JSON while it serves.

        During an outage the degraded read of `get_range` (the same answers and errors),
        each item encoded back to its JSON. ``None`` only when the store answering has no
        undecoded form (then `get_range` reads it).
        """
        served, result = await self._primary(lambda p: p.get_range_json(key, start, end))
        if served:
            return result
        if self._reads_from_fallback():
            return await (await self._fallback_store()).get_range_json(key, start, end)
        key = validate_key(key)
        return [encode(key, item, self.max_value_bytes) for item in await self._outage_range(key, start, end)]

    async def _outage_range(self, key: str, start: int, end: int) -> list[Any]:
        """Items ``start..end`` of ``key`` from what this outage's journal knows of it, or raise."""
        lrange_bounds(0, start, end)  # index types are checked before anything else
        view = await self._view(key, "get_range")
        if view.state == "absent":
            return []
        if view.state == "value":
            raise holds_value(key, "get_range")
        items = view.items
        if view.full:
            lo, hi = lrange_bounds(len(items), start, end)
            return items[lo:hi]
        # Only the tail appended during the outage is known: a range counted from the tail
        # that stays inside it is the truth; anything reaching older items only the primary knows.
        if start < 0 and end < 0 and -start <= len(items):
            lo, hi = lrange_bounds(len(items), start, end)
            return items[lo:hi]
        raise self._unknown("get_range (it reaches items written before the outage)", key)

    def watch(
        self, key: str, *, start: int | None = None, poll_interval: float | None = None
    ) -> AsyncIterator[ListItem]:
        """The primary's `watch`, also while the breaker is open (see `AsyncDatabase.watch`).

        Positions are the primary's, so a watch never moves to the fallback: during an
        outage a running watch waits (its backend reconnects) and resumes with no gap once
        the primary answers; what the outage buffered appears when the failback replays it
        onto the primary, in the primary's order. A watch started while the primary is down
        raises `BackendUnavailableError` when first iterated.

        Only a tier whose primary never served this process and that reads from its
        fallback (``degraded_reads``) watches the fallback, with the fallback's positions.
        Such a watch ends once the primary serves the tier (from then on writes go to the
        primary, and the outage's writes were replayed onto it, at other positions): while
        it waits for items it probes the primary when a probe is due (``probe_interval``)
        and, at most one ``poll_interval`` after the tier failed back, raises
        `WatchRestartError` (a `BackendUnavailableError`, ``operation="watch"``): a
        planned end, not an outage. Start a new watch then: it
        follows the primary, whose positions differ (resume by content, or from
        ``start=0`` or ``-n``, never from a position this watch yielded). The items it
        yielded are not repeated by it.
        """
        key = validate_key(key)
        if start is not None:
            check_index(start)
        check_poll_interval(poll_interval, 1.0)
        if self._primary_serves():
            return self.primary.watch(key, start=start, poll_interval=poll_interval)  # type: ignore[no-any-return]
        if self._fallback is not None and self._reads_from_fallback():
            return self._watch_fallback(key, start, poll_interval)
        return self._watch_primary(key, start, poll_interval)

    async def _watch_primary(self, key: str, start: int | None, poll_interval: float | None) -> AsyncIterator[ListItem]:
        """The primary's watch, opening a primary down since connect first (when a probe is due)."""
        primary = await self.reach_primary()
        if primary is None:
            raise BackendUnavailableError(
                f"the database primary was never connected: {self.breaker.last_error}", operation="watch", key=key
            )
        items = primary.watch(key, start=start, poll_interval=poll_interval)
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()

    def _primary_serves(self) -> bool:
        """Whether the primary serves this tier (or did: a fallback watch's positions are stale from then on)."""
        return self.served or (self.primary is not None and self.breaker.state is BreakerState.CLOSED)

    async def _watch_fallback(
        self, key: str, start: int | None, poll_interval: float | None
    ) -> AsyncIterator[ListItem]:
        """The fallback's watch, ended with `WatchRestartError` once the primary serves the tier."""
        fallback: AsyncDatabase = self._fallback

        async def idle() -> None:
            # Caught up with the fallback, before each wait: probe the primary when a probe is due
            # (this process may make no other call: the writers may be other processes).
            if not self._primary_serves() and self.breaker.state is not BreakerState.CLOSED:
                await self._route()
            if self._primary_serves():
                raise WatchRestartError(
                    f"the database primary ({self.primary.backend}) answers again and serves this tier: this "
                    f"watch followed the fallback ({fallback.backend}), whose positions are not the primary's; "
                    "start a new watch, which follows the primary (the outage's writes were replayed onto it)",
                    backend=fallback.backend,
                    operation="watch",
                    key=key,
                )

        if self._primary_serves():
            # Failed back between `watch` and the first iteration: nothing was yielded yet.
            items = self.primary.watch(key, start=start, poll_interval=poll_interval)
        else:
            items = fallback._watch(key, start, poll_interval, idle)
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()

    async def get_length(self, key: str) -> int:
        served, result = await self._primary(lambda p: p.get_length(key))
        if served:
            return int(result or 0)
        if self._reads_from_fallback():
            return await (await self._fallback_store()).get_length(key)
        validate_key(key)
        view = await self._view(key, "get_length")
        if view.state == "absent":
            return 0
        if view.state == "value":
            raise holds_value(key, "get_length")
        if not view.full:
            raise self._unknown("get_length (the list holds items written before the outage)", key)
        return len(view.items)

    async def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        validate_key(key)
        if only_if_absent:
            return await self._conditional_set(key, value, ttl)
        ms = ttl_ms(ttl)
        served, result = await self._primary(lambda p: p.set(key, value, ttl))
        if served:
            return bool(result)
        record = SetRecord(key, self._stored(key, value), _expiry(ms))
        return bool(await self._buffer(record, "set"))

    async def mset(self, items: MsetItems) -> None:
        normalized = normalize_items(items)
        triples = [(k, v, None if ms is None else ms / 1000) for k, v, ms in normalized]
        served, _ = await self._primary(lambda p: p.mset(triples))
        if served or not normalized:
            return
        record = MsetRecord(tuple((k, self._stored(k, v), _expiry(ms)) for k, v, ms in normalized))
        await self._buffer(record, "mset")

    async def delete(self, key: str) -> bool:
        validate_key(key)
        served, result = await self._primary(lambda p: p.delete(key))
        if served:
            return bool(result)
        return bool(await self._buffer(DeleteRecord(key), "delete"))

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove every key of ``keys`` in one round trip (see `AsyncStore.delete_many`).

        During an outage: one journal entry touching every key (journaled and mirrored
        atomically), replayed key by key as ``delete`` (a key another instance changed
        after it is kept as a conflict, the others are deleted). The count is, as for
        ``delete``, of the keys that may have existed: a key this outage does not know counts.
        """
        names = list(dict.fromkeys(validate_keys(keys)))
        served, result = await self._primary(lambda p: p.delete_many(names))
        if served:
            return result  # type: ignore[return-value]  # served: the primary's own result
        if not names:
            return 0
        return int(await self._buffer(DeleteManyRecord(tuple(names)), "delete_many"))

    async def expire(self, key: str, ttl: TTL | None) -> bool:
        validate_key(key)
        ms = ttl_ms(ttl)
        served, result = await self._primary(lambda p: p.expire(key, ttl))
        if served:
            return bool(result)
        return bool(await self._buffer(ExpireRecord(key, _expiry(ms)), "expire"))

    async def clear(self) -> None:
        served, _ = await self._primary(lambda p: p.clear())
        if not served:
            await self._buffer(ClearRecord(), "clear")

    async def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        """Append on the active store; see `AsyncDatabase` for ``idempotency_id``.

        Without one a fresh id is made, so this call's own retries (and the journal's
        replay) never duplicate; give your own to make *your* retries safe too. During
        an outage the length returned is exact when every item of the list is known
        locally, else a `LowerBound` (the items this outage appended).
        """
        validate_key(key)
        idempotency_id = validate_idempotency_id(idempotency_id) or uuid.uuid4().hex
        served, result = await self._primary(lambda p: p.append(key, value, idempotency_id=idempotency_id))
        if served:
            return int(result or 0)
        return await self._buffer_list(key, [value], idempotency_id, "append")

    async def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        """Extend on the active store; ids and outage lengths as for `append`."""
        validate_key(key)
        idempotency_id = validate_idempotency_id(idempotency_id) or uuid.uuid4().hex
        values = list(values)
        served, result = await self._primary(lambda p: p.extend(key, values, idempotency_id=idempotency_id))
        if served:
            return int(result or 0)
        return await self._buffer_list(key, values, idempotency_id, "extend")

    async def extend_json(self, key: str, items: list[bytes], *, idempotency_id: str | None = None) -> int:
        """`extend` of values already encoded (see `AsyncDatabase.extend_json`); ids and outage lengths as for `append`.

        The primary stores the bytes as they are; a primary without that form gets them
        decoded, in the same call (one id, so its retries never duplicate). During an outage
        they are decoded and journaled as `extend` journals them. Never ``None``.
        """
        validate_key(key)
        idempotency_id = validate_idempotency_id(idempotency_id) or uuid.uuid4().hex

        async def call(primary: AsyncDatabase) -> int:
            length = await primary.extend_json(key, items, idempotency_id=idempotency_id)
            if length is None:
                length = await primary.extend(key, [decode(item, key) for item in items], idempotency_id=idempotency_id)
            return length

        served, result = await self._primary(call)
        if served:
            return int(result or 0)
        values = [decode(item, key) for item in items]
        return await self._buffer_list(key, values, idempotency_id, "append" if len(values) == 1 else "extend")

    async def trim(self, key: str, start: int, end: int) -> int:
        """Redis ``LTRIM`` (see `AsyncDatabase.trim`).

        During an outage it is journaled as a `TrimRecord`, replayed as a trim unless the
        list changed after it was made (then a conflict). It returns the exact count when
        the outage knows the whole list, else a `LowerBound` (the known items it removed);
        strict degraded reads of the trimmed list answer what the trim cannot have made
        uncertain and raise for the rest. A key holding a value raises `WrongTypeError`.
        """
        # Not idempotent (trim(1, -1) removes another item each time): never retried, and never
        # journaled after a failure of its own (the primary may have trimmed: a replay would trim twice).
        served, result = await self._primary(lambda p: p.trim(key, start, end), idempotent=False, divert_unknown=False)
        if served:
            return result  # type: ignore[return-value]  # served: the primary's own result
        key, start, end = validate_key(key), check_index(start), check_index(end)
        removed = await self._buffer(TrimRecord(key, start, end), "trim")
        return removed if isinstance(removed, LowerBound) else int(removed or 0)

    async def _buffer_list(self, key: str, values: list[Any], idempotency_id: str, operation: str) -> int:
        record = AppendRecord(key, tuple(self._stored(key, v) for v in values), idempotency_id)
        length = await self._buffer(record, operation)
        return length if isinstance(length, LowerBound) else int(length)

    def _stored(self, key: str, value: Any) -> Any:
        """``value`` as any backend would read it back (validated and size-checked before journaling)."""
        return decode(encode(key, value, self.max_value_bytes), key)

    # --- failback: replay the journal ---------------------------------------------------

    async def _failback(self) -> None:
        journal = await self._existing_journal()
        if journal is None:
            async with self._outage_lock:
                self.breaker.success(Route.PROBE)
            return
        if not await self._journal_call(journal.acquire_replay):
            raise BackendUnavailableError("another process is replaying the shared outage journal; probing again later")
        try:
            run = await self._replay_run(journal)
            replayed = await self._replay_pending(run)
            async with self._outage_lock:
                replayed += await self._replay_pending(run)
                self.breaker.success(Route.PROBE)  # under the lock: no outage write slips in after
        finally:
            await self._journal_call(journal.release_replay)
        if self.owns_fallback:
            await self._empty_fallback_if_replayed(journal)
        if replayed:
            self.events["replayed"] += replayed
            logger.warning(
                "kvstore database tier: replayed %d journaled write(s) to %s",
                replayed,
                self.primary.backend,
                extra={"kvstore_event": "replay", "tier": "database", "count": replayed},
            )

    async def _empty_fallback_if_replayed(self, journal: Journal) -> None:
        """`_empty_fallback` once the shared journal is empty, in one turn of the writers: another
        process's outage write journaled and mirrored between the check and the emptying would
        vanish from the fallback it reads (``degraded_reads="fallback"``) until its own replay."""
        try:
            turn = await self._take_turn(journal)
        except KVStoreError as exc:  # the fallback keeps its stale mirror; the next failback empties it
            logger.debug("kvstore database tier: fallback not emptied after replay: %s", exc)
            return
        try:
            if not await self._journal_call(len, journal):
                await self._empty_fallback()
        finally:
            journal.end_turn(turn)

    async def _empty_fallback(self) -> None:
        """After a complete replay the fallback's mirror is stale: the next outage starts from nothing.

        Only a fallback this tier owns (its private file in the state directory, or memory) is
        emptied; an explicitly configured fallback file is left as it is.
        """
        if not self.owns_fallback:
            return
        if self._fallback is None and not (self.fallback_path is not None and self.fallback_path.exists()):
            return
        try:
            await (await self._fallback_store()).clear()
        except KVStoreError as exc:
            logger.debug("kvstore database tier: could not empty the fallback after replay: %s", exc)

    async def _replay_run(self, journal: Journal) -> _ReplayRun:
        """The clock offset to the primary and a fresh run state.

        The offset is read at the midpoint of the fastest of three round trips, so its error
        is at most half that round trip (a write journaled a few ms before another
        instance's is still ordered right under load).
        """
        samples = []
        for _ in range(3):
            before = time.time()
            server = await self.primary.server_time()
            after = time.time()
            samples.append((after - before, server - (before + after) / 2))
        return _ReplayRun(journal, min(samples)[1])

    async def _replay_pending(self, run: _ReplayRun) -> int:
        """Replay every journaled write in order; conflicts are kept, refusals dead-lettered."""
        count = 0
        journal = run.journal
        while True:
            entries = await self._journal_call(journal.pending)
            if not entries:
                return count
            for entry in entries:
                await self._heartbeat(run)
                try:
                    await self._replay(run, entry)
                except BackendUnavailableError:
                    raise  # the primary went away again: stay on the fallback, keep the entry
                except KVStoreError as exc:
                    # e.g. WrongTypeError: the primary's data conflicts with this write. Retrying can
                    # never succeed, and one such entry must not block every later one.
                    await self._journal_call(journal.dead_letter, entry, f"{type(exc).__name__}: {exc}")
                    self.events["dead_letters"] += 1
                    logger.error(
                        "kvstore database tier: journaled %s of key %r refused by %s, kept as a dead letter in %s: %s",
                        entry.kind,
                        exc.key,
                        self.primary.backend,
                        journal.path,
                        exc,
                        extra={"kvstore_event": "dead_letter", "tier": "database"},
                    )
                else:
                    await self._journal_call(journal.done, entry.seq)
                    count += 1

    async def _heartbeat(self, run: _ReplayRun) -> None:
        """Renew the replay lease on a timer; a replayer that lost it stops before applying anything more."""
        if time.monotonic() - run.beat < LEASE_SECONDS / 6:
            return
        if not await self._journal_call(run.journal.acquire_replay):
            raise BackendUnavailableError("the outage journal's replay lease passed to another process")
        run.beat = time.monotonic()

    async def _replay(self, run: _ReplayRun, entry: JournalEntry) -> None:
        """Apply one entry unless another instance changed its keys after it was made."""
        record = decode_record(entry.kind, entry.data)
        primary: AsyncDatabase = self.primary
        since = entry.created + run.offset
        if not primary.tracks_changes:
            await record.apply(primary)  # an untracked primary takes every write
            return
        if isinstance(record, AppendRecord):
            # Appends land at the tail whatever happened since. Dated at their own time only
            # when nobody changed the list after it (so this journal's later writes of the key
            # are newer); otherwise the list keeps the newer change's date.
            untouched = not await primary.changed_since([record.key], since)
            await record.apply(primary)
            if untouched:
                await primary.restamp([record.key], since)
            return
        if isinstance(record, ClearRecord):
            await self._replay_clear(run, entry, since)
            return
        if isinstance(record, SetRecord | ExpireRecord):
            left = seconds_left(record.expires_at)
            if left is not None and left <= 0:
                later = await self._journal_call(run.journal.touching, [record.key])
                if any(e.seq > entry.seq and e.kind != "append" for e, _ in later):
                    return  # its deadline passed, but a later journaled write of the key decides
        basis = record.derived_from()
        if basis is not None and await self._journal_call(run.journal.skipped, basis, record.keys()[0]):
            # Computed (an incr, an expire of a known value) from a write that was not applied:
            # its value rests on data the primary never took, so it is a conflict too.
            await self._conflict(run, entry, set(record.keys()))
            return
        if isinstance(record, DeleteManyRecord):
            # Key by key, with delete's rule: what another instance changed since survives.
            kept = {key for key in record.names if not await primary.replay_delete(key, since)}
            if kept:
                await self._conflict(run, entry, kept)
            return
        if isinstance(record, SetRecord | DeleteRecord):
            # Checked, written and dated at the write's own time in one step where the backend can.
            ttl = None if isinstance(record, DeleteRecord) else seconds_left(record.expires_at)
            if isinstance(record, DeleteRecord) or (ttl is not None and ttl <= 0):
                applied = await primary.replay_delete(record.key, since)  # set, then expired: gone
            else:
                applied = await primary.replay_set(record.key, record.value, ttl, since)
            if not applied:
                await self._conflict(run, entry, {record.key})
            return
        changed = await primary.changed_since(record.keys(), since)
        if changed:
            await self._conflict(run, entry, changed)
            if not isinstance(record, MsetRecord):
                return
            record = record.without(changed)
        if isinstance(record, TrimRecord) and not await self._journal_call(run.journal.begin_apply, entry.seq):
            # An earlier replay began this trim and was interrupted (after its restamp, the change
            # guard cannot tell): it may have been applied, and a trim applied twice removes more.
            await self._conflict(run, entry, set(record.keys()))
            return
        await record.apply(primary)
        if record.keys():
            # Dated when it was made, not now: a later journaled write of the same key (this
            # journal's or another instance's) is then newer, an older one stays older.
            await primary.restamp(record.keys(), since)

    async def _conflict(self, run: _ReplayRun, entry: JournalEntry, keys: Collection[str]) -> None:
        await self._journal_call(run.journal.conflict, entry, keys)
        self.events["conflicts"] += 1
        logger.warning(
            "kvstore database tier: journaled %s not replayed for key(s) %s: changed on %s by another "
            "instance after it was made (kept as a conflict in %s)",
            entry.kind,
            ", ".join(repr(k) for k in sorted(keys)[:5]),
            self.primary.backend,
            run.journal.path,
            extra={"kvstore_event": "conflict", "tier": "database", "key": sorted(keys)[0]},
        )

    async def _replay_clear(self, run: _ReplayRun, entry: JournalEntry, since: float) -> None:
        """A clear replayed key by key: what another instance wrote after it survives (a conflict)."""
        primary: AsyncDatabase = self.primary
        keys = await primary.keys()
        changed: set[str] = set()
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            newer = await primary.changed_since(batch, since)
            changed |= newer
            deleted = [key for key in batch if key not in newer]
            for key in deleted:
                await primary.delete(key)
            if deleted:
                await primary.restamp(deleted, since)
        # Older journaled writes of other instances must see this clear as newer than them.
        await primary.mark_cleared(since)
        if changed:
            await self._conflict(run, entry, changed)

    async def aclose(self) -> None:
        self._closing = True
        if True:  # ASYNC
            # A write whose caller was cancelled still journals and mirrors (both or neither): left
            # running, the loop's shutdown would cancel it between the two (journaled, never mirrored).
            while self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
        else:
            # An outage write of another thread finishes (journaled and mirrored) first. Bounded: a
            # close from a signal handler of the very thread inside that write must not wait for itself.
            if self._outage_lock.acquire(timeout=JOURNAL_TIMEOUT):
                self._outage_lock.release()
        await super().aclose()
        if self._journal is not None:
            self._journal.close()


@dataclass(slots=True)
class _ReplayRun:
    """One failback's replay: the journal, the primary's clock offset, the lease's last renewal."""

    journal: Journal
    offset: float
    beat: float = field(default_factory=time.monotonic)


def _expiry(ms: int | None) -> float | None:
    """A TTL in ms as an absolute wall-clock expiry (journal records outlive the process)."""
    return None if ms is None else time.time() + ms / 1000


def _fold_views(journal: Journal, keys: list[str]) -> dict[str, KeyView]:
    """Fold every pending entry touching ``keys`` into their views, each entry decoded once."""
    views = {key: KeyView() for key in keys}
    for entry, touched in journal.touching(keys):
        record = decode_record(entry.kind, entry.data)
        targets = list(views) if "" in touched else touched  # '' marks a clear: it touches every key
        for key in targets:
            views[key] = views[key].settle(entry.created)  # a TTL that ran out before this write
        record.fold_all(targets, views)
        for key in targets:
            view = views[key]
            if view.basis is None and view.state != "unknown":
                view.basis = entry.seq  # a state this entry decided (what an incr would derive from)
    now = time.time()
    return {key: view.settle(now) for key, view in views.items()}


#: `prepare`'s answer meaning "what the write returns": the fallback's result, or in strict
#: mode what the journal knew before it (`_outage_result`).
_MIRRORED: Any = object()

#: Decides an outage write from what the journal knows of its keys (and whether reads are
#: strict): the record to journal (``None``: nothing) and the answer (or `_MIRRORED`).
Prepared = tuple[WriteRecord | None, Any]
Prepare = Callable[[dict[str, KeyView], bool], Awaitable[Prepared]]


def _prepare(record: WriteRecord, before: dict[str, KeyView], strict: bool) -> Prepared:
    """A blind write's strict-mode checks against what the journal knows; see `Prepare`."""
    if not strict:
        return record, _MIRRORED
    if isinstance(record, ExpireRecord) and before[record.key].state == "value":
        # The value is known from this outage: journal it whole with its new expiry, so a
        # replay never depends on an earlier record whose own TTL has run out by then.
        view = before[record.key]
        return SetRecord(record.key, view.value, record.expires_at, view.basis), _MIRRORED
    if isinstance(record, AppendRecord | TrimRecord):
        view = before[record.key]
        if view.state == "value":
            raise holds_value(record.key, "append" if isinstance(record, AppendRecord) else "trim")
        if isinstance(record, TrimRecord) and view.state == "absent":
            return None, 0  # LTRIM of a missing list: nothing to do, here or on replay
        if isinstance(record, AppendRecord) and record.idempotency_id in view.ids:
            length = view.ids[record.idempotency_id]  # a retry of a write this outage already holds
            return None, length if view.full else LowerBound(length)
    return record, _MIRRORED


def _outage_result(record: WriteRecord, before: dict[str, KeyView]) -> Any:
    """What a buffered write returns, from what the journal knew before it (never invented)."""
    if isinstance(record, AppendRecord):
        view = record.fold(record.key, before[record.key])
        length = view.ids[record.idempotency_id]
        return length if view.full else LowerBound(length)
    if isinstance(record, DeleteRecord | ExpireRecord):
        # Unknown keys: the primary decides on replay; True says "may have been there".
        return before[record.key].state != "absent"
    if isinstance(record, DeleteManyRecord):
        # As `delete`, key by key: a key this outage does not know counts ("may have been there").
        return sum(before[key].state != "absent" for key in record.names)
    if isinstance(record, TrimRecord):
        removed, exact = record.removed(before[record.key])
        return removed if exact else LowerBound(removed)
    if isinstance(record, SetRecord):
        return True
    return None


def _consume_exception(task: asyncio.Future[Any]) -> None:
    """A buffered write whose caller was cancelled: its outcome is logged, never 'never retrieved'."""
    if not task.cancelled() and task.exception() is not None:
        logger.debug("kvstore database tier: a cancelled caller's buffered write failed: %s", task.exception())
