"""The serve app (the real ASGI app: Flask through a2wsgi, and the stream) under uvicorn in
a thread of the test, on a free port, as `notifications serve` runs each worker."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from notifications.api import asgi
from notifications.config import Settings
from tests.conftest import wait_until


@dataclass
class Live:
    url: str
    app: Starlette
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        asgi.end_streams(self.app)
        self.server.should_exit = True
        self.thread.join(15)
        asgi.close(self.app)


def start_server(database_url: str, port: int = 0, **overrides: Any) -> Live:
    settings = Settings.from_env({"DATABASE_URL": database_url}).model_copy(
        update={"api_pool_size": 4, "stream_poll_interval": 0.5, **overrides}
    )
    app = asgi.create_asgi_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15)
    return Live(f"http://127.0.0.1:{sock.getsockname()[1]}", app, server, thread)
