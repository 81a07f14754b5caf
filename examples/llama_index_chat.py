"""LlamaIndex on kvstore: chat memory and a document store that survive restarts, on the embedded default.

Needs ``pip install "kvstore-sdk[llama-index]"``. No server, no API key and no download (the
token counter is a word count here; LlamaIndex's default fetches a tokenizer). Run it twice:
the conversation continues where it stopped.
"""

from __future__ import annotations

import asyncio

from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.schema import TextNode
from llama_index.core.storage.docstore.keyval_docstore import KVDocumentStore

from kvstore import AsyncStorageManager, StorageManager
from kvstore.integrations.llama_index import KVStoreChatStore, KVStoreKVStore


def fake_llm(messages: list[ChatMessage]) -> str:
    """Stands in for a model call: answers from the memory it was given."""
    return f"(reply {len(messages)}) you said {messages[-1].content!r}"


def sync_agent() -> None:
    with StorageManager() as storage:  # no config: memory cache + ./.kvstore/kvstore.db
        chat_store = KVStoreChatStore(storage.database)
        memory = ChatMemoryBuffer.from_defaults(
            chat_store=chat_store, chat_store_key="user-42", token_limit=2000, tokenizer_fn=str.split
        )
        for question in ["hi", "does this survive a restart?"]:
            memory.put(ChatMessage(role=MessageRole.USER, content=question))
            memory.put(ChatMessage(role=MessageRole.ASSISTANT, content=fake_llm(memory.get())))
        print(f"sync: 'user-42' holds {len(chat_store.get_messages('user-42'))} messages; the last one:")
        print(f"  {chat_store.get_messages('user-42')[-1].content}")
        print(f"conversations: {chat_store.get_keys()}")

        docstore = KVDocumentStore(KVStoreKVStore(storage.database), namespace="docs")
        docstore.add_documents([TextNode(text="kvstore keeps chat histories", id_="node-1")])
        print(f"docstore: node-1 = {docstore.get_document('node-1').get_content()!r}")  # type: ignore[union-attr]


async def async_agent() -> None:
    async with AsyncStorageManager() as storage:
        chat_store = KVStoreChatStore(storage.database)  # an async database: the a-methods are native
        await chat_store.async_add_message("user-async", ChatMessage(role=MessageRole.USER, content="hi"))
        removed = await chat_store.adelete_last_message("user-async")
        print(f"async: added and removed {removed.content if removed else None!r}")


if __name__ == "__main__":
    sync_agent()
    asyncio.run(async_agent())
