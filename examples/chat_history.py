"""An agent loop that persists every turn: sync and async, on the embedded default (SQLite file).

Run it twice: the conversation continues where it stopped, because it is on disk.
"""

from __future__ import annotations

import asyncio

from kvstore import AsyncChatHistory, AsyncStorageManager, ChatHistory, ChatMessage, StorageManager


def fake_llm(context: list[ChatMessage]) -> str:
    """Stands in for a model call: answers from the context it was given."""
    return f"(turn {len(context) + 1}) you said {context[-1].content!r}"


def sync_agent() -> None:
    with StorageManager() as storage:  # no config: memory cache + ./.kvstore/kvstore.db
        history = ChatHistory(storage.database, "agent-sync", ttl=7 * 24 * 3600)
        for turn, question in enumerate(["What is kvstore?", "Does it survive a restart?"]):
            history.add(ChatMessage(role="user", content=question))
            context = history.last(20)  # O(log n + 20) however long the conversation gets
            # An idempotency id makes a retried write safe: the second add stores nothing.
            reply = ChatMessage(role="assistant", content=fake_llm(context), id=f"reply-{history.count()}-{turn}")
            history.add(reply)
            history.add(reply)  # e.g. a retry after a timeout: no duplicate
        print(f"sync agent: {history.count()} messages stored; the last two:")
        for message in history.last(2):
            print(f"  {message.role}: {message.content}")
        history.trim(50)  # keep the newest 50


async def async_agent() -> None:
    async with AsyncStorageManager() as storage:
        history = AsyncChatHistory(storage.database, "agent-async")
        await history.extend(  # one round trip for a batch of turns
            [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]
        )
        await history.add(ChatMessage(role="assistant", content=fake_llm(await history.last(20))))
        page = await history.page(limit=2)
        print(f"async agent: {await history.count()} messages; newest page starts at position {page.start}")
        conversations = await AsyncChatHistory.conversations(storage.database, "agent-*")
        print(f"conversations matching 'agent-*': {conversations}")


if __name__ == "__main__":
    sync_agent()
    asyncio.run(async_agent())
