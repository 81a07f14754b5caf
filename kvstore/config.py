"""Configuration models: one `StorageConfig` with a discriminated union per tier."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kvstore._codec import DEFAULT_MAX_VALUE_BYTES
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


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        hide_input_in_errors=True,
    )


class _TierConfig(_Model):
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
        if "\x00" in value or len(value.encode("utf-8", "surrogatepass")) > 512:
            raise ValueError("key_prefix must have no NUL and at most 512 UTF-8 bytes")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("key_prefix must not contain lone surrogates") from None
        return value


def _split_password(url: str) -> tuple[str, str | None]:
    """Return ``url`` without its password, and the password (percent-decoded).

    The password may sit in the user part (``user:pw@host``) or in the query
    (``?password=pw``, which redis-py and libpq both accept); both are removed.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_query = [v for k, v in query if k.lower() == "password"]
    if parts.password is None and not in_query:
        return url, None
    if in_query:
        parts = parts._replace(query=urlencode([(k, v) for k, v in query if k.lower() != "password"]))
    password = unquote(parts.password) if parts.password is not None else in_query[-1]
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{quote(user, safe='')}@" if user else ""
        netloc += host + (f":{parts.port}" if parts.port is not None else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts), password


class _NetworkConfig(_TierConfig):
    url: str | None = Field(None, description="Connection URL; a password in it is moved to `password`.")
    password: SecretStr | None = Field(None, description="Never printed; `$VAR` reads it from the environment.")

    @model_validator(mode="after")
    def _move_password_out_of_url(self) -> _NetworkConfig:
        if self.url is not None:
            bare, password = _split_password(self.url)
            object.__setattr__(self, "url", bare)
            if password is not None and self.password is None:
                object.__setattr__(self, "password", SecretStr(password))
        return self


# --- cache tier ---------------------------------------------------------------------


class MemoryCacheConfig(_TierConfig):
    """In-process cache: bounded (LRU), TTL-aware, not durable."""

    type: Literal["memory"] = "memory"
    max_entries: int = Field(100_000, gt=0, description="Least recently used entries are evicted past this.")
    fallback: list[CacheFallback] | None = None


class RedisCacheConfig(_NetworkConfig):
    """Redis (or Redis Cluster) cache."""

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
    fallback: list[CacheFallback] | None = None

    @model_validator(mode="after")
    def _url_flags(self) -> RedisCacheConfig:
        if self.url is not None:
            scheme = urlsplit(self.url).scheme
            if scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
                raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
            if "cluster" in scheme:
                object.__setattr__(self, "cluster", True)
            if scheme.startswith("rediss"):
                object.__setattr__(self, "tls", True)
        return self


CacheFallback = Annotated[
    Literal["memory"] | MemoryCacheConfig,
    Field(description="A backend type, or a full config for it."),
]

CacheConfig = Annotated[MemoryCacheConfig | RedisCacheConfig, Field(discriminator="type")]


# --- database tier ------------------------------------------------------------------


class MemoryDatabaseConfig(_TierConfig):
    """In-process database: values and lists, bounded, not durable."""

    type: Literal["memory"] = "memory"
    max_entries: int = Field(1_000_000, gt=0, description="Least recently used keys are evicted past this.")
    fallback: list[DatabaseFallback] | None = None


class SqliteDatabaseConfig(_TierConfig):
    """SQLite file (WAL), the embedded default."""

    type: Literal["sqlite"] = "sqlite"
    path: str = Field(DEFAULT_SQLITE_PATH, description="Database file, or ':memory:'. Directories are created.")
    url: str | None = Field(None, description="sqlite:///relative/path, sqlite:////absolute/path or sqlite:///:memory:")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="FULL survives power loss; NORMAL survives process crashes."
    )
    busy_timeout: PositiveSeconds = Field(5.0, description="How long a writer waits for the lock.")
    purge_interval: PositiveSeconds = Field(60.0, description="Seconds between sweeps of expired rows.")
    fallback: list[DatabaseFallback] | None = None

    @model_validator(mode="after")
    def _path_from_url(self) -> SqliteDatabaseConfig:
        if self.url is not None:
            if not self.url.startswith("sqlite:///"):
                raise ValueError("a SQLite URL looks like sqlite:///path/to/file.db")
            object.__setattr__(self, "path", unquote(self.url[len("sqlite:///") :]) or DEFAULT_SQLITE_PATH)
        return self


