"""`notifications serve`: the API and the stream under uvicorn (docs/code-layout.md says why).

Each of API_WORKERS processes builds the app with the same factory from the environment,
and holds its own LISTEN connection and its own streams.
"""

from __future__ import annotations

import uvicorn

from notifications import logs
from notifications.config import Settings

# Seconds open requests get to finish on SIGTERM; streams are ended at once (their clients
# resume where they were), so this bounds slow JSON requests only.
GRACEFUL_SECONDS = 20


def serve(settings: Settings) -> None:
    uvicorn.run(
        "notifications.api.asgi:create_asgi_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_config=logs.logging_dict(settings.log_format, settings.log_level),
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
        proxy_headers=False,
    )
