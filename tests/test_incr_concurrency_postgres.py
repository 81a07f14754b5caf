"""PostgreSQL incr under concurrency (threads, processes) sums exactly; trim racing appends stays exact."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
import uuid

import psycopg
import pytest

from kvstore.errors import BackendUnavailableError
from kvstore.postgres import PostgresDatabase

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def prefix() -> str:
    return f"incr-{uuid.uuid4().hex[:8]}:"


def test_8_threads_x_1000_incr_on_one_store_sum_exactly(postgres_url: str, prefix: str) -> None:
    """8 threads x 1,000 incr on one store: the counter is 8,000 and every result 1..8,000 came back once."""
    threads_n, per_thread = 8, 1000
    with PostgresDatabase(postgres_url, key_prefix=prefix, max_size=threads_n, pool_timeout=30) as db:
        results: list[list[int]] = [[] for _ in range(threads_n)]

        def worker(t: int) -> None:
            for _ in range(per_thread):
                results[t].append(db.incr("n"))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert db.get("n") == threads_n * per_thread
        assert sorted(r for rs in results for r in rs) == list(range(1, threads_n * per_thread + 1))
        for rs in results:
            assert rs == sorted(rs)  # each thread sees its own increments in order
        db.clear()


def _incr_process(url: str, prefix: str, times: int) -> None:
    with PostgresDatabase(url, key_prefix=prefix, max_size=1) as db:
        for _ in range(times):
            db.incr("n", 3)


def test_4_processes_x_1000_incr_on_one_table_sum_exactly(postgres_url: str, prefix: str) -> None:
    """4 processes, each its own store on the same table, 1,000 incr by 3 each: the counter is 12,000."""
    procs_n, times = 4, 1000
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_incr_process, args=(postgres_url, prefix, times)) for _ in range(procs_n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with PostgresDatabase(postgres_url, key_prefix=prefix) as db:
        assert db.get("n") == procs_n * times * 3
        db.clear()


def test_trim_racing_appends_keeps_the_list_exact(postgres_url: str, prefix: str) -> None:
    """4 appending threads and a thread trimming to the last 50: no item orphaned, lost from the tail or duplicated."""
    threads_n, per_thread, keep = 4, 150, 50
    with PostgresDatabase(postgres_url, key_prefix=prefix, max_size=threads_n + 1, pool_timeout=30) as db:
        done = threading.Event()
        removed: list[int] = []

        def writer(t: int) -> None:
            for i in range(per_thread):
                db.append("h", {"w": t, "i": i})

        def trimmer() -> None:
            while not done.is_set():
                removed.append(db.trim("h", -keep, -1))

        writers = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
        cutter = threading.Thread(target=trimmer)
        cutter.start()
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        done.set()
        cutter.join()
        removed.append(db.trim("h", -keep, -1))
        items = db.get_range("h", 0, -1)
        assert len(items) == db.get_length("h") == keep
        assert sum(removed) == threads_n * per_thread - keep
        for t in range(threads_n):  # what is left of each writer is the tail of its items, in order
            mine = [item["i"] for item in items if item["w"] == t]
            assert mine == list(range(per_thread - len(mine), per_thread))
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            (rows,) = conn.execute(
                "SELECT count(*) FROM kvstore_list_items WHERE ns = %s AND key = 'h'", (prefix,)
            ).fetchone() or (None,)
        assert rows == keep  # no orphaned item rows below the head or past the tail
        assert db.append("h", "next") == keep + 1
        db.clear()


def test_a_password_with_url_metacharacters_never_prints(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """A password holding / # ? @ $ % is in no error message, cause, repr or log line of a failing store."""
    password = "pa/ss#wo?rd@x$y%z"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    caplog.set_level(logging.DEBUG)
    db = PostgresDatabase(
        f"postgresql://app@127.0.0.1:{port}/app", password=password, key_prefix=prefix, connect_timeout=0.5
    )
    with pytest.raises(BackendUnavailableError) as info:
        db.incr("n")
    texts = [str(info.value), repr(info.value), repr(db), caplog.text]
    cause: BaseException | None = info.value
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    for text in texts:
        assert password not in text
    db.close()
