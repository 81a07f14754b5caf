"""Which primary a SQLite fallback file named in the config serves (DESIGN.md §8: one primary,
one fallback store).

A fallback named by its type lives in the primary identity's own state directory, so it
can serve no other. A fallback given as a full config (``{type: sqlite, path: ...}``) is a
file the user chose, and two tiers may name the same one: tenants told apart by their key
prefix stay apart in it (the fallback inherits the prefix), but tenants told apart by
table prefix, schema, database or host would read each other's outage data. So the first
primary to open such a file claims it in ``<path>.owner`` (0600, its identity and label,
never a password), and a tier of another primary refuses it: at connect with a
`ConfigError` naming both, or, should both first open it in the same outage, by moving on
to its next fallback.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from kvstore._core.identity import identity_label, tier_identity
from kvstore.errors import BackendUnavailableError, ConfigError

__all__ = ["check_owner", "claim"]


def _owner_path(fallback: Any) -> str:
    return f"{fallback.path}.owner"


def _read(path: str) -> dict[str, str] | None:
    """The claim in ``path``, or None when there is none (or it cannot be read: no claim to honour)."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("identity"), str) else None


def _refusal(primary: Any, fallback: Any, owner: dict[str, str]) -> str:
    return (
        f"the SQLite fallback {fallback.path!r} serves another primary ({owner.get('label', '?')}), not "
        f"{identity_label(primary)}: one fallback file serves one primary (their outage data would mix). "
        f"Name a file of its own, or leave the path out to use the state directory; if {fallback.path!r} no "
        f"longer serves the other primary, delete it and {_owner_path(fallback)!r}"
    )


def check_owner(primary: Any, fallback: Any) -> None:
    """At connect: `ConfigError` when ``fallback``'s file is claimed by another primary (reads only)."""
    owner = _read(_owner_path(fallback))
    if owner is not None and owner["identity"] != tier_identity(primary):
        raise ConfigError(_refusal(primary, fallback, owner))


def claim(primary: Any, fallback: Any) -> None:
    """Before opening ``fallback``'s file: claim it for ``primary``, or raise `BackendUnavailableError`
    (so the chain moves on) when another primary claimed it first."""
    path = _owner_path(fallback)
    identity = tier_identity(primary)
    text = json.dumps({"identity": identity, "label": identity_label(primary)})
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        owner = _read(path)
        if owner is None or owner["identity"] == identity:
            return  # ours (another process of this primary), or unreadable: nothing to honour
        raise BackendUnavailableError(_refusal(primary, fallback, owner), operation="connect") from None
    except OSError:
        return  # a directory we cannot write: opening the fallback itself will say so
    try:
        os.write(fd, text.encode())
    except OSError:  # a full disk: an empty claim reads as none, as if never written
        with contextlib.suppress(OSError):
            os.unlink(path)
    finally:
        os.close(fd)
