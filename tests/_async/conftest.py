"""Fixtures of the contract suite: every backend, through one parametrized fixture per tier."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests._async.backends import CACHES, DATABASES, AsyncHarness
from tests.clock import FakeClock


def _params(backends: dict[str, tuple[object, list[pytest.MarkDecorator]]], tier: str) -> list[object]:
    return [pytest.param((tier, name), id=f"{tier}-{name}", marks=marks) for name, (_, marks) in backends.items()]


async def _harness(request: pytest.FixtureRequest) -> AsyncIterator[AsyncHarness]:
    tier, name = request.param
    factory = (CACHES if tier == "cache" else DATABASES)[name][0]
    harness = await factory(request, FakeClock())
    await harness.store.clear()
    try:
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(params=_params(CACHES, "cache") + _params(DATABASES, "database"))
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[AsyncHarness]:
    """Any store of either tier."""
    async for harness in _harness(request):
        yield harness


@pytest.fixture(params=_params(DATABASES, "database"))
async def db(request: pytest.FixtureRequest) -> AsyncIterator[AsyncHarness]:
    """A database-tier store (values and lists)."""
    async for harness in _harness(request):
        yield harness
