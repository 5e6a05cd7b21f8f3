"""Events for 200,000 users each, their fan-outs interrupted mid-statement three ways.

The fan-out is held mid-statement by a gate, not caught by timing: a row trigger on
`user_notifications`, fired only for one user in the middle of the bulk, waits on an
advisory lock the test holds. So every interruption lands while about half of the event's
rows are written and uncommitted, however fast or busy the machine is.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.faults.support import ListenerPool, ListenerProcess

pytestmark = pytest.mark.slow

USERS = 200_000
GATE = 7_424_242  # the advisory lock key the held fan-out waits on


def _states(conn: psycopg.Connection[Any]) -> dict[int, tuple[bool, int]]:
    """event id -> (processed?, its rows). One statement, so one snapshot sees both."""
    rows = conn.execute(
        "SELECT e.id, e.processed_at IS NOT NULL,"
        " (SELECT count(*) FROM user_notifications n WHERE n.event_id = e.id)"
        " FROM scenario_events e"
    ).fetchall()
    return {r[0]: (bool(r[1]), int(r[2])) for r in rows}


def _new_event(conn: psycopg.Connection[Any]) -> int:
    conn.execute("INSERT INTO test_scenarios (name) VALUES ('for everybody')")
    row = conn.execute("SELECT max(id) FROM scenario_events").fetchone()
    assert row is not None
    return int(row[0])


def _install_gate(conn: psycopg.Connection[Any]) -> None:
    """A row trigger for the middle bulk user that waits while the test holds GATE."""
    row = conn.execute(
        "SELECT id FROM users ORDER BY id OFFSET %s LIMIT 1", [USERS // 2]
    ).fetchone()
    assert row is not None
    conn.execute(
        "CREATE FUNCTION test_fanout_gate() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$BEGIN PERFORM pg_advisory_xact_lock_shared({GATE}); RETURN NEW; END$$"
    )
    conn.execute(
        "CREATE TRIGGER test_fanout_gate BEFORE INSERT ON user_notifications FOR EACH ROW"
        f" WHEN (NEW.user_id = {int(row[0])}) EXECUTE FUNCTION test_fanout_gate()"
    )


def _held_at_gate(conn: psycopg.Connection[Any], listener: ListenerProcess) -> Any:
    """(pid, query_start) of the listener's fan-out statement while it waits at the gate."""
    return conn.execute(
        "SELECT pid, query_start FROM pg_stat_activity WHERE application_name = %s"
        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        " AND query LIKE '%%fan_out_events%%'",
        [listener.name + " fanout"],
    ).fetchone()


def _gone(conn: psycopg.Connection[Any], held: Any) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [held[0]]).fetchone() is None
    )


def _moved_on(conn: psycopg.Connection[Any], held: Any) -> bool:
    """The held statement has ended: its session is gone or runs another statement."""
    row = conn.execute(
        "SELECT query_start, state FROM pg_stat_activity WHERE pid = %s", [held[0]]
    ).fetchone()
    return row is None or row[0] != held[1] or row[1] != "active"


def _processed(conn: psycopg.Connection[Any], event_id: int) -> bool:
    return _states(conn).get(event_id, (False, 0))[0]


@contextmanager
def _watching(database_url: str) -> Iterator[Counter[str]]:
    """Samples every event's state all along; anything but all-or-nothing is PARTIAL."""
    observed: Counter[str] = Counter()
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.is_set():
                for state in _states(conn).values():
                    if state == (False, 0):
                        observed["unprocessed, 0 rows"] += 1
                    elif state == (True, USERS):
                        observed[f"processed, {USERS} rows"] += 1
                    else:
                        observed[f"PARTIAL {state}"] += 1
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield observed
    finally:
        stop.set()
        watcher.join()


def test_interrupted_fan_out_of_a_huge_event_is_all_or_nothing(
    database_url: str,
    db: psycopg.Connection[Any],
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    db.execute(
        "INSERT INTO users (name) SELECT 'bulk-' || g FROM generate_series(1, %s) g", [USERS]
    )
    _install_gate(db)
    interruptions: list[str] = []

    with (
        psycopg.connect(database_url, autocommit=True) as gate,
        _watching(database_url) as observed,
    ):
        gate.execute("SELECT pg_advisory_lock(%s)", [GATE])
        listener = listeners.start(database_url)
        # First event: cancelled, then its backend terminated, each while held at the gate;
        # the live listener retries, and completes the event once the gate opens.
        first = _new_event(db)
        for how in ("pg_cancel_backend", "pg_terminate_backend"):
            held = wait_until(partial(_held_at_gate, db, listener), timeout=20, interval=0.01)
            assert db.execute(f"SELECT {how}(%s)", [held[0]]).fetchone() == (True,)
            ended = _gone if how == "pg_terminate_backend" else _moved_on
            wait_until(partial(ended, db, held), timeout=20)
            state = _states(db)[first]
            interruptions.append(f"event {first}, {how}: (processed, rows) = {state}")
            assert state == (False, 0), f"{how} did not abort the fan-out"
        wait_until(partial(_held_at_gate, db, listener), timeout=20, interval=0.01)
        gate.execute("SELECT pg_advisory_unlock(%s)", [GATE])
        wait_until(partial(_processed, db, first), timeout=30)
        retried = [
            r
            for r in listener.log_records()
            if r.get("event_ids") == [first] and r.get("notifications") == USERS
        ]
        assert retried, "the listener's retry did not complete the event"

        # Second event: the listener process is SIGKILLed while its fan-out is held, and
        # restarted. The orphaned backend does not know its client is gone: once the gate
        # opens it may run on to its commit, or the restarted listener does the work.
        gate.execute("SELECT pg_advisory_lock(%s)", [GATE])
        second = _new_event(db)
        held = wait_until(partial(_held_at_gate, db, listener), timeout=20, interval=0.01)
        listener.kill()
        gate.execute("SELECT pg_advisory_unlock(%s)", [GATE])
        wait_until(partial(_gone, db, held), timeout=30)
        killed = _states(db)[second]
        interruptions.append(f"event {second}, SIGKILL: (processed, rows) = {killed}")
        assert killed in ((False, 0), (True, USERS)), killed
        listener = listeners.start(database_url)
        wait_until(partial(_processed, db, second), timeout=30)
        time.sleep(0.1)

    final = db.execute(
        "SELECT e.id, e.fanout_count, count(n.user_id), count(DISTINCT n.user_id)"
        " FROM scenario_events e LEFT JOIN user_notifications n ON n.event_id = e.id"
        " GROUP BY e.id ORDER BY e.id"
    ).fetchall()
    fault_report.update(
        users=USERS,
        interruptions=interruptions,
        snapshots_observed=dict(observed),
        sigkilled_event_completed_by=(
            "the orphaned backend of the killed listener, which ran on to its commit"
            if killed == (True, USERS)
            else "the restarted listener"
        ),
        final_events=[
            {"event": e, "fanout_count": c, "rows": n, "distinct_users": d} for e, c, n, d in final
        ],
    )
    assert not [k for k in observed if k.startswith("PARTIAL")], observed
    assert observed["unprocessed, 0 rows"] > 0
    assert final == [(first, USERS, USERS, USERS), (second, USERS, USERS, USERS)]
