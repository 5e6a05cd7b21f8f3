"""The one place configuration is read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """An operator-facing configuration mistake (shown as one line, no traceback)."""


def _number(env: dict[str, str], name: str, default: float, maximum: float, kind: type) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a number" if kind is float else "a whole number"
        raise ConfigError(f"{name} must be {what}, not {raw!r}") from None
    # NaN fails every comparison, so it is refused here along with the infinities.
    if not (0 < value <= maximum):
        raise ConfigError(f"{name} must be greater than 0 and at most {maximum:g}, not {raw!r}")
    return value


def _float(env: dict[str, str], name: str, default: float, maximum: float) -> float:
    return float(_number(env, name, default, maximum, float))


def _int(env: dict[str, str], name: str, default: int, maximum: int) -> int:
    return int(_number(env, name, default, maximum, int))


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
    listener_metrics_addr: str = "127.0.0.1"
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
            poll_interval=_float(env, "POLL_INTERVAL", 2.0, maximum=3600),
            batch_size=_int(env, "BATCH_SIZE", 100, maximum=100_000),
            log_format=log_format,
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            listener_metrics_port=(
                _int(env, "LISTENER_METRICS_PORT", 1, maximum=65535) if metrics_port else None
            ),
            listener_metrics_addr=env.get("LISTENER_METRICS_ADDR") or "127.0.0.1",
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024, maximum=64 * 1024 * 1024),
            data_dir=Path(env.get("NOTIFICATIONS_DATA_DIR", ".data")),
        )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (a libpq URL such as postgresql://host/db)")
        return self.database_url
