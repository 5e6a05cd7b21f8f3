"""The fan-out INSERT against variants of user_notifications' shape
(`python -m bench --only fanout_shape`; an experiment for issue 14 item 3, never part of the
default run, and nothing here changes the product).

In one fresh database with N users (100k, then 1M; 10k and 50k quick), every shape is a table
of its own, created here beside the migrated user_notifications, and first given two prior
events per user by the same statement (steady state, as section a. has). Then 3 rounds: in each, every shape takes one event to all N users, right after a
CHECKPOINT (the cold, full-page-image case, as section b. measures the function and its
INSERT ... SELECT), and at once a second event (warm: the same pages again, no checkpoint
between). Right before each shape, the floor (N plain rows of the same shape into a table
with no index, right after a CHECKPOINT, as b.): each figure is a ratio to the floor next
to it, because the load of the shared machine changes within seconds. The order of the
shapes is reversed every other round. Reported: the median ratio over the rounds and its
spread (min-max).

The statement is the shipped one for a big event (fan_out_events_v2 in sql/v2/fanout.sql,
first delivery): INSERT (user_id, event_id, fanout_xid) SELECT from
event_recipients_v2(type, actor) ORDER BY user_id, with the redelivery guard (NOT
redelivered OR NOT EXISTS ...) and the fanout_xid CASE as parameters, redelivered false.

Shapes:
- a. shipped: as migrated (primary key (user_id, event_id), partial unread index
  (user_id, event_id) WHERE read_at IS NULL, partial fanout_xid index); checked against
  user_notifications itself;
- b. a without created_at (the narrower row: the feed shows the event's occurred_at);
- c. a with the unread index on (user_id) alone (btree deduplication: one posting list per
  user);
- b+c;
- d. a hash-partitioned by user_id into 8 and 32 partitions (the same indexes per partition);
- e. d with the event split in 2 statements on 2 connections at once, each its half of the
  partitions (satisfies_hash_partition(table, 2, half, user_id): a remainder modulo 2 of the
  same hash picks exactly the partitions whose remainder has that parity); wall time of both;
- a, 2 connections: the unpartitioned table with the event split by user id range, to tell
  what the two cores buy from what the partitions do;
- f. a with its indexes rebuilt after the prior events (REINDEX) with fillfactor 90 (the
  btree default) and 70;
- z. no index, the shipped SELECT: how much of the gap to the floor is the recipients'
  join and sort rather than index maintenance.

Reads (5.05M rows, reads.build's data set: the heavy user holds 200k notifications, 100k
unread): for the shapes worth it, the same rows copied into a table of each shape, then the
heavy user's badge, a random user's badge, the first feed page (all, and unread) and the
unread page below the heavy user's unread rows, each as EXPLAIN ANALYZE (execution and
planning time), median of several repetitions.

Beside wall time, the server processes' CPU time (from /proc): on the 2 shared cores wall
ratios swing 2x between rounds, CPU ratios much less. A part again: BENCH_SHAPES=b,c (keys;
a is always in), BENCH_SHAPE_SIZES=1000000, BENCH_SHAPE_READS=0. Full run ~16 min.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench import reads
from bench.env import BenchServer, add_users, connect, proc_stat

FULL = (
    "user_id bigint NOT NULL, event_id bigint NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now(), read_at timestamptz, fanout_xid xid8"
)
NARROW = "user_id bigint NOT NULL, event_id bigint NOT NULL, read_at timestamptz, fanout_xid xid8"
UNREAD_PAIR = "CREATE INDEX {t}_unread ON {t} (user_id, event_id){ff} WHERE read_at IS NULL"
UNREAD_USER = "CREATE INDEX {t}_unread ON {t} (user_id){ff} WHERE read_at IS NULL"
FANOUT_XID = "CREATE INDEX {t}_xid ON {t} (fanout_xid){ff} WHERE fanout_xid IS NOT NULL"

# The shipped big-event statement (fan_out_events_v2), a first delivery.
FANOUT = """
INSERT INTO {t} (user_id, event_id, fanout_xid)
SELECT r.user_id, %(event)s::bigint, CASE WHEN %(redelivered)s::boolean THEN pg_current_xact_id() END
FROM event_recipients_v2('scenario.created', NULL) r
WHERE (NOT %(redelivered)s::boolean
       OR NOT EXISTS (SELECT 1 FROM {t} had
                      WHERE had.user_id = r.user_id AND had.event_id = %(event)s::bigint))
  {extra}
