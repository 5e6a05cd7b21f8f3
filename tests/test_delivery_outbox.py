"""The outbox: fan_out_events_v2 writes an event's deliveries with its notifications, and the
admin functions of the delivery tables (set_user_email, set_channel_preference,
retry_delivery, replay_endpoint_deliveries, delivery_backlog, dead_deliveries)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.cli import run_cli
from tests.conftest import wait_until

TYPES = ("scenario.created", "scenario.executed", "scenario.deleted")
SECRET = "whsec_" + "A" * 32


def act(db: psycopg.Connection[Any], actor: int | None, sql: str, *params: Any) -> None:
    with db.transaction():
        if actor is not None:
            db.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(actor)])
        db.execute(sql, list(params))


def endpoint(db: psycopg.Connection[Any], user_id: int, event_types: list[str] | None) -> int:
    row = db.execute(
        "INSERT INTO webhook_endpoints (user_id, url, secret, event_types)"
        " VALUES (%s, 'https://hooks.example.com/x', %s, %s) RETURNING id",
        [user_id, SECRET, event_types],
    ).fetchone()
    assert row is not None
    return int(row[0])


def deliveries(db: psycopg.Connection[Any]) -> list[tuple[int, int, str, int | None]]:
    """(user, event, channel, endpoint) of every delivery, duplicates kept."""
    rows = db.execute(
        "SELECT user_id, event_id, channel, endpoint_id FROM deliveries"
        " ORDER BY user_id, event_id, channel, endpoint_id"
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def expected(db: psycopg.Connection[Any]) -> list[tuple[int, int, str, int | None]]:
    """The contract's rule, computed here from plain reads, not by the fan-out's SQL."""
    notes = db.execute(
        "SELECT n.user_id, n.event_id, e.event_type FROM user_notifications n"
        " JOIN scenario_events e ON e.id = n.event_id"
    ).fetchall()
    emails = {r[0]: r[1] for r in db.execute("SELECT id, email FROM users")}
    prefs = {
        (r[0], r[1], r[2]): r[3]
        for r in db.execute("SELECT user_id, event_type, channel, enabled FROM channel_preferences")
    }
    endpoints = db.execute(
        "SELECT user_id, id, event_types, disabled_at FROM webhook_endpoints"
    ).fetchall()
    want: list[tuple[int, int, str, int | None]] = []
    for user_id, event_id, event_type in notes:
        if emails.get(user_id) and prefs.get((user_id, event_type, "email"), False):
            want.append((user_id, event_id, "email", None))
        if prefs.get((user_id, event_type, "webhook"), True):
            for owner, ep, types, disabled in endpoints:
                if owner == user_id and disabled is None and (types is None or event_type in types):
                    want.append((user_id, event_id, "webhook", ep))
    return sorted(want, key=lambda t: (t[0], t[1], t[2], t[3] or 0))


def test_deliveries_follow_the_channel_rules(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    alice = make_user("alice")
    bob = make_user("bob")  # e-mail address, e-mail on for executed only; an all-types hook
    carol = make_user("carol")  # e-mail on but no address; a hook for deleted only
    dave = make_user("dave", executed=False)  # not notified of executions at all
    erin = make_user("erin")  # webhook switched off for created; a disabled endpoint too
    db.execute("SELECT set_user_email(%s, 'bob@example.com')", [bob])
    db.execute("SELECT set_user_email(%s, 'dave@example.com')", [dave])
    db.execute("SELECT set_channel_preference(%s, 'scenario.executed', 'email', true)", [bob])
    db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'email', false)", [bob])
    for t in TYPES:
        db.execute("SELECT set_channel_preference(%s, %s, 'email', true)", [carol, t])
        db.execute("SELECT set_channel_preference(%s, %s, 'email', true)", [dave, t])
    db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'webhook', false)", [erin])
    endpoint(db, bob, None)
    endpoint(db, carol, ["scenario.deleted"])
    endpoint(db, erin, None)
    endpoint(db, erin, ["scenario.created", "scenario.executed"])
    dead = endpoint(db, erin, None)
    db.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = %s", [dead])
    endpoint(db, alice, None)  # the actor: never notified, so never delivered to

    act(db, alice, "INSERT INTO test_scenarios (name, created_by) VALUES ('S', %s)", alice)
    act(db, alice, "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'")
    act(db, alice, "UPDATE test_scenarios SET deleted_at = now()")
    fan_out()

    got = deliveries(db)
    assert got == expected(db)
    # Spot checks that the rule computed above is the contract's, not just self-consistent.
    channels = {(u, c) for u, _, c, _ in got}
    assert (bob, "email") in channels and (bob, "webhook") in channels
    assert (dave, "email") in channels
    assert not any(u in (alice, carol) and c == "email" for u, c in channels)
    assert all(ep != dead for *_, ep in got)
    assert len(got) == len(set(got))


def test_no_duplicates_after_redelivery(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    bob = make_user("bob")
    db.execute("SELECT set_user_email(%s, 'bob@example.com')", [bob])
    db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'email', true)", [bob])
    endpoint(db, bob, None)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")
    fan_out()
    first = deliveries(db)
    assert len(first) == 2
    # A new endpoint meanwhile: the redelivery adds its row, and only that one.
    later = endpoint(db, bob, None)
    event_id = first[0][1]
    db.execute("SELECT redeliver_event(%s)", [event_id])
    fan_out()
    got = deliveries(db)
    assert len(got) == len(set(got)) == 3
    assert (bob, event_id, "webhook", later) in got


def test_notifications_and_deliveries_commit_together(
    database_url: str,
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    fan_out: Callable[[], int],
) -> None:
    """A fan-out interrupted after its INSERTs leaves neither notifications nor deliveries;
    the next one writes both."""
    for i in range(50):
        uid = make_user(f"u{i}")
        db.execute("SELECT set_user_email(%s, %s)", [uid, f"u{i}@example.com"])
        db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'email', true)", [uid])
        endpoint(db, uid, None)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")

    # The gate: a SHARE lock on deliveries, which the fan-out's INSERT INTO deliveries waits
    # for, after its notifications are written inside its transaction. Then it is cancelled.
    with (
        psycopg.connect(database_url, autocommit=True) as fanner,
        psycopg.connect(database_url) as gate,
    ):
        pid = fanner.info.backend_pid
        gate.execute("LOCK TABLE deliveries IN SHARE MODE")
        failure: list[BaseException] = []

        def run() -> None:
            try:
                fanner.execute("SELECT * FROM fan_out_events_v2(100)")
            except psycopg.Error as exc:
                failure.append(exc)

        t = threading.Thread(target=run)
        t.start()
        try:
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        [pid],
                    ).fetchone()
                    == (True,)
                ),
                timeout=30,
            )
            db.execute("SELECT pg_cancel_backend(%s)", [pid])
        finally:
            gate.rollback()
            t.join(30)
        assert failure and isinstance(failure[0], errors.QueryCanceled)

    assert db.execute("SELECT count(*) FROM user_notifications").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
    fan_out()
    assert db.execute("SELECT count(*) FROM user_notifications").fetchone() == (50,)
    assert deliveries(db) == expected(db)
    assert len(deliveries(db)) == 100


def test_delivery_hint_once_and_only_when_deliveries_were_written(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    make_user("carol")
    with psycopg.connect(database_url, autocommit=True) as listener:
        channel = db.execute("SELECT delivery_channel_v2()").fetchone()
        assert channel is not None
        listener.execute(f'LISTEN "{channel[0]}"')

        def hints() -> int:
            return len(list(listener.notifies(timeout=0.5)))

        db.execute("INSERT INTO test_scenarios (name) VALUES ('quiet')")
        db.execute("SELECT * FROM fan_out_events_v2(100)")
        assert hints() == 0  # notifications, but no deliveries: no hint

        endpoint(db, bob, None)
        db.execute("INSERT INTO test_scenarios (name) VALUES ('a'), ('b')")
        db.execute("INSERT INTO test_scenarios (name) VALUES ('c')")
        db.execute("SELECT * FROM fan_out_events_v2(100)")
        assert hints() == 1  # three events with deliveries, one transaction: one hint


def test_user_deletion_removes_their_deliveries(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    bob = make_user("bob")
    carol = make_user("carol")
    endpoint(db, bob, None)
    endpoint(db, carol, None)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")
    fan_out()
    db.execute("SELECT delete_user(%s)", [bob])
    assert {u for u, *_ in deliveries(db)} == {carol}


def test_endpoint_deletion_removes_its_deliveries(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    bob = make_user("bob")
    gone = endpoint(db, bob, None)
    kept = endpoint(db, bob, None)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")
    fan_out()
    db.execute("DELETE FROM webhook_endpoints WHERE id = %s", [gone])
    assert [ep for *_, ep in deliveries(db)] == [kept]


# Admin functions


def test_set_user_email_validates_and_clears(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    db.execute("SELECT set_user_email(%s, 'bob@example.com')", [bob])
    assert db.execute("SELECT email FROM users WHERE id = %s", [bob]).fetchone() == (
        "bob@example.com",
    )
    with pytest.raises(errors.InvalidParameterValue, match="invalid e-mail address"):
        db.execute("SELECT set_user_email(%s, 'not an address')", [bob])
    with pytest.raises(errors.NoDataFound, match="no user with id 999999"):
        db.execute("SELECT set_user_email(999999, 'x@example.com')")
    db.execute("SELECT set_user_email(%s, NULL)", [bob])
    assert db.execute("SELECT email FROM users WHERE id = %s", [bob]).fetchone() == (None,)


def test_set_channel_preference_errors(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'email', true)", [bob])
    db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'email', false)", [bob])
    assert db.execute(
        "SELECT enabled FROM channel_preferences WHERE user_id = %s", [bob]
    ).fetchall() == [(False,)]
    with pytest.raises(errors.NoDataFound):
        db.execute("SELECT set_channel_preference(999999, 'scenario.created', 'email', true)")
    with pytest.raises(errors.InvalidParameterValue, match="unknown event type"):
        db.execute("SELECT set_channel_preference(%s, 'scenario.nope', 'email', true)", [bob])
    with pytest.raises(errors.InvalidParameterValue, match="unknown channel 'sms'"):
        db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'sms', true)", [bob])
    with pytest.raises(errors.NullValueNotAllowed):
        db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'email', NULL)", [bob])


def _dead_delivery(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> tuple[int, int]:
    bob = make_user("bob")
    ep = endpoint(db, bob, None)
    db.execute("INSERT INTO test_scenarios (name) VALUES ('S')")
    fan_out()
    db.execute(
        "UPDATE deliveries SET status = 'dead', attempts = 10, last_error = 'HTTP 500',"
        " next_attempt_at = now() + interval '1 day'"
    )
    row = db.execute("SELECT id FROM deliveries").fetchone()
    assert row is not None
    return int(row[0]), ep


def test_retry_delivery(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    delivery, _ = _dead_delivery(db, make_user, fan_out)
    backlog = db.execute(
        "SELECT channel, pending, dead FROM delivery_backlog ORDER BY channel"
    ).fetchall()
    assert backlog == [("email", 0, 0), ("webhook", 0, 1)]
    dead = db.execute("SELECT id, user_name, attempts, last_error FROM dead_deliveries").fetchall()
    assert dead == [(delivery, "bob", 10, "HTTP 500")]

    db.execute("SELECT retry_delivery(%s)", [delivery])
    row = db.execute(
        "SELECT status, attempts, next_attempt_at <= now() FROM deliveries WHERE id = %s",
        [delivery],
    ).fetchone()
    assert row == ("pending", 0, True)
    assert db.execute("SELECT count(*) FROM dead_deliveries").fetchone() == (0,)
    assert db.execute(
        "SELECT pending FROM delivery_backlog WHERE channel = 'webhook'"
    ).fetchone() == (1,)

    with pytest.raises(errors.NoDataFound, match="no delivery with id 999999"):
        db.execute("SELECT retry_delivery(999999)")
    with pytest.raises(errors.NullValueNotAllowed):
        db.execute("SELECT retry_delivery(NULL)")
    db.execute("UPDATE deliveries SET status = 'delivered', delivered_at = now()")
    with pytest.raises(errors.InvalidParameterValue, match="delivered already"):
        db.execute("SELECT retry_delivery(%s)", [delivery])


def test_replay_endpoint_deliveries(
    db: psycopg.Connection[Any], make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    delivery, ep = _dead_delivery(db, make_user, fan_out)
    db.execute("UPDATE deliveries SET created_at = '2030-01-01T12:00Z'")
    outside = db.execute(
        "SELECT replay_endpoint_deliveries(%s, '2030-01-02', '2030-01-03')", [ep]
    ).fetchone()
    assert outside == (0,)
    inside = db.execute(
        "SELECT replay_endpoint_deliveries(%s, '2030-01-01', '2030-01-02')", [ep]
    ).fetchone()
    assert inside == (1,)
    assert db.execute("SELECT status FROM deliveries WHERE id = %s", [delivery]).fetchone() == (
        "pending",
    )
    with pytest.raises(errors.NoDataFound, match="no webhook endpoint"):
        db.execute("SELECT replay_endpoint_deliveries(999999, '2030-01-01', '2030-01-02')")
    with pytest.raises(errors.InvalidParameterValue, match="must be later"):
        db.execute("SELECT replay_endpoint_deliveries(%s, '2030-01-02', '2030-01-01')", [ep])
    db.execute("UPDATE webhook_endpoints SET disabled_at = now()")
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="disabled"):
        db.execute("SELECT replay_endpoint_deliveries(%s, '2030-01-01', '2030-01-02')", [ep])


# CLI


def test_cli_delivery_retry(
    database_url: str,
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    fan_out: Callable[[], int],
) -> None:
    delivery, _ = _dead_delivery(db, make_user, fan_out)
    done = run_cli("delivery", "retry", str(delivery), database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert db.execute("SELECT status FROM deliveries").fetchone() == ("pending",)
    for bad in ("999999", "abc", "0", "-1"):
        failed = run_cli("delivery", "retry", bad, database_url=database_url)
        assert failed.returncode != 0
        assert "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_cli_delivery_replay(
    database_url: str,
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    fan_out: Callable[[], int],
) -> None:
    _, ep = _dead_delivery(db, make_user, fan_out)
    done = run_cli(
        "delivery", "replay", str(ep), "--since", "2000-01-01", database_url=database_url
    )
    assert done.returncode == 0, done.stderr
    assert '"replayed": 1' in done.stdout
    assert db.execute("SELECT status FROM deliveries").fetchone() == ("pending",)
    for bad in (
        [str(ep)],  # --since is required
        [str(ep), "--since", "yesterday-ish"],
        [str(ep), "--since", "2030-01-02", "--until", "2030-01-01"],
        ["999999", "--since", "2000-01-01"],
    ):
        failed = run_cli("delivery", "replay", *bad, database_url=database_url)
        assert failed.returncode != 0, bad
        assert "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
