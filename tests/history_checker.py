"""Offline checker of multi-instance histories recorded by ``tests/history_worker.py``.

Pure functions over the recorded operations, the conflict events and the final state read from the
server. The model: a value key is a register, a list key an append-only list (never deleted by this
workload), every written value is unique (``{"w": worker, "n": counter}``). An operation is
``ok`` (acknowledged), ``unknown`` (raised `BackendUnavailableError`: a write may or may not have been
applied, and when it was, possibly later than the error, as a statement queued to a frozen server runs
when it thaws: its effect window is ``[t0, t1 + unknown_grace]``, ``UNKNOWN_GRACE`` = 10 s by default)
or ``error`` (any other exception: the workload never provokes one, so it is a violation of its own,
and a write that raised it is treated as unknown).

Buffered writes (DESIGN §8, ``on_outage="buffer"``). A write acknowledged while its instance served from
its fallback (the worker's ``active1``, the tier's active backend after the call, is not the primary) sits
in that instance's outage journal until the instance fails back and replays it. Its effect window is
``[t0, t1]`` for reads by ITS OWN instance (read-your-writes, checked strictly), but ``[t0, R]`` for reads
by any OTHER instance, where ``R`` is the end of that instance's next failback after ``t1`` (its
``failback`` event, logged once the replay is done; or, if earlier, the start of its next operation that
began on the primary, or the end of one that failed back): before ``R`` another instance may still read
the older value or the absence, from ``R`` on it must see the write (or a newer one, or a recorded
conflict). Never failed back: ``R`` is the end of the run. This applies to the read checks
(``absent_read``, ``stale_read``, ``stale_list_read``) only; lost, duplicate and out-of-order appends,
phantom reads and the final value are checked as strictly as any other write.

Violation kinds (``Violation.kind``):

* ``lost_append``: an acknowledged append missing from the final list.
* ``duplicate_append``: an item present more than once in the final list or in one range read.
* ``append_order``: one worker's items out of its invocation order (final list or one range read).
* ``phantom_read``: a get, range item, final value or final list item that nobody wrote to that key.
* ``absent_read``: ``get`` returned ``None`` although an acknowledged ``set`` completed before the read
  began and no ``delete`` of the key could have taken effect after that set was invoked (DESIGN §8:
  degraded reads never report data as absent).
* ``stale_read``: ``get`` returned a value whose ``set`` was certainly overwritten (an acknowledged write
  invoked after that set's effect window closed completed before the read began).
* ``stale_list_read``: ``get_length`` below the number of acknowledged appends completed before the read
  began, or a read of the whole list missing one of them.
* ``length_phantom``: ``get_length`` above the number of appends invoked before the read completed.
* ``final_value``: a key's final value is not the value of a write that could have been the last one
  (no acknowledged write certainly follows it). An acknowledged write that a recorded replay conflict may
  stand for counts as an unknown outcome (see ``_apply_conflicts``), everywhere, not only here.
* ``unexpected_error``: an operation raised something other than `BackendUnavailableError`.

Each violation is annotated (``detail["write_state"]``, ``"read_on_fallback"``, ``"same_instance"``) with
where the write it depends on was when the read began: ``primary``, ``journal-pending`` (acknowledged on
its instance's fallback, not replayed yet) or ``journal-replayed``; whether the read was served by the
fallback; whether write and read are one instance's. A ``journal-pending`` write read by another instance
is the buffered design's visibility gap across instances; the other combinations are not.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRITE_OPS = ("set", "delete")
#: Seconds after its error within which a write with an unknown outcome may still take effect: a
#: statement queued to a frozen server runs when it thaws (faults last at most 3 s, calls time out in 1 s).
UNKNOWN_GRACE = 10.0
KINDS = (
    "lost_append",
    "duplicate_append",
    "append_order",
    "phantom_read",
    "absent_read",
    "stale_read",
    "stale_list_read",
    "length_phantom",
    "final_value",
    "unexpected_error",
)


@dataclass(frozen=True)
class Violation:
    kind: str
    key: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"[{self.kind}] {self.key}: {self.message}"


@dataclass
class Report:
    operations: int = 0
    ops_by_type: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    conflicted_writes: int = 0
    primary: str = "postgres"
    #: Per worker, sorted times by which its outage journal had been replayed: its ``failback`` events,
    #: the start of an operation that began on the primary, the end of one that failed back.
    replays: dict[Any, list[float]] = field(default_factory=dict, repr=False)
    violations: list[Violation] = field(default_factory=list)

    def by_kind(self) -> Counter[str]:
        return Counter(v.kind for v in self.violations)

    def add(self, kind: str, key: str, message: str, **detail: Any) -> None:
        self.violations.append(Violation(kind, key, message, detail))

    def replayed_by(self, worker: Any, after: float) -> float:
        """When ``worker``'s journal had been replayed, at the earliest, after ``after`` (inf: never)."""
        times = self.replays.get(worker, [])
        i = bisect.bisect_right(times, after)
        return times[i] if i < len(times) else math.inf


