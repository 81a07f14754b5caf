"""PostgreSQL append under concurrency: threads and processes, exact, gapless, ordered, prefix reads."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from typing import Any

import pytest

from kvstore.postgres import PostgresDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _check_list(final: list[Any], writers: dict[str, int]) -> None:
    """Exactly each writer's items, none lost or duplicated, each writer's in its order."""
    assert len(final) == sum(writers.values())
    by_writer: dict[str, list[int]] = {}
    for item in final:
        by_writer.setdefault(item["w"], []).append(item["i"])
    assert {w: len(items) for w, items in by_writer.items()} == {w: n for w, n in writers.items() if n}
    for items in by_writer.values():
        assert items == sorted(items)
        assert len(set(items)) == len(items)


def _reader(url: str, prefix: str, keys: list[str], stop: threading.Event, reads: list[tuple[str, list[Any]]]) -> None:
    with PostgresDatabase(url, key_prefix=prefix, max_size=1) as db:
        while not stop.is_set():
            for key in keys:
                reads.append((key, db.get_range(key, 0, -1)))


@pytest.fixture
def prefix() -> str:
    return f"conc-{uuid.uuid4().hex[:8]}:"


def test_16_threads_x_100_appends_with_concurrent_readers(postgres_url: str, prefix: str) -> None:
    """16 threads appending 100 items each to one list lose, duplicate and reorder nothing; reads are prefixes."""
    threads_n, per_thread = 16, 100
    with PostgresDatabase(postgres_url, key_prefix=prefix, max_size=16, pool_timeout=30) as db:
        lengths: list[int] = []

        def writer(w: int) -> None:
            for i in range(per_thread):
                lengths.append(db.append("chat", {"w": str(w), "i": i}))

        stop, reads = threading.Event(), list[tuple[str, list[Any]]]()
        readers = [
            threading.Thread(target=_reader, args=(postgres_url, prefix, ["chat"], stop, reads)) for _ in range(2)
        ]
        writers = [threading.Thread(target=writer, args=(w,)) for w in range(threads_n)]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        for t in readers:
            t.join()
        final = db.get_range("chat", 0, -1)
        _check_list(final, {str(w): per_thread for w in range(threads_n)})
        assert sorted(lengths) == list(range(1, threads_n * per_thread + 1))  # every length returned once
        assert db.get_length("chat") == threads_n * per_thread
        assert len(reads) > 10
        for _, read in reads:
            assert read == final[: len(read)]
        db.clear()


def _process_writer(url: str, prefix: str, proc: int, threads_n: int, per_thread: int, lists: int) -> None:
    with PostgresDatabase(url, key_prefix=prefix, max_size=threads_n, pool_timeout=30) as db:

        def writer(t: int) -> None:
            w = f"p{proc}t{t}"
            for i in range(per_thread):
                db.append(f"list{(t + i) % lists}", {"w": w, "i": i})

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def test_4_processes_x_4_threads_over_20_lists(postgres_url: str, prefix: str) -> None:
    """4 processes x 4 threads over 20 lists: every list exact, gapless, per-writer order, reads are prefixes."""
    procs_n, threads_n, per_thread, lists = 4, 4, 100, 20
    ctx = multiprocessing.get_context("spawn")
    stop, reads = threading.Event(), list[tuple[str, list[Any]]]()
    keys = [f"list{n}" for n in range(lists)]
    readers = [threading.Thread(target=_reader, args=(postgres_url, prefix, keys, stop, reads)) for _ in range(2)]
    procs = [
        ctx.Process(target=_process_writer, args=(postgres_url, prefix, p, threads_n, per_thread, lists))
        for p in range(procs_n)
    ]
    for t in readers:
        t.start()
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    for t in readers:
        t.join()
    with PostgresDatabase(postgres_url, key_prefix=prefix) as db:
        finals = {key: db.get_range(key, 0, -1) for key in keys}
        for n, key in enumerate(keys):
            expected = {}
            for p in range(procs_n):
                for t in range(threads_n):
                    expected[f"p{p}t{t}"] = sum(1 for i in range(per_thread) if (t + i) % lists == n)
            _check_list(finals[key], expected)
            assert db.get_length(key) == len(finals[key])
        assert sum(len(v) for v in finals.values()) == procs_n * threads_n * per_thread
        assert len(reads) > 20
        for key, read in reads:
            assert read == finals[key][: len(read)]
        db.clear()