ORDER BY r.user_id
"""
FLOOR = "INSERT INTO bench_shape_floor (user_id, event_id) SELECT u.id, 1 FROM users u"


@dataclass
class Shape:
    key: str
    label: str
    columns: str = FULL
    unread: str = UNREAD_PAIR
    indexes: bool = True
    partitions: int = 0
    split: str = ""  # "" one statement, "hash" 2 connections by partition, "range" by user id
    reindex_fillfactor: int = 0  # REINDEX after the prior events with this fillfactor
    reads: bool = False  # worth the reads at 5M rows

    @property
    def table(self) -> str:
        return "shape_" + self.key.replace(".", "").replace("+", "_")


SHAPES = [
    Shape("a", "a. shipped", reads=True),
    Shape("b", "b. no created_at", NARROW),
    Shape("c", "c. unread index (user_id)", unread=UNREAD_USER, reads=True),
    Shape("bc", "b+c. no created_at, unread (user_id)", NARROW, UNREAD_USER, reads=True),
    Shape("d8", "d. hash 8 partitions", partitions=8),
    Shape("d32", "d. hash 32 partitions", partitions=32, reads=True),
    Shape("e8", "e. hash 8, 2 connections", partitions=8, split="hash"),
    Shape("e32", "e. hash 32, 2 connections", partitions=32, split="hash"),
    Shape("a2", "a, 2 connections (user ranges)", split="range"),
    Shape("f90", "f. a, indexes rebuilt at fillfactor 90", reindex_fillfactor=90),
    Shape("f70", "f. a, indexes rebuilt at fillfactor 70", reindex_fillfactor=70),
    Shape("z", "z. no index, the shipped SELECT", indexes=False),
]


def create(conn: psycopg.Connection[Any], shape: Shape, fillfactor: int = 0) -> None:
    t = shape.table
    ff = f" WITH (fillfactor = {fillfactor})" if fillfactor else ""
    conn.execute(f"DROP TABLE IF EXISTS {t}")
    part = " PARTITION BY HASH (user_id)" if shape.partitions else ""
    conn.execute(f"CREATE TABLE {t} ({shape.columns}){part}")
    for i in range(shape.partitions):
        conn.execute(
            f"CREATE TABLE {t}_p{i} PARTITION OF {t}"
            f" FOR VALUES WITH (MODULUS {shape.partitions}, REMAINDER {i})"
        )
    if shape.indexes:
        conn.execute(f"ALTER TABLE {t} ADD CONSTRAINT {t}_pkey PRIMARY KEY (user_id, event_id)")
        conn.execute(shape.unread.format(t=t, ff=ff))
        conn.execute(FANOUT_XID.format(t=t, ff=ff))


def _index_shapes(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '')"
        " FROM pg_index WHERE indrelid = %s::regclass ORDER BY 1",
        [table],
    ).fetchall()
    return [str(r[0]) for r in rows]


def check_shipped(conn: psycopg.Connection[Any]) -> None:
    """Shape a must be user_notifications as migrated: same columns, same indexes."""

    def columns(table: str) -> list[tuple[str, str, bool, str | None]]:
        return [
            (str(r[0]), str(r[1]), bool(r[2]), r[3])
            for r in conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
                " pg_get_expr(d.adbin, d.adrelid)"
                " FROM pg_attribute a LEFT JOIN pg_attrdef d"
                "   ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
                " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
                " ORDER BY a.attnum",
                [table],
            )
        ]

    shipped = SHAPES[0].table
    if columns("user_notifications") != columns(shipped):
        raise AssertionError(f"{shipped} columns differ from user_notifications")
    if _index_shapes(conn, "user_notifications") != _index_shapes(conn, shipped):
        raise AssertionError(
            f"{shipped} indexes {_index_shapes(conn, shipped)} differ from user_notifications'"
            f" {_index_shapes(conn, 'user_notifications')}"
        )


def _statements(shape: Shape, event: int, users: int) -> list[tuple[str, dict[str, Any]]]:
    params = {"event": event, "redelivered": False}
    t = shape.table
    if shape.split == "hash":
        return [
            (
                FANOUT.format(
                    t=t, extra=f"AND satisfies_hash_partition('{t}'::regclass, 2, {h}, r.user_id)"
                ),
                params,
            )
            for h in (0, 1)
        ]
    if shape.split == "range":
        mid = users // 2
        return [
            (FANOUT.format(t=t, extra=f"AND r.user_id <= {mid}"), params),
            (FANOUT.format(t=t, extra=f"AND r.user_id > {mid}"), params),
        ]
    return [(FANOUT.format(t=t, extra=""), params)]


def backend_cpu(conns: list[psycopg.Connection[Any]]) -> float:
    """CPU seconds (user + system) the connections' server processes have used so far, from
    /proc (the bench's server runs on this machine); NaN when it cannot be read. Unlike wall
    time, this hardly moves with the neighbours' load on the shared cores."""
    total = 0.0
    for conn in conns:
        st = proc_stat(conn.info.backend_pid)
        if st is None:
            return float("nan")
        total += st.cpu
    return total


def fan_out(
    conns: list[psycopg.Connection[Any]], shape: Shape, event: int, users: int
) -> tuple[float, float]:
    """Seconds for one event's fan-out into the shape (commit included), and the server
    processes' CPU seconds; with a split, the wall time from both starting together to both
    committed, and the CPU of both."""
    statements = _statements(shape, event, users)
    cpu0 = backend_cpu(conns)
    if len(statements) == 1:
        started = time.perf_counter()
        conns[0].execute(*statements[0])
        return time.perf_counter() - started, backend_cpu(conns) - cpu0
    barrier = threading.Barrier(len(statements) + 1)
    errors: list[BaseException] = []

    def one(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> None:
        try:
            barrier.wait()
            conn.execute(sql, params)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(c, sql, p))
        for c, (sql, p) in zip(conns, statements, strict=False)
    ]
    for th in threads:
        th.start()
    barrier.wait()
    started = time.perf_counter()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds, backend_cpu(conns) - cpu0


