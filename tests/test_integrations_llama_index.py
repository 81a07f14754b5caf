"""LlamaIndex adapters: every method of the chat store and the key-value store, sync and async, on every backend.

LlamaIndex ships no conformance suite; these tests hold the adapters to ``SimpleChatStore``'s behaviour.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.schema import TextNode
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.storage.docstore.keyval_docstore import KVDocumentStore

from kvstore import AsyncMemoryCache, AsyncMemoryDatabase, AsyncStore, MemoryCache, MemoryDatabase, Store
from kvstore.integrations.llama_index import KVStoreChatStore, KVStoreKVStore
from tests.clock import FakeClock

PREFIX = "li-test:"

DATABASE_BACKENDS = ["memory-database", "sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)]
STORE_BACKENDS = [
    "memory-cache",
    *DATABASE_BACKENDS,
    pytest.param("redis", marks=pytest.mark.redis),
]


def open_sync(name: str, request: pytest.FixtureRequest) -> Store:
    """A fresh sync store of backend ``name``."""
    if name == "memory-cache":
        return MemoryCache()
    if name == "memory-database":
        return MemoryDatabase()
    if name == "sqlite-file":
        from kvstore.sqlite import SqliteDatabase

        path: Path = request.getfixturevalue("tmp_path") / "li.db"
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

        path: Path = request.getfixturevalue("tmp_path") / "li.db"
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


@pytest.fixture(params=DATABASE_BACKENDS)
def database(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An empty sync database-tier store of each database backend."""
    store = open_sync(request.param, request)
    store.clear()
    yield store
    store.clear()
    store.close()


