"""Idempotency ids of list writes (DESIGN.md §8a): validation and the retention window, I/O-free."""

from __future__ import annotations

from kvstore._core.keys import text_problem

__all__ = ["DEFAULT_IDEMPOTENCY_WINDOW", "MAX_ID_CHARS", "validate_idempotency_id", "validate_window"]

#: Seconds an applied id is remembered by default (one day).
DEFAULT_IDEMPOTENCY_WINDOW = 24 * 3600.0
#: Longest id accepted, in characters.
MAX_ID_CHARS = 200


def validate_idempotency_id(idempotency_id: str | None) -> str | None:
    """``idempotency_id`` if valid (or ``None``); else `ValueError`, before any I/O.

    Valid: a non-empty ``str`` of at most 200 characters with no NUL and no lone
    surrogate (every backend must be able to store it as text).
    """
    if idempotency_id is None:
        return None
    if idempotency_id.__class__ is not str:
        if not isinstance(idempotency_id, str):
            raise ValueError(f"idempotency_id must be a str, not {type(idempotency_id).__name__}")
        idempotency_id = str(idempotency_id)  # a str subclass: store the plain text
    if not idempotency_id or len(idempotency_id) > MAX_ID_CHARS:
        raise ValueError(f"idempotency_id must be 1-{MAX_ID_CHARS} characters, not {len(idempotency_id)}")
    problem = text_problem(idempotency_id)
    if problem is not None:
        raise ValueError(f"idempotency_id {problem}")
    return idempotency_id


#: The longest idempotency window: 100 years (PostgreSQL computes ``now() - window``, which
#: leaves the timestamp range past about 6,700 years; an infinite window overflows its interval).
MAX_WINDOW = 100 * 365.25 * 86400


def validate_window(window: float) -> float:
    """The retention window in seconds; it must be > 0 and at most `MAX_WINDOW` (100 years)."""
    if not 0 < window <= MAX_WINDOW:
        raise ValueError(f"idempotency_window must be > 0 seconds and at most 100 years, not {window!r}")
    return float(window)
