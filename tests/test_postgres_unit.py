"""PostgreSQL backend, I/O-free parts: error mapping, conninfo deadlines, SQL rendering, config."""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import psycopg_pool
import pytest

from kvstore.config import PostgresDatabaseConfig
from kvstore.errors import BackendBusyError, BackendUnavailableError, ConfigError, KVStoreError
from kvstore.postgres import _errors as errors
from kvstore.postgres import _sql as pg

SECRET = "s3cr3t-canary"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (psycopg_pool.TooManyRequests("queue full"), BackendUnavailableError),
        (psycopg_pool.PoolTimeout("couldn't get a connection"), BackendUnavailableError),
        (psycopg_pool.PoolClosed("closed"), BackendUnavailableError),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), BackendBusyError),
        (psycopg.errors.AdminShutdown("terminating connection"), BackendUnavailableError),
        (psycopg.OperationalError(f"connection failed password={SECRET}"), BackendUnavailableError),
        (psycopg.InterfaceError("the connection is closed"), BackendUnavailableError),
        (TimeoutError("timed out"), BackendUnavailableError),
        (ConnectionRefusedError("refused"), BackendUnavailableError),
        (psycopg.errors.InsufficientPrivilege("permission denied for schema"), KVStoreError),
        (psycopg.errors.UndefinedTable("relation does not exist"), KVStoreError),
        (psycopg.errors.DataException("bad data"), KVStoreError),
        (psycopg.errors.LockNotAvailable("could not obtain lock on row"), BackendBusyError),
        (psycopg.errors.TooManyConnections("too many connections for role"), BackendBusyError),
        (psycopg.errors.DeadlockDetected("deadlock detected"), BackendBusyError),
        (psycopg.errors.SerializationFailure("could not serialize access"), BackendBusyError),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), BackendUnavailableError),
        (psycopg.errors.IdleSessionTimeout("idle-session timeout"), BackendUnavailableError),
        (psycopg.errors.UniqueViolation("duplicate key"), KVStoreError),
        (psycopg.ProgrammingError("syntax error"), KVStoreError),
        (psycopg.InternalError("internal"), KVStoreError),
        (psycopg.Error("anything else"), KVStoreError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_driver_exceptions_are_mapped(exc: BaseException, expected: type[KVStoreError]) -> None:
    """Every driver exception we care about becomes the right kvstore error, with context, secret scrubbed."""
    with pytest.raises(expected) as info, errors.map_errors("get", "k", SECRET):
        raise exc
    assert type(info.value) is expected
    assert info.value.__cause__ is exc
    assert (info.value.backend, info.value.key, info.value.operation) == ("postgres", "k", "get")
    assert SECRET not in str(info.value)


def _driver_exception_classes() -> list[type[BaseException]]:
    seen: set[type[BaseException]] = set()
    todo: list[type[BaseException]] = [psycopg.Error]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: f"{c.__module__}.{c.__qualname__}")


@pytest.mark.parametrize("cls", _driver_exception_classes(), ids=lambda c: c.__qualname__)
def test_every_driver_exception_class_is_mapped(cls: type[BaseException]) -> None:
    """Every psycopg and psycopg_pool exception class maps to a kvstore error through the one table, chained."""
    exc = cls(f"boom password={SECRET}")
    with pytest.raises(KVStoreError) as info, errors.map_errors("set", "k", SECRET):
        raise exc
    assert info.value.__cause__ is exc
    assert SECRET not in str(info.value)
    # The table entry that decided is the first whose class the exception is an instance of.
    first = next(target for kind, target, _ in errors.ERRORS if isinstance(exc, kind))
    assert type(info.value) is first


def test_the_error_table_lists_the_most_specific_class_first() -> None:
    """No entry of ERRORS is shadowed by an earlier, more general one (each can fire)."""
    kinds = [kind for kind, _, _ in errors.ERRORS]
    for i, kind in enumerate(kinds):
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), kind


def test_non_driver_errors_pass_through() -> None:
    """Errors that are not the driver's (our own, programming errors) are not translated."""
    with pytest.raises(ValueError, match="mine"), errors.map_errors("get"):
        raise ValueError("mine")


