"""The one place configuration is read from the environment, and validated.

Every process (the CLI, the daemons, each uvicorn worker of the API, `dev`) builds one
`Settings` through `Settings.from_env()` and hands it down; nothing else reads os.environ.
The variables are listed, with their defaults, in the README.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """An operator-facing configuration mistake (shown as one line, no traceback)."""


class _Refused(ValueError):
    """A value a validator refused; its message is the whole operator-facing sentence."""


def _bounded(kind: type[int] | type[float], maximum: float, zero: bool = False) -> Any:
    """A before-validator: parse `kind` from text and keep it in (0, maximum], or [0, maximum]
    when `zero` is allowed."""
    what = "a number" if kind is float else "a whole number"

    def parse(raw: Any) -> Any:
        if isinstance(raw, str):
            try:
                value = kind(raw.strip())
            except ValueError:
                raise _Refused(f"must be {what}, not {raw!r}") from None
        else:
            value = raw
        # NaN fails every comparison, so it is refused here along with the infinities.
        if (isinstance(value, float) and not math.isfinite(value)) or not (
            (value >= 0 if zero else value > 0) and value <= maximum
        ):
            low = "at least 0" if zero else "greater than 0"
            raise _Refused(f"must be {low} and at most {maximum:g}, not {str(raw)!r}")
        return value

    return BeforeValidator(parse)


def _seconds_list(raw: Any) -> Any:
    """'0.005,0.01,0.02': a comma-separated list of delays in seconds, each in (0, 1]."""
    if not isinstance(raw, str):
        return raw
    if raw.strip().lower() in ("none", "off"):
        return ()
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise _Refused(f"must be comma-separated seconds like 0.005,0.01, not {raw!r}") from None
    if not all(0 < v <= 1 for v in values):
        raise _Refused(f"must be delays greater than 0 and at most 1 second, not {raw!r}")
    return values


def _schedule(raw: Any) -> Any:
    """'0,5,300': seconds before each delivery try; every retry waits more than 0."""
    if not isinstance(raw, str):
        return raw
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise _Refused(f"must be comma-separated seconds like 0,5,300, not {raw!r}") from None
    if not all(math.isfinite(v) and 0 <= v <= 7 * 86400 for v in values) or not all(
        v > 0 for v in values[1:]
    ):
        raise _Refused(
            "must be seconds between 0 and 604800, every one after the first greater than 0,"
            f" not {raw!r}"
        )
    return values


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,
        extra="ignore",
        # Values arrive as text from the environment; the validators below parse them.
        validate_default=False,
    )

    # -- every process ---------------------------------------------------------------------
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    log_format: Literal["text", "json"] = Field("text", validation_alias="LOG_FORMAT")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    data_dir: Path = Field(Path(".data"), validation_alias="NOTIFICATIONS_DATA_DIR")

    # -- listener --------------------------------------------------------------------------
    # seconds between polls when no NOTIFY arrives; NOTIFY is only a hint
    poll_interval: Annotated[float, _bounded(float, 3600)] = Field(
        2.0, validation_alias="POLL_INTERVAL"
    )
    # events claimed per fan-out transaction
    batch_size: Annotated[int, _bounded(int, 100_000)] = Field(100, validation_alias="BATCH_SIZE")
    # notifications one fan-out transaction may write before it returns (the rest waits)
    batch_row_budget: Annotated[int, _bounded(int, 100_000_000)] = Field(
        500_000, validation_alias="BATCH_ROW_BUDGET"
    )
    # after a busy wake, re-poll at these delays before sleeping (see listener/worker.py)
    linger_delays: Annotated[tuple[float, ...], NoDecode, BeforeValidator(_seconds_list)] = Field(
        (0.005, 0.01, 0.02, 0.04, 0.08), validation_alias="LINGER_DELAYS"
    )
    # pause between two fan-out calls while the backlog is busy, so a batch can gather
    # (fewer, larger fan-outs at the price of latency; 0: take the next batch at once)
    busy_pause: Annotated[float, _bounded(float, 1.0, zero=True)] = Field(
        0.0, validation_alias="BUSY_PAUSE"
    )
    # ceiling of the reconnect backoff
    max_backoff: Annotated[float, _bounded(float, 600)] = Field(
        10.0, validation_alias="MAX_BACKOFF"
    )
    # the listener pins its own session limits, whatever its role or database sets: seconds
    # one fan-out statement may run (0: no limit), and may wait for a lock
    listener_statement_timeout: Annotated[float, _bounded(float, 86400, zero=True)] = Field(
        600.0, validation_alias="LISTENER_STATEMENT_TIMEOUT"
    )
    listener_lock_timeout: Annotated[float, _bounded(float, 3600, zero=True)] = Field(
        5.0, validation_alias="LISTENER_LOCK_TIMEOUT"
    )
    # failed fan-outs of one event before it is set aside (see `notifications event redeliver`)
    fanout_max_attempts: Annotated[int, _bounded(int, 1000)] = Field(
        3, validation_alias="FANOUT_MAX_ATTEMPTS"
    )
    listener_metrics_port: Annotated[int | None, _bounded(int, 65535)] = Field(
        None, validation_alias="LISTENER_METRICS_PORT"
    )
    listener_metrics_addr: str = Field("127.0.0.1", validation_alias="LISTENER_METRICS_ADDR")

    # -- deliverer (`notifications deliver`) ----------------------------------------------
    # seconds between polls of the outbox when no NOTIFY arrives
    delivery_poll_interval: Annotated[float, _bounded(float, 3600)] = Field(
        2.0, validation_alias="DELIVERY_POLL_INTERVAL"
    )
    # the retry schedule: seconds before each try (the first is "now"); dead after the last
    delivery_retry_schedule: Annotated[tuple[float, ...], NoDecode, BeforeValidator(_schedule)] = (
        Field(
            (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400),
            validation_alias="DELIVERY_RETRY_SCHEDULE",
        )
    )
    # seconds a claimed delivery stays leased; a deliverer killed mid-send leaves its rows
    # to come due again after this (keep it well above WEBHOOK_TIMEOUT)
    delivery_lease: Annotated[float, _bounded(float, 86400)] = Field(
        60.0, validation_alias="DELIVERY_LEASE"
    )
    # sends in flight at once, per deliverer
    delivery_concurrency: Annotated[int, _bounded(int, 10_000)] = Field(
        100, validation_alias="DELIVERY_CONCURRENCY"
    )
    # seconds a webhook receiver has to answer
    webhook_timeout: Annotated[float, _bounded(float, 300)] = Field(
        10.0, validation_alias="WEBHOOK_TIMEOUT"
    )
    # smtp://[user:password@]host:port (STARTTLS when offered) or smtps://... (TLS)
    smtp_url: str | None = Field(None, validation_alias="SMTP_URL")
    # SMTP connections one deliverer keeps open (and sends over) at once
    smtp_connections: Annotated[int, _bounded(int, 100)] = Field(
        4, validation_alias="SMTP_CONNECTIONS"
    )
    mail_from: str = Field("notifications@localhost", validation_alias="MAIL_FROM")
    # where the API is reached from outside: the base of e-mails' unsubscribe links
    public_url: str = Field("http://127.0.0.1:8000", validation_alias="PUBLIC_URL")
    # signs the unsubscribe links of e-mails; the API and the deliverer need the same one
    unsubscribe_secret: str | None = Field(
        None, min_length=16, validation_alias="UNSUBSCRIBE_SECRET"
    )
    deliver_metrics_port: Annotated[int | None, _bounded(int, 65535)] = Field(
        None, validation_alias="DELIVER_METRICS_PORT"
    )
    deliver_metrics_addr: str = Field("127.0.0.1", validation_alias="DELIVER_METRICS_ADDR")
    # webhooks to private, loopback and link-local addresses (refused unless 1; `dev` sets it)
    webhook_allow_private: bool = Field(False, validation_alias="WEBHOOK_ALLOW_PRIVATE")

    # -- API -------------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", validation_alias="API_HOST")
    api_port: Annotated[int, _bounded(int, 65535)] = Field(8000, validation_alias="API_PORT")
    api_workers: Annotated[int, _bounded(int, 64)] = Field(2, validation_alias="API_WORKERS")
    api_threads: Annotated[int, _bounded(int, 256)] = Field(8, validation_alias="API_THREADS")
    # database connections per API worker process; keep at least API_THREADS
    api_pool_size: Annotated[int, _bounded(int, 1000)] = Field(10, validation_alias="API_POOL_SIZE")
    # seconds a request waits for a pooled connection before it is answered 503
    api_pool_timeout: Annotated[float, _bounded(float, 300)] = Field(
        5.0, validation_alias="API_POOL_TIMEOUT"
    )
    max_body_bytes: Annotated[int, _bounded(int, 64 * 1024 * 1024)] = Field(
        64 * 1024, validation_alias="MAX_BODY_BYTES"
    )

    # -- the stream (GET /api/v1/stream, served by every API process) ----------------------
    # seconds between the rounds a serve process runs without a hint: the most a lost
    # NOTIFY (or a LISTEN connection being replaced) delays a notification
    stream_poll_interval: Annotated[float, _bounded(float, 60)] = Field(
        2.0, validation_alias="STREAM_POLL_INTERVAL"
    )
    # seconds between heartbeat comments on an idle stream (proxies close silent ones; the
    # contract promises one at least every 20 s)
    stream_heartbeat: Annotated[float, _bounded(float, 20)] = Field(
        15.0, validation_alias="STREAM_HEARTBEAT"
    )
    # open streams one user may hold on one serve process (tabs share one per browser)
    stream_max_per_user: Annotated[int, _bounded(int, 10_000)] = Field(
        20, validation_alias="STREAM_MAX_PER_USER"
    )
    # a direct connection for each serve process's one LISTEN session, when DATABASE_URL
    # goes through a transaction-pooling PgBouncer (LISTEN needs a session); unset: the
    # LISTEN uses DATABASE_URL, and through such a pooler streams are served by polling
    stream_listen_url: str | None = Field(None, validation_alias="STREAM_LISTEN_URL")
    # open streams one serve process holds at most
    stream_max_streams: Annotated[int, _bounded(int, 1_000_000)] = Field(
        10_000, validation_alias="STREAM_MAX_STREAMS"
    )

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        level = str(value).upper()
        if level not in _LEVELS:
            raise _Refused(f"must be one of {', '.join(_LEVELS)}, not {value!r}")
        return level

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Settings from the process environment, or from `env` alone when given."""
        try:
            if env is None:
                return cls()
            return cls.model_validate({k: v for k, v in env.items() if v != ""})
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (a libpq URL such as postgresql://host/db)")
        return self.database_url


def _describe(exc: ValidationError) -> str:
    """The first refusal as one sentence naming the variable, as an operator wrote it."""
    err = exc.errors(include_url=False)[0]
    name = str(err["loc"][0]).upper() if err["loc"] else "configuration"
    field = Settings.model_fields.get(str(err["loc"][0]).lower()) if err["loc"] else None
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, str):
        name = alias
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _Refused):
        return f"{name} {cause}"
    if err["type"] == "literal_error" and name == "LOG_FORMAT":
        return f"LOG_FORMAT must be 'text' or 'json', not {err['input']!r}"
    return f"{name}: {err['msg']}, not {err.get('input')!r}"
