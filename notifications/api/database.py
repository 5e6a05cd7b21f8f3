"""The API's connection pool, created once per app, and one pooled connection per request.

psycopg 3 with psycopg_pool, as in every other process (docs/code-layout.md says why).
A request holds at most one connection, from its first query to its teardown; its
transaction is committed by the route pipeline (routing.py) or rolled back here.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg
from flask import Flask, current_app, g
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from notifications.api.errors import ApiError
from notifications.config import Settings
from notifications.db import conninfo

log = logging.getLogger("notifications.api")

Conn = psycopg.Connection[DictRow]
Pool = ConnectionPool[Conn]


def init_app(app: Flask, settings: Settings) -> None:
    pool: Pool = ConnectionPool(
        conninfo(settings.require_database_url(), "notifications-api"),
        connection_class=psycopg.Connection[DictRow],
        kwargs={"row_factory": dict_row},
        min_size=1,
        max_size=settings.api_pool_size,
        timeout=settings.api_pool_timeout,
        # Recycled now and then, so a server-side change (a failover, new settings) reaches
        # every connection within the half hour.
        max_lifetime=1800,
        check=ConnectionPool.check_connection,
        name="notifications-api",
        open=False,
    )
    # Without waiting: the API starts while the database is down, and says so on /readyz.
    pool.open(wait=False)
    app.extensions["db_pool"] = pool
    app.teardown_appcontext(_release)


def pool(app: Flask | None = None) -> Pool:
    return (app or current_app).extensions["db_pool"]  # type: ignore[no-any-return]


def close(app: Flask) -> None:
    """Close the app's pool (tests and `dev` build apps and must not leak connections)."""
    pool(app).close()


def connection() -> Conn:
    """This request's connection, taken from the pool on first use."""
    conn: Conn | None = g.get("db_conn")
    if conn is None:
        try:
            conn = pool().getconn()
        except PoolTimeout:
            raise ApiError(
                503, "unavailable", "the database is unavailable; try again shortly"
            ) from None
        g.db_conn = conn
    return conn


def execute(sql: Any, params: dict[str, Any] | None = None) -> psycopg.Cursor[DictRow]:
    return connection().execute(sql, params)


def _release(exc: BaseException | None) -> None:
    conn: Conn | None = g.pop("db_conn", None)
    if conn is None:
        return
    # Whatever the pipeline did not commit is not meant to stay.
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
    pool().putconn(conn)
