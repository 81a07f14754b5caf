"""The run's context and the data every workload shares: keys, the message shape, the history size."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import Case, run_cases
from benchmarks.report import Report, Table

__all__ = ["BATCH", "HISTORY", "KEYS", "MESSAGE", "SESSION_TTL", "Context", "chat", "msg"]

MESSAGE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly.", "turn": 1}
KEYS = [f"session:{i}" for i in range(1000)]
BATCH = KEYS[:100]
#: The long conversation of the "last 20" workload.
HISTORY = 100_000
SESSION_TTL = 1800


def msg(i: int) -> dict[str, Any]:
    """A value whose bytes differ for every ``i`` (so every write really writes)."""
    return {**MESSAGE, "turn": i}


def chat(i: int) -> dict[str, Any]:
    """A chat message whose bytes differ for every ``i``."""
    return {"role": "user", "content": f"What is the weather in Lisbon tomorrow? Please answer briefly. #{i}"}


@dataclass
class Context:
    report: Report
    quick: bool
    tmp: Path
    redis_url: str
    postgres_url: str
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    #: Every key, table and schema this run creates starts with this (removed at the end).
    tag: str = field(default_factory=lambda: f"bench_{os.getpid()}_")

    @property
    def rounds(self) -> int:
        return 3 if self.quick else 11

    @property
    def seconds(self) -> float:
        """Wall time of one round of one case (op counts are calibrated to it)."""
        return 0.03 if self.quick else 0.2

    def run(self, section: str, workload: str, cases: list[Case], note: str = "") -> Table:
        results = run_cases(cases, n=1, rounds=self.rounds, loop=self.loop, seconds_per_round=self.seconds)
        return self.report.add(section, workload, cases, results, note)

    def wait(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)
