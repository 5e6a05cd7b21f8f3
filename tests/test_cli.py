"""The `notifications` console script, run as an operator would."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from notifications import migrate
from tests.cli import run_cli


def test_migrate_brings_an_empty_database_to_head(empty_database_url: str) -> None:
    result = run_cli("migrate", database_url=empty_database_url)
    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()
    # Running it again is harmless.
    assert run_cli("migrate", database_url=empty_database_url).returncode == 0


def test_user_create_and_token_issue(database_url: str, db: psycopg.Connection[Any]) -> None:
    result = run_cli("user", "create", "alice", database_url=database_url)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["name"] == "alice"
    assert db.execute("SELECT authenticate_token_v1(%s)", [created["token"]]).fetchone() == (
        created["id"],
    )

    issued = run_cli("token", "issue", str(created["id"]), database_url=database_url)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("ntf_") and token != created["token"]
    assert db.execute("SELECT authenticate_token_v1(%s)", [token]).fetchone() == (created["id"],)
    # Only hashes are stored.
    stored = db.execute(
        "SELECT count(*) FROM api_tokens WHERE token_hash = convert_to(%s, 'UTF8')", [token]
    ).fetchone()
    assert stored == (0,)


def test_token_issue_with_an_expiry(database_url: str, db: psycopg.Connection[Any]) -> None:
    created = json.loads(run_cli("user", "create", "carol", database_url=database_url).stdout)
    issued = run_cli(
        "token", "issue", str(created["id"]), "--valid-for", "2h", database_url=database_url
    )
    assert issued.returncode == 0, issued.stderr
    expires = db.execute(
        "SELECT expires_at - created_at FROM api_tokens"
        " WHERE token_hash = sha256(convert_to(%s, 'UTF8'))",
        [issued.stdout.strip()],
    ).fetchone()
    assert expires is not None and expires[0].total_seconds() == 7200
    bad = run_cli(
        "token", "issue", str(created["id"]), "--valid-for", "soon", database_url=database_url
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_duplicate_user_is_a_one_line_error(database_url: str) -> None:
    assert run_cli("user", "create", "bob", database_url=database_url).returncode == 0
    result = run_cli("user", "create", "bob", database_url=database_url)
    assert result.returncode == 1
    assert result.stderr.strip() == "notifications: error: user 'bob' already exists"


def test_missing_database_url_is_a_one_line_error() -> None:
    result = run_cli("migrate", database_url=None)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "DATABASE_URL is not set" in result.stderr


def test_one_duration_parser_serves_intervals_and_seconds() -> None:
    from notifications.cli import _duration

    assert (_duration("30d").interval, _duration("30d").seconds) == ("30 days", 2592000.0)
    assert (_duration(" 15m").interval, _duration("15m ").seconds) == ("15 minutes", 900.0)
    assert (_duration("2w").interval, _duration("2 w").seconds) == ("2 weeks", 1209600.0)
