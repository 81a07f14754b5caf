"""PostgreSQL backend, I/O-free part: schema, migrations, SQL text and conninfo (errors: `_errors`).

Values are stored in a ``json`` column (the exact orjson text), not ``jsonb``.
Measured on PostgreSQL 15, ``jsonb`` does not give back what was written:
``{"b":1,"a":2}`` reads back as ``{"a": 2, "b": 1}`` (keys reordered), a duplicate
key is dropped, the float ``1e16`` reads back as the int ``10000000000000000``,
``-0.0`` as ``0.0``, and a string holding ``"\\u0000"`` is rejected outright
("unsupported Unicode escape sequence"). ``json`` keeps the exact text (so every
backend stores the same bytes, DESIGN.md §2), is still validated by the server,
and stays queryable with ``value::jsonb -> 'field'``.

Schema (tables named from ``table_prefix`` inside ``schema``, always quoted with
`psycopg.sql.Identifier`):

* ``<p>entries (ns, key, kind, value, length, expires_at)``: the one keyspace.
  ``ns`` is the store's ``key_prefix``, so a store with prefix ``""`` never sees
  another prefix's keys. ``kind`` is ``'v'`` (value) or ``'l'`` (list); for a list,
  ``length`` is the per-list counter bumped by ``append``.
* ``<p>list_items (ns, key, seq, value)`` (``<p>items`` before version 4): list items,
  gapless, primary key ``(ns, key, seq)`` so a range read is an index range scan. Item
  ``i`` (0-based) of a list has ``seq = head + i + 1``: ``<p>entries.head`` (version 4)
  counts the items `trim` removed from the front, so a trim deletes only what it removes
  and never renumbers what it keeps.
* a trigger drops a list's items when its entry is deleted or replaced by a value.
* ``<p>ids (ns, key, id, length, created)`` (version 2): the idempotency ids of list
  writes, written in the append's transaction; no trigger touches them, so deleting
  or replacing a list does not forget its ids. The purge drops ids older than the
  store's idempotency window.
* ``<p>entries.modified_at`` (version 3): when a writer last set, replaced, re-expired or
  appended to the key (``now()``: the server's clock at the start of the writing
  transaction, one reading per statement, so it costs next to nothing and every row of
  one `mset` carries the same time); ``<p>tombstones (ns, key,
  deleted_at)``: when `delete` removed the key; ``<p>cleared (ns, cleared_at)``: when
  `clear` last emptied the namespace. They answer the failover's replay guard
  (``changed_since``) in one round trip; tombstones and clear marks older than the
  idempotency window are swept with the expired rows.
* ``<p>push(...)`` (version 8): the append, a PL/pgSQL function the client calls in one
  statement (`push_function`): a fast path for a live list, and the version-7 append statement
  (`Queries.push_statement`) for everything else. A kvstore of version 7 still running sends
  that statement itself, on the same tables, so the two append side by side during an upgrade.
* ``<p>meta``: the schema version, migrated under a transaction-scoped advisory lock.
* what wakes `watch`: one ``NOTIFY`` per list and append on the channel `watch_channel`
  names, payload ``"<key tag> <last position>"`` (`kvstore._core.watch.key_tag`), only for
  a list someone watches: ``<p>watchers (ns, key, id, expires_at)`` (version 6) holds one
  row per live watcher (`watcher_statements`), and a list is notified only if one of its
  rows has not expired. PostgreSQL serialises the commits of transactions that notified,
  so an unwatched append must not notify. Versions 5 and 6 sent it from a statement-level
  ``AFTER INSERT`` trigger on ``<p>list_items``; since version 7 the append statement
  (`Queries.push`, the only writer of items) sends it itself, and the trigger is gone: its
  transition table and PL/pgSQL call cost every append about 30 us (measured with pgbench,
  one client, 0.41 ms an append with the trigger, 0.38 ms without).

Deadlines (DESIGN.md §8a): ``connect_timeout`` (libpq, whole seconds, at least 2; it
also bounds connecting to a frozen postmaster, whose kernel completes the TCP handshake),
``statement_timeout`` (server side: a slow statement is cancelled and the connection
kept), ``tcp_user_timeout`` + keepalives (a dead peer or a partition), and a client-side
deadline on every call, ``call_timeout`` (default `call_timeout` = ``statement_timeout``
+ `CALL_MARGIN`), covering the pool checkout (never longer than ``pool_timeout``) and
every round trip of the call. libpq has no client-side query timeout, so a server whose
processes are frozen (SIGSTOP, a stalled VM) while its kernel still acknowledges packets
would otherwise block a read forever: `kvstore.postgres._watchdog` (one thread per
process) shuts the socket of a call past its deadline down, the call raises
`BackendUnavailableError` ("did not answer within N s") and the connection is closed,
never reused. The statement may still run once the server thaws (its bytes were
delivered), so such an error means "outcome unknown", like any lost reply; the store's
next statement waits until that server process has ended (`Queries.fence`), so it never
overtakes it.

Busy is not an outage (DESIGN.md §8): see `kvstore.postgres._errors`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from kvstore.config import _split_password, _url_scheme
from kvstore.errors import ConfigError

__all__ = [
    "CALL_MARGIN",
    "PUSH_HOLDS_VALUE",
    "PUSH_MISCOUNT",
    "SCHEMA_VERSION",
    "Queries",
    "build_conninfo",
    "call_timeout",
    "is_local",
    "lock_id",
    "migrations",
    "push_function",
    "validate_schema_name",
    "validate_table_prefix",
    "watch_channel",
    "watch_read",
    "watcher_settle",
    "watcher_statements",
]

BACKEND = "postgres"
SCHEMA_VERSION = 8

#: A row that has not expired (server time, so every client agrees).
_LIVE = "(expires_at IS NULL OR expires_at > now())"


def _names(schema: str, table_prefix: str) -> dict[str, sql.Composable]:
    return {
        "schema": sql.Identifier(schema),
        "entries": sql.Identifier(schema, f"{table_prefix}entries"),
        # Version 4 renamed the items table (`trim` moved list heads): a kvstore of version 3 or
        # older still running fails on every list call instead of misplacing an item.
        "items": sql.Identifier(schema, f"{table_prefix}list_items"),
        "items_name": sql.Identifier(f"{table_prefix}list_items"),
        "items_v1": sql.Identifier(schema, f"{table_prefix}items"),
        "meta": sql.Identifier(schema, f"{table_prefix}meta"),
        "ids": sql.Identifier(schema, f"{table_prefix}ids"),
        "ids_created_idx": sql.Identifier(f"{table_prefix}ids_created"),
        "tombstones": sql.Identifier(schema, f"{table_prefix}tombstones"),
        "tombstones_idx": sql.Identifier(f"{table_prefix}tombstones_deleted_at"),
        "cleared": sql.Identifier(schema, f"{table_prefix}cleared"),
        "drop_items": sql.Identifier(schema, f"{table_prefix}drop_items"),
        "expires_idx": sql.Identifier(f"{table_prefix}entries_expires_at"),
        "trg_delete": sql.Identifier(f"{table_prefix}entries_drop_items_on_delete"),
        "trg_update": sql.Identifier(f"{table_prefix}entries_drop_items_on_update"),
        "push_fn": sql.Identifier(schema, f"{table_prefix}push"),
    }


def _render(template: str, names: dict[str, sql.Composable], **extra: sql.Composable) -> str:
    return sql.SQL(template.replace("{LIVE}", _LIVE)).format(**names, **extra).as_string(None)


def _identifier(kind: str, name: object, limit: int) -> str:
    """``name`` if it is a str of 1-``limit`` UTF-8 bytes without NUL, ``%`` or lone surrogate, else `ConfigError`.

    ``%``: psycopg reads ``%s`` and ``%(x)s`` as parameters anywhere in a statement's text, quoted
    identifiers included, so such a name broke every statement with parameters.
    """
    if isinstance(name, str) and name and "\x00" not in name and "%" not in name:
        try:
            if len(name.encode("utf-8")) <= limit:
                return name
        except UnicodeEncodeError:
            pass
    raise ConfigError(
        f"invalid PostgreSQL {kind} {name!r}: 1-{limit} UTF-8 bytes, no NUL, no %, no lone surrogate", backend=BACKEND
    )


def validate_schema_name(schema: str) -> str:
    """A schema name is 1-63 UTF-8 bytes without NUL (quoted, so any other character is fine)."""
    return _identifier("schema name", schema, 63)


#: The longest name suffix derived from ``table_prefix`` (a trigger name).
_LONGEST_SUFFIX = len("entries_drop_items_on_update")


def validate_table_prefix(table_prefix: str) -> str:
    """A table prefix short enough that no derived name passes PostgreSQL's 63-byte limit
    (which would silently truncate it, and two prefixes could share tables)."""
    return _identifier("table prefix", table_prefix, 63 - _LONGEST_SUFFIX)


def lock_id(schema: str) -> int:
    """The advisory-lock key that serialises kvstore migrations in one schema (any table prefix)."""
    digest = hashlib.blake2b(f"kvstore:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def migrations(schema: str, table_prefix: str, *, fresh: bool = False) -> list[list[str]]:
    """DDL statements per schema version (index 0 migrates from version 0 to 1).

    ``fresh`` (tables at version 0): the items table is created under its version-4 name at
    once and never renamed. Renaming a ``<p>items`` that version 1 did not create would take
    another prefix's table: ``<p>list_`` + ``items`` is ``<p>`` + ``list_items``.
    """
    n = _names(schema, table_prefix)
    if fresh:
        n["items_v1"] = n["items"]
    # The primary key keeps the name it had before the rename (``<p>items_pkey``) on every install.
    n["items_pkey"] = sql.Identifier(f"{table_prefix}items_pkey")
    drop_template = sql.SQL("BEGIN DELETE FROM {items} WHERE ns = OLD.ns AND key = OLD.key; RETURN NULL; END")
    drop_body = drop_template.format(items=n["items_v1"])
    drop_body_v4 = drop_template.format(items=n["items"])
    v1 = [
        """CREATE TABLE IF NOT EXISTS {entries} (
            ns text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            kind "char" NOT NULL DEFAULT 'v' CHECK (kind IN ('v', 'l')),
            value json,
            length bigint NOT NULL DEFAULT 0,
            expires_at timestamptz,
            PRIMARY KEY (ns, key)
        )""",
        "CREATE INDEX IF NOT EXISTS {expires_idx} ON {entries} (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS {items_v1} (
            ns text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            seq bigint NOT NULL,
            value json NOT NULL,
            CONSTRAINT {items_pkey} PRIMARY KEY (ns, key, seq)
        )""",
        "CREATE OR REPLACE FUNCTION {drop_items}() RETURNS trigger LANGUAGE plpgsql AS {body}",
        "DROP TRIGGER IF EXISTS {trg_delete} ON {entries}",
        """CREATE TRIGGER {trg_delete} AFTER DELETE ON {entries}
            FOR EACH ROW WHEN (OLD.kind = 'l') EXECUTE FUNCTION {drop_items}()""",
        "DROP TRIGGER IF EXISTS {trg_update} ON {entries}",
        """CREATE TRIGGER {trg_update} AFTER UPDATE OF kind ON {entries}
            FOR EACH ROW WHEN (OLD.kind = 'l' AND NEW.kind <> 'l') EXECUTE FUNCTION {drop_items}()""",
    ]
    v2 = [
        """CREATE TABLE IF NOT EXISTS {ids} (
            ns text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            id text COLLATE "C" NOT NULL,
            length bigint NOT NULL,
            created timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (ns, key, id)
        )""",
        "CREATE INDEX IF NOT EXISTS {ids_created_idx} ON {ids} (created)",
    ]
    v3 = [
        # now() is stable: PostgreSQL 11+ adds the column without rewriting the table,
        # every existing row taking the migration time (changed "recently": conservative).
        "ALTER TABLE {entries} ADD COLUMN IF NOT EXISTS modified_at timestamptz NOT NULL DEFAULT now()",
        """CREATE TABLE IF NOT EXISTS {tombstones} (
            ns text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            deleted_at timestamptz NOT NULL,
            PRIMARY KEY (ns, key)
        )""",
        "CREATE INDEX IF NOT EXISTS {tombstones_idx} ON {tombstones} (deleted_at)",
        """CREATE TABLE IF NOT EXISTS {cleared} (
            ns text COLLATE "C" PRIMARY KEY,
            cleared_at timestamptz NOT NULL
        )""",
    ]
    # A constant default: added without rewriting the table; every existing list starts at 0.
    v4 = [
        "ALTER TABLE {entries} ADD COLUMN IF NOT EXISTS head bigint NOT NULL DEFAULT 0",
        # An older kvstore appends at seq = length and reads from 1: wrong once a trim moved a
        # head. Renaming the table makes each of its list calls fail loudly instead.
        *([] if fresh else ["ALTER TABLE IF EXISTS {items_v1} RENAME TO {items_name}"]),
        "CREATE OR REPLACE FUNCTION {drop_items}() RETURNS trigger LANGUAGE plpgsql AS {body}",
    ]
    # Live updates (`watch`): one NOTIFY per list and INSERT statement, not per row, read from the
    # statement's transition table; the payload is a 16-character tag of (ns, key) and the last
    # position, so it stays small whatever the key. Measured cost: see docs/watch.md.
    n5 = {
        "notify_items": sql.Identifier(schema, f"{table_prefix}notify_list_items"),
        "trg_notify": sql.Identifier(f"{table_prefix}list_items_notify"),
    }
    notify_body = sql.SQL(
        "BEGIN PERFORM pg_notify({channel}, left(md5(octet_length(a.ns)::text || ':' || a.ns || a.key), 16) "
        "|| ' ' || (max(a.seq) - 1)::text) FROM added a GROUP BY a.ns, a.key; RETURN NULL; END"
    ).format(channel=sql.Literal(watch_channel(schema, table_prefix)))
    v5 = [
        "CREATE OR REPLACE FUNCTION {notify_items}() RETURNS trigger LANGUAGE plpgsql AS {body}",
        "DROP TRIGGER IF EXISTS {trg_notify} ON {items}",
        """CREATE TRIGGER {trg_notify} AFTER INSERT ON {items} REFERENCING NEW TABLE AS added
            FOR EACH STATEMENT EXECUTE FUNCTION {notify_items}()""",
    ]
    # Version 6: notify only a watched list (a committing transaction that notified holds a
    # database-wide lock, which capped concurrent appends). One PK probe per list and statement.
    n6 = {**n5, "watchers": sql.Identifier(schema, f"{table_prefix}watchers")}
    notify_body_v6 = sql.SQL(
        "BEGIN PERFORM pg_notify({channel}, left(md5(octet_length(a.ns)::text || ':' || a.ns || a.key), 16) "
        "|| ' ' || (a.last - 1)::text) FROM (SELECT ns, key, max(seq) AS last FROM added GROUP BY ns, key) a "
        "WHERE EXISTS (SELECT 1 FROM {watchers} w WHERE w.ns = a.ns AND w.key = a.key AND w.expires_at > now()); "
        "RETURN NULL; END"
    ).format(channel=sql.Literal(watch_channel(schema, table_prefix)), watchers=n6["watchers"])
    v6 = [
        """CREATE TABLE IF NOT EXISTS {watchers} (
            ns text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            id text COLLATE "C" NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (ns, key, id)
        )""",
        "CREATE OR REPLACE FUNCTION {notify_items}() RETURNS trigger LANGUAGE plpgsql AS {body}",
    ]
    # Version 7: the append statement notifies (`Queries.push`); the trigger and its function go.
    v7 = [
        "DROP TRIGGER IF EXISTS {trg_notify} ON {items}",
        "DROP FUNCTION IF EXISTS {notify_items}()",
    ]
    return [
        [_render(stmt, n, body=sql.Literal(drop_body.as_string(None))) for stmt in v1],
        [_render(stmt, n) for stmt in v2],
        [_render(stmt, n) for stmt in v3],
        [_render(stmt, n, body=sql.Literal(drop_body_v4.as_string(None))) for stmt in v4],
        [_render(stmt, {**n, **n5}, body=sql.Literal(notify_body.as_string(None))) for stmt in v5],
        [_render(stmt, {**n, **n6}, body=sql.Literal(notify_body_v6.as_string(None))) for stmt in v6],
        [_render(stmt, {**n, **n5}) for stmt in v7],
        # Version 8: the append as a function (`push_function`): one statement from the client.
        # EXECUTE for PUBLIC even where default privileges revoke it: every role that appended
        # (the version-7 statement needed only the table privileges) still can. The function runs
        # with the caller's rights (SECURITY INVOKER), so it grants nothing the tables do not.
        [push_function(schema, table_prefix), _render("GRANT EXECUTE ON FUNCTION {push_fn} TO PUBLIC", n)],
    ]


