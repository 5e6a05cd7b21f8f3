"""Streams for 200 users open on one serve process at once: every notification reaches
every subscribed stream exactly once (the oracle is computed here, not by the database)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from httpx_sse import aconnect_sse

from tests.stream.conftest import Live, token

Conn = psycopg.Connection[Any]
USERS = 200


def test_200_streams_each_get_every_notification_once(
    live: Live, db: Conn, make_user: Callable[..., int], start_listener: Any
) -> None:
    actor = make_user("actor")
    users = [make_user(f"user{i}") for i in range(USERS)]
    quiet = set(users[::4])  # every fourth switched executions off
    for user in quiet:
        db.execute("SELECT set_subscription(%s, 'scenario.executed', false)", [user])
    tokens = {user: token(db, user) for user in users}
    start_listener()

    received: dict[int, list[tuple[int, float]]] = {user: [] for user in users}
    sentinel_name = "sentinel"

    def write() -> list[tuple[int, str]]:
        """Three scenarios created, each executed, then a sentinel: (event id, type)."""
        db.execute("SELECT set_config('notifications.actor_id', %s, false)", [str(actor)])
        db.execute(
            "INSERT INTO test_scenarios (name, created_by) SELECT 'S' || g, %s"
            " FROM generate_series(1, 3) g",
            [actor],
        )
        db.execute("UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'")
        db.execute(
            "INSERT INTO test_scenarios (name, created_by) VALUES (%s, %s)", [sentinel_name, actor]
        )
        rows = db.execute("SELECT id, event_type FROM scenario_events ORDER BY id").fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    async def main() -> list[tuple[int, str]]:
        opened = asyncio.Event()
        ready = 0
        limits = httpx.Limits(max_connections=USERS + 10)
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

            async def follow(user: int) -> None:
                nonlocal ready
                headers = {"Authorization": f"Bearer {tokens[user]}"}
                async with aconnect_sse(
                    client, "GET", live.url + "/api/v1/stream", headers=headers
                ) as source:
                    source.response.raise_for_status()
                    async for sse in source.aiter_sse():
                        if sse.event == "unread" and not received[user] and ready < USERS:
                            ready += 1
                            if ready == USERS:
                                opened.set()
                        elif sse.event == "notification":
                            note = json.loads(sse.data)
                            received[user].append((note["id"], time.time()))
                            if note["scenario"]["name"] == sentinel_name:
                                return

            tasks = [asyncio.create_task(follow(user)) for user in users]
            await asyncio.wait_for(opened.wait(), timeout=180)  # a guard for busy machines
            events = await asyncio.to_thread(write)
            done, pending = await asyncio.wait(tasks, timeout=180)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()
            assert not pending, f"{len(pending)} streams did not get the sentinel"
            return events

    events = asyncio.run(main())
    assert len(events) == 7
    for user in users:
        expected = [
            event_id
            for event_id, event_type in events
            if event_type == "scenario.created"
            or (event_type == "scenario.executed" and user not in quiet)
        ]
        got = [event_id for event_id, _ in received[user]]
        assert got == expected, f"user {user}: got {got}, expected {expected}"

    fanned = dict(
        db.execute("SELECT id, extract(epoch FROM processed_at) FROM scenario_events").fetchall()
    )
    lags = sorted(at - float(fanned[eid]) for user in users for eid, at in received[user])
    print(
        f"\n{USERS} streams, {len(lags)} notifications: from fan-out to receipt"
        f" p50 {statistics.median(lags) * 1000:.1f} ms,"
        f" p99 {lags[int(len(lags) * 0.99)] * 1000:.1f} ms"
    )
