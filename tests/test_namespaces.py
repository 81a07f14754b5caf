"""Chat and session namespaces cannot make another namespace's keys (two tenants, one key)."""

from __future__ import annotations

import pytest

from kvstore import InvalidKeyError
from kvstore.chat import AsyncChatHistory, ChatHistory
from kvstore.memory import AsyncMemoryDatabase, MemoryCache, MemoryDatabase
from kvstore.session import SessionStore

BAD = ["chat:acme", ":", "a:", "chat.meta", "", "bad\x00ns"]


@pytest.mark.parametrize("namespace", BAD)
def test_a_chat_namespace_that_could_name_another_tenants_key_is_refused(namespace: str) -> None:
    db = MemoryDatabase()
    with pytest.raises(InvalidKeyError, match="namespace"):
        ChatHistory(db, "42", namespace=namespace)
    with pytest.raises(InvalidKeyError, match="namespace"):
        AsyncChatHistory(AsyncMemoryDatabase(), "42", namespace=namespace)
    with pytest.raises(InvalidKeyError, match="namespace"):
        ChatHistory.conversations(db, namespace=namespace)
    assert list(db.iter_keys("*")) == []


@pytest.mark.parametrize("namespace", BAD)
def test_a_session_namespace_that_could_name_another_tenants_key_is_refused(namespace: str) -> None:
    with pytest.raises(InvalidKeyError, match="namespace"):
        SessionStore(MemoryCache(), MemoryDatabase(), namespace=namespace)


def test_tenants_told_apart_by_namespace_never_share_a_conversation() -> None:
    """'chat' + 'acme:42' and 'chat.acme' + '42': two conversations, each listing only its own."""
    db = MemoryDatabase()
    first = ChatHistory(db, "acme:42", model=dict, namespace="chat")
    second = ChatHistory(db, "42", model=dict, namespace="chat.acme")
    first.add({"role": "user", "content": "tenant 1"})
    second.add({"role": "user", "content": "tenant 2"})
    assert [m["content"] for m in first.last(10)] == ["tenant 1"]
    assert [m["content"] for m in second.last(10)] == ["tenant 2"]
    assert ChatHistory.conversations(db, namespace="chat") == ["acme:42"]
    assert ChatHistory.conversations(db, namespace="chat.acme") == ["42"]
