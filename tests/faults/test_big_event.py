"""Events for 200,000 users each, their fan-outs interrupted mid-statement three ways."""

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
from tests.faults.support import ListenerPool, ListenerProcess, backends

pytestmark = pytest.mark.slow

USERS = 200_000
# The INSERT of 200k rows takes about 0.8 s here; this lands well inside it.
INTO_THE_STATEMENT = 0.25


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


def _running_fanout(conn: psycopg.Connection[Any], listener: ListenerProcess) -> Any:
    session = backends(conn, listener).get("fanout")
    if session and session[1] == "active" and "fan_out_events_v2" in session[2]:
        return session
    return None


def _gone(conn: psycopg.Connection[Any], pid: int) -> bool:
    return conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() is None


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
    interruptions: list[str] = []

    def interrupted(event_id: int, how: str) -> tuple[bool, int]:
        """Wait until the fan-out runs, interrupt it, wait until its backend is gone."""
        session = wait_until(partial(_running_fanout, db, listener), timeout=10, interval=0.005)
        time.sleep(INTO_THE_STATEMENT)
        if how == "SIGKILL":
            listener.kill()
        else:
            assert db.execute(f"SELECT {how}(%s)", [session[0]]).fetchone() == (True,)
        wait_until(partial(_gone, db, session[0]), timeout=10)
        state = _states(db)[event_id]
        interruptions.append(f"event {event_id}, {how}: (processed, rows) = {state}")
        return state

    with _watching(database_url) as observed:
        listener = listeners.start(database_url)
        # First event: cancelled, then its backend terminated; the live listener retries.
        first = _new_event(db)
        for how in ("pg_cancel_backend", "pg_terminate_backend"):
            assert interrupted(first, how) == (False, 0), f"{how} did not abort the fan-out"
        wait_until(partial(_processed, db, first), timeout=20)
        retried = [
            r
            for r in listener.log_records()
            if r.get("event_ids") == [first] and r.get("notifications") == USERS
        ]
        assert retried, "the listener's retry did not complete the event"

        # Second event: the listener process is SIGKILLed mid-statement and restarted. The
        # orphaned backend does not know its client is gone and may run on to its commit.
        second = _new_event(db)
        killed = interrupted(second, "SIGKILL")
        assert killed in ((False, 0), (True, USERS)), killed
        listener = listeners.start(database_url)
        wait_until(partial(_processed, db, second), timeout=20)
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
