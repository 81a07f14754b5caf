"""`AsyncStorageManager`: config in, two connected tiers out, with fallback and health."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tenacity import AsyncRetrying

from kvstore._core.health import HealthReport, TierHealth
from kvstore._core.identity import identity_label, tier_identity
from kvstore._registry import lookup
from kvstore._resilience import owner
from kvstore._resilience.breaker import BreakerPolicy, CircuitBreaker
from kvstore._resilience.chain import fallback_chain
from kvstore._resilience.failover_async import AsyncFailoverCache, AsyncFailoverDatabase
from kvstore._resilience.journal import create_private_file
from kvstore._resilience.retry import CONNECT
from kvstore.base_async import AsyncCache, AsyncDatabase
from kvstore.config import DEFAULT_SQLITE_PATH, StorageConfig, load_config
from kvstore.errors import BackendUnavailableError, ConfigError, KVStoreError, MissingDependencyError
from kvstore.telemetry import maybe_instrument
from kvstore.telemetry._stats import StorageStats, tier_stats

__all__ = ["AsyncStorageBackends", "AsyncStorageManager"]

logger = logging.getLogger("kvstore")

#: How long `health()` waits for one tier's probe.
HEALTH_TIMEOUT = 1.0
#: Connect attempts per backend (within its connect_timeout budget): a refused
#: server costs ~0.2 s before the chain moves on, a hung one at most the budget.
CONNECT_ATTEMPTS = 3


_HEALTH_POOL: ThreadPoolExecutor | None = None


def _health_pool() -> ThreadPoolExecutor:
    """Threads on which sync health probes run, so a hung server cannot hold health() up."""
    global _HEALTH_POOL
    if _HEALTH_POOL is None:
        _HEALTH_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kvstore-health")
    return _HEALTH_POOL


def _serving(store: Any) -> str | None:
    """Which server of the tier's primary serves (``serving`` of a PostgreSQL or Sentinel store), if told."""
    primary = getattr(store, "primary", store)
    serving = getattr(primary, "serving", None)
    return serving if isinstance(serving, str) else None


async def _pending_writes(store: Any) -> int:
    """Writes an earlier process journaled for this primary (none: no file is created). The
    journal is a SQLite file another process may hold: the async manager reads it off the loop."""
    journal = await store._existing_journal()
    return 0 if journal is None else int(await store._journal_call(len, journal))


def state_dir(config: Any) -> Path:
    """Where a tier keeps its outage journal and fallback files (created on the first outage only).

    ``state_dir`` from the config, else ``$KVSTORE_STATE_DIR``, else ``$XDG_STATE_HOME/kvstore``,
    else ``~/.local/state/kvstore``; inside it, one directory per primary identity.
    """
    root = config.state_dir or os.environ.get("KVSTORE_STATE_DIR")
    if not root:
        xdg = os.environ.get("XDG_STATE_HOME")
        root = (
            os.path.join(xdg, "kvstore") if xdg else os.path.join(os.path.expanduser("~"), ".local", "state", "kvstore")
        )
    return Path(root) / f"{config.type}-{tier_identity(config)}"


def _check_fallbacks(chain: list[Any]) -> None:
    """A fallback is never another tier's primary: not the tier's own file, not the embedded default's."""
    taken = {os.path.realpath(DEFAULT_SQLITE_PATH)}
    if chain[0].type == "sqlite" and chain[0].path != ":memory:":
        taken.add(os.path.realpath(chain[0].path))
    for candidate in chain[1:]:
        if candidate.type != "sqlite" or candidate.path == ":memory:":
            continue
        if os.path.realpath(candidate.path) in taken:
            raise ConfigError(
                f"the SQLite fallback {candidate.path!r} is a primary database (this tier's own, or the embedded "
                "default's): a fallback must be a file of its own; leave it out to use the state directory"
            )


def _named_files(chain: list[Any]) -> list[Any]:
    """The SQLite fallbacks of ``chain`` at a path of the user's (not the state directory's own file)."""
    if chain[0].type not in ("postgres", "sqlite"):
        return []
    owned = str(state_dir(chain[0]) / "fallback.db")
    return [c for c in chain[1:] if c.type == "sqlite" and c.path not in (":memory:", owned)]


def backend_class(tier: str, backend: str) -> Any:
    """Import and return the class for ``backend`` on ``tier`` (lazy driver import)."""
    entry = lookup(tier, backend)
    return getattr(importlib.import_module(entry.module_async), entry.name_async)


@dataclass
class _Tier:
    name: str
    configured: str
    store: Any


@dataclass
class AsyncStorageBackends:
    """The connected tiers: ``.cache``, ``.database`` and ``.health()``."""

    cache: AsyncCache
    database: AsyncDatabase
    _manager: AsyncStorageManager = field(repr=False)

    async def health(self) -> HealthReport:
        """Health of both tiers (see `AsyncStorageManager.health`)."""
        return await self._manager.health()

    async def stats(self) -> StorageStats:
        """Counts and state of both tiers (see `AsyncStorageManager.stats`)."""
        return await self._manager.stats()


