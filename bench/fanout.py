"""a. fan-out through the real listener, b. its limits, c. the seed (per-subscription) baseline.

One database, grown in stages to N users (10k, 100k, 1M and 3M in the full run: the growth
curve of bench/growth.png). At every stage the listener first fans out a few
prior events to the same users (steady state: the table already holds their notifications),
then one measured event per repeat. Every user is subscribed (the default), no actor, so an
event writes exactly N rows.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.env import BenchServer, add_users, connect, listener_process

# The recipients of fan_out_events_v2, as one statement for an event given by id; the
# subscription rule itself is read from its one definition (user_subscriptions).
FANOUT_INSERT = """
INSERT INTO user_notifications (user_id, event_id)
SELECT r.user_id, e.id
FROM scenario_events e
CROSS JOIN LATERAL event_recipients_v2(e.event_type, e.actor_id) r
WHERE e.id = %s
ORDER BY r.user_id
ON CONFLICT (user_id, event_id) DO NOTHING
"""

SEED_CHECK = "SELECT enabled FROM user_subscriptions WHERE event_type = %s AND user_id = %s"


def insert_scenario(conn: psycopg.Connection[Any]) -> tuple[int, float]:
    """Commit one scenario; returns its event id and the wall time right after COMMIT."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO test_scenarios (name) VALUES ('bench') RETURNING id"
        ).fetchone()
        assert row is not None
        ev = conn.execute("SELECT max(id) FROM scenario_events WHERE scenario_id = %s", [row[0]])
        event = ev.fetchone()
        assert event is not None
    return int(event[0]), time.perf_counter()


def wait_processed(
    conn: psycopg.Connection[Any], event_id: int, timeout: float = 600
) -> tuple[float, float, int]:
    """Poll until the fan-out of the event is visible (committed).

    Returns (perf_counter when seen, processed_at - occurred_at, fanout_count)."""
    deadline = time.perf_counter() + timeout
    while True:
        row = conn.execute(
            "SELECT extract(epoch FROM processed_at - occurred_at)::float8, fanout_count"
            " FROM scenario_events WHERE id = %s AND processed_at IS NOT NULL",
            [event_id],
        ).fetchone()
        if row is not None:
            return time.perf_counter(), float(row[0]), int(row[1])
        if time.perf_counter() > deadline:
            raise TimeoutError(f"event {event_id} not fanned out within {timeout}s")
        time.sleep(0.002)


def bare_event(conn: psycopg.Connection[Any]) -> int:
    """An event row the listener would not pick up (already processed)."""
    row = conn.execute(
        "INSERT INTO scenario_events (event_type, scenario_id, scenario_name, processed_at)"
        " VALUES ('scenario.created', 0, 'bench', clock_timestamp()) RETURNING id"
    ).fetchone()
    assert row is not None
    return int(row[0])


def timed(conn: psycopg.Connection[Any], sql: str, params: list[Any] | None = None) -> float:
    """Seconds for one autocommit statement, commit included."""
    started = time.perf_counter()
    conn.execute(sql, params)
    return time.perf_counter() - started


def seed_baseline(conn: psycopg.Connection[Any], subscribers: int) -> dict[str, Any]:
    """The replaced architecture: per subscriber a check and an insert, one transaction each."""
    event = bare_event(conn)
    users = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT %s", [subscribers])]
    started = time.perf_counter()
    written = 0
    for user_id in users:
        with conn.transaction():
            row = conn.execute(SEED_CHECK, ["scenario.created", user_id]).fetchone()
            if row is not None and row[0]:
                cur = conn.execute(
                    "INSERT INTO user_notifications (user_id, event_id) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [user_id, event],
                )
                written += cur.rowcount
    seconds = time.perf_counter() - started
    return {
        "subscribers": len(users),
        "rows": written,
        "seconds": seconds,
        "rows_per_s": written / seconds,
    }


