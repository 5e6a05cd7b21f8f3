"""d. Latency under a steady load: events at a fixed rate, a few subscribers each.

Latency of an event = scenario_events.processed_at - occurred_at: both clock_timestamp(),
the first taken by the trigger just before the scenario's COMMIT, the second by the fan-out
just before its own COMMIT. A sample of events is also timed on the wall clock, from the
writer's COMMIT returning to a poller seeing the notification rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.env import BenchServer, add_users, connect, listener_process, percentile


def _writer(
    url: str, rate: float, seconds: float, commits: dict[int, float], out: dict[str, Any]
) -> None:
    """Insert scenarios at a fixed rate (one transaction each), publishing every 10th
    commit time to `commits` for the wall-clock poller as soon as it happens."""
    with connect(url) as conn:
        start = time.perf_counter()
        count = int(rate * seconds)
        first = last = 0
        for i in range(count):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            row = conn.execute(
                "INSERT INTO test_scenarios (name) VALUES ('latency') RETURNING id"
            ).fetchone()
            assert row is not None
            if i % 10 == 0:
                commits[int(row[0])] = time.perf_counter()
            first = first or int(row[0])
            last = int(row[0])
        out.update(
            first_scenario=first,
            last_scenario=last,
            events=count,
            seconds=time.perf_counter() - start,
        )


def _poller(url: str, commits: dict[int, float], stop: threading.Event, out: list[float]) -> None:
    """Wall-clock check on every 10th event: commit returned -> its rows visible."""
    with connect(url) as conn:
        pending: dict[int, float] = {}
        while not stop.is_set() or pending or commits:
            for sid in list(commits):
                pending[sid] = commits.pop(sid)
            if pending:
                rows = conn.execute(
                    "SELECT e.scenario_id FROM scenario_events e"
                    " WHERE e.scenario_id = ANY(%s) AND e.processed_at IS NOT NULL",
                    [list(pending)],
                ).fetchall()
                now = time.perf_counter()
                for (sid,) in rows:
                    out.append(now - pending.pop(sid))
            if stop.is_set() and not commits and not pending:
                break
            time.sleep(0.001)


def run(
    server: BenchServer,
    quick: bool,
    log: Path,
    *,
    setup: Sequence[str] = (),
    listener_env: dict[str, str] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """`setup` (SQL) and `listener_env` exist for bench.experiments to try variants."""
    url = server.fresh_database("latency")
    rate, subscribers = 100.0, 20
    if seconds is None:
        seconds = 5.0 if quick else 30.0
    with connect(url) as conn:
        add_users(conn, subscribers)
        for sql in setup:
            conn.execute(sql)
        with listener_process(url, log, **(listener_env or {})):
            _writer(url, rate, 1.0, {}, {})  # warm-up, not measured
            out: dict[str, Any] = {}
            commits: dict[int, float] = {}
            wall: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(target=_poller, args=(url, commits, stop, wall))
            poller.start()
            writer = threading.Thread(target=_writer, args=(url, rate, seconds, commits, out))
            writer.start()
            writer.join()
            stop.set()
            poller.join(60)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM scenario_events WHERE processed_at IS NULL"
                ).fetchone()
                if row and row[0] == 0:
                    break
                time.sleep(0.05)
        rows = conn.execute(
            "SELECT extract(epoch FROM processed_at - occurred_at)::float8 * 1000, fanout_count"
            " FROM scenario_events WHERE scenario_id BETWEEN %s AND %s",
            [out["first_scenario"], out["last_scenario"]],
        ).fetchall()
        batches = conn.execute(
            "SELECT count(DISTINCT processed_at) FROM scenario_events"
            " WHERE scenario_id BETWEEN %s AND %s",
            [out["first_scenario"], out["last_scenario"]],
        ).fetchone()
    lat = [float(r[0]) for r in rows]
    if any(int(r[1]) != subscribers for r in rows):
        raise AssertionError("an event did not reach every subscriber")
    wall_ms = [w * 1000 for w in wall]
    return {
        "rate_target": rate,
        "rate_achieved": out["events"] / out["seconds"],
        "subscribers": subscribers,
        "seconds": seconds,
        "events": len(lat),
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat),
        "wall_samples": len(wall_ms),
        "wall_p50_ms": percentile(wall_ms, 50),
        "wall_p99_ms": percentile(wall_ms, 99),
        "fanout_transactions": int(batches[0]) if batches else 0,
    }