class AsyncStorageManager:
    """Reads one config, connects a cache and a database tier, reports their health.

    Args:
        config: A `StorageConfig`, a dict of the same shape, a path to a TOML or
            YAML file, or ``None`` for ``KVSTORE_*`` environment variables and
            otherwise the embedded default (memory cache, SQLite database in
            ``./.kvstore/kvstore.db``).

    When a backend cannot be reached (or its extra is not installed) the tier
    falls back along its chain (``redis -> memory``, ``postgres -> sqlite ->
    memory``, ``sqlite -> memory``) and logs one warning; with ``fallback: []``
    it raises `BackendUnavailableError` instead.

    With ``stats=True`` the stores it hands out count their operations for `stats`
    (a small cost per call; ``telemetry = true`` in the config counts too).
    """

    def __init__(
        self,
        config: StorageConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        stats: bool = False,
    ) -> None:
        self.config = load_config(config)
        self._count = stats
        self._tiers: dict[str, _Tier] = {}
        self._backends: AsyncStorageBackends | None = None

    def __repr__(self) -> str:
        state = "connected" if self._backends else "not connected"
        return f"<{type(self).__name__} cache={self.config.cache.type} database={self.config.database.type} {state}>"

    @property
    def backends(self) -> AsyncStorageBackends:
        """The connected tiers; raises `BackendUnavailableError` before `connect`."""
        if self._backends is None:
            raise BackendUnavailableError("the storage manager is not connected; call connect() first")
        return self._backends

    async def connect(self) -> AsyncStorageBackends:
        """Connect both tiers (idempotent) and return them."""
        if self._backends is not None:
            return self._backends
        cache = await self._open_tier("cache", self.config.cache)
        try:
            database = await self._open_tier("database", self.config.database)
        except BaseException:
            await cache.store.aclose()  # roll back what was opened
            raise
        self._tiers = {"cache": cache, "database": database}
        tiers = maybe_instrument(self.config, cache.store, database.store, manager=self, stats=self._count)
        self._backends = AsyncStorageBackends(*tiers, self)
        return self._backends

    async def _open_one(self, tier: str, config: Any, attempts: int = CONNECT_ATTEMPTS) -> Any:
        """Open one backend, retrying unavailability within ``config.connect_timeout``."""
        cls = backend_class(tier, config.type)  # MissingDependencyError when the extra is absent
        budget = config.connect_timeout
        retrying = AsyncRetrying(**CONNECT.within(attempts=attempts, deadline=budget).options())
        async for attempt in retrying:
            with attempt:
                if True:  # ASYNC
                    elapsed = time.monotonic() - attempt.retry_state.start_time
                    remaining = max(budget - elapsed, 0.05)
                    try:
                        # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the
                        # open fails (refused), so a cancelled probe (of a fallback watch) went on.
                        async with asyncio.timeout(remaining):
                            return await cls.from_config(config)
                    except TimeoutError:
                        raise BackendUnavailableError(
                            f"{config.type} did not answer within the {budget:g} s connect budget",
                            backend=config.type,
                            operation="connect",
                        ) from None
                else:
                    return cls.from_config(config)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _open_tier(self, tier: str, config: Any) -> _Tier:
        state = state_dir(config) if tier == "database" else None
        chain = fallback_chain(tier, config, fallback_path=str(state / "fallback.db") if state else None)
        _check_fallbacks(chain)
        for named in _named_files(chain):
            owner.check_owner(config, named)
        if len(chain) == 1:  # fallback: [] - fail instead of falling back
            return _Tier(tier, config.type, await self._open_one(tier, config))
        primary: Any = None
        reason: str | None = None
        try:
            primary = await self._open_one(tier, config)
        except (BackendUnavailableError, MissingDependencyError) as exc:
            reason = f"{config.type}: {exc}"
        try:
            # A healthy database primary touches no file: its fallback opens on the first outage.
            fallback = None if primary is not None and tier == "database" else await self._open_fallback(tier, chain)
            if reason is not None and fallback is not None:
                logger.warning(
                    "kvstore %s tier: %s unavailable, falling back to %s: %s",
                    tier,
                    config.type,
                    fallback.backend,
                    reason,
                    extra={"kvstore_event": "fallback", "tier": tier, "backend": config.type},
                )
            store = self._failover(tier, config, primary, fallback, chain, state)
        except BaseException:
            if primary is not None:
                await primary.aclose()
            raise
        if reason is not None:
            store.breaker.trip(reason)
        elif tier == "database":
            try:  # reading the journal is an await too: a connect cancelled there closes the tier
                if await _pending_writes(store):
                    # Writes journaled by an earlier process reach the primary before anything new does.
                    store.breaker.trip("replaying the outage journal of an earlier process")
                    try:
                        await store._failback()
                    except BackendUnavailableError as exc:
                        store.breaker.trip(str(exc))  # serve from the fallback; the probe replays later
            except BaseException:
                await store.aclose()
                raise
        return _Tier(tier, config.type, store)

    async def _open_fallback(self, tier: str, chain: list[Any]) -> Any:
        """The first fallback of ``chain`` that opens (a file-backed one is created owner-only)."""
        reasons = []
        for candidate in chain[1:]:
            try:
                path = getattr(candidate, "path", None)
                if candidate.type == "sqlite" and path and path != ":memory:":
                    if candidate in _named_files(chain):
                        owner.claim(chain[0], candidate)
                    create_private_file(Path(path))
                return await self._open_one(tier, candidate)
            except (BackendUnavailableError, MissingDependencyError) as exc:
                reasons.append(f"{candidate.type}: {exc}")
        raise BackendUnavailableError(
            f"no {tier} fallback could be opened for {identity_label(chain[0])} ({'; '.join(reasons)})",
            backend=chain[0].type,
        )

    def _failover(self, tier: str, config: Any, primary: Any, fallback: Any, chain: list[Any], state: Any) -> Any:
        options: dict[str, Any] = {
            "breaker": CircuitBreaker(
                BreakerPolicy(failure_threshold=config.failure_threshold, probe_interval=config.probe_interval)
            ),
            "on_outage": config.on_outage,
            "key_prefix": config.key_prefix,
            "reopen": lambda: self._open_one(tier, config, attempts=1),
        }
        if tier == "cache":
            return AsyncFailoverCache(primary, fallback, **options)
        return AsyncFailoverDatabase(
            primary,
            fallback,
            journal_path=state / "journal.db",
            open_fallback=lambda: self._open_fallback(tier, chain),
            degraded_reads=config.degraded_reads,
            max_value_bytes=config.max_value_bytes,
            fallback_name=chain[1].type,
            fallback_path=getattr(chain[1], "path", None),
            # Its own file in the state directory (or memory) is emptied after a replay; a file
            # the config names is the user's and is left alone.
            owns_fallback=chain[1].type == "memory" or getattr(chain[1], "path", None) == str(state / "fallback.db"),
            **options,
        )

    async def disconnect(self) -> None:
        """Close both tiers. Idempotent."""
        tiers, self._tiers, self._backends = self._tiers, {}, None
        for state in tiers.values():
            await state.store.aclose()

    async def health(self) -> HealthReport:
        """Probe both tiers (each within its own deadline) and report."""
        tiers = self._tiers or {}
        if not tiers:
            raise BackendUnavailableError("the storage manager is not connected; call connect() first")
        return HealthReport(
            cache=await self._probe(tiers["cache"]),
            database=await self._probe(tiers["database"]),
        )

    async def stats(self) -> StorageStats:
        """Counts and state of both tiers, without probing them (see the stats page of the docs).

        Operation counts, read hits/misses and errors come from the stores handed out
        (counted only with ``stats=True`` or ``telemetry = true``); failovers, failbacks,
        the breaker and the active backend from memory; pending writes, conflicts and dead
        letters from the outage journal, which is read only when an outage made one.
        """
        tiers, backends = self._tiers, self._backends
        if not tiers or backends is None:
            raise BackendUnavailableError("the storage manager is not connected; call connect() first")
        handed_out = {"cache": backends.cache, "database": backends.database}
        stats = {
            name: tier_stats(
                name, tier.configured, tier.store, handed_out[name].stats(), await self._journal_counts(tier.store)
            )
            for name, tier in tiers.items()
        }
        return StorageStats(cache=stats["cache"], database=stats["database"])

    async def _probe(self, state: _Tier) -> TierHealth:
        store: Any = state.store
        failover = isinstance(store, AsyncFailoverCache | AsyncFailoverDatabase)
        error = store.breaker.last_error if failover else None
        active = store.active if failover else store.backend
        latency: float | None = None
        start = time.perf_counter()
        try:
            if True:  # ASYNC
                async with asyncio.timeout(HEALTH_TIMEOUT):  # not wait_for: it can swallow a cancel on 3.11
                    await store.ping()
            else:
                # A blocking ping cannot be interrupted: wait for it on a helper thread instead.
                _health_pool().submit(store.ping).result(timeout=HEALTH_TIMEOUT)
            latency = (time.perf_counter() - start) * 1000
            healthy = True
        except (KVStoreError, TimeoutError) as exc:
            healthy = False
            error = str(exc) or f"no answer within {HEALTH_TIMEOUT:g} s"
        return TierHealth(
            tier=state.name,
            configured=state.configured,
            active=active,
            healthy=healthy,
            degraded=active != state.configured,
            durable=bool(store.active_durable if failover else store.durable),
            latency_ms=latency,
            last_error=error,
            serving=_serving(store),
            **(await self._journal_counts(store)),
        )

    async def _journal_counts(self, store: Any) -> dict[str, int]:
        """Pending outage writes, replay conflicts and dead letters of a database tier (no file is created)."""
        if not isinstance(store, AsyncFailoverDatabase):
            return {}

        def counts() -> dict[str, int]:
            journal = store.journal  # opened only when a journal file exists
            if journal is None:
                return {}
            pending, conflicts, dead = journal.counts()
            return {"pending_writes": pending, "conflicts": conflicts, "dead_letters": dead}

        try:
            if True:  # ASYNC
                return await asyncio.to_thread(counts)
            else:
                return counts()
        except KVStoreError:
            return {}

    async def __aenter__(self) -> AsyncStorageBackends:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()
