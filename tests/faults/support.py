"""Workloads and checks shared by the fault tests.

The expected notifications are computed here, in Python, from what the workload did
(who acted, who opted out), never from the fan-out's own SQL: a test that asked the
database what it should have delivered would only prove the database agrees with itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.cli import start_cli
from tests.conftest import wait_until


@dataclass
class Workload:
    """Users, opt-outs and the events committed so far, with what each should produce."""

    users: list[int]
    # users who switched scenario.executed off
    opted_out_executed: set[int] = field(default_factory=set)
    # (event_type, scenario_id) -> actor_id; both are unique per event in these workloads
    events: dict[tuple[str, int], int | None] = field(default_factory=dict)
    _unexecuted: list[int] = field(default_factory=list)

    @classmethod
    def create(
        cls, conn: psycopg.Connection[Any], n_users: int, *, opt_out_executed: int = 0
    ) -> Workload:
        rows = conn.execute(
            "INSERT INTO users (name) SELECT 'fault-' || g FROM generate_series(1, %s) g"
            " RETURNING id",
            [n_users],
        ).fetchall()
        users = sorted(r[0] for r in rows)
        opted_out = set(users[:opt_out_executed])
        for user_id in opted_out:
            conn.execute("SELECT set_subscription(%s, 'scenario.executed', false)", [user_id])
        return cls(users=users, opted_out_executed=opted_out)

    @property
    def actors(self) -> list[int]:
        return [u for u in self.users if u not in self.opted_out_executed]

    def recipients(self, event_type: str, actor: int | None) -> set[int]:
        skip = self.opted_out_executed if event_type == "scenario.executed" else set()
        return {u for u in self.users if u != actor and u not in skip}

    def create_scenarios(self, conn: psycopg.Connection[Any], n: int, actor: int | None) -> None:
        """One transaction: n scenarios created by actor (n scenario.created events)."""
        rows = conn.execute(
            "INSERT INTO test_scenarios (name, created_by)"
            " SELECT 'fault scenario ' || g, %s FROM generate_series(1, %s) g RETURNING id",
            [actor, n],
        ).fetchall()
        for (scenario_id,) in rows:
            self.events["scenario.created", scenario_id] = actor
            self._unexecuted.append(scenario_id)

    def execute_scenarios(self, conn: psycopg.Connection[Any], n: int, actor: int) -> int:
        """One transaction: up to n not yet executed scenarios executed by actor."""
        ids, self._unexecuted = self._unexecuted[:n], self._unexecuted[n:]
        if not ids:
            return 0
        with conn.transaction():
            conn.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(actor)])
            conn.execute(
                "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'"
                " WHERE id = ANY(%s)",
                [ids],
            )
        for scenario_id in ids:
            self.events["scenario.executed", scenario_id] = actor
        return len(ids)

    def expected(self, conn: psycopg.Connection[Any]) -> set[tuple[int, int]]:
        """Every (user_id, event_id) that must exist once all events are processed."""
        ids = {
            (t, s): e
            for e, t, s in conn.execute(
                "SELECT id, event_type, scenario_id FROM scenario_events"
            ).fetchall()
        }
        missing = set(self.events) - set(ids)
        assert not missing, f"{len(missing)} committed actions wrote no event"
        assert len(ids) == len(self.events), "events nobody asked for"
        return {
            (user, ids[key])
            for key, actor in self.events.items()
            for user in self.recipients(key[0], actor)
        }


@dataclass
class Verdict:
    events: int
    expected: int
    stored: int
    lost: int
    unexpected: int
    duplicated: int
    unprocessed: int
    fanout_count_mismatches: int

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.unexpected == 0
            and self.duplicated == 0
            and self.unprocessed == 0
            and self.fanout_count_mismatches == 0
            and self.stored == self.expected
        )

    def figures(self) -> dict[str, int]:
        return {
            "events": self.events,
            "notifications_expected": self.expected,
            "notifications_stored": self.stored,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "duplicated": self.duplicated,
            "unprocessed_events": self.unprocessed,
            "fanout_count_mismatches": self.fanout_count_mismatches,
        }


def verify(conn: psycopg.Connection[Any], expected: set[tuple[int, int]]) -> Verdict:
    rows = conn.execute("SELECT user_id, event_id FROM user_notifications").fetchall()
    stored = {(u, e) for u, e in rows}
    # fanout_count adds up what each fan-out of an event wrote: a second fan-out of the
    # same event, or rows written outside the fan-out, would make it disagree with the table.
    mismatches = conn.execute(
        "SELECT count(*) FROM scenario_events e"
        " LEFT JOIN (SELECT event_id, count(*) AS n FROM user_notifications GROUP BY event_id) k"
        "   ON k.event_id = e.id"
        " WHERE e.fanout_count IS DISTINCT FROM coalesce(k.n, 0)"
    ).fetchone()
    counts = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE processed_at IS NULL) FROM scenario_events"
    ).fetchone()
    assert mismatches is not None and counts is not None
    return Verdict(
        events=counts[0],
        expected=len(expected),
        stored=len(rows),
        lost=len(expected - stored),
        unexpected=len(stored - expected),
        duplicated=len(rows) - len(stored),
        unprocessed=counts[1],
        fanout_count_mismatches=mismatches[0],
    )


def delivered(conn: psycopg.Connection[Any], expected_rows: int) -> bool:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM user_notifications),"
        " (SELECT count(*) FROM scenario_events WHERE processed_at IS NULL)"
    ).fetchone()
    assert row is not None
    return bool(row[0] >= expected_rows and row[1] == 0)


# -- listener subprocesses ---------------------------------------------------------------------


class ListenerProcess:
    """One `notifications listen` process, logging JSON lines to a file."""

    def __init__(self, database_url: str, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        env = {"POLL_INTERVAL": "0.5", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", **env}
        with open(log_path, "ab") as log:
            self.proc = start_cli(
                "listen",
                database_url=database_url,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid
        self.started_at = time.monotonic()

    @property
    def name(self) -> str:
        return f"notifications-listener {self.pid}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def log_text(self) -> str:
        return self.log_path.read_text()

    def wait_listening(self, timeout: float = 10.0) -> None:
        def ready() -> bool:
            assert self.alive(), f"listener exited early:\n{self.log_text()}"
            return any(r.get("message", "").startswith("listening on") for r in self.log_records())

        wait_until(ready, timeout)

    def kill(self) -> None:
        """SIGKILL: no handler runs, no transaction is finished, nothing is cleaned up."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def fanned_out_event_ids(self) -> list[int]:
        ids: list[int] = []
        for record in self.log_records():
            ids.extend(record.get("event_ids", []))
        return ids


