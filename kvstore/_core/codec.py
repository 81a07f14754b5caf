"""Value encoding: JSON documents via orjson, strict about what can round-trip."""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

import orjson
from pydantic import BaseModel

from kvstore.errors import SerializationError, ValueTooLargeError

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "decode", "encode", "encode_rows"]

DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024

_dumps = orjson.dumps
_loads = orjson.loads
_second = operator.itemgetter(1)


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"type {type(obj).__name__} is not JSON serializable")


def _has_non_finite(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a NaN or infinite float (orjson would write ``null``)."""
    if depth > 255:
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v, depth + 1) for v in value)
    if isinstance(value, BaseModel):
        return _has_non_finite(value.model_dump(mode="json"), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_has_non_finite(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    return False


def encode(key: str, value: Any, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> bytes:
    """Encode ``value`` for storage under ``key``.

    Raises:
        SerializationError: ``value`` is not a JSON document (or holds NaN/Infinity).
        ValueTooLargeError: the encoding is longer than ``max_bytes``.
    """
    try:
        data = _dumps(value, default=_default)
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise SerializationError(
            f"cannot store the value of key {key!r} as JSON: {exc}", key=key, operation="encode"
        ) from exc
    # NaN and +-Infinity encode as null; look for them only when null appears at all.
    if b"null" in data and _has_non_finite(value):
        raise SerializationError(
            f"cannot store the value of key {key!r}: NaN and Infinity are not JSON",
            key=key,
            operation="encode",
        )
    if len(data) > max_bytes:
        raise ValueTooLargeError(
            f"the value of key {key!r} is {len(data)} bytes encoded; the limit is {max_bytes}",
            key=key,
            operation="encode",
        )
    return data


def encode_rows(rows: list[tuple[str, Any, int | None]], max_bytes: int) -> list[tuple[str, bytes, int | None]]:
    """`encode` every value of ``(key, value, ttl_ms)`` rows: the same checks, made on the whole batch.

    One pass of orjson, then one look at all the bytes for ``null`` (where a NaN or an
    infinity could hide) and one length sum; only a batch that trips a check is looked at
    value by value, which raises `encode`'s own error naming the key.
    """
    try:
        out = [(key, _dumps(value, default=_default), ms) for key, value, ms in rows]
    except TypeError:
        out = [(key, encode(key, value, max_bytes), ms) for key, value, ms in rows]  # raises, naming the key
    joined = b"".join(map(_second, out))
    if len(joined) > max_bytes or b"null" in joined:
        for (key, value, _), (_, data, _) in zip(rows, out, strict=True):
            if len(data) > max_bytes or (b"null" in data and _has_non_finite(value)):
                encode(key, value, max_bytes)  # raises its error, naming the key
    return out


def decode(data: bytes | bytearray | memoryview | str, key: str = "") -> Any:
    """Decode stored bytes back into a value."""
    try:
        return _loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(
            f"the stored value of key {key!r} is not valid JSON: {exc}", key=key, operation="decode"
        ) from exc
