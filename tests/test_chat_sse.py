"""examples/chat_sse.py served by uvicorn in a subprocess, read by a real HTTP client (httpx) while
this process appends: the exact SSE events, resumption with Last-Event-ID, posting, and the reset
when a PostgreSQL primary down at start serves again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from kvstore import ChatHistory, ChatMessage, StorageManager
from tests.fixtures_postgres import PgServer

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chat_sse.py"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example app on a free port, its store in ``tmp_path`` (the test's cwd too)."""
    monkeypatch.chdir(tmp_path)
    with serve(tmp_path, {}) as url:
        yield url


@contextmanager
def serve(tmp_path: Path, config: dict[str, str]) -> Iterator[str]:
    """The example app on a free port in ``tmp_path``, configured by ``config`` (``KVSTORE_*`` variables)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")} | config
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"{url}/chat/warmup/messages", json={"role": "system", "content": "up"}, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "the example server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def read_events(lines: Iterator[str], n: int) -> list[dict[str, Any]]:
    """The next ``n`` SSE events, each as its fields (``id``, ``event``, ``data``)."""
    events: list[dict[str, Any]] = []
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            events.append(event)
            event = {}
            if len(events) == n:
                return events
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")  # the SSE spec drops one space after the colon
        event[field] = orjson.loads(value) if field == "data" else value
    raise AssertionError(f"the stream ended after {len(events)} events")


def wire(message: ChatMessage) -> dict[str, Any]:
    return message.model_dump(mode="json")


def test_sse_streams_a_conversation_appended_by_another_process(server: str) -> None:
    with StorageManager() as storage:
        history = ChatHistory(storage.database, "c1")
        sent = [ChatMessage(role="user", content="first", id="m0")]
        history.add(sent[0])
        with httpx.stream("GET", f"{server}/chat/c1/events?start=0", timeout=30) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            lines = reply.iter_lines()
            got = read_events(lines, 1)
            for i in range(1, 4):  # appended while the stream is open
                sent.append(ChatMessage(role="assistant", content=f"part {i}", id=f"m{i}"))
                history.add(sent[-1])
                got += read_events(lines, 1)
        assert got == [{"id": str(i), "event": "message", "data": wire(m)} for i, m in enumerate(sent)]

        # A reconnecting EventSource sends Last-Event-ID: the stream resumes right after it.
        sent.append(ChatMessage(role="user", content="while away", id="m4"))
        history.add(sent[-1])
        with httpx.stream("GET", f"{server}/chat/c1/events", headers={"Last-Event-ID": "2"}, timeout=30) as reply:
            lines = reply.iter_lines()
            resumed = read_events(lines, 2)
            posted = httpx.post(f"{server}/chat/c1/messages", json={"role": "user", "content": "posted"}, timeout=10)
            assert posted.status_code == 201
            assert posted.json() == {"position": 5}
            resumed += read_events(lines, 1)
        assert [e["id"] for e in resumed] == ["3", "4", "5"]
        assert [e["data"] for e in resumed[:2]] == [wire(m) for m in sent[3:]]
        assert resumed[2]["data"]["content"] == "posted"
        assert [m.content for m in history.last(10)] == ["first", "part 1", "part 2", "part 3", "while away", "posted"]


@pytest.mark.postgres
def test_sse_resets_the_browser_when_the_primary_serves_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owned_postgres: PgServer
) -> None:
    """Started while its PostgreSQL primary is down, the example streams from its SQLite fallback,
    with the fallback's positions. Once the primary serves, the stream sends an empty ``id`` (which
    clears the browser's Last-Event-ID) and ``event: reset``, and ends; the reconnect, without
    Last-Event-ID, starts over from the primary. Before: the stream broke off and the browser
    resumed the primary's list after a fallback position (here: after "h1", so "h0", "h1" lost)."""
    monkeypatch.chdir(tmp_path)
    with StorageManager({"database": {"type": "postgres", "url": owned_postgres.url}}) as seed:
        ChatHistory(seed.database, "c1").extend(  # the primary's history, from before the outage
            [ChatMessage(role="user", content=f"h{i}", id=f"h{i}") for i in range(2)]
        )
    owned_postgres.pg_ctl("-m", "fast", "-w", "stop")
    config = {
        "KVSTORE_DATABASE__TYPE": "postgres",
        "KVSTORE_DATABASE__URL": owned_postgres.url,
        "KVSTORE_DATABASE__FALLBACK": "sqlite",
        "KVSTORE_DATABASE__PROBE_INTERVAL": "0.2",
        "KVSTORE_DATABASE__CONNECT_TIMEOUT": "1",
    }
    with serve(tmp_path, config) as url, httpx.stream("GET", f"{url}/chat/c1/events?start=0", timeout=30) as reply:
        lines = reply.iter_lines()
        for content in ("a", "b"):  # posted during the outage: the fallback has them at 0 and 1
            posted = httpx.post(f"{url}/chat/c1/messages", json={"role": "user", "content": content}, timeout=10)
            assert posted.status_code == 201
        assert [(e["id"], e["data"]["content"]) for e in read_events(lines, 2)] == [("0", "a"), ("1", "b")]

        owned_postgres.start()  # the primary serves again: the outage's posts are replayed onto it
        assert read_events(lines, 1) == [{"id": "", "event": "reset", "data": {}}]
        assert list(lines) == []  # and the response ends: the browser reconnects

        # The reconnect carries no Last-Event-ID: the last 20 from the primary, at its positions.
        with httpx.stream("GET", f"{url}/chat/c1/events", timeout=30) as again:
            got = read_events(again.iter_lines(), 4)
    assert [(e["id"], e["event"], e["data"]["content"]) for e in got] == [
        ("0", "message", "h0"),
        ("1", "message", "h1"),
        ("2", "message", "a"),
        ("3", "message", "b"),
    ]
