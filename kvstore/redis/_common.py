"""I/O-free parts of the Redis backend: client options, SCAN patterns, error translation.

Imported only by ``kvstore.redis._store_async`` / ``kvstore.redis._store`` after redis-py
itself was imported, so ``import kvstore`` never loads redis.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    ClusterError,
    MaxConnectionsError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from kvstore._core.keys import compile_glob, escape_glob, is_match_all, widen_glob
from kvstore.config import _split_password
from kvstore.errors import BackendBusyError, BackendUnavailableError, KVStoreError, WrongTypeError

__all__ = [
    "DRIVER_ERRORS",
    "abandon",
    "after_fork_in_child",
    "clear_match",
    "client_options",
    "is_busy",
    "key_filter",
    "no_retry",
    "normalize_url",
    "redact_url",
    "scan_match",
    "translate",
]

#: Every exception a redis-py call can raise that `translate` maps (one ``except`` clause).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


# --- fork safety (DESIGN.md §8) ---------------------------------------------------------

_forkables: weakref.WeakSet[Any] = weakref.WeakSet()


def after_fork_in_child(obj: Any) -> None:
    """Call ``obj._after_fork_in_child()`` in every process forked while ``obj`` is alive.

    The hot path pays nothing: the child's stores swap their client out once, right after fork.
    """
    _forkables.add(obj)


def _reset_in_child() -> None:
    for obj in list(_forkables):
        # One store failing to reset must not leave the others on the parent's sockets.
        with contextlib.suppress(Exception):
            obj._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_in_child)


def abandon(obj: object) -> None:
    """Keep ``obj``, inherited from the parent process, alive and untouched for good.

    A collected redis-py asyncio connection closes its transport (and warns); in a child
    that would act on a socket the parent still uses. The process's exit releases the
    child's copies of the descriptors.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def no_retry(retry_cls: Callable[..., Any]) -> Any:
    """A redis-py ``Retry`` that never resends a command.

    redis-py retries ``ConnectionError``/``TimeoutError`` three times by default,
    which would resend a write whose reply was lost. kvstore decides what is
    retried (DESIGN.md §8a), so the driver's own retries are off.
    """
    return retry_cls(NoBackoff(), 0)


def normalize_url(url: str) -> tuple[str, str | None, bool]:
    """Split a Redis URL into (url redis-py accepts, password, cluster?).

    ``redis+cluster://`` / ``rediss+cluster://`` select the cluster client; the
    password is moved out so it never sits in an attribute that could be printed.
    """
    bare, password = _split_password(url)
    parts = urlsplit(bare)
    cluster = parts.scheme.endswith("+cluster")
    if cluster:
        bare = urlunsplit(parts._replace(scheme=parts.scheme.removesuffix("+cluster")))
    return bare, password, cluster


def redact_url(url: str | None) -> str | None:
    """``url`` with any password replaced by ``***`` (for repr and messages)."""
    if url is None:
        return None
    bare, password = _split_password(url)
    if password is None:
        return bare
    parts = urlsplit(bare)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def client_options(
    *,
    username: str | None,
    password: str | None,
    tls: bool,
    tls_ca_file: str | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    tls_verify: bool,
    max_connections: int,
    socket_timeout: float,
    socket_connect_timeout: float,
    health_check_interval: float,
    from_url: bool = False,
) -> dict[str, Any]:
    """Keyword arguments shared by ``Redis`` and ``RedisCluster`` (URL values take precedence)."""
    options: dict[str, Any] = {
        "username": username,
        "password": password,
        "max_connections": max_connections,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "health_check_interval": health_check_interval,
        # Values are orjson bytes: no decoding on the way out.
        "decode_responses": False,
    }
    if tls:
        # With a rediss:// URL redis-py picks the SSL connection class itself and
        # rejects ``ssl=``; with host/port fields ``ssl=True`` selects it.
        if not from_url:
            options["ssl"] = True
        options.update(
            ssl_ca_certs=tls_ca_file,
            ssl_certfile=tls_cert_file,
            ssl_keyfile=tls_key_file,
            ssl_cert_reqs="required" if tls_verify else "none",
            ssl_check_hostname=tls_verify,
        )
    return options


# --- key patterns -------------------------------------------------------------------


#: Ends a non-empty prefix in the stored key. No key may contain NUL, so
#: ``prefix + NUL + key`` can never be read as another prefix's key: stores with
#: prefixes ``a:`` and ``a:b:`` (or ``""`` and ``other:``) share no stored key.
NAMESPACE_END = "\x00"


