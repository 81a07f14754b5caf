"""LangGraph adapters: langgraph-checkpoint-conformance on every backend (sync and async savers), the store, and
what neither suite covers (delta storage of message lists, no pickle, TTL expiry)."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langgraph.checkpoint.conformance")

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from kvstore import AsyncDatabase, AsyncMemoryDatabase, Database, MemoryDatabase
from kvstore.integrations.langgraph import AsyncKVStoreSaver, AsyncKVStoreStore, KVStoreSaver, KVStoreStore
from tests.clock import FakeClock

BACKENDS = ["memory", "sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)]
#: Every key of these tests lives under this kvstore prefix, so a shared server keeps its other data.
PREFIX = "lg-test:"


def open_sync(name: str, request: pytest.FixtureRequest, clock: FakeClock | None = None) -> Database:
    """A fresh sync database of backend ``name``."""
    if name == "memory":
        return MemoryDatabase(clock=clock) if clock else MemoryDatabase()
    if name == "sqlite-file":
        from kvstore.sqlite import SqliteDatabase

        path: Path = request.getfixturevalue("tmp_path") / "lg.db"
        return SqliteDatabase(path, clock=clock) if clock else SqliteDatabase(path)
    if name == "postgres":
        from kvstore.postgres import PostgresDatabase

        db = PostgresDatabase(request.getfixturevalue("postgres_url"), key_prefix=PREFIX, max_size=4)
        db.open()
        return db
    raise AssertionError(name)


async def open_async(name: str, request: pytest.FixtureRequest, clock: FakeClock | None = None) -> AsyncDatabase:
    """A fresh async database of backend ``name``."""
    if name == "memory":
        return AsyncMemoryDatabase(clock=clock) if clock else AsyncMemoryDatabase()
    if name == "sqlite-file":
        from kvstore.sqlite import AsyncSqliteDatabase

        path: Path = request.getfixturevalue("tmp_path") / "lg.db"
        return AsyncSqliteDatabase(path, clock=clock) if clock else AsyncSqliteDatabase(path)
    if name == "postgres":
        from kvstore.postgres import AsyncPostgresDatabase

        db = AsyncPostgresDatabase(request.getfixturevalue("postgres_url"), key_prefix=PREFIX, max_size=4)
        await db.open()
        return db
    raise AssertionError(name)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty sync database of each backend."""
    db = open_sync(request.param, request)
    db.clear()
    yield db
    db.clear()
    db.close()


@pytest.fixture(params=BACKENDS)
async def adatabase(request: pytest.FixtureRequest) -> AsyncIterator[AsyncDatabase]:
    """An empty async database of each backend."""
    db = await open_async(request.param, request)
    await db.clear()
    yield db
    await db.clear()
    await db.aclose()


def report_counts(report: CapabilityReport) -> tuple[int, int, int]:
    """(passed, failed, capabilities not run) summed over the report."""
    results = report.results.values()
    return (
        sum(r.tests_passed for r in results),
        sum(r.tests_failed for r in results),
        sum(1 for r in results if not r.detected),
    )


def assert_conformant(report: CapabilityReport, label: str) -> None:
    passed, failed, skipped = report_counts(report)
    print(f"\nconformance {label}: {passed} passed, {failed} failed, {skipped} capabilities not run")
    failures = [f for r in report.results.values() for f in r.failures]
    assert failed == 0, failures
    assert skipped == 0, "every capability (base and extended) is implemented"
    assert report.passed_all()


# --------------------------------------------------------------------------- conformance


async def test_conformance_sync_saver(database: Database) -> None:
    """KVStoreSaver (sync, its a-methods in a worker thread) passes every langgraph-checkpoint-conformance test."""

    @checkpointer_test(name=f"KVStoreSaver-{type(database).__name__}")
    async def factory() -> AsyncIterator[KVStoreSaver]:
        yield KVStoreSaver(database, prefix=f"conf-{uuid.uuid4().hex[:8]}:")

    assert_conformant(await validate(factory), f"sync {type(database).__name__}")


