"""The kvstore exception hierarchy.

::

    KVStoreError
    ├── ConfigError
    │   └── MissingDependencyError   (also ImportError)
    ├── BackendUnavailableError      (connection refused, timeout, server gone)
    │   └── BackendBusyError         (server up but saturated: pool exhausted, lock held)
    ├── InvalidKeyError              (also ValueError)
    ├── WrongTypeError               (also TypeError)
    ├── SerializationError           (also ValueError)
    └── ValueTooLargeError           (also ValueError)

Driver exceptions are translated at each backend's boundary and chained with
``raise ... from exc``, so callers never import redis or psycopg to catch a
kvstore failure. Context lives in attributes (``backend``, ``key``,
``operation``) as well as in the message.
"""

from __future__ import annotations

__all__ = [
    "BackendBusyError",
    "BackendUnavailableError",
    "ClosedError",
    "ConfigError",
    "InvalidKeyError",
    "KVStoreError",
    "MissingDependencyError",
    "SerializationError",
    "ValueTooLargeError",
    "WatchRestartError",
    "WrongTypeError",
]


class KVStoreError(Exception):
    """Root of every error kvstore raises.

    Attributes:
        backend: Name of the backend involved (``"redis"``, ``"sqlite"``, ...), if any.
        key: The key involved, if any (without the store's prefix).
        operation: The store operation that failed (``"get"``, ``"append"``, ...), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        key: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.key = key
        self.operation = operation

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the keyword context when an error crosses a process boundary.
        return (_rebuild, (type(self), self.message, self.backend, self.key, self.operation))


def _rebuild(
    cls: type[KVStoreError],
    message: str,
    backend: str | None,
    key: str | None,
    operation: str | None,
) -> KVStoreError:
    return cls(message, backend=backend, key=key, operation=operation)


class ConfigError(KVStoreError):
    """The configuration is invalid, incomplete or refers to a missing variable."""


class MissingDependencyError(ConfigError, ImportError):
    """A backend was chosen whose optional dependency is not installed.

    The message names the ``pip install "kvstore-sdk[extra]"`` command to run.
    """

    def __init__(self, backend: str, extra: str, module: str) -> None:
        super().__init__(
            f"the {backend} backend needs the {module!r} package, which is not installed; "
            f'run: pip install "kvstore-sdk[{extra}]"',
            backend=backend,
        )
        self.extra = extra
        self.module = module

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.backend, self.extra, self.module))


class BackendUnavailableError(KVStoreError):
    """The backend cannot be reached: refused, reset, timed out, server gone, or closed."""


class BackendBusyError(BackendUnavailableError):
    """The backend is up but saturated: pool exhausted, a lock held by another connection, too many clients.

    Not an outage: the failover never moves a call to the fallback because of it, and
    the circuit breaker does not count it. Retry later, or raise the pool size.
    """


class ClosedError(BackendUnavailableError):
    """The store was closed; open a new one (or reconnect the manager) to use it."""


class WatchRestartError(BackendUnavailableError):
    """A watch that followed the failover tier's fallback ended: the primary serves the tier again.

    A planned end, not an outage (``operation="watch"``, ``backend`` is the fallback's).
    Start a new watch: it follows the primary, whose positions are not the fallback's, so
    never resume from a position the ended watch yielded (use ``start=0``, ``-n`` or
    ``None``, or resume by content). A subclass of `BackendUnavailableError`, which
    catches it too.
    """


class InvalidKeyError(KVStoreError, ValueError):
    """A key is not a non-empty ``str`` of at most 1024 UTF-8 bytes without NUL or lone surrogates."""


class WrongTypeError(KVStoreError, TypeError):
    """A value operation met a list key, or a list operation met a value key."""


class SerializationError(KVStoreError, ValueError):
    """A value cannot be encoded as JSON (or stored bytes cannot be decoded)."""


class ValueTooLargeError(KVStoreError, ValueError):
    """An encoded value is larger than the store's ``max_value_bytes``."""
