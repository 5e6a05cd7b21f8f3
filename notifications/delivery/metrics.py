"""Prometheus metrics of the deliverer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENDS = Counter(
    "notifications_delivery_sends", "Delivery tries by channel and outcome", ["channel", "outcome"]
)
SEND_DURATION = Histogram(
    "notifications_delivery_send_seconds",
    "Duration of one send (HTTP request or SMTP transaction)",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_LAG = Histogram(
    "notifications_delivery_lag_seconds",
    "Time from a notification's event to its successful delivery",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
IN_FLIGHT = Gauge("notifications_delivery_in_flight", "Sends in progress in this deliverer")
RECONNECTS = Counter(
    "notifications_deliverer_reconnects", "Reconnections of the deliverer after a lost connection"
)
ENDPOINTS_DISABLED = Counter(
    "notifications_webhook_endpoints_disabled", "Endpoints disabled after a 410 Gone"
)