async def test_conformance_async_saver(adatabase: AsyncDatabase) -> None:
    """AsyncKVStoreSaver passes every langgraph-checkpoint-conformance test."""

    @checkpointer_test(name=f"AsyncKVStoreSaver-{type(adatabase).__name__}")
    async def factory() -> AsyncIterator[AsyncKVStoreSaver]:
        yield AsyncKVStoreSaver(adatabase, prefix=f"conf-{uuid.uuid4().hex[:8]}:")

    assert_conformant(await validate(factory), f"async {type(adatabase).__name__}")


# --------------------------------------------------------------------------- a real graph


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def chat_graph(checkpointer: Any) -> Any:
    model = FakeListChatModel(responses=["Sure, " + "x" * 90])

    def chatbot(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"][-20:])]}

    builder = StateGraph(State)
    builder.add_node("chatbot", chatbot)
    builder.add_edge(START, "chatbot")
    return builder.compile(checkpointer=checkpointer)


def stored_bytes(db: Database, prefix: str) -> int:
    import orjson

    return sum(len(orjson.dumps(v)) for v in db.mget(db.keys(prefix + "*")))


def item_count(db: Database, prefix: str, thread_id: str) -> int:
    """How many list items (messages) the saver stored for a thread."""
    return len(db.keys(f"{prefix}i:{thread_id}:*"))


def test_graph_turns_store_only_new_messages(database: Database) -> None:
    """A chat graph's message list is appended, not re-stored: bytes per turn stay flat as the history grows."""
    saver = KVStoreSaver(database)
    graph = chat_graph(saver)
    config = {"configurable": {"thread_id": "chat-1"}}
    sizes = []
    for turn in range(30):
        graph.invoke({"messages": [HumanMessage(f"question {turn} " + "y" * 80)]}, config)
        sizes.append(stored_bytes(database, saver.prefix))
    messages = graph.get_state(config).values["messages"]
    assert len(messages) == 60
    assert [m.content for m in messages[-2:]] == [f"question 29 {'y' * 80}", "Sure, " + "x" * 90]
    per_turn = [b - a for a, b in itertools.pairwise(sizes)]
    assert max(per_turn[-5:]) < 1.3 * max(per_turn[:5]), per_turn  # flat, not growing with the history
    assert item_count(database, saver.prefix, "chat-1") == 60  # each message stored once, as an item
    own = sum(len(m.model_dump_json()) for m in messages)
    assert sizes[-1] < 3 * own, (sizes[-1], own)  # pending writes and records hold references, not copies


def test_tail_reads_only_the_last_items(database: Database) -> None:
    """saver.tail(config, "messages", n) equals get_state(...).values["messages"][-n:], across forks' segments too."""
    saver = KVStoreSaver(database)
    graph = chat_graph(saver)
    config = {"configurable": {"thread_id": "t"}}
    for turn in range(6):
        graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, config)
    after_two = next(s.config for s in graph.get_state_history(config) if len(s.values.get("messages", [])) == 4)
    graph.invoke({"messages": [HumanMessage("forked")]}, after_two)  # a value made of two ranges of the list
    for n in (1, 3, 5, 6, 50):
        assert saver.tail(config, "messages", n) == graph.get_state(config).values["messages"][-n:]
    assert saver.tail(after_two, "messages", 2) == graph.get_state(after_two).values["messages"][-2:]
    assert saver.tail({"configurable": {"thread_id": "none"}}) == []


def test_a_turn_reads_no_message_back(database: Database) -> None:
    """With a warm saver, a turn reads no message of the history (only the new ones are written)."""
    reads: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            method = getattr(database, name)
            if name not in ("get", "mget", "get_range"):
                return method
            return lambda keys, *a: reads.extend([keys] if isinstance(keys, str) else keys) or method(keys, *a)

    graph = chat_graph(KVStoreSaver(Counting()))  # type: ignore[arg-type]
    config = {"configurable": {"thread_id": "t"}}
    for turn in range(5):
        graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, config)
    reads.clear()
    graph.invoke({"messages": [HumanMessage("q5")]}, config)
    assert [k for k in reads if ":i:" in k] == []
    assert len(reads) == 1  # the thread's head (and a keys() listing of its pending writes)
    assert len(graph.get_state(config).values["messages"]) == 12


