"""Test-wide setup: hypothesis profiles and the server fixtures of each backend.

Server fixtures live in ``tests/fixtures_<backend>.py`` and are loaded as plugins.
With ``KVSTORE_TEST_REQUIRE_SERVERS=1`` (set by ``.ci/run``) a server that can be
neither found nor started fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = sorted(f"tests.{p.stem}" for p in Path(__file__).parent.glob("fixtures_*.py"))

settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

REQUIRE_SERVERS = os.environ.get("KVSTORE_TEST_REQUIRE_SERVERS") == "1"


def unavailable(reason: str) -> None:
    """Skip a test whose server is missing, or fail it when servers are required (CI)."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (KVSTORE_TEST_REQUIRE_SERVERS=1: a missing server is a failure)")
    pytest.skip(reason)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection built (thousands of test items) out of the collector's sight.

    A full (generation 2) collection scans every tracked object: after collecting the whole
    suite, 367,000 of them, one took 260-280 ms. One that fell inside a timed section showed
    up as a "slow" call: a frozen-server call measured at 840 ms against its 500 ms deadline
    in CI (the watchdog's cut waiting for the GIL). Frozen objects are never scanned (nor
    freed: they live as long as the session anyway).
    """
    gc.collect()
    gc.freeze()