def namespace(prefix: str) -> str:
    """What a store with ``prefix`` puts before each key in Redis (``""`` for no prefix)."""
    return prefix + NAMESPACE_END if prefix else ""


def scan_match(prefix: str, pattern: str) -> str:
    """The ``SCAN MATCH`` glob for ``pattern`` under ``prefix``.

    The namespace is escaped so its glob characters match literally (``a*:`` never
    matches ``a:``'s keys). The pattern is widened to a byte-safe superset,
    because Redis matches bytes and kvstore matches characters; `key_filter`
    then keeps exactly what the reference matcher accepts.
    """
    return escape_glob(namespace(prefix)) + widen_glob(pattern)


def clear_match(prefix: str) -> str:
    """The ``SCAN MATCH`` glob for every key of ``prefix``."""
    return escape_glob(namespace(prefix)) + "*"


def key_filter(prefix: str, pattern: str) -> Callable[[bytes | str], str | None]:
    """Map a raw key from ``SCAN`` to the store's key if it matches ``pattern``, else ``None``.

    Keys holding a NUL belong to a prefixed namespace; the store without a prefix
    never reports them.
    """
    raw_ns = namespace(prefix).encode("utf-8")
    cut = len(raw_ns)
    matches = compile_glob(pattern)
    match_all = is_match_all(pattern)

    def accept(raw: bytes | str) -> str | None:
        if isinstance(raw, str):  # a ready client built with decode_responses=True
            raw = raw.encode("utf-8", "surrogateescape")
        if not raw.startswith(raw_ns) or len(raw) == cut or b"\x00" in raw[cut:]:
            return None
        try:
            key = raw[cut:].decode("utf-8")
        except UnicodeDecodeError:
            return None  # not written by kvstore: kvstore keys are valid UTF-8
        if match_all or matches(key):
            return key
        return None

    return accept


# --- errors -------------------------------------------------------------------------


#: What redis-py says when the server refuses a new client (``maxclients``) and when its
#: ``BlockingConnectionPool`` timed out waiting for a free connection.
_BUSY_MESSAGES = ("max number of clients reached", "No connection available")


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` means "up but saturated" (DESIGN.md §8), not an outage.

    The pool is exhausted (``MaxConnectionsError``; the blocking pool's wait ran out) or the
    server refused a new client because it reached ``maxclients``. A refused, reset or
    timed-out command is unavailability and is not matched here.
    """
    if isinstance(exc, MaxConnectionsError):
        return True
    if isinstance(exc, RedisConnectionError):
        message = str(exc)
        return any(busy in message for busy in _BUSY_MESSAGES)
    return False


def translate(
    exc: BaseException,
    *,
    operation: str,
    key: str | None = None,
    secret: str | None = None,
) -> KVStoreError:
    """The kvstore error for a redis-py (or socket) exception; most specific first.

    ``secret`` (the password) is scrubbed from the message in case a driver ever
    echoes it.
    """
    text = f"{type(exc).__name__}: {exc}"
    if secret:
        text = text.replace(secret, "***")
    context: dict[str, Any] = {"backend": "redis", "key": key, "operation": operation}
    if is_busy(exc):
        return BackendBusyError(
            f"Redis is busy: no connection for {operation} ({text}); retry later, "
            "or raise max_connections / pool_timeout (or the server's maxclients)",
            **context,
        )
    if isinstance(exc, AuthenticationError | AuthorizationError | AuthenticationWrongNumberOfArgsError):
        return BackendUnavailableError(
            f"Redis refused the credentials during {operation} ({type(exc).__name__}); "
            "check the username and password of the cache config",
            **context,
        )
    if isinstance(exc, NoPermissionError):
        return BackendUnavailableError(
            f"the Redis user may not run {operation} ({text}); grant it the command in the ACL", **context
        )
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return BackendUnavailableError(
            f"Redis did not answer {operation} within the socket timeout ({text})", **context
        )
    if isinstance(exc, RedisConnectionError | OSError):
        return BackendUnavailableError(f"cannot reach Redis for {operation} ({text})", **context)
    if isinstance(exc, ClusterError | TryAgainError | ReadOnlyError | RedisClusterException):
        return BackendUnavailableError(f"the Redis cluster cannot serve {operation} now ({text})", **context)
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
        return WrongTypeError(
            f"key {key!r} does not hold a kvstore value ({text})" if key is not None else f"{operation}: {text}",
            **context,
        )
    if isinstance(exc, RedisError):
        return KVStoreError(f"Redis failed {operation} ({text})", **context)
    return KVStoreError(f"Redis failed {operation} ({text})", **context)
