"""Delivery must not stop: a poisoned event, an open user deletion, a fan-out that waits,
slow writers, SERIALIZABLE writers, and the queue's retention (issue 11, items 1-5, 7)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from notifications.sdnotify import SdNotifier
from tests.cli import run_cli
from tests.conftest import wait_until

Conn = psycopg.Connection[Any]


def one(db: Conn, sql: str, params: Any = None) -> Any:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def new_event(db: Conn, name: str, actor: int | None = None) -> int:
    db.execute("INSERT INTO test_scenarios (name, created_by) VALUES (%s, %s)", [name, actor])
    return int(one(db, "SELECT max(id) FROM scenario_events"))


def has_notification(db: Conn, user_id: int, event_id: int) -> bool:
    return bool(
        one(
            db,
            "SELECT count(*) FROM user_notifications WHERE user_id = %s AND event_id = %s",
            [user_id, event_id],
        )
    )


# -- 1. a poisoned event ----------------------------------------------------------------------


def poison(db: Conn, event_id: int) -> None:
    """Every fan-out of this one event fails, as a broken row or trigger would make it."""
    db.execute(
        "CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'poisoned row for event %', NEW.event_id; END$$"
    )
    db.execute(
        "CREATE TRIGGER test_poison BEFORE INSERT ON user_notifications FOR EACH ROW"
        f" WHEN (NEW.event_id = {int(event_id)}) EXECUTE FUNCTION test_poison()"
    )


def test_poisoned_event_is_set_aside_and_the_rest_is_delivered(
    database_url: str, db: Conn, make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    alice = make_user("alice")
    bob = make_user("bob")
    bad = new_event(db, "poisoned", alice)
    poison(db, bad)
    good = new_event(db, "behind it", alice)
    # The poisoned event is there at the start: the first catch-up must not end the listener.
    start_listener(poll_interval=0.2)
    wait_until(lambda: has_notification(db, bob, good), timeout=30)

    failing = wait_until(
        lambda: one(db, "SELECT failing_events FROM notification_backlog"), timeout=10
    )
    assert [f["event_id"] for f in failing] == [bad]
    assert failing[0]["attempts"] == 3  # FANOUT_MAX_ATTEMPTS' default
    assert "poisoned row for event" in failing[0]["error"]
    assert failing[0]["set_aside_at"] is not None
    assert one(db, "SELECT set_aside_events FROM notification_backlog") == 1
    assert not has_notification(db, bob, bad)

    # Also shown by the CLI, and once the cause is gone, a redeliver delivers it.
    backlog = json.loads(run_cli("backlog", database_url=database_url).stdout)
    assert backlog["set_aside_events"] == 1
    assert backlog["failing_events"][0]["event_id"] == bad
    db.execute("DROP TRIGGER test_poison ON user_notifications")
    result = run_cli("event", "redeliver", str(bad), database_url=database_url)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: has_notification(db, bob, bad), timeout=10)
    assert one(db, "SELECT failing_events FROM notification_backlog") == []
    assert one(db, "SELECT fanout_attempts FROM scenario_events WHERE id = %s", [bad]) == 0


def test_a_failure_in_a_batch_delivers_every_other_event_of_it(
    db: Conn, make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    alice = make_user("alice")
    bob = make_user("bob")
    events = [new_event(db, f"e{i}", alice) for i in range(20)]
    poison(db, events[13])
    start_listener(poll_interval=0.2, batch_size=8, max_attempts=2)
    others = [e for e in events if e != events[13]]
    wait_until(lambda: all(has_notification(db, bob, e) for e in others), timeout=30)
    wait_until(
        lambda: one(db, "SELECT set_aside_events FROM notification_backlog") == 1, timeout=10
    )
    # Each event once: no batch was half-applied.
    assert one(db, "SELECT count(*) FROM user_notifications WHERE user_id = %s", [bob]) == 19


# -- 2. a user's deletion left open ------------------------------------------------------------


def test_open_user_deletion_holds_up_nobody_and_leaves_no_rows(
    database_url: str, db: Conn, make_user: Callable[..., int], start_listener: Callable[..., Any]
) -> None:
    alice = make_user("alice")
    bob = make_user("bob")
    carol = make_user("carol")
    start_listener(poll_interval=0.2)
    with psycopg.connect(database_url) as deleter:
        # As the docs suggest: BEGIN; SELECT delete_user(..); and then a coffee.
        deleter.execute("SELECT delete_user(%s)", [carol])
        events = [new_event(db, f"meanwhile {i}", alice) for i in range(3)]
        wait_until(lambda: all(has_notification(db, bob, e) for e in events), timeout=10)
        deleter.commit()
    # The fan-outs still saw carol (her deletion was not committed): her rows go afterwards.
    wait_until(
        lambda: one(db, "SELECT count(*) FROM user_notifications WHERE user_id = %s", [carol]) == 0,
        timeout=10,
    )
    wait_until(lambda: one(db, "SELECT count(*) FROM user_deletions") == 0, timeout=10)


def test_rows_written_for_a_user_deleted_meanwhile_are_removed(
    database_url: str, db: Conn, make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    make_user("carol")
    db.execute("INSERT INTO test_scenarios (name) VALUES ('one')")
    with psycopg.connect(database_url) as fanout:
        fanout.execute("SELECT * FROM fan_out_events_v2(100)")  # bob's row, uncommitted
        db.execute("SELECT delete_user(%s)", [bob])  # does not wait for it
        # The fan-out is still open: its rows cannot be removed yet, nor forgotten.
        db.execute("SELECT finish_user_deletions_v2()")
        assert one(db, "SELECT count(*) FROM user_deletions") == 1
        fanout.commit()
    assert one(db, "SELECT count(*) FROM user_notifications WHERE user_id = %s", [bob]) == 1
    # A deliverer's try recorded for bob meanwhile goes too.
    db.execute(
        "INSERT INTO delivery_attempts (user_id, delivery_id, started_at, duration_ms)"
        " VALUES (%s, 1, now(), 1)",
        [bob],
    )
    db.execute("SELECT finish_user_deletions_v2()")
    assert one(db, "SELECT count(*) FROM user_notifications WHERE user_id = %s", [bob]) == 0
    assert one(db, "SELECT count(*) FROM delivery_attempts WHERE user_id = %s", [bob]) == 0
    assert one(db, "SELECT count(*) FROM user_deletions") == 0


# -- 2, 3. a listener that waits keeps the watchdog fed ------------------------------------------


class Datagrams:
    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="sdn-")
        self.path = os.path.join(self.directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def drain(self) -> list[str]:
        self.sock.settimeout(0)
        out: list[str] = []
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return out

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.directory)


@pytest.fixture
def datagrams() -> Iterator[Datagrams]:
    receiver = Datagrams()
    yield receiver
    receiver.close()


def test_watchdog_pinged_while_the_fan_out_waits(
    database_url: str,
    db: Conn,
    make_user: Callable[..., int],
    start_listener: Callable[..., Any],
    datagrams: Datagrams,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_user("bob")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = SdNotifier(datagrams.path)
    listener = start_listener(poll_interval=60, notifier=notifier)
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE user_notifications IN SHARE MODE")
        new_event(db, "held")

        def waiting() -> bool:
            return bool(
                db.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
                    " AND wait_event_type = 'Lock' AND query LIKE '%%fan_out_events%%'",
                    [listener.name + " fanout"],
                ).fetchone()
            )

        wait_until(waiting, timeout=10)
        datagrams.drain()
        pings = 0
        while pings < 3:
            # Only the fan-out runs (POLL_INTERVAL is 60 s): pings come from its feeder.
            time.sleep(0.1)
            pings += datagrams.drain().count("WATCHDOG=1")
            assert waiting() or pings >= 3, "the fan-out stopped waiting before 3 pings"
        blocker.rollback()
    wait_until(lambda: one(db, "SELECT count(*) FROM user_notifications") == 1, timeout=10)
    listener.stop()
    notifier.close()


# -- 4. the lost wake-up window -------------------------------------------------------------


def _notified(listen: Conn, expected: int) -> int:
    """The NOTIFYs that arrive: the expected ones however late (a busy machine), then any
    more within a short look."""
    got = list(listen.notifies(timeout=10, stop_after=expected)) if expected else []
    return len(got) + len(list(listen.notifies(timeout=0.3)))


def test_a_writer_holding_its_transaction_open_silences_nobody(database_url: str, db: Conn) -> None:
    """The wake-up is decided at commit: writers keep notifying (one per window) while
    another writer's transaction, which wrote events first, stays open."""
    db.execute("SELECT setval('scenario_events_woken_at_v2', 0)")
    with (
        psycopg.connect(database_url, autocommit=True) as listen,
        psycopg.connect(database_url) as slow,
    ):
        listen.execute("LISTEN scenario_events")
        slow.execute("INSERT INTO test_scenarios (name) VALUES ('slow writer''s')")
        for n in range(3):
            new_event(db, f"next {n}")
            assert _notified(listen, 1) == 1
            db.execute("SELECT setval('scenario_events_woken_at_v2', 0)")  # the window passes
        slow.rollback()


