"""Webhooks to a real HTTP receiver, signatures checked with the `standardwebhooks` package."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from standardwebhooks.webhooks import Webhook

from notifications.delivery.worker import Deliverer
from tests.conftest import wait_until
from tests.delivery.support import Receiver, outbox, statuses


def test_signed_payload_verifies_with_standardwebhooks(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    url = receiver.url + "/ok"
    user_id, secrets = outbox(db, events=3, webhook_urls=[url])
    start_deliverer()
    wait_until(lambda: statuses(db, user_id) == {"delivered": 3}, timeout=20)
    got = receiver.on("/ok")
    assert len(got) == 3
    ids = {str(r[0]) for r in db.execute("SELECT id FROM deliveries WHERE user_id = %s", [user_id])}
    assert {r.headers["webhook-id"] for r in got} == ids
    for r in got:
        payload = Webhook(secrets[url]).verify(r.body, r.headers)
        assert payload == json.loads(r.body)
        assert payload["type"] == "scenario.created"
        assert set(payload["data"]) == {
            "id",
            "event_type",
            "scenario",
            "actor",
            "message",
            "created_at",
            "read_at",
        }
        assert payload["data"]["scenario"]["name"].startswith("Checkout <")
        assert payload["timestamp"] == payload["data"]["created_at"]
    # A signature made with another secret does not verify: the check can fail.
    other = Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    try:
        other.verify(got[0].body, got[0].headers)
    except Exception:
        pass
    else:
        raise AssertionError("a foreign secret verified the signature")
    attempts = db.execute(
        "SELECT count(*), min(http_status), max(http_status) FROM delivery_attempts"
        " WHERE user_id = %s",
        [user_id],
    ).fetchone()
    assert attempts == (3, 200, 200)


def test_500_twice_then_200_is_delivered_on_the_third_try(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    user_id, _ = outbox(db, events=2, webhook_urls=[receiver.url + "/flaky"])
    start_deliverer(DELIVERY_RETRY_SCHEDULE="0,0.2,0.2,0.2")
    wait_until(lambda: statuses(db, user_id) == {"delivered": 2}, timeout=20)
    rows = db.execute(
        "SELECT d.id, d.attempts, array_agg(a.http_status ORDER BY a.id)"
        " FROM deliveries d JOIN delivery_attempts a"
        "   ON a.user_id = d.user_id AND a.delivery_id = d.id"
        " WHERE d.user_id = %s GROUP BY d.id, d.attempts",
        [user_id],
    ).fetchall()
    assert [(attempts, codes) for _, attempts, codes in rows] == [(3, [500, 500, 200])] * 2
    # The same webhook-id on every try: a receiver de-duplicates on it.
    for delivery_id, *_ in rows:
        assert receiver.ids("/flaky").count(str(delivery_id)) == 3


def test_always_failing_is_dead_after_the_schedule(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    user_id, _ = outbox(db, events=1, webhook_urls=[receiver.url + "/fail"])
    start_deliverer(DELIVERY_RETRY_SCHEDULE="0,0.1,0.1,0.1")
    wait_until(lambda: statuses(db, user_id) == {"dead": 1}, timeout=20)
    row = db.execute(
        "SELECT attempts, last_error, delivered_at FROM deliveries WHERE user_id = %s", [user_id]
    ).fetchone()
    assert row is not None
    assert row[0] == 4 and "HTTP 500" in row[1] and row[2] is None
    assert len(receiver.on("/fail")) == 4


def test_redirect_is_a_failure_never_followed(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    user_id, _ = outbox(db, events=1, webhook_urls=[receiver.url + "/redirect"])
    start_deliverer(DELIVERY_RETRY_SCHEDULE="0,0.1")
    wait_until(lambda: statuses(db, user_id) == {"dead": 1}, timeout=20)
    assert receiver.on("/ok") == []
    assert len(receiver.on("/redirect")) == 2


def test_retry_after_is_honoured(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    user_id, _ = outbox(db, events=1, webhook_urls=[receiver.url + "/later"])
    start_deliverer(DELIVERY_RETRY_SCHEDULE="0,0.05")
    wait_until(lambda: statuses(db, user_id) == {"delivered": 1}, timeout=20)
    first, second = receiver.on("/later")
    # The schedule says 0.05 s; the receiver asked for 1 s.
    assert second.at - first.at >= 1.0


def test_410_disables_the_endpoint_and_ends_its_deliveries(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    user_id, _ = outbox(db, events=5, webhook_urls=[receiver.url + "/gone"])
    start_deliverer(DELIVERY_CONCURRENCY="1")
    wait_until(lambda: statuses(db, user_id) == {"dead": 5}, timeout=20)
    row = db.execute(
        "SELECT disabled_at IS NOT NULL FROM webhook_endpoints WHERE user_id = %s", [user_id]
    ).fetchone()
    assert row == (True,)
    # One at a time: the first 410 ends the other four before they are sent.
    assert len(receiver.on("/gone")) == 1


def test_a_hanging_receiver_does_not_hold_up_others(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    receiver.hang = 5.0
    slow_user, _ = outbox(db, events=3, webhook_urls=[receiver.url + "/hang"])
    fast_user, _ = outbox(db, events=20, webhook_urls=[receiver.url + "/ok"])
    start_deliverer(WEBHOOK_TIMEOUT="4", DELIVERY_RETRY_SCHEDULE="0,60")
    wait_until(lambda: statuses(db, fast_user) == {"delivered": 20}, timeout=20)
    # Every fast delivery arrived while the slow ones were still waiting for their answer.
    # (the slow user also got the fast user's 20 events)
    assert statuses(db, slow_user) == {"pending": 23}
    wait_until(lambda: len(receiver.on("/hang")) == 23, timeout=10)
    last_fast = max(r.at for r in receiver.on("/ok"))
    first_slow = min(r.at for r in receiver.on("/hang"))
    assert last_fast < first_slow + receiver.hang


def test_the_timeout_bounds_the_whole_send(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    # Each byte comes within the 1 s timeout, the whole answer after 4 s: a timeout per read
    # would wait for it (and past a lease, send again); the contract's 10 s is for the send.
    user_id, _ = outbox(db, events=1, webhook_urls=[receiver.url + "/trickle"])
    start_deliverer(WEBHOOK_TIMEOUT="1", DELIVERY_RETRY_SCHEDULE="0,60")
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM delivery_attempts WHERE user_id = %s", [user_id]
            ).fetchone()
            == (1,)
        ),
        timeout=20,
    )
    row = db.execute(
        "SELECT d.status, a.error FROM deliveries d"
        " JOIN delivery_attempts a ON a.user_id = d.user_id AND a.delivery_id = d.id"
        " WHERE d.user_id = %s",
        [user_id],
    ).fetchone()
    assert row is not None and row[0] == "pending", row
    assert row[1] == "no answer within 1s", row


def test_private_addresses_are_refused_at_send_time(
    db: psycopg.Connection[Any], receiver: Receiver, start_deliverer: Callable[..., Deliverer]
) -> None:
    # "localhost" is a name: refused only once resolved, at send time (DNS rebinding).
    url = receiver.url.replace("127.0.0.1", "localhost") + "/ok"
    user_id, _ = outbox(db, events=1, webhook_urls=[url])
    start_deliverer(WEBHOOK_ALLOW_PRIVATE="0", DELIVERY_RETRY_SCHEDULE="0,0.1")
    wait_until(lambda: statuses(db, user_id) == {"dead": 1}, timeout=20)
    row = db.execute("SELECT last_error FROM deliveries WHERE user_id = %s", [user_id]).fetchone()
    assert row is not None and "loopback" in row[0]
    assert receiver.on("/ok") == []
