"""The feed's hot queries read user_notifications through its indexes, never a full scan.

The data comes from the real pipeline: 170 scenarios by one user, fanned out to 300 users
(50,830 notifications), most of them then read, and ANALYZE so the planner knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from notifications.api.routes import feed_page_sql
from notifications.queries import query

USERS = 300
SCENARIOS = 170


@pytest.fixture
def loaded(
    database_url: str, db: psycopg.Connection[Any], fan_out: Callable[[], int]
) -> Iterator[psycopg.Connection[Any]]:
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
    with psycopg.connect(database_url) as conn:
        yield conn


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(
    conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()  # type: ignore[operator]
    conn.rollback()
    assert row is not None
    return list(plan_nodes(row[0][0]["Plan"]))


HOT_QUERIES = [
    ("first page", feed_page_sql("all"), {"before": None}),
    ("deep page", feed_page_sql("all"), {"before": 100}),
    ("unread first page", feed_page_sql("unread"), {"before": None}),
    ("unread deep page", feed_page_sql("unread"), {"before": 100}),
    ("read page", feed_page_sql("read"), {"before": None}),
    ("unread count", query("unread_count"), {}),
    ("mark read", query("mark_read"), {"id": 100}),
    ("read all", query("mark_all_read"), {"up_to": 100}),
    ("read all, no bound", query("mark_all_read"), {"up_to": None}),
]


def test_hot_queries_use_the_indexes(loaded: psycopg.Connection[Any]) -> None:
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


def test_a_deep_page_reads_only_its_own_events(db: psycopg.Connection[Any]) -> None:
    """A page far down a long feed joins the events of its own rows, one index probe each.

    A merge join would walk scenario_events down from the newest event to the cursor
    (the bound on the feed's id is not carried over to the events' side of the join): a
    page at depth N read N events. Measured with EXPLAIN ANALYZE, on a feed long enough
    for the planner to be tempted.
    """
    db.execute("SELECT create_user('reader'), create_user('writer')")
    me = db.execute("SELECT id FROM users WHERE name = 'reader'").fetchone()
    assert me is not None
    db.execute(
        "INSERT INTO scenario_events (event_type, scenario_id, scenario_name, processed_at)"
        " SELECT 'scenario.created', g, 's' || g, now() FROM generate_series(1, 60000) g"
    )
    db.execute(
        "INSERT INTO user_notifications (user_id, event_id) SELECT %s, id FROM scenario_events",
        [me[0]],
    )
    db.execute("ANALYZE")
    middle = db.execute("SELECT min(id) + 30000 FROM scenario_events").fetchone()
    assert middle is not None
    for status in ("all", "unread"):
        row = db.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + feed_page_sql(status),  # type: ignore[operator]
            {"me": me[0], "limit": 21, "before": middle[0]},
        ).fetchone()
        assert row is not None
        nodes = list(plan_nodes(row[0][0]["Plan"]))
        read = sum(
            n["Actual Rows"] * n["Actual Loops"]
            for n in nodes
            if n.get("Relation Name") == "scenario_events"
        )
        assert 0 < read <= 21, f"{status}: {read} events read for a page of 21: {nodes}"


def test_a_stream_round_finds_new_events_by_index(db: psycopg.Connection[Any]) -> None:
    """The stream's round (sql/v2/stream.sql) reads the events fanned out since its streams'
    positions through the partial fanout_xid index, not by scanning every event."""
    db.execute("SELECT create_user('writer')")
    db.execute(
        "INSERT INTO test_scenarios (name, created_by) SELECT 's' || i, 1"
        " FROM generate_series(1, 20000) i"
    )
    db.execute("UPDATE scenario_events SET processed_at = clock_timestamp()")
    position = db.execute("SELECT pg_current_snapshot()").fetchone()
    assert position is not None
    db.execute("INSERT INTO test_scenarios (name, created_by) VALUES ('new', 1)")
    db.execute(
        "UPDATE scenario_events SET processed_at = clock_timestamp() WHERE processed_at IS NULL"
    )
    db.execute("ANALYZE scenario_events")
    row = db.execute(
        "EXPLAIN (FORMAT JSON) SELECT e.id, e.fanout_xid, e.processed_at FROM scenario_events e"
        " WHERE e.fanout_xid >= pg_snapshot_xmin(%s::text::pg_snapshot)",
        [str(position[0])],
    ).fetchone()
    assert row is not None
    nodes = list(plan_nodes(row[0][0]["Plan"]))
    assert {n.get("Index Name") for n in nodes} >= {"scenario_events_fanout_xid_idx"}, nodes
    # The function says the same thing as the statement above.
    body = db.execute("SELECT prosrc FROM pg_proc WHERE proname = 'stream_round_v2'").fetchone()
    assert body is not None
    assert "e.fanout_xid >= (SELECT xmin FROM since)" in body[0]
