"""A backend is one package + one registry entry: a throwaway one, added from a temporary package, runs the contract."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore import AsyncDatabase, AsyncStorageManager, StorageConfig
from kvstore._registry import REGISTRY, Backend, register
from tests._async import test_contract as contract
from tests._async.backends import AsyncHarness
from tests.clock import FakeClock

# The whole backend: a config model and a store implementing the raw hooks of
# kvstore.base_async.AsyncDatabase on a dict. No other file of kvstore changes.
TOY_PACKAGE = """
from __future__ import annotations

import time
from typing import Literal

from kvstore._core.keys import compile_glob
from kvstore._core.lists import lrange_bounds
from kvstore.base_async import AsyncDatabase, holds_list, holds_value, not_an_integer, MAX_INT
from kvstore.config import TierConfig


class ToyConfig(TierConfig):
    type: Literal["toy"] = "toy"
    fallback: None = None


class AsyncToyDatabase(AsyncDatabase):
    backend = "toy"
    durable = False

    def __init__(self, *, key_prefix: str = "", max_value_bytes: int = 16 << 20, clock=time.monotonic) -> None:
        self.key_prefix = key_prefix
        self.max_value_bytes = max_value_bytes
        self._clock = clock
        self._data: dict[str, tuple[object, float | None]] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def _live(self, key):
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry

    def _expiry(self, ms):
        return None if ms is None else self._clock() + ms / 1000

    async def _get(self, key):
        entry = self._live(key)
        if entry is not None and isinstance(entry[0], list):
            raise holds_list(key, "get", self.backend)
        return None if entry is None else entry[0]

    async def _set(self, key, data, ms, only_if_absent):
        if only_if_absent and self._live(key) is not None:
            return False
        self._data[key] = (data, self._expiry(ms))
        return True

    async def _delete(self, key):
        return self._live(key) is not None and self._data.pop(key) is not None

    async def _exists(self, key):
        return self._live(key) is not None

    async def _mget(self, keys):
        entries = [self._live(k) for k in keys]
        return [None if e is None or isinstance(e[0], list) else e[0] for e in entries]

    async def _mset(self, rows):
        for key, data, ms in rows:
            self._data[key] = (data, self._expiry(ms))

    async def _iter_keys(self, pattern):
        match = compile_glob(pattern)
        for key in list(self._data):
            if self._live(key) is not None and match(key):
                yield key

    async def _clear(self):
        self._data.clear()

    async def _ttl(self, key):
        entry = self._live(key)
        return None if entry is None or entry[1] is None else entry[1] - self._clock()

    async def _expire(self, key, ms):
        entry = self._live(key)
        if entry is None:
            return False
        self._data[key] = (entry[0], self._expiry(ms))
        return True

    async def _incr(self, key, by):
        entry = self._live(key)
        current = 0 if entry is None else int(entry[0])
        if not -MAX_INT - 1 <= current + by <= MAX_INT:
            raise not_an_integer(key, self.backend, "would leave the signed 64-bit range")
        self._data[key] = (str(current + by).encode(), None if entry is None else entry[1])
        return current + by

    async def _extend(self, key, items, idempotency_id):
        if idempotency_id is not None and (key, idempotency_id) in self._ids:
            return self._ids[(key, idempotency_id)]
        entry = self._live(key)
        if entry is not None and not isinstance(entry[0], list):
            raise holds_value(key, "append", self.backend)
        stored = [] if entry is None else entry[0]
        if not items:
            return len(stored)
        stored.extend(items)
        self._data[key] = (stored, None if entry is None else entry[1])
        if idempotency_id is not None:
            self._ids[(key, idempotency_id)] = len(stored)
        return len(stored)

    def _list(self, key, operation):
        entry = self._live(key)
        if entry is not None and not isinstance(entry[0], list):
            raise holds_value(key, operation, self.backend)
        return [] if entry is None else entry[0]

    async def _get_range(self, key, start, end):
        items = self._list(key, "get_range")
        lo, hi = lrange_bounds(len(items), start, end)
        return items[lo:hi]

    async def _get_length(self, key):
        return len(self._list(key, "get_length"))

    async def _trim(self, key, start, end):
        items = self._list(key, "trim")
        lo, hi = lrange_bounds(len(items), start, end)
        removed = len(items) - (hi - lo)
        if hi == lo:
            self._data.pop(key, None)
        else:
            items[:] = items[lo:hi]
        return removed

    async def ping(self):
        pass

    async def aclose(self):
        pass
