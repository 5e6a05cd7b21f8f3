"""`notifications listen`: the daemon's entry point."""

from __future__ import annotations

from prometheus_client import start_http_server

from notifications.config import ConfigError, Settings
from notifications.db import check_url
from notifications.listener.worker import Listener
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
    server = None
    if settings.listener_metrics_port:
        # Loopback only: an unauthenticated HTTP port should not face the network by
        # default; a Prometheus on another host scrapes it through an SSH tunnel or proxy.
        try:
            server, _thread = start_http_server(
                settings.listener_metrics_port, addr=settings.listener_metrics_addr
            )
        except OSError as exc:
            raise ConfigError(
                f"LISTENER_METRICS_PORT {settings.listener_metrics_port}: {exc.strerror or exc}"
            ) from None
    try:
        listener.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0
