"""One worker of the multi-instance history check: random operations through kvstore's public API, each
recorded as a JSON line (read by ``tests/history_checker.py``).

Usage::

    python -m tests.history_worker --id 0 --config cfg.json --out w0.jsonl --start-at T --duration 60 [--api async]

The worker connects its own ``StorageManager`` (or ``AsyncStorageManager`` with ``--api async``), waits
until ``--start-at`` (a ``time.time()`` shared by every process), then for ``--duration`` seconds runs one
operation at a time: ``set``/``get``/``delete`` on ``key-0..49`` and ``append``/``get_range``/``get_length``
on ``list-0..9``. Every written value is unique: ``{"w": id, "n": counter}``. After the duration it keeps
reading (recorded too) until ``health()`` no longer reports the database degraded, or ``--settle`` seconds
pass, then disconnects.

Lines written (one JSON object each):

* ``{"type": "op", "w", "n", "op", "key", "args", "t0", "t1", "status", "result"|"error", "phase", ...}``
  where ``status`` is ``ok``, ``unknown`` (`BackendUnavailableError`, busy included: a write may or may
  not have been applied) or ``error`` (anything else: unexpected for this workload);
  ``active0``/``active1`` is the database tier's active backend before/after the call when the tier
  exposes it: the worker's own record of which backend served the call. The checker uses it to tell a
  write acknowledged on the fallback (buffered in this instance's outage journal, visible to the other
  instances once this one fails back) from one acknowledged by the primary, and when this instance was
  back on the primary.
* ``{"type": "event", "t", "event", ...}``: every ``kvstore`` log record carrying ``kvstore_event``
  (failover, failback, replay, conflict, dead_letter, ...), its str/int/float attributes kept.
* ``{"type": "summary", ...}`` last: counts, whether the tier settled on its primary, its final health.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from kvstore import AsyncStorageManager, BackendUnavailableError, StorageManager

VALUE_KEYS = [f"key-{i}" for i in range(50)]
LIST_KEYS = [f"list-{i}" for i in range(10)]
#: LogRecord attributes that describe the logging call, not the event.
_RECORD_NOISE = {
    "args",
    "msg",
    "exc_info",
    "exc_text",
    "stack_info",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "processName",
    "process",
    "taskName",
}


class Recorder:
    """Writes the history file: one flushed JSON line per operation or event."""

    def __init__(self, out: TextIO, worker: int) -> None:
        self.out = out
        self.worker = worker
        self.counts: dict[str, int] = {}

    def line(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, default=repr) + "\n")
        self.out.flush()

    def op(self, record: dict[str, Any]) -> None:
        key = f"{record['op']}:{record['status']}"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.line({"type": "op", "w": self.worker, **record})


class EventHandler(logging.Handler):
    """Records every ``kvstore`` log record that carries a ``kvstore_event`` (conflicts among them)."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.DEBUG)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "kvstore_event", None)
        if event is None:
            return
        fields = {
            k: v
            for k, v in record.__dict__.items()
            if k not in _RECORD_NOISE and isinstance(v, str | int | float | bool) and not k.startswith("_")
        }
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not break the worker
            message = str(record.msg)
        self.recorder.line(
            {"type": "event", "w": self.recorder.worker, "t": record.created, "event": str(event), "message": message}
            | {f"f_{k}": v for k, v in fields.items()}
            | ({"key": record.__dict__["key"]} if isinstance(record.__dict__.get("key"), str) else {})
        )


class Planner:
    """Chooses the next operation; every written value is unique per (worker, counter)."""

    def __init__(self, worker: int, seed: int) -> None:
        self.worker = worker
        self.rng = random.Random(seed)
        self.n = 0

    def next(self, reads_only: bool = False) -> tuple[str, str, list[Any]]:
        rng = self.rng
        self.n += 1
        if rng.random() < 0.5:
            key = rng.choice(VALUE_KEYS)
            roll = 0.9 if reads_only else rng.random()
            if roll < 0.4:
                return "set", key, [{"w": self.worker, "n": self.n}]
            if roll < 0.55:
                return "delete", key, []
            return "get", key, []
        key = rng.choice(LIST_KEYS)
        roll = 0.9 if reads_only else rng.random()
        if roll < 0.45:
            return "append", key, [{"w": self.worker, "n": self.n}]
        if roll < 0.85:
            return "get_range", key, list(self._range())
        return "get_length", key, []

    def _range(self) -> tuple[int, int]:
        rng = self.rng
        kind = rng.random()
        k = rng.randint(1, 20)
        if kind < 0.05:
            return 0, -1  # the whole list
        if kind < 0.35:
            return -k, -1  # the last k
        if kind < 0.55:
            start = rng.randint(0, 60)
            return start, start + k - 1
        if kind < 0.75:
            end = -rng.randint(1, 40)
            return end - k + 1, end  # both negative
        if kind < 0.9:
            return rng.randint(-80, 80), rng.randint(-80, 80)  # anything, often empty or clamped
        return rng.randint(1000, 5000), rng.randint(5000, 9000)  # out of range: []


