"""Request input: the JSON body (413, 415, 400) and validation by pydantic models (422)."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from notifications.api import models
from notifications.api.errors import ApiError, invalid

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        # Keys come from the client: keep them short and printable in the message.
        loc = ".".join(str(p)[:40] for p in err["loc"]).encode("utf-8", "backslashreplace")
        where = loc.decode("ascii", "backslashreplace") or "body"
        message = err["msg"]
        if err["type"] == "string_pattern_mismatch":
            pattern = (err.get("ctx") or {}).get("pattern")
            message = {
                models.NOT_BLANK: "must contain a visible character and no NUL character",
                models.SAFE_NAME: (
                    "must contain a visible character and no control or format character"
                    " (such as a bidi override or a zero-width space)"
                ),
                models.SAFE_TEXT: (
                    "must not contain control or format characters (such as a bidi"
                    " override or a zero-width space); line breaks and tabs are fine"
                ),
            }.get(str(pattern), "must not contain a NUL character")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(digits: str) -> int | float:
    # Python refuses to convert very long digit strings (a ValueError, so a 400); such a
    # number is valid JSON, only an invalid value, so hand validation something it rejects.
    return int(digits) if len(digits) <= 100 else math.inf


def body_bytes() -> bytes:
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


def read_body(model: type[M], required: bool) -> M:
    """The body as `model`: 415 unless JSON, 400 when empty or malformed, 422 when invalid."""
    raw = body_bytes()
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
    return validate(model, data)