def floor(conn: psycopg.Connection[Any]) -> tuple[float, float]:
    conn.execute("TRUNCATE bench_shape_floor")
    conn.execute("CHECKPOINT")
    cpu0 = backend_cpu([conn])
    started = time.perf_counter()
    conn.execute(FLOOR)
    return time.perf_counter() - started, backend_cpu([conn]) - cpu0


def sizes(conn: psycopg.Connection[Any], shape: Shape) -> dict[str, int]:
    """Bytes of the heap and of each index kind, summed over partitions."""
    rows = conn.execute(
        """
        WITH rels AS (
            SELECT c.oid FROM pg_class c WHERE c.oid = %(t)s::regclass
            UNION ALL SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = %(t)s::regclass
        )
        SELECT 'heap', sum(pg_relation_size(oid))::bigint FROM rels
        UNION ALL
        SELECT CASE WHEN x.indisprimary THEN 'pkey'
                    WHEN pg_get_indexdef(x.indexrelid) LIKE '%%read_at IS NULL%%' THEN 'unread'
                    ELSE 'fanout_xid' END,
               sum(pg_relation_size(x.indexrelid))::bigint
        FROM pg_index x JOIN rels ON x.indrelid = rels.oid GROUP BY 1
        """,
        {"t": shape.table},
    ).fetchall()
    return {str(k): int(v or 0) for k, v in rows}


