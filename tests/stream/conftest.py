"""A live serve app (uvicorn in a thread, the real ASGI app) and stream clients."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import connect_sse
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


@pytest.fixture
def live(as_role: Callable[[str], str]) -> Iterator[Live]:
    """The serve app as the API's login role, on a free port."""
    server = start_server(as_role("notifications_api"))
    yield server
    server.stop()


@dataclass
class Event:
    event: str
    data: Any
    id: str


@dataclass
class StreamClient:
    """One stream read by a thread; its events arrive on a queue."""

    url: str
    token: str
    last_event_id: str | None = None
    events: queue.Queue[Event | Exception | None] = field(default_factory=queue.Queue)
    _client: httpx.Client | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _socket: socket.socket | None = None

    def start(self) -> StreamClient:
        self._stop.clear()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        assert self._client is not None
        try:
            with connect_sse(
                self._client, "GET", self.url + "/api/v1/stream", headers=headers
            ) as src:
                src.response.raise_for_status()
                self._socket = src.response.extensions["network_stream"].get_extra_info("socket")
                for sse in src.iter_sse():
                    if self._stop.is_set():
                        break
                    data = json.loads(sse.data) if sse.data else None
                    self.events.put(Event(sse.event, data, sse.id))
        except Exception as exc:  # the test reads it from the queue
            if not self._stop.is_set():
                self.events.put(exc)
        self.events.put(None)

    def stop(self) -> None:
        """Cut the connection, as a closed tab or a lost network does."""
        self._stop.set()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.join(10)

    def next(self, kind: str | None = None, timeout: float = 10.0) -> Event:
        """The next event (of `kind`, skipping others); its id becomes the resume point."""
        while True:
            item = self.events.get(timeout=timeout)
            if isinstance(item, Exception):
                raise item
            if item is None:
                raise AssertionError("the stream ended")
            if item.id:
                self.last_event_id = item.id
            if kind is None or item.event == kind:
                return item

    def notifications(self, count: int, timeout: float = 10.0) -> list[Event]:
        return [self.next("notification", timeout) for _ in range(count)]
