"""TTL arithmetic shared by every backend: validation and millisecond rounding."""

from __future__ import annotations

import math
from datetime import timedelta

__all__ = ["MAX_TTL_SECONDS", "TTL", "ttl_ms"]

TTL = float | int | timedelta
#: About 317 years: every backend (PostgreSQL timestamps, SQLite integers, Redis PX) can store it.
MAX_TTL_SECONDS = 1e10


def ttl_ms(ttl: TTL | None) -> int | None:
    """Validate a TTL and return it in whole milliseconds (rounded up), or ``None``.

    Raises:
        TypeError: ``ttl`` is not a number or ``timedelta``.
        ValueError: ``ttl`` is not a finite number > 0.
    """
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds (float) or a timedelta, not {type(ttl).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    if seconds > MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be at most {MAX_TTL_SECONDS:.0e} seconds (use None for no expiry), got {ttl!r}")
    return max(1, math.ceil(seconds * 1000 - 1e-6))