# -- 7. SERIALIZABLE writers -------------------------------------------------------------------


def test_serializable_writers_do_not_abort_each_other(database_url: str, db: Conn) -> None:
    writers = [psycopg.connect(database_url) for _ in range(4)]
    failures = 0
    commits = 0
    try:
        for round_no in range(40):
            # Every writer inserts before any commits: each one's trigger runs while the
            # others' transactions are open, the case that made them conflict.
            for w in writers:
                w.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                w.execute("INSERT INTO test_scenarios (name) VALUES (%s)", [f"r{round_no}"])
            for w in writers:
                try:
                    w.commit()
                    commits += 1
                except psycopg.errors.SerializationFailure:
                    failures += 1
                    w.rollback()
    finally:
        for w in writers:
            w.close()
    assert (failures, commits) == (0, 160)
    assert one(db, "SELECT count(*) FROM scenario_events") == 160


# -- 5. queue hygiene and retention ------------------------------------------------------------


def test_backlog_index_is_always_vacuumed(db: Conn) -> None:
    options = one(db, "SELECT reloptions FROM pg_class WHERE relname = 'scenario_events'")
    assert "vacuum_index_cleanup=on" in options


def test_notifications_are_vacuumed_after_two_percent_change(db: Conn) -> None:
    """The badge's index-only count needs the visibility map set; the defaults would wait
    for a fifth of the table."""
    options = one(db, "SELECT reloptions FROM pg_class WHERE relname = 'user_notifications'")
    assert "autovacuum_vacuum_insert_scale_factor=0.02" in options
    assert "autovacuum_vacuum_scale_factor=0.02" in options


