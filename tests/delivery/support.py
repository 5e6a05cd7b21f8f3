"""A real HTTP receiver, a real SMTP server, and an outbox filled the way the fan-out fills it."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import email
import email.policy
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.cli import start_cli


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers by path: /ok 200; /flaky 500 twice per webhook-id, then 200; /fail 500;
    /gone 410; /hang sleeps `hang` seconds; /later 429 with Retry-After once, then 200;
    /redirect 302 to /ok; /recover 500 while `failing`, then 200; /trickle 200 with a body
    sent a byte every 0.4 s."""

    hang: float = 3.0
    failing: bool = True
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tries: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def ids(self, path: str) -> list[str]:
        return [r.headers["webhook-id"] for r in self.on(path)]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        key = (path, headers.get("webhook-id", ""))
        with self.lock:
            self.tries[key] += 1
            n = self.tries[key]
            self.received.append(Received(path, headers, body, time.monotonic()))
        if path == "/ok":
            return 200, {}
        if path == "/flaky":
            return (500, {}) if n <= 2 else (200, {})
        if path == "/fail":
            return 500, {}
        if path == "/gone":
            return 410, {}
        if path == "/trickle":
            return 200, {}
        if path == "/hang":
            time.sleep(self.hang)
            return 200, {}
        if path == "/later":
            return (429, {"Retry-After": "1"}) if n == 1 else (200, {})
        if path == "/redirect":
            return 302, {"Location": "/ok"}
        if path == "/recover":
            return (500, {}) if self.failing else (200, {})
        return 404, {}


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when a deliverer opens dozens at once.
    request_queue_size = 1024


@contextlib.contextmanager
def run_receiver(hang: float = 3.0) -> Iterator[Receiver]:
    receiver = Receiver(hang=hang)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra = receiver.answer(self.path, headers, body)
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            if self.path == "/trickle":
                # A byte at a time, each well within a read timeout, the whole far beyond it.
                self.send_header("Content-Length", "10")
                self.end_headers()
                for _ in range(10):
                    time.sleep(0.4)
                    self.wfile.write(b".")
                    self.wfile.flush()
                return
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class MailSink:
    """aiosmtpd's real SMTP server; keeps every message. Addresses under reject.test are
    refused permanently (550)."""

    def __init__(self, port: int = 0) -> None:
        self.messages: list[EmailMessage] = []
        self.port = port
        self.controller: Controller | None = None
        self.raw: list[bytes] = []  # as received: header lines exactly as sent
        self.delay = 0.0  # seconds before each message is accepted: a slow relay

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.endswith("@reject.test"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        content = envelope.original_content or b""
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.raw.append(content)
        return "250 Message accepted"

    def start(self) -> None:
        # aiosmtpd checks its own start by connecting to the port: it must be a real one.
        self.port = self.port or free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.port = self.controller.port

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def outbox(
    db: psycopg.Connection[Any],
    *,
    events: int,
    webhook_urls: list[str] = (),  # type: ignore[assignment]
    email: str | None = None,
) -> tuple[int, dict[str, str]]:
    """One recipient with an endpoint per URL (and an address), `events` scenario.created
    events by another user, fanned out, and their deliveries. Returns (recipient, secrets
    by URL). Deliveries are inserted here as the fan-out writes them (the same unique key),
    so these tests do not depend on which channels the fan-out turns on."""
    actor = db.execute("SELECT create_user(%s)", [f"actor-{os.urandom(4).hex()}"]).fetchone()
    user = db.execute("SELECT create_user(%s)", [f"rcpt-{os.urandom(4).hex()}"]).fetchone()
    assert actor is not None and user is not None
    actor_id, user_id = actor[0], user[0]
    secrets_by_url = {}
    for url in webhook_urls:
        secret = new_secret()
        db.execute(
            "INSERT INTO webhook_endpoints (user_id, url, secret) VALUES (%s, %s, %s)",
            [user_id, url, secret],
        )
        secrets_by_url[url] = secret
    if email is not None:
        db.execute("UPDATE users SET email = %s WHERE id = %s", [email, user_id])
    db.execute(
        "INSERT INTO test_scenarios (name, created_by)"
        " SELECT 'Checkout <' || g || '>', %s FROM generate_series(1, %s) g",
        [actor_id, events],
    )
    while db.execute("SELECT * FROM fan_out_events_v2(1000)").fetchall():
        pass
    db.execute(
        "INSERT INTO deliveries (user_id, event_id, channel, endpoint_id)"
        " SELECT n.user_id, n.event_id, 'webhook', w.id"
        " FROM user_notifications n JOIN webhook_endpoints w ON w.user_id = n.user_id"
        " WHERE n.user_id = %s ON CONFLICT DO NOTHING",
        [user_id],
    )
    if email is not None:
        db.execute(
            "INSERT INTO deliveries (user_id, event_id, channel)"
            " SELECT n.user_id, n.event_id, 'email' FROM user_notifications n"
            " WHERE n.user_id = %s ON CONFLICT DO NOTHING",
            [user_id],
        )
    return user_id, secrets_by_url


def statuses(db: psycopg.Connection[Any], user_id: int) -> dict[str, int]:
    rows = db.execute(
        "SELECT status, count(*) FROM deliveries WHERE user_id = %s GROUP BY status", [user_id]
    ).fetchall()
    return {s: n for s, n in rows}


def start_daemon(
    command: str, database_url: str, log_path: Path, env: dict[str, str]
) -> subprocess.Popen[Any]:
    """A real `notifications listen` or `notifications deliver` process, logging JSON lines
    to log_path; the caller stops it."""
    with open(log_path, "ab") as out:
        return start_cli(
            command,
            database_url=database_url,
            env={"LOG_FORMAT": "json", "LOG_LEVEL": "INFO", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def logged(log_path: Path, prefix: str) -> list[str]:
    """The messages of log_path's JSON lines that start with prefix."""
    found = []
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            message = str(json.loads(line).get("message", ""))
            if message.startswith(prefix):
                found.append(message)
    return found


def stop_daemon(proc: subprocess.Popen[Any]) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise
