"""LangChain adapters: langchain-tests' standard suites on every backend, plus what the suites do not cover."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_tests.integration_tests import (
    AsyncCacheTestSuite,
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
    SyncCacheTestSuite,
)

from kvstore import AsyncMemoryCache, AsyncMemoryDatabase, AsyncStore, MemoryCache, MemoryDatabase, Store
from kvstore.integrations.langchain import (
    KVStoreByteStore,
    KVStoreChatMessageHistory,
    KVStoreLLMCache,
    KVStoreValueStore,
)
from tests.clock import FakeClock

# Every store of these tests lives under this prefix, so a shared server keeps its other data.
PREFIX = "lc-test:"

#: Backends of the key-value stores and the LLM cache (either tier fits).
STORE_BACKENDS = [
    "memory-cache",
    "memory-database",
    "sqlite-file",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]
#: Backends of the chat history (database tier only).
DATABASE_BACKENDS = ["memory-database", "sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)]


def open_sync(name: str, request: pytest.FixtureRequest) -> Store:
    """A fresh sync store of backend ``name``."""
    if name == "memory-cache":
        return MemoryCache()
    if name == "memory-database":
        return MemoryDatabase()
    if name == "sqlite-file":
        from kvstore.sqlite import SqliteDatabase

        path: Path = request.getfixturevalue("tmp_path") / "lc.db"
        return SqliteDatabase(path)
    if name == "postgres":
        from kvstore.postgres import PostgresDatabase

        store = PostgresDatabase(request.getfixturevalue("postgres_url"), key_prefix=PREFIX, max_size=4)
        store.open()
        return store
    if name == "redis":
        from kvstore.redis import RedisCache

        return RedisCache(request.getfixturevalue("redis_server").url, key_prefix=PREFIX)
    raise AssertionError(name)


async def open_async(name: str, request: pytest.FixtureRequest) -> AsyncStore:
    """A fresh async store of backend ``name``."""
    if name == "memory-cache":
        return AsyncMemoryCache()
    if name == "memory-database":
        return AsyncMemoryDatabase()
    if name == "sqlite-file":
        from kvstore.sqlite import AsyncSqliteDatabase

        path: Path = request.getfixturevalue("tmp_path") / "lc.db"
        return AsyncSqliteDatabase(path)
    if name == "postgres":
        from kvstore.postgres import AsyncPostgresDatabase

        store = AsyncPostgresDatabase(request.getfixturevalue("postgres_url"), key_prefix=PREFIX, max_size=4)
        await store.open()
        return store
    if name == "redis":
        from kvstore.redis import AsyncRedisCache

        return AsyncRedisCache(request.getfixturevalue("redis_server").url, key_prefix=PREFIX)
    raise AssertionError(name)


@pytest.fixture(params=STORE_BACKENDS)
def sync_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """An empty sync store of each backend."""
    store = open_sync(request.param, request)
    store.clear()
    yield store
    store.clear()
    store.close()


@pytest.fixture(params=STORE_BACKENDS)
async def async_store(request: pytest.FixtureRequest) -> AsyncIterator[AsyncStore]:
    """An empty async store of each backend."""
    store = await open_async(request.param, request)
    await store.clear()
    yield store
    await store.clear()
    await store.aclose()


@pytest.fixture(params=DATABASE_BACKENDS)
def sync_database(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An empty sync database-tier store of each database backend."""
    store = open_sync(request.param, request)
    store.clear()
    yield store
    store.clear()
    store.close()


