"""The listener loop: NOTIFY round trip, polling, catch-up, several listeners, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psycopg

from tests.cli import run_cli, start_cli
from tests.conftest import wait_until


def count(db: psycopg.Connection[Any], sql: str = "SELECT count(*) FROM user_notifications") -> int:
    row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


# A poll interval far longer than any delivery by NOTIFY, even on a busy machine: whatever
# arrives within half of it was woken by the NOTIFY (or the drain), never by the poll.
LONG_POLL = 60.0


def test_psql_insert_reaches_subscribers_before_any_poll(
    db: psycopg.Connection[Any], make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    make_user("alice")
    make_user("bob")
    start_listener(poll_interval=LONG_POLL)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('Checkout')")
    wait_until(lambda: count(db) == 2, timeout=LONG_POLL / 2, interval=0.005)
    lag = db.execute(
        "SELECT extract(epoch FROM processed_at - occurred_at) FROM scenario_events"
    ).fetchone()
    assert lag is not None and lag[0] < LONG_POLL / 2


def test_poll_delivers_without_notify(
    db: psycopg.Connection[Any], make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    make_user("bob")
    start_listener(poll_interval=0.3)
    # Written with the triggers' NOTIFY bypassed: only the poll can find it.
    db.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
    db.execute("INSERT INTO test_scenarios (name) VALUES ('quiet')")
    db.execute("ALTER TABLE test_scenarios ENABLE TRIGGER USER")
    db.execute(
        "INSERT INTO scenario_events (event_type, scenario_id, scenario_name)"
        " SELECT 'scenario.created', id, name FROM test_scenarios"
    )
    wait_until(lambda: count(db) == 1, timeout=3)


def test_catch_up_after_restart(
    db: psycopg.Connection[Any], make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    make_user("bob")
    make_user("carol")
    first = start_listener()
    db.execute("INSERT INTO test_scenarios (name) VALUES ('one')")
    wait_until(lambda: count(db) == 2)
    first.stop()
    db.execute("INSERT INTO test_scenarios (name) SELECT 's' || i FROM generate_series(1, 300) i")
    time.sleep(0.3)
    assert count(db) == 2  # nobody listening
    start_listener(poll_interval=30)  # catch-up happens on start, not on a poll
    wait_until(lambda: count(db) == 602, timeout=2)
    assert count(db, "SELECT count(*) FROM scenario_events WHERE processed_at IS NULL") == 0


def test_two_listeners_on_one_backlog(
    db: psycopg.Connection[Any], start_listener: Callable[..., Any]
) -> None:
    db.execute("INSERT INTO users (name) SELECT 'u' || i FROM generate_series(1, 30) i")
    start_listener(batch_size=5)
    start_listener(batch_size=5)
    for _i in range(20):
        db.execute(
            "INSERT INTO test_scenarios (name) SELECT 's' || g FROM generate_series(1, 25) g"
        )
    wait_until(lambda: count(db) == 500 * 30, timeout=10)
    assert count(db, "SELECT sum(fanout_count) FROM scenario_events") == 500 * 30
    assert count(db, "SELECT count(*) FROM scenario_events WHERE processed_at IS NULL") == 0


def test_listener_process_exits_zero_on_sigterm(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    make_user("bob")
    db.execute("INSERT INTO test_scenarios (name) VALUES ('before start')")
    proc = start_cli(
        "listen",
        database_url=database_url,
        env={"POLL_INTERVAL": "0.5"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: count(db) == 1, timeout=10)
        db.execute("INSERT INTO test_scenarios (name) VALUES ('while running')")
        wait_until(lambda: count(db) == 2, timeout=3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "listener stopped" in stderr
    assert "Traceback" not in stderr


def test_listener_fails_fast_on_unreachable_database() -> None:
    proc = run_cli("listen", database_url="postgresql://nobody@127.0.0.1:1/nothing")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("notifications: error:")


def test_stop_after_run_has_ended_writes_nowhere(tmp_path: Any) -> None:
    import pytest

    from notifications.listener.worker import Listener

    listener = Listener("postgresql://nobody@127.0.0.1:1/nothing")
    with pytest.raises(psycopg.OperationalError):
        listener.run()
    # The wake pipe's descriptor numbers are free again; whatever reuses them is not ours.
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        listener.stop()
        with pytest.raises(BlockingIOError):
            os.read(read_end, 1)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_events_without_a_notify_are_found_before_any_poll(
    db: psycopg.Connection[Any], make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    """Writers skip the NOTIFY while an older event waits; the listener's drain finds them."""
    make_user("bob")
    start_listener(poll_interval=LONG_POLL)
    deadline = time.monotonic() + 2
    written = 0
    while time.monotonic() < deadline:
        db.execute("INSERT INTO test_scenarios (name) VALUES ('burst')")
        written += 1
    # Whatever the mix of notified and silent commits, nothing waits for the poll.
    wait_until(lambda: count(db) == written, timeout=LONG_POLL / 2)


def test_a_notify_whose_events_were_taken_already_still_starts_the_re_polls(
    db: psycopg.Connection[Any], make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    """The writer that notified may find its events fanned out by a re-poll before its
    NOTIFY arrives; the writers within 100 ms of it skipped theirs and commit later. The
    listener must re-poll after that NOTIFY too, not go back to sleep."""
    from prometheus_client import REGISTRY

    def notified() -> float:
        value = REGISTRY.get_sample_value(
            "notifications_listener_wakeups_total", {"reason": "notify"}
        )
        return value or 0.0

    make_user("bob")
    # Re-polls over 2 s: whatever the machine's pace, the write below falls within them.
    start_listener(poll_interval=LONG_POLL, linger_delays=(0.5, 0.5, 0.5, 0.5))
    before = notified()
    db.execute(
        "SELECT setval('scenario_events_woken_at_v2',"
        " 1000 * (extract(epoch FROM now()) + 3600)::bigint)"
    )  # every writer now skips its NOTIFY
    db.execute("SELECT pg_notify('scenario_events', '')")  # a NOTIFY with nothing to find
    wait_until(lambda: notified() > before)
    time.sleep(0.2)  # its catch-up has found nothing
    db.execute("INSERT INTO test_scenarios (name) VALUES ('skipped its NOTIFY')")
    wait_until(lambda: count(db) == 1, timeout=LONG_POLL / 2)


def test_backoff_stays_bounded_after_many_failures() -> None:
    from notifications.listener.worker import Listener

    listener = Listener("postgresql://nobody@127.0.0.1:1/nothing", max_backoff=0.01)
    listener._attempt = 5000  # hours of outage
    assert 0 < listener.backoff_delay() <= listener.max_backoff
    listener._back_off(psycopg.OperationalError("server gone"))
    assert listener._attempt == 5001
