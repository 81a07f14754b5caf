"""Contract-suite harness for the PostgreSQL database tier (server from tests/fixtures_postgres.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kvstore.postgres import AsyncPostgresDatabase
from tests._async.backends import AsyncHarness, Factory
from tests.clock import FakeClock


async def _postgres_database(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    url = request.getfixturevalue("postgres_url")

    async def open_(**options: Any) -> AsyncPostgresDatabase:
        store = AsyncPostgresDatabase(url, **{"max_size": 4, "pool_timeout": 5.0, **options})
        await store.open()
        return store

    # Expiry runs on the server's clock, so the harness sleeps for real (clock=None).
    return AsyncHarness("postgres", await open_(), None, open_)


#: database backends: name -> (factory, marks)
DATABASES: dict[str, tuple[Factory, list[pytest.MarkDecorator]]] = {
    "postgres": (_postgres_database, [pytest.mark.postgres]),
}