def stage(
    server: BenchServer, url: str, users: int, rounds: int, shapes: list[Shape]
) -> dict[str, Any]:
    with connect(url) as conn, connect(url) as other:
        add_users(conn, users)
        row = conn.execute("SELECT min(id), max(id) FROM users").fetchone()
        assert row is not None and int(row[0]) == 1 and int(row[1]) == users
        conn.execute("DROP TABLE IF EXISTS bench_shape_floor")
        conn.execute(
            "CREATE TABLE bench_shape_floor (user_id bigint NOT NULL, event_id bigint NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(), read_at timestamptz)"
        )
        conns = [conn, other]
        # Steady state: two prior events (ids 1 and 2) per user in every shape, by the
        # same statement.
        t0 = time.perf_counter()
        for shape in shapes:
            create(conn, shape)
            for prior in (1, 2):
                conn.execute(
                    FANOUT.format(t=shape.table, extra=""), {"event": prior, "redelivered": False}
                )
            if shape.reindex_fillfactor:
                for index in _index_names(conn, shape.table):
                    conn.execute(
                        f"ALTER INDEX {index} SET (fillfactor = {shape.reindex_fillfactor})"
                    )
                conn.execute(f"REINDEX TABLE {shape.table}")
            conn.execute(f"VACUUM ANALYZE {shape.table}")
        event = 2
        check_shipped(conn)
        # Every split covers every user exactly once (the parity of the hash remainder).
        for shape in shapes:
            if shape.split == "hash":
                halves = [
                    conn.execute(
                        f"SELECT count(*) FROM users u WHERE satisfies_hash_partition("
                        f"'{shape.table}'::regclass, 2, {h}, u.id)"
                    ).fetchone()
                    for h in (0, 1)
                ]
                total = sum(int(h[0]) for h in halves if h is not None)
                if total != users:
                    raise AssertionError(f"hash halves cover {total} users, not {users}")
        conn.execute("VACUUM ANALYZE users")
        conn.execute("CHECKPOINT")
        _log(
            f"  {users:,} users: prior events in {len(shapes)} shapes: {time.perf_counter() - t0:.0f} s"
        )

        runs: dict[str, list[dict[str, float]]] = {s.key: [] for s in shapes}
        floors: list[float] = []
        for r in range(rounds):
            order = shapes if r % 2 == 0 else list(reversed(shapes))
            for shape in order:
                # The floor right before each shape: the load of the shared machine changes
                # within seconds, so a ratio is only as good as its floor is near.
                fl, fl_cpu = floor(conn)
                # CPU is counted in clock ticks (10 ms): a small floor may read 0.
                fl_cpu = fl_cpu or float("nan")
                floors.append(fl)
                event += 1
                conn.execute("CHECKPOINT")
                cold, cold_cpu = fan_out(conns, shape, event, users)
                event += 1
                warm, warm_cpu = fan_out(conns, shape, event, users)
                _log(
                    f"  round {r + 1}: {shape.label}: floor {fl:.3f} s, cold {cold:.3f} s"
                    f" ({cold / fl:.2f}x, CPU {cold_cpu / fl_cpu:.2f}x), warm {warm:.3f} s"
                    f" ({warm / fl:.2f}x, CPU {warm_cpu / fl_cpu:.2f}x)"
                )
                runs[shape.key].append(
                    {
                        "cold_s": cold,
                        "warm_s": warm,
                        "floor_s": fl,
                        "cold_ratio": cold / fl,
                        "warm_ratio": warm / fl,
                        "cold_cpu_s": cold_cpu,
                        "warm_cpu_s": warm_cpu,
                        "floor_cpu_s": fl_cpu,
                        "cold_cpu_ratio": cold_cpu / fl_cpu,
                        "warm_cpu_ratio": warm_cpu / fl_cpu,
                    }
                )
        rows = conn.execute(f"SELECT count(*) FROM {shapes[0].table}").fetchone()
        out: dict[str, Any] = {
            "users": users,
            "rounds": rounds,
            "floors_s": floors,
            "rows_per_shape_after": int(rows[0]) if rows else 0,
            "shapes": {},
        }
        for shape in shapes:
            rs = runs[shape.key]
            out["shapes"][shape.key] = {
                "label": shape.label,
                "runs": rs,
                **{
                    f"{k}_{stat}": fn([x[k] for x in rs])
                    for k in (
                        "cold_ratio",
                        "warm_ratio",
                        "cold_s",
                        "warm_s",
                        "cold_cpu_ratio",
                        "warm_cpu_ratio",
                    )
                    for stat, fn in (("median", statistics.median), ("min", min), ("max", max))
                },
                "bytes": sizes(conn, shape),
            }
        for shape in shapes:
            conn.execute(f"DROP TABLE {shape.table}")
        conn.execute("DROP TABLE bench_shape_floor")
        conn.execute("CHECKPOINT")
    return out


def _index_names(conn: psycopg.Connection[Any], table: str) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
            [table],
        )
    ]


# ------------------------------------------------------------------------------- reads

FEED = """
SELECT n.event_id AS id, e.event_type, e.scenario_id, e.scenario_name, e.actor_id,
       a.name AS actor_name,
       notification_message_v2(e.event_type, a.name, e.scenario_name, e.status) AS message,
       e.occurred_at AS created_at, n.read_at
FROM {t} n
CROSS JOIN LATERAL (SELECT * FROM scenario_events ev WHERE ev.id = n.event_id OFFSET 0) e
LEFT JOIN users a ON a.id = e.actor_id
WHERE n.user_id = {user} {unread} AND n.event_id < {before}
ORDER BY n.event_id DESC LIMIT 21
"""
BADGE = "SELECT count(*) FROM {t} WHERE user_id = {user} AND read_at IS NULL"
MAX = 9223372036854775807


