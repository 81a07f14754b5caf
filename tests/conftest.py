"""Test-wide setup: hypothesis profiles and the server fixtures of each backend.

Server fixtures live in ``tests/fixtures_<backend>.py`` and are loaded as plugins.
With ``KVSTORE_TEST_REQUIRE_SERVERS=1`` (set by ``.ci/run``) a server that can be
neither found nor started fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

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
