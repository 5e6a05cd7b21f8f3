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
import psycopg
import pytest
from httpx_sse import connect_sse

from tests.live import Live, start_server


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
                    if not sse.data:
                        continue  # a field-only block (retry:), not an event (per the spec)
                    self.events.put(Event(sse.event, json.loads(sse.data), sse.id))
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


def token(db: psycopg.Connection[Any], user_id: int) -> str:
    row = db.execute("SELECT issue_token(%s)", [user_id]).fetchone()
    assert row is not None
    return str(row[0])


def create_scenarios(db: psycopg.Connection[Any], actor: int, names: list[str]) -> None:
    """As a psql writer would, one statement: one event per scenario."""
    db.execute("SELECT set_config('notifications.actor_id', %s, false)", [str(actor)])
    db.execute(
        "INSERT INTO test_scenarios (name, created_by) SELECT unnest(%s::text[]), %s",
        [names, actor],
    )
