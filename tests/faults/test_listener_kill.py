"""Listener processes killed, absent, or many at once: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.faults.support import ListenerPool, Workload, backends, delivered, verify

pytestmark = pytest.mark.slow

EVENTS = 2000
MIN_KILLS = 12


def test_sigkill_at_random_moments_during_a_burst(
    database_url: str,
    db: psycopg.Connection[Any],
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    fault_report["seed"] = seed
    # 55 users, 4 of whom switched scenario.executed off; actors are never notified of
    # their own action: 54 recipients per created event, 50 per executed event.
    work = Workload.create(db, 55, opt_out_executed=4)
    actors = work.actors
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                tx = 0
                while len(work.events) < EVENTS:
                    n = min(20, EVENTS - len(work.events))
                    actor = actors[tx % len(actors)]
                    if tx % 10 in (3, 6, 9) and work.execute_scenarios(conn, n, actor):
                        pass
                    else:
                        work.create_scenarios(conn, n, actor)
                    tx += 1
                    time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    current = listeners.start(database_url, BATCH_SIZE="50")
    producer = threading.Thread(target=produce)
    producer.start()
    kills = during_fanout = 0
    while producer.is_alive() or kills < MIN_KILLS:
        time.sleep(rng.uniform(0.05, 0.45))
        session = backends(db, current)
        if "fanout" in session and session["fanout"][1] == "active":
            during_fanout += 1
        current.kill()
        kills += 1
        # Restart at once, not waiting for it to be ready: the next kill may hit start-up.
        current = listeners.start(database_url, wait=False, BATCH_SIZE="50")
    producer.join()
    assert not errors, errors
    done_by_killed = db.execute(
        "SELECT count(*) FROM scenario_events WHERE processed_at IS NOT NULL"
    ).fetchone()
    current.wait_listening()
    expected = work.expected(db)
    wait_until(lambda: delivered(db, len(expected)), timeout=30)
    verdict = verify(db, expected)
    assert current.terminate() == 0

    per_event = [len(work.recipients(t, a)) for (t, _), a in work.events.items()]
    fault_report.update(
        listeners_started=len(listeners.started),
        kills=kills,
        kills_while_fanout_statement_ran=during_fanout,
        restarts=len(listeners.started) - 1,
        events_done_before_last_restart=done_by_killed[0] if done_by_killed else None,
        subscribers_per_event=f"{min(per_event)}..{max(per_event)}",
        seconds=round(time.monotonic() - started, 2),
        **verdict.figures(),
    )
    assert verdict.events == EVENTS
    assert min(per_event) >= 50
    assert kills >= MIN_KILLS
    assert verdict.ok, verdict


def test_backlog_from_while_no_listener_ran_is_delivered_within_2s_of_start(
    database_url: str,
    db: psycopg.Connection[Any],
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    work = Workload.create(db, 51)
    # A listener ran and stopped cleanly; everything after that is backlog.
    first = listeners.start(database_url)
    work.create_scenarios(db, 10, work.users[0])
    wait_until(lambda: delivered(db, 500))
    assert first.terminate() == 0
    for i in range(50):
        work.create_scenarios(db, 20, work.users[i % len(work.users)])
    expected = work.expected(db)

    started = time.monotonic()
    listeners.start(database_url, wait=False)
    wait_until(lambda: delivered(db, len(expected)), timeout=10, interval=0.01)
    elapsed = time.monotonic() - started
    verdict = verify(db, expected)
    fault_report.update(
        backlog_events=1000, seconds_from_process_start_to_delivered=round(elapsed, 3)
    )
    fault_report.update(verdict.figures())
    assert verdict.ok, verdict


def test_four_listeners_share_one_backlog_each_notification_once(
    database_url: str,
    db: psycopg.Connection[Any],
    listeners: ListenerPool,
    fault_report: dict[str, Any],
) -> None:
    work = Workload.create(db, 51)
    for i in range(50):
        work.create_scenarios(db, 20, work.users[i % len(work.users)])
    pool = [listeners.start(database_url, wait=False, BATCH_SIZE="20") for _ in range(4)]
    # More arrives while all four compete: every commit wakes all of them.
    for i in range(50):
        work.create_scenarios(db, 20, work.users[(i + 7) % len(work.users)])
        time.sleep(0.01)
    expected = work.expected(db)
    wait_until(lambda: delivered(db, len(expected)), timeout=30)
    verdict = verify(db, expected)

    # Each listener logs the ids of the events it fanned out, after they committed.
    claimed = [p.fanned_out_event_ids() for p in pool]
    for p in pool:
        assert p.terminate() == 0
    all_ids = {r[0] for r in db.execute("SELECT id FROM scenario_events").fetchall()}
    flat = [i for ids in claimed for i in ids]
    fault_report.update(
        listeners=len(pool),
        events_per_listener=[len(ids) for ids in claimed],
        events_fanned_out_twice=len(flat) - len(set(flat)),
        **verdict.figures(),
    )
    assert verdict.ok, verdict
    assert len(flat) == len(set(flat)), "an event was fanned out by two listeners"
    assert set(flat) == all_ids
    assert sum(1 for ids in claimed if ids) >= 2, "the backlog was not shared"
