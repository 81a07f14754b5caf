"""The ``kvstore`` command, in-process (``kvstore.cli.main``) and as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from kvstore import SqliteDatabase
from kvstore._core.urls import config_from_url, redact_url
from kvstore.cli import main
from kvstore.config import MemoryCacheConfig, PostgresDatabaseConfig, RedisCacheConfig, SqliteDatabaseConfig
from kvstore.errors import ConfigError

pytest.importorskip("typer")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    return subprocess.run(
        [sys.executable, "-m", "kvstore", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'data.db'}"


def test_urls_select_backends_and_redact_passwords() -> None:
    """Each URL scheme becomes its tier's config model; printed URLs never carry the password."""
    assert config_from_url("memory://")[0] == "database"
    assert isinstance(config_from_url("memory://cache")[1], MemoryCacheConfig)
    tier, redis = config_from_url("rediss://u:pw@h:6380/2", key_prefix="app:")
    assert (tier, type(redis), redis.key_prefix, redis.tls) == ("cache", RedisCacheConfig, "app:", True)
    tier, pg = config_from_url("postgresql://app:s3cret@db/app")
    assert (tier, type(pg)) == ("database", PostgresDatabaseConfig)
    assert "s3cret" not in repr(pg)
    assert config_from_url("sqlite:///x/y.db")[1] == SqliteDatabaseConfig(url="sqlite:///x/y.db")
    assert redact_url("postgresql://app:s3cret@db:5432/app") == "postgresql://app:***@db:5432/app"
    with pytest.raises(ConfigError, match="cannot tell the backend"):
        config_from_url("mysql://root:hunter2@x/y")


