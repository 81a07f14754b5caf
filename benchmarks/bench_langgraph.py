"""LangGraph on kvstore vs LangGraph's own backends, in one process and one run.

1. Checkpointer: a real ``StateGraph`` (``add_messages``, a langchain-core fake chat model
   answering from the last 20 messages, no network) run for ``--turns`` turns (2 messages
   each) on kvstore's checkpointer (SQLite file, PostgreSQL) and on ``SqliteSaver`` /
   ``PostgresSaver`` (and ``InMemorySaver`` as the floor). The savers take turns
   (turn t of each, then turn t+1 of each...). Reports the time per turn around 20 / 200
   / 1,000 messages, the bytes stored after the run and the latency of
   ``graph.get_state(config).values["messages"][-20:]``.
2. Store: ``--items`` items in 100 namespaces; ``search`` of one namespace prefix with a
   value filter, vs ``SqliteStore`` / ``PostgresStore`` (``InMemoryStore`` as the floor),
   alternating rounds; and whether an item whose TTL passed is still returned.

Run: ``.venv/bin/python -m benchmarks.bench_langgraph`` (peers: ``pip install --group bench``).
For the report: ``benchmarks.bench_langgraph.rows(url=..., turns=500, items=10_000, rounds=7)`` runs
both parts and returns one dict per contender (see `rows`); ``--quick`` is 60 turns.
PostgreSQL: ``--url`` or ``KVSTORE_BENCH_POSTGRES_URL`` (default the local server, db ``test``);
every saver gets its own schema (``bench_lg_*``), dropped at the end. SQLite: WAL and
``synchronous=NORMAL`` on both sides.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import orjson
import psycopg
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage, HumanMessage, message_to_dict
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, copy_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.store.memory import InMemoryStore
from langgraph.store.postgres import PostgresStore
from langgraph.store.sqlite import SqliteStore

from kvstore import Database, MemoryDatabase
from kvstore.integrations.langgraph import KVStoreSaver, KVStoreStore
from kvstore.postgres import PostgresDatabase
from kvstore.sqlite import SqliteDatabase

DEFAULT_URL = os.environ.get("KVSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RUN = uuid.uuid4().hex[:6]
HUMAN = "Could you tell me a bit more about the weather tomorrow in the city, please? Thanks a lot! {i:05d}"
ANSWER = "Tomorrow looks mild and mostly sunny, with a light breeze from the west in the afternoon. Enjoy!"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def chat_graph(checkpointer: Any) -> Any:
    model = FakeListChatModel(responses=[ANSWER])

    def chatbot(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"][-20:])]}

    builder = StateGraph(State)
    builder.add_node("chatbot", chatbot)
    builder.add_edge(START, "chatbot")
    return builder.compile(checkpointer=checkpointer)


def schema_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def create_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def schema_bytes(url: str, schema: str) -> int:
    """pg_total_relation_size of every table of ``schema`` (heap + TOAST + indexes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
        return int(row[0]) if row else 0


def pg_payload_bytes(url: str, schema: str) -> int:
    """Bytes of the columns PostgresSaver stores payload in (checkpoint JSONB, blobs, writes)."""
    with psycopg.connect(schema_url(url, schema), autocommit=True) as conn:
        total = 0
        for query in (
            "SELECT coalesce(sum(pg_column_size(checkpoint) + pg_column_size(metadata)), 0) FROM checkpoints",
            "SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs",
            "SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes",
        ):
            row = conn.execute(query).fetchone()
            total += int(row[0]) if row else 0
        return total


def sqlite_saver_payload(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        a = conn.execute("SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints").fetchone()
        b = conn.execute("SELECT coalesce(sum(length(value)), 0) FROM writes").fetchone()
        return int(a[0]) + int(b[0])


def kvstore_payload(db: Database, prefix: str) -> int:
    """Sum of the stored JSON sizes of every value under ``prefix`` (records, items, pending writes)."""
    keys = db.keys(prefix + "*")
    total = 0
    for start in range(0, len(keys), 500):
        total += sum(len(orjson.dumps(v)) for v in db.mget(keys[start : start + 500]) if v is not None)
    return total


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


class ReferenceSaver(BaseCheckpointSaver[int]):
    """The floor: keeps checkpoints by reference in a dict (no serialization, no copy of values), so a turn on it
    is LangGraph's own cost."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: dict[tuple[str, str], dict[str, tuple[Any, Any, str | None]]] = {}
        self.writes: dict[tuple[str, str, str], list[tuple[str, str, Any]]] = {}

    def get_tuple(self, config: Any) -> CheckpointTuple | None:
        conf = config["configurable"]
        tid, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        saved = self.checkpoints.get((tid, ns), {})
        cid = conf.get("checkpoint_id") or max(saved, default=None)
        if cid is None or cid not in saved:
            return None
        checkpoint, metadata, parent = saved[cid]
        mine = {"configurable": {"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": cid}}
        parent_config = {"configurable": {"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": parent}}
        return CheckpointTuple(
            mine, checkpoint, metadata, parent_config if parent else None, self.writes.get((tid, ns, cid), [])
        )

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        conf = config["configurable"]
        tid, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        self.checkpoints.setdefault((tid, ns), {})[checkpoint["id"]] = (
            copy_checkpoint(checkpoint),
            metadata,
            conf.get("checkpoint_id"),
        )
        return {"configurable": {"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        key = (conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"])
        self.writes.setdefault(key, []).extend((task_id, c, v) for c, v in writes)


class Contender:
    """One checkpointer under test: its graph, per-turn timings and how to measure what it stored."""

    def __init__(
        self, name: str, saver: Any, stored: Callable[[], tuple[int, int | None]], role: str, backend: str
    ) -> None:
        self.name = name
        self.role = role
        self.backend = backend
        self.saver = saver
        self.graph = chat_graph(saver)
        self.config = {"configurable": {"thread_id": f"bench-{RUN}"}}
        self.turns: list[float] = []
        self.stored = stored

    def turn(self, i: int, config: Any = None) -> float:
        start = time.perf_counter()
        self.graph.invoke({"messages": [HumanMessage(HUMAN.format(i=i))]}, config or self.config)
        elapsed = time.perf_counter() - start
        if config is None:
            self.turns.append(elapsed)
        return elapsed

    def last20(self) -> list[Any]:
        return list(self.graph.get_state(self.config).values["messages"][-20:])


def bench_checkpointers(url: str, tmp: Path, turns: int, stack: ExitStack) -> list[dict[str, Any]]:
    """Run the chat graph on every checkpointer; print the table and return one row per checkpointer."""
    contenders: list[Contender] = []

    contenders.append(
        Contender("no saver: values kept by reference (floor)", ReferenceSaver(), lambda: (0, None), "floor", "memory")
    )
    contenders.append(Contender("langgraph InMemorySaver", InMemorySaver(), lambda: (0, None), "peer", "memory"))
    kv_memory = MemoryDatabase()
    kv_memory_saver = KVStoreSaver(kv_memory)
    contenders.append(
        Contender(
            "kvstore KVStoreSaver, memory",
            kv_memory_saver,
            lambda: (kvstore_payload(kv_memory, kv_memory_saver.prefix), None),
            "kvstore",
            "memory",
        )
    )

    kv_sqlite_path = tmp / "kv.db"
    kv_sqlite = stack.enter_context(SqliteDatabase(kv_sqlite_path))
    kv_sqlite_saver = KVStoreSaver(kv_sqlite)
    contenders.append(
        Contender(
            "kvstore KVStoreSaver, SQLite",
            kv_sqlite_saver,
            lambda: (kvstore_payload(kv_sqlite, kv_sqlite_saver.prefix), file_bytes(kv_sqlite_path)),
            "kvstore",
            "sqlite",
        )
    )

    saver_path = tmp / "sqlite_saver.db"
    conn = sqlite3.connect(saver_path, check_same_thread=False, isolation_level=None)
    stack.callback(conn.close)
    sqlite_saver = SqliteSaver(conn)
    sqlite_saver.setup()
    conn.execute("PRAGMA synchronous=NORMAL")
    contenders.append(
        Contender(
            "langgraph SqliteSaver",
            sqlite_saver,
            lambda: (sqlite_saver_payload(saver_path), file_bytes(saver_path)),
            "peer",
            "sqlite",
        )
    )

    kv_schema, pg_schema = f"bench_lg_kv_{RUN}", f"bench_lg_pg_{RUN}"
    for schema in (kv_schema, pg_schema):
        create_schema(url, schema)
        stack.callback(drop_schema, url, schema)
    kv_pg = PostgresDatabase(url, schema_name=kv_schema, max_size=4)
    kv_pg.open()
    stack.callback(kv_pg.close)
    kv_pg_saver = KVStoreSaver(kv_pg)
    contenders.append(
        Contender(
            "kvstore KVStoreSaver, PostgreSQL",
            kv_pg_saver,
            lambda: (kvstore_payload(kv_pg, kv_pg_saver.prefix), schema_bytes(url, kv_schema)),
            "kvstore",
            "postgres",
        )
    )
    pg_saver = stack.enter_context(PostgresSaver.from_conn_string(schema_url(url, pg_schema)))
    pg_saver.setup()
    contenders.append(
        Contender(
            "langgraph PostgresSaver",
            pg_saver,
            lambda: (pg_payload_bytes(url, pg_schema), schema_bytes(url, pg_schema)),
            "peer",
            "postgres",
        )
    )

    print(f"\n## LangGraph checkpointers: {turns} turns (2 messages each), savers alternating turn by turn")
    started = time.perf_counter()
    for i in range(turns):
        for c in contenders:
            c.turn(i)
        if (i + 1) % 100 == 0:
            print(f"  ... {i + 1} turns ({time.perf_counter() - started:.0f} s)", flush=True)

    # The messages' own JSON: what a chat history must store at the very least.
    messages = contenders[0].graph.get_state(contenders[0].config).values["messages"]
    own = sum(len(m.model_dump_json()) for m in messages)
    as_dicts = sum(len(orjson.dumps(message_to_dict(m))) for m in messages)  # what LangChain's histories store

    stored = {c.name: c.stored() for c in contenders}  # before the extra threads below

    # A short history is measured again on fresh threads, 5 rounds (turns 5-10: 10-20 messages), the
    # savers alternating: one window early in a long run is too exposed to the machine's noise.
    small: dict[str, list[float]] = {c.name: [] for c in contenders}
    for round_ in range(5):
        fresh = {"configurable": {"thread_id": f"bench-small-{RUN}-{round_}"}}
        for i in range(10):
            for c in contenders:
                elapsed = c.turn(i, fresh)
                if i >= 5:
                    small[c.name].append(elapsed)

    def at(c: Contender, n_messages: int) -> float:
        if n_messages <= 20:
            return statistics.median(small[c.name]) * 1000
        centre = max(0, n_messages // 2 - 1)
        window = c.turns[max(0, centre - 5) : centre + 5] or c.turns[-10:]
        return statistics.median(window) * 1000

    # get_state latency: alternate contenders, median of the rounds; kvstore's tail() beside it.
    latency: dict[str, list[float]] = {c.name: [] for c in contenders}
    tails: dict[str, list[float]] = {c.name: [] for c in contenders if isinstance(c.saver, KVStoreSaver)}
    out: list[dict[str, Any]] = []
    for c in contenders:
        c.last20()  # warm
    for _ in range(15):
        for c in contenders:
            start = time.perf_counter()
            got = c.last20()
            latency[c.name].append((time.perf_counter() - start) * 1000)
            assert len(got) == 20
            if c.name in tails:
                start = time.perf_counter()
                tail = c.saver.tail(c.config, "messages", 20)
                tails[c.name].append((time.perf_counter() - start) * 1000)
                assert tail == got

    marks = [m for m in (20, 200, 1000) if m <= 2 * turns]
    header = " | ".join(f"turn @ {m:,} msgs, ms (saver's share)" for m in marks)
    floor = contenders[0]
    print(
        f"\nmessages: {len(messages):,}; their own JSON (model_dump_json): {own:,} B "
        f"({own / len(messages):.0f} B/message); as message_to_dict JSON (LangChain's histories): {as_dicts:,} B"
    )
    print(
        f"| checkpointer | {header} | payload stored (B) | x own JSON | on disk (B) | get_state[-20:] (ms) "
        "| saver.tail(20) (ms) |"
    )
    print("|---|" + "---|" * len(marks) + "---|---|---|---|---|")
    for c in contenders:
        payload, disk = stored[c.name]
        times = " | ".join(
            f"{at(c, m):.2f}" + (f" ({at(c, m) - at(floor, m):+.2f})" if c is not floor else "") for m in marks
        )
        ratio = f"{payload / own:.1f}x" if payload else "—"
        disk_s = f"{disk:,}" if disk is not None else "—"
        payload_s = f"{payload:,}" if payload else "(memory)"
        tail_s = f"{statistics.median(tails[c.name]):.2f}" if c.name in tails else "—"
        get_s = f"{statistics.median(latency[c.name]):.2f}"
        print(f"| {c.name} | {times} | {payload_s} | {ratio} | {disk_s} | {get_s} | {tail_s} |")
        out.append(
            {
                "section": "langgraph",
                "workload": "checkpointer: chat turn",
                "name": c.name,
                "role": c.role,
                "backend": c.backend,
                "messages": len(messages),
                "turn_ms": {m: at(c, m) for m in marks},
                "saver_ms": {m: at(c, m) - at(floor, m) for m in marks},
                "payload_bytes": payload or None,
                "bytes_per_1000_messages": payload * 1000 / len(messages) if payload else None,
                "x_own_json": payload / own if payload else None,
                "own_json_bytes": own,
                "disk_bytes": disk,
                "get_state_last20_ms": statistics.median(latency[c.name]),
                "tail20_ms": statistics.median(tails[c.name]) if c.name in tails else None,
            }
        )
    print(
        "turn: median wall time of the turns around that history length (graph.invoke, LangGraph's default "
        "durability); saver's share = minus the floor's turn in the same run (LangGraph's own cost, which grows "
        "with the history: add_messages and the channels handle the whole list every step). @20: turns 5-10 of 5 "
        "fresh threads per saver, alternating; @200/@1,000: the 10 turns around it in the 500-turn run."
    )
    print(
        "payload: kvstore = sum of the stored JSON values and list items; SqliteSaver = checkpoint+metadata+writes "
        "column bytes; PostgresSaver = pg_column_size(checkpoint, metadata) + blob + write bytes. on disk: SQLite "
        "file (+WAL); PostgreSQL pg_total_relation_size of the saver's own schema (tables, TOAST, indexes)."
    )
    return out


@contextmanager
def stores(url: str, tmp: Path) -> Iterator[list[tuple[str, Any, str]]]:
    with ExitStack() as stack:
        out: list[tuple[str, Any, str]] = [("InMemoryStore (floor)", InMemoryStore(), "floor")]
        kv_sqlite = stack.enter_context(SqliteDatabase(tmp / "kv_store.db"))
        out.append(("kvstore KVStoreStore, SQLite", KVStoreStore(kv_sqlite, ttl={"refresh_on_read": False}), "kvstore"))
        conn = sqlite3.connect(tmp / "sqlite_store.db", check_same_thread=False, isolation_level=None)
        stack.callback(conn.close)
        sqlite_store = SqliteStore(conn, ttl={"refresh_on_read": False})
        sqlite_store.setup()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        out.append(("langgraph SqliteStore", sqlite_store, "peer"))
        kv_schema, pg_schema = f"bench_lg_kvs_{RUN}", f"bench_lg_pgs_{RUN}"
        for schema in (kv_schema, pg_schema):
            create_schema(url, schema)
            stack.callback(drop_schema, url, schema)
        kv_pg = PostgresDatabase(url, schema_name=kv_schema, max_size=4)
        kv_pg.open()
        stack.callback(kv_pg.close)
        out.append(("kvstore KVStoreStore, PostgreSQL", KVStoreStore(kv_pg, ttl={"refresh_on_read": False}), "kvstore"))
        pg_store = stack.enter_context(
            PostgresStore.from_conn_string(schema_url(url, pg_schema), ttl={"refresh_on_read": False})
        )
        pg_store.setup()
        out.append(("langgraph PostgresStore", pg_store, "peer"))
        yield out


def alternate(ops: dict[str, Callable[[int], object]], n: int, rounds: int) -> dict[str, float]:
    """Ops per second of each op: warmed up, then ``rounds`` alternating rounds of ``n`` calls; the median."""
    for op in ops.values():
        for i in range(3):
            op(i)
    rates: dict[str, list[float]] = {name: [] for name in ops}
    for r in range(rounds):
        for name, op in ops.items():
            start = time.perf_counter()
            for i in range(r * n, r * n + n):
                op(i)
            rates[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in rates.items()}


def bench_stores(url: str, tmp: Path, items: int, rounds: int) -> list[dict[str, Any]]:
    """Search every store; print the table and return one row per store."""
    from langgraph.store.base import PutOp

    namespaces = 100
    per_ns = items // namespaces
    with stores(url, tmp) as contenders:
        for name, store, _ in contenders:
            start = time.perf_counter()
            ops = [
                PutOp(("users", f"u{n:03d}", "memories"), f"m{i}", {"kind": ("fact", "pref", "event")[i % 3], "n": i})
                for n in range(namespaces)
                for i in range(per_ns)
            ]
            for s in range(0, len(ops), 1000):
                store.batch(ops[s : s + 1000])
            print(f"  loaded {name}: {len(ops):,} items in {time.perf_counter() - start:.1f} s", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")

        def search(store: Any) -> Callable[[int], object]:
            def op(i: int) -> object:
                found = store.search(("users", f"u{i % namespaces:03d}"), filter={"kind": "pref"}, limit=10)
                assert found, "the filter matches items in every namespace"
                return found

            return op

        results = alternate({name: search(store) for name, store, _ in contenders}, n=50, rounds=rounds)
        floor = results["InMemoryStore (floor)"]
        kv_sqlite, kv_pg = results["kvstore KVStoreStore, SQLite"], results["kvstore KVStoreStore, PostgreSQL"]
        print(
            f"\n## LangGraph store: search(namespace prefix + filter, limit 10) over {items:,} items in "
            f"{namespaces} namespaces (median of {rounds} alternating rounds)"
        )
        print("| store | searches/s | µs/search | vs floor | kvstore vs this peer | expired item returned? |")
        print("|---|---|---|---|---|---|")
        expired = check_ttl(contenders)
        out: list[dict[str, Any]] = []
        for name, _, role in contenders:
            rate = results[name]
            mine = kv_sqlite if "Sqlite" in name else kv_pg if "Postgres" in name else None
            versus = f"{mine / rate:.2f}x" if role == "peer" and mine else ""
            print(f"| {name} | {rate:,.0f} | {1e6 / rate:,.0f} | {rate / floor:.2f} | {versus} | {expired[name]} |")
            lowered = name.lower()  # "SqliteStore" and "KVStoreStore, SQLite"; "PostgresStore" and "PostgreSQL"
            backend = "sqlite" if "sqlite" in lowered else "postgres" if "postgres" in lowered else "memory"
            out.append(
                {
                    "section": "langgraph",
                    "workload": f"store: search(namespace prefix + filter, limit 10) of {items:,} items",
                    "name": name,
                    "role": role,
                    "backend": backend,
                    "ops_per_s": rate,
                    "us_per_op": 1e6 / rate,
                    "vs_floor": rate / floor,
                    "expired_item_returned": expired[name],
                }
            )
        return out


def check_ttl(contenders: list[tuple[str, Any, str]]) -> dict[str, str]:
    """Put an item with a 1.2 s TTL in each store, wait 2 s: is it still returned by get or search?"""
    out: dict[str, str] = {}
    for name, store, _ in contenders:
        if not getattr(store, "supports_ttl", False):
            out[name] = "no TTL support"
            continue
        store.put(("ttl", "check"), "k", {"v": 1}, ttl=0.02)
    time.sleep(2.0)
    for name, store, _ in contenders:
        if name in out:
            continue
        got = store.get(("ttl", "check"), "k", refresh_ttl=False)
        found = store.search(("ttl", "check"), refresh_ttl=False)
        out[name] = "**yes**" if got is not None or found else "no"
    return out


def rows(url: str = DEFAULT_URL, *, turns: int = 500, items: int = 10_000, rounds: int = 7) -> list[dict[str, Any]]:
    """Run both parts (checkpointers, then stores) and return their rows, also printed as Markdown tables.

    Every row has ``section`` ("langgraph"), ``workload``, ``name``, ``role`` ("floor", "kvstore" or "peer")
    and ``backend`` ("memory", "sqlite", "postgres"). Checkpointer rows add ``turn_ms`` and ``saver_ms``
    ({messages: ms}, at 20 / 200 / 1,000 messages; saver_ms = minus the floor's turn), ``payload_bytes``,
    ``bytes_per_1000_messages``, ``x_own_json`` (payload / the messages' own JSON), ``disk_bytes``,
    ``get_state_last20_ms`` and ``tail20_ms``; store rows add ``ops_per_s``, ``us_per_op``, ``vs_floor``
    and ``expired_item_returned``. Needs PostgreSQL at ``url`` and the bench group's peers.
    """
    tmp = Path(tempfile.mkdtemp(prefix="bench_langgraph_"))
    try:
        with ExitStack() as stack:
            found = bench_checkpointers(url, tmp, turns, stack)
        return found + bench_stores(url, tmp, items, rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="60 turns, 2,000 items, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.turns, args.items, args.rounds = 60, 2_000, 3
    rows(args.url, turns=args.turns, items=args.items, rounds=args.rounds)


if __name__ == "__main__":
    main()
