"""Prometheus metrics of the listener."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PROCESSED = Counter(
    "notifications_events_processed", "Scenario events fanned out by this listener"
)
NOTIFICATIONS_WRITTEN = Counter(
    "notifications_written", "user_notifications rows written by this listener"
)
BATCH_DURATION = Histogram(
    "notifications_batch_duration_seconds",
    "Duration of one fan-out transaction",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_LAG = Histogram(
    "notifications_event_lag_seconds",
    "Time from an event's trigger to its fan-out",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BACKLOG = Gauge("notifications_backlog_events", "Unprocessed scenario events after the last wake")
RECONNECTS = Counter("notifications_listener_reconnects", "Reconnections after a lost connection")
WAKEUPS = Counter("notifications_listener_wakeups", "Wake-ups of the listener loop", ["reason"])
FANOUT_FAILURES = Counter(
    "notifications_fanout_failures", "Fan-out statements that failed on a working connection"
)
EVENTS_SET_ASIDE = Counter(
    "notifications_events_set_aside",
    "Events set aside after FANOUT_MAX_ATTEMPTS failed fan-outs (see notification_backlog)",
)
SET_ASIDE = Gauge(
    "notifications_set_aside_events", "Events set aside and waiting for a redeliver, last seen"
)
