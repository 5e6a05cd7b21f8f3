"""psql-level administration: the admin SQL functions and views, and the CLI over them.

Every refusal is checked three ways: the SQLSTATE (what a program matches on), the message
(what a person reads) and the tables (nothing was written).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.cli import run_cli
from tests.conftest import wait_until

Conn = psycopg.Connection[Any]


def one(db: Conn, sql: str, params: list[Any] | None = None) -> Any:
    row = db.execute(sql, params or []).fetchone()
    assert row is not None
    return row[0]


def counts(db: Conn) -> tuple[int, ...]:
    """Rows of every table an admin function may write."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM api_tokens),"
        " (SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL),"
        " (SELECT count(*) FROM subscriptions), (SELECT count(*) FROM user_notifications),"
        " (SELECT count(*) FROM scenario_events WHERE processed_at IS NULL)"
    ).fetchone()
    assert row is not None
    return tuple(row)


def refused(
    db: Conn, sql: str, params: list[Any], error: type[psycopg.Error], message: str
) -> psycopg.Error:
    before = counts(db)
    with pytest.raises(error) as info:
        db.execute(sql, params)
    assert info.value.diag.message_primary is not None
    assert message in info.value.diag.message_primary
    assert counts(db) == before, "a refused call wrote something"
    return info.value


def add_scenario(db: Conn, name: str, created_by: int | None) -> int:
    return int(
        one(
            db,
            "INSERT INTO test_scenarios (name, created_by) VALUES (%s, %s) RETURNING id",
            [name, created_by],
        )
    )


# -- users and tokens ------------------------------------------------------------------------


def test_create_user_and_token(db: Conn) -> None:
    user_id = one(db, "SELECT create_user('carol')")
    token = one(db, "SELECT issue_token(%s)", [user_id])
    assert token.startswith("ntf_") and len(token) > 40
    assert one(db, "SELECT authenticate_token_v1(%s)", [token]) == user_id
    # Only a hash is stored.
    assert (
        one(
            db, "SELECT count(*) FROM api_tokens WHERE token_hash = convert_to(%s, 'UTF8')", [token]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        (None, errors.NullValueNotAllowed, "name must not be NULL"),
        ("", errors.InvalidParameterValue, "invalid user name ''"),
        ("two words", errors.InvalidParameterValue, "invalid user name 'two words'"),
        ("-dash", errors.InvalidParameterValue, "invalid user name"),
        ("x" * 65, errors.InvalidParameterValue, "invalid user name"),
    ],
)
def test_create_user_refuses_bad_names(
    db: Conn, name: str | None, error: type[psycopg.Error], message: str
) -> None:
    refused(db, "SELECT create_user(%s)", [name], error, message)


def test_create_user_refuses_a_duplicate(db: Conn) -> None:
    db.execute("SELECT create_user('dave')")
    refused(
        db, "SELECT create_user('dave')", [], errors.UniqueViolation, "user 'dave' already exists"
    )


@pytest.mark.parametrize("function", ["issue_token", "revoke_tokens", "delete_user"])
def test_user_functions_refuse_unknown_and_null_users(
    db: Conn, make_user: Callable[..., int], function: str
) -> None:
    make_user("erin")
    exc = refused(
        db, f"SELECT {function}(424242)", [], errors.NoDataFound, "no user with id 424242"
    )
    assert exc.diag.message_hint is not None
    refused(
        db, f"SELECT {function}(NULL)", [], errors.NullValueNotAllowed, "user_id must not be NULL"
    )


def test_revoke_tokens(db: Conn, make_user: Callable[..., int]) -> None:
    user_id = make_user("frank")
    other = make_user("grace")
    tokens = [one(db, "SELECT issue_token(%s)", [user_id]) for _ in range(2)]
    kept = one(db, "SELECT issue_token(%s)", [other])
    assert one(db, "SELECT revoke_tokens(%s)", [user_id]) == 2
    assert one(db, "SELECT revoke_tokens(%s)", [user_id]) == 0
    for token in tokens:
        assert one(db, "SELECT authenticate_token_v1(%s)", [token]) is None
    assert one(db, "SELECT authenticate_token_v1(%s)", [kept]) == other
    # A new token works again after a revocation.
    fresh = one(db, "SELECT issue_token(%s)", [user_id])
    assert one(db, "SELECT authenticate_token_v1(%s)", [fresh]) == user_id