def test_data_commands_round_trip_json(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """set/get/keys/append/range/delete take and print JSON against a store chosen by URL."""
    assert run(capsys, "set", "user:1", '{"name": "Ada", "tags": ["x"]}', "--url", db_url) == (0, "OK\n", "")
    assert run(capsys, "get", "user:1", "--url", db_url)[1] == '{"name":"Ada","tags":["x"]}\n'
    assert run(capsys, "set", "user:1", "1", "--nx", "--url", db_url)[0] == 1
    assert run(capsys, "set", "tmp", '"t"', "--ttl", "60", "--url", db_url)[0] == 0
    assert run(capsys, "append", "log", "1", '{"a": 2}', '"three"', "--url", db_url)[1] == "3\n"
    assert orjson.loads(run(capsys, "range", "log", "--url", db_url)[1]) == [1, {"a": 2}, "three"]
    assert orjson.loads(run(capsys, "range", "log", "--url", db_url, "--", "-2", "-1")[1]) == [{"a": 2}, "three"]
    assert run(capsys, "keys", "--url", db_url)[1].split() == ["log", "tmp", "user:1"]
    assert orjson.loads(run(capsys, "keys", "user:*", "--json", "--url", db_url)[1]) == ["user:1"]
    assert run(capsys, "delete", "tmp", "nope", "--url", db_url)[1] == "1\n"
    with SqliteDatabase(db_url[len("sqlite:///") :]) as store:
        assert store.get("user:1") == {"name": "Ada", "tags": ["x"]}


def test_negative_indices_on_a_file(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """The Redis habits: negative indices and amounts are arguments, not unknown options."""
    assert run(capsys, "append", "log", "1", "-2", "3", "-4", "--url", db_url)[1] == "4\n"
    assert orjson.loads(run(capsys, "range", "log", "0", "-1", "--url", db_url)[1]) == [1, -2, 3, -4]
    assert orjson.loads(run(capsys, "range", "log", "-20", "-1", "--url", db_url)[1]) == [1, -2, 3, -4]
    assert orjson.loads(run(capsys, "range", "log", "-2", "-1", "--url", db_url)[1]) == [3, -4]
    assert run(capsys, "trim", "log", "-3", "-1", "--url", db_url)[1] == "1\n"
    assert orjson.loads(run(capsys, "range", "log", "--url", db_url)[1]) == [-2, 3, -4]
    assert run(capsys, "incr", "n", "-5", "--url", db_url)[1] == "-5\n"
    assert run(capsys, "incr", "n", "--url", db_url)[1] == "-4\n"
    assert run(capsys, "set", "v", "-7", "--url", db_url)[0] == 0
    assert run(capsys, "get", "v", "--url", db_url)[1] == "-7\n"
    assert run(capsys, "delete", "v", "n", "missing", "--url", db_url)[1] == "2\n"
    assert run(capsys, "set", "f", "-2.5e3", "--url", db_url)[0] == 0
    assert run(capsys, "get", "f", "--url", db_url)[1] == "-2500.0\n"


def test_a_mistyped_option_is_still_an_error(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """Commands that take negative numbers still refuse an unknown option instead of storing it as data."""
    for args in (
        ["incr", "--by", "3"],
        ["incr", "n", "--nope"],
        ["range", "log", "--strat", "0"],
        ["set", "k", "1", "-x"],
    ):
        code, _, err = run(capsys, *args, "--url", db_url)
        assert code == 2, args
        assert "no such option" in err.lower(), args
    with SqliteDatabase(db_url[len("sqlite:///") :]) as store:
        assert store.keys() == []


def test_prefix_and_default_config(capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str) -> None:
    """Without --url the config's database tier is used (embedded default); --prefix namespaces keys."""
    assert run(capsys, "set", "k", "1", "--prefix", "app:")[0] == 0
    assert run(capsys, "keys", "--prefix", "app:")[1] == "k\n"
    assert run(capsys, "keys")[1] == ""  # namespaces are isolated
    assert run(capsys, "get", "k", "--prefix", "app:")[1] == "1\n"
    assert (tmp_path / ".kvstore" / "kvstore.db").exists()


def test_errors_are_one_line_and_exit_non_zero(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """A missing key, bad JSON, a list command on a cache, an unknown scheme: one line, non-zero."""
    code, out, err = run(capsys, "get", "missing", "--url", db_url)
    assert (code, out, err.strip()) == (1, "", "not found: 'missing'")
    code, _, err = run(capsys, "set", "k", "{oops", "--url", db_url)
    assert code == 2
    assert "not valid JSON" in err
    code, _, err = run(capsys, "range", "k", "--url", "memory://cache")
    assert (code, err.strip()) == (1, "error: the memory store is a cache: lists live on the database tier")
    code, _, err = run(capsys, "get", "k", "--url", "mysql://root:hunter2@h/db")
    assert code == 1
    assert err.count("\n") == 1
    assert "hunter2" not in err


def test_unreachable_backend_no_traceback_no_secret(tmp_path: Path) -> None:
    """An unreachable server prints one line without the password; --debug adds the traceback."""
    url = "redis://admin:topsecret@127.0.0.1:1/0"
    result = run_process("get", "k", "--url", url, "--timeout", "0.3", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert "topsecret" not in result.stderr + result.stdout
    debug = run_process("--debug", "get", "k", "--url", url, "--timeout", "0.3", cwd=tmp_path)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
    assert "topsecret" not in debug.stderr


def test_health_table_and_json(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """health shows both tiers; an absent Redis shows the cache degraded onto memory, still ok."""
    code, out, _ = run(capsys, "health", "--database", db_url)
    assert code == 0
    assert "sqlite" in out
    assert out.strip().endswith("ok")
    code, out, _ = run(capsys, "health", "--cache", "redis://:pw@127.0.0.1:1/0", "--timeout", "0.3", "--json")
    report = orjson.loads(out)
    assert code == 0
    assert report["degraded"] is True
    assert (report["cache"]["configured"], report["cache"]["active"]) == ("redis", "memory")
    assert report["cache"]["durable"] is False
    assert "pw@" not in out


def _fill(path: str, values: int, lists: int, items: int) -> None:
    with SqliteDatabase(path) as store:
        store.mset([(f"v:{i:05d}", {"i": i}, 3600 if i % 2 else None) for i in range(values)])
        store.set("null", None)
        for n in range(lists):
            store.extend(f"w:{n:03d}", [{"n": n, "j": j} for j in range(items)])
        store.expire("w:000", 3600)


def test_copy_moves_a_namespace_and_verifies(capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str) -> None:
    """copy moves values (with TTLs), null values and lists between two backends and verifies the counts."""
    source = str(tmp_path / "src.db")
    _fill(source, values=1200, lists=3, items=2500)
    code, out, err = run(capsys, "copy", "--from", f"sqlite:///{source}", "--to", db_url, "--batch", "300")
    assert code == 0, err
    assert "copied 1204 keys (1201 values, 3 lists, 7500 list items)" in out
    assert "verified: 1204 keys" in out
    with SqliteDatabase(db_url[len("sqlite:///") :]) as target:
        assert target.get("v:00007") == {"i": 7}
        assert 3500 < (target.ttl("v:00007") or 0) <= 3600
        assert target.ttl("v:00008") is None
        assert target.exists("null")
        assert target.get_range("w:002", -1, -1) == [{"n": 2, "j": 2499}]
        assert target.ttl("w:000") is not None
    assert not list((tmp_path / ".kvstore").glob("copy-*.json"))  # the checkpoint is gone after success


def test_copy_interrupted_then_resumed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy interrupted in the middle of a list resumes from its checkpoint and ends identical."""
    source = str(tmp_path / "src.db")
    _fill(source, values=900, lists=4, items=3000)
    real_extend = SqliteDatabase.extend
    calls = 0

    def interrupting_extend(self: SqliteDatabase, key: str, values: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 6:  # the third chunk of the second list
            raise KeyboardInterrupt
        return real_extend(self, key, values)

    monkeypatch.setattr(SqliteDatabase, "extend", interrupting_extend)
    args = ("copy", "--from", f"sqlite:///{source}", "--to", db_url, "--batch", "250")
    code, _, err = run(capsys, *args)
    assert code == 130
    assert "run the same command again to resume" in err
    monkeypatch.setattr(SqliteDatabase, "extend", real_extend)
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "copied 155 keys (151 values, 4 lists, 10000 list items)" in out
    assert "resumed from the checkpoint after 750 keys" in out
    assert "verified: 905 keys (901 values, 4 lists, 12000 list items)" in out
    with SqliteDatabase(db_url[len("sqlite:///") :]) as target:
        for n in range(4):
            assert target.get_range(f"w:{n:03d}", 0, -1) == [{"n": n, "j": j} for j in range(3000)]


def test_copy_of_lists_into_a_cache_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Lists cannot go to a cache tier: one clear line."""
    source = str(tmp_path / "src.db")
    _fill(source, values=1, lists=1, items=1)
    code, _, err = run(capsys, "copy", "--from", f"sqlite:///{source}", "--to", "memory://cache")
    assert code == 1
    assert "is a cache and cannot hold the list" in err


def test_demo_and_bench_run_as_a_subprocess(tmp_path: Path) -> None:
    """`python -m kvstore demo` shows the three jobs; `bench` runs the quick benchmark."""
    result = run_process("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for text in ("now holds 1 message(s)", "session", "degraded=True", "writes still work"):
        assert text in result.stdout
    bench = subprocess.run(
        [sys.executable, "-m", "kvstore", "bench"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert bench.returncode == 0, bench.stderr
    assert "ops/s" in bench.stdout


def test_demo_works_without_the_cli_extra(tmp_path: Path) -> None:
    """Without typer/rich, `python -m kvstore demo` still runs; other commands name the extra to install."""
    code = "import sys; sys.modules['typer'] = None; from kvstore.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    demo = subprocess.run([sys.executable, "-c", code, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr
    assert "now holds 1 message(s)" in demo.stdout
    other = subprocess.run([sys.executable, "-c", code, "keys"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert other.returncode == 1
    assert other.stderr.strip() == 'error: the kvstore command needs its extra: pip install "kvstore-sdk[cli]"'


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A fresh current directory and an empty state directory, with no KVSTORE_* settings."""
    cwd, state = tmp_path / "cwd", tmp_path / "state"
    cwd.mkdir()
    state.mkdir()
    for name in [k for k in os.environ if k.startswith("KVSTORE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KVSTORE_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.chdir(cwd)
    return cwd, state


def test_health_creates_nothing_with_the_embedded_default(
    capsys: pytest.CaptureFixture[str], empty_cwd: tuple[Path, Path]
) -> None:
    """With the embedded default and no ./.kvstore yet, health reports 'not created yet' and creates nothing."""
    cwd, state = empty_cwd
    code, out, err = run(capsys, "health")
    assert code == 0, err
    assert "not created yet" in out
    assert out.strip().endswith("ok")
    code, out, _ = run(capsys, "health", "--json")
    report = orjson.loads(out)
    assert (report["database"]["configured"], report["database"]["active"]) == ("sqlite", "sqlite")
    assert report["database"]["healthy"] is True
    assert "not created yet" in report["database"]["note"]
    assert _tree(cwd) == []
    assert _tree(state) == []
    result = run_process("health", cwd=cwd)  # and as the installed command
    assert result.returncode == 0, result.stderr
    assert _tree(cwd) == []


def test_health_of_an_unreachable_primary_creates_no_journal_or_fallback_file(
    capsys: pytest.CaptureFixture[str], empty_cwd: tuple[Path, Path]
) -> None:
    """An unreachable PostgreSQL shows the fallback that would serve, without opening or creating its files."""
    cwd, state = empty_cwd
    url = "postgresql://app:topsecret@127.0.0.1:1/app"
    code, out, _ = run(capsys, "health", "--database", url, "--timeout", "0.3", "--json")
    report = orjson.loads(out)
    assert code == 0
    assert report["database"]["configured"] == "postgres"
    assert report["database"]["degraded"] is True
    assert report["database"]["active"] in ("sqlite", "memory")
    assert "postgres" in report["database"]["last_error"]
    assert "topsecret" not in out
    assert _tree(cwd) == []
    assert _tree(state) == []


def test_health_with_no_fallback_is_unhealthy(capsys: pytest.CaptureFixture[str], empty_cwd: tuple[Path, Path]) -> None:
    """fallback: [] and an unreachable primary: the tier is unhealthy and health exits 1."""
    cwd, _ = empty_cwd
    config = cwd.parent / "kv.toml"
    config.write_text('[cache]\ntype = "redis"\nurl = "redis://127.0.0.1:1/0"\nsocket_timeout = 0.2\nfallback = []\n')
    code, out, _ = run(capsys, "health", "--config", str(config))
    assert code == 1
    assert "UNHEALTHY" in out
    assert _tree(cwd) == []


def test_health_probes_an_existing_sqlite_file(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """An existing SQLite database is opened and pinged: a latency, no note."""
    path = db_url[len("sqlite:///") :]
    with SqliteDatabase(path) as store:
        store.set("k", 1)
    code, out, _ = run(capsys, "health", "--database", db_url, "--json")
    report = orjson.loads(out)
    assert code == 0
    assert report["database"]["latency_ms"] is not None
    assert report["database"]["note"] is None


def test_health_reports_the_journal_of_an_outage_without_changing_it(
    capsys: pytest.CaptureFixture[str], empty_cwd: tuple[Path, Path]
) -> None:
    """Writes journaled during an outage show as pending_writes in `kvstore health`, read-only."""
    from kvstore import StorageManager

    cwd, state = empty_cwd
    url = "postgresql://app@127.0.0.1:1/app"
    config = {"cache": {"type": "memory"}, "database": {"type": "postgres", "url": url, "connect_timeout": 0.3}}
    with StorageManager(config) as storage:
        storage.database.set("during", 1)  # the primary never answered: journaled for replay
        storage.database.append("chat", "hi")
    before = sorted((p.name, p.stat().st_size) for p in state.rglob("*"))
    code, out, _ = run(capsys, "health", "--database", url, "--timeout", "0.3", "--json")
    report = orjson.loads(out)
    assert code == 0
    assert report["database"]["pending_writes"] == 2
    assert report["database"]["conflicts"] == 0
    assert sorted((p.name, p.stat().st_size) for p in state.rglob("*")) == before
    assert _tree(cwd) == []
