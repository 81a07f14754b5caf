"""List index arithmetic (Redis ``LRANGE``/``LTRIM``), I/O-free and shared by every backend."""

from __future__ import annotations

import operator

__all__ = ["check_index", "lrange_bounds"]


def lrange_bounds(length: int, start: int, end: int) -> tuple[int, int]:
    """Redis ``LRANGE``/``LTRIM`` index arithmetic: the half-open ``[lo, hi)`` slice of a list of ``length``.

    ``end`` is inclusive, negatives count from the tail, out-of-range clamps; an
    empty selection is ``(0, 0)``.
    """
    if start.__class__ is not int or end.__class__ is not int:
        start, end = check_index(start), check_index(end)
    if start < 0:
        start = max(length + start, 0)
    if end < 0:
        end += length
    elif end >= length:
        end = length - 1
    if start > end or start >= length:
        return 0, 0
    return start, end + 1


def check_index(value: object) -> int:
    """``value`` as a list index; `TypeError` for a bool or anything that is not an integer."""
    if value.__class__ is int:
        return value
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"list indexes must be int, not {type(value).__name__}")
    return operator.index(value)
