"""The circuit breaker of a tier: a few states on a monotonic clock (I/O-free)."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker", "Route"]


class BreakerState(enum.Enum):
    """CLOSED: the primary serves. OPEN: the fallback serves. HALF_OPEN: one probe is under way."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Route(enum.Enum):
    """Where the breaker sends one call."""

    PRIMARY = "primary"
    PROBE = "probe"  # this caller probes the primary; everyone else keeps using the fallback
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When to open and when to probe.

    Attributes:
        failure_threshold: Consecutive unavailability errors that open the breaker.
        probe_interval: Seconds the breaker stays open before one call probes the primary.
    """

    failure_threshold: int = 3
    probe_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if not self.probe_interval > 0:
            raise ValueError("probe_interval must be > 0")


class CircuitBreaker:
    """Counts consecutive unavailability of a primary and decides where calls go.

    Only unavailability is reported to it (a wrong-type or validation error says
    the primary is up). At most one probe runs while half-open; its result closes
    or re-opens the breaker. Thread-safe.
    """

    def __init__(self, policy: BreakerPolicy | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.last_error: str | None = None
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._state.value} failures={self._failures}>"

    def route(self) -> Route:
        """Where the next call goes; `Route.PROBE` is handed to one caller at a time."""
        state = self._state
        if state is BreakerState.CLOSED:
            return Route.PRIMARY
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return Route.PRIMARY
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.policy.probe_interval:
                self._state = BreakerState.HALF_OPEN
                return Route.PROBE
            return Route.FALLBACK

    def success(self, route: Route) -> None:
        """The primary answered (a call or the probe)."""
        if route is Route.PRIMARY and self._failures == 0:
            return
        with self._lock:
            self._failures = 0
            if route is Route.PROBE:
                self._state = BreakerState.CLOSED
                self.last_error = None

    def failure(self, route: Route, error: str) -> bool:
        """The primary was unavailable; returns whether the breaker is (now) open."""
        with self._lock:
            self.last_error = error
            if route is Route.PROBE:
                self._open()
                return True
            if self._state is not BreakerState.CLOSED:
                return True
            self._failures += 1
            if self._failures >= self.policy.failure_threshold:
                self._open()
                return True
            return False

    def trip(self, error: str) -> None:
        """Open at once (e.g. the primary was never reachable at connect)."""
        with self._lock:
            self.last_error = error
            self._open()

    def _open(self) -> None:
        if self._state is not BreakerState.OPEN:
            self.opened_count += 1
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
