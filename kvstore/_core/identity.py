"""Where a tier's data lives: a stable digest and a printable label of a tier config (I/O-free)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from urllib.parse import unquote

from kvstore.config import (
    MemoryCacheConfig,
    MemoryDatabaseConfig,
    PostgresDatabaseConfig,
    RedisCacheConfig,
    SqliteDatabaseConfig,
    _Url,
    parse_sentinels,
)

__all__ = ["identity_label", "tier_identity"]

#: libpq's and redis-py's default ports, used when a URL names none.
POSTGRES_PORT = 5432
REDIS_PORT = 6379

TierConfig = MemoryCacheConfig | RedisCacheConfig | MemoryDatabaseConfig | SqliteDatabaseConfig | PostgresDatabaseConfig


def tier_identity(config: TierConfig) -> str:
    """A short stable digest (20 hex digits) of every setting that changes where ``config``'s data lives.

    Each config model declares its ``identity_fields`` (host, port, dbname, schema,
    table prefix, key prefix, path, ...); everything else (timeouts, pool sizes,
    passwords, TLS files) leaves the identity unchanged. A URL and the equivalent
    separate fields give the same identity: both are resolved first (default
    ports filled in, host names lower-cased, SQLite paths made absolute).
    Environment defaults of the drivers (``PGHOST``, ``PGDATABASE``...) are not read.
    """
    text = json.dumps(_target(config), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def identity_label(config: TierConfig) -> str:
    """What `tier_identity` digests, for people: ``postgres 127.0.0.1:5432/app schema=public ...``.

    Never holds a password.
    """
    target = _target(config)
    kind = target["type"]
    if kind == "postgres":
        where = ",".join(_host_port(host, port) for host, port in target["hosts"])
        parts = [
            f"{where or '<default socket>'}/{target['dbname'] or '<default dbname>'}",
            f"schema={_show(target['schema'])}",
            f"prefix={target['table_prefix']}",
        ]
    elif kind == "redis" and "sentinels" in target:
        where = ",".join(_host_port(host, port) for host, port in target["sentinels"])
        parts = [f"sentinel {_show(target['service'])} via {where}/{target['db']}"]
    elif kind == "redis":
        where = target["socket"] or _host_port(target["host"], target["port"])
        parts = [f"{where}/{target['db']}" + (" cluster" if target["cluster"] else "")]
        if "service" in target:  # a service name without Sentinels: kept apart all the same
            parts.append(f"service={_show(target['service'])}")
    elif kind == "sqlite":
        parts = [_show(target["path"])]
    else:
        parts = []
    parts.append(f"key_prefix={_show(target['key_prefix'])}")
    return " ".join([kind, *parts])


# --- resolution -----------------------------------------------------------------------


def _target(config: TierConfig) -> dict[str, Any]:
    tier = "cache" if isinstance(config, MemoryCacheConfig | RedisCacheConfig) else "database"
    target: dict[str, Any] = {"tier": tier, "type": config.type, "key_prefix": config.key_prefix}
    if isinstance(config, PostgresDatabaseConfig):
        target.update(_postgres(config))
    elif isinstance(config, RedisCacheConfig):
        target.update(_redis(config))
    elif isinstance(config, SqliteDatabaseConfig):
        target["path"] = _sqlite_path(config.path)
    return target


def _postgres(config: PostgresDatabaseConfig) -> dict[str, Any]:
    """host(s), port(s) and dbname as libpq would resolve them from the URL and the fields."""
    hosts: list[str] = []
    ports: list[str] = []
    dbname: str | None = None
    user: str | None = None
    # libpq parameters that pick another server or database than the host list says.
    elsewhere: dict[str, str] = {}
    if config.url is not None:
        url = _Url(config.url)
        user = unquote(url.user) or None
        for entry in url.hosts.split(",") if url.hosts else []:
            host, port = _split_host_port(entry)
            hosts.append(host)
            ports.append(port)
        if url.path.startswith("/") and url.path != "/":
            dbname = unquote(url.path[1:])
        for name, text in url.parameters():
            if name == "host":
                hosts = text.split(",")
            elif name == "port":
                ports = text.split(",")
            elif name == "dbname":
                dbname = text
            elif name == "user":
                user = text
            elif name in ("hostaddr", "service", "options"):
                elsewhere[name] = text
    # Explicit fields win over the URL (as in PostgresDatabase); without a URL the fields'
    # defaults apply (host and port are None only when a URL is given and they are not).
    given = config.model_fields_set
    if config.host is not None:
        hosts = config.host.split(",")
    if config.port is not None:
        ports = [str(config.port)]
    if config.hosts:  # "host:port" each; a port-less entry takes `port` (kvstore.postgres._hosts)
        split = [_split_host_port(entry.strip()) for entry in config.hosts]
        hosts = [host for host, _ in split]
        ports = [port or str(config.port or POSTGRES_PORT) for _, port in split]
    if config.url is None or "dbname" in given:
        dbname = config.dbname
    if config.url is None or "user" in given:
        user = config.user
    if not hosts:
        hosts = [""]  # libpq's default: its Unix socket directory
    if len(ports) == 1 or not ports:
        ports = (ports or [""]) * len(hosts)
    # The order of a multi-host list picks whom to try first, not where the data is.
    pairs = sorted(
        {
            (_normal_host(host), int(port) if port.strip().isdigit() else POSTGRES_PORT)
            for host, port in zip(hosts, ports, strict=False)
        }
    )
    return {
        "hosts": [list(pair) for pair in pairs],
        # libpq's default database is the user's name.
        "dbname": dbname or user or "",
        "schema": config.schema_name,
        "table_prefix": config.table_prefix,
        **({"elsewhere": sorted(elsewhere.items())} if elsewhere else {}),
    }


def _redis(config: RedisCacheConfig) -> dict[str, Any]:
    """host, port (or socket) and db as redis-py would resolve them; with a URL the fields are ignored.

    Behind Sentinel the data lives in the service (whichever server is its master now):
    the set of Sentinels, the service name and the db.
    """
    if config.sentinels is not None:
        sentinels = sorted({(_normal_host(host), port) for host, port in parse_sentinels(config.sentinels)})
        return {"sentinels": [list(pair) for pair in sentinels], "service": config.service_name, "db": config.db}
    socket = ""
    host, port, db = config.host, config.port, config.db
    if config.url is not None:
        url = _Url(config.url)
        path = unquote(url.path)
        if url.scheme == "unix":
            socket, host, port, db = path, "", 0, 0
        else:
            first = url.hosts.split(",")[0]
            host, text = _split_host_port(first)
            host = host or "localhost"
            port = int(text) if text.isdigit() else REDIS_PORT
            db = int(path[1:]) if path[1:].isdigit() else 0
        for name, text in url.parameters():
            if name == "db" and text.isdigit():
                db = int(text)
    return {
        "socket": socket,
        "host": _normal_host(host),
        "port": port,
        "db": 0 if config.cluster else db,  # a cluster has only db 0
        "cluster": config.cluster,
        **({"service": config.service_name} if config.service_name is not None else {}),
    }


def _sqlite_path(path: str) -> str:
    if path in ("", ":memory:") or path.startswith("file::memory:"):
        return ":memory:"
    return os.path.realpath(path)


def _split_host_port(entry: str) -> tuple[str, str]:
    """``host:port`` / ``[v6]:port`` / ``host`` -> (host, port text)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    host, _, port = entry.partition(":")
    return host, port


def _normal_host(host: str) -> str:
    host = unquote(host).strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host if host.startswith("/") else host.lower()  # DNS names are case-insensitive, paths are not


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _show(text: str) -> str:
    """``text`` as is when it is plain, else quoted (empty, spaces, control characters)."""
    return text if text and text.isprintable() and not any(c.isspace() for c in text) else repr(text)
