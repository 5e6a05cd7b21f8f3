"""`notifications deliver`: the daemon's entry point."""

from __future__ import annotations

from prometheus_client import start_http_server

from notifications.config import ConfigError, Settings
from notifications.db import check_url
from notifications.delivery.worker import Deliverer


def run_deliverer(settings: Settings) -> int:
    check_url(settings.require_database_url())
    deliverer = Deliverer(settings)
    server = None
    if settings.deliver_metrics_port:
        # Loopback only by default, as the listener's (see listener/main.py).
        try:
            server, _thread = start_http_server(
                settings.deliver_metrics_port, addr=settings.deliver_metrics_addr
            )
        except OSError as exc:
            raise ConfigError(
                f"DELIVER_METRICS_PORT {settings.deliver_metrics_port}: {exc.strerror or exc}"
            ) from None
    try:
        deliverer.run(install_signal_handlers=True)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0
