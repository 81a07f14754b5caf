"""OpenTelemetry for stores: a wrapper that traces and measures every operation (``kvstore-sdk[otel]``).

Off by default: nothing here runs unless a store is wrapped with `instrument`, so an
uninstrumented store pays nothing. Importing this module does not import OpenTelemetry;
`instrument` does, and raises `MissingDependencyError` when ``opentelemetry-api`` is absent.

Spans follow the OpenTelemetry database client conventions: one CLIENT span per
operation named ``"{operation} {target}"``, with ``db.system.name``, ``db.operation.name``,
``db.namespace``, ``server.address`` / ``server.port`` and, on failure, ``error.type``.
They never carry a key, a value, a URL or a password, and exception messages (which can
name a key) are not recorded. Metrics: the ``db.client.operation.duration`` histogram
(seconds) and the ``kvstore.client.operation.errors`` counter, per operation.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kvstore._core.items import MsetItems
from kvstore._core.ttl import TTL
from kvstore.base import Cache, Database, Store
from kvstore.base_async import AsyncCache, AsyncDatabase, AsyncStore
from kvstore.errors import MissingDependencyError

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["DURATION_METRIC", "ERRORS_METRIC", "instrument", "maybe_instrument"]

DURATION_METRIC = "db.client.operation.duration"
ERRORS_METRIC = "kvstore.client.operation.errors"
# The semantic conventions' advisory buckets for db.client.operation.duration (seconds).
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
# kvstore backend name -> db.system.name (the conventions' well-known values where one exists).
_SYSTEMS = {"redis": "redis", "postgres": "postgresql", "sqlite": "sqlite", "memory": "memory"}
_DEFAULT_PORTS = {"redis": 6379, "postgres": 5432}


def connection_attributes(backend: str, config: Any = None) -> dict[str, str | int]:
    """The span/metric attributes that say where a store's data lives; never a key, value or secret.

    Args:
        backend: The store's backend name (``"redis"``, ``"postgres"``, ``"sqlite"``, ``"memory"``).
        config: The tier's config model (`kvstore.config`), when known: host, port and
            database come from it (from its URL's host part only; credentials are never read).
    """
    attributes: dict[str, str | int] = {"db.system.name": _SYSTEMS.get(backend, backend)}
    if config is None:
        return attributes
    host: str | None = getattr(config, "host", None)
    port: int | None = getattr(config, "port", None)
    path = ""
    url = getattr(config, "url", None)
    if isinstance(url, str) and url and backend in _DEFAULT_PORTS:
        try:
            parts = urlsplit(url)
            host, port, path = parts.hostname or host, parts.port or _DEFAULT_PORTS[backend], parts.path
        except ValueError:  # an unusual URL shape: say nothing rather than something wrong
            host = port = None
    if backend == "redis":
        db = path.strip("/") if path.strip("/").isdigit() else str(getattr(config, "db", 0))
        attributes["db.namespace"] = db
    elif backend == "postgres":
        dbname = getattr(config, "dbname", None) or path.strip("/") or None
        schema = getattr(config, "schema_name", None)
        if dbname:
            attributes["db.namespace"] = f"{dbname}|{schema}" if schema else dbname
    elif backend == "sqlite":
        file = str(getattr(config, "path", "") or "")
        # The file's name, not its directory (which can name a user or a tenant).
        attributes["db.namespace"] = ":memory:" if ":memory:" in file else os.path.basename(file)
    if host and backend in _DEFAULT_PORTS:
        attributes["server.address"] = host
        if port:
            attributes["server.port"] = int(port)
    return attributes


class _Operation:
    """One traced, timed operation: a CLIENT span, a duration point, an error count on failure."""

    __slots__ = ("_attributes", "_current", "_instruments", "_name", "_span", "_start", "_token")

    def __init__(self, instruments: _Instruments, name: str, *, current: bool = True) -> None:
        self._instruments = instruments
        self._name = name
        self._attributes = instruments.attributes(name)
        self._current = current

    def __enter__(self) -> None:
        ins = self._instruments
        self._span: Span = ins.tracer.start_span(
            ins.span_name(self._name),
            kind=ins.client_kind,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        # Made current so a driver's own instrumentation nests under it (not across a generator's yields).
        self._token = ins.attach(ins.set_span_in_context(self._span)) if self._current else None
        self._start = time.perf_counter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        ins = self._instruments
        attributes = self._attributes
        if exc_type is not None and issubclass(exc_type, Exception):
            error = _error_type(exc_type)
            attributes = {**attributes, "error.type": error}
            self._span.set_attribute("error.type", error)
            self._span.set_status(ins.error_status)  # no description: a message can name a key
            ins.errors.add(1, attributes)
        ins.duration.record(elapsed, attributes)
        self._span.end()
        if self._token is not None:
            ins.detach(self._token)


def _error_type(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


class _Instruments:
    """The tracer, the two metric instruments and the per-operation attributes of one store."""

    def __init__(
        self,
        backend: str,
        config: Any,
        tier: str | None,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        try:
            from opentelemetry import context, metrics, trace
        except ImportError as exc:
            raise MissingDependencyError("telemetry", "otel", "opentelemetry-api") from exc
        from kvstore import __version__

        self.attach = context.attach
        self.detach = context.detach
        self.set_span_in_context = trace.set_span_in_context
        self.client_kind = trace.SpanKind.CLIENT
        self.error_status = trace.StatusCode.ERROR
        self.tracer: Tracer = trace.get_tracer("kvstore", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("kvstore", __version__, meter_provider=meter_provider)
        self.duration: Histogram = meter.create_histogram(
            DURATION_METRIC,
            unit="s",
            description="Duration of kvstore store operations.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self.errors: Counter = meter.create_counter(
            ERRORS_METRIC, unit="{error}", description="kvstore store operations that raised."
        )
        self._base = connection_attributes(backend, config)
        if tier is not None:
            self._base["kvstore.tier"] = tier
        namespace = self._base.get("db.namespace")
        address = self._base.get("server.address")
        if namespace is not None:
            self._target: str | None = str(namespace)
        elif address is not None:
            self._target = f"{address}:{self._base.get('server.port', '')}".rstrip(":")
        else:
            self._target = None
        self._per_op: dict[str, dict[str, str | int]] = {}

    def attributes(self, operation: str) -> dict[str, str | int]:
        found = self._per_op.get(operation)
        if found is None:
            found = self._per_op[operation] = {**self._base, "db.operation.name": operation}
        return found

    def span_name(self, operation: str) -> str:
        return f"{operation} {self._target}" if self._target else operation

    def op(self, operation: str) -> _Operation:
        return _Operation(self, operation)

    def stream(self, operation: str) -> _Operation:
        return _Operation(self, operation, current=False)


class _Wrapper:
    """What every instrumented store shares: the wrapped store, and delegation of everything else."""

    _inner: Any
    _tel: _Instruments

    def __init__(self, inner: Any, instruments: _Instruments) -> None:
        self._inner = inner
        self._tel = instruments

    def __getattr__(self, name: str) -> Any:
        # Only reached for what the wrapper does not define (key_prefix, health, journal, ...).
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"<instrumented {self._inner!r}>"

    @property
    def wrapped(self) -> Any:
        """The store this one traces."""
        return self._inner


# --- async ------------------------------------------------------------------------------------


class _AsyncInstrumented(_Wrapper, AsyncStore):
    async def get(self, key: str) -> Any:
        with self._tel.op("get"):
            return await self._inner.get(key)

    async def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        with self._tel.op("set"):
            result: bool = await self._inner.set(key, value, ttl, only_if_absent=only_if_absent)
            return result

    async def delete(self, key: str) -> bool:
        with self._tel.op("delete"):
            result: bool = await self._inner.delete(key)
            return result

    async def exists(self, key: str) -> bool:
        with self._tel.op("exists"):
            result: bool = await self._inner.exists(key)
            return result

    async def mget(self, keys: Iterable[str]) -> list[Any]:
        with self._tel.op("mget"):
            result: list[Any] = await self._inner.mget(keys)
            return result

    async def mset(self, items: MsetItems) -> None:
        with self._tel.op("mset"):
            await self._inner.mset(items)

    async def iter_keys(self, pattern: str = "*") -> AsyncIterator[str]:
        with self._tel.stream("iter_keys"):
            async for key in self._inner.iter_keys(pattern):
                yield key

    async def keys(self, pattern: str = "*") -> list[str]:
        with self._tel.op("keys"):
            result: list[str] = await self._inner.keys(pattern)
            return result

    async def clear(self) -> None:
        with self._tel.op("clear"):
            await self._inner.clear()

    async def ttl(self, key: str) -> float | None:
        with self._tel.op("ttl"):
            result: float | None = await self._inner.ttl(key)
            return result

    async def expire(self, key: str, ttl: TTL | None) -> bool:
        with self._tel.op("expire"):
            result: bool = await self._inner.expire(key, ttl)
            return result

    async def ping(self) -> None:
        with self._tel.op("ping"):
            await self._inner.ping()

    async def aclose(self) -> None:
        await self._inner.aclose()


class AsyncInstrumentedCache(_AsyncInstrumented, AsyncCache):
    """An async cache whose operations are traced and measured (see `instrument`)."""


class AsyncInstrumentedDatabase(_AsyncInstrumented, AsyncDatabase):
    """An async database whose operations are traced and measured (see `instrument`)."""

    async def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        with self._tel.op("append"):
            result: int = await self._inner.append(key, value, idempotency_id=idempotency_id)
            return result

    async def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        with self._tel.op("extend"):
            result: int = await self._inner.extend(key, values, idempotency_id=idempotency_id)
            return result

    async def get_range(self, key: str, start: int, end: int) -> list[Any]:
        with self._tel.op("get_range"):
            result: list[Any] = await self._inner.get_range(key, start, end)
            return result

    async def get_length(self, key: str) -> int:
        with self._tel.op("get_length"):
            result: int = await self._inner.get_length(key)
            return result

    async def server_time(self) -> float:
        result: float = await self._inner.server_time()
        return result

    async def changed_since(self, keys: Iterable[str], since: float) -> set[str]:
        result: set[str] = await self._inner.changed_since(keys, since)
        return result


# --- sync (the same methods, not awaited) -----------------------------------------------------


class _Instrumented(_Wrapper, Store):
    def get(self, key: str) -> Any:
        with self._tel.op("get"):
            return self._inner.get(key)

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        with self._tel.op("set"):
            result: bool = self._inner.set(key, value, ttl, only_if_absent=only_if_absent)
            return result

    def delete(self, key: str) -> bool:
        with self._tel.op("delete"):
            result: bool = self._inner.delete(key)
            return result

    def exists(self, key: str) -> bool:
        with self._tel.op("exists"):
            result: bool = self._inner.exists(key)
            return result

    def mget(self, keys: Iterable[str]) -> list[Any]:
        with self._tel.op("mget"):
            result: list[Any] = self._inner.mget(keys)
            return result

    def mset(self, items: MsetItems) -> None:
        with self._tel.op("mset"):
            self._inner.mset(items)

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        with self._tel.stream("iter_keys"):
            yield from self._inner.iter_keys(pattern)

    def keys(self, pattern: str = "*") -> list[str]:
        with self._tel.op("keys"):
            result: list[str] = self._inner.keys(pattern)
            return result

    def clear(self) -> None:
        with self._tel.op("clear"):
            self._inner.clear()

    def ttl(self, key: str) -> float | None:
        with self._tel.op("ttl"):
            result: float | None = self._inner.ttl(key)
            return result

    def expire(self, key: str, ttl: TTL | None) -> bool:
        with self._tel.op("expire"):
            result: bool = self._inner.expire(key, ttl)
            return result

    def ping(self) -> None:
        with self._tel.op("ping"):
            self._inner.ping()

    def close(self) -> None:
        self._inner.close()


class InstrumentedCache(_Instrumented, Cache):
    """A cache whose operations are traced and measured (see `instrument`)."""


class InstrumentedDatabase(_Instrumented, Database):
    """A database whose operations are traced and measured (see `instrument`)."""

    def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        with self._tel.op("append"):
            result: int = self._inner.append(key, value, idempotency_id=idempotency_id)
            return result

    def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        with self._tel.op("extend"):
            result: int = self._inner.extend(key, values, idempotency_id=idempotency_id)
            return result

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        with self._tel.op("get_range"):
            result: list[Any] = self._inner.get_range(key, start, end)
            return result

    def get_length(self, key: str) -> int:
        with self._tel.op("get_length"):
            result: int = self._inner.get_length(key)
            return result

    def server_time(self) -> float:
        result: float = self._inner.server_time()
        return result

    def changed_since(self, keys: Iterable[str], since: float) -> set[str]:
        result: set[str] = self._inner.changed_since(keys, since)
        return result


def _delegated(name: str) -> property:
    def read(self: _Wrapper) -> Any:
        return getattr(self._inner, name)

    return property(read)


# The class-level facts of a store (backend, durable, tracks_changes) are the wrapped store's.
for _cls in (AsyncInstrumentedCache, AsyncInstrumentedDatabase, InstrumentedCache, InstrumentedDatabase):
    for _name in ("backend", "durable", "tracks_changes"):
        setattr(_cls, _name, _delegated(_name))


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
    if isinstance(store, _Wrapper):
        return store
    for base, wrapper, tier in (
        (AsyncDatabase, AsyncInstrumentedDatabase, "database"),
        (AsyncCache, AsyncInstrumentedCache, "cache"),
        (Database, InstrumentedDatabase, "database"),
        (Cache, InstrumentedCache, "cache"),
    ):
        if isinstance(store, base):
            backend = str(getattr(config, "type", None) or getattr(store, "backend", "kvstore"))
            return wrapper(store, _Instruments(backend, config, tier, tracer_provider, meter_provider))
    raise TypeError(f"instrument() takes a kvstore Cache or Database, not {type(store).__name__}")


def maybe_instrument(config: Any, cache: Any, database: Any) -> tuple[Any, Any]:
    """The manager's two tiers, instrumented when ``config.telemetry`` is true, else unchanged."""
    if not getattr(config, "telemetry", False):
        return cache, database
    return instrument(cache, config=config.cache), instrument(database, config=config.database)