def watch_channel(schema: str, table_prefix: str) -> str:
    """The ``LISTEN`` channel of one set of tables (any prefix): ``kvstore_`` and 16 hex digits."""
    digest = hashlib.blake2b(f"{schema}\x00{table_prefix}".encode(), digest_size=8).hexdigest()
    return f"kvstore_{digest}"


#: A watcher's row lives this long unless refreshed (`WATCHER_REFRESH`); a row expired for
#: longer than `WATCHER_SWEEP` is deleted by the next registration or refresh of its list.
WATCHER_TTL = 30.0
WATCHER_REFRESH = 10.0
WATCHER_SWEEP = 60.0


def watcher_statements(schema: str, table_prefix: str) -> tuple[str, str]:
    """`watch`'s registration (also its refresh) and unregistration; params ``ns, key, id``.

    The registration upserts the watcher's row (``expires_at`` = server time + `WATCHER_TTL`)
    and deletes the list's rows expired more than `WATCHER_SWEEP` ago (other watchers that
    were abandoned): one statement, one index range.
    """
    n = _names(validate_schema_name(schema), validate_table_prefix(table_prefix))
    n["watchers"] = sql.Identifier(schema, f"{table_prefix}watchers")
    register = _render(
        "WITH swept AS (DELETE FROM {watchers} WHERE ns = %(ns)s AND key = %(key)s AND id <> %(id)s "
        f"AND expires_at < now() - interval '{WATCHER_SWEEP:g} seconds') "
        "INSERT INTO {watchers} (ns, key, id, expires_at) "
        f"VALUES (%(ns)s, %(key)s, %(id)s, now() + interval '{WATCHER_TTL:g} seconds') "
        "ON CONFLICT (ns, key, id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        n,
    )
    unregister = _render("DELETE FROM {watchers} WHERE ns = %(ns)s AND key = %(key)s AND id = %(id)s", n)
    return register, unregister


