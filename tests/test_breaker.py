"""The circuit breaker's states, on a fake clock."""

from __future__ import annotations

import threading

import pytest

from kvstore._resilience.breaker import BreakerPolicy, BreakerState, CircuitBreaker, Route
from tests.clock import FakeClock


def test_opens_after_threshold_consecutive_failures() -> None:
    """Only `failure_threshold` consecutive failures open it; a success in between resets the count."""
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3), clock=FakeClock())
    assert breaker.route() is Route.PRIMARY
    assert not breaker.failure(Route.PRIMARY, "refused")
    assert not breaker.failure(Route.PRIMARY, "refused")
    breaker.success(Route.PRIMARY)
    assert not breaker.failure(Route.PRIMARY, "refused")
    assert not breaker.failure(Route.PRIMARY, "refused")
    assert breaker.failure(Route.PRIMARY, "refused")
    assert breaker.state is BreakerState.OPEN
    assert breaker.route() is Route.FALLBACK


def test_one_probe_at_a_time_after_the_interval() -> None:
    """After probe_interval exactly one caller gets PROBE; the others keep the fallback."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=2.0), clock=clock)
    breaker.failure(Route.PRIMARY, "down")
    clock.advance(1.9)
    assert breaker.route() is Route.FALLBACK
    clock.advance(0.2)
    assert breaker.route() is Route.PROBE
    assert breaker.route() is Route.FALLBACK
    assert breaker.state is BreakerState.HALF_OPEN


def test_failed_probe_reopens_and_waits_again() -> None:
    """A failed probe re-opens the breaker for another full interval."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=1.0), clock=clock)
    breaker.failure(Route.PRIMARY, "down")
    clock.advance(1.0)
    assert breaker.route() is Route.PROBE
    breaker.failure(Route.PROBE, "still down")
    assert breaker.route() is Route.FALLBACK
    clock.advance(1.0)
    assert breaker.route() is Route.PROBE
    breaker.success(Route.PROBE)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.route() is Route.PRIMARY
    assert breaker.last_error is None


def test_concurrent_routes_hand_out_a_single_probe() -> None:
    """Under 16 threads racing, exactly one gets the probe."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=1.0), clock=clock)
    breaker.trip("down")
    clock.advance(1.0)
    routes: list[Route] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        routes.append(breaker.route())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert routes.count(Route.PROBE) == 1


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"probe_interval": 0}])
def test_policy_validation(kwargs: dict[str, float]) -> None:
    """Nonsense policies are rejected."""
    with pytest.raises(ValueError):
        BreakerPolicy(**kwargs)  # type: ignore[arg-type]  # the point of the test
