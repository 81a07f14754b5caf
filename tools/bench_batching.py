"""What async auto-batching and the memory batch paths buy: gathered gets vs one mget, memory vs aiocache.

    PYTHONPATH=. python tools/bench_batching.py gather [postgres sqlite redis] [--rounds 15] [--off]
        [--postgres-url URL] [--redis-url URL]
    PYTHONPATH=. python tools/bench_batching.py memory [--rounds 9]

``gather``: on each backend, in alternating rounds in one process, the wall time of
``asyncio.gather`` of 100 ``store.get`` against one ``store.mget`` of the same 100 keys,
the floors of ``asyncio.gather`` itself (100 coroutines that do nothing: a task each; and
100 futures answered by one callback: what gather costs on the futures a batching store
hands out — no ``get`` through ``gather`` can cost less), and one ``get`` at a time in a loop. ``--off``
sets ``store.batching = False`` (every get its own round trip). The best round of each is
reported (the least disturbed by other tenants of the machine), and the median of the
per-round ratios.

``memory``: ops/s (process CPU time) of ``AsyncMemoryCache.mget``/``mset`` of 100 against
aiocache's ``SimpleMemoryCache.multi_get``/``multi_set`` (the benchmark's shapes), and, when
LangGraph is installed, the sync ``MemoryCache`` against ``InMemoryStore.batch``. aiocache
and LangGraph come from the ``bench`` dependency group.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

MESSAGE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly.", "turn": 1}
KEYS = [f"k{i}" for i in range(100)]


def msg(i: int) -> dict[str, Any]:
    return {**MESSAGE, "turn": i}


async def _open(backend: str, args: argparse.Namespace) -> Any:
    prefix = f"bench-batching-{os.getpid()}"
    if backend == "postgres":
        from kvstore.postgres import AsyncPostgresDatabase

        return AsyncPostgresDatabase(args.postgres_url, key_prefix=prefix)
    if backend == "redis":
        from kvstore.redis import AsyncRedisCache

        return AsyncRedisCache(args.redis_url, key_prefix=prefix)
    from kvstore.sqlite import AsyncSqliteDatabase

    return AsyncSqliteDatabase(os.path.join(tempfile.mkdtemp(), "bench.db"), key_prefix=prefix)


async def _per_call(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n


async def gather_case(backend: str, args: argparse.Namespace) -> None:
    store = await _open(backend, args)
    if args.off:
        store.batching = False
    try:
        await store.mset({k: MESSAGE for k in KEYS})

        async def gathered() -> None:
            assert (await asyncio.gather(*[store.get(k) for k in KEYS]))[7] == MESSAGE

        async def mget() -> None:
            assert (await store.mget(KEYS))[7] == MESSAGE

        async def nothing(key: str) -> None:
            return None

        async def floor() -> None:
            await asyncio.gather(*[nothing(k) for k in KEYS])

        loop = asyncio.get_running_loop()

        async def futures() -> None:
            # gather of 100 futures answered by one callback: what gather costs on futures alone.
            ready = [loop.create_future() for _ in KEYS]
            loop.call_soon(lambda: [f.set_result(None) for f in ready])
            await asyncio.gather(*ready)

        async def lone() -> None:
            for k in KEYS[:20]:
                await store.get(k)

        cases = {"gather": gathered, "mget": mget, "floor": floor, "futures": futures, "lone": lone}
        for fn in cases.values():
            await _per_call(fn, 10)
        times: dict[str, list[float]] = {name: [] for name in cases}
        ratios = []
        for _ in range(args.rounds):
            for name, fn in cases.items():
                times[name].append(await _per_call(fn, 3 if name == "lone" else 20))
            ratios.append(times["gather"][-1] / times["mget"][-1])
        best = {name: min(values) for name, values in times.items()}
        print(
            f"{backend:9} batching={'off' if args.off else 'on '}  gather(100 get) {best['gather'] * 1e6:7.0f} us  "
            f"mget(100) {best['mget'] * 1e6:6.0f} us  ratio {best['gather'] / best['mget']:5.2f}x "
            f"(median of rounds {statistics.median(ratios):5.2f}x)  gather(100 no-op) {best['floor'] * 1e6:5.0f} us "
            f"= {best['floor'] / best['mget']:4.2f}x mget  gather(100 ready futures) {best['futures'] * 1e6:5.0f} us "
            f"= {best['futures'] / best['mget']:4.2f}x mget  lone get {best['lone'] / 20 * 1e6:6.1f} us"
        )
    finally:
        await store.clear()
        await store.aclose()


def _ops_per_s(cases: dict[str, Callable[[int], Any]], rounds: int, n: int, is_async: bool) -> dict[str, float]:
    loop = asyncio.new_event_loop()
    results: dict[str, list[float]] = {name: [] for name in cases}

    async def run_async(op: Callable[[int], Any]) -> None:
        for i in range(n):
            await op(i)

    for _ in range(rounds):
        for name, op in cases.items():
            start = time.process_time()
            if is_async:
                loop.run_until_complete(run_async(op))
            else:
                for i in range(n):
                    op(i)
            results[name].append(n / (time.process_time() - start))
    loop.close()
    return {name: statistics.median(values) for name, values in results.items()}


def memory_case(args: argparse.Namespace) -> None:
    from aiocache import SimpleMemoryCache

    from kvstore import AsyncMemoryCache, MemoryCache

    batch = [f"session:{i}" for i in range(100)]
    kv, peer = AsyncMemoryCache(), SimpleMemoryCache()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(kv.mset({k: MESSAGE for k in batch}))
    loop.run_until_complete(peer.multi_set([(k, MESSAGE) for k in batch]))
    loop.close()
    res = _ops_per_s(
        {
            "AsyncMemoryCache.mget": lambda i: kv.mget(batch),
            "aiocache multi_get": lambda i: peer.multi_get(batch),
            "AsyncMemoryCache.mset": lambda i: kv.mset({k: msg(i + j) for j, k in enumerate(batch)}),
            "aiocache multi_set": lambda i: peer.multi_set([(k, msg(i + j)) for j, k in enumerate(batch)]),
        },
        args.rounds,
        2000,
        True,
    )
    for name, value in res.items():
        print(f"{name:24} {value:10,.0f} ops/s")
    print(
        f"mget 100: {res['AsyncMemoryCache.mget'] / res['aiocache multi_get']:.2f}x aiocache   "
        f"mset 100: {res['AsyncMemoryCache.mset'] / res['aiocache multi_set']:.2f}x aiocache"
    )
    try:
        from langgraph.store.base import GetOp, PutOp
        from langgraph.store.memory import InMemoryStore
    except ImportError:
        return
    graph, sync = InMemoryStore(), MemoryCache()
    for k in batch:
        graph.put(("bench",), k, MESSAGE)
    sync.mset({k: MESSAGE for k in batch})
    res = _ops_per_s(
        {
            "MemoryCache.mget": lambda i: sync.mget(batch),
            "InMemoryStore.batch(Get)": lambda i: graph.batch([GetOp(("bench",), k) for k in batch]),
            "MemoryCache.mset": lambda i: sync.mset({k: msg(i + j) for j, k in enumerate(batch)}),
            "InMemoryStore.batch(Put)": lambda i: graph.batch(
                [PutOp(("bench",), k, msg(i + j)) for j, k in enumerate(batch)]
            ),
        },
        args.rounds,
        2000,
        False,
    )
    for name, value in res.items():
        print(f"{name:24} {value:10,.0f} ops/s")
    print(
        f"mget 100: {res['MemoryCache.mget'] / res['InMemoryStore.batch(Get)']:.2f}x LangGraph   "
        f"mset 100: {res['MemoryCache.mset'] / res['InMemoryStore.batch(Put)']:.2f}x LangGraph"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["gather", "memory"])
    parser.add_argument("backends", nargs="*", default=["postgres", "sqlite", "redis"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--off", action="store_true", help="gather: every get its own round trip")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if args.what == "memory":
        memory_case(args)
        return
    for backend in args.backends:
        asyncio.run(gather_case(backend, args))


if __name__ == "__main__":
    main()
