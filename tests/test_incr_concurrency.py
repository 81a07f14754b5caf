"""incr is atomic under real concurrency: 8 threads x 1,000 on one store, 4 processes x 1,000 each on its own.

Every call returns a distinct value and the counter ends at exactly the number of calls
(DESIGN.md §1: ``incr`` is atomic). A backend joins by adding a `Target` to ``TARGETS``
(see "Backends" below): how to open a store in this process, and the Python lines a child
process runs to open a store of its own on the same data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvstore.sqlite import SqliteDatabase

ROOT = Path(__file__).resolve().parent.parent
THREADS, PROCESSES, CALLS = 8, 4, 1_000


@dataclass(frozen=True)
class Target:
    """One backend under test."""

    #: A store in this process, on the data every child reaches through ``child_arg``.
    open: Callable[[Path], Any]
    #: Python lines run in a child, with ``ARG`` bound to ``child_arg(tmp_path)``: they bind ``store``.
    child_open: str
    #: What tells a child where the data is (a file path, a URL...).
    child_arg: Callable[[Path], str]


# --- Backends ---------------------------------------------------------------------------------
#
# SQLite: one file; the threads share one SqliteDatabase, each process opens its own.


def _sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "counters" / "kv.db"


SQLITE = Target(
    open=lambda tmp_path: SqliteDatabase(_sqlite_path(tmp_path)),
    child_open="from kvstore.sqlite import SqliteDatabase\nstore = SqliteDatabase(ARG)",
    child_arg=lambda tmp_path: str(_sqlite_path(tmp_path)),
)

# Other backends (PostgreSQL, Redis...) add their Target here, with the marks they need
# (e.g. a server fixture): pytest.param(POSTGRES, id="postgres", marks=[...]).
TARGETS = [pytest.param(SQLITE, id="sqlite")]


# --- the tests --------------------------------------------------------------------------------

# A child: waits for the go file (so all start together), opens its own store, increments
# CALLS times and prints every value incr returned as one JSON line.
CHILD = textwrap.dedent(
    """
    import json, os, sys, time

    ARG, key, calls, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    {open}
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    seen = [store.incr(key) for _ in range(calls)]
    store.close()
    print(json.dumps(seen), flush=True)
    """
)


@pytest.mark.parametrize("target", TARGETS)
def test_incr_from_8_threads_sums_exactly(target: Target, tmp_path: Path) -> None:
    """8 threads x 1,000 incr on one store: every call returns a distinct value and the sum is exact."""
    store = target.open(tmp_path)
    key = f"threads:{uuid.uuid4().hex}"
    start = threading.Barrier(THREADS)
    seen: list[list[int]] = [[] for _ in range(THREADS)]

    def work(i: int) -> None:
        start.wait()
        seen[i].extend(store.incr(key) for _ in range(CALLS))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert sorted(v for values in seen for v in values) == list(range(1, THREADS * CALLS + 1))
        assert store.get(key) == THREADS * CALLS
    finally:
        store.close()


@pytest.mark.parametrize("target", TARGETS)
def test_incr_from_4_processes_sums_exactly(target: Target, tmp_path: Path) -> None:
    """4 processes x 1,000 incr, each with its own store on the same data: distinct values, exact sum."""
    store = target.open(tmp_path)  # creates the schema first, as a deployed app's store would
    key = f"processes:{uuid.uuid4().hex}"
    go = tmp_path / "go"
    script = CHILD.format(open=target.child_open)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [target.child_arg(tmp_path), key, str(CALLS), str(go)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        go.touch()
        seen: list[int] = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            seen += json.loads(out)
        assert sorted(seen) == list(range(1, PROCESSES * CALLS + 1))
        assert store.get(key) == PROCESSES * CALLS
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        store.close()
