"""What telemetry and stats cost per call: memory and SQLite ``get``/``set``, bare vs off vs wrapped.

    PYTHONPATH=. python tools/bench_telemetry.py [--rounds 15] [--scale 1.0] [--clock cpu|wall]

Variants, all over the same store, measured in alternating rounds in one process
(BENCHMARKS.md: warm up, median of the rounds, ratios against the bare store):

* ``bare``: the store itself.
* ``off``: what a manager hands out with telemetry off and ``stats=False``
  (`maybe_instrument` with ``telemetry = false``): the very same object, so the ratio
  to ``bare`` is the noise floor of the measurement.
* ``stats``: the stats-only counting wrapper (``StorageManager(stats=True)``).
* ``otel-api``: the OpenTelemetry wrapper with only ``opentelemetry-api`` (no SDK configured: no-op providers).
* ``otel-sdk``: the wrapper with an SDK tracer (batch span processor, exporter that drops)
  and an SDK meter provider (histogram and counter recorded, never exported).

Times are this process's CPU time by default (``--clock cpu``: the SDK's export thread is
included; other tenants of a shared machine are not), wall time with ``--clock wall``.
Every ``set`` writes a different value (SQLite skips rewriting identical bytes); values are
~130 B of JSON, like a chat message. Everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kvstore import MemoryDatabase, SqliteDatabase
from kvstore.telemetry import instrument, maybe_instrument

VALUE = {"role": "assistant", "content": "x" * 80, "ts": 1_700_000_000.0, "n": 0}
VARIANTS = ("bare", "off", "stats", "otel-api", "otel-sdk")
_clock = [time.process_time]


def _sdk_providers() -> tuple[Any, Any, Callable[[], None]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return tracer_provider, meter_provider, shutdown


def _variants(store: Any, sdk: tuple[Any, Any]) -> dict[str, Any]:
    off, _ = maybe_instrument(SimpleNamespace(telemetry=False), store, store)
    assert off is store  # telemetry off: no wrapper at all
    return {
        "bare": store,
        "off": off,
        "stats": instrument(store, stats_only=True),
        "otel-api": instrument(store),
        "otel-sdk": instrument(store, tracer_provider=sdk[0], meter_provider=sdk[1]),
    }


def _time_get(store: Any, n: int) -> float:
    get = store.get
    clock = _clock[0]
    start = clock()
    for _ in range(n):
        get("bench_k")
    return (clock() - start) / n


_counter = [0]


def _time_set(store: Any, n: int) -> float:
    set_ = store.set
    value = dict(VALUE)
    base = _counter[0]
    _counter[0] += n
    clock = _clock[0]
    start = clock()
    for i in range(base, base + n):
        value["n"] = i  # a different stored value each time
        set_("bench_k", value)
    return (clock() - start) / n


def _measure(name: str, store: Any, sdk: tuple[Any, Any], counts: dict[str, int], rounds: int) -> list[str]:
    variants = _variants(store, sdk)
    store.set("bench_k", VALUE)
    rows = []
    for operation, timer in (("get", _time_get), ("set", _time_set)):
        n = counts[operation]
        for wrapped in variants.values():  # warm up
            timer(wrapped, max(n // 10, 10))
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))  # alternate, both directions
            for variant in order:
                samples[variant].append(timer(variants[variant], n))
        median = {v: statistics.median(s) for v, s in samples.items()}
        bare = median["bare"]
        cells = [f"{bare * 1e6:.2f} µs"]
        for variant in VARIANTS[1:]:
            extra = (median[variant] - bare) * 1e6
            cells.append(f"{median[variant] / bare:.3f} ({extra:+.2f} µs)")
        rows.append(f"| {name} | `{operation}` | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the loop counts")
    args = parser.parse_args()
    _clock[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    tracer_provider, meter_provider, shutdown = _sdk_providers()
    sdk = (tracer_provider, meter_provider)
    s = args.scale
    print(f"{args.clock} time, median of {args.rounds} alternating rounds; ratio to bare (extra µs per call)\n")
    print("| store | operation | bare | off (no wrapper) | stats only | OTel, API only | OTel + SDK |")
    print("|---|---|---|---|---|---|---|")
    rows = _measure("memory", MemoryDatabase(), sdk, {"get": int(20_000 * s), "set": int(20_000 * s)}, args.rounds)
    with tempfile.TemporaryDirectory(prefix="bench_telemetry_") as tmp:
        sqlite = SqliteDatabase(Path(tmp) / "bench.db")  # WAL, synchronous=NORMAL (the defaults)
        try:
            rows += _measure("SQLite", sqlite, sdk, {"get": int(10_000 * s), "set": int(2_000 * s)}, args.rounds)
        finally:
            sqlite.close()
    shutdown()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
