"""Where a PostgreSQL append's server time goes: the server CPU of kvstore's append statement, part by part.

Usage: ``python -m benchmarks.pg_append_cost [--url URL] [--rounds 7] [--appends 800]``

The issue 14 line "PostgreSQL chat append >= 0.8x a raw INSERT" is decided by the server: the client side of
``ChatHistory.add`` is a few percent of it. Wall time on this machine moves by +-10 % from run to run, which hides
the 5-15 us each part of the statement costs, so this measures the server process's own CPU time per statement
(``/proc/<pid>/schedstat``, nanoseconds; the server must run on this machine) for:

* ``raw INSERT``: one row into a ``(conv, seq, value)`` table (the report's floor);
* ``counter + item``: bump the list's counter row and insert the item, one statement, nothing else;
* kvstore's append (`Queries.push`, one item, no idempotency id): since schema version 8 one call of the
  schema's function ``<p>push`` (`kvstore.postgres._sql.push_function`), whose fast path (a live list) runs only
  the counter UPDATE, the INSERT, the id (when given) and the watcher probe;
* the one statement that function runs for every other case (`Queries.push_statement`: kvstore's append up to
  version 7), then the same statement with one more part taken out at each step (cumulative): the idempotency-id
  CTEs, the snapshot read ``s`` (the xmin guard and the report of what the key holds), the delete of an expired
  list's items, the watcher probe, the upsert (a plain UPDATE of a live list instead), the JSON array (the one
  item as a parameter).

The variants without a part are NOT correct appends (each part is there for a rule of DESIGN.md: TTL, the one
keyspace, idempotency, live updates); they show what each rule costs. Rounds alternate the variants; the table
shows the median. Everything runs in a schema ``bench_<pid>_cost`` dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psycopg

from kvstore.postgres import PostgresDatabase
from kvstore.postgres._sql import Queries

PG_URL = os.environ.get("KVSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MESSAGE = '{"role":"user","content":"What is the weather in Lisbon tomorrow? Please answer briefly. #%d"}'


def _cut(text: str, name: str) -> str:
    """``text`` without its CTE ``name AS (...)`` (balanced parentheses)."""
    head = f"WITH {name} AS "
    start = 5 if text.startswith(head) else text.index(f", {name} AS ") + 2
    depth, end = 0, text.index("(", start)
    while True:
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        end += 1
        if depth == 0:
            break
    if text.startswith(", ", end):
        end += 2
    elif text[start - 2 : start] == ", ":
        start -= 2
    return text[:start] + text[end:]


def _swap(text: str, old: str, new: str) -> str:
    if old not in text:
        raise SystemExit(f"Queries.push changed: {old[:60]!r}... not found; update benchmarks/pg_append_cost.py")
    return text.replace(old, new)


def variants(schema: str) -> dict[str, str]:
    """The statements measured, by label (parameters: ns, key, n, items, id, window, item)."""
    queries = Queries.build(schema, "kvstore_")
    push = queries.push_statement
    entries, items = f'"{schema}"."kvstore_entries"', f'"{schema}"."kvstore_list_items"'
    out = {
        "raw INSERT (floor)": f"INSERT INTO {schema}.floor (conv, seq, value) "
        f"VALUES (%(key)s, nextval('{schema}.floor_seq'), %(item)s::json)",
        "counter + item only": f"WITH up AS (UPDATE {entries} SET length = length + 1, modified_at = now() "
        "WHERE ns = %(ns)s AND key = %(key)s AND kind = 'l' RETURNING head + length AS seq) "
        f"INSERT INTO {items} (ns, key, seq, value) SELECT %(ns)s, %(key)s, seq, %(item)s::json FROM up",
        "kvstore append (Queries.push: the function)": queries.push,
        "the one statement (Queries.push_statement)": push,
    }
    text = _swap(_cut(_cut(_cut(push, "seen"), "forget"), "rec"), "WHERE NOT EXISTS (SELECT 1 FROM seen) AND", "WHERE")
    out["- idempotency ids"] = text = _swap(text, "(SELECT length FROM seen)", "NULL")
    text = _swap(_cut(text, "s"), "e.xmin = (SELECT x FROM s)", "false")
    out["- snapshot read s"] = text = _swap(text, "(SELECT kind::text FROM s), (SELECT live FROM s)", "NULL, NULL")
    out["- expired items delete"] = text = _swap(_cut(text, "gone"), " WHERE (SELECT count(*) FROM gone) >= 0", "")
    out["- watcher probe"] = text = _swap(_cut(text, "nt"), "(SELECT count(*) FROM nt)", "0")
    upsert = text[text.index("up AS (") : text.index("it AS (")]
    out["- upsert (UPDATE a live list)"] = text = _swap(
        text,
        upsert,
        f"up AS (UPDATE {entries} AS e SET modified_at = now(), length = e.length + %(n)s::bigint "
        "WHERE ns = %(ns)s AND key = %(key)s AND kind = 'l' AND (e.expires_at IS NULL OR e.expires_at > now()) "
        "AND (SELECT count(*) FROM el) = %(n)s::bigint RETURNING e.length, e.head), ",
    )
    elements = text[text.index("el AS MATERIALIZED (") : text.index("up AS (")]
    text = _swap(_swap(text, elements, ""), " AND (SELECT count(*) FROM el) = %(n)s::bigint", "")
    text = _swap(
        text,
        "up.head + up.length - %(n)s::bigint + el.ord, el.v FROM up, el",
        "up.head + up.length, %(item)s::json FROM up",
    )
    out["- JSON array (the item as a parameter)"] = _swap(text, "(SELECT count(*) FROM el)", "1")
    return out


def _cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0])


def measure(url: str, rounds: int, appends: int) -> list[tuple[str, float, float]]:
    """(label, server CPU us per statement, wall us per statement), medians of ``rounds``."""
    schema = f"bench_{os.getpid()}_cost"
    with PostgresDatabase(url, schema_name=schema) as db, psycopg.connect(url, autocommit=True) as conn:
        try:
            db.append("setup", 0)  # creates kvstore's tables
            conn.execute(f"CREATE TABLE {schema}.floor (conv text, seq bigint, value json, PRIMARY KEY (conv, seq))")
            conn.execute(f"CREATE SEQUENCE {schema}.floor_seq")
            statements = variants(schema)
            function = Queries.build(schema, "kvstore_").push
            keys = {label: f"k{n}" for n, label in enumerate(statements)}
            for label, key in keys.items():
                if not label.startswith("raw"):
                    db.append(key, 0)
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            cpu: dict[str, list[float]] = {label: [] for label in statements}
            wall: dict[str, list[float]] = {label: [] for label in statements}
            for r in range(rounds + 1):  # round 0 warms up (prepared statements, caches)
                for label, query in statements.items():
                    params = {"ns": "", "key": keys[label], "n": 1, "id": None, "window": 86400.0}
                    start, used = time.perf_counter(), _cpu_ns(pid)
                    for i in range(appends):
                        item = MESSAGE % i
                        # The function takes one item alone, the statements a JSON array (see push_function).
                        items = item if query == function else f"[{item}]"
                        conn.execute(query, {**params, "items": items, "item": item})
                    if r:
                        cpu[label].append((_cpu_ns(pid) - used) / appends / 1e3)
                        wall[label].append((time.perf_counter() - start) / appends * 1e6)
            counts = dict(
                conn.execute(f"SELECT key, count(*) FROM {schema}.kvstore_list_items GROUP BY key").fetchall()
            )
            counts.update(conn.execute(f"SELECT conv, count(*) FROM {schema}.floor GROUP BY conv").fetchall())
            short = [label for label, key in keys.items() if counts.get(key, 0) < (rounds + 1) * appends]
            if short:  # a variant that matched no row would measure a statement that does nothing
                raise SystemExit(f"these variants did not append every time: {short}")
            return [(label, statistics.median(cpu[label]), statistics.median(wall[label])) for label in statements]
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=PG_URL)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--appends", type=int, default=800)
    args = parser.parse_args()
    rows = measure(args.url, args.rounds, args.appends)
    floor = rows[0][1]
    print(
        f"{'statement (each - row also drops the - rows above it)':64} {'server CPU us':>13} {'÷ floor':>8} {'wall us':>8}"
    )
    for label, cpu, wall in rows:
        print(f"{label:64} {cpu:13.1f} {cpu / floor:8.2f} {wall:8.1f}")


if __name__ == "__main__":
    main()
