"""The OpenAPI 3.1 document, generated from the route registry (routing.py) and the
pydantic models, so that what is served and what is documented cannot drift apart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from notifications.api import models

if TYPE_CHECKING:
    from notifications.api.routing import Api, ParamKind

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Malformed JSON body",
    401: "Missing, invalid or revoked bearer token",
    404: "Absent, or not yours",
    413: "Request body too large",
    415: "Body is not JSON (Content-Type must be application/json)",
    403: "Allowed to see but not to do (e.g. delete a scenario someone else created)",
    422: "Valid JSON, invalid values",
    503: "Not ready",
}
_ERROR_REASONS = {
    503: "The database is unavailable or busy with conflicting changes; retry (Retry-After)",
}
_PARAM_SCHEMAS: dict[ParamKind, dict[str, Any]] = {
    "id": {"type": "integer", "format": "int64", "minimum": 1, "maximum": models.BIGINT_MAX},
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
}


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
                "description": _ERROR_REASONS.get(status, _REASONS[status]),
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

    paths["/api/v1/stream"] = {"get": _stream_operation(ref(models.Error, "serialization"))}
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


def _stream_operation(error: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/stream: served by the async side of `serve` (notifications/stream/), not
    by a Flask route, and documented here so that the document covers the whole API."""

    def failure(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": error}}}

    return {
        "operationId": "stream",
        "summary": "Server-sent events: new notifications and the unread count (docs/api.md)",
        "tags": ["notifications"],
        "security": [{"bearer": []}],
        "parameters": [
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "The last `id:` received, or a feed page's watermark: resume"
                " after it, missing nothing and repeating nothing.",
                "schema": {"type": "string", "maxLength": 4096},
            },
            {
                "name": "last_event_id",
                "in": "query",
                "required": False,
                "description": "The same as the Last-Event-ID header.",
                "schema": {"type": "string", "maxLength": 4096},
            },
        ],
        "responses": {
            "200": {
                "description": "`event: notification` (data: a notification), `event: unread`"
                ' (data: {"unread": N}), each with an `id:` position; a `: ping` comment'
                " while idle. The stream stays open.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "401": failure(_REASONS[401]),
            "405": failure("Only GET (and HEAD)"),
            "422": failure("Last-Event-ID is not a position from this stream"),
            "429": failure("Too many open streams for this user (Retry-After)"),
            "503": failure("Too many streams on this process, or the database is unavailable"),
        },
    }
