"""Triggers on test_scenarios, exercised through plain SQL as a psql user would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest


def events(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_type, scenario_id, scenario_name, status, actor_id"
        " FROM scenario_events ORDER BY id"
    ).fetchall()


def insert_scenario(db: psycopg.Connection[Any], name: str, created_by: int | None = None) -> int:
    row = db.execute(
        "INSERT INTO test_scenarios (name, created_by) VALUES (%s, %s) RETURNING id",
        [name, created_by],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_insert_writes_created_event_with_creator_as_actor(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    alice = make_user("alice")
    sid = insert_scenario(db, "Checkout", alice)
    assert events(db) == [("scenario.created", sid, "Checkout", None, alice)]


def test_update_setting_last_executed_at_writes_executed_event(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    sid = insert_scenario(db, "Checkout", alice)
    with db.transaction():
        db.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(bob)])
        db.execute(
            "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'failed' WHERE id = %s",
            [sid],
        )
    assert events(db)[-1] == ("scenario.executed", sid, "Checkout", "failed", bob)


def test_update_of_other_columns_writes_nothing(db: psycopg.Connection[Any]) -> None:
    sid = insert_scenario(db, "Checkout")
    db.execute("UPDATE test_scenarios SET description = 'x', name = 'Pay' WHERE id = %s", [sid])
    assert [e[0] for e in events(db)] == ["scenario.created"]


def test_soft_delete_writes_deleted_event_once(db: psycopg.Connection[Any]) -> None:
    sid = insert_scenario(db, "Checkout")
    db.execute("UPDATE test_scenarios SET deleted_at = now() WHERE id = %s", [sid])
    # Already deleted: neither a second soft delete, an execution nor a hard delete counts.
    db.execute("UPDATE test_scenarios SET deleted_at = now() WHERE id = %s", [sid])
    db.execute("UPDATE test_scenarios SET last_executed_at = now() WHERE id = %s", [sid])
    db.execute("DELETE FROM test_scenarios WHERE id = %s", [sid])
    assert [e[0] for e in events(db)] == ["scenario.created", "scenario.deleted"]


def test_plain_delete_writes_deleted_event(db: psycopg.Connection[Any]) -> None:
    sid = insert_scenario(db, "Checkout")
    db.execute("DELETE FROM test_scenarios WHERE id = %s", [sid])
    assert events(db)[-1] == ("scenario.deleted", sid, "Checkout", None, None)


def test_truncate_writes_deleted_events_for_live_rows(db: psycopg.Connection[Any]) -> None:
    a = insert_scenario(db, "A")
    b = insert_scenario(db, "B")
    db.execute("UPDATE test_scenarios SET deleted_at = now() WHERE id = %s", [b])
    db.execute("TRUNCATE test_scenarios")
    deleted = [(e[1], e[2]) for e in events(db) if e[0] == "scenario.deleted"]
    assert deleted == [(b, "B"), (a, "A")]


def test_execute_and_delete_in_one_statement_writes_both(db: psycopg.Connection[Any]) -> None:
    sid = insert_scenario(db, "Checkout")
    db.execute(
        "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed',"
        " deleted_at = now() WHERE id = %s",
        [sid],
    )
    assert [e[0] for e in events(db)] == [
        "scenario.created",
        "scenario.executed",
        "scenario.deleted",
    ]


def test_rolled_back_write_produces_nothing(database_url: str, db: psycopg.Connection[Any]) -> None:
    with psycopg.connect(database_url, autocommit=True) as listen:
        listen.execute("LISTEN scenario_events")
        with pytest.raises(RuntimeError), db.transaction():
            insert_scenario(db, "Doomed")
            raise RuntimeError("roll back")
        assert events(db) == []
        assert list(listen.notifies(timeout=0.3)) == []


def test_bulk_insert_sends_one_notification(database_url: str, db: psycopg.Connection[Any]) -> None:
    with psycopg.connect(database_url, autocommit=True) as listen:
        listen.execute("LISTEN scenario_events")
        with db.transaction():
            db.execute(
                "INSERT INTO test_scenarios (name) SELECT 'bulk ' || i FROM generate_series(1, 10000) i"
            )
            # A second statement in the same transaction folds into the same notification.
            db.execute("UPDATE test_scenarios SET last_executed_at = now() WHERE name = 'bulk 1'")
        received = list(listen.notifies(timeout=0.5))
    assert len(received) == 1
    assert received[0].channel == "scenario_events"
    count = db.execute("SELECT count(*) FROM scenario_events").fetchone()
    assert count is not None and count[0] == 10001


def test_actor_setting_must_be_a_user_id(db: psycopg.Connection[Any]) -> None:
    sid = insert_scenario(db, "Checkout")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation), db.transaction():
        db.execute("SELECT set_config('notifications.actor_id', 'alice', true)")
        db.execute("UPDATE test_scenarios SET last_executed_at = now() WHERE id = %s", [sid])
    assert [e[0] for e in events(db)] == ["scenario.created"]


def test_two_executions_in_one_transaction_are_two_events(db: psycopg.Connection[Any]) -> None:
    sid = insert_scenario(db, "Checkout")
    with db.transaction():
        for status in ("passed", "failed"):
            db.execute(
                "UPDATE test_scenarios SET last_executed_at = now(), last_status = %s WHERE id = %s",
                [status, sid],
            )
    assert [(e[0], e[3]) for e in events(db)][1:] == [
        ("scenario.executed", "passed"),
        ("scenario.executed", "failed"),
    ]


def test_notify_only_when_no_older_event_waits(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as listen:
        listen.execute("LISTEN scenario_events")
        insert_scenario(db, "first")  # empty backlog: wake the listeners
        assert len(list(listen.notifies(timeout=0.3))) == 1
        # An older event still waits, young enough that a listener is surely on it (within
        # the re-poll window; made young here whatever the machine's pace): no NOTIFY.
        db.execute("UPDATE scenario_events SET occurred_at = now() + interval '1 hour'")
        insert_scenario(db, "second")
        db.execute("UPDATE test_scenarios SET deleted_at = now() WHERE name = 'second'")
        assert list(listen.notifies(timeout=0.3)) == []
        db.execute("UPDATE scenario_events SET processed_at = now()")
        # An update that writes no event never notifies, backlog empty or not.
        db.execute("UPDATE test_scenarios SET description = 'x'")
        assert list(listen.notifies(timeout=0.3)) == []
        db.execute("DELETE FROM test_scenarios WHERE name = 'first'")
        assert len(list(listen.notifies(timeout=0.3))) == 1


def test_repeatable_read_writer_notifies_even_with_a_stale_view_of_the_backlog(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    insert_scenario(db, "pending")  # an older event waits...
    with (
        psycopg.connect(database_url, autocommit=True) as listen,
        psycopg.connect(database_url) as writer,
    ):
        listen.execute("LISTEN scenario_events")
        list(listen.notifies(timeout=0.2))
        writer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        writer.execute("SELECT count(*) FROM test_scenarios")  # the snapshot is taken here
        db.execute("UPDATE scenario_events SET processed_at = now()")  # ...and is drained
        writer.execute("INSERT INTO test_scenarios (name) VALUES ('late')")
        writer.commit()
        # Its snapshot still shows the old event waiting; it must notify regardless.
        assert len(list(listen.notifies(timeout=0.5))) == 1
