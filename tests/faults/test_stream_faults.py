"""The stream under faults: its LISTEN session killed or frozen, the serve process restarted,
the database restarted. Streams keep receiving (by poll within STREAM_POLL_INTERVAL, then
by push again), and a client that reconnects with its last position loses nothing and gets
nothing twice."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY

from tests.conftest import wait_until
from tests.faults.conftest import OwnServer
from tests.faults.support import ListenerPool, stopped_process
from tests.live import Live, start_server
from tests.stream.conftest import StreamClient, create_scenarios, token

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]
LISTEN_APP = "notifications-stream-listen"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def listen_backend(db: Conn) -> tuple[int, Any] | None:
    row = db.execute(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s"
        " AND query ILIKE 'LISTEN%%' ORDER BY backend_start DESC LIMIT 1",
        [LISTEN_APP],
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


@pytest.fixture
def served(as_role: Callable[[str], str]) -> Iterator[Live]:
    server = start_server(as_role("notifications_api"), stream_poll_interval=0.5)
    yield server
    server.stop()


def names(events: list[Any]) -> list[str]:
    return [e.data["scenario"]["name"] for e in events]


@contextlib.contextmanager
def bob_follows_alice(
    url: str, db: Conn, make_user: Callable[..., int], start_listener: Any
) -> Iterator[tuple[int, StreamClient]]:
    """alice writes, a listener fans out, bob's stream is open (its first frame read)."""
    alice, bob = make_user("alice"), make_user("bob")
    start_listener()
    stream = StreamClient(url, token(db, bob)).start()
    try:
        stream.next("unread")
        yield alice, stream
    finally:
        stream.stop()


def test_listen_session_terminated(
    served: Live,
    db: Conn,
    make_user: Callable[..., int],
    start_listener: Any,
    fault_report: dict[str, Any],
) -> None:
    with bob_follows_alice(served.url, db, make_user, start_listener) as (alice, stream):
        old = wait_until(lambda: listen_backend(db))
        reconnects = metric("notifications_stream_listen_reconnects_total")
        db.execute("SELECT pg_terminate_backend(%s)", [old[0]])
        create_scenarios(db, alice, ["while replaced"])
        t0 = time.monotonic()
        assert names(stream.notifications(1)) == ["while replaced"]
        first_after = time.monotonic() - t0
        new = wait_until(lambda: (b := listen_backend(db)) and b[0] != old[0] and b)
        assert metric("notifications_stream_listen_reconnects_total") == reconnects + 1
        # By push again: a round woken by a hint.
        hinted = metric("notifications_stream_rounds_total", cause="hint")
        create_scenarios(db, alice, ["after"])
        assert names(stream.notifications(1)) == ["after"]
        assert metric("notifications_stream_rounds_total", cause="hint") > hinted
        fault_report.update(
            stream_seconds_to_first_notification_listen_killed=round(first_after, 3),
            stream_new_listen_pid=new[0] != old[0],
        )


def test_listen_session_frozen(
    served: Live,
    db: Conn,
    make_user: Callable[..., int],
    start_listener: Any,
    fault_report: dict[str, Any],
) -> None:
    with bob_follows_alice(served.url, db, make_user, start_listener) as (alice, stream):
        frozen = wait_until(lambda: listen_backend(db))
        reconnects = metric("notifications_stream_listen_reconnects_total")
        polls = metric("notifications_stream_rounds_total", cause="poll")
        with stopped_process(frozen[0]):
            create_scenarios(db, alice, ["while frozen"])
            t0 = time.monotonic()
            assert names(stream.notifications(1)) == ["while frozen"]
            delivered_after = time.monotonic() - t0
            assert metric("notifications_stream_rounds_total", cause="poll") > polls
            # The probe goes unanswered: the hub replaces the session.
            new = wait_until(
                lambda: (b := listen_backend(db)) and b[0] != frozen[0] and b, timeout=30
            )
            replaced_after = time.monotonic() - t0
        assert metric("notifications_stream_listen_reconnects_total") >= reconnects + 1
        create_scenarios(db, alice, ["after"])
        assert names(stream.notifications(1)) == ["after"]
        fault_report.update(
            stream_seconds_to_deliver_while_listen_frozen=round(delivered_after, 3),
            stream_seconds_to_replace_frozen_listen=round(replaced_after, 3),
            stream_replaced=new[0] != frozen[0],
        )


def test_serve_restart_resumes_exactly(
    as_role: Callable[[str], str],
    db: Conn,
    make_user: Callable[..., int],
    start_listener: Any,
) -> None:
    url = as_role("notifications_api")
    server = start_server(url)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        with bob_follows_alice(server.url, db, make_user, start_listener) as (alice, stream):
            create_scenarios(db, alice, ["before"])
            assert names(stream.notifications(1)) == ["before"]
            server.stop()
            with pytest.raises(AssertionError, match="the stream ended"):
                while True:
                    stream.next()
            create_scenarios(db, alice, [f"down {i}" for i in range(5)])
            wait_until(
                lambda: db.execute(
                    "SELECT count(*) = 0 FROM scenario_events WHERE processed_at IS NULL"
                ).fetchone()[0]
            )
            server = start_server(url, port=port)
            resumed = StreamClient(server.url, stream.token, last_event_id=stream.last_event_id)
            resumed.start()
            try:
                assert names(resumed.notifications(5)) == [f"down {i}" for i in range(5)]
                create_scenarios(db, alice, ["after"])
                assert names(resumed.notifications(1)) == ["after"]
            finally:
                resumed.stop()
    finally:
        server.stop()


def test_database_restart_under_open_streams(
    own_server: OwnServer,
    own_database_url: str,
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    url = own_database_url
    listeners.start(url)
    server = start_server(url, stream_poll_interval=0.5)
    try:
        with psycopg.connect(url, autocommit=True) as db:
            alice = int(db.execute("SELECT create_user('alice')").fetchone()[0])  # type: ignore[index]
            bob = int(db.execute("SELECT create_user('bob')").fetchone()[0])  # type: ignore[index]
            bob_token = token(db, bob)
        stream = StreamClient(server.url, bob_token).start()
        try:
            stream.next("unread")
            with psycopg.connect(url, autocommit=True) as db:
                create_scenarios(db, alice, ["before"])
            assert names(stream.notifications(1)) == ["before"]
            own_server.stop()
            time.sleep(1.0)
            own_server.start()
            back = time.monotonic()
            with psycopg.connect(url, autocommit=True) as db:
                create_scenarios(db, alice, [f"after {i}" for i in range(5)])
            got: list[str] = []
            resumed: StreamClient | None = None
            # The same stream goes on; had the server ended it, its client would resume.
            try:
                got = names(stream.notifications(5, timeout=30))
            except AssertionError:
                resumed = StreamClient(
                    server.url, bob_token, last_event_id=stream.last_event_id
                ).start()
                got = names(resumed.notifications(5, timeout=30))
            recovered = time.monotonic() - back
            assert got == [f"after {i}" for i in range(5)]
            if resumed is not None:
                resumed.stop()
            fault_report.update(
                stream_seconds_from_database_back_to_delivered=round(recovered, 3),
                stream_survived_database_restart=resumed is None,
            )
        finally:
            stream.stop()
    finally:
        server.stop()
