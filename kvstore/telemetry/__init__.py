"""OpenTelemetry and stats for stores: a wrapper that traces, measures and counts every operation.

Off by default: nothing here runs unless a store is wrapped with `instrument` (or the
config says ``telemetry = true``), so an uninstrumented store pays nothing. Importing
this module does not import OpenTelemetry; `instrument` does, and raises
`MissingDependencyError` when ``opentelemetry-api`` is absent.

Spans follow the OpenTelemetry database client conventions: one CLIENT span per
operation named ``"{operation} {target}"``, with ``db.system.name``, ``db.operation.name``,
``db.namespace``, ``server.address`` / ``server.port`` and, on failure, ``error.type``.
They never carry a key, a value, a URL or a password, and exception messages (which can
name a key) are not recorded. Metrics: the ``db.client.operation.duration`` histogram
(seconds) and the ``kvstore.client.operation.errors`` counter, per operation; for a
manager, observable gauges of each tier's breaker, active backend and outage journal
(`register_gauges`).

The same wrapper counts calls, errors and read hits/misses for ``stats()``; with
``stats_only=True`` it does only that, without OpenTelemetry (``StorageManager(stats=True)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvstore.base import Cache, Database
from kvstore.base_async import AsyncCache, AsyncDatabase
from kvstore.telemetry._gauges import BREAKER_METRIC, JOURNAL_METRICS, TIER_METRIC, register_gauges
from kvstore.telemetry._instruments import (
    DURATION_METRIC,
    ERRORS_METRIC,
    Instruments,
    Wrapper,
    connection_attributes,
)
from kvstore.telemetry._stats import Counts, StorageStats, StoreStats, TierStats
from kvstore.telemetry._wrappers import InstrumentedCache, InstrumentedDatabase
from kvstore.telemetry._wrappers_async import AsyncInstrumentedCache, AsyncInstrumentedDatabase

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "BREAKER_METRIC",
    "DURATION_METRIC",
    "ERRORS_METRIC",
    "JOURNAL_METRICS",
    "TIER_METRIC",
    "AsyncInstrumentedCache",
    "AsyncInstrumentedDatabase",
    "InstrumentedCache",
    "InstrumentedDatabase",
    "StorageStats",
    "StoreStats",
    "TierStats",
    "connection_attributes",
    "instrument",
    "maybe_instrument",
    "register_gauges",
]


def instrument(
    store: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    config: Any = None,
    stats_only: bool = False,
) -> Any:
    """Wrap ``store`` so each operation makes a span, a duration point and, on failure, an error count.

    The wrapper has the store's public methods and type (a cache stays a `Cache`, an
    async database an `AsyncDatabase`); anything else is delegated to the store. It also
    counts calls, errors and read hits/misses for its ``stats()`` (see ``docs/stats.md``).

    Args:
        store: Any kvstore store, sync or async, either tier (a manager's tier included).
        tracer_provider: Where spans go; the global provider when omitted.
        meter_provider: Where metrics go; the global provider when omitted.
        config: The store's config model (for ``server.address``/``server.port``/``db.namespace``);
            without it the spans carry ``db.system.name`` from the store's backend only.
        stats_only: Only count, for ``stats()``: no span, no metric, and OpenTelemetry is
            neither needed nor imported.

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (``kvstore-sdk[otel]``)
            and ``stats_only`` is false.
        TypeError: ``store`` is not a kvstore store.
    """
    if isinstance(store, Wrapper):
        return store
    for base, wrapper, tier in (
        (AsyncDatabase, AsyncInstrumentedDatabase, "database"),
        (AsyncCache, AsyncInstrumentedCache, "cache"),
        (Database, InstrumentedDatabase, "database"),
        (Cache, InstrumentedCache, "cache"),
    ):
        if isinstance(store, base):
            if stats_only:
                return wrapper(store, Counts())
            backend = str(getattr(config, "type", None) or getattr(store, "backend", "kvstore"))
            return wrapper(store, Instruments(backend, config, tier, tracer_provider, meter_provider))
    raise TypeError(f"instrument() takes a kvstore Cache or Database, not {type(store).__name__}")


def maybe_instrument(
    config: Any, cache: Any, database: Any, *, manager: Any = None, stats: bool = False
) -> tuple[Any, Any]:
    """The manager's two tiers: instrumented when ``config.telemetry`` is true, counted when ``stats``, else unchanged.

    With telemetry on, ``manager`` (when given) also reports its gauges (`register_gauges`).
    """
    if getattr(config, "telemetry", False):
        if manager is not None:
            register_gauges(manager)
        return instrument(cache, config=config.cache), instrument(database, config=config.database)
    if stats:
        return instrument(cache, stats_only=True), instrument(database, stats_only=True)
    return cache, database
