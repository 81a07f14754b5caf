"""The stand-in a store puts in place of its client after close (I/O-free, shared)."""

from __future__ import annotations

from typing import NoReturn

from kvstore.errors import ClosedError

__all__ = ["Closed"]


class Closed:
    """Every attribute access raises `ClosedError`, so a closed store needs no per-call flag."""

    def __init__(self, owner: str, backend: str) -> None:
        self._owner = owner
        self._backend = backend

    def __getattr__(self, name: str) -> NoReturn:
        raise ClosedError(f"{self._owner} is closed", backend=self._backend, operation=name)
