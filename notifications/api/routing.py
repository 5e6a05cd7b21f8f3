"""A small route registry: each route is declared once, with the pydantic models and status
codes that both validate its requests and describe it in the OpenAPI document (openapi.py).

Every declared route goes through the same pipeline: authenticate (auth.py), reject a
malformed path parameter (404: it names nothing), validate the query (422), read the body
(body.py: 413, 415, 400, 422), call the handler on the request's connection, commit
writes, render the model.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import psycopg
from flask import Blueprint, Flask, Response, jsonify, request
from pydantic import BaseModel
from werkzeug.routing import BaseConverter

from notifications.api import database, models
from notifications.api.auth import authenticate
from notifications.api.body import read_body, validate
from notifications.api.errors import ApiError, invalid, not_found, unavailable

log = logging.getLogger("notifications.api")

ParamKind = Literal["id", "name"]
Handler = Callable[..., BaseModel | dict[str, Any] | None]
H = TypeVar("H", bound=Handler)

_PARAM = re.compile(r"\{(\w+)\}")


# -- path parameters ---------------------------------------------------------------------------


class Malformed:
    """A path segment that cannot name anything. The route still matches, so that the
    pipeline can answer 401 before 404: without a token, nothing is said about ids."""

    def __init__(self, raw: str) -> None:
        self.raw = raw


class IdConverter(BaseConverter):
    """A row id: 1 to 19 ASCII digits, within PostgreSQL's bigint."""

    regex = "[^/]+"
    _DIGITS = re.compile(r"[0-9]{1,19}")

    def to_python(self, value: str) -> int | Malformed:
        if self._DIGITS.fullmatch(value) and 1 <= int(value) <= models.BIGINT_MAX:
            return int(value)
        return Malformed(value)

    def to_url(self, value: Any) -> str:
        return str(value)


class NameConverter(BaseConverter):
    """A name such as an event type: 1 to 200 characters, no NUL (text cannot hold one)."""

    regex = "[^/]+"

    def to_python(self, value: str) -> str | Malformed:
        if 0 < len(value) <= 200 and "\x00" not in value:
            return value
        return Malformed(value)


CONVERTERS: dict[str, type[BaseConverter]] = {"id": IdConverter, "name": NameConverter}


def init_app(app: Flask) -> None:
    """Before any blueprint: rules are compiled against the app's converters."""
    app.url_map.converters.update(CONVERTERS)

    @app.after_request
    def _no_store(response: Response) -> Response:
        # Personal data and tokens' answers: no shared or browser cache may keep any of
        # it, errors included (every /api/v1 answer, matched route or not).
        if request.path == "/api" or request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI template, absolute: /api/v1/scenarios/{id}
    operation_id: str
    summary: str
    tag: str
    params: Mapping[str, ParamKind] = field(default_factory=dict)
    query: type[models.Query] | None = None
    body: type[models.Request] | None = None
    body_required: bool = True
    response: type[BaseModel] | None = None
    media_type: str = "application/json"
    status: int = 200
    other_statuses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    auth: bool = True
    examples: Mapping[str, Any] = field(default_factory=dict)
    links: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()

    def error_statuses(self) -> list[int]:
        statuses: set[int] = set(self.errors)
        if self.auth:
            # A route with a token reaches the database: it may be down or too busy (503).
            statuses |= {401, 503}
        if self.params:
            statuses.add(404)
        if self.query is not None:
            statuses.add(422)
        if self.body is not None:
            statuses |= {400, 413, 415, 422}
        return sorted(statuses)


