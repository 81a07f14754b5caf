"""Fallback chains: which backends a tier tries, in order (I/O-free)."""

from __future__ import annotations

from typing import Any

from kvstore._registry import lookup

__all__ = ["default_chain", "fallback_chain"]


def default_chain(tier: str, type_: str) -> tuple[str, ...]:
    """Where backend ``type_`` falls back to when no explicit ``fallback`` is configured."""
    return lookup(tier, type_).fallback


def fallback_chain(tier: str, config: Any, *, fallback_path: str | None = None) -> list[Any]:
    """The configs a tier tries in order: ``config`` first, then its fallbacks.

    A fallback inherits the primary's ``key_prefix``, ``max_value_bytes`` and
    ``connect_timeout`` unless its own config sets them: two tenants told apart by
    their key prefix stay apart in a fallback file they name alike, and a value the
    primary takes is not refused by its fallback. A SQLite fallback given as a type
    name lives at ``fallback_path`` (the primary identity's own file under the state
    directory), never at the embedded default's ``./.kvstore/kvstore.db``.
    """
    entries = config.fallback if config.fallback is not None else default_chain(tier, config.type)
    chain = [config]
    inherited = {
        "key_prefix": config.key_prefix,
        "max_value_bytes": config.max_value_bytes,
        "connect_timeout": config.connect_timeout,
    }
    for entry in entries:
        if isinstance(entry, str):
            options = dict(inherited)
            if entry == "sqlite":
                if fallback_path is None:
                    raise ValueError("a SQLite fallback needs the path of the primary's state directory")
                options["path"] = fallback_path
            entry = lookup(tier, entry).config_model()(**options)
        else:
            unset = {name: value for name, value in inherited.items() if name not in entry.model_fields_set}
            if unset:
                entry = entry.model_copy(update=unset)
        chain.append(entry)
    return chain
