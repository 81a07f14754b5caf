"""Several processes, each with its own manager, writing during one outage of a shared primary:
the fallback they share mirrors the outage journal in the journal's order (what replay writes to
the primary), so a reader of the fallback never sees a conversation reordered by the failback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvstore import BackendBusyError, SqliteDatabase, StorageManager
from kvstore._resilience.journal import JOURNAL_TIMEOUT, Journal
from kvstore.config import load_config
from kvstore.manager import state_dir

WORKERS, APPENDS = 6, 200

_WORKER = """
import asyncio, json, sys, time
from kvstore import AsyncStorageManager, StorageManager
config, worker, start, n = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
if worker % 2:
    async def main():
        async with AsyncStorageManager(config) as storage:
            assert (await storage.health()).database.active == "sqlite"
            await asyncio.sleep(max(0.0, start - time.time()))
            for i in range(n):
                await storage.database.append("chat", {"w": worker, "i": i})
    asyncio.run(main())
else:
    with StorageManager(config) as storage:
        assert storage.health().database.active == "sqlite"
        time.sleep(max(0.0, start - time.time()))
        for i in range(n):
            storage.database.append("chat", {"w": worker, "i": i})
"""


def _config(tmp_path: Path) -> dict[str, Any]:
    return {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": "postgresql://nobody@127.0.0.1:1/none",  # refused: the outage from the start
            "connect_timeout": 0.5,
            "degraded_reads": "fallback",
            "state_dir": str(tmp_path / "state"),
        },
    }


@pytest.mark.parametrize("round_", range(2))
def test_processes_writing_in_one_outage_mirror_the_journal_in_its_order(tmp_path: Path, round_: int) -> None:
    """Six processes (sync and async managers) append 200 messages each to one conversation
    during an outage: the shared fallback holds exactly the journal's order (before the writers
    took turns, 3-13 of the 1,200 positions differed per run)."""
    config = _config(tmp_path)
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(config), str(w), str(start), str(APPENDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(WORKERS)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    state = state_dir(load_config(config).database)
    journal = Journal(state / "journal.db")
    try:
        journaled = [item for entry in journal.pending(limit=10_000) for item in entry.data["v"]]
    finally:
        journal.close()
    fallback = SqliteDatabase(str(state / "fallback.db"))
    try:
        mirrored = fallback.get_range("chat", 0, -1)
    finally:
        fallback.close()
    assert len(journaled) == WORKERS * APPENDS
    for w in range(WORKERS):  # each writer's own order, everywhere
        assert [m["i"] for m in journaled if m["w"] == w] == list(range(APPENDS))
    flips = sum(a != b for a, b in zip(mirrored, journaled, strict=True))
    assert mirrored == journaled, f"the fallback's order differs from the journal's at {flips} positions"


def test_a_process_holding_the_turn_too_long_makes_a_write_busy_and_writes_nothing(tmp_path: Path) -> None:
    """Another process keeps the writers' turn past JOURNAL_TIMEOUT: the write raises
    BackendBusyError, and neither the journal nor the fallback has it."""
    config = _config(tmp_path)
    with StorageManager(config) as storage:
        storage.database.set("first", 1)  # journal and fallback exist
        path = state_dir(load_config(config).database) / "journal.db"
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(path) + ".lock", "4"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == b"held"
            began = time.monotonic()
            with pytest.raises(BackendBusyError, match="outage journal"):
                storage.database.set("second", 2)
            assert JOURNAL_TIMEOUT <= time.monotonic() - began < JOURNAL_TIMEOUT + 1
        finally:
            holder.kill()
            holder.communicate()
        assert storage.database.get("first") == 1
        assert storage.database.get("second") is None
        journal = Journal(path)
        try:
            assert [entry.data["k"] for entry in journal.pending()] == ["first"]
        finally:
            journal.close()
        storage.database.set("third", 3)  # the holder died: the kernel freed its turn
        assert storage.database.get("third") == 3


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: POSIX only")
def test_a_child_forked_while_the_parent_holds_the_turn_does_not_keep_it(tmp_path: Path) -> None:
    """A child forked while the parent holds the writers' turn closes its copy of the descriptor,
    so the turn is free as soon as the parent ends it (the child still running)."""
    journal = Journal.create(tmp_path / "journal.db")
    try:
        turn = journal.try_take_turn()
        assert turn is not None
        pid = os.fork()
        if pid == 0:  # the child: stay alive past the parent's checks
            time.sleep(3)
            os._exit(0)
        try:
            journal.end_turn(turn)
            deadline = time.monotonic() + 1.0  # the child closes its copy as it starts
            while (again := journal.try_take_turn()) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert again is not None, "the forked child kept the turn"
            journal.end_turn(again)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        journal.close()