@pytest.fixture(params=DATABASE_BACKENDS)
async def adatabase(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An empty async database-tier store of each database backend."""
    store = await open_async(request.param, request)
    await store.clear()
    yield store
    await store.clear()
    await store.aclose()


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """An empty sync store of each backend, either tier."""
    opened = open_sync(request.param, request)
    opened.clear()
    yield opened
    opened.clear()
    opened.close()


@pytest.fixture(params=STORE_BACKENDS)
async def astore(request: pytest.FixtureRequest) -> AsyncIterator[AsyncStore]:
    """An empty async store of each backend, either tier."""
    opened = await open_async(request.param, request)
    await opened.clear()
    yield opened
    await opened.clear()
    await opened.aclose()


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


MESSAGES = [
    msg("be brief", MessageRole.SYSTEM),
    msg("hi"),
    ChatMessage(role=MessageRole.ASSISTANT, content="hello", additional_kwargs={"tool_calls": [{"id": "c1"}]}),
    ChatMessage(
        role=MessageRole.USER, blocks=[TextBlock(text="look"), ImageBlock(image=b"\x89PNG", image_mimetype="image/png")]
    ),
]


# --- the chat store: every method, sync -------------------------------------------------------


def test_chat_store_set_get_add(database: Any) -> None:
    """set_messages replaces, get_messages reads in order, add_message appends; every field round-trips."""
    chat = KVStoreChatStore(database)
    assert chat.get_messages("u1") == []
    chat.set_messages("u1", MESSAGES[:2])
    chat.add_message("u1", MESSAGES[2])
    chat.add_message("u1", MESSAGES[3])
    assert chat.get_messages("u1") == MESSAGES
    chat.set_messages("u1", [msg("fresh start")])
    assert chat.get_messages("u1") == [msg("fresh start")]
    chat.set_messages("u1", [])
    assert chat.get_messages("u1") == []


def test_chat_store_delete_messages(database: Any) -> None:
    """delete_messages returns what it deleted; None for an unknown key."""
    chat = KVStoreChatStore(database)
    chat.set_messages("u1", MESSAGES)
    assert chat.delete_messages("u1") == MESSAGES
    assert chat.get_messages("u1") == []
    assert chat.delete_messages("u1") is None
    assert chat.get_keys() == []


def test_chat_store_delete_message_by_index(database: Any) -> None:
    """delete_message removes one message by index (negative from the end) and keeps the others in order."""
    chat = KVStoreChatStore(database)
    chat.set_messages("u1", [msg(str(i)) for i in range(5)])
    assert chat.delete_message("u1", 1) == msg("1")
    assert chat.delete_message("u1", -1) == msg("4")
    assert [m.content for m in chat.get_messages("u1")] == ["0", "2", "3"]
    assert chat.delete_message("u1", 3) is None  # out of range: nothing removed
    assert chat.delete_message("u1", -4) is None
    assert chat.delete_message("nobody", 0) is None
    chat.add_message("u1", msg("5"))  # appends still land after a rewrite
    assert [m.content for m in chat.get_messages("u1")] == ["0", "2", "3", "5"]


def test_chat_store_delete_last_message(database: Any) -> None:
    """delete_last_message pops the newest message; None once the conversation is empty."""
    chat = KVStoreChatStore(database)
    chat.set_messages("u1", [msg("a"), msg("b")])
    assert chat.delete_last_message("u1") == msg("b")
    assert chat.delete_last_message("u1") == msg("a")
    assert chat.delete_last_message("u1") is None
    assert chat.get_messages("u1") == []


def test_chat_store_get_keys_and_namespaces(database: Any) -> None:
    """get_keys lists this namespace's conversations only, glob characters and colons included."""
    chat = KVStoreChatStore(database)
    other = KVStoreChatStore(database, namespace="other")
    for key in ["u1", "a:b", "*?[x]"]:
        chat.add_message(key, msg(key))
    other.add_message("elsewhere", msg("x"))
    database.set("unrelated", 1)
    assert chat.get_keys() == sorted(["u1", "a:b", "*?[x]"])
    assert other.get_keys() == ["elsewhere"]
    assert chat.get_messages("a:b") == [msg("a:b")]


def test_chat_store_behaves_like_simple_chat_store(database: Any) -> None:
    """The same calls on SimpleChatStore and KVStoreChatStore give the same results."""
    ours, theirs = KVStoreChatStore(database), SimpleChatStore()
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("set_messages", ("k", [msg("a"), msg("b"), msg("c")])),
        ("add_message", ("k", msg("d"))),
        ("delete_message", ("k", 0)),
        ("delete_message", ("k", 7)),
        ("delete_last_message", ("k",)),
        ("get_messages", ("k",)),
        ("get_keys", ()),
        ("delete_messages", ("k",)),
        ("get_messages", ("k",)),
    ]
    for name, args in calls:
        assert getattr(ours, name)(*args) == getattr(theirs, name)(*args), name


def test_chat_store_ttl() -> None:
    """With ttl a conversation expires after its last write."""
    clock = FakeClock()
    chat = KVStoreChatStore(MemoryDatabase(clock=clock), ttl=60)
    chat.add_message("u1", msg("hi"))
    clock.advance(59)
    chat.add_message("u1", msg("again"))  # sliding
    clock.advance(59)
    assert len(chat.get_messages("u1")) == 2
    clock.advance(2)
    assert chat.get_messages("u1") == []


def test_chat_store_under_chat_memory_buffer(database: Any) -> None:
    """LlamaIndex's ChatMemoryBuffer persists through the store and reads it back in a new buffer."""
    chat = KVStoreChatStore(database)

    def new_buffer() -> ChatMemoryBuffer:
        return ChatMemoryBuffer.from_defaults(
            chat_store=chat, chat_store_key="user-1", token_limit=1000, tokenizer_fn=str.split
        )

    memory = new_buffer()
    for i in range(3):
        memory.put(msg(f"question {i}"))
        memory.put(msg(f"answer {i}", MessageRole.ASSISTANT))
    assert [m.content for m in new_buffer().get_all()][-2:] == ["question 2", "answer 2"]
    new_buffer().reset()
    assert chat.get_messages("user-1") == []


