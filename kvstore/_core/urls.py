"""Store URLs for the command line: ``redis://``, ``postgresql://``, ``sqlite:///path``, ``memory://``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kvstore._registry import backend_for_scheme, lookup
from kvstore.config import _describe, _split_password, _Url
from kvstore.errors import ConfigError

__all__ = ["config_from_url", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or ``?password=``) shown as ``***``: safe to print."""
    try:
        bare, password = _split_password(url)
        if password is None:
            return bare
        parsed = _Url(bare)
        return f"{bare[: parsed.start]}{parsed.user}:***@{bare[parsed.host_end - len(parsed.hosts) :]}"
    except ValueError:
        # Not a URL we can read: shown only when it cannot hold a password.
        return url if "@" not in url and "password" not in url.lower() else "<unparsable URL>"


def config_from_url(url: str, *, key_prefix: str = "", connect_timeout: float | None = None) -> tuple[str, Any]:
    """The tier (``"cache"`` or ``"database"``) and config model a store URL selects.

    ``memory://`` is a memory database (``memory://cache`` a memory cache);
    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    backend = backend_for_scheme(scheme)
    if backend is None:
        raise ConfigError(
            f"cannot tell the backend of {redact_url(url)!r}: use redis://, rediss://, postgresql://, "
            "sqlite:///path or memory://"
        )
    options: dict[str, Any] = {"key_prefix": key_prefix}
    if connect_timeout is not None:
        options["connect_timeout"] = connect_timeout
    try:
        if backend.type == "memory":  # memory:// has nothing to connect to: the URL names the tier
            if url[len("memory://") :].strip("/") == "cache":
                backend = lookup("cache", "memory")
            return backend.tier, backend.config_model()(**options)
        return backend.tier, backend.config_model()(url=url, **options)
    except ValidationError as exc:
        message = _describe(exc).replace("invalid kvstore config", f"invalid URL {redact_url(url)!r}")
        raise ConfigError(message) from None
