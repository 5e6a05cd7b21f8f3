"""The HTTP API: a thin Flask app over the database. It never fans out."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response

from notifications.config import Settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """The one factory behind `notifications dev`, `notifications serve` and the tests.

    `overrides` are Flask config keys (TESTING=True); every knob of ours is a Settings field.
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.config.update(overrides)

    from notifications.api import (
        database,
        errors,
        health,
        inbox,
        routes,
        routing,
        tokens,  # noqa: F401  (adds its routes to routes.bp)
        unsubscribe,
        webhooks,  # noqa: F401  (adds its routes to routes.bp)
    )

    routing.init_app(app)
    database.init_app(app, settings)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(inbox.bp)
    app.register_blueprint(unsubscribe.bp)

    @app.after_request
    def _nosniff(response: Response) -> Response:
        # Errors echo client input; a browser must never sniff a response into HTML.
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app
