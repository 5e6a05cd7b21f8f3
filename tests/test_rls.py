"""Row-level security on the personal tables (sql/v2/roles.sql): the API's role sees only
the rows of the user its transaction is for (notifications.user_id), none without one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

PERSONAL = ("user_notifications", "subscriptions", "api_tokens")


@pytest.fixture
def two_users(db: psycopg.Connection[Any], make_user: Callable[..., int]) -> tuple[int, int]:
    alice, bob = make_user("alice", created=False), make_user("bob", executed=False)
    for user in (alice, bob):
        db.execute("SELECT issue_token(%s)", [user])
    carol = make_user("carol")
    db.execute("INSERT INTO test_scenarios (name, created_by) VALUES ('s', %s)", [carol])
    with db.transaction():
        db.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(carol)])
        db.execute("UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'")
    db.execute("SELECT * FROM fan_out_events_v2(100)")
    return alice, bob


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
        for t in (*PERSONAL, "notification_feed")
    }


def test_api_role_without_a_user_sees_no_personal_rows(
    two_users: tuple[int, int], as_role: Callable[[str], str], db: psycopg.Connection[Any]
) -> None:
    assert _counts(db) == {
        "user_notifications": 2,
        "subscriptions": 2,
        "api_tokens": 2,
        "notification_feed": 2,
    }
    with psycopg.connect(as_role("notifications_api"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM user_notifications").fetchone() == (0,)
        assert _counts(conn) == dict.fromkeys((*PERSONAL, "notification_feed"), 0)


def test_api_role_sees_only_the_request_users_rows(
    two_users: tuple[int, int], as_role: Callable[[str], str]
) -> None:
    alice, bob = two_users
    with psycopg.connect(as_role("notifications_api")) as conn:
        conn.execute("SELECT set_config('notifications.user_id', %s, true)", [str(alice)])
        assert _counts(conn) == dict.fromkeys((*PERSONAL, "notification_feed"), 1)
        assert conn.execute("SELECT DISTINCT user_id FROM notification_feed").fetchall() == [
            (alice,)
        ]
        # Through the view too: bob's own choice is invisible, so he shows the default.
        assert conn.execute(
            "SELECT user_id, source FROM user_subscriptions"
            " WHERE event_type = 'scenario.executed' AND user_id IN (%s, %s) ORDER BY user_id",
            [alice, bob],
        ).fetchall() == [(alice, "default"), (bob, "default")]
        # Writing another user's row is refused, not silently applied.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT set_subscription(%s, 'scenario.created', true)", [bob])
        conn.rollback()
        # Transaction-local: the next transaction of a pooled connection sees nothing.
        assert conn.execute("SELECT count(*) FROM user_notifications").fetchone() == (0,)


def test_owner_is_not_subject_and_nothing_is_forced(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
        " WHERE relname = ANY(%s) ORDER BY relname",
        [list(PERSONAL)],
    ).fetchall()
    assert rows == [(t, True, False) for t in sorted(PERSONAL)]
    views = db.execute(
        "SELECT relname, reloptions FROM pg_class"
        " WHERE relname IN ('notification_feed', 'user_subscriptions') ORDER BY relname"
    ).fetchall()
    assert views == [
        ("notification_feed", ["security_invoker=true"]),
        ("user_subscriptions", ["security_invoker=true"]),
    ]
