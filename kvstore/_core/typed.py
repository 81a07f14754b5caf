"""Validation glue for typed views (I/O-free; shared by async and sync)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

__all__ = ["TypeCodec"]

T = TypeVar("T")


class TypeCodec(Generic[T]):
    """Validates values of one type on write and parses them on read.

    Errors are pydantic's `ValidationError`, titled with the key.
    """

    __slots__ = ("adapter", "type")

    def __init__(self, type_: Any) -> None:
        self.type = type_
        self.adapter: TypeAdapter[T] = TypeAdapter(type_)

    def dump(self, key: str, value: Any) -> Any:
        """Validate ``value`` and return its JSON-compatible form."""
        try:
            valid = self.adapter.validate_python(value)
        except ValidationError as exc:
            raise _titled(exc, key) from None
        return self.adapter.dump_python(valid, mode="json")

    def load(self, key: str, raw: Any) -> T | None:
        """Parse a stored JSON value (``None`` stays ``None``: the key is absent)."""
        if raw is None:
            return None
        try:
            return self.adapter.validate_python(raw)
        except ValidationError as exc:
            raise _titled(exc, key) from None


def _titled(exc: ValidationError, key: str) -> ValidationError:
    try:
        return ValidationError.from_exception_data(
            f"key {key!r}",
            exc.errors(include_url=False),  # type: ignore[arg-type]  # ErrorDetails fit InitErrorDetails
        )
    except Exception:  # an error type pydantic cannot rebuild: keep the original
        return exc
