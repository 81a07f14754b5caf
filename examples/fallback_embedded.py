"""Redis and PostgreSQL configured but absent: kvstore falls back to embedded stores and keeps working.

The cache falls back to memory and the database to the SQLite file, with one
warning each; health says what runs where. Nothing here needs a server.
"""

from __future__ import annotations

import logging

from kvstore import ChatHistory, SessionStore, StorageBackends, StorageManager

CONFIG = {
    # Nobody listens on port 1: both connections are refused at once.
    "cache": {"type": "redis", "url": "redis://127.0.0.1:1/0", "connect_timeout": 0.5},
    "database": {
        "type": "postgres",
        "url": "postgresql://app:not-printed@127.0.0.1:1/app",
        "connect_timeout": 0.5,
        "fallback": [{"type": "sqlite", "path": "./.kvstore/fallback.db"}],
    },
}


def show_health(storage: StorageBackends) -> None:
    report = storage.health()
    for tier in (report.cache, report.database):
        print(
            f"{tier.tier:9} configured={tier.configured:9} active={tier.active:7} healthy={tier.healthy} "
            f"degraded={tier.degraded} durable={tier.durable} latency={tier.latency_ms or 0:.2f} ms"
        )
        if tier.last_error:
            print(f"{'':9} why: {tier.last_error}")
    print(f"ok={report.ok} degraded={report.degraded}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="log: %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # kvstore's own warning says it once
    with StorageManager(CONFIG) as storage:
        show_health(storage)
        # The application code does not change: the same calls work on the fallbacks.
        sessions = SessionStore.from_backends(storage, ttl=600)
        sid = sessions.create({"user": 7})
        history = ChatHistory(storage.database, "fallback-demo")
        history.add({"role": "user", "content": "still here without servers"})
        print(f"session -> {sessions.get(sid)}; history holds {history.count()} message(s)")


if __name__ == "__main__":
    main()
