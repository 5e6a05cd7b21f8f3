"""Through a real PgBouncer in transaction mode (issue 11, item 6): the listener refuses it
in one line, the API works through it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from flask import Flask
from psycopg.conninfo import conninfo_to_dict

from notifications.listener.worker import Listener
from tests.cli import run_cli

PGBOUNCER = "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_address(pg_url: str) -> tuple[str, int, str, str]:
    """(host or socket directory, port, user, password) of the test server."""
    params = conninfo_to_dict(pg_url)
    host = str(params.get("host") or "/tmp")
    port = int(params.get("port") or 5432)
    if host.startswith("/") and "port" not in params:
        sockets = sorted(Path(host).glob(".s.PGSQL.*"))
        sockets = [p for p in sockets if not p.name.endswith(".lock")]
        if sockets:
            port = int(sockets[0].name.rsplit(".", 1)[1])
    return host, port, str(params.get("user") or "postgres"), str(params.get("password") or "")


@pytest.fixture(scope="module")
def pgbouncer(pg_url: str) -> Iterator[Callable[[str], str]]:
    """A PgBouncer in transaction mode in front of the test server; gives the URL of a
    database through it."""
    host, port, user, password = _server_address(pg_url)
    directory = Path(tempfile.mkdtemp(prefix="pgb-"))
    listen_port = _free_port()
    server = f"host={host} port={port} user={user}" + (f" password={password}" if password else "")
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = {server}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen_port}\n"
        f"unix_socket_dir = {directory}\n"
        "auth_type = any\n"
        "pool_mode = transaction\n"
        "default_pool_size = 2\n"
        "max_client_conn = 100\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {directory}/pgbouncer.log\n"
        f"pidfile = {directory}/pgbouncer.pid\n"
    )
    command = [PGBOUNCER, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root: run it as the owner of the server's socket
        # directory (who can reach the socket), else as nobody over TCP.
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
        shutil.chown(directory, owner)
        for path in directory.iterdir():
            shutil.chown(path, owner)
        command[1:1] = ["-u", owner]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def through(database_url: str) -> str:
        name = urlsplit(database_url).path.lstrip("/")
        return f"postgresql://{user}@127.0.0.1:{listen_port}/{name}"

    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with psycopg.connect(through(pg_url), autocommit=True) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = directory / "pgbouncer.log"
                    output = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(
                        f"pgbouncer did not start: {output} "
                        f"{log.read_text() if log.exists() else ''}"
                    ) from None
                time.sleep(0.1)
        yield through
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_pgbouncer_is_in_transaction_mode(
    pgbouncer: Callable[[str], str], database_url: str
) -> None:
    # The premise of the tests below: the client is told a pid that is not the server's.
    with psycopg.connect(pgbouncer(database_url), autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None and row[0] != conn.info.backend_pid


def test_listen_through_a_transaction_pool_fails_in_one_line(
    pgbouncer: Callable[[str], str], database_url: str
) -> None:
    result = run_cli("listen", database_url=pgbouncer(database_url), timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("notifications: error: ")
    assert "LISTEN needs a direct session connection" in lines[0]


def test_listen_directly_still_starts(database_url: str) -> None:
    # The same server without the pooler: the check lets a real session through.
    listener = Listener(database_url, poll_interval=0.2)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        assert listener.ready.wait(15)
    finally:
        listener.stop()
        thread.join(10)


def test_api_works_through_a_transaction_pool(
    pgbouncer: Callable[[str], str],
    database_url: str,
    db: psycopg.Connection[Any],
    make_app: Callable[..., Flask],
) -> None:
    row = db.execute("SELECT create_user('alice')").fetchone()
    assert row is not None
    alice = int(row[0])
    token_row = db.execute("SELECT issue_token(%s)", [alice]).fetchone()
    assert token_row is not None
    headers = {"Authorization": f"Bearer {token_row[0]}"}
    app = make_app(pgbouncer(database_url), api_pool_size=4)
    client = app.test_client()
    # Four request threads over four pooled client connections, and a pooler with two server
    # connections: each transaction lands on whichever server connection is free, so a
    # statement prepared on one (psycopg prepares what a connection runs often) would be
    # missing on the next.
    answers: list[tuple[int, Any]] = []

    def requests() -> None:
        own = app.test_client()
        for _ in range(25):
            for path in ("/api/v1/me", "/api/v1/notifications/unread-count"):
                got = own.get(path, headers=headers)
                answers.append((got.status_code, got.get_json()))

    threads = [threading.Thread(target=requests) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 200
    assert [a for a in answers if a[0] != 200] == []
    assert {a[1].get("id") for a in answers if "id" in a[1]} == {alice}
    created = client.post("/api/v1/scenarios", json={"name": "pooled"}, headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    event = db.execute(
        "SELECT event_type, actor_id FROM scenario_events WHERE scenario_name = 'pooled'"
    ).fetchone()
    assert event == ("scenario.created", alice)


def test_streams_through_a_transaction_pool(
    pgbouncer: Callable[[str], str],
    database_url: str,
    db: psycopg.Connection[Any],
    fan_out: Callable[[], int],
) -> None:
    """Through the pooler the stream still works, by polling (its LISTEN would hear
    nothing, and the hub says so once instead of reconnecting for ever); with
    STREAM_LISTEN_URL pointing past the pooler, by push again."""
    from prometheus_client import REGISTRY

    from tests.live import start_server
    from tests.stream.conftest import StreamClient, create_scenarios, token

    alice = int(db.execute("SELECT create_user('alice')").fetchone()[0])  # type: ignore[index]
    bob = int(db.execute("SELECT create_user('bob')").fetchone()[0])  # type: ignore[index]
    bob_token = token(db, bob)

    def hint_rounds() -> float:
        return (
            REGISTRY.get_sample_value("notifications_stream_rounds_total", {"cause": "hint"}) or 0
        )

    for listen_url, pushed in ((None, False), (database_url, True)):
        server = start_server(pgbouncer(database_url), stream_listen_url=listen_url)
        stream = StreamClient(server.url, bob_token).start()
        try:
            stream.next("unread")
            hub = server.app.state.hub
            assert hub.pooled is not pushed
            hints = hint_rounds()
            create_scenarios(db, alice, [f"pushed={pushed}"])
            fan_out()
            got = stream.next("notification")
            assert got.data["scenario"]["name"] == f"pushed={pushed}"
            assert (hint_rounds() > hints) is pushed
        finally:
            stream.stop()
            server.stop()
