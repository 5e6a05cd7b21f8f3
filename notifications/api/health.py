"""Liveness, readiness and metrics."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from notifications.api import database, multiproc
from notifications.queries import query

bp = Blueprint("health", __name__)
log = logging.getLogger("notifications.api")

# Seconds a probe waits for a pooled connection: a load balancer's check must answer fast,
# and a database that cannot hand out a connection in that time is not ready.
HEALTH_TIMEOUT = 2.0


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time.

    The API never fans out, but it is the process that is always scraped: the backlog and
    the connected listeners seen from the database are what alerts are written on, and they
    are the same whichever API worker answers.
    """

    def __init__(self, pool: database.Pool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "notifications_db_up", "1 when the database answered the last scrape, else 0"
        )
        try:
            with self._pool.connection(timeout=HEALTH_TIMEOUT) as conn, conn.transaction():
                conn.execute(query("scrape_timeout"))
                row = conn.execute(query("scrape_gauges")).fetchone()
                assert row is not None  # an aggregate always has a row
        except Exception as exc:  # unreachable, not migrated, or no connection in time
            log.warning("metrics: database query failed: %s", str(exc).splitlines()[0])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "notifications_db_backlog_events",
            "Scenario events not yet fanned out (notification_backlog.unprocessed_events)",
            value=row["unprocessed_events"],
        )
        yield GaugeMetricFamily(
            "notifications_db_backlog_oldest_age_seconds",
            "Age of the oldest scenario event not yet fanned out, 0 when none",
            value=row["oldest_age_seconds"],
        )
        yield GaugeMetricFamily(
            "notifications_db_listeners",
            "Listener processes connected to the database (listener_activity)",
            value=row["listeners"],
        )


def _app_registry() -> CollectorRegistry:
    # A registry per app, not the global one: tests and `dev` build several apps in one
    # process, and the global registry refuses a second collector with the same names.
    registry = current_app.extensions.get("metrics_registry")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DatabaseCollector(database.pool()))
        current_app.extensions["metrics_registry"] = registry
    return registry


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@functools.cache
def _revisions() -> tuple[str, frozenset[str]]:
    """The code's head revision and every revision it knows."""
    from notifications import migrate

    return migrate.head_revision(), migrate.known_revisions()


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        with database.pool().connection(timeout=HEALTH_TIMEOUT) as conn:
            row = conn.execute(query("schema_revision")).fetchone()
        revision = row["version_num"] if row else None
    except Exception as exc:  # any failure to reach or read the database means not ready
        current_app.logger.warning("not ready: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return jsonify(
            {"status": "unavailable", "reason": "database unreachable or not migrated"}
        ), 503
    head, known = _revisions()
    if revision == head:
        return jsonify({"status": "ready", "revision": revision}), 200
    if revision is not None and revision not in known:
        # Migrated by a newer release, between its `migrate` and this host's restart.
        # Migrations only add (docs/migrations.md), so this code still works: stay in
        # the load balancer, or a rolling upgrade would empty it.
        return jsonify({"status": "ready", "revision": revision, "code_revision": head}), 200
    return jsonify(
        {"status": "unavailable", "reason": f"database at {revision}, code expects {head}"}
    ), 503


@bp.get("/metrics")
def metrics() -> Response:
    # The process-wide registry (process metrics; the listener's too when `notifications dev`
    # runs both in one process), or every serve worker's (multiproc.py), followed by this
    # app's database gauges.
    process_wide = multiproc.registry() if multiproc.enabled() else REGISTRY
    body = generate_latest(process_wide) + generate_latest(_app_registry())
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
