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
    # w2 never failed back before w0's read: its buffered set was not visible to w0 yet.
    assert hc.check(ops, {**values, "j": _v(2, 1)}, lists, conflicts).violations == []
    w2_failback = [{"w": 2, "t": 1.5, "event": "failback"}]
    report = hc.check(ops, {**values, "j": _v(2, 1)}, lists, conflicts, w2_failback)
    (absent,) = report.violations
    assert absent.kind == "absent_read"
    assert absent.detail["write_state"] == "journal-replayed"
    assert absent.detail["read_on_fallback"] is False
    assert absent.detail["same_instance"] is False


# Buffered writes (DESIGN §8): w0 sets k=v(0,1) on the primary, then fails over and buffers k=v(0,2),
# a delete of d, and an append to l (all acknowledged on its fallback, in its journal) before failing back
# at 10.0. w1 reads from the primary meanwhile.
_FAILBACK = [{"type": "event", "w": 0, "t": 10.0, "event": "failback"}]


def _buffered_history() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, list[Any]]]:
    ops = [
        _op(0, 1, "set", "k", 0.0, 1.0, _v(0, 1), result=True),
        _op(0, 2, "set", "d", 0.0, 1.0, _v(0, 2), result=True),
        _op(0, 3, "append", "l", 0.0, 1.0, _v(0, 3), result=1),
        _op(0, 4, "set", "k", 2.0, 2.1, _v(0, 4), result=True, active="sqlite"),
        _op(0, 5, "delete", "d", 2.0, 2.1, result=True, active="sqlite"),
        _op(0, 6, "append", "l", 2.0, 2.1, _v(0, 6), result=2, active="sqlite"),
        _op(0, 7, "set", "n", 2.0, 2.1, _v(0, 7), result=True, active="sqlite"),  # a key new to everyone
    ]
    return ops, {"k": _v(0, 4), "d": None, "n": _v(0, 7)}, {"l": [_v(0, 3), _v(0, 6)]}


def _w1_reads(t0: float) -> list[dict[str, Any]]:
    """w1 reads every key on the primary at t0, seeing none of w0's buffered writes."""
    t1 = t0 + 0.1
    return [
        _op(1, 1, "get", "k", t0, t1, result=_v(0, 1)),
        _op(1, 2, "get", "d", t0, t1, result=_v(0, 2)),
        _op(1, 3, "get", "n", t0, t1, result=None),
        _op(1, 4, "get_length", "l", t0, t1, result=1),
        _op(1, 5, "get_range", "l", t0, t1, 0, -1, result=[_v(0, 3)]),
    ]


def test_checker_lets_other_instances_miss_a_buffered_write_until_its_instance_replays() -> None:
    """Another instance reading from the primary before the writer's failback (replay) may still see the
    older value, the deleted value, the absence, the shorter list: the writes are in the writer's journal."""
    ops, values, lists = _buffered_history()
    report = hc.check([*ops, *_w1_reads(5.0)], values, lists, events=_FAILBACK)
    assert report.violations == [], hc.summary(report)
    # Never failed back at all (e.g. the run ended first): pending until the end of the run.
    assert hc.check([*ops, *_w1_reads(50.0)], values, lists).violations == []
    # Still a read of the older value, not of anything: a value nobody wrote stays a phantom.
    phantom = _op(1, 9, "get", "k", 5.0, 5.1, result=_v(7, 7))
    assert hc.check([*ops, phantom], values, lists, events=_FAILBACK).by_kind() == {"phantom_read": 1}