def test_new_process_continues_the_list(database: Database) -> None:
    """A fresh saver (another process) reads the thread back and keeps appending to the same list."""
    graph = chat_graph(KVStoreSaver(database))
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage("one")]}, config)
    fresh = chat_graph(KVStoreSaver(database))
    fresh.invoke({"messages": [HumanMessage("two")]}, config)
    assert [m.content for m in fresh.get_state(config).values["messages"]][::2] == ["one", "two"]
    assert item_count(database, "langgraph:", "t") == 4


def test_other_process_deleting_the_thread_is_detected(database: Database) -> None:
    """A saver whose cache predates another process's delete_thread + rewrite stores the right value once it has
    read the thread's head again (every graph invocation starts with that read)."""
    from langgraph.checkpoint.base import empty_checkpoint

    first, other = KVStoreSaver(database), KVStoreSaver(database)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}

    def put(saver: KVStoreSaver, messages: list[Any], version: int) -> Any:
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": messages}
        checkpoint["channel_versions"] = {"messages": version}
        return saver.put(config, checkpoint, {"source": "loop", "step": version}, {"messages": version})

    mine = [HumanMessage("mine", id="m1"), AIMessage("reply", id="m2")]
    put(first, mine, 1)  # first remembers: these 2 items are [0, 1] of the list
    other.delete_thread("t")
    put(other, [HumanMessage(f"other {i}", id=f"o{i}") for i in range(6)], 1)  # now the thread is the other's
    first.get_tuple({"configurable": {"thread_id": "t"}})  # first sees a head it did not write: forgets the thread
    stored = put(first, [*mine, HumanMessage("new", id="m3")], 2)  # extends what first remembers
    values = first.get_tuple(stored).checkpoint["channel_values"]  # type: ignore[union-attr]
    assert [m.content for m in values["messages"]] == ["mine", "reply", "new"]


def test_removed_message_stores_whole_value(database: Database) -> None:
    """A value that does not extend the previous one (a RemoveMessage) is stored whole and reads back right."""
    graph = chat_graph(KVStoreSaver(database))
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage("one", id="h1")]}, config)
    graph.update_state(config, {"messages": [RemoveMessage(id="h1")]})
    assert [m.content for m in graph.get_state(config).values["messages"]] == ["Sure, " + "x" * 90]
    graph.invoke({"messages": [HumanMessage("two")]}, config)
    contents = [m.content for m in chat_graph(KVStoreSaver(database)).get_state(config).values["messages"]]
    assert contents == ["Sure, " + "x" * 90, "two", "Sure, " + "x" * 90]


def test_time_travel_fork_keeps_both_branches(database: Database) -> None:
    """Resuming from an older checkpoint forks: both branches read back their own messages."""
    saver = KVStoreSaver(database)
    graph = chat_graph(saver)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage("one")]}, config)
    after_one = graph.get_state(config).config
    graph.invoke({"messages": [HumanMessage("two")]}, config)
    forked = graph.invoke({"messages": [HumanMessage("other")]}, after_one)
    assert [m.content for m in forked["messages"]][::2] == ["one", "other"]
    history = [s.values.get("messages", []) for s in graph.get_state_history(config)]
    assert any([m.content for m in h][::2] == ["one", "two"] for h in history)
    fresh = chat_graph(KVStoreSaver(database))
    assert [m.content for m in fresh.get_state(config).values["messages"]][::2] == ["one", "other"]


async def test_async_saver_runs_a_graph(adatabase: AsyncDatabase) -> None:
    """AsyncKVStoreSaver under graph.ainvoke: the history survives a fresh saver."""
    graph = chat_graph(AsyncKVStoreSaver(adatabase))
    config = {"configurable": {"thread_id": "t"}}
    for text in ("one", "two", "three"):
        await graph.ainvoke({"messages": [HumanMessage(text)]}, config)
    state = await chat_graph(AsyncKVStoreSaver(adatabase)).aget_state(config)
    assert [m.content for m in state.values["messages"]][::2] == ["one", "two", "three"]
    assert len(await adatabase.keys("langgraph:i:t:*")) == 6


