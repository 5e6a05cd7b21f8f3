"""E-mail to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from notifications.delivery.worker import Deliverer
from notifications.unsubscribe import read_token
from tests.conftest import wait_until
from tests.delivery.conftest import SECRET
from tests.delivery.support import MailSink, free_port, outbox, statuses


def test_mail_has_subject_parts_message_id_and_one_click_unsubscribe(
    db: psycopg.Connection[Any], mail_sink: MailSink, start_deliverer: Callable[..., Deliverer]
) -> None:
    user_id, _ = outbox(db, events=2, email="bob@example.test")
    start_deliverer(SMTP_URL=mail_sink.url, MAIL_FROM="notifications@example.test")
    wait_until(lambda: statuses(db, user_id) == {"delivered": 2}, timeout=20)
    ids = sorted(
        r[0] for r in db.execute("SELECT id FROM deliveries WHERE user_id = %s", [user_id])
    )
    assert len(mail_sink.messages) == 2
    by_id = {m["Message-ID"]: m for m in mail_sink.messages}
    assert set(by_id) == {f"<delivery-{i}@example.test>" for i in ids}
    msg = next(iter(by_id.values()))
    assert msg["To"] == "bob@example.test"
    assert "scenario.created" in msg["Subject"] and "Checkout <" in msg["Subject"]
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert "Checkout <" in text.get_content()
    # Autoescaped: the scenario's name is text in the HTML part, never markup.
    assert "Checkout &lt;" in html.get_content() and "Checkout <" not in html.get_content()
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = msg["List-Unsubscribe"]
    assert link.startswith("<http://inbox.example/unsubscribe/") and link.endswith(">")
    # On the wire too, one line, as a mail client reads it: no RFC 2047 encoding, no fold.
    for raw in mail_sink.raw:
        lines = raw.decode("ascii").split("\r\n")
        header = [line for line in lines if line.startswith("List-Unsubscribe: ")]
        assert len(header) == 1 and header[0].startswith("List-Unsubscribe: <http://inbox.")
        assert header[0].endswith(">"), header
        subject = [line for line in lines if line.startswith("Subject: ")]
        assert len(subject) == 1 and "scenario.created" in subject[0], lines[:12]
    token = link[len("<http://inbox.example/unsubscribe/") : -1]
    found = read_token(SECRET, token)
    assert found is not None
    assert (found.user_id, found.event_type, found.channel) == (
        user_id,
        "scenario.created",
        "email",
    )
    replies = db.execute(
        "SELECT smtp_reply FROM delivery_attempts WHERE user_id = %s", [user_id]
    ).fetchall()
    assert [r[0] for r in replies] == ["250", "250"]


def test_permanent_rejection_is_dead_at_once(
    db: psycopg.Connection[Any], mail_sink: MailSink, start_deliverer: Callable[..., Deliverer]
) -> None:
    user_id, _ = outbox(db, events=1, email="nobody@reject.test")
    start_deliverer(SMTP_URL=mail_sink.url)
    wait_until(lambda: statuses(db, user_id) == {"dead": 1}, timeout=20)
    row = db.execute(
        "SELECT attempts, last_error FROM deliveries WHERE user_id = %s", [user_id]
    ).fetchone()
    assert row is not None and row[0] == 1 and "550" in row[1]


def test_smtp_server_down_for_a_while_nothing_lost(
    db: psycopg.Connection[Any], start_deliverer: Callable[..., Deliverer]
) -> None:
    port = free_port()
    user_id, _ = outbox(db, events=5, email="bob@example.test")
    start_deliverer(SMTP_URL=f"smtp://127.0.0.1:{port}", DELIVERY_RETRY_SCHEDULE="0" + ",0.3" * 30)
    # Connection refused: every try fails and is retried.
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) >= 10 FROM delivery_attempts WHERE user_id = %s AND error LIKE %s",
                [user_id, "%unreachable%"],
            ).fetchone()
            == (True,)
        ),
        timeout=20,
    )
    assert statuses(db, user_id) == {"pending": 5}
    sink = MailSink(port)
    sink.start()
    try:
        wait_until(lambda: statuses(db, user_id) == {"delivered": 5}, timeout=20)
        time.sleep(0.5)
        assert sorted(m["Message-ID"] for m in sink.messages) == sorted(
            f"<delivery-{r[0]}@localhost>"
            for r in db.execute("SELECT id FROM deliveries WHERE user_id = %s", [user_id])
        )
    finally:
        sink.stop()


def test_no_more_mails_claimed_than_the_smtp_threads_start_soon(
    db: psycopg.Connection[Any], mail_sink: MailSink, start_deliverer: Callable[..., Deliverer]
) -> None:
    # A claimed row's lease runs while it waits for an SMTP thread: claiming all 12 at once
    # behind one slow thread would let the last ones' leases end before their turn, and be
    # claimed and sent again. At most two per thread are held at any moment.
    mail_sink.delay = 0.2
    user_id, _ = outbox(db, events=12, email="bob@example.test")
    start_deliverer(SMTP_URL=mail_sink.url, SMTP_CONNECTIONS="1")
    held: list[int] = []

    def done() -> bool:
        row = db.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending' AND attempts > 0),"
            " count(*) FILTER (WHERE status = 'delivered') FROM deliveries WHERE user_id = %s",
            [user_id],
        ).fetchone()
        assert row is not None
        held.append(row[0])
        return bool(row[1] == 12)

    wait_until(done, timeout=30, interval=0.01)
    assert max(held) <= 2, held
    assert len(mail_sink.messages) == 12
