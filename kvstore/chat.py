"""Chat histories on the database tier: `ChatHistory`, `AsyncChatHistory`, `ChatMessage`."""

from kvstore._async.chat import AsyncChatHistory
from kvstore._chat import ChatMessage, ChatPage
from kvstore._sync.chat import ChatHistory

__all__ = ["AsyncChatHistory", "ChatHistory", "ChatMessage", "ChatPage"]