def test_delete_user_takes_their_data_and_keeps_the_events(
    db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    gone = make_user("heidi", executed=False)
    stays = make_user("ivan")
    db.execute("SELECT issue_token(%s)", [gone])
    add_scenario(db, "Login", gone)
    add_scenario(db, "Logout", stays)
    fan_out()
    db.execute("SELECT delete_user(%s)", [gone])
    assert one(db, "SELECT count(*) FROM users WHERE id = %s", [gone]) == 0
    for table in ("api_tokens", "subscriptions", "user_notifications"):
        assert one(db, f"SELECT count(*) FROM {table} WHERE user_id = %s", [gone]) == 0
    # ivan still reads about heidi's scenario, now by "Someone".
    message = one(db, "SELECT message FROM notification_feed WHERE user_id = %s", [stays])
    assert message == "Someone created scenario 'Login'"


# -- subscriptions ---------------------------------------------------------------------------


def test_set_subscription_and_the_view(db: Conn, make_user: Callable[..., int]) -> None:
    user_id = make_user("judy")
    db.execute("SELECT set_subscription(%s, 'scenario.executed', false)", [user_id])
    db.execute("SELECT set_subscription(%s, 'scenario.executed', false)", [user_id])  # again
    rows = db.execute(
        "SELECT event_type, enabled, source FROM user_subscriptions WHERE user_id = %s"
        " ORDER BY event_type",
        [user_id],
    ).fetchall()
    assert rows == [
        ("scenario.created", True, "default"),
        ("scenario.deleted", True, "default"),
        ("scenario.executed", False, "user"),
    ]
    assert one(db, "SELECT count(*) FROM subscriptions WHERE user_id = %s", [user_id]) == 1


@pytest.mark.parametrize(
    ("event_type", "enabled", "error", "message"),
    [
        (
            "scenario.exploded",
            True,
            errors.InvalidParameterValue,
            "unknown event type 'scenario.exploded'",
        ),
        (None, True, errors.NullValueNotAllowed, "event_type must not be NULL"),
        ("scenario.created", None, errors.NullValueNotAllowed, "enabled must be true or false"),
    ],
)
def test_set_subscription_refuses_bad_arguments(
    db: Conn,
    make_user: Callable[..., int],
    event_type: str | None,
    enabled: bool | None,
    error: type[psycopg.Error],
    message: str,
) -> None:
    user_id = make_user("ken")
    refused(
        db, "SELECT set_subscription(%s, %s, %s)", [user_id, event_type, enabled], error, message
    )
    refused(
        db,
        "SELECT set_subscription(999, 'scenario.created', true)",
        [],
        errors.NoDataFound,
        "no user with id 999",
    )


# -- backlog, redelivery, overview -----------------------------------------------------------


def test_backlog_view(db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]) -> None:
    assert db.execute(
        "SELECT unprocessed_events, oldest_occurred_at, oldest_age, oldest_event_id"
        " FROM notification_backlog"
    ).fetchone() == (0, None, datetime.timedelta(0), None)
    user_id = make_user("leo")
    first = add_scenario(db, "A", user_id)
    add_scenario(db, "B", user_id)
    row = db.execute(
        "SELECT unprocessed_events, oldest_event_id, oldest_age > interval '0'"
        " FROM notification_backlog"
    ).fetchone()
    first_event = one(db, "SELECT min(id) FROM scenario_events WHERE scenario_id = %s", [first])
    assert row == (2, first_event, True)
    fan_out()
    assert one(db, "SELECT unprocessed_events FROM notification_backlog") == 0