def test_list_every_thread_and_delete_leaves_nothing(database: Database) -> None:
    """list(None) walks every thread and namespace newest first; delete_thread leaves no key of the thread."""
    saver = KVStoreSaver(database)
    graph = chat_graph(saver)
    for thread in ("a", "b:1", "c%2"):
        graph.invoke({"messages": [HumanMessage(thread)]}, {"configurable": {"thread_id": thread}})
    listed = [*saver.list(None)]
    assert {t.config["configurable"]["thread_id"] for t in listed} == {"a", "b:1", "c%2"}
    assert len(listed) == 9
    ids = [t.checkpoint["id"] for t in listed]
    assert ids == sorted(ids, reverse=True)
    assert len([*saver.list(None, filter={"source": "input"}, limit=2)]) == 2
    for thread in ("a", "b:1", "c%2"):
        saver.delete_thread(thread)
    assert database.keys("langgraph:*") == []
    assert [*saver.list(None)] == []


def test_nothing_is_pickled_and_unknown_types_are_not_revived(database: Database) -> None:
    """No pickle: a value of an arbitrary class is stored through strict msgpack and not rebuilt on read."""
    saver = KVStoreSaver(database)
    assert saver.serde.pickle_fallback is False  # type: ignore[attr-defined]
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"x": Path("/etc"), "m": [AIMessage("hi")]}
    checkpoint["channel_versions"] = {"x": 1, "m": 1}
    stored = saver.put(config, checkpoint, {"source": "input", "step": -1}, {"x": 1, "m": 1})
    values = saver.get_tuple(stored).checkpoint["channel_values"]  # type: ignore[union-attr]
    assert values == {"x": Path("/etc"), "m": [AIMessage("hi")]}  # pathlib is on the safe list
    for key in database.keys("*"):
        raw = database.get(key)
        assert "pickle" not in str(raw)


