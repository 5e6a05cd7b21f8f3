"""Faults of the server itself, on a PostgreSQL server of the test's own (see conftest)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.faults.conftest import OwnServer
from tests.faults.support import (
    ListenerPool,
    Workload,
    backends,
    delivered,
    stopped_process,
    verify,
)

pytestmark = pytest.mark.slow

DOWNTIME = 2.0


def test_postgres_restart_under_a_running_listener(
    own_server: OwnServer,
    own_database_url: str,
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    url = own_database_url
    listener = listeners.start(url)
    with psycopg.connect(url, autocommit=True) as conn:
        work = Workload.create(conn, 51)
        for i in range(10):
            work.create_scenarios(conn, 20, work.users[i])
        wait_until(lambda: delivered(conn, 200 * 50), timeout=10)
        # Committed a moment before the server goes: maybe fanned out, maybe not yet.
        for i in range(10):
            work.create_scenarios(conn, 20, work.users[i + 10])

    own_server.stop()
    down_at = time.monotonic()
    time.sleep(DOWNTIME)
    assert listener.alive(), "the listener gave up while the server was down"
    own_server.start()
    back_at = time.monotonic()

    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(10):
            work.create_scenarios(conn, 20, work.users[i + 20])
        expected = work.expected(conn)
        wait_until(lambda: delivered(conn, len(expected)), timeout=15, interval=0.02)
        recovered = time.monotonic() - back_at
        verdict = verify(conn, expected)

    warnings = [r for r in listener.log_records() if "reconnecting in" in r.get("message", "")]
    fault_report.update(
        server_restarts=1,
        seconds_down=round(back_at - down_at, 2),
        reconnect_attempts_logged=len(warnings),
        seconds_from_server_back_to_all_delivered=round(recovered, 3),
        **verdict.figures(),
    )
    assert listener.alive()
    assert warnings, "no reconnect was logged"
    assert verdict.ok, verdict
    # How soon after the server's return is a figure of the fault summary, not a bound:
    # a wall clock on a shared machine proves nothing either way.


def test_silently_dead_listen_session_poll_delivers_and_probe_reconnects(
    own_database_url: str,
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    """A LISTEN session that hangs (SIGSTOP on its backend: the socket stays open and
    nothing ever arrives) is the case no error reports. Deliveries must go on by polling,
    and the unanswered probe must make the listener replace the session."""
    url = own_database_url
    listener = listeners.start(url)
    with psycopg.connect(url, autocommit=True) as conn:
        work = Workload.create(conn, 51)
        frozen = backends(conn, listener)["listen"]
        with stopped_process(frozen[0]):
            work.create_scenarios(conn, 20, work.users[0])
            t0 = time.monotonic()
            wait_until(lambda: delivered(conn, 20 * 50), timeout=5, interval=0.01)
            delivered_after = time.monotonic() - t0

            def replaced() -> Any:
                now = backends(conn, listener).get("listen")
                return now and now[0] != frozen[0] and now[2].startswith("LISTEN") and now

            new = wait_until(replaced, timeout=5, interval=0.02)
            replaced_after = time.monotonic() - t0
        # Delivered by the old session's poll, before the new LISTEN session existed.
        row = conn.execute(
            "SELECT max(processed_at) < %s FROM scenario_events", [new[3]]
        ).fetchone()
        assert row is not None and row[0], "delivered only after the reconnect"
        work.create_scenarios(conn, 20, work.users[1])
        wait_until(lambda: delivered(conn, 40 * 50), timeout=5)
        verdict = verify(conn, work.expected(conn))

    fault_report.update(
        seconds_to_deliver_while_listen_session_hung=round(delivered_after, 3),
        seconds_to_replace_hung_listen_session=round(replaced_after, 3),
        **verdict.figures(),
    )
    # That it came by the poll, before the new session, is proved above from the database's
    # own timestamps; the seconds it took are a figure of the fault summary.
    assert listener.alive()
    assert verdict.ok, verdict
