"""Liveness, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.database import engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    from notifications.migrate import head_revision

    try:
        with engine().connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:  # any failure to reach or read the database means not ready
        current_app.logger.warning("not ready: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return jsonify({"status": "unavailable", "reason": "database unreachable or not migrated"}), 503
    if revision != head_revision():
        return jsonify({"status": "unavailable", "reason": f"database at {revision}, code expects {head_revision()}"}), 503
    return jsonify({"status": "ready", "revision": revision}), 200


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