def test_conninfo_sets_every_deadline_and_drops_the_password() -> None:
    """The conninfo carries connect/TCP/statement deadlines and keepalives, never the password."""
    conninfo, password = pg.build_conninfo(
        f"postgresql://app:{SECRET}@db.example/app?options=-c%20search_path%3Dx",
        connect_timeout=0.5,
        statement_timeout=1.5,
        tcp_user_timeout=3,
        port=6543,
    )
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    assert password == SECRET
    assert SECRET not in conninfo
    assert info["host"] == "db.example"
    assert info["port"] == "6543"
    assert info["connect_timeout"] == "2"  # libpq's minimum
    assert info["tcp_user_timeout"] == "3000"
    assert info["keepalives"] == "1"
    assert info["options"] == (
        r"-c search_path=x -c statement_timeout=1500 -c default_transaction_isolation=read\ committed"
        " -c lock_timeout=1200"
    )


def test_identifiers_are_quoted_never_formatted() -> None:
    """Schema and table names reach SQL only as quoted identifiers."""
    q = pg.Queries.build('my "schema"; DROP TABLE x', "p_")
    assert '"my ""schema""; DROP TABLE x"."p_entries"' in q.get
    with pytest.raises(ConfigError):
        pg.Queries.build("", "p_")
    with pytest.raises(ConfigError):
        pg.Queries.build("x" * 64, "p_")


def test_config_validates_table_prefix_and_sizes() -> None:
    """table_prefix is an identifier fragment and min_size <= max_size."""
    with pytest.raises(ValueError, match="table_prefix"):
        PostgresDatabaseConfig(table_prefix="bad-prefix; --")
    with pytest.raises(ValueError, match="min_size"):
        PostgresDatabaseConfig(min_size=5, max_size=2)


def test_import_kvstore_does_not_import_psycopg() -> None:
    """import kvstore leaves psycopg unimported (the driver loads with the backend module)."""
    import subprocess
    import sys

    code = "import sys, kvstore; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_call_deadline_defaults_to_statement_timeout_plus_margin_and_rejects_nonsense() -> None:
    """call_timeout is statement_timeout + 0.25 s unless given; zero, negative or infinite is a ConfigError."""
    assert pg.call_timeout(5.0) == 5.0 + pg.CALL_MARGIN == 5.25
    assert pg.call_timeout(5.0, 0.5) == 0.5
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError):
            pg.call_timeout(5.0, bad)


def test_deadline_errors_are_unavailability_naming_the_operation_and_the_deadline() -> None:
    """A missed call deadline (cut, or no pooled connection in time) is a BackendUnavailableError with the op."""
    for checkout in (False, True):
        err = errors.deadline_error("get", "k", 0.5, checkout=checkout)
        assert isinstance(err, BackendUnavailableError)
        assert (err.backend, err.key, err.operation) == ("postgres", "k", "get")
        assert "0.5 s" in str(err)


@pytest.mark.parametrize(
    "given", ["-c lock_timeout=250", "-clock_timeout=250", "--lock-timeout=250", "-c LOCK_TIMEOUT = 250"]
)
def test_a_lock_timeout_in_the_options_is_kept(given: str) -> None:
    """The URL's own lock_timeout wins over kvstore's default (0.8 x statement_timeout)."""
    conninfo, _ = pg.build_conninfo(f"postgresql://app@db.example/app?options={quote(given)}", statement_timeout=2)
    options = psycopg.conninfo.conninfo_to_dict(conninfo)["options"]
    assert "lock_timeout=1600" not in options
    assert given in options
    assert "statement_timeout=2000" in options


def test_kvstore_sets_lock_timeout_when_the_options_do_not() -> None:
    conninfo, _ = pg.build_conninfo("postgresql://app@db.example/app?options=-c%20search_path%3Dx", statement_timeout=2)
    options = psycopg.conninfo.conninfo_to_dict(conninfo)["options"]
    assert options == (
        r"-c search_path=x -c statement_timeout=2000 -c default_transaction_isolation=read\ committed"
        " -c lock_timeout=1600"
    )