"""


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[Backend]:
    """The toy backend, importable from a temporary package and registered for the database tier."""
    package = tmp_path / "toy_backend"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_store_async.py").write_text(textwrap.dedent(TOY_PACKAGE))
    sys.path.insert(0, str(tmp_path))
    entry = register(
        Backend("toy", "database", "toy_backend._store_async", "AsyncToyDatabase", "toy_backend._store_async:ToyConfig")
    )
    try:
        yield entry
    finally:
        REGISTRY.pop(("database", "toy"))
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("toy_backend")]:
            del sys.modules[name]


async def test_the_manager_opens_a_registered_backend(toy: Backend) -> None:
    """A config naming the new type validates with its own model and the manager opens its store."""
    config = StorageConfig.from_mapping({"cache": {"type": "memory"}, "database": {"type": "toy", "keyPrefix": "t:"}})
    assert type(config.database).__name__ == "ToyConfig"
    manager = AsyncStorageManager(config)
    storage = await manager.connect()
    try:
        assert await storage.database.incr("n", 2) == 2
        await storage.database.extend("chat", ["a", "b", "c"])
        assert await storage.database.get_range("chat", -2, -1) == ["b", "c"]
        health = (await storage.health()).database
        assert (health.configured, health.active, health.healthy) == ("toy", "toy", True)
    finally:
        await manager.disconnect()


@pytest.fixture
async def toy_db(toy: Backend) -> AsyncIterator[AsyncHarness]:
    """The toy store in the contract suite's harness, on a fake clock."""
    clock = FakeClock()
    module = importlib.import_module(toy.module_async)

    async def open_(**options: Any) -> AsyncDatabase:
        return module.AsyncToyDatabase(clock=clock, **options)

    harness = AsyncHarness("toy", await open_(), clock, open_)
    yield harness
    await harness.aclose()


CONTRACT_SLICE = [
    contract.test_get_missing_is_none,
    contract.test_set_replaces,
    contract.test_stored_value_is_a_copy,
    contract.test_delete_reports_whether_something_was_removed,
    contract.test_only_if_absent,
    contract.test_value_too_large,
    contract.test_mget_in_order_with_none_for_missing,
    contract.test_mset_writes_nothing_when_one_item_is_bad,
    contract.test_keys_patterns,
    contract.test_expired_keys_are_invisible_at_once,
    contract.test_expire,
    contract.test_append_returns_new_length_and_keeps_order,
    contract.test_empty_and_missing_lists,
    contract.test_one_keyspace,
    contract.test_incr_counts_from_zero_and_adds,
    contract.test_incr_refuses_to_leave_the_64_bit_range,
    contract.test_delete_many_counts_what_it_removed,
    contract.test_delete_many_checks_every_key_before_io,
    contract.test_get_touch_slides_the_ttl,
    contract.test_trim_then_append_and_read,
    contract.test_trim_of_missing_list_and_of_a_value,
]


@pytest.mark.parametrize("check", CONTRACT_SLICE, ids=lambda f: f.__name__)
async def test_contract_slice_on_the_toy_backend(toy_db: AsyncHarness, check: Any) -> None:
    """The base's rules (validation, encoding, TTLs, index checks) hold on a backend that wrote only hooks."""
    await check(toy_db)


@pytest.mark.parametrize(("start", "end"), [(0, -1), (2, 5), (-3, -1), (7, 3), (0, -11)])
async def test_toy_backend_trims_like_ltrim(toy_db: AsyncHarness, start: int, end: int) -> None:
    """The parametrized LTRIM check of the contract suite, on the toy backend."""
    await contract.test_trim_has_ltrim_semantics(toy_db, start, end)