class Api:
    """Routes of one blueprint, and the OpenAPI document generated from them."""

    def __init__(self, blueprint: Blueprint, prefix: str, title: str, version: str) -> None:
        self.blueprint = blueprint
        self.prefix = prefix
        self.title = title
        self.version = version
        self.operations: list[Operation] = []
        self._spec: dict[str, Any] | None = None

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        response: type[BaseModel] | None = None,
        status: int = 200,
        params: Mapping[str, ParamKind] | None = None,
        query: type[models.Query] | None = None,
        body: type[models.Request] | None = None,
        body_required: bool = True,
        auth: bool = True,
        examples: Mapping[str, Any] | None = None,
        links: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
        errors: tuple[int, ...] = (),
    ) -> Callable[[H], H]:
        def register(handler: H) -> H:
            declared = dict(params or {})
            if sorted(_PARAM.findall(path)) != sorted(declared):
                raise TypeError(f"{path}: declare the kind of every path parameter")
            op = Operation(
                method=method,
                path=self.prefix + path,
                operation_id=handler.__name__,
                summary=summary,
                tag=tag,
                params=declared,
                query=query,
                body=body,
                body_required=body_required,
                response=response,
                status=status,
                auth=auth,
                examples=dict(examples or {}),
                links=dict(links or {}),
                errors=errors,
            )
            self.operations.append(op)
            self.blueprint.add_url_rule(
                _PARAM.sub(lambda m: f"<{declared[m.group(1)]}:{m.group(1)}>", path),
                endpoint=handler.__name__,
                view_func=_view(op, handler),
                methods=[method],
            )
            return handler

        return register

    def document(self, op: Operation) -> None:
        """Describe a route served elsewhere (the health endpoints) in the same document."""
        self.operations.append(op)

    def spec(self) -> dict[str, Any]:
        if self._spec is None:
            from notifications.api.openapi import build_spec

            self._spec = build_spec(self)
        return self._spec


# -- the request pipeline ----------------------------------------------------------------------


# A request's transaction that loses a serialization check or a deadlock is run again,
# whole (authentication included: it sets transaction-local state), this many times in all.
ATTEMPTS = 4
_CONFLICTS = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def _view(op: Operation, handler: Handler) -> Callable[..., Response]:
    def view(**path: Any) -> Response:
        args: list[Any] = [authenticate()] if op.auth else []
        if any(isinstance(value, Malformed) for value in path.values()):
            raise not_found()
        kwargs: dict[str, Any] = dict(path)
        if op.query is not None:
            kwargs["query"] = validate(op.query, request.args.to_dict(flat=True))
        if op.body is not None:
            kwargs["body"] = read_body(op.body, op.body_required)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if attempt > 1:
                    args = [authenticate()] if op.auth else []
                return _render(op, _run(op, handler, args, kwargs))
            except _CONFLICTS as exc:
                database.connection().rollback()
                log.info(
                    "transaction conflict (%s), attempt %d of %d",
                    exc.sqlstate,
                    attempt,
                    ATTEMPTS,
                )
                if attempt < ATTEMPTS:
                    # Jittered, so that the transactions that collided do not collide again.
                    time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise unavailable("the database is busy with conflicting changes; try again shortly")

    view.__name__ = op.operation_id
    view.__doc__ = op.summary
    return view


def _run(op: Operation, handler: Handler, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """One attempt: the handler and the commit, in the request's transaction."""
    try:
        result = handler(*args, **kwargs)
        if op.method != "GET":
            database.connection().commit()
        return result
    except _CONFLICTS:
        raise
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        # Validation should have caught it; a value the database refuses is still the
        # client's input, not a server fault. The teardown rolls the transaction back.
        log.warning("database refused a value: %s", str(exc).splitlines()[0])
        _require_user(op, args)
        raise invalid("a value was refused by the database") from None
    except psycopg.OperationalError as exc:
        # The server went away mid-request: nothing was committed, the client may retry.
        log.warning("database unavailable: %s", str(exc).strip().splitlines()[0:1])
        raise unavailable() from None
    except ApiError as exc:
        if exc.status in (404, 422):
            _require_user(op, args)
        raise
    except psycopg.Error:
        _require_user(op, args)
        raise


def _require_user(op: Operation, args: list[Any]) -> None:
    """A failure caused by the user's deletion after authentication is a 401: the token
    no longer names anyone, which is what the client must learn. Authenticating again (in
    a fresh transaction) says so, and raises that 401."""
    if not op.auth or not args:
        return
    try:
        database.connection().rollback()
        authenticate()
    except psycopg.Error:
        return  # the original failure says more than this check can


def _render(op: Operation, result: BaseModel | dict[str, Any] | None) -> Response:
    if result is None:
        return Response(status=op.status)
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    response = jsonify(payload)
    response.status_code = op.status
    return response
