"""Chat history and sessions: last(20) of a huge history vs a 100-message one, and the layer's overhead.

Run: python -m benchmarks.bench_chat [--quick]

``ChatHistory.last(20)`` reads with ``get_range`` (O(log n + k)), so on a
1,000,000-message history it must cost the same as on a 100-message one
(ratio >= 0.8). The overhead rows compare the user-facing layer with the bare
store calls it is built on, in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Case, print_table, run_cases
from kvstore import ChatHistory, ChatMessage, MemoryCache, MemoryDatabase, SessionStore
from kvstore.sqlite import SqliteDatabase

MESSAGE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly."}


def fill(history: ChatHistory[Any], count: int) -> float:
    start = time.perf_counter()
    chunk = 20_000
    for first in range(0, count, chunk):
        history.extend([{**MESSAGE, "n": i} for i in range(first, min(count, first + chunk))])
    return time.perf_counter() - start


def bench_last(name: str, database: Any, big: int, n: int, rounds: int) -> None:
    small = ChatHistory(database, "small", model=dict)
    large = ChatHistory(database, "large", model=dict)
    fill(small, 100)
    seconds = fill(large, big)
    print(f"\n{name}: filled a {big:,}-message history in {seconds:.1f} s")
    raw = database.get_range
    results = run_cases(
        [
            Case("last(20) of 100 messages (floor)", lambda i: small.last(20)),
            Case(f"last(20) of {big:,} messages", lambda i: large.last(20)),
            Case(f"bare get_range(-20,-1) of {big:,}", lambda i: raw(large.key, -20, -1)),
        ],
        n=n,
        rounds=rounds,
    )
    print_table(
        f"{name}: ChatHistory.last(20)",
        results,
        "last(20) of 100 messages (floor)",
        {f"last(20) of {big:,} messages": 0.8},
    )
    large.trim(big // 2)  # the trimmed path reads the offset, then the range
    results = run_cases(
        [
            Case("last(20) of 100 messages (floor)", lambda i: small.last(20)),
            Case(f"last(20) of {big:,}, trimmed to half", lambda i: large.last(20)),
        ],
        n=n,
        rounds=rounds,
    )
    print_table(f"{name}: last(20) after trim", results, "last(20) of 100 messages (floor)")


def bench_writes(name: str, database: Any, n: int, rounds: int) -> None:
    history = ChatHistory(database, "writes")
    typed_dicts = ChatHistory(database, "writes-dict", model=dict)
    results = run_cases(
        [
            Case("bare database.append (floor)", lambda i: database.append("bare", {**MESSAGE, "n": i})),
            Case("ChatHistory(model=dict).add", lambda i: typed_dicts.add({**MESSAGE, "n": i})),
            Case("ChatHistory.add(ChatMessage)", lambda i: history.add(ChatMessage(role="user", content=str(i)))),
            Case(
                "ChatHistory.add(..., id=) idempotent",
                lambda i: history.add(ChatMessage(role="user", content=str(i)), id=f"m{i}"),
            ),
        ],
        n=n,
        rounds=rounds,
    )
    print_table(f"{name}: chat append", results, "bare database.append (floor)")


def bench_sessions(name: str, database: Any, n: int, rounds: int) -> None:
    cache = MemoryCache()
    sessions = SessionStore(cache, database, ttl=1800)
    sids = [sessions.create({"user": i, "cart": ["tea"]}) for i in range(100)]
    alone = SessionStore(None, database, ttl=1800)
    results = run_cases(
        [
            Case(
                "bare cache.get + cache.expire (floor)",
                lambda i: (cache.get(sessions.key(sids[i % 100])), cache.expire(sessions.key(sids[i % 100]), 1800)),
            ),
            Case("SessionStore.get(touch=True), cache hit", lambda i: sessions.get(sids[i % 100], touch=True)),
            Case("SessionStore.get(), cache hit", lambda i: sessions.get(sids[i % 100])),
            Case("SessionStore.get(touch=True), database alone", lambda i: alone.get(sids[i % 100], touch=True)),
        ],
        n=n,
        rounds=rounds,
    )
    print_table(f"{name}: session get+touch (TTL 30 min)", results, "bare cache.get + cache.expire (floor)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100,000-message history, fewer rounds")
    args = parser.parse_args()
    n, rounds = (1_000, 3) if args.quick else (3_000, 9)
    big = 100_000 if args.quick else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="bench_chat_"))
    try:
        with SqliteDatabase(tmp / "chat.db") as sqlite:
            bench_last("SQLite", sqlite, big, n, rounds)
            bench_writes("SQLite", sqlite, n, rounds)
            bench_sessions("SQLite", sqlite, n, rounds)
        memory = MemoryDatabase(max_entries=None)
        bench_last("memory", memory, big, n, rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
