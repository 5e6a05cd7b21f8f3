"""The SQLAlchemy engine, created once per app, and one session per request."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from notifications.db import conninfo, sqlalchemy_url


def init_app(app: Flask) -> None:
    url = app.config["DATABASE_URL"]
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=app.config.get("DB_POOL_SIZE", 10),
        max_overflow=app.config.get("DB_MAX_OVERFLOW", 10),
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"conninfo": conninfo(url, "notifications-api")},
    )
    app.extensions["engine"] = engine
    app.teardown_appcontext(_close_session)


def engine() -> Engine:
    return current_app.extensions["engine"]  # type: ignore[no-any-return]


def session() -> Session:
    if "db_session" not in g:
        g.db_session = Session(engine())
    return g.db_session  # type: ignore[no-any-return]


def _close_session(exc: BaseException | None) -> None:
    s: Any = g.pop("db_session", None)
    if s is not None:
        if exc is not None:
            s.rollback()
        s.close()
