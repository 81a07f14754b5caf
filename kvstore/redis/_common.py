"""I/O-free parts of the Redis backend: client options, SCAN patterns, the error map.

Imported only by ``kvstore.redis._store_async`` / ``kvstore.redis._store`` after redis-py
itself was imported, so ``import kvstore`` never loads redis.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    ClusterError,
    MaxConnectionsError,
    MovedError,
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

from kvstore._core.errormap import ErrorBoundary
from kvstore._core.keys import compile_glob, escape_glob, is_match_all, widen_glob
from kvstore.base_async import not_an_integer
from kvstore.config import SENTINEL_PORT, _sentinel_url, _split_password, _Url, parse_sentinels
from kvstore.errors import BackendBusyError, BackendUnavailableError, KVStoreError, WrongTypeError

__all__ = [
    "DRIVER_ERRORS",
    "ERROR_MAP",
    "SENTINEL_PORT",
    "ErrorMap",
    "RecentWrites",
    "clear_match",
    "client_options",
    "key_filter",
    "no_retry",
    "normalize_url",
    "parse_sentinel_url",
    "parse_sentinels",
    "replication_state",
    "ClusterView",
    "not_executed_while_moving",
    "scan_is_complete",
    "scan_order",
    "scan_match",
    "translate",
]


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


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int | None, str | None, str | None, bool]:
    """Read ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``.

    Returns (sentinels, service name, db or ``None``, user, password of the master,
    TLS?). The userinfo authenticates to the Redis master (and its replicas), as in
    redis-py's ``redis://`` URLs; the Sentinels' own password is the ``sentinel_password``
    field, never a URL part. ``rediss+sentinel://`` uses TLS towards both. Sentinel
    ports default to 26379.

    Raises:
        ValueError: the URL is not of that shape (the message quotes none of it).
    """
    bare, password = _split_password(url)
    parsed = _Url(bare)
    if parsed.scheme not in ("redis+sentinel", "rediss+sentinel"):
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    sentinels, service, db = _sentinel_url(bare)
    user = unquote(parsed.user) or None
    return sentinels, service, db, user, password, parsed.scheme.startswith("rediss")


def replication_state(info: bytes | str) -> tuple[str, str]:
    """``(role, master_replid)`` from the text of ``INFO replication``.

    A promoted replica (and a restarted server) takes a new replication id, so the
    pair tells a failover apart from a reconnect to the same master.
    """
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return fields.get("role", "").strip(), fields.get("master_replid", "").strip()


class RecentWrites:
    """The keys this store wrote in the last ``window`` seconds before its latest write.

    Redis replicates asynchronously: a master killed right after acknowledging a
    write may take it to the grave, and Sentinel then promotes a replica that still
    holds the key's previous value (or a deleted key). After a failover the store
    removes these keys from the new master before it serves anything from it, so
    such a write reads back as a miss, never as the older value (DESIGN.md §8: a
    cache miss is a legal answer, a stale value is not).

    The window is anchored at the latest write, not at the failover: a process idle
    for an hour before noticing the failover still knows what it wrote last. Past
    ``limit`` keys, or after a ``clear``, it stops listing keys and asks for the whole
    namespace instead (`everything`). Thread-safe (the sync store is shared by threads).
    """

    __slots__ = ("_everything_at", "_keys", "_latest", "_lock", "limit", "window")

    def __init__(self, window: float, limit: int = 100_000) -> None:
        self.window = window
        self.limit = limit
        self._keys: OrderedDict[str, float] = OrderedDict()
        self._latest = float("-inf")
        self._everything_at = float("-inf")
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self._add(key, time.monotonic())

    def add_many(self, keys: Iterable[str]) -> None:
        with self._lock:
            now = time.monotonic()
            for key in keys:
                self._add(key, now)

    def _add(self, key: str, now: float) -> None:
        self._latest = now
        keys = self._keys
        keys[key] = now
        keys.move_to_end(key)
        horizon = now - self.window
        while next(iter(keys.values())) < horizon:
            keys.popitem(last=False)
        if len(keys) > self.limit:
            self._keys.clear()
            self._everything_at = now

    def add_everything(self) -> None:
        """A write this list cannot name key by key (``clear``, or too many keys): the namespace."""
        with self._lock:
            self._keys.clear()
            self._everything_at = self._latest = time.monotonic()

    @property
    def everything(self) -> bool:
        """Whether the whole namespace must be invalidated."""
        return self._everything_at >= self._latest - self.window

    def snapshot(self) -> list[str]:
        """The keys to remove from a promoted master."""
        with self._lock:
            return list(self._keys)

    def forget_before(self, moment: float) -> None:
        """Drop what was recorded before ``moment`` (a failover handled it); later writes stay."""
        with self._lock:
            keys = self._keys
            while keys and next(iter(keys.values())) < moment:
                keys.popitem(last=False)
            if self._everything_at < moment:
                self._everything_at = float("-inf")


# --- Redis Cluster: listing keys while slots move ------------------------------------------
#
# redis-py's cluster ``scan_iter`` walks every master at once. While a slot migrates from
# A to B (``redis-cli --cluster reshard``), a key not yet reached on A may move to the part
# of B already walked: the listing misses a key that existed all along. kvstore walks the
# masters one after another instead, every migration's source before its target (a key
# only ever moves source -> target, so it is met on one of them), and reads each master's
# view of the slots before and after: a move the order did not foresee means walking again.


class ClusterView:
    """Which master serves which slots and which slots are migrating, from each master's own ``CLUSTER NODES``."""

    __slots__ = ("edges", "names", "ranges")

    def __init__(self, replies: dict[str, Any]) -> None:
        #: node id -> name (``host:port``) of each master asked.
        self.names: dict[str, str] = {}
        #: node id -> the slot ranges it claims.
        self.ranges: dict[str, tuple[tuple[int, int], ...]] = {}
        #: (source id, target id) of every migration in progress.
        self.edges: set[tuple[str, str]] = set()
        for name, reply in replies.items():
            entries = reply.values() if isinstance(reply, dict) else []
            me = next((e for e in entries if "myself" in str(e.get("flags", ""))), None)
            if me is None:
                continue
            node = str(me["node_id"])
            self.names[node] = name
            spans = []
            for span in me.get("slots", []):
                lo = int(span[0])
                spans.append((lo, int(span[-1]) if len(span) > 1 else lo))
            self.ranges[node] = tuple(sorted(spans))
            for move in me.get("migrations", []):
                peer = str(move["node_id"])
                self.edges.add((node, peer) if move["state"] == "migrating" else (peer, node))

    def owners(self) -> dict[int, str]:
        return {slot: node for node, spans in self.ranges.items() for lo, hi in spans for slot in range(lo, hi + 1)}


