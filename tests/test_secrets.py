"""Passwords in every URL shape end up in the SecretStr, exactly, and nowhere else (kvstore.config)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from kvstore._core.urls import config_from_url, redact_url
from kvstore.config import PostgresDatabaseConfig, RedisCacheConfig, StorageConfig, _split_password
from kvstore.errors import BackendUnavailableError, ConfigError

#: Printable characters, the URL's own delimiters over-represented.
PASSWORDS = st.text(
    alphabet=st.one_of(
        st.sampled_from("/#?@$%:[]&=+ !'\"\\;,~"),
        st.characters(min_codepoint=0x21, max_codepoint=0x7E),
        st.characters(categories=["L", "N"]),
    ),
    min_size=1,
    max_size=24,
)
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def raw(password: str) -> str:
    """``password`` as pasted into a URL: only a ``%`` that would read as an escape is written ``%25``."""
    return re.sub(r"%(?=[0-9A-Fa-f]{2})", "%25", password)


def fragments(secret: str) -> Iterator[str]:
    """Every substring of ``secret`` of length 3 or more."""
    for size in range(3, len(secret) + 1):
        for start in range(len(secret) - size + 1):
            yield secret[start : start + size]


def renderings(config: Any) -> str:
    """Everything a config shows of itself: repr, str, model_dump, model_dump_json."""
    return "\n".join((repr(config), str(config), str(config.model_dump()), config.model_dump_json()))


def assert_no_fragment(secret: str, text: str, baseline: str = "") -> None:
    """No 3+ character piece of ``secret`` is in ``text``, unless the same config without it shows it too."""
    leaked = [piece for piece in fragments(secret) if piece in text and piece not in baseline]
    assert not leaked, f"password fragments leaked: {leaked[:5]}"


#: (URL template, the same URL without the password): {pw} is the password as written in it.
SHAPES: list[tuple[str, str, str]] = [
    ("postgres", "postgresql://app:{pw}@db.example:5432/app", "postgresql://app@db.example:5432/app"),
    (
        "postgres",
        "postgresql://app:{pw}@h1:5432,h2:5433/app?sslmode=require",
        "postgresql://app@h1:5432,h2:5433/app?sslmode=require",
    ),
    ("redis", "redis://:{pw}@cache:6379/0", "redis://cache:6379/0"),
    ("redis", "rediss://user:{pw}@[::1]:6380/2", "rediss://user@[::1]:6380/2"),
    ("redis", "redis://cache:6379/0?password={pw}", "redis://cache:6379/0"),
    (
        "postgres",
        "postgresql://app@db/app?password={pw}&application_name=x",
        "postgresql://app@db/app?application_name=x",
    ),
]


def model_for(kind: str) -> Callable[..., Any]:
    return PostgresDatabaseConfig if kind == "postgres" else RedisCacheConfig


def ambiguous(template: str, written: str) -> bool:
    """Documented ambiguity: ``user:12?name=...@host`` also reads as host ``user``, port 12 and a query."""
    has_user = re.search(r"//[^:/@]+:\{pw\}", template) is not None
    return has_user and re.match(r"[0-9]+\?[^@]*[A-Za-z_][A-Za-z0-9_.-]*=", written) is not None


@pytest.mark.parametrize(("kind", "template", "bare"), SHAPES)
@given(password=PASSWORDS)
def test_every_password_moves_to_the_secret_exactly(kind: str, template: str, bare: str, password: str) -> None:
    """Raw (/ # ? @ $ % : [ ] unencoded) or percent-encoded, the password is the SecretStr and nowhere else."""
    in_query = "password={pw}" in template
    forms = [quote(password, safe="")]
    if not (in_query and "&" in password):  # '&' separates query parameters: it must be %26 there
        forms.append(raw(password))
    baseline = renderings(model_for(kind)(url=bare, password="x"))
    for written in forms:
        if ambiguous(template, written):
            continue
        config = model_for(kind)(url=template.format(pw=written))
        assert config.password is not None
        assert config.password.get_secret_value() == password
        assert config.url == bare
        assert_no_fragment(password, renderings(config), baseline)
        assert_no_fragment(password, redact_url(template.format(pw=written)), redact_url(template.format(pw="x")))


@given(password=PASSWORDS)
def test_through_storage_config_with_substitution(password: str) -> None:
    """From a dict (with $VAR substitution): $$ is a literal $; an unset $NAME inside a URL password is kept."""
    names = [a or b for a, b in _VAR.findall(password)]
    forms = [("escaped", raw(password).replace("$", "$$"))]
    if "$$" not in password and not any(name in os.environ for name in names):
        forms.append(("pasted", raw(password)))  # as is: unresolved references stay literal
    neutral = {"database": {"type": "postgres", "url": "postgresql://app@db/app", "password": "x"}}
    baseline = renderings(StorageConfig.from_mapping(neutral))
    for form, written in forms:
        if ambiguous("//app:{pw}", written):
            continue
        data = {"database": {"type": "postgres", "url": f"postgresql://app:{written}@db/app"}}
        if form == "pasted" and _VAR.fullmatch(password):
            # A password that is nothing but one reference must name a set variable.
            with pytest.raises(ConfigError) as info:
                StorageConfig.from_mapping(data)
            assert_no_fragment(password, str(info.value), "the password in database.url refers to")
            continue
        config = StorageConfig.from_mapping(data)
        assert isinstance(config.database, PostgresDatabaseConfig)
        assert config.database.password is not None
        assert config.database.password.get_secret_value() == password
        assert config.database.url == "postgresql://app@db/app"
        assert_no_fragment(password, renderings(config), baseline)


def _bad_configs(password: str) -> list[dict[str, Any]]:
    written = quote(password, safe="")
    pasted = raw(password).replace("$", "$$")
    return [
        {"database": {"type": "postgres", "url": f"postgresql://app:{written}@db/app", "port": "nope"}},
        {"database": {"type": "postgres", "url": f"postgresql://app:{pasted}@db/app", "max_size": 0}},
        {"cache": {"type": "redis", "url": f"http://user:{written}@cache/0"}},
        {"cache": {"type": "redis", "url": f"redis://:{written}@cache/0", "password": {"x": password}}},
        {"database": {"type": "postgres", "password": {"nested": password}, "port": "x"}},
    ]


@given(password=PASSWORDS)
def test_errors_never_quote_the_password(password: str) -> None:
    """A config that fails validation for another reason says so without any piece of the password."""
    assume(not ambiguous("//app:{pw}", raw(password)))
    for data, neutral in zip(_bad_configs(password), _bad_configs("x"), strict=True):
        with pytest.raises(ConfigError) as info:
            StorageConfig.from_mapping(data)
        with pytest.raises(ConfigError) as baseline:
            StorageConfig.from_mapping(neutral)
        assert_no_fragment(password, str(info.value), str(baseline.value))


@given(password=PASSWORDS)
def test_the_drivers_parse_the_bare_url(password: str) -> None:
    """What reaches redis-py and libpq is the bare URL: parsing it raises nothing that could quote the password."""
    redis_common = pytest.importorskip("kvstore.redis._common")
    redis_connection = pytest.importorskip("redis.connection")
    pg = pytest.importorskip("kvstore.postgres._sql")
    written = raw(password)
    assume(not ambiguous("app:{pw}", written))
    config = RedisCacheConfig(url=f"redis://app:{written}@cache:6380/3")
    assert config.url is not None
    url, secret, cluster = redis_common.normalize_url(config.url)
    assert (secret, cluster) == (None, False)
    assert redis_connection.parse_url(url)["port"] == 6380
    pg_config = PostgresDatabaseConfig(url=f"postgresql://app:{written}@db:5433/app")
    conninfo, secret = pg.build_conninfo(pg_config.url)
    assert secret is None
    assert_no_fragment(password, conninfo, pg.build_conninfo("postgresql://app@db:5433/app")[0])


@pytest.mark.parametrize(
    ("url", "password", "bare"),
    [
        ("postgresql://app:p/a#s?w@rd$x%@db:5432/app", "p/a#s?w@rd$x%", "postgresql://app@db:5432/app"),
        ("redis://:p#w@host:6379/0", "p#w", "redis://host:6379/0"),
        ("postgresql://app:12/ss@db/app", "12/ss", "postgresql://app@db/app"),
        ("postgresql://app:p%2Fw%40x@db/app", "p/w@x", "postgresql://app@db/app"),
        ("postgresql://app:100%@db/app", "100%", "postgresql://app@db/app"),
        ("postgresql://app:%2541@db/app", "%41", "postgresql://app@db/app"),
        ("redis://cache:6379/0?password=p@w#x&ssl_cert_reqs=none", "p@w#x", "redis://cache:6379/0?ssl_cert_reqs=none"),
        ("unix://:pw@/tmp/redis.sock?db=1", "pw", "unix:///tmp/redis.sock?db=1"),
        ("postgresql://user@tenant:pw@db/app", "pw", "postgresql://user%40tenant@db/app"),
    ],
)
def test_the_last_at_before_the_path_ends_the_password(url: str, password: str, bare: str) -> None:
    """The LAST '@' followed by a host list ends the userinfo; % escapes only before two hex digits."""
    assert _split_password(url) == (bare, password)


@pytest.mark.parametrize(
    "url",
    [
        "redis://cache:6379/0?client_name=a@b",
        "postgresql://db/app?user=me@tenant",
        "postgresql://app@db/app?application_name=x@y",
    ],
)
def test_an_at_in_a_query_value_is_no_userinfo(url: str) -> None:
    """An '@' inside a query value (client_name=a@b) leaves the URL as it is."""
    assert _split_password(url) == (url, None)


def test_the_one_ambiguous_shape_is_documented() -> None:
    """``user:12?name=v@host`` reads as host ``user``, port 12 and a query (config.py says: encode the ``?``)."""
    url = "postgresql://app:12?a=b@db/app"
    assert _split_password(url) == (url, None)
    assert _split_password("postgresql://app:12%3Fa=b@db/app") == ("postgresql://app@db/app", "12?a=b")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:p/w@bad host/app",
        "postgresql://app:s3/cr@t@db/app@x y",
        "postgresql://app:s3cr%FFt@db/app",
        "redis://:s3/cr@t@ca che/0",
    ],
)
def test_an_unreadable_url_is_a_config_error_that_quotes_nothing(url: str) -> None:
    """When no reading is safe, validation fails with ConfigError and none of the URL is quoted."""
    secret = url.split("://", 1)[1]
    kind = "redis" if url.startswith("redis") else "postgres"
    tier = "cache" if kind == "redis" else "database"
    with pytest.raises(ConfigError) as info:
        StorageConfig.from_mapping({tier: {"type": kind, "url": url}})
    assert "percent-encode" in str(info.value) or "percent-encoded" in str(info.value)
    for piece in ("s3", "cr", "bad host", "p/w", "%FF"):
        if piece in secret:
            assert piece not in str(info.value)
    with pytest.raises(ValidationError) as direct:
        model_for(kind)(url=url)
    assert "s3" not in str(direct.value)
    assert redact_url(url) == "<unparsable URL>"
    with pytest.raises(ConfigError) as cli:
        config_from_url(url)
    assert "s3" not in str(cli.value)


