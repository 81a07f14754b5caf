"""The one shape of an error boundary: a context manager that raises a backend's kvstore error for a driver's.

Each backend keeps its own table (driver exception -> kvstore error, most specific
first) and a translate function reading it; `ErrorBoundary` is the ``with`` around a
call that applies it (httpx ``map_httpcore_exceptions``). kvstore's own errors and
everything that is not a driver exception pass through untouched.
"""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Protocol

from kvstore.errors import KVStoreError

__all__ = ["ErrorBoundary", "Translate"]


class Translate(Protocol):
    """A backend's translation of one driver exception."""

    def __call__(
        self, exc: BaseException, *, operation: str, key: str | None = None, secret: str | None = None
    ) -> KVStoreError: ...


class ErrorBoundary:
    """``with Boundary(operation, key, secret):`` — a subclass names its driver's errors and translation."""

    __slots__ = ("key", "operation", "secret")

    #: The driver exceptions this boundary translates.
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: How one is translated (a staticmethod of the subclass).
    translate: ClassVar[Translate]

    def __init__(self, operation: str, key: str | None = None, secret: str | None = None) -> None:
        self.operation = operation
        self.key = key
        self.secret = secret

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, self.driver_errors):
            raise type(self).translate(exc, operation=self.operation, key=self.key, secret=self.secret) from exc
