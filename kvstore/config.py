"""Configuration models: one `StorageConfig` with a discriminated union per tier."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, unquote

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.keys import validate_prefix
from kvstore.errors import ConfigError, MissingDependencyError

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "CacheConfig",
    "DatabaseConfig",
    "MemoryCacheConfig",
    "MemoryDatabaseConfig",
    "PostgresDatabaseConfig",
    "RedisCacheConfig",
    "SqliteDatabaseConfig",
    "StorageConfig",
    "load_config",
]

DEFAULT_SQLITE_PATH = "./.kvstore/kvstore.db"

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]

_FALLBACK_HELP = (
    "Backends tried in order when this one is unavailable (default: the tier's chain); [] fails instead. "
    "From the environment: a JSON list, or names separated by commas (sqlite,memory); empty is []."
)

_BATCHING_HELP = (
    "Async stores: concurrent gets issued together share one round trip (each caller still gets its own "
    "result or error); false sends each get on its own."
)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        hide_input_in_errors=True,
    )


class _TierConfig(_Model):
    #: Fields that change where the data lives (`kvstore._core.identity.tier_identity` digests them) ...
    identity_fields: ClassVar[frozenset[str]] = frozenset({"type", "key_prefix"})
    #: ... and fields that do not (how to reach it, how long to wait, how to behave in an outage).
    #: Every field is in exactly one of the two sets; tests/test_identity.py checks it.
    non_identity_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "max_value_bytes",
            "connect_timeout",
            "on_outage",
            "failure_threshold",
            "probe_interval",
            "state_dir",
            "degraded_reads",
            "fallback",
        }
    )

    key_prefix: str = Field(
        "", description="Prepended to every key; stores with different prefixes never see each other's keys."
    )
    max_value_bytes: int = Field(DEFAULT_MAX_VALUE_BYTES, gt=0, description="Largest encoded value accepted.")
    connect_timeout: PositiveSeconds = Field(2.0, description="Budget in seconds for connecting, retries included.")
    on_outage: Literal["buffer", "fail"] = Field(
        "buffer",
        description="While the primary is down: 'buffer' serves from the fallback (the database tier journals "
        "writes and replays them on failback); 'fail' raises BackendUnavailableError on writes.",
    )
    failure_threshold: int = Field(3, ge=1, description="Consecutive unavailability errors that trip the breaker.")
    probe_interval: PositiveSeconds = Field(1.0, description="Seconds between probes of a primary that is down.")
    state_dir: str | None = Field(
        None,
        description="Directory for the outage journal and fallback files of this tier, created (0700) on the first "
        "outage only; default $KVSTORE_STATE_DIR, else $XDG_STATE_HOME/kvstore, else ~/.local/state/kvstore.",
    )
    degraded_reads: Literal["auto", "strict", "fallback"] = Field(
        "auto",
        description="Reads during an outage: 'strict' raises BackendUnavailableError for what the fallback cannot "
        "answer truthfully (keys not written during the outage, list lengths, ranges reaching pre-outage items); "
        "'fallback' answers from the fallback whatever it holds; 'auto' is strict once the primary has served "
        "this process and 'fallback' when it was unreachable from the start.",
    )

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return validate_prefix(value)


# --- URLs with secrets in them -------------------------------------------------------
#
# Where a URL's password ends. A password in a URL should be percent-encoded, but
# real ones are pasted as they are: ``postgresql://app:p/a#s?w@rd@db:5432/app``.
# urlsplit would end the authority at the first ``/``, ``?`` or ``#`` and put the
# rest of the password in the path, the query or the fragment, where it would be
# printed. kvstore's rule instead:
#
# - The userinfo ends at the LAST ``@`` that is followed by a host list (``host``,
#   ``host:port``, ``[v6]:port``, comma-separated, possibly empty) and then by the
#   end, ``/``, ``?`` or ``#``, and that does not sit in a query value (after a
#   ``?`` and a ``name=``: ``?client_name=a@b``, ``?password=p@w``). So a password
#   may hold ``/ # ? @ : [ ] $ %`` unencoded. Should every such ``@`` sit in a
#   query value, the URL has no userinfo when it reads cleanly without one. The
#   one shape both ways: ``user:12?name=v@host`` (a password of digits, then ``?``
#   and ``name=``) reads as host ``user``, port 12 and a query; encode its ``?``.
# - An ``@`` after the chosen one that is not in a query value, or no host after
#   any ``@``, makes the URL unreadable (ConfigError quoting none of it).
# - The password is everything after the first ``:`` of the userinfo, then
#   percent-decoded: ``%`` followed by two hex digits is an escape (``%25`` is a
#   literal ``%``), any other ``%`` is literal.
# - ``?password=`` (accepted by redis-py and libpq) is a secret too: the query
#   after the host list runs to the end of the URL (these URLs have no fragment,
#   so a ``#`` in it is data) and its parameters are separated by ``&``.
# - When no reading is safe, the URL is rejected with a message that quotes none
#   of it.

_URL_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = r"(?:\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%-]*)(?::[0-9]*)?"
_HOSTS = re.compile(rf"{_HOST}(?:,{_HOST})*")
# Before ``$VAR`` substitution a host may still be ``${DB_HOST}``.
_TEMPLATE_HOST = r"(?:\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%${}-]*)(?::[0-9A-Za-z_${}]*)?"
_TEMPLATE_HOSTS = re.compile(rf"{_TEMPLATE_HOST}(?:,{_TEMPLATE_HOST})*")
_STRICT_HOST = r"(?:\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9._~%-]+)(?::[0-9]+)?"
_STRICT_HOSTS = re.compile(rf"{_STRICT_HOST}(?:,{_STRICT_HOST})*")
_TEMPLATE_STRICT_HOST = r"(?:\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9._~%${}-]+)(?::[0-9A-Za-z_${}]+)?"
_TEMPLATE_STRICT_HOSTS = re.compile(rf"{_TEMPLATE_STRICT_HOST}(?:,{_TEMPLATE_STRICT_HOST})*")
_QUERY_PARAMETER = re.compile(r"[?&][A-Za-z_][A-Za-z0-9_.-]*=")
_UNPARSABLE = (
    "cannot tell where the password ends in this URL; percent-encode the special characters of the "
    "password (/ as %2F, # as %23, ? as %3F, @ as %40, % as %25) or give it as the `password` field"
)


class _Url:
    """Where the parts of a ``scheme://[userinfo@]hosts[/path][?query]`` URL are (offsets into ``text``)."""

    __slots__ = ("at", "host_end", "scheme", "start", "text")

    def __init__(self, text: str, *, template: bool = False) -> None:
        match = _URL_SCHEME.match(text)
        if match is None:
            raise ValueError("a URL looks like scheme://host/...")
        self.text = text
        self.scheme = match["scheme"].lower()
        self.start = match.end()
        self.at = self._userinfo_end(template)
        host_start = self.start if self.at is None else self.at + 1
        self.host_end = _next_delimiter(text, host_start)

    def _userinfo_end(self, template: bool) -> int | None:
        text, start = self.text, self.start
        if "@" not in text[start:]:
            return None
        hosts = _TEMPLATE_HOSTS if template else _HOSTS
        candidates = [
            i
            for i in range(start, len(text))
            if text[i] == "@" and hosts.fullmatch(text, i + 1, _next_delimiter(text, i + 1))
        ]
        chosen = next((at for at in reversed(candidates) if not _in_query_value(text, start, at)), None)
        if chosen is None:
            # Every '@' followed by a host sits in a query value (``?client_name=a@b``): when
            # the URL reads cleanly without a userinfo, that is what it is.
            authority_end = _next_delimiter(text, start)
            strict = _TEMPLATE_STRICT_HOSTS if template else _STRICT_HOSTS
            if "@" not in text[start:authority_end] and strict.fullmatch(text, start, authority_end):
                return None
            chosen = candidates[-1] if candidates else None
        if template:
            return chosen if chosen is not None else text.rfind("@")
        # No host after any '@', or a later '@' (outside a query value) with no host after
        # it: the password's end is a guess that could leave part of it in the URL.
        if chosen is None or any(
            text[i] == "@" and not _in_query_value(text, chosen + 1, i) for i in range(chosen + 1, len(text))
        ):
            raise ValueError(_UNPARSABLE)
        return chosen

    @property
    def user(self) -> str:
        """The user name as written (percent-encoded), ``""`` when there is none."""
        if self.at is None:
            return ""
        return self.text[self.start : self.at].partition(":")[0]

    def password_span(self) -> tuple[int, int] | None:
        """Where the userinfo's password is, when there is one."""
        if self.at is None:
            return None
        colon = self.text.find(":", self.start, self.at)
        return None if colon < 0 else (colon + 1, self.at)

    @property
    def hosts(self) -> str:
        """The host list as written (``h1:5432,h2``, ``[::1]:6379``, or ``""``)."""
        return self.text[self.start if self.at is None else self.at + 1 : self.host_end]

    @property
    def path(self) -> str:
        """What follows the hosts, up to the query: ``/0``, ``/dbname``, ``/path/to/sock``."""
        tail = self.text[self.host_end :]
        return tail.partition("?")[0]

    def query(self) -> list[tuple[int, int, str, int]]:
        """The query's parameters: ``(start, end, decoded lower-case name, value start)`` each."""
        query_start = self.text.find("?", self.host_end)
        if query_start < 0:
            return []
        params = []
        position = query_start + 1
        for param in self.text[query_start + 1 :].split("&"):
            name, equals, _ = param.partition("=")
            value_start = position + len(name) + len(equals)
            params.append((position, position + len(param), unquote(name).lower(), value_start))
            position += len(param) + 1
        return params

    def parameters(self) -> list[tuple[str, str]]:
        """The query's ``(lower-case name, percent-decoded value)`` pairs."""
        return [(name, unquote(self.text[value:end])) for _, end, name, value in self.query()]

    def secret_spans(self) -> list[tuple[int, int]]:
        """Where the password is: the userinfo's, and every ``password=`` value."""
        spans = [span] if (span := self.password_span()) is not None else []
        spans += [(value, end) for _, end, name, value in self.query() if name == "password"]
        return spans


