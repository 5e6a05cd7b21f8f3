"""(Archived; see bench/archive/README.md.) The analysis behind bench/README.md's findings.

Runs on its own fresh embedded server (the shipped durable settings, plus any
--server-setting), in scratch databases: it may replace functions and drop indexes there.
Nothing here is part of `make bench`; the shipped SQL is never edited.

The figures in bench/experiments_*.json were taken against the first fan-out (a single
INSERT ... SELECT with ON CONFLICT and RETURNING), which the variants call "as shipped".
"Candidate v3" (V3_FUNCTION below) is what sql/v1/fanout.sql became; run today, the "as
shipped" variant measures that one.

  fanout  variants of the fan-out statement at N users (steady state: prior events)
  writes  the insert trigger with and without its NOTIFY (8 writers)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench.env import BenchServer, add_users, bench_server, connect, with_dbname
from bench.fanout import FANOUT_INSERT, bare_event, insert_scenario, timed
from bench.writes import throughput

NO_ORDER = FANOUT_INSERT.replace("ORDER BY u.id, e.id\n", "")
NO_CONFLICT = FANOUT_INSERT.replace("ON CONFLICT (user_id, event_id) DO NOTHING\n", "")
NO_ORDER_NO_CONFLICT = NO_ORDER.replace("ON CONFLICT (user_id, event_id) DO NOTHING\n", "")
WITH_RETURNING = (
    "WITH w AS (" + FANOUT_INSERT + " RETURNING event_id) SELECT event_id, count(*) FROM w"
    " GROUP BY event_id"
)

# Candidate for a fan_out_events_v2: a first delivery cannot conflict (the event row is
# locked by its claimer, and only redeliver_event() puts a processed event back), so the
# speculative-insertion machinery of ON CONFLICT is needed only when fanout_count is set.
V2_FUNCTION = """
CREATE FUNCTION fan_out_events_bench_v2(batch_size integer DEFAULT 100)
RETURNS TABLE (event_id bigint, notifications bigint, lag_seconds double precision)
LANGUAGE sql AS $$
    WITH claimed AS MATERIALIZED (
        SELECT e.id, e.event_type, e.actor_id, e.occurred_at, e.fanout_count
        FROM scenario_events e
        WHERE e.processed_at IS NULL
        ORDER BY e.id
        LIMIT greatest(batch_size, 1)
        FOR UPDATE SKIP LOCKED
    ),
    written AS (
        INSERT INTO user_notifications (user_id, event_id)
        SELECT u.id, c.id
        FROM claimed c
        JOIN event_types t ON t.name = c.event_type
        CROSS JOIN users u
        LEFT JOIN subscriptions s ON s.user_id = u.id AND s.event_type = c.event_type
        WHERE coalesce(s.enabled, t.default_enabled)
          AND u.id IS DISTINCT FROM c.actor_id
          AND (c.fanout_count IS NULL OR NOT EXISTS (
                SELECT 1 FROM user_notifications n WHERE n.user_id = u.id AND n.event_id = c.id))
        ORDER BY u.id, c.id
        RETURNING event_id
    ),
    counted AS (
        SELECT event_id, count(*) AS n FROM written GROUP BY event_id
    ),
    marked AS (
        UPDATE scenario_events e
        SET processed_at = clock_timestamp(),
            fanout_count = coalesce(e.fanout_count, 0) + coalesce(k.n, 0)
        FROM claimed c LEFT JOIN counted k ON k.event_id = c.id
        WHERE e.id = c.id
        RETURNING e.id, coalesce(k.n, 0) AS n,
                  extract(epoch FROM e.processed_at - c.occurred_at)::double precision AS lag
    )
    SELECT m.id, m.n, m.lag FROM marked m ORDER BY m.id
