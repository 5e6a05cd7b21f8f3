"""The feed's hot queries read user_notifications through its indexes, never a full scan.

The data comes from the real pipeline: 170 scenarios by one user, fanned out to 300 users
(50,830 notifications), most of them then read, and ANALYZE so the planner knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text

from app.api.routes import UNREAD_COUNT_SQL, feed_sql
from notifications.db import sqlalchemy_url

USERS = 300
SCENARIOS = 170


@pytest.fixture
def loaded(
    database_url: str, db: psycopg.Connection[Any], fan_out: Callable[[], int]
) -> Iterator[Engine]:
    db.execute("SELECT create_user('user' || i) FROM generate_series(1, %s) i", [USERS])
    db.execute(
        "INSERT INTO test_scenarios (name, created_by)"
        " SELECT 'scenario ' || i, 1 FROM generate_series(1, %s) i",
        [SCENARIOS],
    )
    fan_out()
    db.execute("UPDATE user_notifications SET read_at = now() WHERE (user_id + event_id) % 10 < 8")
    db.execute("ANALYZE")
    count = db.execute("SELECT count(*) FROM user_notifications").fetchone()
    assert count == ((USERS - 1) * SCENARIOS,)
    engine = create_engine(sqlalchemy_url(database_url))
    yield engine
    engine.dispose()


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(engine: Engine, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), params).scalar_one()
    return list(plan_nodes(result[0]["Plan"]))


HOT_QUERIES = [
    ("first page", feed_sql("all", after_cursor=False), {}),
    ("deep page", feed_sql("all", after_cursor=True), {"before": 100}),
    ("unread first page", feed_sql("unread", after_cursor=False), {}),
    ("unread deep page", feed_sql("unread", after_cursor=True), {"before": 100}),
    ("read page", feed_sql("read", after_cursor=False), {}),
    ("unread count", UNREAD_COUNT_SQL, {}),
    (
        "mark read",
        "UPDATE user_notifications SET read_at = now()"
        " WHERE user_id = :me AND event_id = :id AND read_at IS NULL",
        {"id": 100},
    ),
    (
        "read all",
        "UPDATE user_notifications SET read_at = now()"
        " WHERE user_id = :me AND read_at IS NULL AND event_id <= :up_to",
        {"up_to": 100},
    ),
]


def test_hot_queries_use_the_indexes(loaded: Engine) -> None:
    for label, sql, params in HOT_QUERIES:
        nodes = explain(loaded, sql, {"me": 42, "limit": 21, **params})
        scans = [
            n
            for n in nodes
            if n.get("Relation Name") == "user_notifications" and n["Node Type"] != "ModifyTable"
        ]
        assert scans, label
        assert all(n["Node Type"] != "Seq Scan" for n in scans), f"{label}: {nodes}"
        indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
        assert indexes & {"user_notifications_pkey", "user_notifications_unread_idx"}, label
        if "unread" in label:
            assert "user_notifications_unread_idx" in indexes, f"{label}: {nodes}"

    # A query without the user's id has no index to use: the walk above must notice that.
    nodes = explain(loaded, "SELECT count(*) FROM user_notifications WHERE read_at IS NOT NULL", {})
    assert any(
        n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "user_notifications"
        for n in nodes
    ), nodes
