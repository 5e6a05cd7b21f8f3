"""`notifications listen`: the daemon's entry point."""

from __future__ import annotations

from notifications.config import Settings
from notifications.db import check_url
from notifications.listener.worker import Listener
from notifications.metricsport import metrics_port
from notifications.sdnotify import SdNotifier


def build_listener(settings: Settings, notifier: SdNotifier | None = None) -> Listener:
    url = settings.require_database_url()
    check_url(url)
    return Listener(
        url,
        poll_interval=settings.poll_interval,
        batch_size=settings.batch_size,
        row_budget=settings.batch_row_budget,
        linger_delays=settings.linger_delays,
        busy_pause=settings.busy_pause,
        max_backoff=settings.max_backoff,
        statement_timeout=settings.listener_statement_timeout,
        lock_timeout=settings.listener_lock_timeout,
        max_attempts=settings.fanout_max_attempts,
        notifier=notifier,
    )


def run_listener(settings: Settings) -> int:
    listener = build_listener(settings)
    listener.install_signal_handlers()
    with metrics_port(
        settings.listener_metrics_port, settings.listener_metrics_addr, "LISTENER_METRICS_PORT"
    ):
        listener.run()
    return 0
