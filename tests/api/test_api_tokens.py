"""Tokens: sign-out revokes just the token used, expiry, and no plaintext on the server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask

from tests.api.conftest import Caller, error_of
from tests.conftest import wait_until


def _token(db: psycopg.Connection[Any], user_id: int, *valid_for: str) -> str:
    args = ", %s::interval" if valid_for else ""
    row = db.execute(f"SELECT issue_token(%s{args})", [user_id, *valid_for]).fetchone()
    assert row is not None
    return str(row[0])


def test_sign_out_revokes_only_the_token_used(
    db: psycopg.Connection[Any], alice: Caller, bob: Caller
) -> None:
    laptop = alice.token
    phone = _token(db, alice.id)
    assert alice.delete("/api/v1/tokens/current").status_code == 204
    error_of(alice.get("/api/v1/me"), 401)
    error_of(alice.delete("/api/v1/tokens/current"), 401)
    alice.token = phone
    assert alice.get("/api/v1/me").status_code == 200
    assert bob.get("/api/v1/me").status_code == 200
    revoked = db.execute(
        "SELECT count(*) FILTER (WHERE revoked_at IS NOT NULL), count(*) FROM api_tokens"
        " WHERE user_id = %s",
        [alice.id],
    ).fetchone()
    assert revoked == (1, 2), laptop


def test_an_expired_token_is_401(db: psycopg.Connection[Any], alice: Caller) -> None:
    alice.token = _token(db, alice.id, "1 hour")
    assert alice.get("/api/v1/me").status_code == 200
    db.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second'"
        " WHERE user_id = %s AND expires_at IS NOT NULL",
        [alice.id],
    )
    error_of(alice.get("/api/v1/me"), 401)


def test_issue_token_refuses_a_validity_that_is_not_positive(
    db: psycopg.Connection[Any], alice: Caller
) -> None:
    for bad in ("0", "-1 day"):
        try:
            _token(db, alice.id, bad)
        except psycopg.errors.InvalidParameterValue as exc:
            assert "valid_for must be a positive interval" in str(exc)
        else:
            raise AssertionError(f"issue_token accepted {bad!r}")


def _server_log(db: psycopg.Connection[Any], marker: str) -> str:
    """The server's log as the server reads it (pg_read_file: the suite's role is a
    superuser), found as the file that holds marker: the logging collector's current file,
    or the file pg_ctl -l writes, in or beside the data directory."""
    current = db.execute("SELECT pg_current_logfile()").fetchone()
    data = str(db.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
    candidates = [c for c in [current[0] if current else None] if c]
    candidates += [os.path.join(data, "log"), os.path.join(os.path.dirname(data), "log")]
    for path in candidates:
        # The four-argument form: PostgreSQL 15 lacks pg_read_file(text, boolean).
        row = db.execute("SELECT pg_read_file(%s::text, 0, 100000000, true)", [path]).fetchone()
        text = row[0] if row else None
        if text and marker in text:
            return str(text)
    return ""


def test_the_token_never_reaches_the_server_or_its_log(
    db: psycopg.Connection[Any],
    database_url: str,
    as_role: Callable[[str], str],
    make_app: Callable[..., Flask],
    make_user: Callable[..., int],
) -> None:
    """With every statement and its parameters logged, a request leaves no plaintext token."""
    dbname = str(db.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    db.execute(f"ALTER DATABASE \"{dbname}\" SET log_statement = 'all'")
    db.execute(f'ALTER DATABASE "{dbname}" SET log_min_duration_statement = 0')
    user = make_user("alice")
    token = _token(db, user)
    # The log is found, and shows bind parameters: a statement with the marker as one.
    marker = f"marker-{uuid.uuid4().hex}"
    with psycopg.connect(database_url, autocommit=True) as logged:
        logged.execute("SELECT %s::text", [marker])
    assert wait_until(lambda: _server_log(db, marker), timeout=10)

    client = make_app(as_role("notifications_api"), api_pool_size=1).test_client()
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    after = f"marker-{uuid.uuid4().hex}"
    with psycopg.connect(database_url, autocommit=True) as logged:
        logged.execute("SELECT %s::text", [after])
    log = wait_until(lambda: _server_log(db, after), timeout=10)
    assert "authenticate_token_v2" in log  # the request's statements are in it
    assert token not in log
    assert token[4:] not in log


def test_make_run_revokes_its_previous_demo_tokens(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    from notifications.bearer import token_hash
    from notifications.dev import seed

    def works(token: str) -> bool:
        row = db.execute("SELECT count(*) FROM authenticate_token_v2(%s)", [token_hash(token)])
        return row.fetchone() == (1,)

    first = seed(database_url)
    second = seed(database_url)
    assert first.keys() == second.keys() == {"alice", "bob"}
    for name in first:
        assert not works(first[name][1]), name
        assert works(second[name][1]), name
