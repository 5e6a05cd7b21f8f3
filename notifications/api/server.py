"""`notifications serve`: the API and the stream under uvicorn (docs/code-layout.md says why).

Each of API_WORKERS processes builds the app with the same factory from the environment,
and holds its own LISTEN connection and its own streams.
"""

from __future__ import annotations

import contextlib
import os
import resource

import uvicorn

from notifications import logs
from notifications.api import multiproc
from notifications.config import Settings

# Seconds open requests get to finish on SIGTERM; streams are ended at once (their clients
# resume where they were), so this bounds slow JSON requests only.
GRACEFUL_SECONDS = 20


def raise_open_files_limit() -> int:
    """Each open stream is a socket: lift the soft limit on open files to the hard one
    (often 1,024 against 500,000+), which a process may do unprivileged. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(settings: Settings) -> None:
    raise_open_files_limit()  # before the workers start: they inherit it
    # Each worker builds its Settings from the environment (the one config source), so the
    # command line's flags are put there first, or a worker would not see them.
    os.environ.update(
        API_HOST=settings.api_host,
        API_PORT=str(settings.api_port),
        API_WORKERS=str(settings.api_workers),
        API_THREADS=str(settings.api_threads),
    )
    if settings.api_workers > 1:
        multiproc.prepare()
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
