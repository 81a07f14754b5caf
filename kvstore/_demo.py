"""``kvstore demo``: the main jobs on the embedded default, narrated."""

from __future__ import annotations

import os
import time
from typing import Any

from kvstore._sync.manager import StorageManager


def run(config: Any = None, *, out: Any = print) -> int:
    """Cache a session with a TTL, persist a chat turn, read the history back, show health."""
    with StorageManager(config) as storage:
        report = storage.health()
        cache, database = report.cache, report.database
        out(f"cache:    {cache.active} (durable={cache.durable})")
        where = f" at {os.path.abspath(storage.database.path)}" if hasattr(storage.database, "path") else ""
        out(f"database: {database.active}{where} (durable={database.durable})")

        storage.cache.set("session:demo", {"user": 7, "cart": ["tea"]}, ttl=60)
        ttl = storage.cache.ttl("session:demo") or 0.0
        out(f"session:demo cached for {ttl:.0f} s -> {storage.cache.get('session:demo')}")

        turn = {"role": "user", "content": "hello from kvstore demo", "at": time.time()}
        length = storage.database.append("history:demo", turn)
        out(f"history:demo now holds {length} message(s); the last 3:")
        for message in storage.database.get_range("history:demo", -3, -1):
            out(f"  - {message['role']}: {message['content']} ({time.ctime(message['at'])})")
        if database.durable:
            out("run the demo again: the history keeps growing, it is on disk.")
        out(f"health ok: {storage.health().ok}")
    return 0