def watcher_settle(schema: str, table_prefix: str) -> str:
    """`watch`'s check, after its registration committed, that no append holds the list's row lock.

    Since version 7 an append probes ``<p>watchers`` in its own statement's snapshot: one that
    began before the registration committed and was still queued on the row lock (behind
    another append, a `trim`, any ``FOR UPDATE``) sends no ``NOTIFY`` when it commits. Once
    this ``FOR SHARE NOWAIT`` succeeds (``55P03`` while the row is locked: the watcher tries
    again), every such append has committed, so the watcher's next read sees its items.
    Params ``ns, key``; no row (a new list) is fine.
    """
    n = _names(validate_schema_name(schema), validate_table_prefix(table_prefix))
    return _render("SELECT 1 FROM {entries} WHERE ns = %(ns)s AND key = %(key)s FOR SHARE NOWAIT", n)


def watch_read(schema: str, table_prefix: str) -> str:
    """`watch`'s read: the list's next position (first row) and up to ``limit`` items after ``pos``.

    One statement, one snapshot. Rows ``(position, kind, value)``: the entry's row carries
    ``head + length`` and its kind; each item row kind ``'i'``, position ``seq - 1``. Items
    of an expired (not yet swept) list are not returned.
    """
    n = _names(validate_schema_name(schema), validate_table_prefix(table_prefix))
    return _render(
        "SELECT head + length AS pos, kind::text, NULL::text FROM {entries} "
        "WHERE ns = %(ns)s AND key = %(key)s AND {LIVE} "
        "UNION ALL (SELECT i.seq - 1, 'i', i.value::text FROM {items} i "
        "WHERE i.ns = %(ns)s AND i.key = %(key)s AND i.seq > %(pos)s::bigint "
        "AND EXISTS (SELECT 1 FROM {entries} WHERE ns = %(ns)s AND key = %(key)s AND kind = 'l' AND {LIVE}) "
        "ORDER BY i.seq LIMIT %(limit)s)",
        n,
    )


