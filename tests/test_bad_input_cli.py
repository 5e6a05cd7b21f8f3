"""Operator mistakes on the command line and in the environment.

Each must end with a non-zero exit status, exactly one line on stderr, no traceback,
nothing on stdout, and nothing written to the database.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.cli import run_cli
from tests.conftest import create_database, drop_database
from tests.pg import with_dbname

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"
MALFORMED = (
    "postgresql://[bad",
    "http://example.com/db",
    "postgresql://127.0.0.1:1/db?sslmode=sometimes",
)
UNKNOWN_USER = "424242"
TABLES = (
    "users",
    "api_tokens",
    "subscriptions",
    "test_scenarios",
    "scenario_events",
    "user_notifications",
)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    shown = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, shown
    assert "Traceback" not in result.stderr, shown
    assert len(result.stderr.splitlines()) == 1, shown
    assert result.stderr.startswith("notifications") and "error" in result.stderr, shown
    assert result.stdout == "", shown


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for table in TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        state[table] = row[0] if row else None
    state["revoked"] = conn.execute(
        "SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL"
    ).fetchone()
    state["subscriptions"] = conn.execute(
        "SELECT user_id, event_type, enabled FROM subscriptions ORDER BY 1, 2"
    ).fetchall()
    return state


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.fixture(scope="module")
def shared_url(pg_url: str, template_name: str) -> Iterator[str]:
    """One database for the module: every test here checks that it changes nothing."""
    name = create_database(pg_url, template_name)
    yield with_dbname(pg_url, name)
    drop_database(pg_url, name)


@pytest.fixture(scope="module")
def alice(shared_url: str) -> int:
    with psycopg.connect(shared_url, autocommit=True) as conn:
        row = conn.execute("SELECT create_user('alice')").fetchone()
        assert row is not None
        conn.execute("SELECT issue_token(%s)", [row[0]])
    return int(row[0])


@pytest.fixture
def shared(shared_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(shared_url, autocommit=True) as conn:
        yield conn


BAD_ARGUMENTS = [
    ["token", "issue", "abc"],
    ["token", "issue", "0"],
    ["token", "issue", "1.5"],
    ["token", "issue", UNKNOWN_USER],
    ["token", "issue", "99999999999999999999999"],
    ["token", "issue"],
    ["token", "revoke", UNKNOWN_USER],
    ["user", "create", "bad name!"],
    ["user", "create", ""],
    ["user", "create", "x" * 65],
    ["user", "create", "--", "-dash-first"],
    ["user", "create", "ünïcödé"],
    ["user", "create", "alice"],  # exists already
    ["user", "create"],
    ["user"],
    ["subscription", "set", UNKNOWN_USER, "scenario.created", "off"],
    ["subscription", "set", "{alice}", "scenario.nothing", "off"],
    ["subscription", "set", "{alice}", "scenario.created", "maybe"],
    ["purge", "--older-than", "5x"],
    ["purge", "--older-than", "-1d"],
    ["serve", "--port", "70000"],
    ["dev", "--port", "0"],
    ["bogus"],
    [],
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=lambda a: " ".join(a) or "(nothing)")
def test_bad_arguments(
    args: list[str], shared_url: str, shared: psycopg.Connection[Any], alice: int
) -> None:
    before = snapshot(shared)
    result = run_cli(*[a.format(alice=alice) for a in args], DATABASE_URL=shared_url)
    assert_one_line_error(result)
    assert snapshot(shared) == before


WITH_DATABASE = [
    ["user", "create", "carol"],
    ["token", "issue", "1"],
    ["token", "revoke", "1"],
    ["subscription", "set", "1", "scenario.created", "off"],
    ["purge", "--older-than", "30d"],
    ["migrate"],
    ["listen"],
]


@pytest.mark.parametrize("args", WITH_DATABASE, ids=" ".join)
def test_unreachable_database(args: list[str]) -> None:
    assert_one_line_error(run_cli(*args, DATABASE_URL=UNREACHABLE))


@pytest.mark.parametrize("args", WITH_DATABASE, ids=" ".join)
def test_malformed_database_url(args: list[str]) -> None:
    assert_one_line_error(run_cli(*args, DATABASE_URL=MALFORMED[0]))


@pytest.mark.parametrize("url", MALFORMED[1:])
def test_other_malformed_database_urls(url: str) -> None:
    assert_one_line_error(run_cli(*["user", "create", "carol"], DATABASE_URL=url))


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_malformed_database_url_when_serving(command: str) -> None:
    # It must fail before it binds the port or starts anything.
    args = [command, "--port", free_port()]
    assert_one_line_error(run_cli(*args, DATABASE_URL=MALFORMED[0]))


@pytest.mark.parametrize("args", [*WITH_DATABASE, ["serve", "--port", "{port}"]], ids=" ".join)
def test_missing_database_url(args: list[str]) -> None:
    port = free_port()
    assert_one_line_error(run_cli(*[a.format(port=port) for a in args]))


@pytest.mark.parametrize(
    "env",
    [
        {"POLL_INTERVAL": "abc"},
        {"POLL_INTERVAL": "0"},
        {"BATCH_SIZE": "-1"},
        {"BATCH_SIZE": "ten"},
        {"LOG_FORMAT": "xml"},
        {"LOG_LEVEL": "LOUD"},
        {"LISTENER_METRICS_PORT": "abc"},
        {"MAX_BODY_BYTES": "lots"},
    ],
    ids=lambda e: "=".join(next(iter(e.items()))),
)
def test_bad_settings(
    env: dict[str, str], shared_url: str, shared: psycopg.Connection[Any]
) -> None:
    before = snapshot(shared)
    # Every command reads every setting: a bad one stops even a command that ignores it.
    assert_one_line_error(run_cli(*["user", "create", "carol"], DATABASE_URL=shared_url, **env))
    assert snapshot(shared) == before


@pytest.mark.parametrize("env", [{"POLL_INTERVAL": "-1"}, {"BATCH_SIZE": "0"}], ids=str)
def test_bad_listener_settings(env: dict[str, str], shared_url: str) -> None:
    assert_one_line_error(run_cli(*["listen"], DATABASE_URL=shared_url, **env))


@pytest.mark.parametrize(
    "args", [["user", "create", "carol"], ["token", "issue", "1"], ["listen"]], ids=" ".join
)
def test_database_that_is_not_migrated(args: list[str], empty_database_url: str) -> None:
    assert_one_line_error(run_cli(*args, DATABASE_URL=empty_database_url))
    with psycopg.connect(empty_database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)


# Bytes that are not UTF-8, as a shell passes them ($'caf\xe9'); Python holds them as lone
# surrogates and subprocess sends the original bytes.
NOT_UTF8 = [
    ["user", "create", os.fsdecode(b"caf\xe9")],
    ["subscription", "set", "{alice}", os.fsdecode(b"\xff"), "on"],
    ["subscription", "set", "{alice}", "scenario.created", os.fsdecode(b"o\xffn")],
    ["serve", "--host", os.fsdecode(b"\xfe"), "--port", "{port}"],
]


@pytest.mark.parametrize("args", NOT_UTF8, ids=lambda a: ascii(" ".join(a)))
def test_arguments_that_are_not_utf8(
    args: list[str], shared_url: str, shared: psycopg.Connection[Any], alice: int
) -> None:
    before = snapshot(shared)
    port = free_port()
    result = run_cli(*[a.format(alice=alice, port=port) for a in args], DATABASE_URL=shared_url)
    assert_one_line_error(result)
    assert "argument is not valid UTF-8" in result.stderr
    assert snapshot(shared) == before


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_serve_on_a_port_in_use(shared_url: str, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(*[command, "--port", str(port)], DATABASE_URL=shared_url)
    assert_one_line_error(result)
    assert result.returncode == 1
    assert result.stderr == (
        f"notifications: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_serve_on_an_unknown_host(shared_url: str) -> None:
    result = run_cli(
        *["serve", "--host", "no-such-host.invalid", "--port", free_port()], DATABASE_URL=shared_url
    )
    assert_one_line_error(result)
    assert "cannot listen on no-such-host.invalid:" in result.stderr
