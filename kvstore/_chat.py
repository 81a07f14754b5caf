"""Chat-history models and key layout (I/O-free; shared by the async and sync histories)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kvstore._keys import escape_glob

__all__ = ["DEFAULT_NAMESPACE", "ChatKeys", "ChatMessage", "ChatPage", "find_message_id", "message_id", "with_id"]

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
        start: Position of the first message in the conversation (positions never
            shift, not even after `trim`).
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
    holds the trim offset; ``<ns>.id:<len>:<conversation>:<message id>`` records
    the position of a message added with an idempotency id. The conversation's
    length in the id keys keeps ``a`` and ``a:b`` apart.
    """

    namespace: str
    conversation: str

    @property
    def messages(self) -> str:
        return f"{self.namespace}:{self.conversation}"

    @property
    def meta(self) -> str:
        return f"{self.namespace}.meta:{self.conversation}"

    def message_id(self, mid: str) -> str:
        return f"{self._id_prefix}{mid}"

    def takeover(self, mid: str, stamp: float) -> str:
        """The claim a retry takes before re-adding a message whose first attempt went silent."""
        return f"{self._id_prefix}{mid}\x1f{stamp!r}"

    @property
    def id_pattern(self) -> str:
        """The glob matching every idempotency record of this conversation."""
        return escape_glob(self._id_prefix) + "*"

    @property
    def _id_prefix(self) -> str:
        return f"{self.namespace}.id:{len(self.conversation)}:{self.conversation}:"

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


def find_message_id(raw_messages: Sequence[Any], mid: str) -> int | None:
    """Position (from the start of ``raw_messages``) of the last stored message whose ``id`` is ``mid``."""
    for i in range(len(raw_messages) - 1, -1, -1):
        item = raw_messages[i]
        if isinstance(item, dict) and item.get("id") == mid:
            return i
    return None