def delivery_overhead(conn: psycopg.Connection[Any], repeats: int) -> dict[str, Any]:
    """One event to every user, fanned out by the function directly (listener stopped):
    without deliveries, then with e-mail on for every user (one deliveries row each, in the
    same transaction), alternated so that drift hits both alike. Target: <= 1.6x."""
    users = conn.execute("SELECT count(*) FROM users").fetchone()
    n = int(users[0]) if users else 0

    def one(expect_deliveries: bool) -> float:
        conn.execute("TRUNCATE deliveries")
        conn.execute("CHECKPOINT")
        insert_scenario(conn)
        seconds = timed(conn, "SELECT * FROM fan_out_events_v2(100)")
        row = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        written = int(row[0]) if row else 0
        if written != (n if expect_deliveries else 0):
            raise AssertionError(f"{written} deliveries written, expected {n}")
        return seconds

    without: list[float] = []
    with_email: list[float] = []
    for _ in range(repeats):
        conn.execute("DELETE FROM channel_preferences")
        without.append(one(False))
        conn.execute("UPDATE users SET email = name || '@example.com' WHERE email IS NULL")
        conn.execute(
            "INSERT INTO channel_preferences (user_id, event_type, channel, enabled)"
            " SELECT id, 'scenario.created', 'email', true FROM users"
        )
        conn.execute("VACUUM ANALYZE channel_preferences")
        with_email.append(one(True))
    conn.execute("DELETE FROM channel_preferences")
    conn.execute("TRUNCATE deliveries")
    plain = statistics.median(without)
    emailed = statistics.median(with_email)
    return {
        "recipients": n,
        "without_deliveries_s": plain,
        "with_email_for_all_s": emailed,
        "ratio": emailed / plain,
        "runs_without": without,
        "runs_with": with_email,
    }


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    # 3M in the full run makes the growth a curve of four points, past the 1M target.
    sizes = [10_000, 50_000] if quick else [10_000, 100_000, 1_000_000, 3_000_000]
    prior = 1 if quick else 2
    url = server.fresh_database("fanout")
    stages: list[dict[str, Any]] = []
    seed: dict[str, Any] = {}
    deliveries: dict[str, Any] = {}
    deliveries_at = 50_000 if quick else 100_000
    with connect(url) as conn, connect(url) as poll:
        conn.execute(
            "CREATE TABLE bench_floor (user_id bigint NOT NULL, event_id bigint NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(), read_at timestamptz)"
        )
        for n in sizes:
            add_users(conn, n)
            repeats = 1 if quick or n >= 1_000_000 else 3
            if n >= 1_000_000:
                repeats = 2
            runs: list[dict[str, float]] = []
            with listener_process(url, log):
                for _ in range(prior):
                    event, _committed = insert_scenario(conn)
                    wait_processed(poll, event)
                conn.execute("VACUUM ANALYZE user_notifications")
                conn.execute("VACUUM ANALYZE scenario_events")
                conn.execute("CHECKPOINT")
                for _ in range(repeats):
                    event, committed = insert_scenario(conn)
                    seen, db_seconds, count = wait_processed(poll, event)
                    if count != n:
                        raise AssertionError(f"event {event} reached {count} users, not {n}")
                    runs.append({"wall_s": seen - committed, "db_s": db_seconds})
            # b. Limits, with the listener stopped: the fan-out function called directly,
            # its INSERT ... SELECT alone, and plain rows into a table without indexes.
            conn.execute("CHECKPOINT")
            insert_scenario(conn)
            function_s = timed(conn, "SELECT * FROM fan_out_events_v2(100)")
            conn.execute("CHECKPOINT")
            insert_s = timed(conn, FANOUT_INSERT, [bare_event(conn)])
            conn.execute("TRUNCATE bench_floor")
            conn.execute("CHECKPOINT")
            floor_s = timed(
                conn, "INSERT INTO bench_floor (user_id, event_id) SELECT u.id, 1 FROM users u"
            )
            conn.execute("TRUNCATE bench_floor")
            wall = statistics.median(r["wall_s"] for r in runs)
            row = conn.execute("SELECT count(*) FROM user_notifications").fetchone()
            stages.append(
                {
                    "subscribers": n,
                    "table_rows_before": int(row[0]) if row else 0,
                    "runs": runs,
                    "wall_s": wall,
                    "db_s": statistics.median(r["db_s"] for r in runs),
                    "rows_per_s": n / wall,
                    "direct_function_s": function_s,
                    "direct_insert_select_s": insert_s,
                    "floor_s": floor_s,
                    "ratio_to_floor": wall / floor_s,
                    "insert_select_ratio_to_floor": insert_s / floor_s,
                }
            )
            if not seed:
                seed = seed_baseline(conn, 1_000 if quick else 5_000)
            if n == deliveries_at:
                deliveries = delivery_overhead(conn, 1 if quick else 3)
    # Tens of millions of rows at 3M: give the disk and the caches back to the next sections.
    server.drop(url)
    for stage in stages:
        stage["speedup_vs_seed"] = stage["rows_per_s"] / seed["rows_per_s"]
    return {"stages": stages, "seed": seed, "deliveries": deliveries}