def test_dollar_rules_in_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """$VAR in a URL password is substituted; an unset one is kept literally; $$ is a literal $."""
    monkeypatch.setenv("KV_TEST_PW", "fr/om#env@")
    monkeypatch.delenv("ss", raising=False)
    monkeypatch.delenv("KV_TEST_UNSET", raising=False)

    def password_of(url: str) -> str:
        config = StorageConfig.from_mapping({"database": {"type": "postgres", "url": url}})
        assert isinstance(config.database, PostgresDatabaseConfig)
        assert config.database.password is not None
        return config.database.password.get_secret_value()

    assert password_of("postgresql://app:${KV_TEST_PW}@db/app") == "fr/om#env@"
    assert password_of("postgresql://app:p$ss@db/app") == "p$ss"
    assert password_of("postgresql://app:p$$ss@db/app") == "p$ss"
    assert password_of("postgresql://app:x${KV_TEST_UNSET}y@db/app") == "x${KV_TEST_UNSET}y"
    assert password_of("postgresql://app@db/app?password=p$ss") == "p$ss"
    for whole in ("$KV_TEST_UNSET", "${KV_TEST_UNSET}"):
        with pytest.raises(ConfigError, match=r"the password in database\.url refers to an environment") as info:
            password_of(f"postgresql://app:{whole}@db/app")
        assert "KV_TEST_UNSET" not in str(info.value)
    with pytest.raises(ConfigError, match=r"\$KV_TEST_UNSET"):  # outside the password it names the variable
        password_of("postgresql://app:pw@${KV_TEST_UNSET}/app")


