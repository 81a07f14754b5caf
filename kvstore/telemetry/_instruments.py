"""The instruments behind the telemetry wrappers: spans, metrics and their attributes (see `kvstore.telemetry`)."""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kvstore.errors import MissingDependencyError

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["DURATION_METRIC", "ERRORS_METRIC", "Instruments", "Wrapper", "connection_attributes"]

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

    def __init__(self, instruments: Instruments, name: str, *, current: bool = True) -> None:
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


class Instruments:
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


class Wrapper:
    """What every instrumented store shares: the wrapped store, and delegation of everything else."""

    _inner: Any
    _tel: Instruments

    def __init__(self, inner: Any, instruments: Instruments) -> None:
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


def delegated(name: str) -> property:
    def read(self: Wrapper) -> Any:
        return getattr(self._inner, name)

    return property(read)
