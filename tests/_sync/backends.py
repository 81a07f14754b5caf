# Generated from tests/_async/backends.py by tools/unasync.py: do not edit; edit the async source.
"""Backend harnesses for the contract suite: each backend adds one factory here."""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvstore import Cache, Database, MemoryCache, MemoryDatabase, Store
from tests.clock import FakeClock


@dataclass
class Harness:
    """One backend under test: the store, a clock, and a way to open siblings on the same data."""

    name: str
    store: Any
    clock: FakeClock | None
    _open: Callable[..., Any]
    _opened: list[Store] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: on the fake clock when the backend takes one, else for real."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    def sibling(self, **options: Any) -> Any:
        """Another store of this backend on the same server/file (e.g. another ``key_prefix``)."""
        store = self._open(**options)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in [*self._opened, self.store]:
            store.clear()
            store.close()


Factory = Callable[[pytest.FixtureRequest, FakeClock], Harness]


def _memory_cache(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    def open_(**options: Any) -> Cache:
        return MemoryCache(clock=clock, **options)

    return Harness("memory", open_(), clock, open_)


def _memory_database(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    def open_(**options: Any) -> Database:
        return MemoryDatabase(clock=clock, **options)

    return Harness("memory", open_(), clock, open_)


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
