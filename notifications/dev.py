"""`notifications dev` / `make run`: everything on one machine, until Ctrl-C.

Embedded PostgreSQL (data under .data/) unless DATABASE_URL is set, migrated, seeded with
alice and bob, the listener in a thread and the API on a local threaded server.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from werkzeug.serving import make_server

from notifications import admin, migrate
from notifications.config import Settings
from notifications.db import connect

log = logging.getLogger("notifications.dev")

DEMO_USERS = ("alice", "bob")


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
    return out


def run_dev(settings: Settings) -> int:
    from notifications.api import create_app, database
    from notifications.listener.main import build_listener

    host, port = settings.api_host, settings.api_port
    embedded = None
    if settings.database_url:
        url = settings.database_url
    else:
        from notifications.embedded import EmbeddedServer

        embedded = EmbeddedServer(settings.data_dir / "pg")
        url = embedded.start()
        settings = settings.model_copy(update={"database_url": url})
        print(f"embedded PostgreSQL running; psql '{url}'", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    listener_thread = None
    server = None
    app = None
    listener = None
    try:
        migrate.upgrade(url)
        for name, (user_id, token) in seed(url).items():
            print(f"demo user {name} (id {user_id}) token: {token}", flush=True)

        listener = build_listener(settings)
        listener_thread = threading.Thread(target=listener.run, name="listener", daemon=True)
        listener_thread.start()

        app = create_app(settings)
        server = make_server(host, port, app, threaded=True)
        server_thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        server_thread.start()
        print(f"API and inbox on http://{host}:{port}/  (Ctrl-C stops everything)", flush=True)
        while not stop.wait(0.5):
            if not listener_thread.is_alive():
                log.error("listener stopped unexpectedly")
                return 1
        print("stopping...", flush=True)
        return 0
    finally:
        if server is not None:
            server.shutdown()
        if app is not None:
            database.close(app)
        if listener is not None:
            listener.stop()
        if listener_thread is not None:
            listener_thread.join(timeout=10)
        if embedded is not None:
            embedded.stop()
            print("embedded PostgreSQL stopped", flush=True)