def _templates() -> dict[str, str]:
    """Every statement of `Queries`, as a template: ``{entries}`` and the like name the tables, ``{LIVE}``
    is `_LIVE`, and ``%(name)s`` or ``%s`` are the parameters."""
    # Every write stamps modified_at with the server's clock (the replay guard reads it).
    upsert_set = (
        "kind = 'v', value = excluded.value, length = 0, head = 0, expires_at = excluded.expires_at, "
        "modified_at = excluded.modified_at"
    )
    expiry = "now() + %s::bigint * interval '1 millisecond'"
    named_expiry = "now() + %(ms)s::bigint * interval '1 millisecond'"
    # The oldest ``created`` still inside the idempotency window (parameter: seconds).
    named_window = "now() - %(window)s::float8 * interval '1 second'"
    # The existing row of an upsert (``e``) has not expired.
    e_live = "(e.expires_at IS NULL OR e.expires_at > now())"
    # LRANGE / LTRIM bounds, 0-based, on a list of ``length`` items (lo > hi: empty).
    lo = "(CASE WHEN %(start)s::bigint < 0 THEN greatest(length + %(start)s::bigint, 0) ELSE %(start)s::bigint END)"
    hi = "(CASE WHEN %(end)s::bigint < 0 THEN length + %(end)s::bigint ELSE least(%(end)s::bigint, length - 1) END)"
    return {
        "lock": "SELECT pg_advisory_xact_lock(%s)",
        "schema_exists": "SELECT 1 FROM pg_namespace WHERE nspname = %s",
        "create_schema": "CREATE SCHEMA IF NOT EXISTS {schema}",
        "create_meta": "CREATE TABLE IF NOT EXISTS {meta} (id int PRIMARY KEY CHECK (id = 1), version int NOT NULL)",
        "meta_exists": "SELECT 1 FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
        "WHERE s.nspname = %s AND c.relname = %s",
        "read_version": "SELECT version FROM {meta} WHERE id = 1",
        "write_version": "INSERT INTO {meta} (id, version) VALUES (1, %s) "
        "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        "server_encoding": "SELECT current_setting('server_encoding'), current_setting('client_encoding'), "
        "current_setting('default_transaction_isolation')",
        "get": "SELECT kind, value::text FROM {entries} WHERE ns = %s AND key = %s AND {LIVE}",
        # Read and restart the TTL in one statement (a re-expiry: dated like `expire`); a
        # list is left alone and reported by its kind.
        "get_touch": f"WITH u AS (UPDATE {{entries}} SET expires_at = {named_expiry}, modified_at = now() "
        "WHERE ns = %(ns)s AND key = %(key)s AND kind = 'v' AND {LIVE} RETURNING value::text AS v) "
        "SELECT 'v', v FROM u UNION ALL SELECT kind::text, NULL FROM {entries} "
        "WHERE ns = %(ns)s AND key = %(key)s AND kind = 'l' AND {LIVE}",
        "set": "INSERT INTO {entries} AS e (ns, key, kind, value, length, expires_at, modified_at) "
        f"VALUES (%s, %s, 'v', %s::json, 0, {expiry}, now()) "
        f"ON CONFLICT (ns, key) DO UPDATE SET {upsert_set}",
        "set_nx": "INSERT INTO {entries} AS e (ns, key, kind, value, length, expires_at, modified_at) "
        f"VALUES (%s, %s, 'v', %s::json, 0, {expiry}, now()) "
        f"ON CONFLICT (ns, key) DO UPDATE SET {upsert_set} "
        "WHERE e.expires_at IS NOT NULL AND e.expires_at <= now() RETURNING 1",
        # The tombstone is written by the same statement: no extra round trip.
        # A delete is a change even when nothing was there: its tombstone tells a replaying
        # instance that a write it journaled earlier is older than this delete.
        "delete": "WITH d AS (DELETE FROM {entries} WHERE ns = %(ns)s AND key = %(key)s RETURNING {LIVE} AS live), "
        "t AS (INSERT INTO {tombstones} AS t (ns, key, deleted_at) VALUES (%(ns)s, %(key)s, now()) "
        "ON CONFLICT (ns, key) DO UPDATE SET deleted_at = excluded.deleted_at) SELECT live FROM d",
        # Many keys in one statement, each tombstoned like `delete` (the keys are distinct).
        "delete_many": "WITH d AS (DELETE FROM {entries} WHERE ns = %(ns)s AND key = ANY(%(keys)b::text[]) "
        "RETURNING {LIVE} AS live), "
        "t AS (INSERT INTO {tombstones} AS t (ns, key, deleted_at) "
        "SELECT %(ns)s, u.k, now() FROM unnest(%(keys)b::text[]) AS u(k) "
        "ON CONFLICT (ns, key) DO UPDATE SET deleted_at = excluded.deleted_at) "
        "SELECT count(*) FILTER (WHERE live) FROM d",
        # Add to an integer in one statement. ON CONFLICT DO UPDATE works on the newest row
        # version (row-locked), so concurrent increments serialise and none is lost. An
        # expired row counts from 0 without TTL (a list's items go by trigger); a live value
        # is updated only when its JSON text is an integer and the sum stays in int64 (the
        # CASE guards the cast), keeping its TTL. Otherwise nothing is written and the second
        # branch reports what the key holds (kind, text) for the error.
        "incr": "WITH up AS (INSERT INTO {entries} AS e (ns, key, kind, value, length, expires_at, modified_at) "
        "VALUES (%(ns)s, %(key)s, 'v', to_json(%(by)s::bigint), 0, NULL, now()) "
        "ON CONFLICT (ns, key) DO UPDATE SET kind = 'v', length = 0, head = 0, modified_at = now(), "
        "value = CASE WHEN e.expires_at <= now() THEN excluded.value "
        "ELSE to_json(e.value::text::numeric + %(by)s::bigint) END, "
        "expires_at = CASE WHEN e.expires_at <= now() THEN NULL ELSE e.expires_at END "
        "WHERE e.expires_at <= now() OR CASE WHEN e.kind = 'v' AND e.value::text ~ '^-?[0-9]{{1,19}}$' "
        "THEN e.value::text::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 "
        "AND e.value::text::numeric + %(by)s::bigint BETWEEN -9223372036854775808 AND 9223372036854775807 "
        "ELSE false END "
        "RETURNING e.value::text::bigint AS n) "
        "SELECT n, NULL, NULL FROM up UNION ALL "
        "SELECT NULL, kind::text, value::text FROM {entries} WHERE ns = %(ns)s AND key = %(key)s AND {LIVE} "
        "AND NOT EXISTS (SELECT 1 FROM up)",
        "exists": "SELECT 1 FROM {entries} WHERE ns = %s AND key = %s AND {LIVE}",
        "mget": "SELECT key, kind, value::text FROM {entries} WHERE ns = %s AND key = ANY(%b::text[]) AND {LIVE}",
        "mset": "INSERT INTO {entries} AS e (ns, key, kind, value, length, expires_at, modified_at) "
        "SELECT %s, u.k, 'v', u.v::json, 0, now() + u.t * interval '1 millisecond', now() "
        "FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS u(k, v, t) "
        f"ON CONFLICT (ns, key) DO UPDATE SET {upsert_set}",
        "keys_page": "SELECT key FROM {entries} WHERE ns = %s AND key >= %s AND key > %s AND {LIVE} "
        "ORDER BY key LIMIT %s",
        "keys_page_bounded": "SELECT key FROM {entries} WHERE ns = %s AND key >= %s AND key > %s AND key < %s "
        "AND {LIVE} ORDER BY key LIMIT %s",
        # The clear mark is written by the same statement (the replay guard's "cleared after").
        # Items first (so the per-list trigger finds nothing to do), all in one statement.
        "clear": "WITH i AS (DELETE FROM {items} WHERE ns = %(ns)s), "
        "c AS (INSERT INTO {cleared} (ns, cleared_at) VALUES (%(ns)s, now()) "
        "ON CONFLICT (ns) DO UPDATE SET cleared_at = excluded.cleared_at) "
        "DELETE FROM {entries} WHERE ns = %(ns)s",
        "ttl": "SELECT extract(epoch FROM expires_at - now())::float8 FROM {entries} "
        "WHERE ns = %s AND key = %s AND {LIVE}",
        "expire": f"UPDATE {{entries}} SET expires_at = {expiry}, modified_at = now() "
        "WHERE ns = %s AND key = %s AND {LIVE} RETURNING 1",
        # The sweep, one batch per statement (one round trip): expired entries (a list's items go
        # by trigger), and the idempotency ids, tombstones and clear marks older than the window
        # (a replay is never older than it). Returns how many entries and ids/tombstones went.
        # Each DELETE repeats its condition outside the batch subquery: a row a writer changed
        # after this statement's snapshot (an expired key set or appended to again, a fresh
        # tombstone) is re-checked on its new version (READ COMMITTED re-evaluates the WHERE
        # of the row it waited for, but not a subquery's result) and left alone.
        "purge": "WITH e AS (DELETE FROM {entries} WHERE (ns, key) IN (SELECT ns, key FROM {entries} "
        "WHERE expires_at <= now() LIMIT %(batch)s) AND expires_at <= now() RETURNING 1), "
        "i AS (DELETE FROM {ids} WHERE (ns, key, id) IN (SELECT ns, key, id FROM {ids} "
        f"WHERE created <= {named_window} LIMIT %(batch)s) AND created <= {named_window} RETURNING 1), "
        "t AS (DELETE FROM {tombstones} WHERE (ns, key) IN (SELECT ns, key FROM {tombstones} "
        f"WHERE deleted_at <= {named_window} LIMIT %(batch)s) AND deleted_at <= {named_window} RETURNING 1), "
        f"c AS (DELETE FROM {{cleared}} WHERE cleared_at <= {named_window}) "
        "SELECT (SELECT count(*) FROM e), greatest((SELECT count(*) FROM i), (SELECT count(*) FROM t))",
        "length": "SELECT kind, length FROM {entries} WHERE ns = %s AND key = %s AND {LIVE}",
        # append/extend: one call of the schema's function (`push_function`, version 8), one
        # statement from the client (autocommit: one round trip), atomic like a transaction.
        # Its fast path handles a live list; everything else runs `push_statement`, which is
        # append/extend in ONE statement (it was the client's statement up to version 7):
        #   seen: an idempotency id applied within the window: its length is the answer, nothing
        #         is written. s: the entry as this statement's snapshot sees it (the report, and
        #         the xmin guard below).
        #   up:   bump the counter row (the row lock queues concurrent appenders: gapless
        #         positions). A live list grows; an absent key or an expired value becomes a
        #         list; an expired list starts again as a new list (head 0: positions from 0,
        #         as after a delete and as on every other backend), but only when the locked
        #         row is the snapshot's version (same xmin): then every old item is visible to
        #         `gone`, which deletes them. Anything else (a live value, or a row changed
        #         since the snapshot) is left alone and reported.
        #   el:   the elements of the JSON array parameter (each keeps its text, but for the
        #         whitespace around it). Only when there are n of them is anything written:
        #         an item that is not one JSON document (``1,2``, empty) would split or
        #         merge, leaving the counter wrong. Their count is the statement's last column.
        #   gone: when the list (re)starts (its length is n: a live list is never empty), the
        #         key's old items: an expired list's (a value's went by trigger). Skipped (a
        #         one-time filter) for a list that grows.
        #   it:   the items, at seq = head + length - n + 1 .. head + length; after `gone` (it
        #         reads gone's count), so a restarted list's seq 1.. never meets an old item.
        #   rec:  the id, after `forget` dropped one older than the window. A racing call with
        #         the same id that committed first (this one waited on its row lock) makes
        #         this plain INSERT fail with a unique violation on the ids key: the whole
        #         statement rolls back and the caller runs it again (it then sees the id).
        #   nt:   wakes the list's watchers (`watch`): one NOTIFY, payload "<key tag> <last
        #         position>", only when items were written and a watcher's row is live
        #         (PostgreSQL serialises the commits of transactions that notified). Its
        #         count is the last column: a plain SELECT in a WITH runs only when read.
        # push_statement's columns: (length after the write, length an id already seen answered,
        # the kind and liveness the snapshot saw, the number of items in the array, NOTIFYs
        # sent); push's one column: see `PUSH_HOLDS_VALUE`.
        "push": "SELECT {push_fn}(%(ns)s, %(key)s, %(n)s::bigint, %(items)s::json, %(id)s::text, %(window)s::float8)",
        "push_statement": "WITH seen AS (SELECT length FROM {ids} WHERE ns = %(ns)s AND key = %(key)s AND id = %(id)s "
        f"AND created > {named_window}), "
        "s AS (SELECT xmin AS x, kind, {LIVE} AS live FROM {entries} WHERE ns = %(ns)s AND key = %(key)s), "
        "el AS MATERIALIZED (SELECT u.v, u.ord "
        "FROM json_array_elements(%(items)s::json) WITH ORDINALITY AS u(v, ord)), "
        "up AS (INSERT INTO {entries} AS e (ns, key, kind, length, modified_at) "
        "SELECT %(ns)s, %(key)s, 'l', %(n)s::bigint, now() WHERE NOT EXISTS (SELECT 1 FROM seen) "
        "AND (SELECT count(*) FROM el) = %(n)s::bigint "
        "ON CONFLICT (ns, key) DO UPDATE SET kind = 'l', value = NULL, modified_at = excluded.modified_at, "
        f"length = CASE WHEN e.kind = 'l' AND {e_live} THEN e.length + excluded.length ELSE excluded.length END, "
        f"head = CASE WHEN {e_live} THEN e.head ELSE 0 END, "
        f"expires_at = CASE WHEN {e_live} THEN e.expires_at END "
        f"WHERE CASE WHEN {e_live} THEN e.kind = 'l' ELSE e.kind = 'v' OR e.xmin = (SELECT x FROM s) END "
        "RETURNING e.length, e.head), "
        "gone AS (DELETE FROM {items} WHERE ns = %(ns)s AND key = %(key)s "
        "AND (SELECT length FROM up) = %(n)s::bigint RETURNING 1), "
        "it AS (INSERT INTO {items} (ns, key, seq, value) "
        "SELECT %(ns)s, %(key)s, up.head + up.length - %(n)s::bigint + el.ord, el.v FROM up, el "
        "WHERE (SELECT count(*) FROM gone) >= 0), "
        "forget AS (DELETE FROM {ids} WHERE ns = %(ns)s AND key = %(key)s AND id = %(id)s "
        f"AND created <= {named_window} AND EXISTS (SELECT 1 FROM up) RETURNING 1), "
        "rec AS (INSERT INTO {ids} (ns, key, id, length, created) "
        "SELECT %(ns)s, %(key)s, %(id)s, up.length, now() FROM up "
        "WHERE %(id)s::text IS NOT NULL AND (SELECT count(*) FROM forget) >= 0), "
        "nt AS (SELECT pg_notify({channel}, left(md5(octet_length(%(ns)s)::text || ':' || %(ns)s || %(key)s), 16) "
        "|| ' ' || (up.head + up.length - 1)::text) FROM up WHERE EXISTS (SELECT 1 FROM {watchers} w "
        "WHERE w.ns = %(ns)s AND w.key = %(key)s AND w.expires_at > now())) "
        "SELECT (SELECT length FROM up), (SELECT length FROM seen), "
        "(SELECT kind::text FROM s), (SELECT live FROM s), (SELECT count(*) FROM el), (SELECT count(*) FROM nt)",
        # The replay guard (see AsyncDatabase.changed_since): one round trip for many keys.
        "server_time": "SELECT extract(epoch FROM clock_timestamp())::float8",
        # The fence (see PostgresDatabase._await_fences): of the server processes this store
        # cut at a deadline, those still there (same pid, started before the cut, same role:
        # a reused pid is not ours), each asked to end (pg_terminate_backend: one idle or
        # frozen ends before it reads what it was sent; one mid-statement rolls back unless
        # it has committed). One row per process still there. The role is the session's
        # (login) role: current_user differs under a role set by the URL's options or ALTER
        # ROLE ... SET role. A process of a role the current one has not the privileges of
        # shows no backend_start and may not be signalled: it is only waited for (thawed, it
        # ends by itself: its client is gone). The cut times are the client's wall clock:
        # moved to the server's by the skew this statement sees (server time now minus the
        # client's ``now``, sent with it; off by the one-way latency). pg_stat_get_activity(pid)
        # rather than the pg_stat_activity view, which hardened servers revoke from PUBLIC.
        "fence": "SELECT a.pid, a.pid <> pg_backend_pid() AND pg_has_role(a.usesysid, 'USAGE') "
        "AND pg_terminate_backend(a.pid) "
        "FROM unnest(%(pids)s::int[], %(cuts)s::float8[]) AS f(pid, cut), LATERAL pg_stat_get_activity(f.pid) a "
        "WHERE a.pid = f.pid AND pg_get_userbyid(a.usesysid) = session_user AND (a.backend_start IS NULL "
        "OR a.backend_start <= to_timestamp(f.cut) + (statement_timestamp() - to_timestamp(%(now)s::float8)))",
        # A since older than the window may predate swept tombstones: every key counts as changed.
        "changed_since": "SELECT u.k FROM unnest(%(keys)b::text[]) AS u(k) "
        "WHERE to_timestamp(%(since)s::float8) <= now() - %(window)s::float8 * interval '1 second' "
        "OR EXISTS (SELECT 1 FROM {entries} e WHERE e.ns = %(ns)s AND e.key = u.k "
        "AND e.modified_at > to_timestamp(%(since)s::float8)) "
        "OR EXISTS (SELECT 1 FROM {tombstones} t WHERE t.ns = %(ns)s AND t.key = u.k "
        "AND t.deleted_at > to_timestamp(%(since)s::float8)) "
        "OR EXISTS (SELECT 1 FROM {cleared} c WHERE c.ns = %(ns)s "
        "AND c.cleared_at > to_timestamp(%(since)s::float8))",
        # Replay, atomically: written (dated at the journaled write's time) only when nothing
        # changed the key since; ON CONFLICT ... WHERE re-checks the newest row version, so a
        # concurrent writer's row is never overwritten. No row back: a conflict.
        "replay_set": "INSERT INTO {entries} AS e (ns, key, kind, value, length, expires_at, modified_at) "
        "SELECT %(ns)s, %(key)s, 'v', %(value)s::json, 0, now() + %(ms)s::bigint * interval '1 millisecond', "
        "to_timestamp(%(since)s::float8) "
        "WHERE to_timestamp(%(since)s::float8) > now() - %(window)s::float8 * interval '1 second' "
        "AND NOT EXISTS (SELECT 1 FROM {tombstones} t WHERE t.ns = %(ns)s AND t.key = %(key)s "
        "AND t.deleted_at > to_timestamp(%(since)s::float8)) "
        "AND NOT EXISTS (SELECT 1 FROM {cleared} c WHERE c.ns = %(ns)s "
        "AND c.cleared_at > to_timestamp(%(since)s::float8)) "
        f"ON CONFLICT (ns, key) DO UPDATE SET {upsert_set} "
        "WHERE e.modified_at <= to_timestamp(%(since)s::float8) RETURNING 1",
        "replay_delete": "WITH d AS (DELETE FROM {entries} WHERE ns = %(ns)s AND key = %(key)s "
        "AND modified_at <= to_timestamp(%(since)s::float8) RETURNING 1), "
        "c AS (SELECT (to_timestamp(%(since)s::float8) <= now() - %(window)s::float8 * interval '1 second' "
        "OR EXISTS (SELECT 1 FROM {entries} e WHERE e.ns = %(ns)s AND e.key = %(key)s "
        "AND e.modified_at > to_timestamp(%(since)s::float8)) "
        "OR EXISTS (SELECT 1 FROM {tombstones} t WHERE t.ns = %(ns)s AND t.key = %(key)s "
        "AND t.deleted_at > to_timestamp(%(since)s::float8)) "
        "OR EXISTS (SELECT 1 FROM {cleared} k WHERE k.ns = %(ns)s "
        "AND k.cleared_at > to_timestamp(%(since)s::float8))) AS changed), "
        "t AS (INSERT INTO {tombstones} AS t (ns, key, deleted_at) "
        "SELECT %(ns)s, %(key)s, to_timestamp(%(since)s::float8) FROM c WHERE NOT c.changed "
        "ON CONFLICT (ns, key) DO UPDATE SET deleted_at = greatest(t.deleted_at, excluded.deleted_at)) "
        "SELECT changed FROM c",
        "mark_cleared": "INSERT INTO {cleared} AS c (ns, cleared_at) VALUES (%(ns)s, to_timestamp(%(at)s::float8)) "
        "ON CONFLICT (ns) DO UPDATE SET cleared_at = greatest(c.cleared_at, excluded.cleared_at)",
        # The failover dates what a replay applied at the time the write was made (one round trip).
        "restamp": "WITH e AS (UPDATE {entries} SET modified_at = to_timestamp(%(at)s::float8) "
        "WHERE ns = %(ns)s AND key = ANY(%(keys)b::text[]) RETURNING 1) "
        "UPDATE {tombstones} SET deleted_at = to_timestamp(%(at)s::float8) "
        "WHERE ns = %(ns)s AND key = ANY(%(keys)b::text[])",
        # LRANGE arithmetic in SQL, on the counter read in the same snapshot as the items:
        # one round trip. The bounds are computed once (InitPlans), so the item scan is an
        # index range on (ns, key, seq): O(log n + k). The LIMIT is the selection's size (it
        # never cuts a row): it makes the ordered index scan, which needs no sort, the
        # cheapest plan. Without it, PostgreSQL 15's generic plan for the benchmark's table
        # (two lists of 100,000 messages) was a bitmap scan plus a sort of the selection.
        # Only the items come back (one column, like a bare range
        # read); no row at all (a missing, empty or expired list, a range past the end, or
        # a key holding a value) is told apart by the `length` statement (see _get_range).
        "range": "WITH b AS (SELECT kind, "
        f"head + {lo} + 1 AS lo, head + {hi} + 1 AS hi, greatest({hi} - {lo} + 1, 0) AS n "
        "FROM {entries} WHERE ns = %(ns)s AND key = %(key)s AND {LIVE}) "
        "SELECT value::text FROM {items} "
        "WHERE ns = %(ns)s AND key = %(key)s "
        "AND seq >= (SELECT lo FROM b WHERE kind = 'l') AND seq <= (SELECT hi FROM b WHERE kind = 'l') "
        "ORDER BY seq LIMIT (SELECT n FROM b WHERE kind = 'l')",
        # LTRIM in one statement, O(removed): delete the items before and after the kept
        # positions (index ranges on (ns, key, seq)), move head, never renumber. The row is
        # locked (l) and compared with this statement's snapshot (s): if an append committed
        # in between, its items are invisible here, so nothing is done and the caller runs
        # the statement again (raced). An empty selection deletes the list, tombstoned like
        # `delete`; a trim that removes items dates the change like any write.
        "trim": "WITH s AS (SELECT xmin FROM {entries} WHERE ns = %(ns)s AND key = %(key)s AND {LIVE}), "
        f"l AS (SELECT xmin, kind, head, length, {lo} AS lo, {hi} AS hi "
        "FROM {entries} WHERE ns = %(ns)s AND key = %(key)s AND {LIVE} FOR UPDATE), "
        "ok AS (SELECT l.*, l.lo > l.hi AS gone FROM l JOIN s ON s.xmin = l.xmin WHERE l.kind = 'l'), "
        # Bounds as scalar subqueries (InitPlans): each delete is an index range scan.
        "front AS (DELETE FROM {items} WHERE ns = %(ns)s AND key = %(key)s "
        "AND seq > (SELECT head FROM ok WHERE NOT gone) AND seq <= (SELECT head + lo FROM ok WHERE NOT gone)), "
        "back AS (DELETE FROM {items} WHERE ns = %(ns)s AND key = %(key)s "
        "AND seq > (SELECT head + hi + 1 FROM ok WHERE NOT gone) "
        "AND seq <= (SELECT head + length FROM ok WHERE NOT gone)), "
        "kept AS (UPDATE {entries} e SET head = ok.head + ok.lo, length = ok.hi - ok.lo + 1, modified_at = now() "
        "FROM ok WHERE e.ns = %(ns)s AND e.key = %(key)s AND NOT ok.gone "
        "AND (ok.lo > 0 OR ok.hi < ok.length - 1)), "
        "dropped AS (DELETE FROM {entries} e USING ok WHERE e.ns = %(ns)s AND e.key = %(key)s AND ok.gone), "
        "t AS (INSERT INTO {tombstones} AS t (ns, key, deleted_at) SELECT %(ns)s, %(key)s, now() FROM ok "
        "WHERE ok.gone ON CONFLICT (ns, key) DO UPDATE SET deleted_at = excluded.deleted_at) "
        "SELECT l.kind::text, s.xmin IS NULL OR NOT s.xmin = l.xmin, "
        "CASE WHEN l.lo > l.hi THEN l.length ELSE l.length - (l.hi - l.lo + 1) END FROM l LEFT JOIN s ON true",
    }