def _in_query_value(text: str, start: int, at: int) -> bool:
    """Whether ``text[start:at]`` ends inside a query parameter (``...?name=`` or ``...&name=``)."""
    question = text.find("?", start, at)
    return question >= 0 and _QUERY_PARAMETER.search(text, question, at) is not None


def _url_scheme(url: str) -> str:
    """The lower-case scheme of ``url`` (``""`` when it has none)."""
    match = _URL_SCHEME.match(url)
    return match["scheme"].lower() if match else ""


def _next_delimiter(text: str, start: int) -> int:
    """Index of the first ``/``, ``?`` or ``#`` at or after ``start`` (``len(text)`` when none)."""
    ends = [i for i in (text.find(c, start) for c in "/?#") if i >= 0]
    return min(ends, default=len(text))


def _decode_secret(text: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(
            "the password in the URL is not valid percent-encoded UTF-8 (write a literal % as %25)"
        ) from None


def _split_password(url: str) -> tuple[str, str | None]:
    """Return ``url`` without its password, and the password (percent-decoded).

    The password may sit in the user part (``user:pw@host``, where it may hold
    ``/ # ? @ :`` unencoded: see the rule above) or in the query
    (``?password=pw``, which redis-py and libpq both accept); both are removed.

    Raises:
        ValueError: the URL cannot be read safely; the message quotes none of it.
    """
    parsed = _Url(url)
    span = parsed.password_span()
    query = parsed.query()
    in_query = [url[value:end] for _, end, name, value in query if name == "password"]
    if span is None and not in_query:
        return url, None
    # The userinfo's password wins over ?password= (as in redis-py and libpq).
    password = _decode_secret(url[span[0] : span[1]] if span is not None else in_query[-1])
    user = unquote(parsed.user)
    bare = url[: parsed.start] + (f"{quote(user, safe='')}@" if user else "") + parsed.hosts + parsed.path
    kept = [url[start:end] for start, end, name, _ in query if name != "password"]
    if kept:
        bare += "?" + "&".join(kept)
    return bare, password


class _NetworkConfig(_TierConfig):
    identity_fields = _TierConfig.identity_fields | {"url"}
    non_identity_fields = _TierConfig.non_identity_fields | {"password"}

    url: str | None = Field(
        None,
        description="Connection URL; a password in it (user:pw@ or ?password=) is moved to `password`. It may hold "
        "/ # ? @ unencoded: the last @ followed by a host ends it; %XX is an escape (%25 a literal %); an unset "
        "$NAME in it is kept literally and $$ is a literal $.",
    )
    password: SecretStr | None = Field(
        None, description="Never printed; `$VAR` reads it from the environment ($$ for a literal $)."
    )

    @model_validator(mode="after")
    def _move_password_out_of_url(self) -> _NetworkConfig:
        if self.url is not None:
            bare, password = _split_password(self.url)
            object.__setattr__(self, "url", bare)
            if password is not None and self.password is None:
                object.__setattr__(self, "password", SecretStr(password))
        return self


# --- cache tier ---------------------------------------------------------------------


#: The base of a tier's config model, for a backend added through `kvstore._registry.register`.
TierConfig = _TierConfig


class MemoryCacheConfig(_TierConfig):
    """In-process cache: bounded (LRU), TTL-aware, not durable."""

    non_identity_fields = _TierConfig.non_identity_fields | {"max_entries"}

    type: Literal["memory"] = "memory"
    max_entries: int = Field(100_000, gt=0, description="Least recently used entries are evicted past this.")
    fallback: list[CacheFallback] | None = Field(None, description=_FALLBACK_HELP)


class RedisCacheConfig(_NetworkConfig):
    """Redis (standalone, Sentinel or Redis Cluster) cache."""

    identity_fields = _NetworkConfig.identity_fields | {"host", "port", "db", "cluster", "sentinels", "service_name"}
    # ACL users share one keyspace; TLS is the transport, not the place.
    non_identity_fields = _NetworkConfig.non_identity_fields | {
        "username",
        "tls",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "tls_verify",
        "max_connections",
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "sentinel_username",
        "sentinel_password",
        "failover_invalidation",
        "failover_window",
        "batching",
    }

    type: Literal["redis"] = "redis"
    host: str = "localhost"
    port: int = Field(6379, gt=0, lt=65536)
    db: int = Field(0, ge=0)
    username: str | None = None
    cluster: bool = Field(False, description="Use redis-py's RedisCluster (also set by a redis+cluster:// URL).")
    tls: bool = Field(False, description="Use TLS (also set by a rediss:// URL).")
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    max_connections: int = Field(50, gt=0)
    socket_timeout: PositiveSeconds = Field(0.5, description="Deadline of one command's reply.")
    socket_connect_timeout: PositiveSeconds = 0.5
    health_check_interval: float = Field(10.0, ge=0)
    sentinels: list[str] | None = Field(
        None,
        description="Redis Sentinel daemons (host:port, port 26379 by default; from the environment "
        "comma-separated) that name the master of service_name; also set by a redis+sentinel:// URL.",
    )
    service_name: str | None = Field(
        None,
        description="The service the Sentinels monitor (sentinel monitor <name>); with sentinels, default mymaster.",
    )
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = Field(
        None, description="Password of the Sentinels themselves (`password` is the master's). Never printed."
    )
    failover_invalidation: Literal["written", "namespace"] = Field(
        "written",
        description="After a Sentinel failover, removed from the promoted master before use: 'written', the keys "
        "this process wrote in the failover_window before its last write (what asynchronous replication may have "
        "lost); 'namespace', every key of key_prefix (keys written by several processes).",
    )
    failover_window: PositiveSeconds = Field(
        10.0, description="Seconds of writes (before the latest) remembered for a failover; >= the replication lag."
    )
    fallback: list[CacheFallback] | None = Field(None, description=_FALLBACK_HELP)
    batching: bool = Field(True, description=_BATCHING_HELP)

    @field_validator("sentinels", mode="before")
    @classmethod
    def _sentinels_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _url_flags(self) -> RedisCacheConfig:
        if self.url is not None:
            scheme = _url_scheme(self.url)
            if scheme not in (
                "redis",
                "rediss",
                "unix",
                "redis+cluster",
                "rediss+cluster",
                "redis+sentinel",
                "rediss+sentinel",
            ):
                raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
            if "cluster" in scheme:
                object.__setattr__(self, "cluster", True)
            if scheme.startswith("rediss"):
                object.__setattr__(self, "tls", True)
            if scheme.endswith("+sentinel"):
                sentinels, service, db = _sentinel_url(self.url)
                object.__setattr__(self, "sentinels", [_host_port_text(h, p) for h, p in sentinels])
                object.__setattr__(self, "service_name", service)
                if db is not None:
                    object.__setattr__(self, "db", db)
        if self.sentinels is not None:
            parse_sentinels(self.sentinels)
            if self.cluster:
                raise ValueError("a Redis cache uses either Sentinel or Redis Cluster, not both")
            if not self.service_name:
                object.__setattr__(self, "service_name", "mymaster")  # sentinel.conf's own example name
        return self


#: The port of a Sentinel daemon when none is named.
SENTINEL_PORT = 26379


def parse_sentinels(entries: Sequence[str | tuple[str, int]]) -> list[tuple[str, int]]:
    """``["h1:26379", "[::1]", ("h3", 5000)]`` -> ``[("h1", 26379), ("::1", 26379), ("h3", 5000)]``."""
    sentinels: list[tuple[str, int]] = []
    for entry in entries:
        if isinstance(entry, tuple):
            host, port = entry[0], int(entry[1])
        else:
            text = entry.strip()
            if text.startswith("["):
                host, _, rest = text[1:].partition("]")
                port_text = rest[1:] if rest.startswith(":") else ""
            else:
                host, _, port_text = text.partition(":")
            host = unquote(host)
            if port_text and not port_text.isdigit():
                raise ValueError("a Sentinel is host or host:port, with a numeric port")
            port = int(port_text) if port_text else SENTINEL_PORT
        if not host or not 0 < port < 65536:
            raise ValueError("a Sentinel is host or host:port, with a port from 1 to 65535")
        sentinels.append((host, port))
    if not sentinels:
        raise ValueError("name at least one Sentinel (host:port)")
    return sentinels


def _host_port_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int | None]:
    """Sentinels, service name and db (or ``None``) of a ``redis+sentinel://`` URL (password already removed or not).

    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``; the
    message of an error quotes none of the URL.
    """
    parsed = _Url(_split_password(url)[0])
    if parsed.query():
        raise ValueError(
            "a redis+sentinel:// URL takes no query parameters; give options (sentinel_password, "
            "socket_timeout, ...) as config fields"
        )
    sentinels = parse_sentinels(parsed.hosts.split(",") if parsed.hosts else [])
    segments = [unquote(part) for part in parsed.path.split("/")[1:]]
    if not segments or not segments[0]:
        raise ValueError("a redis+sentinel:// URL names the service after the hosts: .../service_name[/db]")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError("a redis+sentinel:// URL ends with /service_name or /service_name/db (db a number)")
    return sentinels, segments[0], int(segments[1]) if len(segments) == 2 else None


