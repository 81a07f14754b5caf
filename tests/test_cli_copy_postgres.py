"""`kvstore copy` from the embedded SQLite file to PostgreSQL, interrupted once and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from kvstore import SqliteDatabase

pytest.importorskip("typer")

VALUES, LISTS, ITEMS = 100_000, 100, 1_000


@pytest.mark.postgres
@pytest.mark.slow
def test_copy_sqlite_to_postgres_interrupted_and_resumed(postgres_url: str, tmp_path: Path) -> None:
    """100,000 keys and 100 lists of 1,000 items: SIGINT mid-copy, rerun resumes, counts and contents match."""
    from kvstore._cli_app import open_store

    source = tmp_path / "app.db"
    with SqliteDatabase(source) as store:
        store.mset(
            [(f"k:{i:06d}", {"i": i, "name": f"user {i}"}, 3600 if i % 10 == 0 else None) for i in range(VALUES)]
        )
        for n in range(LISTS):
            store.extend(f"list:{n:03d}", [{"n": n, "j": j} for j in range(ITEMS)])
    prefix = f"copy-{uuid.uuid4().hex[:8]}:"
    command = [sys.executable, "-m", "kvstore", "copy", "--from", f"sqlite:///{source}", "--to", postgres_url]
    command += ["--to-prefix", prefix]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        checkpoints = tmp_path / ".kvstore"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            files = list(checkpoints.glob("copy-*.json"))
            if files:
                try:
                    after = orjson.loads(files[0].read_bytes()).get("after") or ""
                except (OSError, orjson.JSONDecodeError):
                    after = ""
                if after >= "k:020000":
                    break
            time.sleep(0.01)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert "run the same command again to resume" in err
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from the checkpoint after" in second.stdout
    total = VALUES + LISTS
    assert f"verified: {total} keys ({VALUES} values, {LISTS} lists, {LISTS * ITEMS} list items)" in second.stdout
    with open_store(postgres_url, None, prefix=prefix) as target:
        try:
            assert len(target.keys()) == total
            assert target.get("k:012345") == {"i": 12345, "name": "user 12345"}
            assert 3000 < (target.ttl("k:012340") or 0) <= 3600
            assert target.ttl("k:012341") is None
            assert target.get_range("list:099", 0, -1) == [{"n": 99, "j": j} for j in range(ITEMS)]  # type: ignore[attr-defined]
        finally:
            target.clear()
