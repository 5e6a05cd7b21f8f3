"""Least privilege (sql/v2/roles.sql): the contract's group roles, what each may and may not
do, and the SECURITY DEFINER functions that let every writer's events through."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.cli import start_cli
from tests.conftest import wait_until

GROUPS = ("notifications_api", "notifications_listener", "notifications_deliver")


def _denied(url: str, sql: str, *params: Any) -> str:
    """Run sql as the URL's role; it must fail for lack of rights. The error's text."""
    with (
        psycopg.connect(url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as refused,
    ):
        conn.execute(sql, params or None)
    return str(refused.value)


def test_group_roles_exist_and_cannot_log_in(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)", [list(GROUPS)]
    ).fetchall()
    assert sorted(rows) == [(g, False) for g in sorted(GROUPS)]


def test_migrating_again_on_a_server_that_has_the_roles(db: psycopg.Connection[Any]) -> None:
    """The file runs once per database of the server; the roles made by the first stay."""
    from notifications.sqlfiles import read_sql

    sql = read_sql("sql/v2/roles.sql")
    create_roles = sql[sql.index("DO $$") : sql.index("$$;") + 3]
    db.execute(create_roles)
    db.execute(create_roles)


def test_api_role_cannot(
    as_role: Callable[[str], str], db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    alice = make_user("alice")
    make_user("bob")
    db.execute("SELECT issue_token(%s)", [alice])
    db.execute("INSERT INTO test_scenarios (name, created_by) VALUES ('s', %s)", [alice])
    db.execute("SELECT * FROM fan_out_events_v2(100)")
    api = as_role("notifications_api")
    assert "api_tokens" in _denied(api, "SELECT token_hash FROM api_tokens")
    _denied(
        api,
        "INSERT INTO scenario_events (event_type, scenario_id, scenario_name)"
        " VALUES ('scenario.created', 1, 'forged')",
    )
    _denied(api, "UPDATE scenario_events SET processed_at = NULL")
    _denied(api, "UPDATE user_notifications SET user_id = 1")
    _denied(api, "INSERT INTO user_notifications (user_id, event_id) VALUES (1, 1)")
    _denied(api, "DELETE FROM user_notifications")
    _denied(api, "ALTER TABLE users ADD COLUMN x integer")
    _denied(api, "DROP TRIGGER scenario_events_insert ON test_scenarios")
    _denied(api, "ALTER TABLE test_scenarios DISABLE TRIGGER USER")
    _denied(api, "SELECT issue_token(%s)", alice)
    _denied(api, "SELECT issue_token(%s, '1 day')", alice)
    _denied(api, "SELECT create_user('mallory')")
    _denied(api, "SELECT delete_user(%s)", alice)
    _denied(api, "SELECT revoke_tokens(%s)", alice)
    _denied(api, "SELECT * FROM fan_out_events_v2(100)")
    _denied(api, "SELECT authenticate_token_v1('ntf_x')")
    _denied(api, "SELECT * FROM user_overview")
    # And what it may: read state, as the request's user.
    with psycopg.connect(api) as conn:
        conn.execute("SELECT set_config('notifications.user_id', %s, true)", [str(alice + 1)])
        assert conn.execute("UPDATE user_notifications SET read_at = now()").rowcount == 1


@pytest.mark.parametrize("group", ["notifications_listener", "notifications_deliver"])
def test_daemon_roles_cannot_read_token_hashes(
    group: str, as_role: Callable[[str], str], db: psycopg.Connection[Any]
) -> None:
    url = as_role(group)
    _denied(url, "SELECT token_hash FROM api_tokens")
    _denied(url, "SELECT * FROM authenticate_token_v2(sha256('x'))")
    _denied(url, "SELECT issue_token(1)")
    _denied(url, "ALTER TABLE scenario_events ADD COLUMN x integer")


def test_temp_table_cannot_swallow_a_writers_events(
    as_role: Callable[[str], str], db: psycopg.Connection[Any]
) -> None:
    """A session's temporary table named scenario_events comes first in its search_path;
    the triggers' own search_path puts pg_temp last."""
    with psycopg.connect(as_role("notifications_api"), autocommit=True) as conn:
        conn.execute(
            "CREATE TEMP TABLE scenario_events (LIKE public.scenario_events INCLUDING ALL)"
        )
        conn.execute("INSERT INTO test_scenarios (name) VALUES ('mine')")
        assert conn.execute("SELECT count(*) FROM pg_temp.scenario_events").fetchone() == (0,)
    assert db.execute("SELECT scenario_name FROM scenario_events").fetchall() == [("mine",)]


def test_triggers_and_fan_out_are_security_definer_with_a_fixed_search_path(
    db: psycopg.Connection[Any],
) -> None:
    rows = db.execute(
        "SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p"
        " JOIN pg_trigger t ON t.tgfoid = p.oid"
        " WHERE t.tgrelid = 'test_scenarios'::regclass AND NOT t.tgisinternal"
        " UNION SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p"
        " WHERE p.proname IN ('fan_out_events_v2', 'authenticate_token_v2')"
    ).fetchall()
    assert len(rows) >= 4
    for name, definer, config in rows:
        assert definer, name
        assert config == ["search_path=public, pg_temp"], name


def test_api_and_listener_as_their_roles_deliver(
    client: FlaskClient,
    as_role: Callable[[str], str],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
) -> None:
    """A scenario created through the API (running as notifications_api) reaches another
    user's feed through `notifications listen` running as notifications_listener."""
    alice, bob = make_user("alice"), make_user("bob")
    tokens = {
        u: db.execute("SELECT issue_token(%s)", [u]).fetchone()[0]  # type: ignore[index]
        for u in (alice, bob)
    }
    listener = start_cli(
        "listen",
        database_url=as_role("notifications_listener"),
        env={"POLL_INTERVAL": "0.5"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        created = client.post(
            "/api/v1/scenarios",
            json={"name": "Checkout"},
            headers={"Authorization": f"Bearer {tokens[alice]}"},
        )
        assert created.status_code == 201, created.get_json()

        def bobs_feed() -> list[Any]:
            page = client.get(
                "/api/v1/notifications", headers={"Authorization": f"Bearer {tokens[bob]}"}
            )
            assert page.status_code == 200, page.get_json()
            return list(page.get_json()["items"])

        (item,) = wait_until(bobs_feed, timeout=15)
        assert item["message"] == "alice created scenario 'Checkout'"
        listener.send_signal(signal.SIGTERM)
        _, stderr = listener.communicate(timeout=10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    assert listener.returncode == 0, stderr
    assert "Traceback" not in stderr
