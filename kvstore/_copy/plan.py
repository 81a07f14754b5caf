"""Copy bookkeeping shared by the async and sync copiers: stats and the resumable checkpoint file."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kvstore.errors import ConfigError

__all__ = ["CopyCheckpoint", "CopyStats", "VerifyReport", "fingerprint"]


@dataclass
class CopyStats:
    """What one run of a copy moved (a resumed run counts only its own work)."""

    keys: int = 0
    values: int = 0
    lists: int = 0
    items: int = 0
    vanished: int = 0  # expired or deleted between listing and reading
    resumed: bool = False  # continued an interrupted run's checkpoint
    resumed_from: int = 0  # keys already done by the interrupted run


@dataclass
class VerifyReport:
    """The comparison of source and target after a copy."""

    keys: int = 0
    values: int = 0
    lists: int = 0
    items: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every key present in the source holds the same value or list in the target."""
        return not self.mismatches


def fingerprint(*parts: str) -> str:
    """A short, secret-free id of a copy job (hash of its redacted endpoints and options)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


class CopyCheckpoint:
    """A small JSON file recording how far a copy got, written atomically after each step.

    Keys are copied in sorted order, so "every key up to ``after``" plus the list
    in progress (``partial``) describes the progress exactly.
    """

    def __init__(self, path: str | os.PathLike[str], job: str) -> None:
        self.path = Path(path)
        self.job = job
        self.after: str | None = None
        self.partial: str | None = None

    def load(self) -> bool:
        """Read the file if it exists; ``True`` when resuming."""
        try:
            data: dict[str, Any] = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return False
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the copy checkpoint {str(self.path)!r}: {exc}") from exc
        if data.get("job") != self.job:
            raise ConfigError(
                f"the checkpoint {str(self.path)!r} belongs to another copy; pass --restart or another --checkpoint"
            )
        self.after = data.get("after")
        self.partial = data.get("partial")
        return True

    def save(self, after: str | None, partial: str | None) -> None:
        """Record progress (atomic rename: a crash leaves the old or the new file, never half of one)."""
        self.after, self.partial = after, partial
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {"job": self.job, "after": after, "partial": partial}
        tmp.write_bytes(orjson.dumps(payload))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Delete the file (the copy finished)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
