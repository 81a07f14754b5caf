"""The async manager reads an earlier process's outage journal off the event loop at connect."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from kvstore import AsyncStorageManager, StorageManager
from kvstore._resilience.journal import Journal
from kvstore.config import load_config
from kvstore.manager_async import state_dir


def _config(tmp_path: Path) -> dict[str, Any]:
    return {
        "cache": {"type": "memory"},
        "database": {"type": "sqlite", "path": str(tmp_path / "primary.db"), "state_dir": str(tmp_path / "state")},
    }


def _spy_journal(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every journal connection opened and count read."""
    threads: list[int] = []
    for name in ("_connection", "counts"):
        original = getattr(Journal, name)

        def spy(self: Journal, *args: Any, _original: Any = original) -> Any:
            threads.append(threading.get_ident())
            return _original(self, *args)

        monkeypatch.setattr(Journal, name, spy)
    return threads


def test_connect_reads_an_existing_journal_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal file left by an earlier process is opened and counted on a worker thread, never
    on the loop (another process may hold it, or a crash left a WAL to recover)."""
    config = _config(tmp_path)
    path = state_dir(load_config(config).database) / "journal.db"
    Journal.create(path).close()
    threads = _spy_journal(monkeypatch)

    async def main() -> int:
        async with AsyncStorageManager(config) as storage:
            await storage.database.set("k", 1)
            assert await storage.database.get("k") == 1
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads, "the journal was not read at connect"
    assert loop_thread not in threads


def test_connect_creates_no_journal_when_there_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A healthy primary with no journal: connect (sync and async) opens and creates nothing."""
    config = _config(tmp_path)
    threads = _spy_journal(monkeypatch)
    with StorageManager(config) as storage:
        storage.database.set("k", 1)

    async def main() -> None:
        async with AsyncStorageManager(config) as storage:
            assert await storage.database.get("k") == 1

    asyncio.run(main())
    assert threads == []
    assert not (state_dir(load_config(config).database) / "journal.db").exists()
