"""PostgreSQL encodings: kvstore's connections speak UTF8 whatever the URL or the database's default says.

A SQL_ASCII database (stores the bytes it is given) works with non-ASCII keys and values; a
URL asking for ``client_encoding=LATIN1`` is overridden (a key LATIN1 cannot hold was a raw
``UnicodeEncodeError`` before); a LATIN1 database is refused with a `ConfigError` naming it; a
borrowed pool whose connections use another client encoding is refused with one naming that.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from kvstore import ConfigError
from kvstore.postgres import PostgresDatabase

pytestmark = [pytest.mark.postgres]

AWKWARD = "clé 日本 🎉"


def _with_db(url: str, dbname: str, **extra: str) -> str:
    info = conninfo_to_dict(url)
    info.update(dbname=dbname, **extra)
    return make_conninfo("", **info)


@pytest.fixture
def database(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database of the encoding ``request.param``; its conninfo."""
    name = f"kv_enc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {name} ENCODING '{request.param}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    try:
        yield _with_db(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("database", ["SQL_ASCII"], indirect=True)
def test_sql_ascii_database_keeps_non_ascii_keys_and_values(database: str) -> None:
    with PostgresDatabase(database) as db:
        db.set(AWKWARD, {"v": AWKWARD})
        db.append("list", AWKWARD)
        db.mset({f"{AWKWARD}:{i}": i for i in range(3)})
        assert db.get(AWKWARD) == {"v": AWKWARD}
        assert db.get_range("list", 0, -1) == [AWKWARD]
        assert db.mget([f"{AWKWARD}:{i}" for i in range(3)]) == [0, 1, 2]
        assert sorted(db.keys(f"{AWKWARD}:*")) == [f"{AWKWARD}:{i}" for i in range(3)]


@pytest.mark.parametrize("database", ["LATIN1"], indirect=True)
def test_latin1_database_is_refused_by_name(database: str) -> None:
    db = PostgresDatabase(database)
    try:
        with pytest.raises(ConfigError, match="UTF8 PostgreSQL database; this one is LATIN1"):
            db.set("k", 1)
    finally:
        db.close()


def test_url_asking_for_latin1_is_overridden(postgres_url: str) -> None:
    url = _with_db(postgres_url, conninfo_to_dict(postgres_url)["dbname"], client_encoding="LATIN1")
    with PostgresDatabase(url, key_prefix=f"enc-{uuid.uuid4().hex[:6]}:") as db:
        db.set(AWKWARD, AWKWARD)  # a raw UnicodeEncodeError when the connection used LATIN1
        assert db.get(AWKWARD) == AWKWARD
        db.clear()


def test_borrowed_pool_with_another_client_encoding_is_refused(postgres_url: str) -> None:
    pool = ConnectionPool(
        postgres_url,
        kwargs={"autocommit": True, "client_encoding": "SQL_ASCII"},
        min_size=1,
        max_size=1,
        open=True,
    )
    try:
        db = PostgresDatabase(pool, schema_name=f"enc_{uuid.uuid4().hex[:8]}")
        with pytest.raises(ConfigError, match="client_encoding UTF8 on its connections; these use SQL_ASCII"):
            db.get("k")
        db.close()
    finally:
        pool.close()
