"""PostgreSQL restarted under a running `notifications deliver`, on a server of the test's
own (the fault suite's fixture: it may stop and start it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.delivery.support import Receiver, logged, outbox, start_daemon, stop_daemon
from tests.faults.conftest import OwnServer, own_database_url, own_server  # noqa: F401

pytestmark = pytest.mark.slow

DOWNTIME = 2.0


def _statuses(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {s: n for s, n in conn.execute("SELECT status, count(*) FROM deliveries GROUP BY 1")}


def test_postgres_restart_under_a_running_deliverer_loses_nothing(
    own_server: OwnServer,  # noqa: F811
    own_database_url: str,  # noqa: F811
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    url = own_database_url
    hook = receiver.url + "/ok"
    log = tmp_path / "deliver.log"
    deliverer = start_daemon(
        "deliver",
        url,
        log,
        {
            "WEBHOOK_ALLOW_PRIVATE": "1",
            "DELIVERY_POLL_INTERVAL": "0.5",
            # A claim counts as a try: enough of them that the outage kills no row.
            "DELIVERY_RETRY_SCHEDULE": "0" + ",0.2" * 30,
            "DELIVERY_LEASE": "1",
            "DELIVERY_CONCURRENCY": "10",
        },
    )
    try:
        wait_until(lambda: logged(log, "delivering"), timeout=20)
        with psycopg.connect(url, autocommit=True) as conn:
            outbox(conn, events=100, webhook_urls=[hook])
            wait_until(lambda: set(_statuses(conn)) == {"delivered"}, timeout=20)
            # Committed a moment before the server goes: some sent, some in flight, some not.
            receiver.hang = 0.3
            outbox(conn, events=100, webhook_urls=[receiver.url + "/hang"])
            wait_until(lambda: receiver.on("/hang"), timeout=10)

        own_server.stop()
        time.sleep(DOWNTIME)
        assert deliverer.poll() is None, "the deliverer gave up while the server was down"
        own_server.start()

        with psycopg.connect(url, autocommit=True) as conn:
            outbox(conn, events=100, webhook_urls=[hook])
            wait_until(lambda: set(_statuses(conn)) == {"delivered"}, timeout=30)
            ids = {str(r[0]) for r in conn.execute("SELECT id FROM deliveries")}
        assert deliverer.poll() is None
    finally:
        assert stop_daemon(deliverer) == 0
    assert logged(log, "database session failed"), "no reconnect was logged"
    assert logged(log, "delivering again")
    # Every delivery reached the receiver (at least once; de-duplicated, exactly once).
    assert set(receiver.ids("/ok")) | set(receiver.ids("/hang")) == ids
