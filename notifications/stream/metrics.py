"""The stream's Prometheus metrics, on the API's /metrics.

With several serve workers, prometheus_client's multiprocess mode adds up every worker's
figures (notifications/api/server.py sets it up): a scrape reaches one worker, and must not
show that worker's streams alone. The gauges count live workers only.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OPEN = Gauge("notifications_stream_open", "Streams open (all workers)", multiprocess_mode="livesum")
OPENED = Counter("notifications_stream_opened_total", "Streams opened")
REFUSED = Counter(
    "notifications_stream_refused_total", "Stream requests refused, by reason", ["reason"]
)
ENDED = Counter(
    "notifications_stream_ended_total",
    "Streams the server ended (token revoked, slow reader, shutdown), by reason",
    ["reason"],
)
SENT = Counter(
    "notifications_stream_events_total", "Events queued for streams, by event", ["event"]
)
LAG = Histogram(
    "notifications_stream_lag_seconds",
    "From an event's fan-out (processed_at) to its notification being queued for a stream",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ROUNDS = Counter("notifications_stream_rounds_total", "Rounds run, by what woke them", ["cause"])
ROUND_SECONDS = Histogram(
    "notifications_stream_round_seconds",
    "Time of one round (one statement for every open stream)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ROUND_ERRORS = Counter("notifications_stream_round_errors_total", "Rounds that failed")
RECONNECTS = Counter(
    "notifications_stream_listen_reconnects_total",
    "LISTEN connections replaced (lost, frozen, or the database restarted)",
)
LISTENING = Gauge(
    "notifications_stream_listening",
    "Workers whose LISTEN connection is up (1 per worker)",
    multiprocess_mode="livesum",
)