$$;
"""

# Candidate v3: one INSERT per claimed event, counted with GET DIAGNOSTICS instead of
# RETURNING (which materialises every written row to count them), and ON CONFLICT only for
# a redelivered event (fanout_count already set).
V3_FUNCTION = """
CREATE FUNCTION fan_out_events_bench_v3(batch_size integer DEFAULT 100)
RETURNS TABLE (event_id bigint, notifications bigint, lag_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    n bigint;
BEGIN
    FOR c IN
        SELECT e.id, e.event_type, e.actor_id, e.occurred_at, e.fanout_count
        FROM scenario_events e
        WHERE e.processed_at IS NULL
        ORDER BY e.id
        LIMIT greatest(batch_size, 1)
        FOR UPDATE SKIP LOCKED
    LOOP
        IF c.fanout_count IS NULL THEN
            INSERT INTO user_notifications (user_id, event_id)
            SELECT u.id, c.id
            FROM users u
            JOIN event_types t ON t.name = c.event_type
            LEFT JOIN subscriptions s ON s.user_id = u.id AND s.event_type = c.event_type
            WHERE coalesce(s.enabled, t.default_enabled)
              AND u.id IS DISTINCT FROM c.actor_id
            ORDER BY u.id;
        ELSE
            INSERT INTO user_notifications (user_id, event_id)
            SELECT u.id, c.id
            FROM users u
            JOIN event_types t ON t.name = c.event_type
            LEFT JOIN subscriptions s ON s.user_id = u.id AND s.event_type = c.event_type
            WHERE coalesce(s.enabled, t.default_enabled)
              AND u.id IS DISTINCT FROM c.actor_id
            ORDER BY u.id
            ON CONFLICT ON CONSTRAINT user_notifications_pkey DO NOTHING;
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        UPDATE scenario_events e
        SET processed_at = clock_timestamp(), fanout_count = coalesce(e.fanout_count, 0) + n
        WHERE e.id = c.id
        RETURNING e.id, n, extract(epoch FROM e.processed_at - c.occurred_at)::double precision
        INTO event_id, notifications, lag_seconds;
        RETURN NEXT;
    END LOOP;
END;
$$;
"""

# The insert trigger minus its NOTIFY: what the NOTIFY costs the writers.
TRIGGER_NO_NOTIFY = """
CREATE OR REPLACE FUNCTION scenario_events_on_insert_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n
    ORDER BY n.id;
    RETURN NULL;
END;
$$;
"""

# NOTIFY only when no older event waits: under load most commits skip the global
# notify lock. (Needs a listener that drains until a fan-out call returns nothing.)
TRIGGER_NOTIFY_IF_IDLE = """
CREATE OR REPLACE FUNCTION scenario_events_on_insert_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_id bigint;
BEGIN
    WITH ins AS (
        INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
        SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
        FROM new_rows n
        ORDER BY n.id
        RETURNING id
    )
    SELECT min(id) INTO first_id FROM ins;
    IF first_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM scenario_events e WHERE e.processed_at IS NULL AND e.id < first_id
    ) THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;
