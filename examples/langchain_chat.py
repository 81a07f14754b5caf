"""LangChain on kvstore: a chat history that survives restarts and an LLM cache, on the embedded default.

Needs ``pip install "kvstore-sdk[langchain]"``. No server and no API key: the model is
LangChain's fake chat model. Run it twice: the conversation continues where it stopped.
"""

from __future__ import annotations

import asyncio

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from kvstore import AsyncStorageManager, StorageManager
from kvstore.integrations.langchain import KVStoreChatMessageHistory, KVStoreLLMCache, KVStoreValueStore

SYSTEM = SystemMessage("You are brief.")


def sync_agent() -> None:
    with StorageManager() as storage:  # no config: memory cache + ./.kvstore/kvstore.db
        model = FakeListChatModel(responses=["Hello! How can I help?", "On disk, in ./.kvstore/kvstore.db."])
        history = KVStoreChatMessageHistory(storage.database, "user-42", window=20)
        for question in ["hi", "where is this conversation stored?"]:
            context = [SYSTEM, *history.messages, HumanMessage(question)]  # the newest 20: O(20) a turn
            reply = model.invoke(context)
            history.add_messages([HumanMessage(question), reply])  # one round trip
        stored = history.history.count()
        print(
            f"sync: 'user-42' holds {stored} messages; the model saw the last {len(context) - 1} and the system prompt"
        )

        # The LLM cache: the second identical call never reaches the model.
        cache = KVStoreLLMCache(storage.cache, ttl=3600)
        cached = FakeListChatModel(responses=["first call", "second call"], cache=cache)
        answers = [cached.invoke("What is 6 x 7?").content for _ in range(2)]
        print(f"cache: {answers} (the second answer came from kvstore, not the model)")

        # Any JSON value under a namespace, in one round trip per mget/mset.
        settings = KVStoreValueStore(storage.database, namespace="settings")
        settings.mset([("user-42", {"language": "en", "window": 20})])
        print(f"value store: {settings.mget(['user-42', 'user-43'])}")


async def async_agent() -> None:
    async with AsyncStorageManager() as storage:
        model = FakeListChatModel(responses=["Async hello."])
        history = KVStoreChatMessageHistory(storage.database, "user-async", window=20)
        question = HumanMessage("hi from asyncio")
        reply = await model.ainvoke([SYSTEM, *await history.aget_messages(), question])
        await history.aadd_messages([question, reply])
        print(f"async: 'user-async' holds {len(await history.aget_messages())} messages (window 20)")


if __name__ == "__main__":
    sync_agent()
    asyncio.run(async_agent())
