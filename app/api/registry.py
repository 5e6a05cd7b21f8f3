"""A small route registry: each route is declared once, with the pydantic models and status
codes that both validate its requests and describe it in the OpenAPI document.

Every declared route goes through the same pipeline: authenticate, parse path parameters
(malformed ids are 404: they name nothing), validate the query (422), read the body
(413, 415, 400, 422), call the handler inside one session, commit writes, render the model.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from app.api import models
from app.database import session
from app.errors import ApiError

log = logging.getLogger("notifications.api")

ParamKind = Literal["id", "name"]
Handler = Callable[..., BaseModel | dict[str, Any] | None]
H = TypeVar("H", bound=Handler)

_DIGITS = re.compile(r"[0-9]{1,19}")
_PARAM = re.compile(r"\{(\w+)\}")
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Malformed JSON body",
    401: "Missing, invalid or revoked bearer token",
    404: "Absent, or not yours",
    413: "Request body too large",
    415: "Body is not JSON (Content-Type must be application/json)",
    422: "Valid JSON, invalid values",
    503: "Not ready",
}
_PARAM_SCHEMAS: dict[ParamKind, dict[str, Any]] = {
    "id": {"type": "integer", "format": "int64", "minimum": 1, "maximum": models.BIGINT_MAX},
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
}


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

    def error_statuses(self) -> list[int]:
        statuses: set[int] = set()
        if self.auth:
            statuses.add(401)
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
    ) -> Callable[[H], H]:
        def register(handler: H) -> H:
            names = _PARAM.findall(path)
            declared = dict(params or {})
            if sorted(names) != sorted(declared):
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
            )
            self.operations.append(op)
            self.blueprint.add_url_rule(
                _PARAM.sub(r"<\1>", path),
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
            self._spec = build_spec(self)
        return self._spec


# The request pipeline


def _view(op: Operation, handler: Handler) -> Callable[..., Response]:
    def view(**raw_params: str) -> Response:
        args: list[Any] = []
        if op.auth:
            args.append(authenticate())
        kwargs: dict[str, Any] = {
            name: _path_value(kind, raw_params[name]) for name, kind in op.params.items()
        }
        if op.query is not None:
            kwargs["query"] = _validate(op.query, request.args.to_dict(flat=True))
        if op.body is not None:
            kwargs["body"] = _read_body(op.body, op.body_required)
        try:
            result = handler(*args, **kwargs)
            if op.method != "GET":
                session().commit()
        except (DataError, IntegrityError) as exc:
            # Validation should have caught it; a value the database refuses is still the
            # client's input, not a server fault.
            session().rollback()
            log.warning("database refused a value: %s", str(exc.orig).splitlines()[0])
            raise ApiError(422, "invalid", "a value was refused by the database") from None
        return _render(op, result)

    view.__name__ = op.operation_id
    view.__doc__ = op.summary
    return view


def authenticate() -> int:
    """The user behind the request's bearer token, or a 401."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    # A token is short printable ASCII; anything else cannot match and must not reach SQL.
    if len(token) > 512 or not (token.isascii() and token.isprintable()):
        raise ApiError(401, "unauthorized", "invalid or revoked token")
    user_id = session().execute(text("SELECT authenticate_token_v1(:t)"), {"t": token}).scalar()
    if user_id is None:
        raise ApiError(401, "unauthorized", "invalid or revoked token")
    return int(user_id)


def _path_value(kind: ParamKind, raw: str) -> int | str:
    if kind == "id":
        if _DIGITS.fullmatch(raw) and 1 <= int(raw) <= models.BIGINT_MAX:
            return int(raw)
    elif 0 < len(raw) <= 200 and "\x00" not in raw:
        return raw
    raise ApiError(404, "not_found", "no such resource")


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid", _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        # Keys come from the client: keep them short and printable in the message.
        loc = ".".join(str(p)[:40] for p in err["loc"]).encode("utf-8", "backslashreplace")
        where = loc.decode("ascii", "backslashreplace") or "body"
        message = err["msg"]
        if err["type"] == "string_pattern_mismatch":
            pattern = (err.get("ctx") or {}).get("pattern")
            message = (
                "must contain a visible character and no NUL character"
                if pattern == models.NOT_BLANK
                else "must not contain a NUL character"
            )
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(digits: str) -> int | float:
    # Python refuses to convert very long digit strings (a ValueError, so a 400); such a
    # number is valid JSON, only an invalid value, so hand validation something it rejects.
    return int(digits) if len(digits) <= 100 else math.inf


