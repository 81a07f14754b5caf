"""Chat-history models and key layout (I/O-free; shared by the async and sync histories)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kvstore._core.keys import escape_glob

__all__ = ["DEFAULT_NAMESPACE", "ChatKeys", "ChatMessage", "ChatPage", "message_id", "with_id"]

M = TypeVar("M")

#: Keys of chat histories start with this (``chat:<conversation>``) unless told otherwise.
DEFAULT_NAMESPACE = "chat"


def _now() -> datetime:
    return datetime.now(UTC)


class ChatMessage(BaseModel):
    """One turn of a conversation.

    Extra fields (``tool_calls``, ``name``, ``metadata``...) are kept as they are,
    so a provider's message dict round-trips.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"``, ``"tool"``...
        content: The text of the turn.
        id: Optional unique id; ``ChatHistory.add`` uses it as the idempotency id.
        created_at: When the message was made (UTC).
    """

    model_config = ConfigDict(extra="allow")

    role: str
    content: str
    id: str | None = None
    created_at: datetime = Field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ChatPage(Generic[M]):
    """A page of messages, oldest first.

    Attributes:
        messages: The messages of the page.
        start: Position of the first message in the conversation (a list index: after
            a `trim`, positions count from the oldest kept message).
        before: The cursor for the next (older) page, ``None`` when this page
            reaches the oldest message kept.
    """

    messages: list[M]
    start: int
    before: int | None


@dataclass(frozen=True, slots=True)
class ChatKeys:
    """Where one conversation lives in the database.

    ``<ns>:<conversation>`` is the list of messages; ``<ns>.meta:<conversation>``
    holds the trim offset. Message ids are the list writes' idempotency ids, kept
    by the backend beside the list (no key of the user's keyspace holds them).
    """

    namespace: str
    conversation: str

    @property
    def messages(self) -> str:
        return f"{self.namespace}:{self.conversation}"

    @property
    def meta(self) -> str:
        return f"{self.namespace}.meta:{self.conversation}"

    @staticmethod
    def conversation_pattern(namespace: str, pattern: str) -> str:
        """The key glob that lists the conversations matching ``pattern``."""
        return escape_glob(f"{namespace}:") + pattern


def message_id(message: Any) -> str | None:
    """The ``id`` a message carries (model attribute or dict key), if any."""
    if isinstance(message, dict):
        value = message.get("id")
    else:
        value = getattr(message, "id", None)
    return value if isinstance(value, str) else None


def with_id(message: Any, mid: str) -> Any:
    """``message`` carrying ``mid`` as its ``id`` (a copy; models without an ``id`` field are left as they are)."""
    if isinstance(message, dict):
        return {**message, "id": mid}
    if isinstance(message, BaseModel) and "id" in type(message).model_fields:
        return message.model_copy(update={"id": mid})
    return message
