"""fan_out_events_v2: who gets a notification, exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg


def notified(db: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    """(user name, event type) for every notification."""
    rows = db.execute(
        "SELECT u.name, e.event_type FROM user_notifications n"
        " JOIN users u ON u.id = n.user_id JOIN scenario_events e ON e.id = n.event_id"
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def act(db: psycopg.Connection[Any], actor: int | None, sql: str, *params: Any) -> None:
    with db.transaction():
        if actor is not None:
            db.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(actor)])
        db.execute(sql, list(params))


def test_defaults_opt_outs_and_actor_exclusion(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    alice = make_user("alice")
    make_user("bob")
    make_user("carol", executed=False)
    make_user("dave", created=False, executed=True, deleted=False)
    act(db, alice, "INSERT INTO test_scenarios (name, created_by) VALUES ('S', %s)", alice)
    act(db, alice, "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'")
    act(db, alice, "UPDATE test_scenarios SET deleted_at = now()")
    assert fan_out() == 3
    assert notified(db) == {
        ("bob", "scenario.created"),
        ("bob", "scenario.executed"),
        ("bob", "scenario.deleted"),
        ("carol", "scenario.created"),
        ("carol", "scenario.deleted"),
        ("dave", "scenario.executed"),
    }


def test_default_disabled_type_needs_an_opt_in(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    db.execute("UPDATE event_types SET default_enabled = false WHERE name = 'scenario.created'")
    make_user("bob")
    make_user("carol", created=True)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")
    fan_out()
    assert notified(db) == {("carol", "scenario.created")}


def test_events_are_processed_once_and_counted(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    for name in ("a", "b", "c"):
        make_user(name)
    db.execute("INSERT INTO test_scenarios (name) SELECT 's' || i FROM generate_series(1, 250) i")
    assert fan_out() == 250
    assert fan_out() == 0
    row = db.execute(
        "SELECT count(*), sum(fanout_count), count(*) FILTER (WHERE processed_at IS NULL)"
        " FROM scenario_events"
    ).fetchone()
    assert row == (250, 750, 0)
    assert db.execute("SELECT count(*) FROM user_notifications").fetchone() == (750,)


def test_redelivery_is_idempotent(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    make_user("bob")
    carol = make_user("carol", created=False)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")
    fan_out()
    db.execute("UPDATE user_notifications SET read_at = now()")
    # Carol changes her mind; redelivering the event reaches her and doubles nobody.
    db.execute("SELECT set_subscription(%s, 'scenario.created', true)", [carol])
    event_id = db.execute("SELECT id FROM scenario_events").fetchone()
    assert event_id is not None
    db.execute("SELECT redeliver_event(%s)", [event_id[0]])
    rows = db.execute("SELECT * FROM fan_out_events_v2(10)").fetchall()
    assert [r[:2] for r in rows] == [(event_id[0], 1)]
    assert notified(db) == {("bob", "scenario.created"), ("carol", "scenario.created")}
    assert db.execute("SELECT count(*) FROM user_notifications").fetchone() == (2,)
    # Bob's read state survived the redelivery.
    assert db.execute(
        "SELECT count(*) FROM user_notifications WHERE read_at IS NOT NULL"
    ).fetchone() == (1,)


def test_notifications_stay_readable_after_scenario_is_deleted(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    alice = make_user("alice")
    bob = make_user("bob")
    act(db, alice, "INSERT INTO test_scenarios (name, created_by) VALUES ('Checkout', %s)", alice)
    act(db, alice, "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'failed'")
    act(db, alice, "DELETE FROM test_scenarios")
    fan_out()
    messages = [
        r[0]
        for r in db.execute(
            "SELECT message FROM notification_feed WHERE user_id = %s ORDER BY id", [bob]
        )
    ]
    assert messages == [
        "alice created scenario 'Checkout'",
        "alice executed scenario 'Checkout': failed",
        "alice deleted scenario 'Checkout'",
    ]


def test_concurrent_fan_outs_share_a_backlog(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    db.execute("INSERT INTO users (name) SELECT 'u' || i FROM generate_series(1, 40) i")
    db.execute("INSERT INTO test_scenarios (name) SELECT 's' || i FROM generate_series(1, 400) i")
    processed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while rows := conn.execute("SELECT * FROM fan_out_events_v2(7)").fetchall():
                with lock:
                    processed.extend(r[0] for r in rows)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(processed) == sorted(set(processed))
    assert len(processed) == 400
    assert db.execute(
        "SELECT count(*), count(DISTINCT (user_id, event_id)) FROM user_notifications"
    ).fetchone() == (16000, 16000)
    assert db.execute("SELECT sum(fanout_count) FROM scenario_events").fetchone() == (16000,)


def test_deleting_a_user_removes_their_notifications(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    bob = make_user("bob")
    make_user("carol")
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")
    fan_out()
    db.execute("DELETE FROM users WHERE id = %s", [bob])
    assert notified(db) == {("carol", "scenario.created")}


def test_message_quotes_names_escaped(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    bob = make_user("bob")
    db.execute("INSERT INTO test_scenarios (name) VALUES (%s)", ["O'Brien \\ x"])
    fan_out()
    row = db.execute("SELECT message FROM notification_feed WHERE user_id = %s", [bob]).fetchone()
    # Escaped, so that a name cannot close the quote and go on with the sentence.
    assert row == ("Someone created scenario 'O\\'Brien \\\\ x'",)


def test_user_deleted_during_a_fan_out_keeps_no_rows(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    make_user("carol")
    db.execute("INSERT INTO test_scenarios (name) VALUES ('one')")
    with psycopg.connect(database_url) as fanout:
        # The fan-out has written bob's row but not committed when his deletion starts;
        # the deletion does not wait for it (it would hold up every other user's fan-out).
        fanout.execute("SELECT * FROM fan_out_events_v2(100)")
        db.execute("DELETE FROM users WHERE id = %s", [bob])
        fanout.commit()
    # What the fan-out in flight wrote for him goes at the listener's next clean-up.
    db.execute("SELECT finish_user_deletions_v2()")
    assert notified(db) == {("carol", "scenario.created")}


def test_fan_out_does_not_wait_on_a_user_deletion(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    make_user("carol")
    db.execute("INSERT INTO test_scenarios (name) VALUES ('one')")
    with psycopg.connect(database_url) as deleter:
        deleter.execute("DELETE FROM users WHERE id = %s", [bob])
        # Left open: the fan-out still sees bob, and writes his row without waiting.
        assert db.execute("SELECT count(*) FROM fan_out_events_v2(100)").fetchone() == (1,)
        deleter.commit()
    db.execute("SELECT finish_user_deletions_v2()")
    assert notified(db) == {("carol", "scenario.created")}


def test_event_recipients_is_the_fan_out_rule(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    alice = make_user("alice")
    bob = make_user("bob", executed=False)
    carol = make_user("carol")
    rows = db.execute(
        "SELECT user_id FROM event_recipients_v2('scenario.executed', %s) ORDER BY 1", [alice]
    ).fetchall()
    assert rows == [(carol,)]
    rows = db.execute(
        "SELECT user_id FROM event_recipients_v2('scenario.created', NULL) ORDER BY 1"
    ).fetchall()
    assert rows == [(alice,), (bob,), (carol,)]


def test_user_deletion_does_not_wait_for_read_state_writers(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    make_user("carol")
    db.execute("INSERT INTO test_scenarios (name) VALUES ('one')")
    while db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall():
        pass
    with psycopg.connect(database_url) as purger:
        # A purge (or mark-read) transaction left open writes user_notifications...
        purger.execute("SELECT purge_read_notifications('0 seconds')")
        done = threading.Event()

        def delete_bob() -> None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("DELETE FROM users WHERE id = %s", [bob])
            done.set()

        worker = threading.Thread(target=delete_bob)
        worker.start()
        # ...and neither the deletion nor the next fan-out waits for it.
        assert done.wait(2), "user deletion waited for an unrelated writer"
        db.execute("INSERT INTO test_scenarios (name) VALUES ('two')")
        assert db.execute("SELECT count(*) FROM fan_out_events_v2(100)").fetchone() == (1,)
        worker.join()
    assert notified(db) == {("carol", "scenario.created")}