def test_chat_store_refuses_the_cache_tier_and_sync_calls_on_async() -> None:
    """The chat store needs the database tier; sync calls on an async database name the async method."""
    with pytest.raises(TypeError, match="database-tier"):
        KVStoreChatStore(MemoryCache())  # type: ignore[arg-type]
    chat = KVStoreChatStore(AsyncMemoryDatabase())
    for call, name in [
        (lambda: chat.get_messages("k"), "aget_messages"),
        (lambda: chat.set_messages("k", []), "aset_messages"),
        (lambda: chat.add_message("k", msg("x")), "async_add_message"),
        (lambda: chat.delete_messages("k"), "adelete_messages"),
        (lambda: chat.delete_message("k", 0), "adelete_message"),
        (lambda: chat.delete_last_message("k"), "adelete_last_message"),
        (chat.get_keys, "aget_keys"),
    ]:
        with pytest.raises(TypeError, match=name):
            call()


def test_chat_store_serializes_as_a_component() -> None:
    """class_name and the pydantic fields (namespace, ttl) are what LlamaIndex serializes."""
    chat = KVStoreChatStore(MemoryDatabase(), namespace="n", ttl=5)
    assert KVStoreChatStore.class_name() == "KVStoreChatStore"
    assert chat.to_dict()["namespace"] == "n"
    assert chat.to_dict()["ttl"] == 5


# --- the chat store: every method, async ------------------------------------------------------


async def test_chat_store_async_every_method(adatabase: Any) -> None:
    """Every async method is native on an async database and behaves like its sync twin."""
    chat = KVStoreChatStore(adatabase)
    assert await chat.aget_messages("u1") == []
    await chat.aset_messages("u1", MESSAGES[:2])
    await chat.async_add_message("u1", MESSAGES[2])
    await chat.async_add_message("u1", MESSAGES[3])
    await chat.async_add_message("u2", msg("other"))
    assert await chat.aget_messages("u1") == MESSAGES
    assert await chat.aget_keys() == ["u1", "u2"]
    assert await chat.adelete_message("u1", 1) == MESSAGES[1]
    assert await chat.adelete_message("u1", 9) is None
    assert await chat.adelete_last_message("u1") == MESSAGES[3]
    assert await chat.aget_messages("u1") == [MESSAGES[0], MESSAGES[2]]
    assert await chat.adelete_messages("u1") == [MESSAGES[0], MESSAGES[2]]
    assert await chat.adelete_messages("u1") is None
    assert await chat.adelete_last_message("u1") is None
    await chat.aset_messages("u2", [])
    assert await chat.aget_keys() == []


async def test_chat_store_async_methods_on_a_sync_database() -> None:
    """On a sync database the async methods run the sync ones in a thread (LlamaIndex's default)."""
    chat = KVStoreChatStore(MemoryDatabase())
    await chat.aset_messages("u1", [msg("a"), msg("b")])
    await chat.async_add_message("u1", msg("c"))
    assert await chat.adelete_message("u1", 0) == msg("a")
    assert await chat.adelete_last_message("u1") == msg("c")
    assert await chat.aget_messages("u1") == [msg("b")]
    assert await chat.aget_keys() == ["u1"]
    assert await chat.adelete_messages("u1") == [msg("b")]


# --- the key-value store -----------------------------------------------------------------------