CacheFallback = Annotated[
    Literal["memory"] | MemoryCacheConfig,
    Field(description="A backend type, or a full config for it."),
]

CacheConfig = Annotated[MemoryCacheConfig | RedisCacheConfig, Field(discriminator="type")]


# --- database tier ------------------------------------------------------------------


class MemoryDatabaseConfig(_TierConfig):
    """In-process database: values and lists, bounded, not durable."""

    non_identity_fields = _TierConfig.non_identity_fields | {"max_entries"}

    type: Literal["memory"] = "memory"
    max_entries: int = Field(1_000_000, gt=0, description="Least recently used keys are evicted past this.")
    fallback: list[DatabaseFallback] | None = Field(None, description=_FALLBACK_HELP)


class SqliteDatabaseConfig(_TierConfig):
    """SQLite file (WAL), the embedded default."""

    identity_fields = _TierConfig.identity_fields | {"path", "url"}
    non_identity_fields = _TierConfig.non_identity_fields | {
        "synchronous",
        "busy_timeout",
        "purge_interval",
        "batching",
    }

    type: Literal["sqlite"] = "sqlite"
    path: str = Field(DEFAULT_SQLITE_PATH, description="Database file, or ':memory:'. Directories are created.")
    url: str | None = Field(None, description="sqlite:///relative/path, sqlite:////absolute/path or sqlite:///:memory:")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="FULL survives power loss; NORMAL survives process crashes."
    )
    busy_timeout: PositiveSeconds = Field(5.0, description="How long a writer waits for the lock.")
    purge_interval: PositiveSeconds = Field(60.0, description="Seconds between sweeps of expired rows.")
    fallback: list[DatabaseFallback] | None = Field(None, description=_FALLBACK_HELP)
    batching: bool = Field(True, description=_BATCHING_HELP)

    @model_validator(mode="after")
    def _path_from_url(self) -> SqliteDatabaseConfig:
        if self.url is not None:
            if not self.url.startswith("sqlite:///"):
                raise ValueError("a SQLite URL looks like sqlite:///path/to/file.db")
            object.__setattr__(self, "path", unquote(self.url[len("sqlite:///") :]) or DEFAULT_SQLITE_PATH)
        return self


