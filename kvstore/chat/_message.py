"""Chat-history models and key layout (I/O-free; shared by the async and sync histories)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from orjson import JSONDecodeError
from orjson import loads as _loads
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from kvstore._core.keys import escape_glob, validate_namespace
from kvstore._core.typed import TypeCodec, _titled

__all__ = [
    "DEFAULT_NAMESPACE",
    "ChatKeys",
    "ChatMessage",
    "ChatPage",
    "PageReader",
    "dump_json",
    "message_id",
    "with_id",
]

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
    #: The key of the list of messages (made once: every read names it).
    messages: str = field(init=False)
    #: The key of the trim offset.
    meta: str = field(init=False)

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)
        object.__setattr__(self, "messages", f"{self.namespace}:{self.conversation}")
        object.__setattr__(self, "meta", f"{self.namespace}.meta:{self.conversation}")

    @staticmethod
    def conversation_pattern(namespace: str, pattern: str) -> str:
        """The key glob that lists the conversations matching ``pattern``."""
        return escape_glob(f"{validate_namespace(namespace)}:") + pattern


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


class PageReader(Generic[M]):
    """Parses a page of stored messages in one pass: one pydantic-core call for the whole page.

    The stored items are JSON texts; joined into one JSON array (``b"[" + b",".join(items) +
    b"]"``) they are decoded and validated at once by the pydantic-core validator of
    ``TypeAdapter(list[model])`` (its ``validate_json``, called directly: the adapter's method
    only forwards its default options), with no intermediate dicts. A ``dict`` history skips
    validation: one ``orjson.loads`` of the array, each item checked to be an object. `load`
    returns ``None`` when the page does not parse that way (a corrupt or invalid item, or text
    that is not one JSON document): the caller then decodes and validates item by item, which
    raises the error naming the key.
    """

    __slots__ = ("_adapter",)

    def __init__(self, model: Any) -> None:
        self._adapter: TypeAdapter[list[M]] | None = None if model is dict else TypeAdapter(list[model])

    def load(self, items: list[bytes] | list[str]) -> list[M] | None:
        if not items:
            return []
        joined: Any = (
            b"[" + b",".join(items) + b"]"  # bytes items
            if items[0].__class__ is bytes
            else "[" + ",".join(items) + "]"  # type: ignore[arg-type]  # str items (PostgreSQL)
        )
        adapter = self._adapter
        if adapter is None:
            try:
                found = _loads(joined)
            except JSONDecodeError:
                return None
            if len(found) != len(items):
                return None
            for message in found:
                if message.__class__ is not dict:
                    return None
            return found  # type: ignore[no-any-return]  # dicts, the model of this history
        try:
            found = adapter.validator.validate_json(joined)
        except ValidationError:
            return None
        # One result per item, or an item was not one JSON document (``1,2`` joins into two).
        return found if len(found) == len(items) else None


def dump_json(codec: TypeCodec[Any], key: str, message: Any) -> bytes:
    """``message`` validated as the history's model and serialised once, by pydantic-core, to JSON bytes.

    The same bytes as validating, dumping to JSON-able Python and encoding with orjson (a NaN or
    infinite float becomes ``null`` either way), in one pass. A `ValidationError` is titled with the key.
    """
    try:
        valid = codec.adapter.validate_python(message)
    except ValidationError as exc:
        raise _titled(exc, key) from None
    return codec.adapter.dump_json(valid)
