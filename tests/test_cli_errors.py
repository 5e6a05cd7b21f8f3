"""The command line's v2 user options, and operator mistakes that used to print a traceback:
each is one line on stderr and a non-zero exit (issue 11, item 14)."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import make_url

from notifications.db import sqlalchemy_url
from tests.cli import run_cli

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|DEBUG) ")


def one_line_error(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    # Log lines (alembic's INFO) may come first; the error itself is one line.
    lines = [line for line in result.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("notifications: error: "), lines[0]
    return str(lines[0])


# -- user create --email --admin ----------------------------------------------------------------


def test_user_create_with_email_and_admin(database_url: str, db: psycopg.Connection[Any]) -> None:
    result = run_cli(
        "user", "create", "carol", "--email", "carol@example.com", "--admin",
        database_url=database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["name"] == "carol" and created["token"]
    row = db.execute("SELECT email, is_admin FROM users WHERE id = %s", [created["id"]]).fetchone()
    assert row == ("carol@example.com", True)

    plain = json.loads(run_cli("user", "create", "dave", database_url=database_url).stdout)
    row = db.execute("SELECT email, is_admin FROM users WHERE id = %s", [plain["id"]]).fetchone()
    assert row == (None, False)


def test_user_create_refuses_a_malformed_email(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    for bad in ["no-at-sign", "a@b@c", "a b@example.com", "a@-example.com", "x" * 250 + "@e.com"]:
        line = one_line_error(
            run_cli("user", "create", "erin", "--email", bad, database_url=database_url)
        )
        assert "invalid e-mail address" in line
    assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_create_user_from_psql_keeps_its_v1_call(db: psycopg.Connection[Any]) -> None:
    (uid,) = db.execute("SELECT create_user('x')").fetchone() or (None,)
    assert db.execute("SELECT email, is_admin FROM users WHERE id = %s", [uid]).fetchone() == (
        None,
        False,
    )
    (admin,) = db.execute(
        "SELECT create_user('y', 'y@example.org', is_admin => true)"
    ).fetchone() or (None,)
    assert db.execute("SELECT is_admin FROM users WHERE id = %s", [admin]).fetchone() == (True,)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid e-mail address"):
        db.execute("SELECT create_user('z', 'not an address')")
    # The table refuses one too, whoever writes it.
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE users SET email = 'nope' WHERE id = %s", [uid])


# -- migrate: a role without CREATE, a database at an unknown revision --------------------------


def test_migrate_as_a_role_without_create(
    pg_url: str, empty_database_url: str, db: psycopg.Connection[Any]
) -> None:
    dbname = conninfo_to_dict(empty_database_url)["dbname"]
    role = f"no_create_{dbname}"
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        url = make_conninfo(empty_database_url, user=role)
        line = one_line_error(run_cli("migrate", database_url=url))
        assert "permission denied" in line
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_migrate_a_database_at_an_unknown_revision(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    line = one_line_error(run_cli("migrate", database_url=database_url))
    assert "9999_from_the_future" in line
    assert "unknown" in line or "newer" in line


# -- key=value DATABASE_URL values that need quoting --------------------------------------------

AWKWARD = "a b&c=d#e%41'\"\\ f"


def _key_value(url: str, **extra: str) -> str:
    """The URL as a libpq key=value string, values quoted by libpq's own rules."""
    return make_conninfo("", **{**conninfo_to_dict(url), **extra})


def test_key_value_url_with_quoted_values_reaches_the_server_intact(database_url: str) -> None:
    url = _key_value(database_url, password=AWKWARD)
    assert "'" in url  # quoted, as an operator writes it
    # What migrations (SQLAlchemy) get is the same password, not a mangled one.
    assert make_url(sqlalchemy_url(url)).query["password"] == AWKWARD
    result = run_cli("migrate", database_url=url)
    assert result.returncode == 0, result.stderr
    result = run_cli("user", "create", "quoted", database_url=url)
    assert result.returncode == 0, result.stderr


def test_malformed_key_value_url_is_one_line(database_url: str) -> None:
    good = _key_value(database_url)
    for bad in [good + " password='a b", good + " password", good + " =x"]:
        for command in (["migrate"], ["user", "create", "x"], ["backlog"]):
            line = one_line_error(run_cli(*command, database_url=bad))
            assert "DATABASE_URL" in line, line
