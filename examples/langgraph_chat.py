"""A LangGraph chat (StateGraph + add_messages) whose short-term memory is a kvstore checkpointer, and whose
long-term memory is a kvstore store; on the embedded default (SQLite file), sync and async, no network.

Run it twice: the conversation continues where it stopped, because it is on disk. Needs
``pip install "kvstore-sdk[langgraph]"``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from kvstore import AsyncStorageManager, StorageManager
from kvstore.integrations.langgraph import AsyncKVStoreSaver, KVStoreSaver, KVStoreStore


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build(checkpointer: Any, store: BaseStore | None = None) -> Any:
    model = FakeListChatModel(responses=["Noted!", "You told me before: I remember."])  # stands in for a real model

    def chatbot(state: State, runtime: Runtime) -> dict[str, Any]:
        if runtime.store is not None:  # long-term memory, shared by every thread of this user
            said = state["messages"][-1].content
            runtime.store.put(("user-7", "memories"), f"m{len(state['messages'])}", {"said": said})
        return {"messages": [model.invoke(state["messages"][-20:])]}  # the model sees the last 20 messages

    builder = StateGraph(State)
    builder.add_node("chatbot", chatbot)
    builder.add_edge(START, "chatbot")
    return builder.compile(checkpointer=checkpointer, store=store)


def sync_chat() -> None:
    with StorageManager() as storage:  # no config: memory cache + ./.kvstore/kvstore.db
        graph = build(KVStoreSaver(storage.database), KVStoreStore(storage.database))
        config = {"configurable": {"thread_id": "chat-42"}}
        for question in ("My favourite colour is green.", "What is my favourite colour?"):
            graph.invoke({"messages": [HumanMessage(question)]}, config)
        messages = graph.get_state(config).values["messages"]
        print(f"sync chat: {len(messages)} messages in thread chat-42; the last two:")
        for message in messages[-2:]:
            print(f"  {message.type}: {message.content}")
        # Each message is stored once, under a key of its own, however many checkpoints refer to it.
        print(f"  stored once each: {len(storage.database.keys('langgraph:i:chat-42:*'))} message items")
        memories = KVStoreStore(storage.database).search(("user-7", "memories"), limit=3)
        print(f"  long-term memories of user-7: {len(memories)} (newest: {memories[0].value['said']!r})")


async def async_chat() -> None:
    async with AsyncStorageManager() as storage:
        graph = build(AsyncKVStoreSaver(storage.database))
        config = {"configurable": {"thread_id": "chat-async"}}
        await graph.ainvoke({"messages": [HumanMessage("hello from asyncio")]}, config)
        state = await graph.aget_state(config)
        print(f"async chat: {len(state.values['messages'])} messages in thread chat-async")


if __name__ == "__main__":
    sync_chat()
    asyncio.run(async_chat())
