"""The whole pipeline with real processes: a write from psql, `notifications listen`,
`notifications deliver`, a real SMTP server and a real HTTP receiver."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
from standardwebhooks.webhooks import Webhook

from tests.cli import run_cli
from tests.conftest import wait_until
from tests.delivery.conftest import SECRET
from tests.delivery.support import (
    MailSink,
    Receiver,
    logged,
    new_secret,
    outbox,
    start_daemon,
    statuses,
    stop_daemon,
)

DELIVER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "DELIVERY_POLL_INTERVAL": "0.5",
    "DELIVERY_RETRY_SCHEDULE": "0,0.2,0.2",
    "WEBHOOK_TIMEOUT": "2",
    "UNSUBSCRIBE_SECRET": SECRET,
    "PUBLIC_URL": "http://inbox.example",
    "MAIL_FROM": "notifications@example.test",
}


def test_a_scenario_executed_in_psql_reaches_inbox_mail_and_webhook_each_once(
    db: psycopg.Connection[Any],
    database_url: str,
    receiver: Receiver,
    mail_sink: MailSink,
    tmp_path: Path,
) -> None:
    def new_user(name: str) -> int:
        row = db.execute("SELECT create_user(%s)", [name]).fetchone()
        assert row is not None
        return int(row[0])

    alice, bob = new_user("alice-e2e"), new_user("bob-e2e")
    db.execute("SELECT set_user_email(%s, 'bob@example.test')", [bob])
    db.execute("SELECT set_channel_preference(%s, 'scenario.executed', 'email', true)", [bob])
    secret = new_secret()
    db.execute(
        "INSERT INTO webhook_endpoints (user_id, url, secret, event_types)"
        " VALUES (%s, %s, %s, ARRAY['scenario.executed'])",
        [bob, receiver.url + "/ok", secret],
    )
    row = db.execute(
        "INSERT INTO test_scenarios (name, created_by) VALUES ('Checkout <fast>', %s) RETURNING id",
        [alice],
    ).fetchone()
    assert row is not None
    scenario_id = row[0]

    listen_log, deliver_log = tmp_path / "listen.log", tmp_path / "deliver.log"
    listener = start_daemon("listen", database_url, listen_log, {"POLL_INTERVAL": "0.5"})
    deliverer = start_daemon(
        "deliver", database_url, deliver_log, {**DELIVER_ENV, "SMTP_URL": mail_sink.url}
    )
    try:
        wait_until(lambda: logged(listen_log, "listening on"), timeout=20)
        wait_until(lambda: logged(deliver_log, "delivering"), timeout=20)
        # The scenario's creation is fanned out (bob's endpoint takes only executions, and
        # his e-mail is on only for them: nothing to send yet).
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM scenario_events WHERE processed_at IS NULL"
                ).fetchone()
                == (0,)
            ),
            timeout=20,
        )
        # Alice executes it from psql, as a test runner would.
        psql = subprocess.run(
            [
                "psql",
                database_url,
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f"SET notifications.actor_id = '{alice}'",
                "-c",
                "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'"
                f" WHERE id = {scenario_id}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert psql.returncode == 0, psql.stderr
        row = db.execute(
            "SELECT id FROM scenario_events WHERE event_type = 'scenario.executed'"
            " AND scenario_id = %s",
            [scenario_id],
        ).fetchone()
        assert row is not None
        event_id = row[0]

        wait_until(
            lambda: (
                db.execute(
                    "SELECT channel, status FROM deliveries WHERE user_id = %s ORDER BY channel",
                    [bob],
                ).fetchall()
                == [("email", "delivered"), ("webhook", "delivered")]
            ),
            timeout=30,
        )
        # Time for a second send, were there one.
        time.sleep(1.5)
        assert listener.poll() is None and deliverer.poll() is None
    finally:
        assert stop_daemon(deliverer) == 0
        assert stop_daemon(listener) == 0

    notifications = db.execute(
        "SELECT user_id, event_id FROM user_notifications n JOIN scenario_events e"
        " ON e.id = n.event_id WHERE e.event_type = 'scenario.executed'"
    ).fetchall()
    assert notifications == [(bob, event_id)]
    deliveries = db.execute(
        "SELECT id, user_id, event_id, channel, status, attempts FROM deliveries ORDER BY channel"
    ).fetchall()
    assert [d[1:] for d in deliveries] == [
        (bob, event_id, "email", "delivered", 1),
        (bob, event_id, "webhook", "delivered", 1),
    ]
    email_id, webhook_id = deliveries[0][0], deliveries[1][0]

    assert len(mail_sink.messages) == 1
    mail = mail_sink.messages[0]
    assert mail["To"] == "bob@example.test"
    assert mail["Message-ID"] == f"<delivery-{email_id}@example.test>"
    assert "scenario.executed" in mail["Subject"] and "Checkout <fast>" in mail["Subject"]

    got = receiver.on("/ok")
    assert len(got) == 1
    assert got[0].headers["webhook-id"] == str(webhook_id)
    payload = Webhook(secret).verify(got[0].body, got[0].headers)
    assert payload["type"] == "scenario.executed"
    assert payload["data"]["id"] == event_id
    assert payload["data"]["scenario"]["id"] == scenario_id
    assert payload["data"]["actor"]["id"] == alice
    # An endpoint's URL may carry its receiver's credentials: it is never logged per send
    # (httpx logs every request at INFO).
    assert receiver.url not in deliver_log.read_text()


def test_dead_after_the_schedule_then_the_cli_retry_delivers_it_once(
    db: psycopg.Connection[Any], database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    user_id, _ = outbox(db, events=1, webhook_urls=[receiver.url + "/recover"])
    row = db.execute("SELECT id FROM deliveries WHERE user_id = %s", [user_id]).fetchone()
    assert row is not None
    delivery_id = row[0]
    log = tmp_path / "deliver.log"
    deliverer = start_daemon("deliver", database_url, log, DELIVER_ENV)
    try:
        wait_until(lambda: statuses(db, user_id) == {"dead": 1}, timeout=20)
        # Three tries, the schedule's length: no more come.
        time.sleep(1.0)
        assert receiver.ids("/recover") == [str(delivery_id)] * 3
        assert statuses(db, user_id) == {"dead": 1}

        receiver.failing = False
        result = run_cli("delivery", "retry", str(delivery_id), database_url=database_url)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"retried": delivery_id}
        wait_until(lambda: statuses(db, user_id) == {"delivered": 1}, timeout=20)
        time.sleep(1.0)
        assert deliverer.poll() is None
    finally:
        assert stop_daemon(deliverer) == 0
    # Once more, with the same webhook-id, and never again.
    assert receiver.ids("/recover") == [str(delivery_id)] * 4
    codes = db.execute(
        "SELECT array_agg(http_status ORDER BY id) FROM delivery_attempts WHERE delivery_id = %s",
        [delivery_id],
    ).fetchone()
    assert codes == ([500, 500, 500, 200],)
