"""THE workload registry and the one function that runs it.

Every case of the report is one ``Entry``: (section, workload, case name, role,
setup, args); ``setup(tier, *args)`` returns the op timed as ``op(i)``. The
kvstore rows of every workload (the get/set/mget 100/mset 100 grid, chat
append, last 20, session touch, incr, delete_many 100, store get + touch) are written once below and instantiated per
backend; what differs per backend (the bare-driver floor, the peers and their
data) is declared by its ``Tier`` in ``benchmarks.backends``. ``run`` times each
workload's cases in alternating calibrated rounds (``benchmarks._common``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from benchmarks._common import Case
from benchmarks.backends import (
    APPEND,
    COUNTERS,
    DELETE_MANY,
    GATHER,
    GRID,
    INCR,
    LAST,
    NEW_OPS,
    SESSION,
    SESSION_DATA,
    TIERS,
    TOUCH,
    TOUCH_KEYS,
    Op,
    Tier,
    drained,
)
from benchmarks.peers import reason
from benchmarks.runner import BATCH, KEYS, MESSAGE, SESSION_TTL, Context, chat, msg
from benchmarks.targets import GATHER_FLOOR, GATHER_FUTURES_FLOOR
from kvstore import AsyncChatHistory, ChatHistory, ChatMessage

__all__ = ["REGISTRY", "Entry", "run", "workloads"]


@dataclass(frozen=True)
class Entry:
    section: str
    workload: str
    case: str
    #: floor | kvstore | variant (another kvstore flavour) | peer | info
    role: str
    setup: Callable[..., Op | None]
    args: tuple[Any, ...] = ()
    is_async: bool = False


# --- kvstore's side, once: setup(tier, flavour) with flavour 0 = sync, 1 = async ------------------------

KVSTORE: dict[str, tuple[str, Callable[[Any], Op]]] = {
    "get": ("get", lambda s: lambda i: s.get(KEYS[i % 1000])),
    "set": ("set", lambda s: lambda i: s.set(KEYS[i % 1000], msg(i))),
    "mget 100": ("mget", lambda s: lambda i: s.mget(BATCH)),
    "mset 100": ("mset", lambda s: lambda i: s.mset({k: msg(i + j) for j, k in enumerate(BATCH)})),
}


def grid(tier: Tier, flavour: int, workload: str) -> Op:
    return KVSTORE[workload][1](tier.stores[flavour])


def chat_add(tier: Tier, flavour: int) -> Op:
    history = (ChatHistory, AsyncChatHistory)[flavour](tier.chat_dbs[flavour], "append")
    return lambda i: history.add(chat(i))


def chat_last(tier: Tier, flavour: int) -> Op:
    history = tier.histories[flavour]
    return lambda i: history.last(20)


def chat_last_dict(tier: Tier, flavour: int) -> Op:
    """``last(20)`` of the same "big" conversation as plain dicts (``model=dict``: no pydantic model built)."""
    history = ChatHistory(tier.chat_dbs[0], "big", model=dict)
    return lambda i: history.last(20)


_PAGE: TypeAdapter[list[ChatMessage]] = TypeAdapter(list[ChatMessage])


def validated_last(tier: Tier) -> Op:
    """The floor's read of the last 20 stored texts, then one pydantic-core ``validate_json`` of them as a
    ``list[ChatMessage]``: the least a ``ChatMessage`` page can cost on this backend (its floor + the model)."""
    read = tier.floor_last_raw()

    def op(i: int) -> object:
        items = read(i)
        joined = b"[" + b",".join(items) + b"]" if items[0].__class__ is bytes else "[" + ",".join(items) + "]"
        return _PAGE.validate_json(joined)

    return op


async def _noop() -> None:
    return None


def gather_floor(tier: Tier) -> Op:
    """The floor's one batch read, then ``asyncio.gather`` of 100 coroutines that return at once: the least 100
    concurrent coroutine ``get``s can cost over one batch (asyncio's own task cost, nothing read)."""
    method = next(r.method for r in tier.rows if r.workload == GATHER and r.role == "floor")
    floor: Any = getattr(tier, method)()

    async def op(i: int) -> object:
        found = floor(i)
        if inspect.isawaitable(found):
            found = await found
        await asyncio.gather(*[_noop() for _ in BATCH])
        return found

    return op


def gather_futures_floor(tier: Tier) -> Op:
    """The floor's one batch read, then ``asyncio.gather`` of 100 futures that one callback answers at once: what
    100 concurrent gets cost over one batch when no get makes a task or a coroutine (each caller holds a bare
    future, as DataLoader's ``load`` returns): the least any one-awaitable-per-get API can cost."""
    method = next(r.method for r in tier.rows if r.workload == GATHER and r.role == "floor")
    floor: Any = getattr(tier, method)()

    async def op(i: int) -> object:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in BATCH]
        found = floor(i)
        if inspect.isawaitable(found):
            found = await found
        loop.call_soon(_answer, futures, found)
        await asyncio.gather(*futures)
        return found

    return op


