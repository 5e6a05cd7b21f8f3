"""The systemd notify protocol, spoken to a real datagram socket as systemd would hold it."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from notifications.sdnotify import SdNotifier, watchdog_interval
from tests.cli import start_cli

Conn = psycopg.Connection[Any]


class NotifySocket:
    """The receiving end of NOTIFY_SOCKET: (monotonic time, wall time, message) per datagram."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[tuple[float, float, str]] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        message = data.decode()
        self.messages.append((time.monotonic(), time.time(), message))
        return message

    def wait_for(self, prefix: str, timeout: float) -> tuple[float, float, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and message.startswith(prefix):
                return self.messages[-1]
        raise AssertionError(f"no {prefix} within {timeout}s; got {self.messages}")


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # A short directory: AF_UNIX paths are limited to 108 bytes.
    directory = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(directory, "notify.sock")
    receiver = NotifySocket(path)
    yield receiver
    receiver.sock.close()
    os.unlink(path)
    os.rmdir(directory)


def listen_process(database_url: str, **env: str) -> subprocess.Popen[str]:
    return start_cli(
        "listen",
        database_url=database_url,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_listener_under_systemd_protocol(
    database_url: str,
    db: Conn,
    make_user: Callable[..., int],
    notify_socket: NotifySocket,
) -> None:
    alice = make_user("alice")
    bob = make_user("bob")
    # Committed before the listener exists: READY=1 must wait until these are fanned out.
    db.execute(
        "INSERT INTO test_scenarios (name, created_by) SELECT 'S' || g, %s FROM generate_series(1, 250) g",
        [alice],
    )
    proc = listen_process(
        database_url,
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="1000000",
        # Far longer than WatchdogSec: only the cap on each wait keeps the pings coming.
        POLL_INTERVAL="60",
        BATCH_SIZE="100",
    )
    try:
        _, ready_wall, ready = notify_socket.wait_for("READY=1", timeout=20)
        assert "STATUS=listening" in ready
        # Every event committed before the start was fanned out before READY=1 was sent.
        row = db.execute(
            "SELECT count(*), max(extract(epoch FROM processed_at))"
            " FROM scenario_events WHERE processed_at IS NOT NULL"
        ).fetchone()
        assert row is not None
        assert row[0] == 250 and row[1] <= ready_wall
        assert db.execute(
            "SELECT count(*) FROM user_notifications WHERE user_id = %s", [bob]
        ).fetchone() == (250,)
        # And the LISTEN session had already subscribed (its last statement is a LISTEN).
        listen_query = db.execute(
            "SELECT a.query FROM pg_stat_activity a JOIN listener_activity l ON l.pid = a.pid"
            " WHERE l.connection = 'listen' AND l.listener_pid = %s",
            [proc.pid],
        ).fetchone()
        assert listen_query is not None and listen_query[0].startswith("LISTEN ")

        # Pings while idle, at least twice per WatchdogSec (1 s), for 2.5 s.
        start = time.monotonic()
        pings = [start]
        while time.monotonic() - start < 2.5:
            message = notify_socket.receive(timeout=1.0)
            assert message is not None, "watchdog pings stopped"
            if message == "WATCHDOG=1":
                pings.append(notify_socket.messages[-1][0])
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert len(gaps) >= 4 and max(gaps) < 0.8, gaps

        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", timeout=10)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_no_ready_when_the_database_is_not_there(notify_socket: NotifySocket) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proc = listen_process(
        f"postgresql://nobody@127.0.0.1:{port}/none", NOTIFY_SOCKET=notify_socket.address
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    # One line for the operator, and systemd never hears READY=1 (it will restart us).
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("notifications: error: connection failed"), err
    while notify_socket.receive(timeout=0.2) is not None:
        pass
    assert not any(m.startswith("READY=1") for _, _, m in notify_socket.messages)


def test_abstract_socket_address() -> None:
    name = f"@notifications-test-{os.getpid()}"
    receiver = NotifySocket(name)
    try:
        notifier = SdNotifier(name)
        assert notifier.enabled
        notifier.ready("up")
        notifier.watchdog()
        assert receiver.receive(2) == "READY=1\nSTATUS=up"
        assert receiver.receive(2) == "WATCHDOG=1"
        notifier.close()
    finally:
        receiver.sock.close()


def test_without_systemd_nothing_is_sent(tmp_path: Path) -> None:
    notifier = SdNotifier("")
    assert not notifier.enabled
    notifier.ready()  # no socket, no error
    # A vanished socket never breaks the service either.
    gone = SdNotifier(str(tmp_path / "missing.sock"))
    gone.watchdog()
    gone.close()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    # Meant for another process (a parent that exec'd us without passing it on).
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert watchdog_interval() is None
