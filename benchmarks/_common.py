"""Fair, same-run measurement helpers: alternating rounds, medians, ratios to a floor."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Case", "Result", "print_table", "run_cases"]


@dataclass
class Case:
    """One thing to time: ``op(i)`` called ``n`` times per round (sync or async)."""

    name: str
    op: Callable[[int], object] | Callable[[int], Awaitable[object]]
    is_async: bool = False
    setup: Callable[[], object] | None = None
    #: What the row is in a report: "floor", "kvstore", "variant" (another kvstore flavour), "peer" or "info".
    role: str = "info"
    #: Ops per round for this case only (slow peers); ``None``: the run's ``n`` (or the calibrated count).
    n: int | None = None


@dataclass
class Result:
    name: str
    ops_per_s: float
    rounds: list[float]


def _round_sync(op: Callable[[int], object], n: int, offset: int) -> float:
    start = time.perf_counter()
    for i in range(offset, offset + n):
        op(i)
    return time.perf_counter() - start


async def _round_async(op: Callable[[int], Awaitable[object]], n: int, offset: int) -> float:
    start = time.perf_counter()
    for i in range(offset, offset + n):
        await op(i)
    return time.perf_counter() - start


def run_cases(
    cases: list[Case],
    *,
    n: int,
    rounds: int = 7,
    warmup: int | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    seconds_per_round: float | None = None,
    max_n: int = 50_000,
) -> dict[str, Result]:
    """Time every case in alternating rounds (a, b, c, a, b, c, ...); report medians.

    ``op`` gets a running index so every write can change the stored bytes.
    With ``seconds_per_round`` each case's op count is calibrated during warm-up
    so one round takes about that long (at most ``max_n`` ops, at least 1):
    slow peers and fast floors then cost the same wall time, and ops/s stay
    comparable because every round is timed over its own op count.
    """
    loop = loop or asyncio.new_event_loop()
    timings: dict[str, list[float]] = {c.name: [] for c in cases}
    counts: dict[str, int] = {}
    offset = 0

    def timed(case: Case, count: int, start: int) -> float:
        if case.is_async:
            return loop.run_until_complete(_round_async(case.op, count, start))  # type: ignore[arg-type]
        return _round_sync(case.op, count, start)

    for case in cases:  # warm up caches, JITs of the drivers, prepared statements
        if case.setup:
            case.setup()
        count = case.n or n
        if seconds_per_round is not None and case.n is None:
            k, elapsed = 1, timed(case, 1, offset)
            offset += 1
            while elapsed < seconds_per_round / 5 and k < max_n:
                k = min(max_n, k * 4)
                elapsed = timed(case, k, offset)
                offset += k
            count = max(1, min(max_n, round(seconds_per_round * k / max(elapsed, 1e-9))))
        else:
            warm = warmup if warmup is not None else max(1, count // 5)
            timed(case, warm, offset)
            offset += warm
        counts[case.name] = count
    gc.collect()
    for _ in range(rounds):
        for case in cases:
            count = counts[case.name]
            elapsed = timed(case, count, offset)
            offset += count
            timings[case.name].append(count / elapsed)
    return {name: Result(name, statistics.median(v), v) for name, v in timings.items()}


def print_table(title: str, results: dict[str, Result], floor: str, targets: dict[str, float] | None = None) -> None:
    """Print ops/s per case and its ratio to ``floor`` (higher is better)."""
    base = results[floor].ops_per_s
    print(f"\n## {title}  (ratio = ops/s ÷ {floor}, median of rounds, same run)")
    print(f"{'case':<44} {'ops/s':>12} {'ratio':>7}  target")
    for name, res in results.items():
        target = (targets or {}).get(name)
        mark = ""
        if target is not None:
            mark = f">= {target:.2f} {'OK' if res.ops_per_s / base >= target else 'MISS'}"
        print(f"{name:<44} {res.ops_per_s:>12,.0f} {res.ops_per_s / base:>7.2f}  {mark}")