def scan_order(view: ClusterView, hints: set[tuple[str, str]]) -> list[str]:
    """The masters' names, every migration's source before its target (also for recently seen moves)."""
    nodes = sorted(view.names, key=lambda node: view.names[node])
    edges = {(a, b) for a, b in view.edges | hints if a in view.names and b in view.names and a != b}
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(nodes):
        ready = [n for n in nodes if n not in placed and not any(b == n and a not in placed for a, b in edges)]
        pick = ready[0] if ready else next(n for n in nodes if n not in placed)  # a cycle: any order
        order.append(pick)
        placed.add(pick)
    return [view.names[node] for node in order]


def scan_is_complete(before: ClusterView, after: ClusterView, order: list[str]) -> tuple[bool, set[tuple[str, str]]]:
    """Whether walking the masters in ``order`` met every key, and the moves seen (as hints for the next walk).

    Complete when the same masters were there before and after and every move that may
    have happened meanwhile (migrations in progress at either end, slots that changed
    master) went from a master walked earlier to one walked later.
    """
    moves = before.edges | after.edges
    if before.ranges != after.ranges:
        if set(before.ranges) != set(after.ranges):
            return False, moves
        was, now = before.owners(), after.owners()
        moves |= {(was[slot], now[slot]) for slot in was.keys() & now.keys() if was[slot] != now[slot]}
    if set(before.names.values()) != set(order) or before.names != after.names:
        return False, moves
    position = {name: i for i, name in enumerate(order)}
    for source, target in moves:
        if source not in before.names or target not in before.names:
            return False, moves
        if position[before.names[source]] > position[before.names[target]]:
            return False, moves
    return True, moves


def not_executed_while_moving(exc: BaseException) -> bool:
    """Whether a cluster command failed only because its slot is migrating, and was not executed.

    ``TRYAGAIN`` (a multi-key command on a slot half migrated), a redirection, or redis-py
    giving up after following redirections (``TTL exhausted``): the server ran nothing, so
    sending the command again once the slot settles is safe for every command.
    """
    if isinstance(exc, TryAgainError | AskError | MovedError):
        return True
    return isinstance(exc, ClusterError) and "TTL exhausted" in str(exc)


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
#
# One map, most specific first, read by one function (`translate`). The store reaches it
# through `ErrorMap` (``with self._errors("clear"):``) at every I/O site, except the five
# hot hooks (get, get_touch, set, mget, mset), which spell the same thing as a bare
# ``try/except DRIVER_ERRORS`` around their one command: a ``try`` costs nothing until it
# raises, a context manager costs an object and two calls per command.

