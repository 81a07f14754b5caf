"""When a call is retried: one policy type for every retry kvstore makes (DESIGN.md §8a).

Only transient unavailability is retried (`BackendUnavailableError`, never
`BackendBusyError`: a busy server answered), within an attempt count and a
deadline, with exponential backoff and jitter. The policies are values; tenacity
runs them (``AsyncRetrying`` / ``Retrying`` take the same `RetryPolicy.options`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tenacity import (
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from kvstore.errors import BackendBusyError, BackendUnavailableError

__all__ = ["CONNECT", "IDEMPOTENT_CALL", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry an unavailable backend.

    Attributes:
        attempts: Tries in all (the first included).
        deadline: Seconds after which no new try starts.
        backoff: The first wait in seconds; each next wait doubles, up to ``max_wait``.
        max_wait: The longest wait between two tries.
        jitter: Up to this many seconds are added to each wait at random.
        retry_busy: Whether `BackendBusyError` (the server answered: pool or lock busy) is
            retried too; a call never is, opening a backend is.
    """

    attempts: int
    deadline: float
    backoff: float
    max_wait: float
    jitter: float
    retry_busy: bool = False

    def within(self, *, attempts: int | None = None, deadline: float | None = None) -> RetryPolicy:
        """This policy with another attempt count or deadline."""
        changes: dict[str, Any] = {}
        if attempts is not None:
            changes["attempts"] = attempts
        if deadline is not None:
            changes["deadline"] = deadline
        return dataclasses.replace(self, **changes)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of tenacity's ``Retrying`` / ``AsyncRetrying`` for this policy."""
        return {
            "stop": stop_after_attempt(self.attempts) | stop_after_delay(self.deadline),
            "wait": wait_exponential(multiplier=self.backoff, max=self.max_wait) + wait_random(0, self.jitter),
            "retry": retry_if_exception_type(BackendUnavailableError)
            if self.retry_busy
            else retry_if_exception_type(BackendUnavailableError) & retry_if_not_exception_type(BackendBusyError),
            "reraise": True,
        }


#: Opening a backend: three tries within the tier's ``connect_timeout`` (set per call).
CONNECT = RetryPolicy(attempts=3, deadline=2.0, backoff=0.05, max_wait=0.5, jitter=0.05, retry_busy=True)
#: An idempotent call on a primary that just failed: quick, short retries.
IDEMPOTENT_CALL = RetryPolicy(attempts=2, deadline=0.25, backoff=0.02, max_wait=0.2, jitter=0.02)
