"""Chat histories on the database tier: `ChatHistory`, `AsyncChatHistory`, `ChatMessage`."""

from kvstore.chat._history import ChatHistory
from kvstore.chat._history_async import AsyncChatHistory
from kvstore.chat._message import ChatMessage, ChatPage

__all__ = ["AsyncChatHistory", "ChatHistory", "ChatMessage", "ChatPage"]