# --- loading ---------------------------------------------------------------------------------------


def load_histories(
    paths: Iterable[str | Path],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Read worker files: (operations, events, summaries). A truncated last line is ignored."""
    ops: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a worker killed mid-line
            kind = obj.get("type")
            if kind == "op":
                ops.append(obj)
            elif kind == "event":
                events.append(obj)
            elif kind == "summary":
                summaries.append(obj)
    return ops, events, summaries


def conflicts_of(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The replay-conflict events (``kvstore_event == "conflict"``)."""
    return [dict(e) for e in events if e.get("event") == "conflict"]


# --- helpers ---------------------------------------------------------------------------------------


def ident(value: Any) -> Any:
    """A written value's identity: ``(worker, counter)``; anything else stays as its JSON text."""
    if isinstance(value, Mapping) and set(value) == {"w", "n"}:
        return (value["w"], value["n"])
    return json.dumps(value, sort_keys=True, default=repr)


def _end(op: Mapping[str, Any], grace: float) -> float:
    """When the op's effect may have happened at the latest."""
    if op["status"] == "conflict":
        return float(op["t_conflict"])  # replayed (or skipped) by then
    return float(op["t1"]) if op["status"] == "ok" else float(op["t1"]) + grace


def _via_fallback(op: Mapping[str, Any] | None, primary: str) -> bool | None:
    """Whether the fallback served the op (None: not recorded): the tier's active backend after the call
    says, as the route is chosen when the call begins: a call that opens the breaker is served by the
    fallback, one whose probe fails back by the primary."""
    if op is None:
        return None
    active = op.get("active1", op.get("active0"))
    return None if active is None else active != primary


def _write_state(report: Report, op: Mapping[str, Any] | None, until: float) -> str | None:
    """Where a write was at ``until``: ``primary`` (acknowledged by it), ``journal-pending`` (acknowledged on
    the fallback, its instance not failed back yet) or ``journal-replayed`` (its instance failed back since,
    by ``until`` included, so its journal was replayed, or the write recorded as a conflict)."""
    on_fallback = _via_fallback(op, report.primary)
    if op is None or on_fallback is None:
        return None
    if not on_fallback:
        return "primary"
    return "journal-replayed" if report.replayed_by(op["w"], op["t1"]) <= until else "journal-pending"


def _visible_end(report: Report, op: Mapping[str, Any], reader: Any, grace: float) -> float:
    """When ``op``'s effect may have happened at the latest, as seen by instance ``reader``'s reads.

    A write acknowledged on its instance's fallback is buffered in that instance's journal: its own instance
    reads it back at once (``_end``), any other instance from the end of its instance's next replay on.
    """
    end = _end(op, grace)
    if op["status"] == "ok" and reader != op["w"] and _via_fallback(op, report.primary):
        end = max(end, report.replayed_by(op["w"], float(op["t1"])))
    return end


def _brief(op: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if op is None:
        return None
    keys = ("w", "n", "op", "key", "args", "t0", "t1", "status", "result", "error", "active0", "active1")
    return {k: op[k] for k in keys if k in op}


class _PrefixMax:
    """max(value) over items whose sort key is < (or <=) a bound, in O(log n)."""

    def __init__(self, pairs: Iterable[tuple[float, float, Any]]) -> None:
        items = sorted(pairs, key=lambda p: p[0])
        self.keys = [p[0] for p in items]
        self.best: list[tuple[float, Any]] = []
        best: tuple[float, Any] = (-math.inf, None)
        for _, value, payload in items:
            if value > best[0]:
                best = (value, payload)
            self.best.append(best)

    def below(self, bound: float) -> tuple[float, Any]:
        i = bisect.bisect_left(self.keys, bound)
        return self.best[i - 1] if i else (-math.inf, None)


# --- the check -------------------------------------------------------------------------------------


def check(
    ops: Sequence[Mapping[str, Any]],
    final_values: Mapping[str, Any],
    final_lists: Mapping[str, Sequence[Any]],
    conflicts: Sequence[Mapping[str, Any]] = (),
    events: Sequence[Mapping[str, Any]] = (),
    *,
    unknown_grace: float = UNKNOWN_GRACE,
    primary: str = "postgres",
) -> Report:
    """Check recorded operations against each other and the final state; see the module docstring.

    ``conflicts``: the replay-conflict events (see `_apply_conflicts`); ``events``: every event (their
    failback times narrow which writes a conflict may stand for). ``primary`` names the configured backend.
    """
    report = Report(operations=len(ops), conflicts=len(conflicts), primary=primary)
    report.replays = _replays(ops, events, primary)
    for op in ops:
        report.ops_by_type[op["op"]] += 1
        report.outcomes[f"{op['op']}:{op['status']}"] += 1
        if op["status"] == "error":
            report.add(
                "unexpected_error",
                op["key"],
                f"{op['op']} raised {op.get('error')}: {op.get('message', '')[:200]}",
                op=_brief(op),
            )
    ops = _apply_conflicts(report, ops, conflicts, events)
    by_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for op in ops:
        by_key[op["key"]].append(op)
    value_keys = {k for k, kops in by_key.items() if any(o["op"] in ("set", "get", "delete") for o in kops)}
    list_keys = {k for k, kops in by_key.items() if any(o["op"] in ("append", "get_range", "get_length") for o in kops)}
    for key in sorted(value_keys | set(final_values)):
        _check_register(report, key, by_key.get(key, []), final_values.get(key), unknown_grace)
    for key in sorted(list_keys | set(final_lists)):
        _check_list(report, key, by_key.get(key, []), list(final_lists.get(key, [])))
    return report


def _replays(
    ops: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], primary: str
) -> dict[Any, list[float]]:
    """Per worker, the sorted times by which its outage journal had been replayed (see `Report.replays`)."""
    replays: dict[Any, list[float]] = defaultdict(list)
    for e in events:
        if e.get("event") == "failback":  # logged by the probe once the replay is done
            replays[e.get("w")].append(float(e["t"]))
    for op in ops:
        if op.get("active0") == primary:  # began on the primary: any earlier journal was replayed by then
            replays[op["w"]].append(float(op["t0"]))
        elif op.get("active1") == primary:  # this call failed back: the journal was replayed by its end
            replays[op["w"]].append(float(op["t1"]))
    return {w: sorted(ts) for w, ts in replays.items()}


# --- writes lost by a promotion (asynchronous replication) -------------------------------------------


def lost_writes(
    ops: Sequence[Mapping[str, Any]],
    snapshots: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] = (),
    *,
    unknown_grace: float = UNKNOWN_GRACE,
    primary: str = "postgres",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Acknowledged writes a standby promotion lost: ``(certainly lost, possibly lost)``, one entry per write.

    A standby promoted after its primary was killed keeps what it had received: with asynchronous
    replication the primary's last acknowledged commits may be missing. Each snapshot is what the
    standby held when promoted (``{"t": kill time, "t_promoted": ..., "values": {key: value},
    "lists": {key: [items]}}``, read from the standby once it had replayed all it received).

    At stake are the writes that may have committed on the killed primary: acknowledged by it (begun
    before the kill, answered before the promotion), or journaled and replayed to it before the
    promotion. Each one's commit lies in ``[lower, upper]``: ``[t0, min(t1, kill)]`` for a write to the
    primary, ``[t1, replay]`` for a journaled one. Direct evidence:

    * an append whose item is missing from the standby's list is lost; one present survived;
    * the write whose value the standby shows survived; a set or delete certainly committed after it
      (``lower`` past its ``upper``) is lost;
    * a set is lost when the standby shows the key absent and every delete of it certainly came before.

    The WAL is one sequence: the standby holds every commit before some instant ``C`` and none after.
    A survivor puts ``C`` after its ``lower``, a lost write before its ``upper``; so a write whose
    ``lower`` is past a lost write's ``upper`` is lost too, one whose ``upper`` is before a survivor's
    ``lower`` survived, and the few in between are possibly lost. `as_lost` makes both kinds unknown
    outcomes for `check`, so losses are reported apart from violations (wrong answers), which stay
    checked as strictly as ever.
    """
    replays = _replays(ops, events, primary)

    def replayed(w: Any, after: float) -> float:
        times = replays.get(w, [])
        i = bisect.bisect_right(times, after)
        return times[i] if i < len(times) else math.inf

    def lower(op: Mapping[str, Any]) -> float:  # the commit happened at or after this
        return float(op["t1"]) if _via_fallback(op, primary) else float(op["t0"])

    def upper(op: Mapping[str, Any]) -> float:  # ... and at or before this
        end = _end(op, unknown_grace) if op["status"] != "conflict" else math.inf
        return max(end, replayed(op["w"], float(op["t1"]))) if _via_fallback(op, primary) else end

    writes: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for op in ops:
        if op["op"] in (*WRITE_OPS, "append"):
            writes[op["key"]].append(op)
    lost: dict[tuple[Any, Any], dict[str, Any]] = {}
    maybe: dict[tuple[Any, Any], dict[str, Any]] = {}

    def entry(op: Mapping[str, Any], at: float, why: str) -> dict[str, Any]:
        return {"w": op["w"], "n": op["n"], "op": op["op"], "key": op["key"], "t0": op["t0"], "t1": op["t1"],
                "kill": at, "why": why}  # fmt: skip

    decided: set[int] = set()  # at stake at an earlier promotion: survived then, or off the timeline since
    for snap in sorted(snapshots, key=lambda snap: float(snap["t"])):
        tk = float(snap["t"])
        tp = float(snap.get("t_promoted", tk))
        ends: dict[int, float] = {}  # id(op) -> upper bound of its commit, for the writes at stake
        for kops in writes.values():
            for op in kops:
                if op["status"] == "ok" and id(op) not in decided and lower(op) < tk and upper(op) < tp:
                    ends[id(op)] = min(upper(op), tk) if not _via_fallback(op, primary) else upper(op)
        decided.update(ends)
        survived_after = -math.inf  # C is after this
        found: dict[int, str] = {}  # id(op) -> why it is certainly lost
        kept: set[int] = set()  # seen on the standby
        for key, items in snap.get("lists", {}).items():
            held = {ident(v) for v in items}
            for op in writes.get(key, []):
                if op["op"] != "append" or id(op) not in ends:
                    continue
                if ident(op["args"][0]) in held:
                    kept.add(id(op))
                    survived_after = max(survived_after, lower(op))
                else:
                    found.setdefault(id(op), "append missing from the promoted standby's list")
        for key, value in snap.get("values", {}).items():
            kops = writes.get(key, [])
            done = [o for o in kops if o["op"] in WRITE_OPS and id(o) in ends]
            if value is not None:
                shown = next((o for o in kops if o["op"] == "set" and ident(o["args"][0]) == ident(value)), None)
                if shown is None:
                    continue  # a value nobody wrote: the checker's phantom_read
                kept.add(id(shown))
                survived_after = max(survived_after, lower(shown))
                for op in done:
                    if op is not shown and lower(op) > upper(shown):
                        found.setdefault(id(op), "committed after the value the promoted standby holds")
            else:
                deletes = [o for o in kops if o["op"] == "delete"]
                for op in done:
                    if op["op"] == "set" and all(upper(d) < lower(op) for d in deletes):
                        found.setdefault(id(op), "set, but the standby holds no value and no delete came after it")
        lost_before = min((ends[i] for i in found), default=math.inf)  # C is before this
        for kops in writes.values():
            for op in kops:
                if id(op) not in ends or id(op) in kept:
                    continue
                key_ = (op["w"], op["n"])
                if id(op) in found:
                    lost.setdefault(key_, entry(op, tk, found[id(op)]))
                elif lower(op) > lost_before:
                    lost.setdefault(key_, entry(op, tk, "committed after a write the promoted standby lacks"))
                elif ends[id(op)] >= survived_after and key_ not in lost:
                    maybe.setdefault(key_, entry(op, tk, "at the end of what the standby received"))
    for key_ in lost:
        maybe.pop(key_, None)
    order = lambda e: (e["kill"], e["t1"])  # noqa: E731
    return sorted(lost.values(), key=order), sorted(maybe.values(), key=order)


def as_lost(ops: Sequence[Mapping[str, Any]], lost: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``ops`` with each lost write's status ``lost``: checked as an unknown outcome (applied or not)."""
    ids = {(e["w"], e["n"]) for e in lost}
    return [{**op, "status": "lost"} if (op["w"], op["n"]) in ids else op for op in ops]


def _apply_conflicts(
    report: Report,
    ops: Sequence[Mapping[str, Any]],
    conflicts: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    """Acknowledged writes that a recorded replay conflict may have skipped become ``conflict`` writes.

    DESIGN §8: a journaled write whose key another instance changed meanwhile is not replayed but kept and
    logged as a conflict. A conflict event of worker w for key k at time tc is attributed to every write of
    k by w acknowledged on the fallback before tc and after w's last failback before tc (that replay is the
    one that reported it). Such a write may or may not have reached the primary, by tc at the latest: like
    an unknown outcome, it constrains nothing, and it may be the value read or the final value.
    """
    index: dict[tuple[Any, str], list[float]] = defaultdict(list)
    for c in conflicts:
        keys = {v for n, v in c.items() if isinstance(v, str) and (n == "key" or n.endswith("_key"))}
        if not keys and isinstance(c.get("message"), str):
            keys = _quoted_keys(c["message"])
        for key in keys:
            index[(c.get("w"), key)].append(float(c.get("t", math.inf)))
    if not index:
        return list(ops)
    failbacks: dict[Any, list[float]] = defaultdict(list)
    for e in events:
        if e.get("event") == "failback":
            failbacks[e.get("w")].append(float(e["t"]))
    for times in (*index.values(), *failbacks.values()):
        times.sort()
    out: list[Mapping[str, Any]] = []
    for op in ops:
        if op["op"] in WRITE_OPS and op["status"] == "ok" and _via_fallback(op, report.primary) is not False:
            times = index.get((op["w"], op["key"]), []) + index.get((None, op["key"]), [])
            tc = min((t for t in times if t > op["t1"]), default=None)
            if tc is not None:
                fb = failbacks.get(op["w"], [])
                i = bisect.bisect_left(fb, tc)
                if i == 0 or fb[i - 1] < op["t1"]:  # no failback between the write and the conflict
                    op = {**op, "status": "conflict", "t_conflict": tc}
                    report.conflicted_writes += 1
        out.append(op)
    return out


def _quoted_keys(message: str) -> set[str]:
    found = set()
    for quote in ("'", '"'):
        parts = message.split(quote)
        found.update(parts[1::2])
    return found


def _check_register(
    report: Report,
    key: str,
    kops: Sequence[Mapping[str, Any]],
    final: Any,
    grace: float,
) -> None:
    # Writes that may have been applied: acknowledged, unknown, or failed with an unexpected error.
    writes = [o for o in kops if o["op"] in WRITE_OPS]
    acked = [o for o in writes if o["status"] == "ok"]
    sets_by_value = {ident(o["args"][0]): o for o in writes if o["op"] == "set"}
    deletes = [o for o in writes if o["op"] == "delete"]
    # Per reading instance (a buffered write is visible to the others from its replay on, see the module
    # docstring): for a get at t, the acknowledged write visible before t that was invoked last; for a None
    # result, the delete invoked before the read's end whose effect may have come last.
    views: dict[Any, tuple[_PrefixMax, _PrefixMax, _PrefixMax]] = {}

    def view(reader: Any) -> tuple[_PrefixMax, _PrefixMax, _PrefixMax]:
        if reader not in views:
            views[reader] = (
                _PrefixMax((_visible_end(report, o, reader, grace), o["t0"], o) for o in acked),
                _PrefixMax((_visible_end(report, o, reader, grace), o["t0"], o) for o in acked if o["op"] == "set"),
                _PrefixMax((o["t0"], _visible_end(report, o, reader, grace), o) for o in deletes),
            )
        return views[reader]

    for read in kops:
        if read["op"] != "get" or read["status"] != "ok":
            continue
        result = read.get("result")
        acked_done, acked_sets_done, deletes_invoked = view(read["w"])
        if result is None:
            last_set_start, last_set = acked_sets_done.below(read["t0"])
            if last_set is None:
                continue  # never certainly set before this read: absence is the initial state
            delete_end, _ = deletes_invoked.below(read["t1"])
            if delete_end > last_set_start:
                continue  # a delete may have landed after that set
            report.add(
                "absent_read",
                key,
                f"get by w{read['w']} at {read['t0']:.3f} returned None; set by w{last_set['w']} "
                f"acknowledged at {last_set['t1']:.3f}, no delete after it",
                read=_brief(read),
                read_on_fallback=_via_fallback(read, report.primary),
                write=_brief(last_set),
                write_state=_write_state(report, last_set, read["t0"]),
                same_instance=read["w"] == last_set["w"],
            )
            continue
        source = sets_by_value.get(ident(result))
        if source is None:
            report.add(
                "phantom_read",
                key,
                f"get by w{read['w']} returned {result!r}, never written to {key}",
                read=_brief(read),
                read_on_fallback=_via_fallback(read, report.primary),
            )
            continue
        if source["t0"] > read["t1"]:
            report.add(
                "phantom_read",
                key,
                f"get by w{read['w']} returned {result!r} before it was written",
                read=_brief(read),
                read_on_fallback=_via_fallback(read, report.primary),
                write=_brief(source),
            )
            continue
        later_start, later = acked_done.below(read["t0"])
        if later is not None and later is not source and later_start > _visible_end(report, source, read["w"], grace):
            report.add(
                "stale_read",
                key,
                f"get by w{read['w']} at {read['t0']:.3f} returned {result!r}, overwritten by "
                f"{later['op']} of w{later['w']} acknowledged at {later['t1']:.3f}",
                read=_brief(read),
                read_on_fallback=_via_fallback(read, report.primary),
                write=_brief(source),
                overwritten_by=_brief(later),
                write_state=_write_state(report, later, read["t0"]),
                same_instance=read["w"] == later["w"],
                source_state=_write_state(report, source, read["t0"]),
            )

    # The final value: a write that could have been the last one.
    final_id = None if final is None else ident(final)
    if final_id is not None and final_id not in sets_by_value:
        report.add("phantom_read", key, f"final value {final!r} was never written to {key}", final=final)
        return
    latest_acked_start = max((o["t0"] for o in acked), default=-math.inf)
    if final_id is None:
        if not acked:
            return  # the initial state, or an unknown write
        candidates = [o for o in deletes if _end(o, grace) >= latest_acked_start]
    else:
        source = sets_by_value[final_id]
        candidates = [source] if _end(source, grace) >= latest_acked_start else []
    if candidates:
        return
    last = max(acked, key=lambda o: o["t1"])
    report.add(
        "final_value",
        key,
        f"final value {final!r}, but the last acknowledged write is {last['op']} "
        f"{last['args'][0] if last['args'] else ''!r} by w{last['w']} at {last['t1']:.3f}",
        final=final,
        final_write=_brief(sets_by_value.get(final_id)) if final_id is not None else None,
        last_acked=_brief(last),
        write_state=_write_state(report, last, math.inf),
    )


def _check_list(report: Report, key: str, kops: Sequence[Mapping[str, Any]], final: list[Any]) -> None:
    appends = [o for o in kops if o["op"] == "append"]
    by_id = {ident(o["args"][0]): o for o in appends}
    acked = [o for o in appends if o["status"] == "ok"]

    # The final list.
    counts = Counter(ident(v) for v in final)
    for item_id, n in counts.items():
        if item_id not in by_id:
            report.add("phantom_read", key, f"final list holds {item_id!r}, never appended to {key}")
        elif n > 1:
            report.add("duplicate_append", key, f"final list holds {item_id!r} {n} times", write=_brief(by_id[item_id]))
    for o in acked:
        item_id = ident(o["args"][0])
        if item_id not in counts:
            report.add(
                "lost_append",
                key,
                f"append {item_id!r} acknowledged at {o['t1']:.3f} by w{o['w']} is missing from the final list",
                write=_brief(o),
                write_state=_write_state(report, o, math.inf),
            )
    _check_order(report, key, [ident(v) for v in final], "final list")

    # Reads. Per reading instance: the acknowledged appends by when they are visible to it (a buffered
    # append is visible to the other instances from its replay on, see the module docstring).
    invoked_starts = sorted(o["t0"] for o in appends)
    visible: dict[Any, tuple[list[float], list[tuple[float, Mapping[str, Any]]]]] = {}
    for read in kops:
        if read["status"] != "ok":
            continue
        if read["w"] not in visible:
            pairs = sorted(((_visible_end(report, o, read["w"], 0.0), o) for o in acked), key=lambda p: p[0])
            visible[read["w"]] = ([end for end, _ in pairs], pairs)
        seen_ends, seen_by = visible[read["w"]]
        if read["op"] == "get_length":
            length = read["result"]
            at_least = bisect.bisect_left(seen_ends, read["t0"])
            at_most = bisect.bisect_left(invoked_starts, read["t1"])
            if length < at_least:
                before = [o for _, o in seen_by[:at_least]]
                buffered = sum(bool(_via_fallback(o, report.primary)) for o in before)
                report.add(
                    "stale_list_read",
                    key,
                    f"get_length by w{read['w']} at {read['t0']:.3f} = {length}, but {at_least} appends were "
                    f"acknowledged (and replayed, if buffered elsewhere) before it began; {buffered} of them "
                    "were buffered on a fallback",
                    read=_brief(read),
                    read_on_fallback=_via_fallback(read, report.primary),
                    last_acked=_brief(before[-1]),
                    write_state=_write_state(report, before[-1], read["t0"]),
                    same_instance=read["w"] == before[-1]["w"],
                )
            elif length > at_most:
                report.add(
                    "length_phantom",
                    key,
                    f"get_length by w{read['w']} = {length}, but only {at_most} appends were invoked by then",
                    read=_brief(read),
                    read_on_fallback=_via_fallback(read, report.primary),
                )
        elif read["op"] == "get_range":
            items = [ident(v) for v in read["result"]]
            where = f"get_range{tuple(read['args'])} by w{read['w']} at {read['t0']:.3f}"
            for item_id in items:
                source = by_id.get(item_id)
                if source is None or source["t0"] > read["t1"]:
                    report.add(
                        "phantom_read",
                        key,
                        f"{where} returned {item_id!r}, never appended to {key} by then",
                        read=_brief(read),
                        read_on_fallback=_via_fallback(read, report.primary),
                    )
            for item_id, n in Counter(items).items():
                if n > 1:
                    report.add(
                        "duplicate_append",
                        key,
                        f"{where} returned {item_id!r} {n} times",
                        read=_brief(read),
                        read_on_fallback=_via_fallback(read, report.primary),
                    )
            _check_order(report, key, items, where)
            if _whole_list(read["args"], len(items)):
                seen = set(items)
                for end, o in seen_by:
                    if end < read["t0"] and ident(o["args"][0]) not in seen:
                        report.add(
                            "stale_list_read",
                            key,
                            f"{where} read the whole list ({len(items)} items) without {ident(o['args'][0])!r}, "
                            f"acknowledged at {o['t1']:.3f} by w{o['w']}",
                            read=_brief({**read, "result": f"<{len(items)} items>"}),
                            read_on_fallback=_via_fallback(read, report.primary),
                            write=_brief(o),
                            write_state=_write_state(report, o, read["t0"]),
                            same_instance=read["w"] == o["w"],
                        )
                        break  # one per read is enough


def _whole_list(args: Sequence[int], returned: int) -> bool:
    """Whether a range read certainly returned the whole list."""
    start, end = args
    if start == 0 and end == -1:
        return True
    if start == 0 and end >= 0:
        return returned < end + 1  # fewer than asked: the list ended
    if end == -1 and start < 0:
        return returned < -start  # fewer than the last -start: the list is that short
    return False


def _check_order(report: Report, key: str, items: Sequence[Any], where: str) -> None:
    last: dict[Any, int] = {}
    for item_id in items:
        if not (isinstance(item_id, tuple) and len(item_id) == 2):
            continue
        w, n = item_id
        if w in last and n < last[w]:
            report.add("append_order", key, f"{where}: w{w}'s item {n} after its item {last[w]}")
            return
        last[w] = max(n, last.get(w, n))


# --- presentation ----------------------------------------------------------------------------------


_FALLBACK_LABELS = {
    "write_state": "write",
    "source_state": "value's set",
    "read_on_fallback": "read on fallback",
    "same_instance": "same instance",
}


def _split(v: Violation) -> str:
    """Which ops behind a violation ran on the fallback, whether the write and the read are one instance's."""
    parts = [f"{label}={v.detail[name]}" for name, label in _FALLBACK_LABELS.items() if name in v.detail]
    return " ".join(parts) or "-"


def summary(report: Report, faults: int | None = None, examples: int = 3) -> str:
    """Counts and a few examples of each violation kind, for printing."""
    lines = [
        f"operations: {report.operations}",
        "ops by type: " + ", ".join(f"{k}={v}" for k, v in sorted(report.ops_by_type.items())),
        "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(report.outcomes.items())),
    ]
    if faults is not None:
        lines.append(f"faults: {faults}")
    lines.append(
        f"conflicts recorded: {report.conflicts} (acknowledged writes they may stand for: {report.conflicted_writes})"
    )
    by_kind = report.by_kind()
    lines.append(
        f"violations: {len(report.violations)}"
        + (" (" + ", ".join(f"{k}={by_kind[k]}" for k in KINDS if by_kind[k]) + ")" if by_kind else "")
    )
    for kind in KINDS:
        shown = [v for v in report.violations if v.kind == kind]
        if not shown:
            continue
        split = Counter(_split(v) for v in shown)
        lines.append(
            f"  {kind}: {len(shown)}; on the fallback? "
            + ", ".join(f"[{label}]={n}" for label, n in sorted(split.items()))
        )
        # One example of each (write, read) combination first, then the earliest others.
        firsts = {_split(v): v for v in reversed(shown)}
        picked = list(firsts.values())[:examples]
        picked += [v for v in shown if v not in picked][: max(0, examples - len(picked))]
        for v in picked:
            lines.append(f"    {v}")
            for name, value in v.detail.items():
                if name not in _FALLBACK_LABELS and value is not None:
                    lines.append(f"      {name}: {json.dumps(value, default=repr)[:400]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.history_checker DIR``: re-check a run kept in DIR (history-*.jsonl, final.json)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--primary", default="postgres")
    parser.add_argument("--grace", type=float, default=UNKNOWN_GRACE)
    parser.add_argument("--examples", type=int, default=5)
    args = parser.parse_args(argv)
    ops, events, _ = load_histories(sorted(args.dir.glob("history-*.jsonl")))
    final = json.loads((args.dir / "final.json").read_text())
    faults = final.get("faults")
    report = check(
        ops,
        final["values"],
        final["lists"],
        conflicts_of(events),
        events,
        unknown_grace=args.grace,
        primary=args.primary,
    )
    print(summary(report, faults=None if faults is None else len(faults), examples=args.examples))
    return 1 if report.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