class PostgresDatabaseConfig(_NetworkConfig):
    """PostgreSQL through a psycopg connection pool."""

    identity_fields = _NetworkConfig.identity_fields | {
        "host",
        "port",
        "hosts",
        "dbname",
        "schema_name",
        "table_prefix",
    }
    # The user only matters through libpq's default dbname, which tier_identity resolves.
    non_identity_fields = _NetworkConfig.non_identity_fields | {
        "user",
        "sslmode",
        "sslrootcert",
        "min_size",
        "max_size",
        "pool_timeout",
        "max_waiting",
        "statement_timeout",
        "call_timeout",
        "tcp_user_timeout",
        "target_session_attrs",
        "batching",
    }

    type: Literal["postgres"] = "postgres"
    host: str | None = Field(None, description="Overrides the URL's host; without a URL, default localhost.")
    port: int | None = Field(None, gt=0, lt=65536, description="Overrides the URL's port; without a URL, default 5432.")
    hosts: list[str] | None = Field(
        None,
        description="Several servers (a primary and its standbys), 'host:port' each, instead of host; the pool "
        "connects to the one accepting writes and follows a promoted standby. A URL may list them too "
        "(postgresql://h1:5432,h2:5433/app).",
    )
    target_session_attrs: Literal["read-write", "primary", "any"] | None = Field(
        None,
        description="Which of several hosts to use: read-write (the default with several hosts) or primary; "
        "'any' with one host only.",
    )
    dbname: str | None = None
    user: str | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    sslrootcert: str | None = None
    schema_name: str = Field(
        "public",
        validation_alias=AliasChoices("schema", "schema_name", "schemaName"),
        serialization_alias="schema",
        description="Schema holding kvstore's tables (quoted as an identifier): 1 to 63 UTF-8 bytes, no NUL.",
    )
    table_prefix: str = Field("kvstore_", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
    min_size: int = Field(1, ge=0)
    max_size: int = Field(10, gt=0)
    pool_timeout: PositiveSeconds = Field(5.0, description="How long a call waits for a pooled connection.")
    max_waiting: int = Field(0, ge=0, description="Callers allowed to queue for a connection (0 = unlimited).")
    statement_timeout: PositiveSeconds = Field(5.0, description="Server-side deadline of one statement.")
    call_timeout: PositiveSeconds | None = Field(
        None,
        description="Client-side deadline of one call, pool checkout included; holds even against a frozen "
        "server (default statement_timeout + 0.25 s).",
    )
    tcp_user_timeout: PositiveSeconds = Field(5.0, description="Deadline for unacknowledged data on the socket.")
    fallback: list[DatabaseFallback] | None = Field(None, description=_FALLBACK_HELP)
    batching: bool = Field(True, description=_BATCHING_HELP)

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        # PostgreSQL cuts identifiers at 63 bytes (NAMEDATALEN - 1) with only a NOTICE: two
        # long names would silently share one schema. Checked here, not at connect.
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("schema must not contain lone surrogates") from None
        if "\x00" in value or not 0 < size <= 63:
            raise ValueError("schema must be 1 to 63 UTF-8 bytes with no NUL (PostgreSQL truncates longer names)")
        return value

    @model_validator(mode="after")
    def _check(self) -> PostgresDatabaseConfig:
        if self.url is not None and _url_scheme(self.url) not in ("postgres", "postgresql"):
            raise ValueError("a PostgreSQL URL starts with postgresql://")
        if self.min_size > self.max_size:
            raise ValueError("min_size must not exceed max_size")
        # Every field named like a constructor keyword is passed to it (from_config), so the
        # host and port stay None unless given, and a URL's own host and port then hold;
        # without a URL they default here (not marked as given).
        if self.hosts is not None and (not self.hosts or self.host is not None):
            raise ValueError("give either host or a non-empty hosts list, not both")
        if self.url is None:
            if self.host is None and self.hosts is None:
                object.__setattr__(self, "host", "localhost")
            if self.port is None:
                object.__setattr__(self, "port", 5432)
        return self


DatabaseFallback = Annotated[
    Literal["sqlite", "memory"] | SqliteDatabaseConfig | MemoryDatabaseConfig,
    Field(description="A backend type, or a full config for it."),
]

DatabaseConfig = Annotated[
    MemoryDatabaseConfig | SqliteDatabaseConfig | PostgresDatabaseConfig,
    Field(discriminator="type"),
]

#: The backend types the config unions above know; others come from the registry.
_BUILTIN_TYPES = {"cache": {"memory", "redis"}, "database": {"memory", "sqlite", "postgres"}}

for _model in (MemoryCacheConfig, RedisCacheConfig, MemoryDatabaseConfig, SqliteDatabaseConfig, PostgresDatabaseConfig):
    _model.model_rebuild()


# --- the whole config ---------------------------------------------------------------

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")


def _substitute(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """Replace ``$VAR`` / ``${VAR}`` in every string of ``value``; ``$$`` is a literal ``$``.

    A reference to an unset variable is an error naming it, except where it may be
    part of a literal password, which no message may quote:

    - in a ``password`` field it is an error that names nothing;
    - in a URL's password (``user:p$ss@host`` or ``?password=p$ss``) it is kept
      literally, so a pasted password with a ``$`` in it works; only a password
      that is nothing but one reference (``user:$PW@host``) is an error, naming nothing.

    ``$$`` is a literal ``$`` everywhere, passwords included.
    """
    if isinstance(value, str):
        if "$" not in value:
            return value
        secret = "password" in path.lower()
        spans = _secret_spans(value) if path.rsplit(".", 1)[-1].lower() == "url" else []
        for start, end in spans:
            whole = _VAR.fullmatch(value, start, end)
            if whole is not None and not whole["dollar"] and (whole["braced"] or whole["bare"]) not in env:
                raise ConfigError(
                    f"the password in {path} refers to an environment variable that is not set "
                    "(write $$ for a literal $ in a password)"
                )

        def replace(match: re.Match[str]) -> str:
            if match["dollar"]:
                return "$"
            name = match["braced"] or match["bare"]
            if name in env:
                return env[name]
            if any(start <= match.start() < end for start, end in spans):
                return match[0]  # part of a literal password
            if secret:  # the "name" may be part of a literal password: never echo it
                raise ConfigError(
                    f"{path} refers to an environment variable that is not set (write $$ for a literal $ in a password)"
                )
            raise ConfigError(f"{path or 'config'} refers to ${name}, which is not set in the environment")

        return _VAR.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Where a URL (before substitution) holds passwords; unsure, all before its last ``@``."""
    try:
        return _Url(url, template=True).secret_spans()
    except ValueError:
        at = url.rfind("@")
        return [(0, at)] if at >= 0 else []


class StorageConfig(_Model):
    """The whole configuration: a cache tier and a database tier.

    With no arguments it is the embedded default: a memory cache and a SQLite
    database in ``./.kvstore/kvstore.db``.
    """

    cache: CacheConfig = Field(default_factory=MemoryCacheConfig)
    database: DatabaseConfig = Field(default_factory=SqliteDatabaseConfig)
    telemetry: bool = Field(
        False, description="Trace and measure every store operation with OpenTelemetry (needs kvstore-sdk[otel])."
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_variables(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, Mapping):
            environ = (info.context or {}).get("environ", os.environ)
            return _substitute(data, "", environ)
        return data

    @field_validator("cache", "database", mode="wrap")
    @classmethod
    def _registered_backend(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """A backend added with `kvstore._registry.register` is validated by its own config model."""
        type_ = value.get("type") if isinstance(value, Mapping) else None
        if isinstance(type_, str) and type_ not in _BUILTIN_TYPES[info.field_name or ""]:
            from kvstore._registry import REGISTRY

            entry = REGISTRY.get((info.field_name or "", type_))
            if entry is not None:
                return entry.config_model().model_validate(value)
        return handler(value)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> StorageConfig:
        """Build from a dict shaped like the TOML/YAML file; errors become `ConfigError`.

        ``$VAR`` / ``${VAR}`` in values are read from ``environ`` (default: the process environment).
        """
        try:
            return cls.model_validate(data, context=None if environ is None else {"environ": environ})
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> StorageConfig:
        """Load a ``.toml``, ``.yaml`` or ``.yml`` file.

        A file may hold the config at its top level or under a ``storage`` table.
        """
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(file)!r}: {exc.strerror}") from exc
        suffix = file.suffix.lower()
        if suffix == ".toml":
            import tomllib

            try:
                data: Any = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{str(file)!r} is not valid TOML: {exc}") from exc
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:
                raise MissingDependencyError("YAML config", "yaml", "PyYAML") from exc
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{str(file)!r} is not valid YAML: {exc}") from exc
        else:
            raise ConfigError(f"config files are .toml, .yaml or .yml, not {str(file)!r}")
        if not isinstance(data, Mapping):
            raise ConfigError(f"{str(file)!r} must hold a table with 'cache' and 'database'")
        if "storage" in data and isinstance(data["storage"], Mapping):
            data = data["storage"]
        return cls.from_mapping(data)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageConfig:
        """Build from ``KVSTORE_CACHE__TYPE``, ``KVSTORE_DATABASE__URL``, ... variables.

        Unset tiers take their defaults; ``KVSTORE_CONFIG`` may name a config file.
        """
        env = os.environ if environ is None else environ
        if env.get("KVSTORE_CONFIG"):
            return cls.from_file(env["KVSTORE_CONFIG"])
        data: dict[str, Any] = {}
        for name, value in env.items():
            path = name.lower().split("__")
            if not path[0].startswith("kvstore_") or len(path) < 2 or not all(path):
                continue
            tier = path[0].removeprefix("kvstore_")
            if tier not in ("cache", "database"):
                continue
            node = data.setdefault(tier, {})
            for part in path[1:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{name} conflicts with another KVSTORE_ variable")
            node[path[-1]] = value
        for tier, values in data.items():
            if isinstance(values.get("fallback"), str):
                values["fallback"] = _fallback_from_env(values["fallback"], tier)
        return cls.from_mapping(data, environ=env)


def _fallback_from_env(text: str, tier: str) -> Any:
    """``KVSTORE_<TIER>__FALLBACK``: a JSON list (``[]``, ``["memory"]``), ``sqlite,memory``, or empty for ``[]``."""
    text = text.strip()
    if text.startswith("["):
        import json

        try:
            return json.loads(text)
        except ValueError:
            raise ConfigError(f"KVSTORE_{tier.upper()}__FALLBACK is not a valid JSON list") from None
    return [name.strip() for name in text.split(",") if name.strip()]


def _describe(exc: ValidationError) -> str:
    """A config error message with locations and reasons, never the input values."""
    lines = [f"invalid kvstore config ({exc.error_count()} error(s)):"]
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(config: StorageConfig | Mapping[str, Any] | str | os.PathLike[str] | None) -> StorageConfig:
    """Turn whatever `StorageManager` was given into a `StorageConfig`.

    ``None`` reads ``KVSTORE_*`` environment variables, falling back to the
    embedded default (memory cache + SQLite file).
    """
    if isinstance(config, StorageConfig):
        return config
    if config is None:
        return StorageConfig.from_env()
    if isinstance(config, Mapping):
        return StorageConfig.from_mapping(config)
    if isinstance(config, str | os.PathLike):
        return StorageConfig.from_file(config)
    raise ConfigError(f"config must be a StorageConfig, dict or file path, not {type(config).__name__}")
