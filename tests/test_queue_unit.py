"""The queue's I/O-free rules: backoff with jitter, names, the lease-lost error."""

from __future__ import annotations

import pickle
import random

import pytest

from kvstore import InvalidKeyError, KVStoreError
from kvstore.queue import LeaseLostError, QueueStats
from kvstore.queue._job import backoff_delay, validate_lease, validate_name


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    """Attempt n waits base * 2**(n-1), capped, times a factor drawn from [0.5, 1)."""
    rng = random.Random(7)
    for attempt, expected in ((1, 1.0), (2, 2.0), (3, 4.0), (8, 128.0), (20, 300.0), (10_000, 300.0)):
        delays = [backoff_delay(attempt, 1.0, 300.0, rng) for _ in range(200)]
        assert all(0.5 * expected <= d < expected for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.2 * expected  # jittered, not one value


def test_names_and_leases_are_validated() -> None:
    """Queue names are 1-200 characters of storable text; leases are positive seconds."""
    assert validate_name("emails:high") == "emails:high"
    for bad in ("", "x" * 201, "a\x00", "\ud800", None, 3):
        with pytest.raises(InvalidKeyError):
            validate_name(bad)
    for bad_lease in (0, -1, float("inf"), float("nan"), True, "5", 86401):
        with pytest.raises(ValueError, match="lease"):
            validate_lease(bad_lease)


def test_lease_lost_error_keeps_its_context_across_processes() -> None:
    """LeaseLostError is a KVStoreError and pickles with its job id (it crosses process pools)."""
    exc = LeaseLostError("lost", job_id=42, backend="postgres", operation="ack")
    again = pickle.loads(pickle.dumps(exc))
    assert isinstance(again, KVStoreError)
    assert (again.job_id, again.backend, again.operation, str(again)) == (42, "postgres", "ack", "lost")


def test_stats_as_dict() -> None:
    """QueueStats reads as a dict in a fixed order (the CLI prints it)."""
    assert list(QueueStats(ready=1, dead=2).as_dict().items()) == [
        ("ready", 1),
        ("delayed", 0),
        ("running", 0),
        ("failed", 0),
        ("dead", 2),
        ("done", 0),
    ]
