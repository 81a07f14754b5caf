"""``kvstore demo``: the three jobs (chat history, session with TTL, fallback/health), narrated."""

from __future__ import annotations

import logging
import os
from typing import Any

from kvstore.chat._history import ChatHistory
from kvstore.chat._message import ChatMessage
from kvstore.manager import StorageManager
from kvstore.session._store import SessionStore

#: A Redis nobody listens on: the fallback part of the demo shows what happens then.
ABSENT_REDIS = "redis://127.0.0.1:1/0"


def run(config: Any = None, *, out: Any = print) -> int:
    """Persist a chat turn, cache a session with a sliding TTL, then show fallback and health."""
    manager = StorageManager(config)
    with manager as storage:
        report = storage.health()
        cache, database = report.cache, report.database
        out(f"cache:    {cache.active} (durable={cache.durable})")
        path = getattr(manager.config.database, "path", None) if database.active == "sqlite" else None
        where = f" at {os.path.abspath(path)}" if isinstance(path, str) and path != ":memory:" else ""
        out(f"database: {database.active}{where} (durable={database.durable})")

        out("\n1. chat history (database tier)")
        history = ChatHistory(storage.database, "demo")
        history.add(ChatMessage(role="user", content="hello from kvstore demo"))
        out(f"conversation 'demo' now holds {history.count()} message(s); the last 3:")
        for message in history.last(3):
            out(f"  - {message.role}: {message.content} ({message.created_at:%Y-%m-%d %H:%M:%S} UTC)")
        if database.durable:
            out("  run the demo again: the history keeps growing, it is on disk.")

        out("\n2. session with a sliding TTL (cache in front of the database)")
        sessions = SessionStore.from_backends(storage, ttl=60)
        sid = sessions.create({"user": 7, "cart": ["tea"]})
        out(f"  session {sid[:8]}... -> {sessions.get(sid, touch=True)} (expires in {sessions.ttl_of(sid) or 0:.0f} s)")
        sessions.delete(sid)
        out(f"  after logout: {sessions.get(sid)}")
        out(f"health ok: {storage.health().ok}")

    out(f"\n3. fallback: Redis configured at {ABSENT_REDIS} but absent")
    absent = {
        "cache": {"type": "redis", "url": ABSENT_REDIS, "connect_timeout": 0.3},
        "database": {"type": "memory"},
    }
    kvstore_logger = logging.getLogger("kvstore")
    level = kvstore_logger.level
    kvstore_logger.setLevel(logging.ERROR)  # the warning is what this step prints itself
    try:
        with StorageManager(absent) as fallback:
            fallback.cache.set("still:working", True, ttl=5)
            health = fallback.health().cache
            out(f"  cache tier: configured {health.configured}, active {health.active}, degraded={health.degraded}")
            out(f"  reason: {health.last_error}")
            out(f"  writes still work: still:working = {fallback.cache.get('still:working')}")
    finally:
        kvstore_logger.setLevel(level)
    return 0
