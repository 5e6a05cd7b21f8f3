"""`notifications deliver` as real processes: SIGKILLed at random, stopped by SIGTERM."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.cli import run_cli, start_cli
from tests.conftest import wait_until
from tests.delivery.support import Receiver, outbox, statuses

ENV = {
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "DELIVERY_POLL_INTERVAL": "0.5",
    # Enough tries that no row dies of the kills themselves (a claim counts as a try).
    "DELIVERY_RETRY_SCHEDULE": "0" + ",0.2" * 40,
    "DELIVERY_LEASE": "1",
    "DELIVERY_CONCURRENCY": "50",
    "LOG_FORMAT": "json",
}


def _start(database_url: str, log: Path, **env: str) -> subprocess.Popen[Any]:
    with open(log, "ab") as out:
        return start_cli(
            "deliver",
            database_url=database_url,
            env={**ENV, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_sigkill_at_random_moments_loses_nothing_and_duplicates_are_de_duplicable(
    db: psycopg.Connection[Any], database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    total = 2000
    user_id, _ = outbox(db, events=total, webhook_urls=[receiver.url + "/ok"])
    rng = random.Random(12)
    log = tmp_path / "deliver.log"
    procs = [_start(database_url, log) for _ in range(2)]
    kills = 0
    try:
        deadline = time.monotonic() + 60
        while statuses(db, user_id).get("delivered", 0) < total and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.4))
            victim = rng.randrange(len(procs))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            procs[victim] = _start(database_url, log)
        wait_until(lambda: statuses(db, user_id) == {"delivered": total}, timeout=60)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    assert kills >= 3
    ids = {str(r[0]) for r in db.execute("SELECT id FROM deliveries WHERE user_id = %s", [user_id])}
    seen = receiver.ids("/ok")
    # At least once: every delivery arrived; de-duplicated on webhook-id: exactly once.
    assert set(seen) == ids
    assert len(set(seen)) == total


def test_sigterm_finishes_in_flight_sends_and_exits_0(
    db: psycopg.Connection[Any], database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.hang = 1.5
    user_id, _ = outbox(db, events=3, webhook_urls=[receiver.url + "/hang"])
    # A lease far longer than the answer takes: no second claim of the same rows.
    proc = _start(database_url, tmp_path / "deliver.log", WEBHOOK_TIMEOUT="5", DELIVERY_LEASE="30")
    wait_until(lambda: len(receiver.on("/hang")) == 3, timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    # The sends in flight were answered and recorded before the exit.
    assert statuses(db, user_id) == {"delivered": 3}


def test_unreachable_database_is_one_line() -> None:
    result = run_cli("deliver", database_url="postgresql://127.0.0.1:1/nothing")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("notifications: error:"), result.stderr
