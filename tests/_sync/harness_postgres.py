# Generated from tests/_async/harness_postgres.py by tools/unasync.py: do not edit; edit the async source.
"""Contract-suite harness for the PostgreSQL database tier (server from tests/fixtures_postgres.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kvstore.postgres import PostgresDatabase
from tests._sync.backends import Factory, Harness
from tests.clock import FakeClock


def _postgres_database(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    url = request.getfixturevalue("postgres_url")

    def open_(**options: Any) -> PostgresDatabase:
        store = PostgresDatabase(url, **{"max_size": 4, "pool_timeout": 5.0, **options})
        store.open()
        return store

    # Expiry runs on the server's clock, so the harness sleeps for real (clock=None).
    return Harness("postgres", open_(), None, open_)


#: database backends: name -> (factory, marks)
DATABASES: dict[str, tuple[Factory, list[pytest.MarkDecorator]]] = {
    "postgres": (_postgres_database, [pytest.mark.postgres]),
}