def explain(conn: psycopg.Connection[Any], sql: str, repeats: int) -> dict[str, Any]:
    """Median execution and planning time (ms) of EXPLAIN ANALYZE, and the plan's top nodes."""
    execs: list[float] = []
    plans: list[float] = []
    shape = ""
    conn.execute(f"EXPLAIN (ANALYZE, TIMING OFF) {sql}")  # warm the pages once
    for _ in range(repeats):
        row = conn.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}").fetchone()
        assert row is not None
        doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
        execs.append(float(doc[0]["Execution Time"]))
        plans.append(float(doc[0]["Planning Time"]))
        shape = _plan_outline(doc[0]["Plan"])
    return {
        "exec_ms": statistics.median(execs),
        "exec_ms_max": max(execs),
        "plan_ms": statistics.median(plans),
        "plan": shape,
    }


def _plan_outline(node: dict[str, Any], depth: int = 0) -> str:
    """The plan's scan nodes, e.g. 'Index Only Scan Backward on shape_a_pkey'."""
    parts: list[str] = []
    if "Index Name" in node:
        parts.append(f"{node['Node Type']} on {node['Index Name']}")
    elif node["Node Type"] in ("Seq Scan", "Bitmap Heap Scan", "Sort"):
        parts.append(
            node["Node Type"] + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
        )
    for child in node.get("Plans", []):
        if depth < 4:
            inner = _plan_outline(child, depth + 1)
            if inner:
                parts.append(inner)
    return "; ".join(p for p in parts if "scenario_events" not in p and "users_pkey" not in p)


def read_costs(server: BenchServer, quick: bool, shapes: list[Shape]) -> dict[str, Any]:
    users, events, per_user = (5_000, 20_000, 97) if quick else (50_000, 200_000, 97)
    repeats = 3 if quick else 7
    url = server.fresh_database("shape_reads")
    try:
        with connect(url) as conn:
            t0 = time.perf_counter()
            total = reads.build(conn, users, events, per_user)
            random_user = users // 2 + 17
            result: dict[str, Any] = {"rows": total, "users": users, "heavy_rows": events}
            for shape in shapes:
                create(conn, shape)
                cols = "user_id, event_id, read_at, fanout_xid" + (
                    ", created_at" if "created_at" in shape.columns else ""
                )
                conn.execute(
                    f"INSERT INTO {shape.table} ({cols}) SELECT {cols} FROM user_notifications"
                    " ORDER BY user_id, event_id"
                )
                conn.execute(f"VACUUM ANALYZE {shape.table}")
            conn.execute("CHECKPOINT")
            _log(
                f"  reads: {total:,} rows in {len(shapes) + 1} tables: {time.perf_counter() - t0:.0f} s"
            )
            half = events // 2  # the heavy user's unread rows are the events above this
            for shape in shapes:
                t = shape.table
                q = {
                    "badge, heavy user": BADGE.format(t=t, user=reads.HEAVY),
                    "badge, random user": BADGE.format(t=t, user=random_user),
                    "first page, heavy": FEED.format(t=t, user=reads.HEAVY, unread="", before=MAX),
                    "first page, random user": FEED.format(
                        t=t, user=random_user, unread="", before=MAX
                    ),
                    "first unread page, heavy": FEED.format(
                        t=t, user=reads.HEAVY, unread="AND n.read_at IS NULL", before=MAX
                    ),
                    "unread page below the unread rows, heavy": FEED.format(
                        t=t, user=reads.HEAVY, unread="AND n.read_at IS NULL", before=half + 1
                    ),
                    "first unread page, random user": FEED.format(
                        t=t, user=random_user, unread="AND n.read_at IS NULL", before=MAX
                    ),
                }
                result[shape.key] = {
                    "label": shape.label,
                    "bytes": sizes(conn, shape),
                    "queries": {k: explain(conn, sql, repeats) for k, sql in q.items()},
                }
                _log(f"  reads: {shape.label}: done")
    finally:
        server.drop(url)
    return result


# ------------------------------------------------------------------------------- report


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mib(n: int) -> str:
    return f"{n / 1048576:,.0f}"


