"""`notifications dev` / `make run`: everything on one machine, until Ctrl-C.

Embedded PostgreSQL (data under .data/) unless DATABASE_URL is set, migrated, seeded with
alice and bob, the listener and the deliverer in threads, a local SMTP sink that keeps
each mail as a file under .data/mail/, and the API with its stream under uvicorn (one
process, as `serve` runs each worker).
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from notifications import admin, migrate
from notifications.config import Settings
from notifications.db import check_url, connect
from notifications.queries import query

log = logging.getLogger("notifications.dev")

DEMO_USERS = ("alice", "bob")
DEMO_DOMAIN = "example.test"


class MailSink:
    """A real SMTP server (aiosmtpd) on loopback that writes every message it accepts to
    mail_dir as an .eml file, and says where."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.controller: Any = None
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.eml"
        path = self.mail_dir / name
        path.write_bytes(envelope.original_content or b"")
        print(f"mail to {', '.join(envelope.rcpt_tos)}: {path}", flush=True)
        return "250 Message accepted"

    def start(self) -> str:
        import socket

        from aiosmtpd.controller import Controller

        self.mail_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:  # aiosmtpd's start check needs a real port number
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # aiosmtpd logs every connection at INFO, its own start-up probe included.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return f"smtp://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


def _unsubscribe_secret(data_dir: Path) -> str:
    """Kept under .data/ so the links in mails of earlier runs still work."""
    path = data_dir / "unsubscribe-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def seed(database_url: str) -> dict[str, tuple[int, str]]:
    """Make sure the demo users exist, and give each a fresh token to print. The tokens of
    earlier runs are revoked first: they were printed to a terminal, and only the newest
    need work."""
    out: dict[str, tuple[int, str]] = {}
    with connect(database_url, "notifications-dev", autocommit=True) as conn, conn.transaction():
        for name in DEMO_USERS:
            user_id = admin.user_id_by_name(conn, name) or admin.create_user(conn, name)
            admin.revoke_tokens(conn, user_id)
            out[name] = (user_id, admin.issue_token(conn, user_id))
            conn.execute(query("me_set_email"), {"me": user_id, "email": f"{name}@{DEMO_DOMAIN}"})
        # bob gets a mail when a scenario is executed, so a newcomer sees one arrive.
        conn.execute(
            query("channel_preference_set"),
            {
                "me": out["bob"][0],
                "event_type": "scenario.executed",
                "channel": "email",
                "enabled": True,
            },
        )
    return out


def run_dev(settings: Settings) -> int:
    from notifications.api import asgi
    from notifications.api.server import raise_open_files_limit
    from notifications.delivery.worker import Deliverer
    from notifications.listener.main import build_listener

    host, port = settings.api_host, settings.api_port
    embedded = None
    if settings.database_url:
        url = settings.database_url
        check_url(url)  # a malformed URL is one line, before anything starts
    else:
        from notifications.embedded import EmbeddedServer

        embedded = EmbeddedServer(settings.data_dir / "pg")
        url = embedded.start()
        settings = settings.model_copy(update={"database_url": url})
        print(f"embedded PostgreSQL running; psql '{url}'", flush=True)

    sink = MailSink(settings.data_dir / "mail")
    smtp_url = settings.smtp_url or sink.start()
    if not settings.smtp_url:
        print(f"mail sink on {smtp_url}; mail kept under {sink.mail_dir}/", flush=True)
    settings = settings.model_copy(
        update={
            "smtp_url": smtp_url,
            "webhook_allow_private": True,  # webhooks to a receiver on this machine
            "unsubscribe_secret": settings.unsubscribe_secret
            or _unsubscribe_secret(settings.data_dir),
            "public_url": f"http://{host}:{port}",
        }
    )

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    listener_thread = None
    server = None
    server_thread = None
    app = None
    listener = None
    deliverer = None
    deliverer_thread = None
    try:
        migrate.upgrade(url)
        for name, (user_id, token) in seed(url).items():
            print(f"demo user {name} (id {user_id}) token: {token}", flush=True)

        listener = build_listener(settings)
        listener_thread = threading.Thread(target=listener.run, name="listener", daemon=True)
        listener_thread.start()
        deliverer = Deliverer(settings)
        deliverer_thread = threading.Thread(target=deliverer.run, name="deliverer", daemon=True)
        deliverer_thread.start()

        raise_open_files_limit()
        app = asgi.create_asgi_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=5)
        )
        server_thread = threading.Thread(target=server.run, name="http", daemon=True)
        server_thread.start()
        while not server.started:
            if not server_thread.is_alive():
                log.error("the HTTP server did not start")
                return 1
            time.sleep(0.05)
        print(f"API and inbox on http://{host}:{port}/  (Ctrl-C stops everything)", flush=True)
        while not stop.wait(0.5):
            if not listener_thread.is_alive():
                log.error("listener stopped unexpectedly")
                return 1
            if not deliverer_thread.is_alive():
                log.error("deliverer stopped unexpectedly")
                return 1
        print("stopping...", flush=True)
        return 0
    finally:
        if server is not None and server_thread is not None and app is not None:
            asgi.end_streams(app)
            server.should_exit = True
            server_thread.join(timeout=10)
        if app is not None:
            asgi.close(app)
        if listener is not None:
            listener.stop()
        if listener_thread is not None:
            listener_thread.join(timeout=10)
        if deliverer is not None:
            deliverer.stop()
        if deliverer_thread is not None:
            deliverer_thread.join(timeout=15)
        sink.stop()
        if embedded is not None:
            embedded.stop()
            print("embedded PostgreSQL stopped", flush=True)
