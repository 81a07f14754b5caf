"""Client-side deadlines for PostgreSQL calls: one watchdog thread per process.

libpq has no client-side query timeout. ``statement_timeout`` is enforced by the
server, ``tcp_user_timeout`` and keepalives only notice a peer whose *kernel*
stops answering; a server whose processes are frozen (SIGSTOP, a stalled VM, a
swap storm) still has its kernel acknowledge every packet, so a blocked read would
wait forever. Here a call `arm`s its connection with an absolute deadline before it
talks to the server and `disarm`s it after (a lock and a dict store/pop, well under
a microsecond: no thread, timer or task per call). The one watchdog thread sleeps
until the earliest deadline (rescanning at least every `TICK` s while calls are in
flight, idle otherwise) and, when one passes, shuts the connection's socket down
(``shutdown(SHUT_RDWR)`` on a dup of the descriptor). The blocked read, sync or
asyncio, then returns at once with psycopg's ``OperationalError`` and the connection
is broken; `disarm` tells the caller its deadline was missed, so it raises
`BackendUnavailableError` and closes the connection (the pool discards it).

Arming and firing hold one lock, so the watchdog can never cut a connection whose
call already disarmed it (and that may be back in the pool or serving another call).
Where a socket descriptor cannot be duplicated (Windows), a cut does nothing and a call
is bounded by the server-side and TCP deadlines only.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from typing import Any

__all__ = ["TICK", "Watchdog", "current"]

#: Longest the watchdog sleeps while calls are in flight (a new call's deadline is
#: always at least its timeout away, so deadlines longer than this fire on time).
TICK = 0.05


def _cut(conn: Any) -> None:
    """Shut the connection's socket down so a read or write blocked on it returns now."""
    try:
        dup = os.dup(conn.pgconn.socket)
    except Exception:  # already closed by psycopg: nothing is blocked on it (or no dup: Windows)
        return
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return
    # An OSError here means the peer already reset it: the blocked read fails anyway.
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """Cuts the socket of every armed connection whose deadline has passed (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._armed: dict[int, tuple[float, Any]] = {}
        self._fired: set[int] = set()
        self._idle = True
        self._thread: threading.Thread | None = None
        #: Connections cut so far (for tests and diagnostics).
        self.cuts = 0

    def arm(self, conn: Any, deadline: float) -> None:
        """Watch ``conn`` until `disarm`; cut its socket at ``deadline`` (`time.monotonic` clock)."""
        with self._lock:
            self._armed[id(conn)] = (deadline, conn)
            if self._idle:
                self._idle = False
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="kvstore-postgres-watchdog", daemon=True)
                    self._thread.start()
                else:
                    self._wake.notify()

    def disarm(self, conn: Any) -> bool:
        """Stop watching ``conn``; whether its deadline passed and its socket was cut."""
        key = id(conn)
        with self._lock:
            if self._armed.pop(key, None) is not None:
                return False
            if key in self._fired:
                self._fired.discard(key)
                return True
            return False

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                earliest = math.inf
                for key, (deadline, conn) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[key]
                        self._fired.add(key)
                        self.cuts += 1
                        _cut(conn)
                    elif deadline < earliest:
                        earliest = deadline
                if self._armed:
                    self._wake.wait(min(earliest - now, TICK))
                else:
                    self._idle = True
                    self._wake.wait()


#: This process's watchdog (read it as ``_postgres_watchdog.current``: a forked child
#: gets a fresh one, since threads do not survive fork).
current = Watchdog()


def _after_fork() -> None:
    global current
    current = Watchdog()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_after_fork)
