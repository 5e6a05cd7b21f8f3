from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from notifications import migrate
from notifications.api import create_app, database
from notifications.config import Settings
from tests.pg import server_url, with_dbname

_counter = itertools.count()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The server's maintenance database."""
    with server_url() as url:
        yield url


@pytest.fixture(scope="session")
def template_name(pg_url: str) -> Iterator[str]:
    """A migrated template; every test gets a fresh copy of it."""
    name = f"notif_template_{os.getpid()}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(with_dbname(pg_url, name))
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(pg_url: str, template: str | None) -> str:
    name = f"notif_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(pg_url: str, name: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_user(url: str, user: str, password: str) -> str:
    """The same server and database, logged in as another role."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password)}@{host}"))


@pytest.fixture(scope="session")
def login_role(pg_url: str, template_name: str) -> Iterator[Callable[[str], str]]:
    """login_role("notifications_api"): a LOGIN role of this session granted that group role
    (the migrations made the group roles), as a daemon runs in production. Its name, for
    with_user; the password is ROLE_PASSWORD."""
    made: dict[str, str] = {}

    def make(group: str) -> str:
        if group not in made:
            name = f"{group}_login_{os.getpid()}"
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'DROP ROLE IF EXISTS "{name}"')
                conn.execute(
                    f'CREATE ROLE "{name}" LOGIN PASSWORD \'{ROLE_PASSWORD}\' IN ROLE "{group}"'
                )
            made[group] = name
        return made[group]

    yield make
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in made.values():
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')


ROLE_PASSWORD = secrets.token_hex(16)


@pytest.fixture
def as_role(database_url: str, login_role: Callable[[str], str]) -> Callable[[str], str]:
    """as_role("notifications_api"): the test database's URL for a login role of that group."""

    def url(group: str) -> str:
        return with_user(database_url, login_role(group), ROLE_PASSWORD)

    return url


@pytest.fixture
def database_url(pg_url: str, template_name: str) -> Iterator[str]:
    name = create_database(pg_url, template_name)
    yield with_dbname(pg_url, name)
    drop_database(pg_url, name)


@pytest.fixture
def empty_database_url(pg_url: str) -> Iterator[str]:
    name = create_database(pg_url, None)
    yield with_dbname(pg_url, name)
    drop_database(pg_url, name)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_user(db: psycopg.Connection[Any]) -> Callable[..., int]:
    def make(name: str, **subscriptions: bool) -> int:
        row = db.execute("SELECT create_user(%s)", [name]).fetchone()
        assert row is not None
        for event_type, enabled in subscriptions.items():
            db.execute(
                "SELECT set_subscription(%s, %s, %s)",
                [row[0], "scenario." + event_type, enabled],
            )
        return int(row[0])

    return make


@pytest.fixture
def fan_out(db: psycopg.Connection[Any]) -> Callable[[], int]:
    """Run the fan-out as the listener does, until the backlog is empty."""

    def run() -> int:
        total = 0
        while rows := db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall():
            total += len(rows)
        return total

    return run


@pytest.fixture
def start_listener(database_url: str) -> Iterator[Callable[..., Any]]:
    """Start in-process listeners on the test database; all stop at teardown."""
    from notifications.listener.worker import Listener

    started: list[tuple[Listener, threading.Thread]] = []

    def start(**kwargs: Any) -> Listener:
        kwargs.setdefault("poll_interval", 0.5)
        listener = Listener(database_url, **kwargs)
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        assert listener.ready.wait(10), "listener did not become ready"
        started.append((listener, thread))
        return listener

    yield start
    for listener, thread in started:
        listener.stop()
        thread.join(10)


def build_app(database_url: str, **settings: Any) -> Flask:
    """The one way tests build the API: create_app on a URL, with Settings fields as
    overrides and nothing from the caller's environment. Close it with database.close."""
    base = Settings.from_env({"DATABASE_URL": database_url})
    return create_app(base.model_copy(update=settings), TESTING=True)


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """build_app, with every pool closed at teardown."""
    made: list[Flask] = []

    def make(database_url: str, **settings: Any) -> Flask:
        made.append(build_app(database_url, **settings))
        return made[-1]

    yield make
    for app in made:
        database.close(app)


@pytest.fixture
def app(make_app: Callable[..., Flask], as_role: Callable[[str], str]) -> Flask:
    """The API as it runs in production: as a login role granted notifications_api, so that
    every route proves its grants (sql/v2/roles.sql) suffice."""
    return make_app(as_role("notifications_api"), api_pool_size=2)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
