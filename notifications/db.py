"""Connections to PostgreSQL: one place that knows how URLs and sessions are shaped."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from notifications.config import ConfigError

# Dead peers are noticed by the kernel within about 30 s even when no query is running.
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


def check_url(database_url: str) -> dict[str, Any]:
    """Parse a libpq URL, turning a malformed one into a one-line ConfigError."""
    try:
        return conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"DATABASE_URL is not a valid libpq URL: {exc}") from None


def conninfo(database_url: str, application_name: str, **extra: Any) -> str:
    params = check_url(database_url)
    params.setdefault("connect_timeout", 5)
    # TCP keepalives only apply to TCP; libpq ignores them for a Unix socket.
    return make_conninfo(
        "", **{**KEEPALIVE, **params, "application_name": application_name, **extra}
    )


def connect(
    database_url: str, application_name: str, autocommit: bool = False
) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo(database_url, application_name), autocommit=autocommit)


def sqlalchemy_url(database_url: str) -> str:
    """The same server as a SQLAlchemy URL, with the psycopg 3 driver."""
    check_url(database_url)
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    if database_url.startswith("postgresql+psycopg://"):
        return database_url
    # A key=value conninfo string: every parameter as a query item, percent-encoded, so that
    # a value holding a space, a quote, "&", "#" or "%" (a password) arrives unchanged.
    return "postgresql+psycopg:///?" + urlencode(
        {k: str(v) for k, v in conninfo_to_dict(database_url).items()}, quote_via=quote
    )
