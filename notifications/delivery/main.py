"""`notifications deliver`: the daemon's entry point."""

from __future__ import annotations

from notifications.config import Settings
from notifications.db import check_url
from notifications.delivery.worker import Deliverer
from notifications.metricsport import metrics_port


def run_deliverer(settings: Settings) -> int:
    check_url(settings.require_database_url())
    deliverer = Deliverer(settings)
    with metrics_port(
        settings.deliver_metrics_port, settings.deliver_metrics_addr, "DELIVER_METRICS_PORT"
    ):
        deliverer.run(install_signal_handlers=True)
    return 0
