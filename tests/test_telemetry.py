"""OpenTelemetry: a span, a duration point and an error count per operation; never a key, value or secret."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kvstore import (
    AsyncDatabase,
    AsyncMemoryCache,
    AsyncMemoryDatabase,
    ChatHistory,
    Database,
    MemoryCache,
    MemoryDatabase,
    StorageManager,
    WrongTypeError,
)
from kvstore.config import PostgresDatabaseConfig, RedisCacheConfig, SqliteDatabaseConfig
from kvstore.telemetry import (
    DURATION_METRIC,
    ERRORS_METRIC,
    connection_attributes,
    instrument,
    maybe_instrument,
)

SECRET = "PASSWORD-SENTINEL-7c1"
KEY = "KEY-SENTINEL-3f9"
VALUE = "VALUE-SENTINEL-a41"


class Telemetry:
    """An SDK tracer and meter provider writing to in-memory exporters."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def wrap(self, store: Any, config: Any = None) -> Any:
        return instrument(
            store, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, config=config
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    """Fresh in-memory exporters for one test."""
    telemetry = Telemetry()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def test_spans_name_and_describe_each_operation(otel: Telemetry, tmp_path: Path) -> None:
    """Each call makes one CLIENT span named "{operation} {namespace}" with the database client attributes."""
    config = SqliteDatabaseConfig(path=str(tmp_path / "app.db"))
    from kvstore.sqlite import SqliteDatabase

    db = otel.wrap(SqliteDatabase.from_config(config), config)
    try:
        db.set("a", {"n": 1})
        assert db.get("a") == {"n": 1}
        assert db.append("list", 1) == 1
        assert db.get_range("list", 0, -1) == [1]
        assert db.mget(["a", "b"]) == [{"n": 1}, None]
        assert sorted(db.iter_keys()) == ["a", "list"]
    finally:
        db.close()
    spans = otel.spans()
    assert [s.name for s in spans] == [
        "set app.db",
        "get app.db",
        "append app.db",
        "get_range app.db",
        "mget app.db",
        "iter_keys app.db",
    ]
    for span, operation in zip(spans, ["set", "get", "append", "get_range", "mget", "iter_keys"], strict=True):
        assert span.kind is SpanKind.CLIENT
        assert dict(span.attributes or {}) == {
            "db.system.name": "sqlite",
            "db.operation.name": operation,
            "db.namespace": "app.db",
            "kvstore.tier": "database",
        }
        assert span.status.status_code is StatusCode.UNSET
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "kvstore"


def test_duration_histogram_and_error_counter(otel: Telemetry) -> None:
    """Every operation records one duration point (seconds); a failing one also counts an error with error.type."""
    db = otel.wrap(MemoryDatabase())
    db.set("v", 1)
    db.set("v", 2)
    db.get("v")
    with pytest.raises(WrongTypeError):
        db.append("v", 3)  # a value, not a list
    durations = {
        p.attributes["db.operation.name"]: p for p in otel.points(DURATION_METRIC) if "error.type" not in p.attributes
    }
    assert durations["set"].count == 2
    assert durations["get"].count == 1
    assert durations["set"].sum > 0
    assert list(durations["set"].explicit_bounds)[:3] == [0.001, 0.005, 0.01]
    assert durations["set"].attributes == {
        "db.system.name": "memory",
        "db.operation.name": "set",
        "kvstore.tier": "database",
    }
    failed = [p for p in otel.points(DURATION_METRIC) if "error.type" in p.attributes]
    assert [(p.attributes["db.operation.name"], p.count) for p in failed] == [("append", 1)]
    errors = otel.points(ERRORS_METRIC)
    assert [(dict(p.attributes), p.value) for p in errors] == [
        (
            {
                "db.system.name": "memory",
                "db.operation.name": "append",
                "kvstore.tier": "database",
                "error.type": "kvstore.errors.WrongTypeError",
            },
            1,
        )
    ]
    span = otel.spans()[-1]
    assert span.name == "append"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "kvstore.errors.WrongTypeError"


def _everything_said(otel: Telemetry) -> str:
    """Every string the exporters received: span names, attributes, events, status, metric attributes."""
    said: list[str] = []
    for span in otel.spans():
        said += [span.name, str(span.status.description), repr(dict(span.attributes or {}))]
        for event in span.events:
            said += [event.name, repr(dict(event.attributes or {}))]
    for metric in (DURATION_METRIC, ERRORS_METRIC):
        said += [repr(dict(p.attributes)) for p in otel.points(metric)]
    return "\n".join(said)


def test_no_key_value_or_password_reaches_telemetry(otel: Telemetry, tmp_path: Path) -> None:
    """Keys, values, passwords and error messages (which can name a key) never appear in a span or a metric."""
    cache = otel.wrap(MemoryCache(), RedisCacheConfig(url=f"redis://app:{SECRET}@cache.internal:6380/2"))
    db = otel.wrap(MemoryDatabase(key_prefix="tenant-9:"))
    cache.set(KEY, {"secret": VALUE}, ttl=60)
    cache.get(KEY)
    cache.mset({KEY + "2": VALUE})
    cache.mget([KEY, KEY + "2"])
    db.append(KEY, {"content": VALUE})
    db.extend(KEY, [VALUE, VALUE])
    db.get_range(KEY, 0, -1)
    db.keys(KEY + "*")
    with pytest.raises(ValueError, match=KEY):
        db.set(KEY, float("nan"))  # SerializationError naming the key
    db.set(KEY + "v", VALUE)
    with pytest.raises(WrongTypeError):
        db.get_range(KEY + "v", 0, 1)  # a value, not a list
    said = _everything_said(otel)
    assert "error.type" in said  # the failures were recorded...
    for sentinel in (SECRET, KEY, VALUE, "tenant-9", "app:"):
        assert sentinel not in said  # ...without what they were about
    assert "cache.internal" in said  # where the data lives is said


def test_connection_attributes_from_config() -> None:
    """server.address/port and db.namespace come from the config (URL host part only), per backend."""
    redis = connection_attributes("redis", RedisCacheConfig(url=f"redis://app:{SECRET}@cache.internal:6380/2"))
    assert redis == {
        "db.system.name": "redis",
        "db.namespace": "2",
        "server.address": "cache.internal",
        "server.port": 6380,
    }
    assert connection_attributes("redis", RedisCacheConfig(host="r1", port=7000, db=3)) == {
        "db.system.name": "redis",
        "db.namespace": "3",
        "server.address": "r1",
        "server.port": 7000,
    }
    pg = connection_attributes(
        "postgres",
        PostgresDatabaseConfig(url=f"postgresql://app:{SECRET}@db.internal:5433/appdb", schema_name="tenant"),
    )
    assert pg == {
        "db.system.name": "postgresql",
        "db.namespace": "appdb|tenant",
        "server.address": "db.internal",
        "server.port": 5433,
    }
    assert connection_attributes("sqlite", SqliteDatabaseConfig(path="/home/alice/data/app.db")) == {
        "db.system.name": "sqlite",
        "db.namespace": "app.db",
    }
    assert connection_attributes("memory") == {"db.system.name": "memory"}
    assert SECRET not in repr(redis) + repr(pg)


async def test_async_stores_are_instrumented_too(otel: Telemetry) -> None:
    """The async twins: same spans and attributes, iter_keys spanning the whole iteration."""
    cache = otel.wrap(AsyncMemoryCache())
    db = otel.wrap(AsyncMemoryDatabase())
    assert isinstance(db, AsyncDatabase)
    await cache.set("s", 1, ttl=10)
    assert await cache.get("s") == 1
    assert await db.extend("l", [1, 2]) == 2
    assert await db.get_length("l") == 2
    assert [k async for k in db.iter_keys()] == ["l"]
    await cache.aclose()
    await db.aclose()
    spans = otel.spans()
    assert [(s.name, (s.attributes or {})["kvstore.tier"]) for s in spans] == [
        ("set", "cache"),
        ("get", "cache"),
        ("extend", "database"),
        ("get_length", "database"),
        ("iter_keys", "database"),
    ]
    assert all(s.kind is SpanKind.CLIENT for s in spans)
    assert {p.attributes["db.operation.name"] for p in otel.points(DURATION_METRIC)} == {
        "set",
        "get",
        "extend",
        "get_length",
        "iter_keys",
    }


def test_wrapper_keeps_the_store_type_and_delegates(otel: Telemetry) -> None:
    """An instrumented database is still a Database: typed views, ChatHistory and attributes work through it."""
    inner = MemoryDatabase(key_prefix="p:")
    db = otel.wrap(inner)
    assert isinstance(db, Database)
    assert (db.backend, db.durable, db.key_prefix) == ("memory", False, "p:")
    assert instrument(db) is db  # wrapping twice is a no-op
    history = ChatHistory(db, "c1")
    history.add({"role": "user", "content": "hi"})
    assert [(m.role, m.content) for m in history.last(5)] == [("user", "hi")]
    assert {"append", "get_range"} <= {s.attributes["db.operation.name"] for s in otel.spans() if s.attributes}
    typed = db.typed(int)
    typed.set("n", 5)
    assert typed.get("n") == 5
    assert "instrumented" in repr(db)
    with pytest.raises(TypeError):
        instrument(object())


def test_off_by_default_and_enabled_by_config(otel: Telemetry) -> None:
    """The manager's stores are plain unless config.telemetry is true; import kvstore loads no OpenTelemetry."""
    with StorageManager({"cache": {"type": "memory"}, "database": {"type": "memory"}}) as storage:
        assert maybe_instrument(storage._manager.config, storage.cache, storage.database) == (
            storage.cache,
            storage.database,
        )
        on = SimpleNamespace(
            telemetry=True, cache=storage._manager.config.cache, database=storage._manager.config.database
        )
        cache, database = maybe_instrument(on, storage.cache, storage.database)
        assert cache.wrapped is storage.cache
        assert database.wrapped is storage.database
    config = {"cache": {"type": "memory"}, "database": {"type": "memory"}, "telemetry": True}
    with StorageManager(config) as storage:
        assert storage.cache.wrapped is not None  # type: ignore[attr-defined]
        storage.database.set("k", 1)
        assert storage.database.get("k") == 1
    code = "import sys, kvstore, kvstore.telemetry; print('opentelemetry' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_missing_opentelemetry_names_the_extra() -> None:
    """Without opentelemetry-api, instrument() raises MissingDependencyError naming the otel extra."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from kvstore import MemoryCache, MissingDependencyError\n"
        "from kvstore.telemetry import instrument\n"
        "try:\n    instrument(MemoryCache())\nexcept MissingDependencyError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert '[otel]"' in result.stdout