def _answer(futures: list[asyncio.Future[Any]], found: Any) -> None:
    for future in futures:
        future.set_result(found)


def gather_gets(tier: Tier, flavour: int) -> Op:
    """100 point gets of the mget batch's keys issued at once (``asyncio.gather``), on the async grid store."""
    get = tier.stores[1].get

    async def op(i: int) -> object:
        return await asyncio.gather(*[get(k) for k in BATCH])

    return op


def session_touch(tier: Tier, flavour: int) -> Op:
    store = tier.session_stores[flavour]
    sids = [tier.wait(s) if flavour else s for s in (store.create(SESSION_DATA) for _ in range(100))]
    return lambda i: store.get(sids[i % 100], touch=True)


# The new store operations (DESIGN.md §1): the raw hook that makes each one a single round trip, what the
# generic fallback in kvstore.base does instead, and kvstore's method name in the case name.
NEW_HOOKS: dict[str, tuple[str, str | None, str]] = {
    INCR: ("_incr", None, "incr"),
    DELETE_MANY: ("_delete_many", "one DELETE per key", "delete_many"),
    TOUCH: ("_get_touch", "a get, then an expire: two round trips", f"get(touch={SESSION_TTL})"),
}


def implements(store: Any, hook: str) -> bool:
    """Whether ``store``'s backend implements ``hook`` itself (not only the generic base class)."""
    owner = next(c for c in type(store).__mro__ if hook in vars(c))
    return owner.__module__ not in ("kvstore.base", "kvstore.base_async")


def _sync(tier: Tier, flavour: int, result: Any) -> Any:
    return tier.wait(result) if flavour else result


def _incr(tier: Tier, flavour: int, store: Any) -> Op:
    return lambda i: store.incr(COUNTERS[i % 100])


def _delete_many(tier: Tier, flavour: int, store: Any) -> Op:
    batches = tier.delete_pool(f"kv{flavour}")
    for first in range(0, len(batches), 10):
        _sync(tier, flavour, store.mset({k: MESSAGE for batch in batches[first : first + 10] for k in batch}))
    return drained(tier, batches, store.delete_many)


def _touch(tier: Tier, flavour: int, store: Any) -> Op:
    _sync(tier, flavour, store.mset([(k, SESSION_DATA, SESSION_TTL) for k in TOUCH_KEYS]))
    return lambda i: store.get(TOUCH_KEYS[i % 100], touch=SESSION_TTL)


#: What one probe call must return (a wrong result is a bug of the benchmark, not a slow row).
_EXPECT: dict[str, Callable[[Any], bool]] = {
    INCR: lambda r: type(r) is int and r > 0,
    DELETE_MANY: lambda r: r == 100,
    TOUCH: lambda r: r == SESSION_DATA,
}


#: One cheap call per operation, made before any data is loaded: does this backend have it yet?
_PROBE: dict[str, Callable[[Any], Any]] = {
    INCR: lambda store: store.incr("probe:incr"),
    DELETE_MANY: lambda store: store.delete_many(["probe:absent"]),
    TOUCH: lambda store: store.get("probe:absent", touch=SESSION_TTL),
}


def new_op(tier: Tier, flavour: int, workload: str) -> Op | None:
    """kvstore's side of incr / delete_many 100 / get + touch on ``tier``'s grid store (flavour 0 sync, 1 async).

    Probed first: an operation this backend does not have yet (on this branch only the memory backend has the
    new operations; the others raise NotImplementedError, or TypeError from their own ``get`` without
    ``touch=``) is skipped with a note saying it awaits that backend's merge. One served by kvstore's generic
    fallback runs and says so in the table's note. The first timed-op call is checked (a wrong result is a bug
    of the benchmark, not a slow row).
    """
    store = tier.stores[flavour]
    hook, fallback, method = NEW_HOOKS[workload]
    cls = tier.classes[flavour]
    try:
        _sync(tier, flavour, _PROBE[workload](store))
    except (NotImplementedError, TypeError) as exc:
        tier.note(
            workload,
            f"kvstore {cls}.{method}: not run, not in this backend yet ({reason(exc)}); "
            f"awaits the {tier.section} backend merge.",
        )
        return None
    op = {INCR: _incr, DELETE_MANY: _delete_many, TOUCH: _touch}[workload](tier, flavour, store)
    got = _sync(tier, flavour, op(0))
    if not _EXPECT[workload](got):
        raise AssertionError(f"kvstore {cls}.{method} returned {got!r}")
    if fallback and not implements(store, hook) and flavour == 0:
        tier.note(
            workload,
            f"kvstore {' / '.join(tier.classes)}: {method} runs kvstore's generic fallback here ({fallback}); "
            f"its one-round-trip form awaits the {tier.section} backend merge.",
        )
    return op


def own(tier: Tier, method: str) -> Op | None:
    op: Op | None = getattr(tier, method)()
    return op


def peer(tier: Tier, row: Any) -> Op | None:
    built = tier.peer(row.peer)
    return None if built is None else row.make(tier, built)