#: What redis-py says when the server refuses a new client (``maxclients``) and when its
#: ``BlockingConnectionPool`` timed out waiting for a free connection.
_BUSY_MESSAGES = ("max number of clients reached", "No connection available")

_Context = dict[str, Any]
#: Builds the kvstore error from the driver's text (password scrubbed) and the context.
_Build = Callable[[BaseException, str, _Context], KVStoreError]


def _busy(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return BackendBusyError(
        f"Redis is busy: no connection for {context['operation']} ({text}); retry later, "
        "or raise max_connections / pool_timeout (or the server's maxclients)",
        **context,
    )


def _credentials(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return BackendUnavailableError(
        f"Redis refused the credentials during {context['operation']} ({type(exc).__name__}); "
        "check the username and password of the cache config",
        **context,
    )


def _no_permission(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return BackendUnavailableError(
        f"the Redis user may not run {context['operation']} ({text}); grant it the command in the ACL", **context
    )


def _timed_out(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return BackendUnavailableError(
        f"Redis did not answer {context['operation']} within the socket timeout ({text})", **context
    )


def _unreachable(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return BackendUnavailableError(f"cannot reach Redis for {context['operation']} ({text})", **context)


def _cluster(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return BackendUnavailableError(f"the Redis cluster cannot serve {context['operation']} now ({text})", **context)


def _not_an_integer(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return not_an_integer(context["key"], "redis")


def _overflow(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return not_an_integer(context["key"], "redis", detail="would leave the signed 64-bit range")


def _wrong_type(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    key = context["key"]
    what = f"key {key!r} does not hold a kvstore value" if key is not None else context["operation"]
    return WrongTypeError(f"{what} ({text})", **context)


def _failed(exc: BaseException, text: str, context: _Context) -> KVStoreError:
    return KVStoreError(f"Redis failed {context['operation']} ({text})", **context)


#: The error map, most specific first: (driver exception types, words one of which the
#: message must contain or ``()`` for any message, the builder of the kvstore error).
#: Busy is not an outage (DESIGN.md §8): a full pool or a server at ``maxclients`` is
#: `BackendBusyError`, never a reason to fall back; refused, reset, timed out are outages.
ERROR_MAP: tuple[tuple[tuple[type[BaseException], ...], tuple[str, ...], _Build], ...] = (
    ((MaxConnectionsError,), (), _busy),
    ((RedisConnectionError,), _BUSY_MESSAGES, _busy),
    ((AuthenticationError, AuthorizationError, AuthenticationWrongNumberOfArgsError), (), _credentials),
    ((NoPermissionError,), (), _no_permission),
    ((RedisTimeoutError, TimeoutError), (), _timed_out),
    ((RedisConnectionError, OSError), (), _unreachable),
    ((ClusterError, TryAgainError, ReadOnlyError, RedisClusterException), (), _cluster),
    # INCRBY on a value that is not a 64-bit integer; on a result beyond 64 bits.
    ((ResponseError,), ("value is not an integer or out of range",), _not_an_integer),
    ((ResponseError,), ("increment or decrement would overflow",), _overflow),
    ((ResponseError,), ("WRONGTYPE",), _wrong_type),
    ((RedisError,), (), _failed),
)

#: Every exception a redis-py call can raise that `translate` maps (one ``except`` clause).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


def translate(
    exc: BaseException,
    *,
    operation: str,
    key: str | None = None,
    secret: str | None = None,
) -> KVStoreError:
    """The kvstore error for a redis-py (or socket) exception: the first rule of `ERROR_MAP` that fits.

    ``secret`` (the password) is scrubbed from the message in case a driver ever
    echoes it.
    """
    text = f"{type(exc).__name__}: {exc}"
    if secret:
        text = text.replace(secret, "***")
    context: _Context = {"backend": "redis", "key": key, "operation": operation}
    message = str(exc)
    for types, words, build in ERROR_MAP:
        if isinstance(exc, types) and (not words or any(word in message for word in words)):
            return build(exc, text, context)
    return _failed(exc, text, context)


class ErrorMap(ErrorBoundary):
    """``with ErrorMap(operation, key, secret):`` — the one boundary of the Redis backend."""

    __slots__ = ()
    driver_errors = DRIVER_ERRORS
    translate = staticmethod(translate)