def _active(database: Any) -> str | None:
    active = getattr(database, "active", None)  # absent on a tier without failover
    return active if isinstance(active, str) else None


def _outcome(exc: BaseException) -> dict[str, Any]:
    status = "unknown" if isinstance(exc, BackendUnavailableError) else "error"
    return {"status": status, "error": type(exc).__name__, "message": str(exc)[:300]}


def _result(op: str, value: Any) -> Any:
    return value if op != "delete" else bool(value)


def run_sync(args: argparse.Namespace, config: dict[str, Any], rec: Recorder) -> dict[str, Any]:
    planner = Planner(args.id, args.seed)
    settled = False
    final_health: Any = None
    with StorageManager(config) as storage:
        db: Any = storage.database
        _wait_until(args.start_at)
        end = args.start_at + args.duration
        phase = "run"
        settle_end = end + args.settle
        next_health = 0.0
        while True:
            now = time.time()
            if now >= end and phase == "run":
                phase = "settle"
            if phase == "settle":
                if now >= next_health:
                    next_health = now + 0.5
                    report = storage.health()
                    if not report.database.degraded and report.database.healthy:
                        settled, final_health = True, _health(report)
                        break
                    final_health = _health(report)
                if now >= settle_end:
                    break
            op, key, op_args = planner.next(reads_only=phase == "settle")
            entry: dict[str, Any] = {"n": planner.n, "op": op, "key": key, "args": op_args, "phase": phase}
            entry["active0"] = _active(db)
            entry["t0"] = time.time()
            try:
                result = getattr(db, op)(key, *op_args)
            except Exception as exc:
                entry["t1"] = time.time()
                entry.update(_outcome(exc))
            else:
                entry["t1"] = time.time()
                entry.update(status="ok", result=_result(op, result))
            entry["active1"] = _active(db)
            rec.op(entry)
            time.sleep(args.pause * (0.5 + planner.rng.random()))
    return {"settled": settled, "health": final_health}


async def run_async(args: argparse.Namespace, config: dict[str, Any], rec: Recorder) -> dict[str, Any]:
    planner = Planner(args.id, args.seed)
    settled = False
    final_health: Any = None
    async with AsyncStorageManager(config) as storage:
        db: Any = storage.database
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        end = args.start_at + args.duration
        phase = "run"
        settle_end = end + args.settle
        next_health = 0.0
        while True:
            now = time.time()
            if now >= end and phase == "run":
                phase = "settle"
            if phase == "settle":
                if now >= next_health:
                    next_health = now + 0.5
                    report = await storage.health()
                    if not report.database.degraded and report.database.healthy:
                        settled, final_health = True, _health(report)
                        break
                    final_health = _health(report)
                if now >= settle_end:
                    break
            op, key, op_args = planner.next(reads_only=phase == "settle")
            entry: dict[str, Any] = {"n": planner.n, "op": op, "key": key, "args": op_args, "phase": phase}
            entry["active0"] = _active(db)
            entry["t0"] = time.time()
            try:
                result = await getattr(db, op)(key, *op_args)
            except Exception as exc:
                entry["t1"] = time.time()
                entry.update(_outcome(exc))
            else:
                entry["t1"] = time.time()
                entry.update(status="ok", result=_result(op, result))
            entry["active1"] = _active(db)
            rec.op(entry)
            await asyncio.sleep(args.pause * (0.5 + planner.rng.random()))
    return {"settled": settled, "health": final_health}


def _health(report: Any) -> dict[str, Any]:
    d = report.database
    return {
        "active": d.active,
        "healthy": d.healthy,
        "degraded": d.degraded,
        "last_error": d.last_error,
    }


def _wait_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.05))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True, help="JSON file: the StorageManager config")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() at which to start")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=30.0, help="max seconds to wait for the primary after")
    parser.add_argument("--pause", type=float, default=0.002, help="mean seconds between operations")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--api", choices=["sync", "async"], default="sync")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if args.start_at <= 0:
        args.start_at = time.time()
    config = json.loads(args.config.read_text())
    logger = logging.getLogger("kvstore")
    logger.setLevel(logging.DEBUG)
    with args.out.open("w", encoding="utf-8") as out:
        rec = Recorder(out, args.id)
        logger.addHandler(EventHandler(rec))
        rec.line({"type": "start", "w": args.id, "api": args.api, "seed": args.seed, "t": time.time()})
        if args.api == "async":
            summary = asyncio.run(run_async(args, config, rec))
        else:
            summary = run_sync(args, config, rec)
        rec.line({"type": "summary", "w": args.id, "t": time.time(), "counts": rec.counts, **summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