def test_retention_functions(
    database_url: str, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    bob = make_user("bob")
    kept = new_event(db, "read by bob")
    db.execute("SELECT set_subscription(%s, 'scenario.deleted', false)", [bob])
    db.execute("UPDATE test_scenarios SET deleted_at = now()")  # an event nobody gets
    fan_out()
    lonely = int(one(db, "SELECT max(id) FROM scenario_events"))
    waiting = new_event(db, "not fanned out yet")
    db.execute("UPDATE scenario_events SET occurred_at = now() - interval '100 days'")
    db.execute(
        "UPDATE test_scenarios SET deleted_at = now() - interval '100 days'"
        " WHERE deleted_at IS NOT NULL"
    )

    assert one(db, "SELECT purge_processed_events('90 days')") == 1
    remaining = {r[0] for r in db.execute("SELECT id FROM scenario_events").fetchall()}
    assert remaining == {kept, waiting}
    assert lonely not in remaining
    # A soft-deleted scenario past the age goes, and writes no event on its way out.
    assert one(db, "SELECT purge_deleted_scenarios('90 days')") == 1
    assert one(db, "SELECT count(*) FROM scenario_events") == 2

    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        db.execute("SELECT purge_unread_notifications()")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("SELECT purge_processed_events('-1 day')")


def test_purge_unread_by_age_and_count(
    database_url: str, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    bob = make_user("bob")
    carol = make_user("carol")
    for i in range(5):
        new_event(db, f"s{i}")
    fan_out()
    db.execute(
        "UPDATE user_notifications SET created_at = now() - interval '200 days'"
        " WHERE event_id = (SELECT min(id) FROM scenario_events)"
    )
    db.execute(
        "UPDATE user_notifications SET read_at = now() WHERE user_id = %s"
        " AND event_id = (SELECT max(id) FROM scenario_events)",
        [carol],
    )
    result = run_cli(
        "purge", "--unread-older-than", "180d", "--unread-beyond", "2", database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    # Too old: both users' first. Beyond 2 unread: bob's 2nd and 3rd, carol's 2nd (her 5th
    # is read, and read ones are not counted).
    assert json.loads(result.stdout) == {"unread_purged": 5}
    left = db.execute(
        "SELECT user_id, count(*) FILTER (WHERE read_at IS NULL), count(*)"
        " FROM user_notifications GROUP BY user_id ORDER BY user_id"
    ).fetchall()
    assert left == [(bob, 2, 2), (carol, 2, 3)]

    result = run_cli(
        "purge",
        "--events-older-than",
        "1d",
        "--scenarios-older-than",
        "1d",
        database_url=database_url,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"scenarios_purged": 0, "events_purged": 0}
    result = run_cli("purge", database_url=database_url)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "nothing to purge" in result.stderr


def test_a_statement_timeout_of_the_database_does_not_apply_to_the_listener(
    database_url: str, db: Conn, start_listener: Callable[..., Any]
) -> None:
    # An operator's ALTER ... SET statement_timeout, shorter than one large fan-out.
    db.execute("INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, 100000) g")
    name = one(db, "SELECT current_database()")
    db.execute(f"ALTER DATABASE \"{name}\" SET statement_timeout = '50ms'")
    with psycopg.connect(database_url, autocommit=True) as fresh:
        assert one(fresh, "SHOW statement_timeout") == "50ms"
    event = new_event(db, "for everybody")
    start_listener(poll_interval=0.2)
    wait_until(
        lambda: one(
            db, "SELECT processed_at IS NOT NULL FROM scenario_events WHERE id = %s", [event]
        ),
        timeout=60,
    )
    assert one(db, "SELECT fanout_count FROM scenario_events WHERE id = %s", [event]) == 100000
