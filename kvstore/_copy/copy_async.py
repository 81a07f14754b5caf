"""Copy a whole namespace (values with their TTLs, and lists) between any two stores, resumably."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from kvstore._copy.plan import CopyCheckpoint, CopyStats, VerifyReport
from kvstore._core.acompat import gather_async
from kvstore.base_async import AsyncDatabase, AsyncStore
from kvstore.errors import ConfigError, WrongTypeError

__all__ = ["copy_namespace", "verify_copy"]

Progress = Callable[[int, int], None]


async def _ttls(store: AsyncStore, keys: list[str]) -> list[float | None]:
    return await gather_async(*(store.ttl(key) for key in keys))


async def _list_length(store: AsyncStore, key: str) -> int | None:
    """Length of the list at ``key``; ``None`` when ``key`` holds a value (or the store has no lists)."""
    if not isinstance(store, AsyncDatabase):
        return None
    try:
        return await store.get_length(key)
    except WrongTypeError:
        return None


async def copy_namespace(
    source: AsyncStore,
    target: AsyncStore,
    *,
    pattern: str = "*",
    checkpoint: CopyCheckpoint | None = None,
    batch: int = 500,
    list_chunk: int = 1000,
    progress: Progress | None = None,
) -> CopyStats:
    """Copy every key of ``source`` matching ``pattern`` into ``target``.

    Values keep their remaining TTL; lists are copied in chunks of
    ``list_chunk`` items with ``extend`` (atomic per chunk) and keep their TTL.
    Keys go in sorted order, ``batch`` at a time (one ``mget`` and one ``mset``
    per batch). With a ``checkpoint`` the progress is saved after every batch
    and list chunk, and a later call with the same checkpoint continues where
    an interrupted one stopped (the list in progress from the target's length).
    A value already in the target is replaced; a list is rebuilt from scratch
    unless it is the one being resumed.

    ``progress(done, total)`` is called after every batch.
    """
    if batch <= 0 or list_chunk <= 0:
        raise ValueError("batch and list_chunk must be > 0")
    keys = sorted(await source.keys(pattern))
    resuming = checkpoint is not None and checkpoint.load()
    stats = CopyStats(resumed=resuming)
    after = checkpoint.after if checkpoint is not None and resuming else None
    partial = checkpoint.partial if checkpoint is not None and resuming else None
    start = 0 if after is None else bisect.bisect_right(keys, after)
    stats.resumed_from = start
    if progress is not None:
        progress(start, len(keys))
    for i in range(start, len(keys), batch):
        chunk = keys[i : i + batch]
        # TTLs first: a key that expires in between then reads as missing instead of losing its TTL.
        ttls = await _ttls(source, chunk)
        values = await source.mget(chunk)
        items: list[tuple[str, Any, float | None]] = []
        lists: list[tuple[str, float | None]] = []
        for key, value, ttl in zip(chunk, values, ttls, strict=True):
            if value is not None:
                items.append((key, value, ttl))
                continue
            # None: a list (mget reads lists as None), a stored JSON null, or gone.
            length = await _list_length(source, key)
            if length:
                lists.append((key, ttl))
            elif length is None and await source.exists(key):
                items.append((key, None, ttl))
            else:
                stats.vanished += 1
        if items:
            await target.mset(items)
            stats.values += len(items)
        previous = keys[i - 1] if i else None
        for key, ttl in lists:
            stats.items += await _copy_list(
                source, target, key, ttl, resume=key == partial, chunk=list_chunk, checkpoint=checkpoint, after=previous
            )
            stats.lists += 1
        partial = None
        if checkpoint is not None:
            checkpoint.save(chunk[-1], None)
        if progress is not None:
            progress(i + len(chunk), len(keys))
    stats.keys = len(keys) - start - stats.vanished
    return stats


async def _copy_list(
    source: AsyncStore,
    target: AsyncStore,
    key: str,
    ttl: float | None,
    *,
    resume: bool,
    chunk: int,
    checkpoint: CopyCheckpoint | None,
    after: str | None,
) -> int:
    assert isinstance(source, AsyncDatabase)  # only a database has lists
    if not isinstance(target, AsyncDatabase):
        raise ConfigError(f"the target {target.backend} is a cache and cannot hold the list {key!r}")
    position = 0
    if resume:
        position = await _list_length(target, key) or 0
    else:
        await target.delete(key)
    if checkpoint is not None:
        checkpoint.save(after, key)  # after the delete: a crash before this line restarts the list
    copied = 0
    while True:
        items = await source.get_range(key, position, position + chunk - 1)
        if not items:
            break
        await target.extend(key, items)
        position += len(items)
        copied += len(items)
        if len(items) < chunk:
            break
    if ttl is not None:
        await target.expire(key, ttl)
    return copied


async def verify_copy(
    source: AsyncStore, target: AsyncStore, *, pattern: str = "*", batch: int = 500, list_chunk: int = 1000
) -> VerifyReport:
    """Compare every key of ``source`` matching ``pattern`` with ``target``: counts and contents."""
    report = VerifyReport()
    keys = sorted(await source.keys(pattern))

    def mismatch(text: str) -> None:
        if len(report.mismatches) < 20:
            report.mismatches.append(text)
        else:
            report.mismatches[-1] = "... and more"

    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        mine, theirs = await source.mget(chunk), await target.mget(chunk)
        for key, a, b in zip(chunk, mine, theirs, strict=True):
            if a is not None:
                report.keys += 1
                report.values += 1
                if a != b:
                    mismatch(f"value of {key!r} differs")
                continue
            length = await _list_length(source, key)
            if not length:
                if length is None and await source.exists(key):
                    report.keys += 1
                    report.values += 1
                    if b is not None or not await target.exists(key):
                        mismatch(f"value of {key!r} differs")
                continue
            report.keys += 1
            report.lists += 1
            report.items += length
            if await _list_length(target, key) != length:
                mismatch(f"list {key!r} has a different length")
                continue
            assert isinstance(source, AsyncDatabase)
            assert isinstance(target, AsyncDatabase)
            for start in range(0, length, list_chunk):
                end = start + list_chunk - 1
                if await source.get_range(key, start, end) != await target.get_range(key, start, end):
                    mismatch(f"list {key!r} differs at items {start}..{end}")
                    break
    return report