def _body_bytes() -> bytes:
    """The request body; a 413 beyond MAX_CONTENT_LENGTH, with or without a Content-Length."""
    limit = request.max_content_length
    if (
        request.content_length is not None
        or limit is None
        or "wsgi.input_terminated" not in request.environ
    ):
        # werkzeug answers 413 on a declared length over the limit, and reads nothing
        # from a stream the server does not terminate.
        return request.get_data(cache=True)
    # A chunked body: werkzeug's own limit truncates it silently, so read one byte past
    # the limit from the server's stream to tell "exactly the limit" from "more".
    stream = request.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = stream.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        raise ClientDisconnected() from None
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def _read_body(model: type[M], required: bool) -> M:
    raw = _body_bytes()
    if not required and not raw.strip():
        return model.model_validate({})
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    if not raw.strip():
        raise ApiError(400, "bad_request", "the body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "malformed JSON body: not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_request", f"malformed JSON body: {exc}") from None
    return _validate(model, data)


def _render(op: Operation, result: BaseModel | dict[str, Any] | None) -> Response:
    if result is None:
        return Response(status=op.status)
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    response = jsonify(payload)
    response.status_code = op.status
    return response


# The OpenAPI document


def build_spec(api: Api) -> dict[str, Any]:
    request_models = {m for op in api.operations for m in (op.body,) if m is not None}
    response_models = {models.Error} | {
        m
        for op in api.operations
        for m in (op.response, *op.other_statuses.values())
        if m is not None
    }
    ordered: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        *((m, "validation") for m in sorted(request_models, key=lambda m: m.__name__)),
        *((m, "serialization") for m in sorted(response_models, key=lambda m: m.__name__)),
    ]
    keys, defs = models_json_schema(ordered, ref_template="#/components/schemas/{model}")

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return keys[(model, mode)]  # type: ignore[index]

    def content(model: type[BaseModel] | None, media_type: str) -> dict[str, Any]:
        if model is not None:
            schema = ref(model, "serialization")
        else:
            schema = {"type": "object" if media_type == "application/json" else "string"}
        return {media_type: {"schema": schema}}

    paths: dict[str, dict[str, Any]] = {}
    for op in api.operations:
        responses: dict[str, Any] = {}
        success: dict[str, Any] = {"description": _REASONS.get(op.status, "OK")}
        if op.status != 204:
            success["content"] = content(op.response, op.media_type)
        if op.links:
            success["links"] = {
                name: {"operationId": target, "parameters": dict(parameters)}
                for name, (target, parameters) in op.links.items()
            }
        responses[str(op.status)] = success
        for status, model in op.other_statuses.items():
            responses[str(status)] = {
                "description": _REASONS.get(status, "Error"),
                "content": content(model, op.media_type),
            }
        for status in op.error_statuses():
            responses[str(status)] = {
                "description": _REASONS[status],
                "content": {"application/json": {"schema": ref(models.Error, "serialization")}},
            }
        operation: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "security": [{"bearer": []}] if op.auth else [],
            "responses": responses,
        }
        parameters: list[dict[str, Any]] = []
        for name, kind in op.params.items():
            parameter = {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _PARAM_SCHEMAS[kind],
            }
            if name in op.examples:
                parameter["example"] = op.examples[name]
            parameters.append(parameter)
        if op.query is not None:
            parameters += _query_parameters(op.query)
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": api.title, "version": api.version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from `notifications token issue USER_ID`.",
                }
            },
        },
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        prop.pop("title", None)
        description = prop.pop("description", None)
        # An absent parameter is the null; a query string cannot carry a JSON null.
        variants = [v for v in prop.pop("anyOf", []) if v.get("type") != "null"]
        if len(variants) == 1:
            prop = {**variants[0], **prop}
        if prop.get("default") is None:
            prop.pop("default", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters
