"""Peers are optional: build each one or record why it is missing (never crash the run, never fake it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from benchmarks.report import Report

__all__ = ["BENCH_GROUP_HINT", "attempt", "reason"]

T = TypeVar("T")

BENCH_GROUP_HINT = "install the bench group: pip install --group bench (or see pyproject [dependency-groups] bench)"


def reason(exc: BaseException) -> str:
    """One short line for the report, with any password in a URL masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def attempt(report: Report, section: str, name: str, package: str, build: Callable[[], T]) -> T | None:
    """``build()`` the peer; on failure record "not installed" / "not runnable" with the reason and return None."""
    try:
        peer = build()
    except ImportError as exc:
        report.peer(section, name, f"not installed ({package}): {reason(exc)}")
        return None
    except Exception as exc:  # a peer that does not run here is reported, not fatal
        report.peer(section, name, f"not runnable: {reason(exc)}")
        return None
    report.peer(section, name, "ran")
    return peer


def optional(build: Callable[[], Any]) -> Any:
    """``build()`` or None on any error (for cleanup helpers)."""
    try:
        return build()
    except Exception:
        return None