def test_kv_store_every_method(store: Store) -> None:
    """put/get/put_all/get_all/delete, collections kept apart (colons included)."""
    kv = KVStoreKVStore(store)
    assert kv.get("a") is None
    kv.put("a", {"x": 1})
    assert kv.get("a") == {"x": 1}
    kv.put_all([("b", {"y": [1, 2]}), ("c", {})], batch_size=1)
    kv.put_all([(f"n{i}", {"i": i}) for i in range(7)], collection="nums", batch_size=3)
    kv.put("c", {"in": "a:b"}, collection="a:b")
    kv.put("b:c", {"in": "a"}, collection="a")
    assert kv.get_all() == {"a": {"x": 1}, "b": {"y": [1, 2]}, "c": {}}
    assert kv.get_all("nums") == {f"n{i}": {"i": i} for i in range(7)}
    assert kv.get_all("a:b") == {"c": {"in": "a:b"}}
    assert kv.get_all("a") == {"b:c": {"in": "a"}}
    assert kv.get_all("empty") == {}
    assert kv.delete("a") is True
    assert kv.delete("a") is False
    assert kv.get("a") is None
    returned = kv.get("b")
    assert returned is not None
    returned["y"].append(3)  # a copy: the stored value is unchanged
    assert kv.get("b") == {"y": [1, 2]}
    with pytest.raises(TypeError, match="dicts"):
        kv.put("bad", [1])  # type: ignore[arg-type]


async def test_kv_store_every_method_async(astore: AsyncStore) -> None:
    """The async methods are native on an async store."""
    kv = KVStoreKVStore(astore)
    await kv.aput("a", {"x": 1})
    await kv.aput_all([("b", {"y": 2}), ("c", {"z": 3})])
    await kv.aput_all([(f"n{i}", {"i": i}) for i in range(5)], collection="nums", batch_size=2)
    assert await kv.aget("a") == {"x": 1}
    assert await kv.aget("missing") is None
    assert await kv.aget_all() == {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    assert await kv.aget_all("nums") == {f"n{i}": {"i": i} for i in range(5)}
    assert await kv.adelete("a") is True
    assert await kv.adelete("a") is False
    assert await kv.aget_all() == {"b": {"y": 2}, "c": {"z": 3}}


async def test_kv_store_async_methods_on_a_sync_store() -> None:
    """On a sync store the async methods run in a thread."""
    kv = KVStoreKVStore(MemoryCache())
    await kv.aput("a", {"x": 1})
    await kv.aput_all([("b", {"y": 2})])
    assert await kv.aget("a") == {"x": 1}
    assert await kv.aget_all() == {"a": {"x": 1}, "b": {"y": 2}}
    assert await kv.adelete("b") is True
    with pytest.raises(TypeError, match="aget"):
        KVStoreKVStore(AsyncMemoryCache()).get("a")


def test_kv_store_ttl() -> None:
    """A store built with ttl writes every entry with it."""
    clock = FakeClock()
    kv = KVStoreKVStore(MemoryCache(clock=clock), ttl=10)
    kv.put_all([("a", {"x": 1}), ("b", {"x": 2})])
    clock.advance(11)
    assert kv.get_all() == {}


def test_kv_store_under_the_document_store(store: Store) -> None:
    """LlamaIndex's KVDocumentStore keeps nodes, their hashes and ref info on the adapter."""
    docstore = KVDocumentStore(KVStoreKVStore(store), namespace="docs")
    nodes = [TextNode(text=f"node {i}", id_=f"n{i}") for i in range(3)]
    docstore.add_documents(nodes)
    assert docstore.get_document("n1").get_content() == "node 1"  # type: ignore[union-attr]
    assert set(docstore.docs) == {"n0", "n1", "n2"}
    assert docstore.document_exists("n2")
    docstore.delete_document("n2")
    assert not docstore.document_exists("n2")
    assert docstore.get_document_hash("n0") == nodes[0].hash


def test_missing_llama_index_names_the_extra() -> None:
    """Without llama-index-core, importing the adapter raises MissingDependencyError naming the pip install."""
    code = (
        "import sys\n"
        "sys.modules['llama_index'] = None\n"
        "from kvstore.errors import MissingDependencyError\n"
        "try:\n"
        "    import kvstore.integrations.llama_index\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r'pip install "kvstore[-\w]*\[llama-index\]"', result.stdout), result.stdout  # dist name may vary
