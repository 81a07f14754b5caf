"""Multi-instance history check: three processes, each its own StorageManager, on one database; every
operation recorded, then checked offline (``tests/history_checker.py``) against the final state.

The PostgreSQL run has a nemesis (stop / freeze / restart of the server, ≥ 10 faults); the SQLite run is
the fault-free control. ``KVSTORE_HISTORY_SECONDS`` shortens (or lengthens) the runs for local iteration.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvstore import StorageManager
from tests import history_checker as hc
from tests.history_worker import LIST_KEYS, VALUE_KEYS

ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("KVSTORE_HISTORY_SECONDS", "60"))
CONTROL_SECONDS = min(15.0, SECONDS)
SETTLE = 30.0
APIS = ("sync", "sync", "async")  # worker 2 drives AsyncStorageManager


# --- running workers ---------------------------------------------------------------------------------


def _run_workers(
    tmp_path: Path,
    database: Callable[[int], dict[str, Any]],
    duration: float,
    during: Callable[[float, float], None] | None = None,
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Start one worker per entry of APIS at the same instant, run ``during(start, end)`` meanwhile,
    wait for every worker to settle and exit; return their history files and summaries."""
    start_at = time.time() + 4.0  # time to import kvstore and connect
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    outs: list[Path] = []
    try:
        for w, api in enumerate(APIS):
            cfg = tmp_path / f"config-{w}.json"
            cfg.write_text(json.dumps({"cache": {"type": "memory"}, "database": database(w)}))
            out = tmp_path / f"history-{w}.jsonl"
            log = tmp_path / f"worker-{w}.log"
            cmd = [
                sys.executable, "-m", "tests.history_worker", "--id", str(w), "--api", api,
                "--config", str(cfg), "--out", str(out), "--start-at", repr(start_at),
                "--duration", str(duration), "--settle", str(SETTLE),
            ]  # fmt: skip
            with log.open("wb") as log_file:
                procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT), log))
            outs.append(out)
        if during is not None:
            during(start_at, start_at + duration)
        for proc, log in procs:
            try:
                code = proc.wait(timeout=max(5.0, start_at + duration + SETTLE + 30 - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"worker did not exit; log:\n{log.read_text()[-3000:]}") from None
            assert code == 0, f"worker exited {code}; log:\n{log.read_text()[-3000:]}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _, _, summaries = hc.load_histories(outs)
    return outs, summaries


def _final_state(database: dict[str, Any], state_dir: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Every key and list, read straight from the primary (no fallback) by a fresh manager."""
    config = {"cache": {"type": "memory"}, "database": {**database, "fallback": [], "state_dir": str(state_dir)}}
    with StorageManager(config) as storage:
        db: Any = storage.database
        values = dict(zip(VALUE_KEYS, db.mget(VALUE_KEYS), strict=True))
        lists = {key: db.get_range(key, 0, -1) for key in LIST_KEYS}
    return values, lists


def _check_run(
    outs: list[Path],
    final: tuple[dict[str, Any], dict[str, list[Any]]],
    primary: str,
    faults: list[dict[str, Any]] | None = None,
) -> hc.Report:
    # Kept next to the histories: `python -m tests.history_checker <dir>` re-checks the run.
    state = {"values": final[0], "lists": final[1], "faults": faults}
    (outs[0].parent / "final.json").write_text(json.dumps(state))
    ops, events, _ = hc.load_histories(outs)
    return hc.check(ops, final[0], final[1], hc.conflicts_of(events), events, primary=primary)


# --- the nemesis -------------------------------------------------------------------------------------


class Nemesis:
    """Stops, freezes and restarts the server in turn, with quiet gaps of 1-3 s; records every window."""

    def __init__(self, server: Any, seed: int | None = None) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.faults: list[dict[str, Any]] = []

    def __call__(self, start: float, end: float) -> None:
        kinds = ["stop", "freeze", "restart"]
        i = 0
        while time.time() < start:
            time.sleep(0.05)
        time.sleep(self.rng.uniform(1, 3))  # some history on a healthy server first
        while time.time() < end - 5:  # the last fault is over before the workers stop writing
            kind, mode = kinds[i % 3], ("fast", "immediate")[(i // 3) % 2]
            t0 = time.time()
            if kind == "stop":
                self.server.pg_ctl("-m", mode, "-w", "stop")
                time.sleep(self.rng.uniform(1, 3))
                self.server.start()
            elif kind == "freeze":
                with self.server.frozen():
                    time.sleep(self.rng.uniform(1, 3))
            else:
                self.server.restart(mode)
            self.faults.append({"kind": kind, "mode": mode, "t0": t0, "t1": time.time()})
            i += 1
            time.sleep(self.rng.uniform(1, 3))


def _print(title: str, report: hc.Report, faults: list[dict[str, Any]] | None, summaries: list[dict[str, Any]]) -> None:
    print(f"\n=== {title} ===")
    print(hc.summary(report, faults=None if faults is None else len(faults)))
    if faults:
        t_first = faults[0]["t0"]
        print(
            "fault windows (s from the first): "
            + ", ".join(f"{f['kind']}/{f['mode']} {f['t0'] - t_first:.1f}-{f['t1'] - t_first:.1f}" for f in faults)
        )
    for s in summaries:
        print(f"worker {s['w']}: settled={s.get('settled')} health={s.get('health')}")


# --- the runs ----------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(int(300 + max(0.0, SECONDS - 60) * 2))
def test_three_instances_on_postgres_under_faults_keep_a_valid_history(tmp_path: Path, owned_postgres: Any) -> None:
    """Three processes on one Postgres under ≥ 10 stop/freeze/restart faults: 0 history violations."""

    def database(w: int) -> dict[str, Any]:
        return {
            "type": "postgres",
            "url": owned_postgres.url,
            "probe_interval": 0.3,
            "failure_threshold": 2,
            "statement_timeout": 0.75,
            "call_timeout": 1.0,
            "connect_timeout": 2.0,
            "state_dir": str(tmp_path / f"state-{w}"),
        }

    nemesis = Nemesis(owned_postgres)
    outs, summaries = _run_workers(tmp_path, database, SECONDS, during=nemesis)
    final = _final_state(database(0), tmp_path / "state-check")
    report = _check_run(outs, final, "postgres", nemesis.faults)
    _print(f"postgres, {len(APIS)} instances, {SECONDS:g} s", report, nemesis.faults, summaries)
    assert len(nemesis.faults) >= (10 if SECONDS >= 60 else max(1, math.floor(SECONDS / 8)))
    assert report.operations > 20 * SECONDS
    assert not report.violations, hc.summary(report, faults=len(nemesis.faults), examples=2)
    assert len(summaries) == len(APIS)
    assert all(s["settled"] for s in summaries), summaries  # every journal replayed before the final read


def test_three_instances_on_one_sqlite_file_keep_a_valid_history(tmp_path: Path) -> None:
    """Control: three processes on one SQLite file, no faults: 0 history violations."""
    path = tmp_path / "shared.db"

    def database(w: int) -> dict[str, Any]:
        return {"type": "sqlite", "path": str(path), "probe_interval": 0.3, "state_dir": str(tmp_path / f"state-{w}")}

    outs, summaries = _run_workers(tmp_path, database, CONTROL_SECONDS)
    final = _final_state({"type": "sqlite", "path": str(path)}, tmp_path / "state-check")
    report = _check_run(outs, final, "sqlite")
    _print(f"sqlite control, {len(APIS)} instances, {CONTROL_SECONDS:g} s", report, None, summaries)
    assert report.operations > 20 * CONTROL_SECONDS
    assert not report.violations, hc.summary(report, examples=2)
    assert len(summaries) == len(APIS)


# --- the checker itself ------------------------------------------------------------------------------


def _op(w: int, n: int, op: str, key: str, t0: float, t1: float, *args: Any, status: str = "ok", result: Any = None,
        active: str = "postgres") -> dict[str, Any]:  # fmt: skip
    return {"type": "op", "w": w, "n": n, "op": op, "key": key, "args": list(args), "t0": t0, "t1": t1,
            "status": status, "result": result, "active0": active, "active1": active}  # fmt: skip


def _v(w: int, n: int) -> dict[str, int]:
    return {"w": w, "n": n}


def _clean_history() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, list[Any]]]:
    ops = [
        _op(0, 1, "set", "k", 0.0, 1.0, _v(0, 1), result=True),
        _op(1, 1, "get", "k", 1.5, 2.0, result=_v(0, 1)),
        _op(1, 2, "set", "k", 2.5, 3.0, _v(1, 2), result=True),
        _op(0, 2, "get", "k", 2.6, 2.9, result=_v(0, 1)),  # concurrent with the set: the old value is fine
        _op(0, 3, "delete", "k", 3.5, 4.0, result=True),
        _op(1, 3, "get", "k", 4.5, 5.0, result=None),
        _op(0, 4, "set", "k", 5.0, 6.0, _v(0, 4), status="unknown"),  # may or may not have landed
        _op(0, 5, "append", "l", 0.0, 1.0, _v(0, 5), result=1),
        _op(1, 4, "append", "l", 0.5, 1.5, _v(1, 4), result=2),
        _op(0, 6, "append", "l", 2.0, 3.0, _v(0, 6), status="unknown"),
        _op(1, 5, "get_range", "l", 3.5, 4.0, 0, -1, result=[_v(0, 5), _v(1, 4)]),
        _op(1, 6, "get_length", "l", 3.5, 4.0, result=2),
        _op(0, 7, "append", "l", 4.0, 5.0, _v(0, 7), result=3),
        _op(1, 7, "get_range", "l", 5.5, 6.0, -2, -1, result=[_v(1, 4), _v(0, 7)]),
    ]
    return ops, {"k": _v(0, 4), "unused": None}, {"l": [_v(0, 5), _v(1, 4), _v(0, 7)]}


def test_checker_passes_a_clean_history() -> None:
    """A valid history (concurrent reads, unknown outcomes taken or not) has no violation."""
    ops, values, lists = _clean_history()
    assert hc.check(ops, values, lists).violations == []
    # The unknown set not applied, the unknown append applied once: still valid.
    assert hc.check(ops, {"k": None}, {"l": [_v(0, 5), _v(1, 4), _v(0, 6), _v(0, 7)]}).violations == []


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("lost_append", lambda ops, values, lists: lists.update(l=[_v(0, 5), _v(0, 7)])),
        ("duplicate_append", lambda ops, values, lists: lists.update(l=[_v(0, 5), _v(1, 4), _v(1, 4), _v(0, 7)])),
        ("append_order", lambda ops, values, lists: lists.update(l=[_v(0, 7), _v(1, 4), _v(0, 5)])),
        ("phantom_read", lambda ops, values, lists: ops.append(_op(2, 1, "get", "k", 7, 8, result=_v(9, 9)))),
        ("phantom_read", lambda ops, values, lists: values.update(k=_v(7, 7))),
        (
            "phantom_read",
            lambda ops, values, lists: ops.append(_op(2, 1, "get_range", "l", 7, 8, 0, 0, result=[_v(0, 99)])),
        ),
        ("absent_read", lambda ops, values, lists: ops.append(_op(2, 1, "get", "k", 1.5, 2.0, result=None))),
        ("stale_read", lambda ops, values, lists: ops.append(_op(2, 1, "get", "k", 3.2, 3.4, result=_v(0, 1)))),
        ("stale_list_read", lambda ops, values, lists: ops.append(_op(2, 1, "get_length", "l", 5.5, 6, result=1))),
        (
            "stale_list_read",
            lambda ops, values, lists: ops.append(
                _op(2, 1, "get_range", "l", 5.5, 6, -5, -1, result=[_v(0, 5), _v(1, 4)])
            ),
        ),
        ("length_phantom", lambda ops, values, lists: ops.append(_op(2, 1, "get_length", "l", 1.6, 1.7, result=3))),
        ("final_value", lambda ops, values, lists: values.update(k=_v(0, 1))),
        ("final_value", lambda ops, values, lists: ops.append(_op(2, 1, "set", "k", 20, 21, _v(2, 1), result=True))),
        (
            "unexpected_error",
            lambda ops, values, lists: ops.append(
                {**_op(2, 1, "get", "k", 7, 8), "status": "error", "error": "OperationalError"}
            ),
        ),
    ],
)
def test_checker_reports_each_kind_of_violation(kind: str, mutate: Callable[..., None]) -> None:
    """Each hand-made anomaly is reported under its kind (so the checker can fail)."""
    ops, values, lists = _clean_history()
    mutate(ops, values, lists)
    report = hc.check(ops, values, lists)
    assert kind in report.by_kind(), hc.summary(report)


def test_checker_lets_a_recorded_conflict_stand_for_the_journaled_writes_of_its_instance_only() -> None:
    """A journaled write later reported as a replay conflict by its own instance constrains nothing (a final
    value or read that misses it is fine); a conflict of another instance, or one reported after a later
    failback, excuses nothing; a violation says which writes were on the fallback and whose they were."""
    ops, values, lists = _clean_history()
    for op in ops:  # w1's set and w0's delete were acknowledged on the fallback
        if op["key"] == "k" and (op["w"], op["n"]) in ((1, 2), (0, 3)):
            op["active0"] = op["active1"] = "sqlite"
    values["k"] = _v(0, 1)  # neither replayed
    conflicts = [
        {"w": 1, "t": 10.0, "event": "conflict", "key": "k"},
        {"w": 0, "t": 10.0, "event": "conflict", "message": "journaled delete not replayed for key(s) 'k'"},
    ]
    report = hc.check(ops, values, lists, conflicts)
    assert report.violations == []
    assert report.conflicted_writes == 2
    assert "final_value" in hc.check(ops, values, lists, conflicts[:1]).by_kind()  # w0's delete still counts
    wrong_worker = [{**conflicts[0], "w": 2}, {**conflicts[1], "w": 2}]
    assert "final_value" in hc.check(ops, values, lists, wrong_worker).by_kind()
    failback = [{"w": 1, "t": 5.0, "event": "failback"}, {"w": 0, "t": 5.0, "event": "failback"}]
    assert "final_value" in hc.check(ops, values, lists, conflicts, failback).by_kind()
    ops.append(_op(2, 1, "set", "j", 0, 1, _v(2, 1), result=True, active="sqlite"))
    ops.append(_op(0, 9, "get", "j", 2, 3, result=None))
    report = hc.check(ops, {**values, "j": _v(2, 1)}, lists, conflicts)
    (absent,) = report.violations
    assert absent.kind == "absent_read"
    assert absent.detail["write_state"] == "journal-pending"
    assert absent.detail["read_on_fallback"] is False
    assert absent.detail["same_instance"] is False


def test_checker_unknown_writes_may_land_late_but_not_forever() -> None:
    """An unknown-outcome delete may take effect after a later set within UNKNOWN_GRACE of its error, not after."""
    delete = _op(1, 1, "delete", "k", 0.0, 0.5, status="unknown")
    soon = [delete, _op(0, 1, "set", "k", 5.0, 6.0, _v(0, 1), result=True), _op(2, 1, "get", "k", 7.0, 7.5)]
    assert hc.check(soon, {"k": None}, {}).violations == []
    late = [delete, _op(0, 1, "set", "k", 20.0, 21.0, _v(0, 1), result=True), _op(2, 1, "get", "k", 22.0, 22.5)]
    assert [v.kind for v in hc.check(late, {"k": None}, {}).violations] == ["absent_read", "final_value"]
