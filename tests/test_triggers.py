"""Triggers on test_scenarios, exercised through plain SQL as a psql user would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[Any]


@pytest.fixture
def listen(database_url: str) -> Iterator[Conn]:
    """A session LISTENing on the channel the triggers notify."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("LISTEN scenario_events")
        yield conn


@pytest.fixture
def writer(database_url: str) -> Iterator[Conn]:
    """A second writer, whose transaction stays open until it commits."""
    with psycopg.connect(database_url) as conn:
        yield conn


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


def test_rolled_back_write_produces_nothing(db: Conn, listen: Conn) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        insert_scenario(db, "Doomed")
        raise RuntimeError("roll back")
    assert events(db) == []
    assert list(listen.notifies(timeout=0.3)) == []


def test_bulk_insert_sends_one_notification(db: Conn, listen: Conn) -> None:
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


def test_actor_setting_must_be_a_user_id(db: Conn) -> None:
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


# -- the wake-up rule: at most one NOTIFY per 100 ms, decided at commit -----------------------

# The time of the last NOTIFY, set by hand.
RECENT = "SELECT setval('scenario_events_woken_at_v2', 1000 * (extract(epoch FROM now()) + 3600)::bigint)"
LONG_AGO = "SELECT setval('scenario_events_woken_at_v2', 0)"


def stamp(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT last_value FROM scenario_events_woken_at_v2").fetchone()
    assert row is not None
    return int(row[0])


def test_notify_unless_another_writer_notified_within_the_window(db: Conn, listen: Conn) -> None:
    db.execute(LONG_AGO)
    insert_scenario(db, "first")  # nobody notified lately: wake the listeners
    assert len(list(listen.notifies(timeout=0.3))) == 1
    assert stamp(db) > 0
    # Another writer's NOTIFY went out within the window (made recent here whatever the
    # machine's pace): its listener drains until empty and re-polls, so no NOTIFY.
    db.execute(RECENT)
    insert_scenario(db, "second")
    db.execute("UPDATE test_scenarios SET deleted_at = now() WHERE name = 'second'")
    db.execute("DELETE FROM test_scenarios WHERE name = 'first'")
    insert_scenario(db, "third")
    assert list(listen.notifies(timeout=0.3)) == []
    db.execute(LONG_AGO)
    # A write that writes no event never notifies.
    db.execute("UPDATE test_scenarios SET description = 'x'")
    assert list(listen.notifies(timeout=0.3)) == []
    db.execute("UPDATE test_scenarios SET last_executed_at = now()")
    assert len(list(listen.notifies(timeout=0.3))) == 1


def test_the_decision_waits_for_the_commit(db: Conn, listen: Conn, writer: Conn) -> None:
    """A writer that keeps its transaction open after its INSERT has not notified yet, so
    it silences nobody: the writer behind it, committing first, notifies."""
    db.execute(LONG_AGO)
    writer.execute("INSERT INTO test_scenarios (name) VALUES ('slow')")
    assert stamp(db) == 0
    insert_scenario(db, "quick")
    assert len(list(listen.notifies(timeout=0.3))) == 1
    stamped = stamp(db)
    db.execute(LONG_AGO)  # as if the slow writer commits seconds later
    writer.commit()
    assert len(list(listen.notifies(timeout=0.3))) == 1
    assert stamp(db) >= stamped


def test_a_writer_whose_first_event_follows_a_notify_decides_then(
    db: Conn, listen: Conn, writer: Conn
) -> None:
    """Its first event row came within 100 ms of another writer's NOTIFY: the listener that
    NOTIFY woke is re-polling, so this transaction will not notify, even if it commits
    after the window (then its own events wait for the next NOTIFY or the poll)."""
    db.execute(RECENT)
    writer.execute("INSERT INTO test_scenarios (name) VALUES ('after a NOTIFY')")
    db.execute(LONG_AGO)
    writer.execute("INSERT INTO test_scenarios (name) VALUES ('and another')")
    writer.commit()
    assert list(listen.notifies(timeout=0.3)) == []
    insert_scenario(db, "the next writer")
    assert len(list(listen.notifies(timeout=0.3))) == 1


def test_a_rolled_back_savepoint_takes_its_wake_up_with_it(db: Conn, listen: Conn) -> None:
    db.execute(LONG_AGO)
    with db.transaction():
        with pytest.raises(RuntimeError), db.transaction():
            insert_scenario(db, "undone")
            raise RuntimeError("roll back to the savepoint")
        insert_scenario(db, "kept")
    assert len(list(listen.notifies(timeout=0.3))) == 1
    assert [e[2] for e in events(db)] == ["kept"]


def test_isolation_levels(db: Conn, listen: Conn, writer: Conn) -> None:
    """The stamp is not transactional: a REPEATABLE READ writer whose snapshot is older than
    the last change of it follows the current value. A SERIALIZABLE writer, whose commit
    may still fail after the decision, notifies without stamping."""
    db.execute(RECENT)
    writer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    writer.execute("SELECT count(*) FROM test_scenarios")  # the snapshot is taken here
    db.execute(LONG_AGO)
    writer.execute("INSERT INTO test_scenarios (name) VALUES ('repeatable')")
    writer.commit()
    assert len(list(listen.notifies(timeout=0.5))) == 1

    db.execute(LONG_AGO)
    writer.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    writer.execute("INSERT INTO test_scenarios (name) VALUES ('serializable')")
    writer.commit()
    assert len(list(listen.notifies(timeout=0.5))) == 1
    assert stamp(db) == 0