def test_redeliver_event_reaches_a_user_subscribed_since(
    db: Conn, database_url: str, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    actor = make_user("mallory")
    reader = make_user("nina")
    late = make_user("oscar", created=False)
    add_scenario(db, "Checkout", actor)
    fan_out()
    event_id = one(db, "SELECT max(id) FROM scenario_events")
    db.execute(
        "UPDATE user_notifications SET read_at = now() - interval '1 hour' WHERE user_id = %s",
        [reader],
    )
    read_at = one(db, "SELECT read_at FROM user_notifications WHERE user_id = %s", [reader])
    assert one(db, "SELECT count(*) FROM user_notifications WHERE user_id = %s", [late]) == 0

    db.execute("SELECT set_subscription(%s, 'scenario.created', true)", [late])
    with psycopg.connect(database_url, autocommit=True) as listen:
        listen.execute("LISTEN scenario_events")
        db.execute("SELECT redeliver_event(%s)", [event_id])
        # The listeners are woken, not left to their next poll.
        assert any(True for _ in listen.notifies(timeout=5, stop_after=1))
    assert one(db, "SELECT unprocessed_events FROM notification_backlog") == 1
    fan_out()
    # oscar has it now; nina keeps her single row, still read; the actor still has none.
    assert one(db, "SELECT count(*) FROM user_notifications WHERE user_id = %s", [late]) == 1
    assert db.execute(
        "SELECT count(*), max(read_at) FROM user_notifications WHERE user_id = %s", [reader]
    ).fetchone() == (1, read_at)
    assert one(db, "SELECT count(*) FROM user_notifications WHERE user_id = %s", [actor]) == 0
    assert one(db, "SELECT fanout_count FROM scenario_events WHERE id = %s", [event_id]) == 2


def test_redeliver_event_refuses_bad_ids(db: Conn) -> None:
    exc = refused(db, "SELECT redeliver_event(777)", [], errors.NoDataFound, "no event with id 777")
    assert exc.diag.message_hint is not None
    refused(
        db,
        "SELECT redeliver_event(NULL)",
        [],
        errors.NullValueNotAllowed,
        "event_id must not be NULL",
    )


def test_user_overview(db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]) -> None:
    actor = make_user("peggy")
    reader = make_user("quinn")
    db.execute("SELECT issue_token(%s)", [reader])
    db.execute("SELECT issue_token(%s)", [reader])
    db.execute("SELECT revoke_tokens(%s)", [reader])
    db.execute("SELECT issue_token(%s)", [reader])
    add_scenario(db, "One", actor)
    add_scenario(db, "Two", actor)
    fan_out()
    db.execute(
        "UPDATE user_notifications SET read_at = now() WHERE user_id = %s"
        " AND event_id = (SELECT min(event_id) FROM user_notifications WHERE user_id = %s)",
        [reader, reader],
    )
    rows = db.execute(
        "SELECT name, active_tokens, last_token_issued_at IS NOT NULL, notifications,"
        " unread_notifications FROM user_overview ORDER BY id"
    ).fetchall()
    assert rows == [("peggy", 0, False, 0, 0), ("quinn", 1, True, 2, 1)]


def test_listener_activity_shows_this_databases_listeners(
    db: Conn, start_listener: Callable[..., Any], make_user: Callable[..., int]
) -> None:
    assert one(db, "SELECT count(*) FROM listener_activity") == 0
    start_listener()
    rows = wait_until(
        lambda: (
            db.execute(
                "SELECT listener_pid, connection, unprocessed_events, backlog_age"
                " FROM listener_activity ORDER BY connection"
            ).fetchall()
            if one(db, "SELECT count(*) FROM listener_activity") == 2
            else None
        )
    )
    assert rows == [
        (os.getpid(), "fanout", 0, datetime.timedelta(0)),
        (os.getpid(), "listen", 0, datetime.timedelta(0)),
    ]
    # The fanout session's last query is how recently that listener looked at the backlog.
    assert one(
        db,
        "SELECT now() - last_query_at < interval '1 minute' FROM listener_activity"
        " WHERE connection = 'fanout'",
    )


# -- the CLI is a thin wrapper: same rules, one-line errors ----------------------------------


def test_cli_user_and_token_errors(database_url: str, db: Conn) -> None:
    made = run_cli("user", "create", "rita", database_url=database_url)
    assert made.returncode == 0, made.stderr
    bad = run_cli("user", "create", "two words", database_url=database_url)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "invalid user name 'two words'" in bad.stderr
    dup = run_cli("user", "create", "rita", database_url=database_url)
    assert (
        dup.returncode == 1 and dup.stderr == "notifications: error: user 'rita' already exists\n"
    )
    missing = run_cli("token", "issue", "999", database_url=database_url)
    assert missing.returncode == 1
    assert missing.stderr == "notifications: error: no user with id 999\n"
    event = run_cli("event", "redeliver", "999", database_url=database_url)
    assert event.returncode == 1 and event.stderr == "notifications: error: no event with id 999\n"
    usage = run_cli("token", "issue", "abc", database_url=database_url)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1
    assert one(db, "SELECT count(*) FROM users") == 1


def test_cli_backlog_and_redeliver(
    database_url: str, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    user_id = make_user("sam")
    add_scenario(db, "Search", user_id)
    db.execute("UPDATE scenario_events SET occurred_at = now() - interval '10 minutes'")
    out = run_cli("backlog", "--max-age", "5m", database_url=database_url)
    assert out.returncode == 1
    backlog = json.loads(out.stdout)
    assert backlog["unprocessed_events"] == 1 and backlog["oldest_age_seconds"] >= 600
    assert "oldest unprocessed event is" in out.stderr and out.stderr.count("\n") == 1
    fan_out()
    ok = run_cli("backlog", "--max-age", "5m", database_url=database_url)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["unprocessed_events"] == 0

    event_id = one(db, "SELECT max(id) FROM scenario_events")
    again = run_cli("event", "redeliver", str(event_id), database_url=database_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"redelivered": event_id}
    assert one(db, "SELECT unprocessed_events FROM notification_backlog") == 1

    listeners = run_cli("listeners", database_url=database_url)
    assert listeners.returncode == 0 and json.loads(listeners.stdout) == []
