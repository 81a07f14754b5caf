"""Review s7c: framework adapters under interruption (a cancelled task, an outage in the middle of an operation)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("llama_index.core")

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from llama_index.core.llms import ChatMessage

from kvstore import Database
from kvstore.errors import BackendUnavailableError
from kvstore.integrations.langgraph import KVStoreSaver
from kvstore.integrations.llama_index import KVStoreChatStore
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase


def _thread(saver: KVStoreSaver, thread_id: str, turns: int) -> list[HumanMessage]:
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    messages: list[HumanMessage] = []
    for turn in range(turns):
        messages = [*messages, HumanMessage(f"m{turn}", id=f"{thread_id}-{turn}")]
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": messages, "big": "x" * 5000}
        checkpoint["channel_versions"] = {"messages": turn + 1, "big": turn + 1}
        config = saver.put(
            config, checkpoint, {"source": "loop", "step": turn}, {"messages": turn + 1, "big": turn + 1}
        )
        saver.put_writes(config, [("messages", HumanMessage(f"w{turn}"))], f"task-{turn}")
    return messages


class _FailingAt:
    """The real database, whose ``n``-th ``delete`` fails as during an outage (the call does not happen)."""

    def __init__(self, database: Database, n: int) -> None:
        self._database, self._n = database, n

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._database, name)
        if name != "delete":
            return method

        def delete(key: str) -> bool:
            self._n -= 1
            if self._n < 0:
                raise BackendUnavailableError("database down (test)")
            return bool(method(key))

        return delete


def test_delete_thread_interrupted_never_leaves_a_truncated_checkpoint(tmp_path: Path) -> None:
    """delete_thread interrupted after any of its deletes: the thread reads back whole or not at all
    (it deleted the messages before the head, so the newest checkpoint came back with messages missing)."""
    db = SqliteDatabase(tmp_path / "lg.db")
    full = _thread(KVStoreSaver(db), "t", 4)
    total = len(db.keys("langgraph:*"))
    for n in range(total):
        db.clear()
        _thread(KVStoreSaver(db), "t", 4)
        _thread(KVStoreSaver(db), "other", 2)
        with pytest.raises(BackendUnavailableError):
            KVStoreSaver(_FailingAt(db, n)).delete_thread("t")  # type: ignore[arg-type]
        saver = KVStoreSaver(db)
        config = {"configurable": {"thread_id": "t"}}
        found = saver.get_tuple(config)
        assert found is None or found.checkpoint["channel_values"]["messages"] == full, n
        for listed in saver.list(config):
            values = listed.checkpoint["channel_values"]
            assert values["messages"] == full[: len(values["messages"])], n
            assert values["big"] == "x" * 5000, n
            assert [m.id for m in values["messages"]] == [f"t-{i}" for i in range(len(values["messages"]))], n
        saver.delete_thread("t")  # the retry finishes the job
        assert db.keys("langgraph:*:t:*") == []
        assert (
            len(saver.get_tuple({"configurable": {"thread_id": "other"}}).checkpoint["channel_values"]["messages"]) == 2
        )


class _SlowAppend(AsyncSqliteDatabase):
    """A real SQLite database whose appends take a moment, so a caller can be cancelled while one is under way."""

    reached: asyncio.Event

    async def extend_json(self, key: str, items: list[bytes], *, idempotency_id: str | None = None) -> int | None:
        self.reached.set()
        await asyncio.sleep(0.05)
        return await super().extend_json(key, items, idempotency_id=idempotency_id)


@pytest.mark.parametrize("operation", ["adelete_message", "adelete_last_message", "aset_messages"])
async def test_llama_index_rewrite_cancelled_keeps_the_conversation(tmp_path: Path, operation: str) -> None:
    """Cancelling adelete_message / adelete_last_message / aset_messages while the conversation is being written back
    lost the whole conversation (it had been cleared, the rewrite never ran)."""
    db = _SlowAppend(tmp_path / "li.db")
    store = KVStoreChatStore(db)
    messages = [ChatMessage(role="user", content=f"m{i}") for i in range(5)]
    db.reached = asyncio.Event()
    await store.aset_messages("k", messages)
    db.reached = asyncio.Event()
    if operation == "aset_messages":
        wanted = messages[:2]
        task = asyncio.create_task(store.aset_messages("k", wanted))
    elif operation == "adelete_message":
        wanted = messages[1:]
        task = asyncio.create_task(store.adelete_message("k", 0))
    else:
        wanted = messages[:-1]
        task = asyncio.create_task(store.adelete_last_message("k"))
    await db.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if [m.content for m in await store.aget_messages("k")] == [m.content for m in wanted]:
            break
        await asyncio.sleep(0.02)
    assert [m.content for m in await store.aget_messages("k")] == [m.content for m in wanted]
    await db.aclose()


def test_delete_for_runs_interrupted_never_leaves_a_head_without_its_values(tmp_path: Path) -> None:
    """delete_for_runs interrupted after any of its deletes: the thread's newest checkpoint reads back whole
    (it deleted the newest checkpoint's large values before moving the head off it, which then read back
    without them)."""
    db = SqliteDatabase(tmp_path / "lg.db")
    for n in range(16):
        db.clear()
        saver = KVStoreSaver(db)
        config: dict[str, Any] = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        for turn in range(4):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"big": f"{turn}" * 5000}
            checkpoint["channel_versions"] = {"big": turn + 1}
            run = "late" if turn >= 2 else "early"
            config = saver.put(config, checkpoint, {"source": "loop", "step": turn, "run_id": run}, {"big": turn + 1})
            saver.put_writes(config, [("x", turn)], "task")
        other: dict[str, Any] = {"configurable": {"thread_id": "u", "checkpoint_ns": ""}}
        for turn in range(2):  # a thread of the doomed run only
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"big": "u" * 5000}
            checkpoint["channel_versions"] = {"big": turn + 1}
            other = saver.put(other, checkpoint, {"source": "loop", "step": turn, "run_id": "late"}, {"big": turn + 1})
        with contextlib.suppress(BackendUnavailableError):
            KVStoreSaver(_FailingAt(db, n)).delete_for_runs(["late"])  # type: ignore[arg-type]
        fresh = KVStoreSaver(db)
        found = fresh.get_tuple({"configurable": {"thread_id": "t"}})
        assert found is not None, n
        step = found.metadata["step"]
        assert found.checkpoint["channel_values"] == {"big": f"{step}" * 5000}, n
        fresh.delete_for_runs(["late"])  # the retry finishes the job
        found = fresh.get_tuple({"configurable": {"thread_id": "t"}})
        assert found is not None, n
        assert found.metadata["step"] == 1, n
        assert found.checkpoint["channel_values"] == {"big": "1" * 5000}, n
        assert fresh.get_tuple({"configurable": {"thread_id": "u"}}) is None, n
        assert [k for k in db.keys("langgraph:*") if k.startswith(("langgraph:c:u:", "langgraph:b:u:"))] == [], n


@pytest.mark.parametrize("backend", ["memory", "sqlite-file"])
async def test_llm_cache_clear_leaves_a_nested_namespace_alone(tmp_path: Path, backend: str) -> None:
    """clear() of the LLM cache in namespace ``llm`` removed the answers of namespace ``llm:v2`` too
    (its docstring: "nothing else in the store")."""
    from langchain_core.outputs import Generation

    from kvstore import AsyncMemoryCache, MemoryCache
    from kvstore.integrations.langchain import KVStoreLLMCache

    sync_store = MemoryCache() if backend == "memory" else SqliteDatabase(tmp_path / "c.db")
    async_store = AsyncMemoryCache() if backend == "memory" else AsyncSqliteDatabase(tmp_path / "ac.db")
    for store in (sync_store, async_store):
        old, new = KVStoreLLMCache(store, namespace="llm"), KVStoreLLMCache(store, namespace="llm:v2")
        for cache in (old, new):
            await cache.aupdate("p", "model", [Generation(text=cache.namespace)])
        if store is sync_store:
            old.clear()
        else:
            await old.aclear()
        assert await old.alookup("p", "model") is None
        assert await new.alookup("p", "model") == [Generation(text="llm:v2")]
    await async_store.aclose()