def test_password_field_wins_over_the_url() -> None:
    """An explicit password field is kept; the URL's is still removed from the URL."""
    config = PostgresDatabaseConfig(url="postgresql://app:from-url@db/app", password=SecretStr("field"))
    assert config.password is not None
    assert config.password.get_secret_value() == "field"
    assert config.url == "postgresql://app@db/app"


# --- end to end against the throwaway PostgreSQL ---------------------------------------


@pytest.mark.postgres
def test_canary_connects_with_a_raw_special_password(postgres_server: Any) -> None:
    """The canary role logs in through a URL with / # ? @ $ % in its password; a wrong one is not echoed."""
    if postgres_server is None:
        pytest.skip("needs the throwaway server (the canary role is created there)")
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    from kvstore import PostgresDatabase
    from tests.fixtures_postgres import CANARY_RIGHT_PASSWORD, CANARY_USER

    special = "Ca/n#a?r@y$x%:[1]"
    wrong = "Wr/o#n?g@Pa$s%:[2]"
    port = postgres_server.port
    schema = f"canary_{uuid.uuid4().hex[:8]}"

    def run(statement: Any) -> None:
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(statement)

    run(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(CANARY_USER), sql.Literal(special)))
    run(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema), sql.Identifier(CANARY_USER)))
    try:
        for written in (special, quote(special, safe="")):
            url = f"postgresql://{CANARY_USER}:{written}@127.0.0.1:{port}/postgres"
            config = StorageConfig.from_mapping(
                {"database": {"type": "postgres", "url": url, "schema": schema, "connect_timeout": 2}}
            ).database
            assert isinstance(config, PostgresDatabaseConfig)
            assert_no_fragment(special, renderings(config), renderings(config.model_copy(update={"password": None})))
            with PostgresDatabase.from_config(config) as db:
                db.set("canary", {"ok": True})
                assert db.get("canary") == {"ok": True}
                assert_no_fragment(special, repr(db))
        texts = []
        for written in (wrong, quote(wrong, safe="")):
            bad = PostgresDatabaseConfig(
                url=f"postgresql://{CANARY_USER}:{written}@127.0.0.1:{port}/postgres", connect_timeout=0.5
            )
            with pytest.raises(BackendUnavailableError) as info:
                PostgresDatabase.from_config(bad)
            texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
        for text in texts:
            assert_no_fragment(wrong, text, f"{CANARY_USER} postgres 127.0.0.1 password authentication failed")
            assert_no_fragment(special, text, f"{CANARY_USER} postgres 127.0.0.1 password authentication failed")
    finally:
        run(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        run(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(CANARY_USER), sql.Literal(CANARY_RIGHT_PASSWORD))
        )