@dataclass(frozen=True)
class Queries:
    """Every statement of one store, rendered once (identifiers quoted) to plain strings."""

    lock: str
    schema_exists: str
    create_schema: str
    create_meta: str
    meta_exists: str
    read_version: str
    write_version: str
    server_encoding: str
    get: str
    get_touch: str
    set: str
    set_nx: str
    delete: str
    delete_many: str
    incr: str
    exists: str
    mget: str
    mset: str
    keys_page: str
    keys_page_bounded: str
    clear: str
    ttl: str
    expire: str
    purge: str
    length: str
    push: str
    push_statement: str
    range: str
    trim: str
    server_time: str
    fence: str
    changed_since: str
    restamp: str
    replay_set: str
    replay_delete: str
    mark_cleared: str

    @classmethod
    def build(cls, schema: str, table_prefix: str) -> Queries:
        """Render every statement for ``schema`` and ``table_prefix``."""
        n = _names(validate_schema_name(schema), validate_table_prefix(table_prefix))
        n["watchers"] = sql.Identifier(schema, f"{table_prefix}watchers")
        n["channel"] = sql.Literal(watch_channel(schema, table_prefix))
        templates = _templates()
        return cls(**{name: _render(text, n) for name, text in templates.items()})


#: `push_function`'s parameters, in the order the client passes them (`Queries.push`).
_PUSH_PARAMS = ("ns", "key", "n", "items", "id", "window")

