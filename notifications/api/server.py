"""`notifications serve`: the API under gunicorn, built by the same factory."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from notifications import logs
from notifications.api import create_app
from notifications.config import Settings


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.settings)


def serve(settings: Settings) -> None:
    _Gunicorn(
        settings,
        {
            "bind": f"{settings.api_host}:{settings.api_port}",
            "workers": settings.api_workers,
            "threads": settings.api_threads,
            "worker_class": "gthread",
            "accesslog": "-",
            "graceful_timeout": 20,
            "timeout": 30,
            "logconfig_dict": logs.logging_dict(settings.log_format, settings.log_level),
        },
    ).run()