class ListenerPool:
    """Listener processes started by one test; whatever is left runs is stopped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ListenerProcess] = []

    def start(self, database_url: str, *, wait: bool = True, **env: str) -> ListenerProcess:
        log_path = self.log_dir / f"listener-{len(self.started)}.log"
        process = ListenerProcess(database_url, log_path, **env)
        self.started.append(process)
        if wait:
            process.wait_listening()
        return process

    def close(self) -> None:
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.terminate()


def backends(conn: psycopg.Connection[Any], listener: ListenerProcess) -> dict[str, Any]:
    """The listener's two sessions: 'listen' and 'fanout' -> (pid, state, query, started)."""
    rows = conn.execute(
        "SELECT application_name, pid, state, query, backend_start FROM pg_stat_activity"
        " WHERE application_name IN (%s, %s)",
        [listener.name, listener.name + " fanout"],
    ).fetchall()
    found: dict[str, Any] = {}
    for app, pid, state, query, started in rows:
        role = "fanout" if app.endswith(" fanout") else "listen"
        # A killed session may linger for a moment next to its successor: keep the newest.
        if role not in found or started > found[role][3]:
            found[role] = (pid, state, query, started)
    return found


@contextlib.contextmanager
def stopped_process(pid: int) -> Iterator[None]:
    """SIGSTOP a local server backend: its socket stays open but it never answers."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