#: `Queries.push` answers one bigint (one column: its six as a record cost about 10 us of server
#: CPU more per append). ``r > 0``: the list's length after the call (the items were appended,
#: or an idempotency id applied within the window answered as its first call did). NULL:
#: nothing written, the row changed under the statement (raced: run it again). `PUSH_HOLDS_VALUE`:
#: nothing written, the key holds a live value. ``r <= PUSH_MISCOUNT``: nothing written, the JSON
#: array held ``PUSH_MISCOUNT - r`` items, not ``n``.
PUSH_HOLDS_VALUE = -1
PUSH_MISCOUNT = -2


def push_function(schema: str, table_prefix: str) -> str:
    """The ``CREATE FUNCTION`` of ``<p>push`` (schema version 8): `Queries.push_statement` with a fast path.

    Measured with ``python -m benchmarks.pg_append_cost`` (server CPU per append), the one
    statement spent most of its time on what the common case never needs: the idempotency-id
    CTEs, the snapshot read for the xmin guard, the delete of an expired list's items, the
    upsert, the JSON array as a table. The function does what that case needs and no more:
    once the id (if any) is not found within the window and the array holds ``n`` items, one
    ``UPDATE`` of a live list's counter row (its row lock queues concurrent appenders, and READ
    COMMITTED re-checks the newest version of the row it waited for, so a list that expired,
    was deleted or became a value meanwhile is not matched), then the items, the id, the
    watcher probe. When no live list matched, `Queries.push_statement` runs, in a new snapshot,
    and decides every other case exactly as it did as the client's statement (up to version 7).

    It is all one client statement (one transaction under autocommit): an error anywhere (an id
    a racing call recorded first: a unique violation on ``<p>ids``) rolls back all of it. What
    it returns: see `PUSH_HOLDS_VALUE`.
    """
    n = _names(validate_schema_name(schema), validate_table_prefix(table_prefix))
    n["watchers"] = sql.Identifier(schema, f"{table_prefix}watchers")
    n["channel"] = sql.Literal(watch_channel(schema, table_prefix))
    # The parameters become the function's, in the template: a table name may hold any text.
    template = _templates()["push_statement"]
    for name in _PUSH_PARAMS:
        template = template.replace(f"%({name})s", f"p_{name}")
    if "%" in template:
        raise AssertionError("push_statement has a parameter push_function does not pass")
    statement = _render(template, n)
    body = _render(
        "DECLARE v_length bigint; v_head bigint; v_seen bigint; v_kind text; v_live boolean; v_count bigint; "
        "v_notified bigint; BEGIN "
        "IF p_id IS NOT NULL THEN "
        "SELECT i.length INTO v_seen FROM {ids} i WHERE i.ns = p_ns AND i.key = p_key AND i.id = p_id "
        "AND i.created > now() - p_window * interval '1 second'; "
        "IF FOUND THEN RETURN v_seen; END IF; "
        "END IF; "
        # One item comes alone: json's input proved it one JSON document. More come as an array.
        "IF p_n <> 1 THEN "
        "v_count := json_array_length(p_items); "
        "IF v_count <> p_n THEN RETURN {miscount} - v_count; END IF; "
        "END IF; "
        "UPDATE {entries} e SET length = e.length + p_n, modified_at = now() "
        "WHERE e.ns = p_ns AND e.key = p_key AND e.kind = 'l' AND (e.expires_at IS NULL OR e.expires_at > now()) "
        "RETURNING e.length, e.head INTO v_length, v_head; "
        "IF NOT FOUND THEN "
        "IF p_n = 1 THEN p_items := json_build_array(p_items); END IF; "
        "{statement} INTO v_length, v_seen, v_kind, v_live, v_count, v_notified; "
        "RETURN CASE WHEN v_length IS NOT NULL THEN v_length WHEN v_seen IS NOT NULL THEN v_seen "
        "WHEN v_count <> p_n THEN {miscount} - v_count WHEN v_kind = 'v' AND v_live THEN {holds_value} END; "
        "END IF; "
        "IF p_n = 1 THEN "
        "INSERT INTO {items} (ns, key, seq, value) VALUES (p_ns, p_key, v_head + v_length, p_items); "
        "ELSE "
        "INSERT INTO {items} (ns, key, seq, value) SELECT p_ns, p_key, v_head + v_length - p_n + u.ord, u.v "
        "FROM json_array_elements(p_items) WITH ORDINALITY AS u(v, ord); "
        "END IF; "
        "IF p_id IS NOT NULL THEN "
        "DELETE FROM {ids} WHERE ns = p_ns AND key = p_key AND id = p_id "
        "AND created <= now() - p_window * interval '1 second'; "
        "INSERT INTO {ids} (ns, key, id, length, created) VALUES (p_ns, p_key, p_id, v_length, now()); "
        "END IF; "
        "IF EXISTS (SELECT 1 FROM {watchers} w WHERE w.ns = p_ns AND w.key = p_key AND w.expires_at > now()) THEN "
        "PERFORM pg_notify({channel}, left(md5(octet_length(p_ns)::text || ':' || p_ns || p_key), 16) "
        "|| ' ' || (v_head + v_length - 1)::text); "
        "END IF; "
        "RETURN v_length; "
        "END",
        n,
        statement=sql.SQL(statement),  # rendered already: not read as a template again
        miscount=sql.Literal(PUSH_MISCOUNT),
        holds_value=sql.Literal(PUSH_HOLDS_VALUE),
    )
    return _render(
        "CREATE OR REPLACE FUNCTION {push_fn}(p_ns text, p_key text, p_n bigint, p_items json, p_id text, "
        "p_window float8) RETURNS bigint LANGUAGE plpgsql AS {body}",
        n,
        body=sql.Literal(body),
    )