def report(results: dict[str, Any]) -> str:
    """Markdown for bench/HISTORY.md."""
    lines: list[str] = []
    for st in results["stages"]:
        n = st["users"]
        fl = st["floors_s"]
        lines += [
            "",
            f"{n:,} recipients, {st['rounds']} rounds; floor {min(fl):.3f}-{max(fl):.3f} s;"
            f" each shape held {st['rows_per_shape_after']:,} rows at the end",
            "",
            "| shape | cold / floor, median (min-max) | warm / floor, median (min-max)"
            " | server CPU / floor's, cold / warm (median) | cold s (median) | warm s (median)"
            " | heap / pkey / unread idx MiB |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in st["shapes"].values():
            b = s["bytes"]
            lines.append(
                f"| {s['label']} | {s['cold_ratio_median']:.2f}x"
                f" ({s['cold_ratio_min']:.2f}-{s['cold_ratio_max']:.2f})"
                f" | {s['warm_ratio_median']:.2f}x"
                f" ({s['warm_ratio_min']:.2f}-{s['warm_ratio_max']:.2f})"
                f" | {s['cold_cpu_ratio_median']:.2f}x / {s['warm_cpu_ratio_median']:.2f}x"
                f" | {s['cold_s_median']:.3f} | {s['warm_s_median']:.3f}"
                f" | {_mib(b.get('heap', 0))} / {_mib(b.get('pkey', 0))}"
                f" / {_mib(b.get('unread', 0))} |"
            )
    r = results.get("reads")
    if r:
        keys = [k for k in r if isinstance(r[k], dict)]
        names = list(r[keys[0]]["queries"])
        lines += [
            "",
            f"Reads in SQL, {r['rows']:,} rows (heavy user {r['heavy_rows']:,}, half unread):"
            " EXPLAIN ANALYZE execution ms, median (planning ms)",
            "",
            "| query | " + " | ".join(r[k]["label"] for k in keys) + " |",
            "| --- | " + " | ".join("---" for _ in keys) + " |",
        ]
        for name in names:
            cells = [
                f"{r[k]['queries'][name]['exec_ms']:.2f} ({r[k]['queries'][name]['plan_ms']:.2f})"
                for k in keys
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Plans (index scans of the notification table):", ""]
        for k in keys:
            for name in names:
                lines.append(f"- {r[k]['label']}, {name}: {r[k]['queries'][name]['plan']}")
    lines.append("")
    lines.append(f"Run time {results['seconds']:.0f} s.")
    return "\n".join(lines)


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table lines for `python -m bench` (the full figures are in `markdown`)."""
    out: list[tuple[str, str, str]] = []
    for st in results["stages"]:
        for s in st["shapes"].values():
            out.append(
                (
                    f"fanout_shape {st['users']:,}: {s['label']}, cold / warm vs floor",
                    f"{s['cold_ratio_median']:.2f}x ({s['cold_ratio_min']:.2f}-"
                    f"{s['cold_ratio_max']:.2f}) / {s['warm_ratio_median']:.2f}x"
                    f" ({s['warm_ratio_min']:.2f}-{s['warm_ratio_max']:.2f})",
                    "<= 4x",
                )
            )
    return out


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    started = time.perf_counter()
    sizes_ = [10_000, 50_000] if quick else [100_000, 1_000_000]
    shapes = SHAPES
    # A part of the experiment again: BENCH_SHAPES=a,b,bc (keys), BENCH_SHAPE_SIZES=1000000,
    # BENCH_SHAPE_READS=0.
    if os.environ.get("BENCH_SHAPES"):
        keys = os.environ["BENCH_SHAPES"].split(",")
        shapes = [s for s in SHAPES if s.key in keys or s.key == "a"]
    if os.environ.get("BENCH_SHAPE_SIZES"):
        sizes_ = [int(n) for n in os.environ["BENCH_SHAPE_SIZES"].split(",")]
    url = server.fresh_database("fanout_shape")
    stages: list[dict[str, Any]] = []
    try:
        for n in sizes_:
            t0 = time.perf_counter()
            rounds = 1 if quick else 3
            stages.append(stage(server, url, n, rounds, shapes))
            _log(f"  {n:,}: {time.perf_counter() - t0:.0f} s")
    finally:
        server.drop(url)
    results: dict[str, Any] = {"stages": stages}
    if os.environ.get("BENCH_SHAPE_READS", "1") != "0":
        results["reads"] = read_costs(server, quick, [s for s in shapes if s.reads])
    results["seconds"] = time.perf_counter() - started
    results["markdown"] = report(results)
    print(results["markdown"])
    return results
