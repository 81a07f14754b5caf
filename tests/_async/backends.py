"""Backend harnesses for the contract suite: each backend adds one factory here."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvstore import AsyncCache, AsyncDatabase, AsyncMemoryCache, AsyncMemoryDatabase, AsyncStore
from tests.clock import FakeClock


@dataclass
class AsyncHarness:
    """One backend under test: the store, a clock, and a way to open siblings on the same data."""

    name: str
    store: Any
    clock: FakeClock | None
    _open: Callable[..., Awaitable[Any]]
    _opened: list[AsyncStore] = field(default_factory=list)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: on the fake clock when the backend takes one, else for real."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def sibling(self, **options: Any) -> Any:
        """Another store of this backend on the same server/file (e.g. another ``key_prefix``)."""
        store = await self._open(**options)
        self._opened.append(store)
        return store

    async def aclose(self) -> None:
        for store in [*self._opened, self.store]:
            await store.clear()
            await store.aclose()


Factory = Callable[[pytest.FixtureRequest, FakeClock], Awaitable[AsyncHarness]]


async def _memory_cache(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    async def open_(**options: Any) -> AsyncCache:
        return AsyncMemoryCache(clock=clock, **options)

    return AsyncHarness("memory", await open_(), clock, open_)


async def _memory_database(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    async def open_(**options: Any) -> AsyncDatabase:
        return AsyncMemoryDatabase(clock=clock, **options)

    return AsyncHarness("memory", await open_(), clock, open_)


#: cache backends: name -> (factory, marks)
CACHES: dict[str, tuple[Factory, list[pytest.MarkDecorator]]] = {
    "memory": (_memory_cache, []),
}

#: database backends: name -> (factory, marks)
DATABASES: dict[str, tuple[Factory, list[pytest.MarkDecorator]]] = {
    "memory": (_memory_database, []),
}

# Every other backend registers itself in a sibling module ``harness_<backend>.py``
# defining ``CACHES`` and/or ``DATABASES`` in the same shape.
for _info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
    if _info.name.startswith("harness_"):
        _module = importlib.import_module(f"{__package__}.{_info.name}")
        CACHES.update(getattr(_module, "CACHES", {}))
        DATABASES.update(getattr(_module, "DATABASES", {}))