# --- connection parameters ----------------------------------------------------------


def build_conninfo(
    url: str | None,
    *,
    connect_timeout: float = 2.0,
    statement_timeout: float = 5.0,
    tcp_user_timeout: float = 5.0,
    application_name: str = "kvstore",
    **fields: Any,
) -> tuple[str, str | None]:
    """A libpq conninfo string with every deadline set, and the password taken out of it.

    ``fields`` (``host``, ``port``, ``dbname``, ``user``, ``sslmode``...; ``None`` =
    not given) override what the URL says. The password is returned apart so it
    travels in the connection kwargs and never sits in a string that could be printed.

    A ``postgresql://`` URL is read as the config reads it (`kvstore.config`): its password
    may hold ``/ # ? @ $ %`` unencoded (libpq would end it at the first ``@`` and take the
    rest for a host name, printed in its errors). Raises `ConfigError`, quoting none of the
    text, when it cannot be read.
    """
    password: str | None = None
    if url and _url_scheme(url) in ("postgres", "postgresql"):
        try:
            url, password = _split_password(url)
        except ValueError as exc:
            raise ConfigError(str(exc), backend=BACKEND) from None
    try:
        params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(url or "")
    except psycopg.ProgrammingError:
        # libpq's message quotes the text it could not read, which may be the password.
        raise ConfigError(
            "the PostgreSQL URL or conninfo string cannot be read (not quoted: it may hold the password)",
            backend=BACKEND,
        ) from None
    in_conninfo = params.pop("password", None)
    if password is None and in_conninfo is not None:
        password = str(in_conninfo)
    params.update({k: v for k, v in fields.items() if v is not None})
    params.setdefault("application_name", application_name)
    # libpq takes whole seconds for connect_timeout and treats less than 2 as 2.
    params["connect_timeout"] = max(2, math.ceil(connect_timeout))
    params["tcp_user_timeout"] = max(1, int(tcp_user_timeout * 1000))
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", max(1, int(tcp_user_timeout)))
    params.setdefault("keepalives_interval", 1)
    params.setdefault("keepalives_count", 3)
    options = str(params.get("options") or "")
    statement_ms = max(1, int(statement_timeout * 1000))
    options = f"{options} -c statement_timeout={statement_ms}"
    # kvstore's statements rely on READ COMMITTED: a write queued on a row lock goes on with the
    # row's newest version. Under REPEATABLE READ or SERIALIZABLE (a database's or role's default)
    # it would fail (40001) instead. Last on the line, so it overrides the URL's own setting too.
    options += r" -c default_transaction_isolation=read\ committed"
    if not _SETS_LOCK_TIMEOUT.search(options):  # the URL's own lock_timeout is kept
        # A row lock held by another session is a busy server, not an outage: give up on the
        # lock (55P03, BackendBusyError) before the statement's own deadline (57014) would fire.
        options += f" -c lock_timeout={max(1, int(statement_ms * 0.8))}"
    params["options"] = options.strip()
    return psycopg.conninfo.make_conninfo("", **params), password


#: ``-c lock_timeout=...`` (or ``--lock-timeout=...``) in libpq's ``options``.
_SETS_LOCK_TIMEOUT = re.compile(r"(?:-c\s*|--)lock[_-]timeout\s*=", re.IGNORECASE)


def is_local(conninfo: str) -> bool:
    """Whether every host of ``conninfo`` is a Unix socket or a loopback address."""
    hosts = str(psycopg.conninfo.conninfo_to_dict(conninfo).get("host") or "localhost")
    return all(h.startswith("/") or h in ("localhost", "127.0.0.1", "::1", "") for h in hosts.split(","))


# --- deadlines ----------------------------------------------------------------------


#: Seconds the client-side call deadline adds to ``statement_timeout`` by default, so a
#: slow statement is cancelled cleanly by the server (its connection kept) before the
#: watchdog has to cut the connection.
CALL_MARGIN = 0.25


def call_timeout(statement_timeout: float, given: float | None = None) -> float:
    """The client-side deadline of one call: ``given``, else ``statement_timeout`` + `CALL_MARGIN`."""
    timeout = statement_timeout + CALL_MARGIN if given is None else given
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"call_timeout must be a positive number of seconds, not {timeout!r}", backend=BACKEND)
    return float(timeout)