@pytest.fixture(params=DATABASE_BACKENDS)
async def async_database(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An empty async database-tier store of each database backend."""
    store = await open_async(request.param, request)
    await store.clear()
    yield store
    await store.clear()
    await store.aclose()


# --- langchain-tests' standard suites ----------------------------------------------------

BYTES = (b"foo", b"\x00\xff binary \x80", b"")
VALUES = ({"a": [1, 2.5, None], "lc": "a plain key named lc"}, "text \u2713", [True, {"nested": "x"}])
DOCUMENTS = (
    Document(page_content="one", metadata={"source": "a.txt"}),
    Document(page_content="two", id="doc-2"),
    Document(page_content="three"),
)


class TestByteStoreSync(BaseStoreSyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, sync_store: Store) -> KVStoreByteStore:
        return KVStoreByteStore(sync_store, namespace="bytes")

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return BYTES


class TestByteStoreAsync(BaseStoreAsyncTests[bytes]):
    @pytest.fixture
    async def kv_store(self, async_store: AsyncStore) -> KVStoreByteStore:
        return KVStoreByteStore(async_store, namespace="bytes")

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return BYTES


class TestValueStoreSync(BaseStoreSyncTests[Any]):
    @pytest.fixture
    def kv_store(self, sync_store: Store) -> KVStoreValueStore:
        return KVStoreValueStore(sync_store)

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return VALUES


class TestValueStoreAsync(BaseStoreAsyncTests[Any]):
    @pytest.fixture
    async def kv_store(self, async_store: AsyncStore) -> KVStoreValueStore:
        return KVStoreValueStore(async_store)

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return VALUES


class TestDocumentStoreSync(BaseStoreSyncTests[Document]):
    @pytest.fixture
    def kv_store(self, sync_store: Store) -> KVStoreValueStore:
        return KVStoreValueStore(sync_store, namespace="docs", allowed_objects=[Document])

    @pytest.fixture
    def three_values(self) -> tuple[Document, Document, Document]:
        return DOCUMENTS


class TestDocumentStoreAsync(BaseStoreAsyncTests[Document]):
    @pytest.fixture
    async def kv_store(self, async_store: AsyncStore) -> KVStoreValueStore:
        return KVStoreValueStore(async_store, namespace="docs", allowed_objects=[Document])

    @pytest.fixture
    def three_values(self) -> tuple[Document, Document, Document]:
        return DOCUMENTS


class TestLLMCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, sync_store: Store) -> KVStoreLLMCache:
        return KVStoreLLMCache(sync_store, ttl=3600)


class TestLLMCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, async_store: AsyncStore) -> KVStoreLLMCache:
        return KVStoreLLMCache(async_store, ttl=3600)


# --- the key-value stores beyond the suites ------------------------------------------------


def test_byte_store_stores_base64_json_and_lists_only_its_namespace(sync_store: Store) -> None:
    """Bytes are stored as base64 text; yield_keys and prefixes see only the store's namespace."""
    store = KVStoreByteStore(sync_store, namespace="emb")
    other = KVStoreByteStore(sync_store, namespace="emb2")
    store.mset([("k*1", b"\x00"), ("k?2", b"\x01")])
    other.mset([("k*1", b"other")])
    sync_store.set("emb:not-bytes", 42)
    assert sync_store.get("emb:k*1") == "AA=="
    assert sorted(store.yield_keys(prefix="k*")) == ["k*1"]  # glob characters are literal
    assert sorted(other.yield_keys()) == ["k*1"]
    assert store.mget(["k*1", "k?2"]) == [b"\x00", b"\x01"]
    with pytest.raises(TypeError, match="byte-store"):
        store.mget(["not-bytes"])
    with pytest.raises(TypeError, match="stores bytes"):
        store.mset([("x", "text")])  # type: ignore[list-item]


def test_value_store_ttl_expires_entries() -> None:
    """A store built with ttl writes every entry with it (fake clock on the memory cache)."""
    clock = FakeClock()
    store = KVStoreValueStore(MemoryCache(clock=clock), ttl=10)
    store.mset([("a", 1), ("b", [2])])
    clock.advance(9.9)
    assert store.mget(["a", "b"]) == [1, [2]]
    clock.advance(0.2)
    assert store.mget(["a", "b"]) == [None, None]
    assert list(store.yield_keys()) == []


def test_value_store_refuses_langchain_objects_without_allowed_objects() -> None:
    """A Document given to a plain JSON store raises instead of silently coming back as a dict."""
    store = KVStoreValueStore(MemoryDatabase())
    with pytest.raises(TypeError, match="allowed_objects"):
        store.mset([("d", Document(page_content="x"))])


def test_document_store_never_builds_classes_outside_its_allow_list() -> None:
    """Data written as another LangChain class is refused on read by the allow-list."""
    database = MemoryDatabase()
    KVStoreValueStore(database, allowed_objects="messages").mset([("m", SystemMessage("hi"))])
    docs = KVStoreValueStore(database, allowed_objects=[Document])
    with pytest.raises(ValueError, match="is not allowed"):
        docs.mget(["m"])


def test_sync_methods_on_an_async_store_raise_a_clear_error() -> None:
    """A sync call on an adapter built on an async store says which async method to use."""
    store = KVStoreByteStore(AsyncMemoryCache())
    with pytest.raises(TypeError, match="amget"):
        store.mget(["a"])
    with pytest.raises(TypeError, match="alookup"):
        KVStoreLLMCache(AsyncMemoryCache()).lookup("p", "llm")
    with pytest.raises(TypeError, match="aget_messages"):
        _ = KVStoreChatMessageHistory(AsyncMemoryDatabase(), "s").messages


async def test_async_methods_on_a_sync_store_run_in_a_thread() -> None:
    """The a-methods of an adapter on a sync store work (LangChain's executor fallback)."""
    store = KVStoreValueStore(MemoryDatabase())
    await store.amset([("a", 1)])
    assert await store.amget(["a", "b"]) == [1, None]
    assert [k async for k in store.ayield_keys()] == ["a"]
    await store.amdelete(["a"])
    assert await store.amget(["a"]) == [None]
    cache = KVStoreLLMCache(MemoryCache())
    await cache.aupdate("p", "llm", [Generation(text="t")])
    assert await cache.alookup("p", "llm") == [Generation(text="t")]
    await cache.aclear()
    assert await cache.alookup("p", "llm") is None
    history = KVStoreChatMessageHistory(MemoryDatabase(), "s")
    await history.aadd_messages([HumanMessage("hi")])
    assert [m.content for m in await history.aget_messages()] == ["hi"]
    await history.aclear()
    assert await history.aget_messages() == []


def test_wrong_store_types_are_refused() -> None:
    """Adapters check what they are given; the chat history needs the database tier."""
    with pytest.raises(TypeError, match="kvstore store"):
        KVStoreByteStore({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="database-tier"):
        KVStoreChatMessageHistory(MemoryCache(), "s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        KVStoreChatMessageHistory(MemoryDatabase(), "s", window=0)


# --- the LLM cache beyond the suites -------------------------------------------------------


def test_llm_cache_hashes_long_prompts_and_keeps_chat_generations(sync_store: Store) -> None:
    """A prompt far above the 1024-byte key limit is cached; a ChatGeneration's message round-trips."""
    cache = KVStoreLLMCache(sync_store)
    prompt = "ж" * 5000
    generation = ChatGeneration(message=AIMessage("answer", id="run-1", tool_calls=[]), generation_info={"n": 1})
    cache.update(prompt, "model=x", [generation])
    assert cache.lookup(prompt, "model=x") == [generation]
    assert cache.lookup(prompt, "model=y") is None
    (key,) = sync_store.keys("llm_cache:*")
    assert len(key) == len("llm_cache:") + 64
    stored = sync_store.get(key)
    assert isinstance(stored, list)
    assert stored[0]["lc"] == 1  # LangChain's JSON, not pickle


def test_llm_cache_clear_removes_only_its_namespace(sync_store: Store) -> None:
    """clear() leaves every other key of the store alone, other cache namespaces included."""
    cache = KVStoreLLMCache(sync_store, namespace="llm")
    other = KVStoreLLMCache(sync_store, namespace="llm2")
    for i in range(5):
        cache.update(f"p{i}", "llm", [Generation(text=str(i))])
    other.update("p0", "llm", [Generation(text="kept")])
    sync_store.set("unrelated", 1)
    cache.clear()
    assert all(cache.lookup(f"p{i}", "llm") is None for i in range(5))
    assert other.lookup("p0", "llm") == [Generation(text="kept")]
    assert sync_store.get("unrelated") == 1


def test_llm_cache_ttl() -> None:
    """Cached answers expire after the cache's ttl."""
    clock = FakeClock()
    cache = KVStoreLLMCache(MemoryCache(clock=clock), ttl=60)
    cache.update("p", "llm", [Generation(text="t")])
    clock.advance(59)
    assert cache.lookup("p", "llm") == [Generation(text="t")]
    clock.advance(2)
    assert cache.lookup("p", "llm") is None


def test_llm_cache_serves_a_fake_chat_model() -> None:
    """With set_llm_cache-style wiring (cache=...), the second identical call is a cache hit."""
    model = FakeListChatModel(responses=["first", "second"], cache=KVStoreLLMCache(MemoryCache()))
    assert model.invoke("same question").content == "first"
    assert model.invoke("same question").content == "first"
    assert model.invoke("another question").content == "second"


# --- the chat message history ---------------------------------------------------------------

MESSAGES: list[BaseMessage] = [
    SystemMessage("be brief"),
    HumanMessage("hi", id="h1"),
    AIMessage(
        "calling a tool", tool_calls=[{"name": "search", "args": {"q": "kvstore"}, "id": "c1", "type": "tool_call"}]
    ),
    ToolMessage("result", tool_call_id="c1"),
    HumanMessage([{"type": "text", "text": "block content"}]),
]


def test_chat_history_round_trips_every_message_kind(sync_database: Any) -> None:
    """System, human, AI with tool calls, tool and content-block messages come back equal, in order."""
    history = KVStoreChatMessageHistory(sync_database, "s1")
    history.add_messages(MESSAGES[:2])
    history.add_messages(MESSAGES[2:])
    history.add_messages([])
    assert history.messages == MESSAGES
    assert KVStoreChatMessageHistory(sync_database, "s1", window=2).messages == MESSAGES[-2:]
    assert KVStoreChatMessageHistory(sync_database, "s2").messages == []
    history.clear()
    assert history.messages == []


async def test_chat_history_async_is_native(async_database: Any) -> None:
    """aadd_messages/aget_messages/aclear work on an async database, window included."""
    history = KVStoreChatMessageHistory(async_database, "s1")
    await history.aadd_messages(MESSAGES)
    assert await history.aget_messages() == MESSAGES
    assert await KVStoreChatMessageHistory(async_database, "s1", window=3).aget_messages() == MESSAGES[-3:]
    await history.aclear()
    assert await history.aget_messages() == []


def test_chat_history_add_messages_is_one_round_trip() -> None:
    """add_messages appends the whole batch with one extend call."""
    calls: list[tuple[str, int]] = []

    class Spy(MemoryDatabase):
        def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
            calls.append(("append", 1))
            return super().append(key, value, idempotency_id=idempotency_id)

        def extend(self, key: str, values: Any, *, idempotency_id: str | None = None) -> int:
            values = list(values)
            calls.append(("extend", len(values)))
            return super().extend(key, values, idempotency_id=idempotency_id)

        def extend_json(self, key: str, items: list[bytes], *, idempotency_id: str | None = None) -> int | None:
            calls.append(("extend", len(items)))  # the encoded form of extend (ChatHistory's write path)
            return super().extend_json(key, items, idempotency_id=idempotency_id)

    KVStoreChatMessageHistory(Spy(), "s").add_messages(MESSAGES)
    assert calls == [("extend", len(MESSAGES))]


def test_chat_history_ttl_expires_the_conversation() -> None:
    """With ttl the conversation expires after its last write."""
    clock = FakeClock()
    history = KVStoreChatMessageHistory(MemoryDatabase(clock=clock), "s", ttl=30)
    history.add_messages([HumanMessage("hi")])
    clock.advance(31)
    assert history.messages == []


class CountingDatabase(MemoryDatabase):
    """A memory database that records how many list items each read returns."""

    def __init__(self) -> None:
        super().__init__()
        self.items_read: list[int] = []

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        items = super().get_range(key, start, end)
        self.items_read.append(len(items))
        return items


def chat_chain(database: Any, window: int | None, responses: list[str]) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    model = FakeListChatModel(responses=responses)
    return RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: KVStoreChatMessageHistory(database, session_id, window=window),
        input_messages_key="question",
        history_messages_key="history",
    )


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_reads_o_window_per_turn() -> None:
    """1,000 turns under RunnableWithMessageHistory: each turn reads at most `window` stored messages."""
    database, window, turns = CountingDatabase(), 20, 1000
    chain = chat_chain(database, window, [f"answer {i}" for i in range(turns)])
    config = {"configurable": {"session_id": "user-1"}}
    seconds: list[float] = []
    for turn in range(turns):
        database.items_read.clear()
        started = time.perf_counter()
        reply = chain.invoke({"question": f"question {turn}"}, config=config)  # type: ignore[arg-type]
        seconds.append(time.perf_counter() - started)
        assert reply.content == f"answer {turn}"
        assert sum(database.items_read) <= window, database.items_read  # O(window), not O(history)
    full = KVStoreChatMessageHistory(database, "user-1")
    assert len(full.messages) == 2 * turns
    assert [m.content for m in full.messages[-2:]] == [f"question {turns - 1}", f"answer {turns - 1}"]
    early, late = sorted(seconds[100:200])[50], sorted(seconds[-100:])[50]
    print(f"median turn, LangChain included: {early * 1e3:.2f} ms at 200-400 messages, {late * 1e3:.2f} ms at ~2,000")


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_on_each_backend(sync_database: Any) -> None:
    """A few turns (sync) on every database backend: the model sees the earlier turns."""
    chain = chat_chain(sync_database, None, ["a0", "a1", "a2"])
    config = {"configurable": {"session_id": "s"}}
    for turn in range(3):
        chain.invoke({"question": f"q{turn}"}, config=config)  # type: ignore[arg-type]
    contents = [m.content for m in KVStoreChatMessageHistory(sync_database, "s").messages]
    assert contents == ["q0", "a0", "q1", "a1", "q2", "a2"]


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
async def test_runnable_with_message_history_async(async_database: Any) -> None:
    """ainvoke uses the native async history on every database backend; input-only history works too."""
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("messages")])
    chain = RunnableWithMessageHistory(
        prompt | FakeListChatModel(responses=["a0", "a1", "a2"]),
        lambda session_id: KVStoreChatMessageHistory(async_database, session_id, window=4),
    )  # no history_messages_key: the framework re-reads the history after each turn
    config = {"configurable": {"session_id": "s"}}
    for turn in range(3):
        await chain.ainvoke([HumanMessage(f"q{turn}")], config=config)  # type: ignore[arg-type]
    contents = [m.content for m in await KVStoreChatMessageHistory(async_database, "s").aget_messages()]
    assert contents == ["q0", "a0", "q1", "a1", "q2", "a2"]


# --- packaging ---------------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)


def test_import_kvstore_never_imports_langchain() -> None:
    """`import kvstore` and `import kvstore.integrations` load no framework."""
    result = run_python(
        "import sys, kvstore, kvstore.integrations\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_langchain_names_the_extra() -> None:
    """Without langchain-core, importing the adapter raises MissingDependencyError naming the pip install."""
    result = run_python(
        "import sys\n"
        "sys.modules['langchain_core'] = None\n"
        "from kvstore.errors import MissingDependencyError\n"
        "try:\n"
        "    import kvstore.integrations.langchain\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r'pip install "kvstore[-\w]*\[langchain\]"', result.stdout), result.stdout  # dist name may vary
