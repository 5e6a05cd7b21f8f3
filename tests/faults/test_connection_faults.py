"""A listener's database sessions die under it: it notices, reconnects and loses nothing."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.faults.support import ListenerPool, Workload, backends, delivered, verify

pytestmark = pytest.mark.slow


def test_terminated_listen_and_fanout_sessions_are_replaced(
    database_url: str,
    db: psycopg.Connection[Any],
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    # A long poll interval: a delivery faster than it can only come from a NOTIFY, which
    # proves the replacement LISTEN session really listens.
    listener = listeners.start(database_url, POLL_INTERVAL="5")
    work = Workload.create(db, 51)
    before = backends(db, listener)

    db.execute("SELECT pg_terminate_backend(%s)", [before["listen"][0]])
    t0 = time.monotonic()

    def new_session(role: str) -> Any:
        now = backends(db, listener)
        return role in now and now[role][0] != before[role][0] and now[role]

    # Its last statement is a LISTEN once it is set up; a session that is merely open
    # would not count.
    wait_until(lambda: (s := new_session("listen")) and s[2].startswith("LISTEN"), timeout=5)
    listen_recovered = time.monotonic() - t0
    work.create_scenarios(db, 20, work.users[0])
    t1 = time.monotonic()
    wait_until(lambda: delivered(db, 20 * 50), timeout=5, interval=0.01)
    notify_delivery = time.monotonic() - t1
    assert notify_delivery < 2.0, "delivered by the poll, not by a NOTIFY"

    before = backends(db, listener)
    db.execute("SELECT pg_terminate_backend(%s)", [before["fanout"][0]])
    t2 = time.monotonic()
    # The fan-out session is only used on a wake-up: this commit both wakes the listener
    # and must be delivered in spite of the dead session.
    work.create_scenarios(db, 20, work.users[1])
    wait_until(lambda: delivered(db, 40 * 50), timeout=5, interval=0.01)
    fanout_recovered = time.monotonic() - t2
    assert new_session("fanout")
    assert listener.alive()

    verdict = verify(db, work.expected(db))
    lost_logged = sum("reconnecting in" in r.get("message", "") for r in listener.log_records())
    fault_report.update(
        sessions_terminated=2,
        reconnects_logged=lost_logged,
        seconds_to_new_listen_session=round(listen_recovered, 3),
        seconds_notify_delivery_after_reconnect=round(notify_delivery, 3),
        seconds_to_deliver_after_fanout_session_killed=round(fanout_recovered, 3),
        **verdict.figures(),
    )
    assert lost_logged == 2
    assert verdict.ok, verdict
