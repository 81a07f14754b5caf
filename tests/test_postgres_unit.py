"""PostgreSQL backend, I/O-free parts: error mapping, conninfo deadlines, SQL rendering, config."""

from __future__ import annotations

import psycopg
import psycopg_pool
import pytest

from kvstore import _postgres_sql as pg
from kvstore.config import PostgresDatabaseConfig
from kvstore.errors import BackendUnavailableError, ConfigError, KVStoreError

SECRET = "s3cr3t-canary"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (psycopg_pool.TooManyRequests("queue full"), BackendUnavailableError),
        (psycopg_pool.PoolTimeout("couldn't get a connection"), BackendUnavailableError),
        (psycopg_pool.PoolClosed("closed"), BackendUnavailableError),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), BackendUnavailableError),
        (psycopg.errors.AdminShutdown("terminating connection"), BackendUnavailableError),
        (psycopg.OperationalError(f"connection failed password={SECRET}"), BackendUnavailableError),
        (psycopg.InterfaceError("the connection is closed"), BackendUnavailableError),
        (TimeoutError("timed out"), BackendUnavailableError),
        (ConnectionRefusedError("refused"), BackendUnavailableError),
        (psycopg.errors.InsufficientPrivilege("permission denied for schema"), KVStoreError),
        (psycopg.errors.UndefinedTable("relation does not exist"), KVStoreError),
        (psycopg.errors.DataException("bad data"), KVStoreError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_driver_exceptions_are_mapped(exc: BaseException, expected: type[KVStoreError]) -> None:
    """Every driver exception we care about becomes the right kvstore error, with context, secret scrubbed."""
    with pytest.raises(expected) as info, pg.translate("get", "k", SECRET):
        raise exc
    assert type(info.value) is expected
    assert info.value.__cause__ is exc
    assert (info.value.backend, info.value.key, info.value.operation) == ("postgres", "k", "get")
    assert SECRET not in str(info.value)


def test_non_driver_errors_pass_through() -> None:
    """Errors that are not the driver's (our own, programming errors) are not translated."""
    with pytest.raises(ValueError, match="mine"), pg.translate("get"):
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
    assert info["options"] == "-c search_path=x -c statement_timeout=1500"


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
