"""PostgreSQL error map: one table from driver exceptions to kvstore errors, one context manager.

Every call of the store runs inside `map_errors` (httpx ``map_httpcore_exceptions``
style): a driver exception leaving it is looked up in `ERRORS`, most specific class
first, and re-raised as the kvstore error, chained (``raise ... from exc``), with the
operation and key as attributes and the password scrubbed from the message.

Busy is not an outage (DESIGN.md §8): too many connections (53300), a lock not obtained
within ``lock_timeout`` (55P03), a statement the server cancelled at ``statement_timeout``
(57014) and a transaction rolled back by a serialization failure or deadlock (40001,
40P01) mean the server is up and answering, so they raise `BackendBusyError` and never
trip the breaker. A connection the server refused as saturated carries no SQLSTATE, only
libpq's text: `is_busy` reads it. Whether a pool checkout that timed out met a saturated
pool (`busy_error`) or a server it cannot reach (`deadline_error`) is the store's call.
"""

from __future__ import annotations

import psycopg
import psycopg_pool

from kvstore._core.errormap import ErrorBoundary
from kvstore.errors import BackendBusyError, BackendUnavailableError, KVStoreError

__all__ = ["BACKEND", "ERRORS", "busy_error", "deadline_error", "is_busy", "map_error", "map_errors", "scrub"]

BACKEND = "postgres"

_BUSY = "PostgreSQL is up but busy during {operation} ({detail}); retry later"
_UNAVAILABLE = "PostgreSQL unavailable during {operation}: {detail}"
#: A statement cancelled by a cancel request, not at statement_timeout (pg_cancel_backend
#: by an administrator or a monitor): the server is up, nothing ran.
_CANCELLED = (
    "PostgreSQL cancelled {operation} on request ({detail}): pg_cancel_backend or another client's "
    "cancel, not a deadline; the server is up"
)

#: Driver exception -> (kvstore error, message), most specific first: the first match wins.
#: Every psycopg and psycopg_pool exception is a `psycopg.Error`, so none passes unmapped;
#: `OSError` covers a socket failing under the driver.
ERRORS: tuple[tuple[type[BaseException], type[KVStoreError], str], ...] = (
    (psycopg.errors.TooManyConnections, BackendBusyError, _BUSY),
    (psycopg.errors.LockNotAvailable, BackendBusyError, _BUSY),
    # Class 40 (psycopg makes each a sibling, not a subclass, of TransactionRollback).
    (psycopg.errors.SerializationFailure, BackendBusyError, _BUSY),
    (psycopg.errors.DeadlockDetected, BackendBusyError, _BUSY),
    (psycopg.errors.TransactionRollback, BackendBusyError, _BUSY),
    (
        psycopg.errors.QueryCanceled,
        BackendBusyError,
        # The server answered (it cancelled the statement at statement_timeout): up but slow
        # or contended. A server that cannot answer at all is cut by the call deadline instead.
        "PostgreSQL statement missed its deadline ({detail}); the server is busy, raise statement_timeout?",
    ),
    (psycopg.errors.InsufficientPrivilege, KVStoreError, "PostgreSQL refused {operation}: {detail}"),
    (
        psycopg_pool.TooManyRequests,
        BackendUnavailableError,
        "PostgreSQL pool is full and its wait queue too ({detail}); raise max_size or max_waiting",
    ),
    (
        psycopg_pool.PoolTimeout,
        BackendUnavailableError,
        "no PostgreSQL connection free within pool_timeout ({detail}); is the server up?",
    ),
    (psycopg_pool.PoolClosed, BackendUnavailableError, _UNAVAILABLE),
    (psycopg.OperationalError, BackendUnavailableError, _UNAVAILABLE),
    (psycopg.InterfaceError, BackendUnavailableError, _UNAVAILABLE),
    (OSError, BackendUnavailableError, _UNAVAILABLE),
    (psycopg.Error, KVStoreError, "PostgreSQL error during {operation}: {detail}"),
)
#: What `map_errors` translates (anything else passes through untouched).
DRIVER_ERRORS = (psycopg.Error, OSError)

#: libpq's words for a connection refused as too many (no SQLSTATE reaches psycopg then).
_BUSY_CONNECT_TEXT = ("too many clients", "too many connections", "remaining connection slots are reserved")


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced (belt and braces for messages)."""
    if secret:
        text = text.replace(secret, "***")
    return text


def is_busy(exc: BaseException) -> bool:
    """Whether a driver error says the server is up but saturated (too many connections, lock held)."""
    if isinstance(exc, psycopg.errors.TooManyConnections | psycopg.errors.LockNotAvailable):
        return True
    return isinstance(exc, psycopg.OperationalError) and any(t in str(exc) for t in _BUSY_CONNECT_TEXT)


def map_error(exc: BaseException, operation: str, key: str | None, secret: str | None = None) -> KVStoreError | None:
    """The kvstore error for a driver exception (see `ERRORS`); ``None`` for anything else."""
    if not isinstance(exc, DRIVER_ERRORS):
        return None
    text = str(exc).strip()
    detail = scrub(text.splitlines()[0] if text else type(exc).__name__, secret)
    cls: type[KVStoreError]
    if isinstance(exc, psycopg.OperationalError) and any(t in text for t in _BUSY_CONNECT_TEXT):
        cls, message = BackendBusyError, _BUSY
    elif isinstance(exc, psycopg.errors.QueryCanceled) and "statement timeout" not in text:
        cls, message = BackendBusyError, _CANCELLED
    else:
        cls, message = next((c, m) for kind, c, m in ERRORS if isinstance(exc, kind))
    return cls(message.format(operation=operation, detail=detail), backend=BACKEND, key=key, operation=operation)


def _translate(
    exc: BaseException, *, operation: str, key: str | None = None, secret: str | None = None
) -> KVStoreError:
    error = map_error(exc, operation, key, secret)
    assert error is not None, "the boundary passes driver errors only"
    return error


class map_errors(ErrorBoundary):  # lower case: used like a function: ``with map_errors("get", key, secret):``
    """The PostgreSQL error boundary: psycopg's exceptions become their kvstore errors, chained."""

    __slots__ = ()
    driver_errors = DRIVER_ERRORS
    translate = staticmethod(_translate)


def deadline_error(
    operation: str, key: str | None, timeout: float, *, checkout: bool = False
) -> BackendUnavailableError:
    """The error of a call that missed its client-side deadline: cut by the watchdog while
    waiting for the server, or (``checkout``) still waiting for a pooled connection."""
    if checkout:
        message = (
            f"PostgreSQL {operation}: no pooled connection free within the {timeout:g} s call deadline "
            "(new connections unanswered, or all busy); is the server up?"
        )
    else:
        message = (
            f"PostgreSQL did not answer {operation} within {timeout:g} s (client-side call deadline); "
            "the connection was closed. Is the server overloaded or frozen?"
        )
    return BackendUnavailableError(message, backend=BACKEND, key=key, operation=operation)


def busy_error(operation: str, key: str | None, timeout: float, *, queue_full: bool = False) -> BackendBusyError:
    """The error of a call that found every pooled connection busy with calls the server is answering."""
    if queue_full:
        message = (
            f"PostgreSQL {operation}: every pooled connection is busy and the wait queue is full "
            "(the server is up); retry later, or raise max_size or max_waiting"
        )
    else:
        message = (
            f"PostgreSQL {operation}: every pooled connection stayed busy for {timeout:.2f} s "
            "(the server is up and answering); retry later, or raise max_size"
        )
    return BackendBusyError(message, backend=BACKEND, key=key, operation=operation)
