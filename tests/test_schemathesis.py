"""Property-based conformance: schemathesis drives the API through WSGI from its own OpenAPI
document, with a valid token, and checks that nothing answers 5xx and that every response
(status, content type, body) matches the document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.pytest.lazy import get_all_tests

from notifications.api import database
from notifications.api.routes import encode_cursor
from notifications.positions import encode_watermark
from tests.conftest import build_app, create_database, drop_database
from tests.pg import with_dbname


@pytest.fixture(scope="module")
def seeded(pg_url: str, template_name: str) -> Iterator[tuple[Flask, str, str]]:
    """One database for the whole run: alice and bob, scenarios, notifications."""
    name = create_database(pg_url, template_name)
    url = with_dbname(pg_url, name)
    with psycopg.connect(url, autocommit=True) as conn:

        def one(sql: str, *params: Any) -> Any:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return row[0]

        alice = one("SELECT create_user('alice')")
        bob = one("SELECT create_user('bob')")
        token = one("SELECT issue_token(%s)", alice)
        for i in range(5):
            scenario = one(
                "INSERT INTO test_scenarios (name, created_by) VALUES (%s, %s) RETURNING id",
                f"scenario {i}",
                bob,
            )
            with conn.transaction():
                conn.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(bob)])
                conn.execute(
                    "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'"
                    " WHERE id = %s",
                    [scenario],
                )
        while conn.execute("SELECT * FROM fan_out_events_v2(100)").fetchall():
            pass
    app = build_app(url, api_pool_size=2)
    yield app, token, url
    database.close(app)
    drop_database(pg_url, name)


def load(app: Flask, token: str) -> Any:
    """The document, with the token schemathesis knows as valid for the bearer scheme.

    A cursor is opaque: a made-up string that fits its schema is rightly a 422, so the
    generated requests carry a real one (the unit tests cover made-up cursors).
    """
    config = SchemathesisConfig.from_dict(
        {
            "auth": {"openapi": {"bearer": {"bearer": token}}},
            "parameters": {"query.cursor": encode_cursor(6)},
            # An invalid body may also be an over-long one (a 70 KB string drawn for a
            # field): refusing it as 413 is as right as 400 or 422.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [
                        "400",
                        "401",
                        "403",
                        "404",
                        "405",
                        "406",
                        "409",
                        "413",
                        "415",
                        "422",
                        "428",
                        "429",
                        "5XX",
                    ]
                }
            },
        }
    )
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)


def real_watermark(case: Any) -> None:
    """A watermark is opaque like a cursor: a made-up one is rightly a 422 (covered by
    tests/api/test_api_watermark.py), so a generated body carries a real one."""
    positive = case.meta is None or case.meta.generation.mode.name == "POSITIVE"
    if positive and isinstance(case.body, dict) and isinstance(case.body.get("watermark"), str):
        case.body["watermark"] = encode_watermark("1:1:")


PUBLIC_HOOK = "https://93.184.215.14/hook"


def real_webhook(case: Any) -> None:
    """Whether a webhook URL is acceptable depends on DNS and address ranges, and an event
    type on the event_types table, which a schema cannot say: a generated endpoint names a
    public address literal and real types (tests/api/test_api_webhooks.py covers the rest)."""
    positive = case.meta is None or case.meta.generation.mode.name == "POSITIVE"
    if positive and case.path.endswith("/webhooks") and isinstance(case.body, dict):
        if isinstance(case.body.get("url"), str):
            case.body["url"] = PUBLIC_HOOK
        if isinstance(case.body.get("event_types"), list):
            case.body["event_types"] = ["scenario.executed"]


def test_api_conforms_to_its_document(seeded: tuple[Flask, str, str]) -> None:
    schema = load(*seeded[:2])

    def check(case: Any) -> None:
        real_watermark(case)
        real_webhook(case)
        case.call_and_validate()
        if case.path.endswith("/tokens/current"):  # sign-out revoked the one token: give it back
            with psycopg.connect(seeded[2], autocommit=True) as conn:
                conn.execute(RESET_SQL[-1])

    # schemathesis' own pytest plugin does not run under pytest 9 (it reads Node._nodeid),
    # so build its per-operation Hypothesis tests (examples, coverage, fuzzing) and run them.
    tests = get_all_tests(
        schema=schema,
        test_func=check,
        settings=settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
        given_kwargs={},
    )
    failures: list[str] = []
    labels = set()
    for result in tests:
        operation, test = result.ok()
        labels.add(operation.label)
        if operation.label == "GET /api/v1/stream":
            continue  # never ends, and is not Flask's: tests/stream/ covers it
        try:
            test()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert {"POST /api/v1/scenarios", "PUT /api/v1/preferences/{event_type}"} <= labels
    assert {"POST /api/v1/webhooks", "GET /api/v1/webhooks/{id}/deliveries"} <= labels
    assert len(labels) == 23  # every operation but the document itself


# What the workflows change, put back before each one. Hypothesis replays a sequence to
# check and shrink it, and a link's value comes from a live response: a feed emptied by an
# earlier sequence's "mark read" would make the replay draw differently (an integer where
# the first run drew a string) and fail as FlakyStrategyDefinition. From the same state,
# the same draws meet the same responses. No listener runs, so the feed's rows are fixed.
RESET_SQL = [
    "UPDATE user_notifications SET read_at = NULL WHERE read_at IS NOT NULL",
    "DELETE FROM subscriptions",
    "DELETE FROM test_scenarios WHERE id > %(seeded)s",
    "UPDATE test_scenarios SET deleted_at = NULL WHERE deleted_at IS NOT NULL",
    "DELETE FROM webhook_endpoints",
    "DELETE FROM channel_preferences",
    "UPDATE users SET email = NULL WHERE email IS NOT NULL",
    # Last (check() runs it alone): DELETE /tokens/current revokes the run's one token.
    "UPDATE api_tokens SET revoked_at = NULL WHERE revoked_at IS NOT NULL",
]


def test_api_workflows_follow_the_links(seeded: tuple[Flask, str, str]) -> None:
    """Sequences of calls along the document's links: create a scenario, then read, execute
    and delete it (after which it must be gone); list the feed, then mark an item."""
    app, token, url = seeded
    schema = load(app, token)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT max(id) FROM test_scenarios").fetchone()
    assert row is not None
    last_seeded = row[0]

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            with psycopg.connect(url) as conn, conn.transaction():
                for statement in RESET_SQL:
                    conn.execute(statement, {"seeded": last_seeded})

        def before_call(self, case: Any) -> None:
            # The parameter override of load() does not reach stateful steps.
            if case.query and "cursor" in case.query:
                case.query["cursor"] = encode_cursor(6)
            real_watermark(case)
            real_webhook(case)

    Workflow.run(
        settings=settings(
            max_examples=50,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