def test_sync_methods_of_async_saver_need_another_thread() -> None:
    """Calling a sync method of the async saver inside its event loop fails with a clear error."""
    import asyncio

    async def main() -> None:
        saver = AsyncKVStoreSaver(AsyncMemoryDatabase())
        await saver.aget_tuple({"configurable": {"thread_id": "t"}})
        with pytest.raises(asyncio.InvalidStateError, match="aget_tuple"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert await asyncio.to_thread(saver.get_tuple, {"configurable": {"thread_id": "t"}}) is None

    asyncio.run(main())


# --------------------------------------------------------------------------- store


def test_store_get_put_delete_search(database: Database) -> None:
    """get/put/delete, search by namespace prefix + filter with offset/limit, list_namespaces."""
    store = KVStoreStore(database)
    for i in range(30):
        store.put(("users", f"u{i % 3}", "memories"), f"k{i}", {"n": i, "kind": "even" if i % 2 == 0 else "odd"})
    store.put(("usersx",), "k", {"n": 1})
    item = store.get(("users", "u0", "memories"), "k3")
    assert item is not None
    assert item.value == {"n": 3, "kind": "odd"}
    assert item.namespace == ("users", "u0", "memories")
    created = item.created_at
    store.put(("users", "u0", "memories"), "k3", {"n": 33, "kind": "odd"})
    again = store.get(("users", "u0", "memories"), "k3")
    assert again is not None
    assert again.value["n"] == 33
    assert again.created_at == created
    assert again.updated_at >= created
    assert len(store.search(("users",), limit=100)) == 30
    assert store.search(("user",), limit=100) == []  # a label prefix is not a namespace prefix
    odd = store.search(("users",), filter={"kind": "odd"}, limit=100)
    assert len(odd) == 15
    assert all(r.value["kind"] == "odd" for r in odd)
    big = store.search(("users",), filter={"n": {"$gte": 20}, "kind": {"$ne": "odd"}}, limit=100)
    assert sorted(r.value["n"] for r in big) == [20, 22, 24, 26, 28]
    page = store.search(("users", "u1"), limit=3, offset=2)
    assert len(page) == 3
    assert [r.updated_at for r in page] == sorted((r.updated_at for r in page), reverse=True)
    store.delete(("users", "u0", "memories"), "k3")
    assert store.get(("users", "u0", "memories"), "k3") is None
    assert store.list_namespaces(prefix=("users",)) == [("users", f"u{i}", "memories") for i in range(3)]
    assert store.list_namespaces(max_depth=2) == [("users", "u0"), ("users", "u1"), ("users", "u2"), ("usersx",)]
    assert store.list_namespaces(suffix=("memories",), limit=1, offset=1) == [("users", "u1", "memories")]
    assert store.list_namespaces(prefix=("users", "*", "memories")) == [
        ("users", f"u{i}", "memories") for i in range(3)
    ]


def test_store_keys_with_glob_and_dots(database: Database) -> None:
    """Keys and labels holding glob characters, dots in keys, and '..' never cross namespaces."""
    store = KVStoreStore(database)
    store.put(("a*", "[b]"), "k..1", {"v": 1})
    store.put(("a",), "x..y", {"v": 2})
    assert store.get(("a*", "[b]"), "k..1").value == {"v": 1}  # type: ignore[union-attr]
    assert [r.key for r in store.search(("a",))] == ["x..y"]
    assert [r.key for r in store.search(("a*",))] == ["k..1"]
    assert store.list_namespaces() == [("a",), ("a*", "[b]")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_ttl_expiry_on_every_backend(backend: str, request: pytest.FixtureRequest) -> None:
    """An expired item is never returned by get, search or list_namespaces; reads refresh the TTL."""
    clock = FakeClock() if backend == "memory" else None
    db = open_sync(backend, request, clock)
    db.clear()
    try:
        store = KVStoreStore(db, ttl={"refresh_on_read": True})
        seconds = 1.5
        store.put(("ttl",), "short", {"v": 1}, ttl=seconds / 60)
        store.put(("ttl",), "refreshed", {"v": 2}, ttl=seconds / 60)
        store.put(("ttl",), "forever", {"v": 3})

        def advance(s: float) -> None:
            if clock is not None:
                clock.advance(s)
            else:
                time.sleep(s)

        advance(seconds * 0.6)
        assert store.get(("ttl",), "refreshed") is not None  # refreshes its TTL
        assert store.get(("ttl",), "short", refresh_ttl=False) is not None
        advance(seconds * 0.6)
        assert store.get(("ttl",), "short") is None
        assert {r.key for r in store.search(("ttl",), refresh_ttl=False)} == {"refreshed", "forever"}
        advance(seconds * 1.1)
        assert store.get(("ttl",), "refreshed") is None
        assert [r.key for r in store.search(("ttl",))] == ["forever"]
        store.put(("gone",), "k", {"v": 1}, ttl=seconds / 60)
        assert ("gone",) in store.list_namespaces()
        advance(seconds * 1.1)
        assert store.list_namespaces() == [("ttl",)]
    finally:
        db.clear()
        db.close()


async def test_async_store_ttl_expiry() -> None:
    """AsyncKVStoreStore never returns an expired item either (fake clock)."""
    clock = FakeClock()
    store = AsyncKVStoreStore(AsyncMemoryDatabase(clock=clock))
    await store.aput(("ttl",), "k", {"v": 1}, ttl=1)  # one minute
    clock.advance(50)
    assert await store.aget(("ttl",), "k") is not None  # refreshes: another minute from now
    clock.advance(50)
    assert [r.key for r in await store.asearch(("ttl",))] == ["k"]
    clock.advance(61)
    assert await store.aget(("ttl",), "k") is None
    assert await store.asearch(("ttl",)) == []
    assert await store.alist_namespaces() == []


async def test_async_store(adatabase: AsyncDatabase) -> None:
    """AsyncKVStoreStore: aput/aget/asearch/alist_namespaces/adelete natively on an AsyncDatabase."""
    store = AsyncKVStoreStore(adatabase)
    await store.aput(("docs", "a"), "1", {"t": "x"})
    await store.aput(("docs", "b"), "2", {"t": "y"})
    assert (await store.aget(("docs", "a"), "1")).value == {"t": "x"}  # type: ignore[union-attr]
    assert [r.key for r in await store.asearch(("docs",), filter={"t": "y"})] == ["2"]
    assert await store.alist_namespaces(prefix=("docs",)) == [("docs", "a"), ("docs", "b")]
    await store.adelete(("docs", "a"), "1")
    assert await store.aget(("docs", "a"), "1") is None


async def test_sync_store_abatch(database: Database) -> None:
    """KVStoreStore's async methods run batch in a worker thread."""
    store = KVStoreStore(database)
    await store.aput(("u",), "k", {"v": 1})
    assert (await store.aget(("u",), "k")).value == {"v": 1}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- migration


def test_copy_checkpoints_from_sqlite_saver(database: Database, tmp_path: Path) -> None:
    """copy_checkpoints moves a SqliteSaver thread to kvstore: same state, same history, messages stored once."""
    sqlite_saver_module = pytest.importorskip("langgraph.checkpoint.sqlite")
    import sqlite3

    from kvstore.integrations.langgraph import copy_checkpoints

    conn = sqlite3.connect(tmp_path / "saver.db", check_same_thread=False)
    source = sqlite_saver_module.SqliteSaver(conn)
    graph = chat_graph(source)
    config = {"configurable": {"thread_id": "old"}}
    for text in ("one", "two", "three"):
        graph.invoke({"messages": [HumanMessage(text)]}, config)
    target = KVStoreSaver(database)
    assert copy_checkpoints(source, target) == len([*source.list(config)])
    moved = chat_graph(KVStoreSaver(database))
    assert moved.get_state(config).values == graph.get_state(config).values
    assert [s.config for s in moved.get_state_history(config)] == [s.config for s in graph.get_state_history(config)]
    assert item_count(database, "langgraph:", "old") == 6
    moved.invoke({"messages": [HumanMessage("four")]}, config)  # and it continues there
    assert len(moved.get_state(config).values["messages"]) == 8
    conn.close()


def test_copy_store_items_from_sqlite_store(database: Database, tmp_path: Path) -> None:
    """copy_store_items moves every item of a SqliteStore (nested namespaces too) to KVStoreStore."""
    sqlite_store_module = pytest.importorskip("langgraph.store.sqlite")
    import sqlite3

    from kvstore.integrations.langgraph import copy_store_items

    conn = sqlite3.connect(tmp_path / "store.db", check_same_thread=False, isolation_level=None)
    source = sqlite_store_module.SqliteStore(conn)
    source.setup()
    for i in range(25):
        source.put(("u", str(i % 3)), f"k{i}", {"i": i})
        source.put(("u", str(i % 3), "deep"), f"d{i}", {"i": -i})
    target = KVStoreStore(database)
    assert copy_store_items(source, target, page=7) == 50
    assert target.get(("u", "1", "deep"), "d4").value == {"i": -4}  # type: ignore[union-attr]
    assert len(target.search(("u",), limit=100)) == 50
    conn.close()


# --------------------------------------------------------------------------- packaging


def run_python(code: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)


def test_import_kvstore_never_imports_langgraph() -> None:
    """`import kvstore` and `import kvstore.integrations` load no LangGraph."""
    result = run_python(
        "import sys, kvstore, kvstore.integrations\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'langgraph'))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_langgraph_names_the_extra() -> None:
    """Without langgraph, importing the adapter raises MissingDependencyError naming the pip install."""
    result = run_python(
        "import sys\n"
        "sys.modules['langgraph'] = None\n"
        "from kvstore.errors import MissingDependencyError\n"
        "try:\n"
        "    import kvstore.integrations.langgraph\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "kvstore-sdk[langgraph]"' in result.stdout