def test_checker_requires_an_instance_to_read_its_own_buffered_writes() -> None:
    """The writer itself reads its buffered writes at once (read-your-writes): w0 reading the older value,
    the deleted value, the absence or the shorter list after its buffered write was acknowledged is a
    violation, before its failback as after it."""
    ops, values, lists = _buffered_history()
    for t0 in (5.0, 12.0):
        own = [{**o, "w": 0, "n": 100 + o["n"], "active0": "sqlite", "active1": "sqlite"} for o in _w1_reads(t0)]
        report = hc.check([*ops, *own], values, lists, events=_FAILBACK)
        assert report.by_kind() == {"stale_read": 2, "absent_read": 1, "stale_list_read": 2}, hc.summary(report)
        assert all(v.detail["same_instance"] for v in report.violations)
    # The buffered writes themselves, read back, are fine.
    own_ok = [
        _op(0, 20, "get", "k", 3.0, 3.1, result=_v(0, 4), active="sqlite"),
        _op(0, 21, "get", "d", 3.0, 3.1, result=None, active="sqlite"),
        _op(0, 22, "get", "n", 3.0, 3.1, result=_v(0, 7), active="sqlite"),
    ]
    assert hc.check([*ops, *own_ok], values, lists, events=_FAILBACK).violations == []


def test_checker_requires_other_instances_to_see_a_buffered_write_once_replayed() -> None:
    """After the writer's failback (its journal replayed) every other instance must see the write, or a newer
    one, or a recorded conflict: the older value then is a violation. Evidence that the writer was back on
    the primary (an operation that began there) closes the window too, without a failback event."""
    ops, values, lists = _buffered_history()
    report = hc.check([*ops, *_w1_reads(10.5)], values, lists, events=_FAILBACK)
    assert report.by_kind() == {"stale_read": 2, "absent_read": 1, "stale_list_read": 2}, hc.summary(report)
    assert all(v.detail["write_state"] == "journal-replayed" for v in report.violations)
    assert not any(v.detail["same_instance"] for v in report.violations)
    back = _op(0, 30, "get", "zzz", 8.0, 8.1, result=None)  # w0 on the primary again at 8.0
    report = hc.check([*ops, back, *_w1_reads(8.5)], values, lists)
    assert report.by_kind() == {"stale_read": 2, "absent_read": 1, "stale_list_read": 2}, hc.summary(report)
    # A conflict recorded at that replay excuses the key it names, not the others.
    conflict = [{"w": 0, "t": 9.9, "event": "conflict", "key": "k"}]
    report = hc.check([*ops, *_w1_reads(10.5)], {**values, "k": _v(0, 1)}, lists, conflict, _FAILBACK)
    assert report.by_kind() == {"stale_read": 1, "absent_read": 1, "stale_list_read": 2}, hc.summary(report)


def test_checker_keeps_buffered_writes_strict_in_the_final_state() -> None:
    """Buffering excuses only other instances' reads before the replay: a buffered write missing from the
    final state (lost append, final value) or applied twice is reported as for any write."""
    ops, values, lists = _buffered_history()
    assert hc.check(ops, values, lists, events=_FAILBACK).violations == []
    kinds = {
        "final_value": ({**values, "k": _v(0, 1)}, lists),
        "lost_append": (values, {"l": [_v(0, 3)]}),
        "duplicate_append": (values, {"l": [_v(0, 3), _v(0, 6), _v(0, 6)]}),
        "append_order": (values, {"l": [_v(0, 6), _v(0, 3)]}),
    }
    for kind, (final_values, final_lists) in kinds.items():
        assert kind in hc.check(ops, final_values, final_lists, events=_FAILBACK).by_kind(), kind


def test_checker_unknown_writes_may_land_late_but_not_forever() -> None:
    """An unknown-outcome delete may take effect after a later set within UNKNOWN_GRACE of its error, not after."""
    delete = _op(1, 1, "delete", "k", 0.0, 0.5, status="unknown")
    soon = [delete, _op(0, 1, "set", "k", 5.0, 6.0, _v(0, 1), result=True), _op(2, 1, "get", "k", 7.0, 7.5)]
    assert hc.check(soon, {"k": None}, {}).violations == []
    late = [delete, _op(0, 1, "set", "k", 20.0, 21.0, _v(0, 1), result=True), _op(2, 1, "get", "k", 22.0, 22.5)]
    assert [v.kind for v in hc.check(late, {"k": None}, {}).violations] == ["absent_read", "final_value"]
