"""The PostgreSQL call watchdog on its own (no server): it cuts late sockets, and only those."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from kvstore.postgres._watchdog import Watchdog


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _conn(sock: socket.socket) -> Any:
    return SimpleNamespace(pgconn=SimpleNamespace(socket=sock.fileno()))


def test_a_read_blocked_past_its_deadline_returns_when_the_watchdog_cuts_the_socket(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A recv blocked on an armed socket returns (EOF) at the deadline; disarm then reports the cut once."""
    a, _ = pair
    dog, conn = Watchdog(), _conn(a)
    start = time.monotonic()
    dog.arm(conn, start + 0.2)
    assert a.recv(1) == b""  # blocks until the watchdog shuts the socket down
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.3
    assert dog.disarm(conn) is True
    assert dog.disarm(conn) is False
    assert dog.cuts == 1


def test_a_call_disarmed_in_time_is_never_cut(pair: tuple[socket.socket, socket.socket]) -> None:
    """Disarming before the deadline leaves the socket alone, also after the deadline has passed."""
    a, b = pair
    dog, conn = Watchdog(), _conn(a)
    dog.arm(conn, time.monotonic() + 0.1)
    assert dog.disarm(conn) is False
    time.sleep(0.2)
    b.sendall(b"x")
    assert a.recv(1) == b"x"
    assert dog.cuts == 0


def test_many_calls_with_different_deadlines_are_cut_in_deadline_order() -> None:
    """Armed sockets with deadlines 0.3, 0.1, 0.2 s are each cut at their own deadline, not at a tick."""
    dog = Watchdog()
    pairs = [socket.socketpair() for _ in range(3)]
    cut_at: dict[int, float] = {}
    start = time.monotonic()

    def wait(i: int, sock: socket.socket) -> None:
        sock.recv(1)
        cut_at[i] = time.monotonic() - start

    threads = []
    for i, ((a, _), delay) in enumerate(zip(pairs, (0.3, 0.1, 0.2), strict=True)):
        dog.arm(_conn(a), start + delay)
        threads.append(threading.Thread(target=wait, args=(i, a)))
        threads[-1].start()
    for t in threads:
        t.join(2)
    for a, b in pairs:
        a.close()
        b.close()
    assert sorted(cut_at, key=cut_at.__getitem__) == [1, 2, 0]
    for i, delay in enumerate((0.3, 0.1, 0.2)):
        assert delay <= cut_at[i] < delay + 0.05


def test_arm_and_disarm_cost_about_a_microsecond(pair: tuple[socket.socket, socket.socket]) -> None:
    """The per-call cost (arm + disarm, watchdog thread running) is a few microseconds at most."""
    dog, conn = Watchdog(), _conn(pair[0])
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        dog.arm(conn, time.monotonic() + 5.0)
        dog.disarm(conn)
    per_call = (time.perf_counter() - start) / n
    print(f"\narm + disarm: {per_call * 1e6:.2f} us per call")
    assert per_call < 10e-6
    assert dog.cuts == 0
