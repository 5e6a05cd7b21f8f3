from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from notifications.config import Settings
from notifications.delivery.worker import Deliverer
from tests.conftest import wait_until
from tests.delivery.support import MailSink, Receiver, run_receiver

SECRET = "unsubscribe-secret-for-tests-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as r:
        yield r


@pytest.fixture
def mail_sink() -> Iterator[MailSink]:
    sink = MailSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def start_deliverer(database_url: str) -> Iterator[Callable[..., Deliverer]]:
    """In-process deliverers on the test database (each in a thread); stopped at teardown."""
    started: list[tuple[Deliverer, threading.Thread]] = []

    def start(**env: str) -> Deliverer:
        settings = Settings.from_env(
            {
                "DATABASE_URL": database_url,
                "WEBHOOK_ALLOW_PRIVATE": "1",
                "DELIVERY_POLL_INTERVAL": "0.5",
                "DELIVERY_RETRY_SCHEDULE": "0,0.2,0.2",
                "WEBHOOK_TIMEOUT": "1",
                "UNSUBSCRIBE_SECRET": SECRET,
                "PUBLIC_URL": "http://inbox.example",
                **env,
            }
        )
        deliverer = Deliverer(settings)
        errors: list[BaseException] = []

        def target() -> None:
            try:
                deliverer.run()
            except BaseException as exc:  # surfaced by the test through `errors`
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        wait_until(lambda: deliverer.ready or errors or not thread.is_alive(), timeout=20)
        if errors:
            raise errors[0]
        started.append((deliverer, thread))
        return deliverer

    yield start
    for deliverer, _ in started:
        deliverer.stop()
    for _, thread in started:
        thread.join(30)