"""


FUNCTION_CALL = "SELECT * FROM fan_out_events_v1(100)"
FLOOR = "INSERT INTO bench_floor (user_id, event_id) SELECT id, 1 FROM users"
FLOOR_TABLE = (
    "CREATE TABLE bench_floor (user_id bigint NOT NULL, event_id bigint NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now(), read_at timestamptz)"
)

# name -> (setup SQL run once on the clone, statement, does the statement take an event id?)
VARIANTS: dict[str, tuple[list[str], str, bool]] = {
    "floor: plain rows, no index": ([FLOOR_TABLE], FLOOR, False),
    "fan_out_events_v1 (as shipped)": ([], FUNCTION_CALL, False),
    "candidate v2 (ON CONFLICT only on redelivery)": (
        [V2_FUNCTION],
        FUNCTION_CALL.replace("fan_out_events_v1", "fan_out_events_bench_v2"),
        False,
    ),
    "candidate v3 (per-event INSERT, no RETURNING)": (
        [V3_FUNCTION],
        FUNCTION_CALL.replace("fan_out_events_v1", "fan_out_events_bench_v3"),
        False,
    ),
    "candidate v3 + pkey INCLUDE (read_at), no unread index": (
        [
            V3_FUNCTION,
            "DROP INDEX user_notifications_unread_idx",
            "ALTER TABLE user_notifications DROP CONSTRAINT user_notifications_pkey",
            "ALTER TABLE user_notifications ADD PRIMARY KEY (user_id, event_id) INCLUDE (read_at)",
        ],
        FUNCTION_CALL.replace("fan_out_events_v1", "fan_out_events_bench_v3"),
        False,
    ),
    "INSERT..SELECT as in v1": ([], FANOUT_INSERT, True),
    "  + RETURNING/count (as the function)": ([], WITH_RETURNING, True),
    "  - ORDER BY": ([], NO_ORDER, True),
    "  - ON CONFLICT": ([], NO_CONFLICT, True),
    "  without the unread index": (
        ["DROP INDEX user_notifications_unread_idx"],
        FANOUT_INSERT,
        True,
    ),
    "  pkey INCLUDE (read_at), no unread index, - ON CONFLICT": (
        [
            "DROP INDEX user_notifications_unread_idx",
            "ALTER TABLE user_notifications DROP CONSTRAINT user_notifications_pkey",
            "ALTER TABLE user_notifications ADD PRIMARY KEY (user_id, event_id) INCLUDE (read_at)",
        ],
        NO_CONFLICT,
        True,
    ),
    "  without the unread index, - ON CONFLICT": (
        ["DROP INDEX user_notifications_unread_idx"],
        NO_CONFLICT,
        True,
    ),
}


def _clone(server: BenchServer, base_url: str, label: str) -> str:
    name = f"{label}_{len(server.created)}"
    base = urlsplit(base_url).path.lstrip("/")
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{base}" STRATEGY FILE_COPY')
    server.created.append(name)
    return with_dbname(server.url, name)


def _run_variant(conn: psycopg.Connection[Any], statement: str, takes_event: bool) -> float:
    if takes_event:
        return timed(conn, statement, [bare_event(conn)])
    if "fan_out" in statement:
        insert_scenario(conn)
    else:
        conn.execute("TRUNCATE bench_floor")
    return timed(conn, statement)


def fanout(server: BenchServer, users: int, prior: int, repeats: int) -> dict[str, Any]:
    """Every variant starts from an identical clone of one steady-state database.

    'cold' runs right after a CHECKPOINT (every page touched pays a full-page image in the
    WAL), 'warm' runs again without one: a real server sits between the two."""
    base = server.fresh_database("exp_base")
    out: dict[str, Any] = {"users": users, "prior_events": prior}
    with connect(base) as conn:
        add_users(conn, users)
        for _ in range(prior):
            conn.execute(FANOUT_INSERT, [bare_event(conn)])
        conn.execute("VACUUM ANALYZE")
    floor = 0.0
    for name, (setup, statement, takes_event) in VARIANTS.items():
        url = _clone(server, base, "exp_clone")
        with connect(url) as conn:
            for sql in setup:
                conn.execute(sql)
            conn.execute("CHECKPOINT")
            cold = _run_variant(conn, statement, takes_event)
            warm = [_run_variant(conn, statement, takes_event) for _ in range(repeats)]
            stats = None
            if name == "INSERT..SELECT as in v1":
                plan = conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + statement, [bare_event(conn)]
                ).fetchone()
                assert plan is not None
                top = plan[0][0]["Plan"]
                stats = {
                    k: top.get(k)
                    for k in (
                        "WAL Bytes",
                        "WAL FPI",
                        "WAL Records",
                        "Shared Dirtied Blocks",
                        "Shared Written Blocks",
                    )
                }
        server.drop(url)
        warm_s = statistics.median(warm)
        if not floor:
            floor = warm_s
            out["floor_cold_s"], out["floor_warm_s"] = cold, warm_s
        out[name] = {"cold_s": cold, "warm_s": warm_s, "x_floor_warm": warm_s / floor}
        if stats:
            out[name]["explain"] = stats
        print(
            f"  {name:<48} cold {cold:7.3f} s  warm {warm_s:7.3f} s  {warm_s / floor:5.2f}x floor"
            + (f"  {stats}" if stats else ""),
            flush=True,
        )
    server.drop(base)
    return out


def writes(server: BenchServer, seconds: float, rounds: int) -> dict[str, Any]:
    url = server.fresh_database("exp_writes")
    out: dict[str, Any] = {}
    with connect(url) as conn:
        throughput(url, 8, 1.0)
        samples: dict[str, list[float]] = {
            "off": [],
            "on": [],
            "no_notify": [],
            "notify_if_idle": [],
        }

        original = conn.execute(
            "SELECT pg_get_functiondef('scenario_events_on_insert_v1'::regproc)"
        ).fetchone()
        assert original is not None
        for _ in range(rounds):
            conn.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
            samples["off"].append(throughput(url, 8, seconds))
            conn.execute("ALTER TABLE test_scenarios ENABLE TRIGGER USER")
            conn.execute(original[0])
            samples["on"].append(throughput(url, 8, seconds))
            conn.execute(TRIGGER_NO_NOTIFY)
            samples["no_notify"].append(throughput(url, 8, seconds))
            conn.execute(TRIGGER_NOTIFY_IF_IDLE)
            samples["notify_if_idle"].append(throughput(url, 8, seconds))
        off = statistics.median(samples["off"])
        for name, values in samples.items():
            med = statistics.median(values)
            out[name] = {"per_s": values, "median": med, "ratio": med / off}
            print(f"  {name:<16} {med:9.0f} inserts/s  ratio {med / off:.2f}", flush=True)
    server.drop(url)
    return out


def latency_variants(server: BenchServer, seconds: float, log: Path) -> dict[str, Any]:
    from bench import latency

    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "as shipped (NOTIFY per commit, default listener)": ([], {}),
        "no NOTIFY, listener POLL_INTERVAL=0.01": ([TRIGGER_NO_NOTIFY], {"POLL_INTERVAL": "0.01"}),
        "NOTIFY only when idle, default listener": ([TRIGGER_NOTIFY_IF_IDLE], {}),
        "as shipped, listener synchronous_commit=off": (
            [],
            {"PGOPTIONS": "-c synchronous_commit=off"},
        ),
    }
    out: dict[str, Any] = {}
    for name, (setup, env) in variants.items():
        r = latency.run(server, False, log, setup=setup, listener_env=env, seconds=seconds)
        out[name] = r
        print(
            f"  {name:<50} p50 {r['p50_ms']:5.1f}  p95 {r['p95_ms']:5.1f}  p99 {r['p99_ms']:6.1f}"
            f"  max {r['max_ms']:6.0f} ms  wall p99 {r['wall_p99_ms']:6.1f} ms",
            flush=True,
        )
    return out


def reads_index(server: BenchServer, quick: bool) -> dict[str, Any]:
    """Unread count and unread page with the shipped partial index vs a primary key that
    INCLUDEs read_at (and no partial index), on the reads data set; one client."""
    from bench import reads

    users, events, per_user = (5_000, 20_000, 97) if quick else (50_000, 200_000, 97)
    url = server.fresh_database("exp_reads")
    queries = {
        "unread count, heavy": (reads.UNREAD_SQL, [reads.HEAVY]),
        "unread count, user 2": (reads.UNREAD_SQL, [2]),
        "first page, heavy": (reads.PAGE_SQL, [reads.HEAVY, 2**62]),
        "unread first page, heavy": (
            reads.PAGE_SQL.replace("WHERE user_id", "WHERE read_at IS NULL AND user_id"),
            [reads.HEAVY, 2**62],
        ),
    }
    out: dict[str, Any] = {}
    with connect(url) as conn:
        reads.build(conn, users, events, per_user)
        for label in ("partial unread index (shipped)", "pkey INCLUDE (read_at), no partial"):
            if label.startswith("pkey"):
                conn.execute("DROP INDEX user_notifications_unread_idx")
                conn.execute(
                    "ALTER TABLE user_notifications DROP CONSTRAINT user_notifications_pkey"
                )
                conn.execute(
                    "ALTER TABLE user_notifications ADD PRIMARY KEY (user_id, event_id)"
                    " INCLUDE (read_at)"
                )
                conn.execute("VACUUM ANALYZE user_notifications")
            res: dict[str, float] = {}
            for qname, (sql, params) in queries.items():
                times = []
                for _ in range(30):
                    t0 = time.perf_counter()
                    conn.execute(sql, params).fetchall()
                    times.append((time.perf_counter() - t0) * 1000)
                res[qname] = statistics.median(times)
            out[label] = res
            print(f"  {label:<40} " + "  ".join(f"{k} {v:.2f} ms" for k, v in res.items()))
    server.drop(url)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__)
    parser.add_argument("--only", default="fanout,writes")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--prior", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--server-setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("experiments.json"))
    args = parser.parse_args(argv)
    extra = dict(s.split("=", 1) for s in args.server_setting)
    results: dict[str, Any] = {"extra_settings": extra}
    with bench_server(extra) as server:
        results["server"] = server.settings
        if "fanout" in args.only:
            print(f"fan-out variants, {args.users:,} users:", flush=True)
            results["fanout"] = fanout(server, args.users, args.prior, args.repeats)
        if "latency" in args.only:
            print("latency variants (100 ev/s x 20 subscribers):", flush=True)
            results["latency"] = latency_variants(
                server, args.seconds, server.workdir / "listener.log"
            )
        if "reads" in args.only:
            print("index variants for reads:", flush=True)
            results["reads"] = reads_index(server, args.users < 1_000_000)
        if "writes" in args.only:
            print("write variants (8 writers):", flush=True)
            results["writes"] = writes(server, args.seconds, 2)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
