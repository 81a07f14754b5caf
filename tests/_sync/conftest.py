# Generated from tests/_async/conftest.py by tools/unasync.py: do not edit; edit the async source.
"""Fixtures of the contract suite: every backend, through one parametrized fixture per tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._sync.backends import CACHES, DATABASES, Harness
from tests.clock import FakeClock


def _params(backends: dict[str, tuple[object, list[pytest.MarkDecorator]]], tier: str) -> list[object]:
    return [pytest.param((tier, name), id=f"{tier}-{name}", marks=marks) for name, (_, marks) in backends.items()]


def _harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    tier, name = request.param
    factory = (CACHES if tier == "cache" else DATABASES)[name][0]
    harness = factory(request, FakeClock())
    harness.store.clear()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(params=_params(CACHES, "cache") + _params(DATABASES, "database"))
def kv(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Any store of either tier."""
    yield from _harness(request)


@pytest.fixture(params=_params(DATABASES, "database"))
def db(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A database-tier store (values and lists)."""
    yield from _harness(request)
