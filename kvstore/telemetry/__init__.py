"""OpenTelemetry for stores: a wrapper that traces and measures every operation (``kvstore-sdk[otel]``).

Off by default: nothing here runs unless a store is wrapped with `instrument` (or the
config says ``telemetry = true``), so an uninstrumented store pays nothing. Importing
this module does not import OpenTelemetry; `instrument` does, and raises
`MissingDependencyError` when ``opentelemetry-api`` is absent.

Spans follow the OpenTelemetry database client conventions: one CLIENT span per
operation named ``"{operation} {target}"``, with ``db.system.name``, ``db.operation.name``,
``db.namespace``, ``server.address`` / ``server.port`` and, on failure, ``error.type``.
They never carry a key, a value, a URL or a password, and exception messages (which can
name a key) are not recorded. Metrics: the ``db.client.operation.duration`` histogram
(seconds) and the ``kvstore.client.operation.errors`` counter, per operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvstore.base import Cache, Database
from kvstore.base_async import AsyncCache, AsyncDatabase
from kvstore.telemetry._instruments import (
    DURATION_METRIC,
    ERRORS_METRIC,
    Instruments,
    Wrapper,
    connection_attributes,
)
from kvstore.telemetry._wrappers import InstrumentedCache, InstrumentedDatabase
from kvstore.telemetry._wrappers_async import AsyncInstrumentedCache, AsyncInstrumentedDatabase

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "DURATION_METRIC",
    "ERRORS_METRIC",
    "AsyncInstrumentedCache",
    "AsyncInstrumentedDatabase",
    "InstrumentedCache",
    "InstrumentedDatabase",
    "connection_attributes",
    "instrument",
    "maybe_instrument",
]


def instrument(
    store: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    config: Any = None,
) -> Any:
    """Wrap ``store`` so each operation makes a span, a duration point and, on failure, an error count.

    The wrapper has the store's public methods and type (a cache stays a `Cache`, an
    async database an `AsyncDatabase`); anything else is delegated to the store.

    Args:
        store: Any kvstore store, sync or async, either tier (a manager's tier included).
        tracer_provider: Where spans go; the global provider when omitted.
        meter_provider: Where metrics go; the global provider when omitted.
        config: The store's config model (for ``server.address``/``server.port``/``db.namespace``);
            without it the spans carry ``db.system.name`` from the store's backend only.

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (``kvstore-sdk[otel]``).
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
            backend = str(getattr(config, "type", None) or getattr(store, "backend", "kvstore"))
            return wrapper(store, Instruments(backend, config, tier, tracer_provider, meter_provider))
    raise TypeError(f"instrument() takes a kvstore Cache or Database, not {type(store).__name__}")


def maybe_instrument(config: Any, cache: Any, database: Any) -> tuple[Any, Any]:
    """The manager's two tiers, instrumented when ``config.telemetry`` is true, else unchanged."""
    if not getattr(config, "telemetry", False):
        return cache, database
    return instrument(cache, config=config.cache), instrument(database, config=config.database)