def _declare(tier: type[Tier]) -> list[Entry]:
    """Every case of one backend, in table order: floor and info rows, kvstore sync and async, variants, peers."""
    entries: list[Entry] = []
    for workload in (
        *GRID,
        *((APPEND, LAST) if tier.chat else ()),
        SESSION,
        *NEW_OPS,
        *((GATHER,) if tier.gather else ()),
    ):
        flavours: tuple[int, ...] = (0, 1)
        setup: Callable[..., Op | None]
        args: tuple[Any, ...]
        if workload == GATHER:  # async only: the sync API has no concurrent callers in one thread
            names, setup, args, flavours = (
                [f"kvstore asyncio.gather(100 x {tier.classes[1]}.get)"],
                gather_gets,
                (),
                (1,),
            )
        elif workload in NEW_HOOKS:
            names = [f"kvstore {cls}.{NEW_HOOKS[workload][2]}" for cls in tier.classes]
            setup, args = new_op, (workload,)
        elif workload in KVSTORE:
            names = [f"kvstore {cls}.{KVSTORE[workload][0]}" for cls in tier.classes]
            setup, args = grid, (workload,)
        elif workload == APPEND:
            names, setup, args = ["kvstore ChatHistory.add", "kvstore AsyncChatHistory.add"], chat_add, ()
        elif workload == LAST:
            names = ["kvstore ChatHistory.last(20)", "kvstore AsyncChatHistory.last(20)"]
            setup, args = chat_last, ()
        else:
            names, setup, args = [f"kvstore {s}.get(touch=True)" for s in tier.sessions], session_touch, ()
        rows = {
            group: [
                Entry(tier.section, workload, r.case, r.role, own, (r.method,), r.is_async)
                for r in tier.rows
                if r.workload == workload and (r.role == "variant") == (group == "after")
            ]
            for group in ("before", "after")
        }
        entries += rows["before"]  # the floor and info rows
        if workload == LAST:  # what the page model alone costs over the floor
            entries.append(
                Entry(
                    tier.section,
                    workload,
                    "floor + pydantic-core validate_json(list[ChatMessage]) (the model's own cost)",
                    "info",
                    validated_last,
                )
            )
        elif workload == GATHER:  # what asyncio alone costs over one batch
            entries.append(
                Entry(
                    tier.section,
                    workload,
                    GATHER_FLOOR,
                    "info",
                    gather_floor,
                    (),
                    True,
                )
            )
            entries.append(Entry(tier.section, workload, GATHER_FUTURES_FLOOR, "info", gather_futures_floor, (), True))
        entries += [
            Entry(tier.section, workload, name, "kvstore", setup, (flavour, *args), bool(flavour))
            for flavour, name in zip(flavours, names, strict=True)
        ]
        if workload == GATHER:  # the same 100 keys in one batch: what the gather should cost about
            entries.append(
                Entry(
                    tier.section,
                    workload,
                    f"kvstore {tier.classes[1]}.mget(100)",
                    "variant",
                    grid,
                    (1, "mget 100"),
                    True,
                )
            )
        if workload == LAST:  # the same page as plain dicts
            entries.append(
                Entry(
                    tier.section, workload, "kvstore ChatHistory(model=dict).last(20)", "variant", chat_last_dict, (0,)
                )
            )
        entries += rows["after"]  # variants
        entries += [
            Entry(tier.section, workload, p.case, p.role, peer, (p,), p.is_async)
            for p in tier.peers
            if p.workload == workload
        ]
    return entries


REGISTRY: list[Entry] = [e for tier in TIERS.values() for e in _declare(tier)]


def workloads(section: str) -> list[str]:
    """The workloads of ``section``, in report order."""
    return list(dict.fromkeys(e.workload for e in REGISTRY if e.section == section))


def _awaitable(op: Op) -> Op:
    """An async case as an ``async def`` (as a hand-written one would be): ``op(i)`` returns an awaitable."""
    if inspect.iscoroutinefunction(op):
        return op

    async def run(i: int) -> object:
        return await op(i)  # type: ignore[misc]

    return run


def run(ctx: Context, section: str, only: list[str] | None = None) -> None:
    """Run the registered workloads of ``section`` (those whose name starts with one of ``only``, if given).

    The backend is opened once; each workload's cases are set up (a peer that is
    missing is skipped with its reason), then timed together in alternating
    calibrated rounds and recorded as one table of ratios to its floor.
    """
    tier = TIERS[section](ctx)
    try:
        tier.open()
        for workload in workloads(section):
            if only and not any(workload.startswith(w) for w in only):
                continue
            cases = []
            for e in (e for e in REGISTRY if e.section == section and e.workload == workload):
                op = e.setup(tier, *e.args)
                if op is not None:
                    n = getattr(op, "ops_per_round", None)  # a fixed count (delete_many's pools), else calibrated
                    cases.append(Case(e.case, _awaitable(op) if e.is_async else op, e.is_async, role=e.role, n=n))
            table = ctx.run(section, workload, cases, note=" ".join(tier.notes.get(workload, [])))
            tier.after(workload, table)
        tier.finish()
    finally:
        tier.close()
