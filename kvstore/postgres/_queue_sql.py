"""PostgreSQL job queue, I/O-free part: its table, indexes and statements.

One table per store (``<table_prefix>queue_jobs`` in the store's schema), shared by every
queue name and key prefix: ``(ns, queue)`` selects a queue. A job's ``state`` is
``ready``, ``running``, ``failed`` (waiting for its retry), ``dead`` or ``done``;
``visible_at`` (server clock, epoch seconds) is when a ready or failed job becomes
claimable, and for a running job when its lease expires, so one partial index
``(ns, queue, visible_at, id)`` serves every claim: due jobs and expired leases alike.
``attempt`` counts claims; the pair ``(id, attempt)`` names one lease, which is what
makes acknowledgement exactly-once: an ``ack`` matches the row only while that lease
is the job's last claim.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

__all__ = ["PURGE_BATCH", "QueueQueries", "channel"]

_NOW = "extract(epoch from clock_timestamp())"
#: Acknowledged rows one sweep statement deletes at most (a sweep that deleted this many is
#: followed by another at the next claim).
PURGE_BATCH = 1000
_LIVE = "('ready', 'running', 'failed')"
_COLUMNS = "id, payload::text, attempt, max_attempts, enqueued_at, visible_at, dedupe_key, last_error"


def channel(schema: str, table_prefix: str, ns: str, queue: str) -> str:
    """The LISTEN/NOTIFY channel of one queue: a digest (channel names are identifiers of at most 63 bytes)."""
    digest = hashlib.sha256("\x00".join((schema, table_prefix, ns, queue)).encode()).hexdigest()[:40]
    return f"kvstore_q_{digest}"


@dataclass(frozen=True)
class QueueQueries:
    """Every statement of the queue, built once per store (identifiers quoted)."""

    create: tuple[str, ...]
    exists: str
    enqueue: str
    find_dedupe: str
    claim: str
    release: str
    heartbeat: str
    ack: str
    fail: str
    stats: str
    next_due: str
    dead: str
    purge_done: str

    @classmethod
    def build(cls, schema: str, table_prefix: str) -> QueueQueries:
        names = {
            "t": sql.Identifier(schema, f"{table_prefix}queue_jobs"),
            "schema": sql.Identifier(schema),
            "claim_idx": sql.Identifier(f"{table_prefix}queue_jobs_claim"),
            "dedupe_idx": sql.Identifier(f"{table_prefix}queue_jobs_dedupe"),
            "done_idx": sql.Identifier(f"{table_prefix}queue_jobs_done"),
        }

        def q(text: str) -> str:
            return sql.SQL(text).format(**names).as_string(None)

        create = (
            q("CREATE SCHEMA IF NOT EXISTS {schema}"),
            q(
                """CREATE TABLE IF NOT EXISTS {t} (
                    id bigserial PRIMARY KEY,
                    ns text NOT NULL,
                    queue text NOT NULL,
                    state text NOT NULL,
                    payload json NOT NULL,
                    attempt integer NOT NULL DEFAULT 0,
                    max_attempts integer NOT NULL,
                    visible_at double precision NOT NULL,
                    enqueued_at double precision NOT NULL,
                    finished_at double precision,
                    dedupe_key text,
                    last_error text
                )"""
            ),
            q(f"CREATE INDEX IF NOT EXISTS {{claim_idx}} ON {{t}} (ns, queue, visible_at, id) WHERE state IN {_LIVE}"),
            q(
                "CREATE UNIQUE INDEX IF NOT EXISTS {dedupe_idx} ON {t} (ns, queue, dedupe_key) "
                f"WHERE dedupe_key IS NOT NULL AND state IN {_LIVE}"
            ),
            q("CREATE INDEX IF NOT EXISTS {done_idx} ON {t} (finished_at) WHERE state = 'done'"),
        )
        relations = (
            f"{table_prefix}queue_jobs",
            *(f"{table_prefix}queue_jobs_{s}" for s in ("claim", "dedupe", "done")),
        )
        # Whether the table and its indexes exist: a catalog read, no lock on the table. Creating
        # them again (IF NOT EXISTS) would wait for a SHARE lock behind any open write on the
        # table, and every other process's claims and acks would queue behind that wait.
        exists = sql.SQL(
            "SELECT count(*) = {n} FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s "
            "ON s.oid = c.relnamespace WHERE s.nspname = {schema} AND c.relname IN ({names})"
        ).format(
            n=sql.Literal(len(relations)),
            schema=sql.Literal(schema),
            names=sql.SQL(", ").join(sql.Literal(name) for name in relations),
        )
        return cls(
            create=create,
            exists=exists.as_string(None),
            # NOTIFY in the inserting statement: delivered at its commit, never before the row is visible.
            enqueue=q(
                f"""WITH ins AS (
                    INSERT INTO {{t}} (ns, queue, state, payload, max_attempts, visible_at, enqueued_at, dedupe_key)
                    VALUES (%(ns)s, %(queue)s, 'ready', %(payload)s, %(max_attempts)s,
                            {_NOW} + %(delay)s, {_NOW}, %(dedupe)s)
                    ON CONFLICT (ns, queue, dedupe_key) WHERE dedupe_key IS NOT NULL AND state IN {_LIVE}
                    DO NOTHING
                    RETURNING id
                )
                SELECT id, pg_notify(%(channel)s, '') FROM ins"""
            ),
            find_dedupe=q(
                f"SELECT id FROM {{t}} WHERE ns = %(ns)s AND queue = %(queue)s AND dedupe_key = %(dedupe)s "
                f"AND state IN {_LIVE}"
            ),
            # One statement: pick the oldest due job (or expired lease) nobody else is locking,
            # and take it. An expired lease whose job has used every attempt goes to dead instead.
            claim=q(
                f"""WITH c AS (
                    SELECT id FROM {{t}}
                    WHERE ns = %(ns)s AND queue = %(queue)s AND state IN {_LIVE} AND visible_at <= {_NOW}
                    ORDER BY visible_at, id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE {{t}} AS j SET
                    state = CASE WHEN j.state = 'running' AND j.attempt >= j.max_attempts THEN 'dead'
                                 ELSE 'running' END,
                    attempt = CASE WHEN j.state = 'running' AND j.attempt >= j.max_attempts THEN j.attempt
                                   ELSE j.attempt + 1 END,
                    last_error = CASE WHEN j.state = 'running' THEN 'lease expired' ELSE j.last_error END,
                    finished_at = CASE WHEN j.state = 'running' AND j.attempt >= j.max_attempts THEN {_NOW} END,
                    visible_at = {_NOW} + %(lease)s
                FROM c WHERE j.id = c.id
                RETURNING j.state, j.{_COLUMNS.replace(", ", ", j.")}"""
            ),
            # Undo a claim whose caller was cancelled before it got the job: as if never claimed.
            release=q(
                f"UPDATE {{t}} SET state = CASE WHEN last_error IS NULL THEN 'ready' ELSE 'failed' END, "
                f"attempt = attempt - 1, visible_at = {_NOW} "
                "WHERE id = %(id)s AND ns = %(ns)s AND queue = %(queue)s AND state = 'running' "
                "AND attempt = %(attempt)s"
            ),
            heartbeat=q(
                f"UPDATE {{t}} SET visible_at = {_NOW} + %(lease)s "
                "WHERE id = %(id)s AND ns = %(ns)s AND queue = %(queue)s AND state = 'running' "
                "AND attempt = %(attempt)s RETURNING visible_at"
            ),
            # Idempotent for the lease that claimed the job (a retry after a lost reply answers
            # the same); any other lease matches nothing.
            ack=q(
                f"UPDATE {{t}} SET state = 'done', finished_at = COALESCE(finished_at, {_NOW}) "
                "WHERE id = %(id)s AND ns = %(ns)s AND queue = %(queue)s AND attempt = %(attempt)s "
                "AND (state = 'running' OR (state = 'done' AND finished_at IS NOT NULL))"
            ),
            fail=q(
                f"""WITH u AS (
                    UPDATE {{t}} SET state = %(state)s, last_error = %(error)s,
                        visible_at = {_NOW} + %(delay)s,
                        finished_at = CASE WHEN %(state)s = 'dead' THEN {_NOW} END
                    WHERE id = %(id)s AND ns = %(ns)s AND queue = %(queue)s AND attempt = %(attempt)s
                      AND (state = 'running' OR state = %(state)s)
                    RETURNING id
                )
                SELECT count(*), pg_notify(%(channel)s, '') FROM u"""
            ),
            stats=q(
                f"""SELECT
                    count(*) FILTER (WHERE state = 'ready' AND visible_at <= {_NOW}),
                    count(*) FILTER (WHERE state = 'ready' AND visible_at > {_NOW}),
                    count(*) FILTER (WHERE state = 'running'),
                    count(*) FILTER (WHERE state = 'failed'),
                    count(*) FILTER (WHERE state = 'dead'),
                    count(*) FILTER (WHERE state = 'done')
                FROM {{t}} WHERE ns = %(ns)s AND queue = %(queue)s"""
            ),
            next_due=q(
                f"SELECT min(visible_at) - {_NOW} FROM {{t}} "
                f"WHERE ns = %(ns)s AND queue = %(queue)s AND state IN {_LIVE}"
            ),
            dead=q(
                f"SELECT state, {_COLUMNS} FROM {{t}} WHERE ns = %(ns)s AND queue = %(queue)s "
                "AND state = 'dead' ORDER BY id LIMIT %(limit)s"
            ),
            purge_done=q(
                f"DELETE FROM {{t}} WHERE id IN (SELECT id FROM {{t}} WHERE state = 'done' "
                "AND ns = %(ns)s AND queue = %(queue)s "
                f"AND finished_at < {_NOW} - %(keep)s LIMIT {PURGE_BATCH})"
            ),
        )
