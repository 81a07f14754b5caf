"""The public surface: exports, lazy driver imports, install hints."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kvstore
from kvstore.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidKeyError,
    KVStoreError,
    MissingDependencyError,
    SerializationError,
    ValueTooLargeError,
    WatchRestartError,
    WrongTypeError,
)


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, every name resolves, and every public class is listed."""
    assert kvstore.__all__ == sorted(kvstore.__all__)
    public = {
        name
        for name, value in vars(kvstore).items()
        if not name.startswith("_") and isinstance(value, type) and value.__module__.startswith("kvstore")
    }
    assert public <= set(kvstore.__all__)


def test_import_kvstore_imports_no_driver() -> None:
    """`import kvstore` (and building the default config) loads neither redis, psycopg nor apsw."""
    code = (
        "import sys, kvstore; kvstore.StorageConfig(); kvstore.MemoryCache(); "
        "print([m for m in ('redis', 'psycopg', 'psycopg_pool', 'apsw') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_error_hierarchy() -> None:
    """Errors subclass KVStoreError and the matching builtins (DESIGN.md §9)."""
    assert issubclass(ConfigError, KVStoreError)
    assert issubclass(MissingDependencyError, ConfigError)
    assert issubclass(MissingDependencyError, ImportError)
    assert issubclass(BackendUnavailableError, KVStoreError)
    assert issubclass(WatchRestartError, BackendUnavailableError)  # an existing `except` still catches it
    assert issubclass(InvalidKeyError, ValueError)
    assert issubclass(WrongTypeError, TypeError)
    assert issubclass(SerializationError, ValueError)
    assert issubclass(ValueTooLargeError, ValueError)


def test_missing_dependency_message_names_the_extra() -> None:
    """The install hint is exactly the pip command to run."""
    error = MissingDependencyError("redis", "redis", "redis")
    assert 'pip install "kvstore-sdk[redis]"' in str(error)
    assert error.extra == "redis"


def test_errors_survive_pickling_across_processes() -> None:
    """Errors keep their context attributes through multiprocessing's transport."""
    error = WrongTypeError("boom", backend="memory", key="k", operation="get")
    rebuilt = error.__reduce__()
    clone = rebuilt[0](*rebuilt[1])  # type: ignore[operator]  # the reduce protocol's callable
    assert (clone.backend, clone.key, clone.operation) == ("memory", "k", "get")


def test_unknown_attribute() -> None:
    """A missing name raises AttributeError."""
    with pytest.raises(AttributeError):
        kvstore.NoSuchThing  # noqa: B018  # the point of the test
