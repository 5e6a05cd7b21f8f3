"""The one place configuration is read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """An operator-facing configuration mistake (shown as one line, no traceback)."""


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {raw!r}")
    return value


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    # seconds between polls when no NOTIFY arrives; NOTIFY is only a hint
    poll_interval: float = 2.0
    # events claimed per fan-out transaction
    batch_size: int = 100
    log_format: str = "text"
    log_level: str = "INFO"
    listener_metrics_port: int | None = None
    max_body_bytes: int = 64 * 1024
    data_dir: Path = field(default_factory=lambda: Path(".data"))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        log_format = env.get("LOG_FORMAT", "text").lower()
        if log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
        metrics_port = env.get("LISTENER_METRICS_PORT")
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            poll_interval=_float(env, "POLL_INTERVAL", 2.0),
            batch_size=_int(env, "BATCH_SIZE", 100),
            log_format=log_format,
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            listener_metrics_port=_int(env, "LISTENER_METRICS_PORT", 1) if metrics_port else None,
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024),
            data_dir=Path(env.get("NOTIFICATIONS_DATA_DIR", ".data")),
        )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (a libpq URL such as postgresql://host/db)")
        return self.database_url