class PostgresDatabaseConfig(_NetworkConfig):
    """PostgreSQL through a psycopg connection pool."""

    type: Literal["postgres"] = "postgres"
    host: str = "localhost"
    port: int = Field(5432, gt=0, lt=65536)
    dbname: str | None = None
    user: str | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    sslrootcert: str | None = None
    schema_name: str = Field(
        "public",
        validation_alias=AliasChoices("schema", "schema_name", "schemaName"),
        serialization_alias="schema",
        description="Schema holding kvstore's tables (quoted as an identifier).",
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
    fallback: list[DatabaseFallback] | None = None

    @model_validator(mode="after")
    def _check(self) -> PostgresDatabaseConfig:
        if self.url is not None and urlsplit(self.url).scheme not in ("postgres", "postgresql"):
            raise ValueError("a PostgreSQL URL starts with postgresql://")
        if self.min_size > self.max_size:
            raise ValueError("min_size must not exceed max_size")
        return self


DatabaseFallback = Annotated[
    Literal["sqlite", "memory"] | SqliteDatabaseConfig | MemoryDatabaseConfig,
    Field(description="A backend type, or a full config for it."),
]

DatabaseConfig = Annotated[
    MemoryDatabaseConfig | SqliteDatabaseConfig | PostgresDatabaseConfig,
    Field(discriminator="type"),
]

for _model in (MemoryCacheConfig, RedisCacheConfig, MemoryDatabaseConfig, SqliteDatabaseConfig, PostgresDatabaseConfig):
    _model.model_rebuild()


# --- the whole config ---------------------------------------------------------------

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")


def _substitute(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """Replace ``$VAR`` / ``${VAR}`` in every string of ``value``; ``$$`` is a literal ``$``."""
    if isinstance(value, str):
        if "$" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            if match["dollar"]:
                return "$"
            name = match["braced"] or match["bare"]
            if name not in env:
                if "password" in path.lower():  # the "name" may be part of a literal password: never echo it
                    raise ConfigError(
                        f"{path} refers to an environment variable that is not set "
                        "(write $$ for a literal $ in a password)"
                    )
                raise ConfigError(f"{path or 'config'} refers to ${name}, which is not set in the environment")
            return env[name]

        return _VAR.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


class StorageConfig(_Model):
    """The whole configuration: a cache tier and a database tier.

    With no arguments it is the embedded default: a memory cache and a SQLite
    database in ``./.kvstore/kvstore.db``.
    """

    cache: CacheConfig = Field(default_factory=MemoryCacheConfig)
    database: DatabaseConfig = Field(default_factory=SqliteDatabaseConfig)

    @model_validator(mode="before")
    @classmethod
    def _expand_variables(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return _substitute(data, "", os.environ)
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StorageConfig:
        """Build from a dict shaped like the TOML/YAML file; errors become `ConfigError`."""
        try:
            return cls.model_validate(data)
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
        from pydantic_settings import BaseSettings, SettingsConfigDict

        class _Settings(BaseSettings):
            model_config = SettingsConfigDict(
                env_prefix="KVSTORE_", env_nested_delimiter="__", extra="ignore", case_sensitive=False
            )
            cache: dict[str, Any] = Field(default_factory=dict)
            database: dict[str, Any] = Field(default_factory=dict)

        settings = _Settings(_env_file=None) if environ is None else _settings_from(_Settings, env)
        data: dict[str, Any] = {}
        for tier, values in (("cache", settings.cache), ("database", settings.database)):
            if values:
                data[tier] = {k.lower(): v for k, v in values.items()}
        return cls.from_mapping(data)


def _settings_from(settings_cls: Any, env: Mapping[str, str]) -> Any:
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return settings_cls(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


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
