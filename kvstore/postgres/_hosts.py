"""Several PostgreSQL hosts: which one serves, and never a write on a read-only one (DESIGN.md §10).

A primary with streaming-replication standbys is named as a host list, in a URL
(``postgresql://h1:5432,h2:5433/app``) or as the ``hosts`` field. libpq tries the
hosts in order; with ``target_session_attrs=read-write`` (the default here as soon as
there are several) it keeps only a connection whose server accepts writes, so after
a standby is promoted the pool's new connections land on it, and a connection never
lands on a standby.

A server can also turn read-only under an open connection (``default_transaction_read_only``
switched on, a fenced old primary). Its writes then fail with ``ReadOnlySqlTransaction``
(SQLSTATE 25006), which guarantees nothing was written: `read_only` discards the
connection and turns the error into `ReadOnlyServer`, an ``OperationalError`` on a
broken connection, which the store treats as unavailability and retries on another
connection under the idempotency rules of DESIGN.md §8a (never a wrong answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from kvstore.errors import ConfigError

__all__ = ["ReadOnlyServer", "SyncWatch", "merge_fields", "read_only", "session_attrs", "unreplicated", "where"]

BACKEND = "postgres"
DEFAULT_PORT = 5432
#: The values kvstore accepts: both keep a connection to a standby from being used.
_WRITABLE = ("read-write", "primary")


class ReadOnlyServer(psycopg.OperationalError):
    """A write met a read-only server; the connection was discarded (nothing was written)."""


def _split(entry: str) -> tuple[str, str]:
    """``host:port`` / ``[v6]:port`` / ``host`` / ``/socket/dir`` -> (host, port text or "")."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.startswith("/") or entry.count(":") > 1:  # a socket directory, or a bare IPv6 address
        return entry, ""
    host, _, port = entry.partition(":")
    return host, port


def merge_fields(hosts: Sequence[str] | None, host: str | None, port: int | str | None) -> tuple[Any, Any]:
    """The ``host`` and ``port`` conninfo values for a ``hosts`` list (``host``/``port`` when there is none).

    Each entry is ``host``, ``host:port`` or ``[v6]:port``; an entry without a port gets
    ``port`` (or 5432). libpq reads both as comma-separated lists of the same length.

    Raises:
        ConfigError: ``hosts`` is empty, holds an empty or malformed entry, or ``host`` is given too.
    """
    if hosts is None:
        return host, port
    if isinstance(hosts, str):
        hosts = [hosts]
    if not hosts:
        raise ConfigError("hosts must name at least one server", backend=BACKEND)
    if host is not None:
        raise ConfigError("give either host or hosts, not both", backend=BACKEND)
    names: list[str] = []
    ports: list[str] = []
    for entry in hosts:
        if not isinstance(entry, str):
            raise ConfigError(f"hosts entries are 'host:port' strings, not {type(entry).__name__}", backend=BACKEND)
        name, text = _split(entry)
        text = text or str(port or DEFAULT_PORT)
        if not name or "," in name or not text.isdigit() or not 0 < int(text) < 65536:
            raise ConfigError(f"hosts entry {entry!r} is not 'host', 'host:port' or '[v6]:port'", backend=BACKEND)
        names.append(name)
        ports.append(text)
    return ",".join(names), ",".join(ports)


def session_attrs(conninfo: str, given: str | None) -> str:
    """``conninfo`` with the ``target_session_attrs`` kvstore uses.

    ``given`` (or the conninfo's own value) when it is ``read-write`` or ``primary``;
    ``read-write`` when there are several hosts and none was given; ``any`` only with
    one host (libpq's default: whatever server that host is).

    Raises:
        ConfigError: a value that would let the pool keep connections to a standby
            (``read-only``, ``standby``, ``prefer-standby``; ``any`` with several hosts):
            a standby's reads may be stale and its writes fail.
    """
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    _check_lists(info)
    several = max(len(str(info.get(k) or "").split(",")) for k in ("host", "hostaddr")) > 1
    attrs = given if given is not None else info.get("target_session_attrs")
    if attrs is None:
        return psycopg.conninfo.make_conninfo(conninfo, target_session_attrs="read-write") if several else conninfo
    attrs = str(attrs)
    if attrs in _WRITABLE or (attrs == "any" and not several):
        return psycopg.conninfo.make_conninfo(conninfo, target_session_attrs=attrs)
    raise ConfigError(
        f"target_session_attrs={attrs!r} would let kvstore use a standby (stale reads, failed writes); "
        "use read-write (the default with several hosts) or primary",
        backend=BACKEND,
    )


def _check_lists(info: dict[str, Any]) -> None:
    """`ConfigError` for a host list with an empty entry or a port that is not a port number.

    libpq reads an empty entry of a host list as its default server (the local socket), so
    a stray comma (``h1:5432,/app``) would silently add a server that was never named; a
    port like ``bad`` fails only at connect, where it looks like an outage (and a manager
    would fail over) rather than the configuration error it is.
    """
    hosts = str(info.get("host") or "").split(",")
    if len(hosts) > 1 and not all(h.strip() for h in hosts):
        raise ConfigError("the PostgreSQL host list has an empty entry (a stray comma?)", backend=BACKEND)
    for port in str(info.get("port") or "").split(","):
        port = port.strip()
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"PostgreSQL port {port!r} is not a number from 1 to 65535", backend=BACKEND)


def where(conn: Any) -> str:
    """``host:port`` of the server ``conn`` talks to (``[v6]:port``; a socket directory as is)."""
    try:
        info = conn.info
        host, port = str(info.host), info.port
    except Exception:  # a connection finished meanwhile: its host is no longer known
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_only(conn: Any, exc: BaseException) -> ReadOnlyServer:
    """Discard ``conn`` (its server refused a write as read-only) and say so, as an outage.

    The libpq connection is finished without ``close()``, so psycopg reports it
    ``broken`` (like one whose server went away): the store retries the call on
    another connection when its idempotency allows, and the pool drops this one.
    """
    server = where(conn)
    text = str(exc).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    conn.pgconn.finish()
    return ReadOnlyServer(f"server {server} is read-only ({detail}); its connection was discarded")


class SyncWatch:
    """A connection's notice handler: whether the server cancelled a commit's wait for its
    synchronous standby (``canceling wait for synchronous replication``, at ``statement_timeout``).

    PostgreSQL then reports the commit as a success, with only a WARNING: the write is on the
    primary but not known to be on the standby, and a promotion may lose it. The store turns
    that success into `BackendUnavailableError` (outcome unknown), never an acknowledgement.
    The warning has no SQLSTATE of its own (01000): it is told by its text, PostgreSQL's
    English one (a server whose ``lc_messages`` translates it is not detected).
    """

    __slots__ = ("hit",)

    def __init__(self) -> None:
        self.hit = False

    def __call__(self, diag: Any) -> None:
        if "synchronous replication" in str(diag.message_primary or ""):
            self.hit = True


def unreplicated() -> Any:
    """The error of a write whose commit the synchronous standby did not confirm (see `SyncWatch`)."""
    from kvstore.errors import BackendUnavailableError

    return BackendUnavailableError(
        "PostgreSQL committed the write on the primary, but the wait for the synchronous standby was "
        "cancelled (statement_timeout) before it confirmed it: the outcome is unknown (a promotion may "
        "lose it); is the standby attached? raise statement_timeout?",
        backend=BACKEND,
    )
