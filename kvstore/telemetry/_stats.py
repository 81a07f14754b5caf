"""What `stats()` reports: operation counts kept by a counting wrapper, and a tier's failover state.

Counting lives in the wrapper that `instrument` puts around a store (with OpenTelemetry,
or ``stats_only=True`` without it), never in the backends: a store nobody counts runs
exactly its own code. The counters are plain integers bumped in the calling thread;
reading them is a copy of a few small dicts, with no I/O and no look at the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["Counts", "StorageStats", "StoreStats", "TierStats", "store_stats", "tier_stats"]


class _Count:
    """Calls and failures of one operation; stateless per call, so one object serves every caller."""

    __slots__ = ("calls", "errors")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0

    def __enter__(self) -> None:
        self.calls += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and issubclass(exc_type, Exception):
            self.errors += 1


class Counts:
    """The counters of one store: per-operation calls and errors, read hits and misses.

    The ``stats_only`` instruments of a wrapper (``op``/``stream`` as the OpenTelemetry
    ones, minus spans and metrics). Increments are plain ``+= 1`` on ints: exact under
    the GIL, which never switches threads inside one.
    """

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self._ops: dict[str, _Count] = {}

    @property
    def counts(self) -> Counts:
        """Itself (the OpenTelemetry instruments hold one of these as ``counts``)."""
        return self

    def op(self, operation: str) -> _Count:
        """The counter of ``operation``, used as a context manager around the call."""
        found = self._ops.get(operation)
        if found is None:
            found = self._ops.setdefault(operation, _Count())
        return found

    stream = op

    def found(self, hits: int, misses: int) -> None:
        """Record what a read found (``get``: one of each; ``mget``: per key)."""
        self.hits += hits
        self.misses += misses

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """``(calls, errors)`` per operation, each sorted by name; errors only where some occurred."""
        ops = sorted(self._ops.items())
        return {name: c.calls for name, c in ops}, {name: c.errors for name, c in ops if c.errors}


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts of one store since it was made (see ``docs/stats.md``).

    Attributes:
        backend: The store's ``backend`` (``"failover"`` for a tier that can fall back).
        tier: ``"cache"`` or ``"database"``.
        counting: Whether operations are counted: only a counting store (``instrument``,
            ``StorageManager(stats=True)`` or ``telemetry = true``) keeps the counts below;
            otherwise they stay 0 and nothing is added to any call.
        operations: Calls per operation name (``get``, ``set``, ``append``, ...), failed ones included.
        errors: Calls that raised, per operation (any exception: unavailability and wrong use alike).
        hits: Keys a ``get``/``mget`` found.
        misses: Keys a ``get``/``mget`` did not find (absent or expired).
        failovers: Times this process's tier moved to its fallback (its breaker opened).
        failbacks: Times it came back to its primary (after a replay, for the database).
        replayed: Outage writes this process replayed to the primary.
    """

    backend: str
    tier: str
    counting: bool = False
    operations: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    failovers: int = 0
    failbacks: int = 0
    replayed: int = 0

    @property
    def calls(self) -> int:
        """Every counted call, all operations together."""
        return sum(self.operations.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TierStats:
    """One tier of a manager: its store's counts plus where it runs and its outage journal.

    Attributes:
        tier: ``"cache"`` or ``"database"``.
        configured: The backend the config asked for.
        active: The backend serving calls now.
        breaker: The tier's circuit breaker, ``"closed"``, ``"open"`` or ``"half_open"``
            (``None`` with ``fallback: []``: no breaker).
        store: The counts of the store the manager hands out for this tier.
        pending_writes: Outage writes journaled and not yet replayed (0 without a journal file).
        conflicts: Journaled writes replay kept instead of applying (the journal's total, all processes).
        dead_letters: Journaled writes the primary refused for good (the journal's total).
    """

    tier: str
    configured: str
    active: str
    breaker: str | None
    store: StoreStats
    pending_writes: int = 0
    conflicts: int = 0
    dead_letters: int = 0

    @property
    def degraded(self) -> bool:
        """Whether the tier runs on a fallback."""
        return self.active != self.configured

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "degraded": self.degraded}


@dataclass(frozen=True, slots=True)
class StorageStats:
    """Both tiers of a manager (`StorageManager.stats`)."""

    cache: TierStats
    database: TierStats

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"cache": self.cache.as_dict(), "database": self.database.as_dict()}


def store_stats(store: Any, counts: Counts | None = None) -> StoreStats:
    """The stats of ``store``: the ``counts`` kept around it, if any, and a failover's own events."""
    from kvstore.base import Database
    from kvstore.base_async import AsyncDatabase

    # A failover tier keeps its failover/failback/replay counts in ``events`` (plain ints).
    events = getattr(store, "events", None)
    if not isinstance(events, dict):
        events = {}
    tier = "database" if isinstance(store, AsyncDatabase | Database) else "cache"
    operations, errors = counts.snapshot() if counts is not None else ({}, {})
    return StoreStats(
        backend=str(store.backend),
        tier=tier,
        counting=counts is not None,
        operations=operations,
        errors=errors,
        hits=counts.hits if counts is not None else 0,
        misses=counts.misses if counts is not None else 0,
        failovers=events.get("failover", 0),
        failbacks=events.get("failback", 0),
        replayed=events.get("replayed", 0),
    )


def tier_state(store: Any) -> tuple[str, str | None]:
    """``(active backend, breaker state)`` of a manager's tier store, read from memory only."""
    breaker = getattr(store, "breaker", None)
    if breaker is None:  # fallback: [] - the configured store itself, no breaker
        return str(store.backend), None
    return str(store.active), str(breaker.state.value)


def tier_stats(name: str, configured: str, store: Any, handed_out: StoreStats, journal: dict[str, int]) -> TierStats:
    """A manager tier's stats from its (unwrapped) store, its handed-out store's counts and journal counts."""
    active, breaker = tier_state(store)
    return TierStats(
        tier=name,
        configured=configured,
        active=active,
        breaker=breaker,
        store=handed_out,
        pending_writes=journal.get("pending_writes", 0),
        conflicts=journal.get("conflicts", 0),
        dead_letters=journal.get("dead_letters", 0),
    )
