"""The set-based fan-out of small events, before and after, side by side in one run.

`python -m bench.fanout_batch [--quick] [--rounds N]` (PYTHONPATH at the checkout). On one
embedded server (the shipped durable settings), alternating the two versions of
fan_out_events_v2 round by round (the machine is shared and noisy; medians are reported):

- before: the per-event loop (bench/fanout_batch_before.sql, installed over the current
  function with the same SECURITY DEFINER and search_path as roles.sql gives it);
- after: the function the migrations ship (sql/v2/fanout.sql).

Measurements, each through real `notifications listen` processes at their defaults:

1. drain: 50,000 events of 5 recipients each (6 users, the actor not notified) written
   with no listener running, then one listener: events/s from its first fan-out to the
   backlog empty (bench/pgbench.py's `_drain`);
2. lag under write saturation: pgbench's mix (8 clients) for a few seconds with two
   listeners draining on the same cores: the p50/p99 of processed_at - occurred_at
   (bench/pgbench.py's headline rounds);
3. one event for 1,000,000 users: commit -> rows visible, and processed_at - occurred_at
   (a big event must not get slower).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import pgbench as pgb
from bench.env import BenchServer, add_users, bench_server, connect, listener_process, percentile
from bench.fanout import insert_scenario, wait_processed
from notifications.sqlfiles import read_sql

HERE = Path(__file__).resolve().parent
VARIANTS = ("before", "after")


def _after_sql() -> str:
    text = read_sql("sql/v2/fanout.sql")
    start = text.index("CREATE FUNCTION fan_out_events_v2")
    end = text.index("$$;", text.index("LANGUAGE plpgsql AS $$", start) + 25) + 3
    return "CREATE OR REPLACE FUNCTION" + text[start + len("CREATE FUNCTION") : end]


def install(url: str, variant: str) -> None:
    sql = (HERE / "fanout_batch_before.sql").read_text() if variant == "before" else _after_sql()
    with connect(url) as conn:
        conn.execute(sql)
        conn.execute(
            "DO $$ BEGIN EXECUTE format('ALTER FUNCTION fan_out_events_v2(integer, bigint, bigint)"
            " SECURITY DEFINER SET search_path = %I, pg_temp', current_schema()); END $$"
        )


def drain(server: BenchServer, variant: str, events: int, log: Path) -> dict[str, float]:
    url = server.fresh_database("drain")
    try:
        install(url, variant)
        with connect(url) as conn:
            conn.execute(
                "INSERT INTO users (name) SELECT 'p' || g FROM generate_series(1, %s) g",
                [pgb.USERS],
            )
            conn.execute(
                "INSERT INTO test_scenarios (name, created_by)"
                " SELECT 'drain', 1 + g %% %s FROM generate_series(1, %s) g",
                [pgb.USERS, events],
            )
            conn.execute("VACUUM ANALYZE")
        started = time.perf_counter()
        with listener_process(url, log):
            pgb._wait_drained(url, timeout=600)
            wall = time.perf_counter() - started
        with connect(url) as conn:
            row = conn.execute(
                "SELECT count(*), extract(epoch FROM max(processed_at) - min(processed_at)),"
                " sum(fanout_count), (SELECT count(*) FROM user_notifications)"
                " FROM scenario_events"
            ).fetchone()
        assert row is not None
        count, span, counted, stored = int(row[0]), float(row[1] or 0), int(row[2]), int(row[3])
        assert count == events and counted == stored == events * (pgb.USERS - 1), row
        return {"events_per_s": count / span, "seconds": span, "wall_s": wall}
    finally:
        server.drop(url)


def saturation_lags(
    url: str, variant: str, pgbench: str, seconds: float, server: BenchServer, log: Path
) -> dict[str, float]:
    install(url, variant)
    with listener_process(url, log), listener_process(url, log):
        since = pgb._last_event(url)
        tps = pgb.pgbench_tps(pgbench, url, pgb.MIX, seconds, server.workdir)
        pgb._wait_drained(url)
    lags = pgb._lags_since(url, since)
    pgb._restore(url)
    return {
        "tps": tps,
        "events": len(lags),
        "p50_ms": percentile(lags, 50) * 1000,
        "p99_ms": percentile(lags, 99) * 1000,
    }


def big_event(url: str, variant: str, log: Path) -> dict[str, float]:
    install(url, variant)
    with listener_process(url, log), connect(url) as conn:
        event_id, committed = insert_scenario(conn)
        seen, lag, count = wait_processed(conn, event_id)
    return {"visible_s": seen - committed, "db_s": lag, "rows": count}


def _med(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def run(server: BenchServer, quick: bool, rounds: int, log: Path) -> dict[str, Any]:
    events = 10_000 if quick else 50_000
    users = 100_000 if quick else 1_000_000
    seconds = 3.0 if quick else 6.0
    out: dict[str, dict[str, list[dict[str, float]]]] = {
        m: {v: [] for v in VARIANTS} for m in ("drain", "saturation", "big")
    }

    def order(i: int) -> tuple[str, ...]:
        return VARIANTS if i % 2 == 0 else VARIANTS[::-1]

    for i in range(rounds):
        for v in order(i):
            out["drain"][v].append(drain(server, v, events, log))
            print(f"drain {v}: {out['drain'][v][-1]}", file=sys.stderr, flush=True)

    pgbench, _ = pgb.find_pgbench()
    url = server.fresh_database("saturation")
    pgb._prepare(url)
    pgb.pgbench_tps(pgbench, url, pgb.MIX, 2, server.workdir)  # warm-up
    pgb._restore(url)
    for i in range(rounds):
        for v in order(i):
            out["saturation"][v].append(saturation_lags(url, v, pgbench, seconds, server, log))
            print(f"saturation {v}: {out['saturation'][v][-1]}", file=sys.stderr, flush=True)
    server.drop(url)

    url = server.fresh_database("big")
    with connect(url) as conn:
        add_users(conn, users)
        conn.execute("VACUUM ANALYZE")
    big_event(url, "after", log)  # warm-up: the table already holds a big event's rows
    for i in range(rounds):
        for v in order(i):
            out["big"][v].append(big_event(url, v, log))
            print(f"big {v}: {out['big'][v][-1]}", file=sys.stderr, flush=True)
    server.drop(url)

    medians = {
        v: {
            "drain_events_per_s": _med(out["drain"][v], "events_per_s"),
            "drain_wall_s": _med(out["drain"][v], "wall_s"),
            "saturation_p50_ms": _med(out["saturation"][v], "p50_ms"),
            "saturation_p99_ms": _med(out["saturation"][v], "p99_ms"),
            "saturation_tps": _med(out["saturation"][v], "tps"),
            "big_visible_s": _med(out["big"][v], "visible_s"),
            "big_db_s": _med(out["big"][v], "db_s"),
        }
        for v in VARIANTS
    }
    return {
        "rounds": rounds,
        "drain_events": events,
        "big_users": users,
        "server": server.settings,
        "medians": medians,
        "raw": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    log = Path("/tmp") / f"fanout-batch-bench-{int(time.time())}.log"
    with bench_server() as server:
        result = run(server, args.quick, args.rounds, log)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
