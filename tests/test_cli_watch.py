"""`kvstore watch KEY`: prints a list's items as they are appended; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvstore import SqliteDatabase
from kvstore.cli import main

pytest.importorskip("typer")
ROOT = Path(__file__).resolve().parent.parent


def test_watch_prints_position_and_json_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data.db"
    with SqliteDatabase(path) as db:
        db.extend("log", [{"a": 1}, "two", 3])
        db.trim("log", 1, -1)
    code = main(["watch", "log", "--start", "0", "-n", "2", "--url", f"sqlite:///{path}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines() == ['1\t"two"', "2\t3"]
    code = main(["watch", "log", "--start", "-1", "-n", "1", "--url", f"sqlite:///{path}"])
    assert (code, capsys.readouterr().out) == (0, "2\t3\n")


def test_watch_rejects_a_bad_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "log", "-n", "0", "--url", f"sqlite:///{tmp_path / 'd.db'}"]) != 0
    assert "--count" in capsys.readouterr().err


def test_watch_streams_another_process_appends_and_ctrl_c_exits_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvstore", "watch", "log", "--start", "0", "--url", f"sqlite:///{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        with SqliteDatabase(path) as db:
            for i in range(3):
                db.append("log", {"n": i})
                assert proc.stdout.readline() == f'{i}\t{{"n":{i}}}\n'
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
