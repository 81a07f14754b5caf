"""Health report types (plain data, shared by async and sync managers)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthReport", "TierHealth"]


@dataclass(frozen=True, slots=True)
class TierHealth:
    """The state of one tier.

    Attributes:
        tier: ``"cache"`` or ``"database"``.
        configured: The backend the config asked for.
        active: The backend serving calls now (differs from ``configured`` when degraded).
        healthy: Whether the active backend answered its probe.
        degraded: Whether the tier runs on a fallback.
        durable: Whether acknowledged writes survive a process restart (false on memory).
        latency_ms: Round-trip time of the probe, when it answered.
        last_error: Why the tier is degraded or unhealthy (never contains secrets).
        pending_writes: Outage writes journaled and not yet replayed to the primary.
        conflicts: Journaled writes replay skipped because another instance changed their keys later
            (kept in the journal's ``conflicts`` table, logged with ``kvstore_event="conflict"``).
        dead_letters: Journaled writes the primary refused for good (e.g. a type conflict).
        serving: ``host:port`` of the server that serves the tier's primary now (of several PostgreSQL
            hosts the one accepting writes; the Redis master Sentinel named), ``None`` when the backend
            has no such choice.
    """

    tier: str
    configured: str
    active: str
    healthy: bool
    degraded: bool
    durable: bool
    latency_ms: float | None = None
    last_error: str | None = None
    pending_writes: int = 0
    conflicts: int = 0
    dead_letters: int = 0
    serving: str | None = None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Health of both tiers; ``ok`` when both answer (possibly on a fallback)."""

    cache: TierHealth
    database: TierHealth

    @property
    def ok(self) -> bool:
        """Both tiers answered their probe."""
        return self.cache.healthy and self.database.healthy

    @property
    def degraded(self) -> bool:
        """Either tier runs on a fallback backend."""
        return self.cache.degraded or self.database.degraded

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the report."""
        from dataclasses import asdict

        return {
            "ok": self.ok,
            "degraded": self.degraded,
            "cache": asdict(self.cache),
            "database": asdict(self.database),
        }
