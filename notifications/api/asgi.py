"""The serve process: the Flask app and the stream behind one port (docs/code-layout.md).

uvicorn runs this ASGI app. GET /api/v1/stream is a native async route (many idle streams,
no thread each); every other path goes to the same Flask app as before, run in a thread
pool by a2wsgi, so the JSON API keeps its code, its errors and its limits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from a2wsgi import WSGIMiddleware
from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from notifications.api import create_app, database, multiproc
from notifications.config import Settings
from notifications.sdnotify import SdNotifier
from notifications.stream import endpoint
from notifications.stream.hub import Hub


def _input_terminated(app: Any) -> Any:
    """a2wsgi hands the app a body that ends where the request's does (chunked or not), as
    gunicorn did; werkzeug reads a chunked body only when told so."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return wrapped


def create_asgi_app(settings: Settings | None = None, flask_app: Flask | None = None) -> Starlette:
    """The one factory of `notifications serve` (each worker calls it), `dev` and the tests."""
    settings = settings or Settings.from_env()
    flask_app = flask_app or create_app(settings)
    hub = Hub(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        multiproc.prune_dead_workers()
        await hub.start()
        # Under systemd (Type=notify, NotifyAccess=all): each worker says so once it serves;
        # the first READY=1 is the one systemd waits for. Never STOPPING=1 from a worker:
        # systemd would take one worker's retirement (a HUP's rolling restart) for the
        # whole service stopping.
        notifier = SdNotifier()
        notifier.ready("serving")
        notifier.close()
        try:
            yield
        finally:
            await hub.stop()
            multiproc.retire()

    # The JSON API's threads: as many as gunicorn gave each worker (API_THREADS).
    flask_asgi = WSGIMiddleware(_input_terminated(flask_app), workers=settings.api_threads)
    app = Starlette(
        routes=[
            # Every method: a partial match would fall through to Flask's 404; the endpoint
            # answers a 405 itself.
            Route(endpoint.PATH, endpoint.stream, methods=endpoint.ALL_METHODS),
            Mount("/", app=cast(ASGIApp, flask_asgi)),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.flask = flask_app
    return app


def close(app: Starlette) -> None:
    """The Flask app's pool (the hub's closes with the lifespan)."""
    database.close(app.state.flask)


def end_streams(app: Starlette) -> None:
    """End every open stream now (from any thread): what a stop does before the server
    waits for its connections, when no signal reached sse-starlette (a server in a thread)."""
    app.state.hub.end_all_threadsafe()
