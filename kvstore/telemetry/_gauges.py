"""Observable gauges of a manager's tiers: breaker state, active backend, outage journal counts.

The instruments are made once per meter provider; their callbacks walk the managers
registered with it (held weakly) at collection time, so nothing runs on a store's hot
path and a closed manager simply stops reporting. Each tier is read from memory (its
breaker and active backend); the journal counts read the tier's outage journal only when
one exists (a local SQLite file made on the first outage), one small query per callback.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from kvstore.errors import KVStoreError, MissingDependencyError
from kvstore.telemetry._instruments import connection_attributes
from kvstore.telemetry._stats import tier_state

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

__all__ = ["BREAKER_METRIC", "GAUGES", "JOURNAL_METRICS", "TIER_METRIC", "register_gauges"]

BREAKER_METRIC = "kvstore.breaker.state"
TIER_METRIC = "kvstore.tier.active"
#: Journal counts: the `kvstore.journal.*` observable up-down counters and the health field each reads.
JOURNAL_METRICS = {
    "kvstore.journal.pending": "pending_writes",
    "kvstore.journal.conflicts": "conflicts",
    "kvstore.journal.dead_letters": "dead_letters",
}
GAUGES = (BREAKER_METRIC, TIER_METRIC, *JOURNAL_METRICS)
_BREAKER_STATES = ("closed", "half_open", "open")

_lock = threading.Lock()
_by_provider: weakref.WeakKeyDictionary[Any, _Gauges] = weakref.WeakKeyDictionary()
_global: _Gauges | None = None


class _Gauges:
    """The observable instruments of one meter and the managers they report on."""

    def __init__(self, meter: Meter) -> None:
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self.managers: weakref.WeakSet[Any] = weakref.WeakSet()
        meter.create_observable_gauge(
            BREAKER_METRIC,
            callbacks=[self._breaker],
            unit="1",
            description="1 for the state a tier's circuit breaker is in (closed, half_open, open), 0 for the others.",
        )
        meter.create_observable_gauge(
            TIER_METRIC,
            callbacks=[self._active],
            unit="1",
            description="1 for the backend serving a tier now, 0 for its other known backends.",
        )
        descriptions = {
            "pending_writes": "Outage writes journaled and not yet replayed to the primary.",
            "conflicts": "Journaled writes replay kept instead of applying (another instance changed their keys).",
            "dead_letters": "Journaled writes the primary refused for good.",
        }
        for name, field in JOURNAL_METRICS.items():
            meter.create_observable_up_down_counter(
                name, callbacks=[self._journal_callback(field)], unit="{write}", description=descriptions[field]
            )

    def _tiers(self) -> Iterator[tuple[dict[str, str | int], Any, Any]]:
        """``(attributes, tier, config)`` of every connected tier of every live registered manager."""
        for manager in list(self.managers):
            # _tiers is empty before connect and after disconnect: nothing is reported then.
            for tier in list(getattr(manager, "_tiers", {}).values()):
                config = getattr(manager.config, tier.name, None)
                attributes = {**connection_attributes(tier.configured, config), "kvstore.tier": tier.name}
                yield attributes, tier, config

    def _breaker(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for attributes, tier, _ in self._tiers():
            _, state = tier_state(tier.store)
            if state is None:  # fallback: [] - no breaker
                continue
            for name in _BREAKER_STATES:
                observations.append(
                    self._observation(int(name == state), {**attributes, "kvstore.breaker.state": name})
                )
        return observations

    def _active(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for attributes, tier, _ in self._tiers():
            active, _ = tier_state(tier.store)
            known = [tier.configured, active]
            fallback = getattr(tier.store, "fallback", None)  # the database opens its fallback on first need
            if fallback is not None:
                known.append(str(fallback.backend))
            for name in dict.fromkeys(known):
                observations.append(self._observation(int(name == active), {**attributes, "kvstore.backend": name}))
        return observations

    def _journal_callback(self, field: str) -> Any:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            observations = []
            for attributes, tier, _ in self._tiers():
                counts = _journal_counts(tier.store)
                if counts is not None:
                    observations.append(self._observation(counts.get(field, 0), attributes))
            return observations

        return callback


def _journal_counts(store: Any) -> dict[str, int] | None:
    """A database failover tier's journal counts (zeros without a journal file); ``None`` for other tiers."""
    if getattr(store, "journal_path", None) is None:
        return None
    try:
        journal = store.journal  # None, without touching the disk further, until an outage made the file
        if journal is None:
            return {}
        pending, conflicts, dead = journal.counts()
    except KVStoreError:
        return {}
    return {"pending_writes": pending, "conflicts": conflicts, "dead_letters": dead}


def register_gauges(manager: Any, *, meter_provider: MeterProvider | None = None) -> None:
    """Report ``manager``'s tiers through observable gauges (see ``docs/telemetry.md``).

    ``StorageManager`` does this on connect when the config says ``telemetry = true``; call
    it to send the gauges to a meter provider other than the global one. Idempotent; the
    manager is held weakly and reports only while connected.

    Args:
        manager: A `StorageManager` or `AsyncStorageManager`.
        meter_provider: Where the gauges go; the global provider when omitted.

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (``kvstore-sdk[otel]``).
    """
    global _global
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise MissingDependencyError("telemetry", "otel", "opentelemetry-api") from exc
    from kvstore import __version__

    with _lock:
        gauges = _global if meter_provider is None else _by_provider.get(meter_provider)
        if gauges is None:
            # One set of instruments per provider: a second creation of an observable
            # instrument under the same name would drop its callbacks.
            gauges = _Gauges(metrics.get_meter("kvstore", __version__, meter_provider=meter_provider))
            if meter_provider is None:
                _global = gauges
            else:
                _by_provider[meter_provider] = gauges
        gauges.managers.add(manager)
