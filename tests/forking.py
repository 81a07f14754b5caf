"""Shared harness of the fork tests: forked children of the test process, bounded and reported."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

#: How many children each fork test forks, and how many operations each one runs.
CHILDREN, PER_CHILD = 4, 200
FORK = multiprocessing.get_context("fork")


def run_children(target: Callable[[int, Any], None]) -> None:
    """Fork ``target(worker, errors)`` CHILDREN times, wait (bounded), fail with the first child's traceback."""
    errors = FORK.Queue()
    procs = [FORK.Process(target=target, args=(w, errors)) for w in range(CHILDREN)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join()
    reported = []
    while not errors.empty():
        reported.append(errors.get(timeout=1))
    assert not hung, "a forked child hung"
    assert reported == [], reported[0]
    assert [p.exitcode for p in procs] == [0] * CHILDREN
