"""`notifications serve` itself (uvicorn, API_WORKERS processes, each with its own LISTEN):
streams spread over the workers all get their notifications, the JSON API answers beside
them, and SIGTERM ends the streams and exits 0."""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.cli import start_cli
from tests.conftest import wait_until
from tests.stream.conftest import StreamClient, create_scenarios, token

Conn = psycopg.Connection[Any]


def test_serve_with_two_workers(
    as_role: Callable[[str], str],
    db: Conn,
    make_user: Callable[..., int],
    start_listener: Any,
    tmp_path: Any,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115  (the process writes it)
    proc = start_cli(
        "serve",
        "--port",
        str(port),
        database_url=as_role("notifications_api"),
        env={"API_WORKERS": "2", "STREAM_POLL_INTERVAL": "0.5"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    streams: list[StreamClient] = []
    try:

        def ready() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, interval=0.1)
        alice = make_user("alice")
        users = [make_user(f"u{i}") for i in range(8)]
        start_listener()
        streams = [StreamClient(url, token(db, u)).start() for u in users]
        for s in streams:
            assert s.next("unread").data == {"unread": 0}
        # Both workers hold a LISTEN session of their own.
        listening = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'notifications-stream-listen' AND query ILIKE 'LISTEN%%'"
        ).fetchone()
        assert listening is not None and listening[0] == 2
        create_scenarios(db, alice, ["Checkout"])
        for s in streams:
            assert s.next("notification").data["scenario"]["name"] == "Checkout"
        # Whichever worker a scrape reaches, it counts every worker's streams and LISTENs.
        for _ in range(6):
            text = httpx.get(url + "/metrics", timeout=10).text
            assert "notifications_stream_open 8.0" in text.splitlines(), text
            assert "notifications_stream_listening 2.0" in text.splitlines()
        me = httpx.get(
            url + "/api/v1/me", headers={"Authorization": f"Bearer {streams[0].token}"}, timeout=10
        )
        assert me.status_code == 200 and me.json()["id"] == users[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for s in streams:
            while (event := s.events.get(timeout=10)) is not None:
                assert not isinstance(event, Exception), event
    finally:
        for s in streams:
            s.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text, text


def test_serve_lifts_its_open_files_limit(as_role: Callable[[str], str]) -> None:
    """Each stream is a socket: serve raises its soft limit on open files to the hard one,
    even when started under a low one (the usual default is 1,024)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_cli(
        "serve",
        "--port",
        str(port),
        database_url=as_role("notifications_api"),
        env={"API_WORKERS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)),
    )

    def soft_limit() -> int | None:
        for line in Path(f"/proc/{proc.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        return None

    try:
        lifted = wait_until(lambda: (soft_limit() or 0) > low and soft_limit(), timeout=30)
        assert lifted == hard or hard == resource.RLIM_INFINITY
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
