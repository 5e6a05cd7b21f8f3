"""GET /api/v1/stream: the authenticated user's server-sent events (docs/api.md).

An async route, so that an idle stream costs a coroutine and a socket, not a thread or a
database connection. Errors have the JSON API's shape, and are answered before the stream
starts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from notifications.bearer import bearer_token, token_hash, well_formed
from notifications.positions import BadPosition, Position
from notifications.stream.hub import Hub, Refused, Subscriber

PATH = "/api/v1/stream"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# What an EventSource client waits before it reconnects (the `retry:` field), in ms.
RETRY_MS = 2000
SEND_TIMEOUT = 30.0
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def error(status: int, code: str, message: str, retry_after: int | None = None) -> Response:
    headers = dict(_HEADERS)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, status, headers=headers, media_type="application/json")


class _Stream(EventSourceResponse):
    """The events of one subscriber; it leaves the hub however the response ends."""

    def __init__(self, hub: Hub, sub: Subscriber, heartbeat: float) -> None:
        self._hub = hub
        self._sub = sub
        # A client that stops reading (its window full) fails the send after SEND_TIMEOUT
        # instead of holding the response for ever; it resumes from its last position.
        super().__init__(
            self._events(), ping=heartbeat, headers=_HEADERS, send_timeout=SEND_TIMEOUT
        )

    async def _events(self) -> AsyncIterator[ServerSentEvent | bytes]:
        yield ServerSentEvent(comment="stream open", retry=RETRY_MS)
        # Already encoded by the hub, once per event for all the streams it goes to.
        async for encoded in self._sub.messages():
            yield encoded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.close(self._sub)


async def stream(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    if request.method not in ("GET", "HEAD"):
        response = error(405, "method_not_allowed", f"{request.method} is not allowed here")
        response.headers["Allow"] = "GET, HEAD"
        return response
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None:
        return error(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    if not well_formed(token):
        return error(401, "unauthorized", "invalid or revoked token")
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    position = None
    if last:
        try:
            position = Position.decode(last)
        except BadPosition:
            return error(
                422,
                "invalid",
                "Last-Event-ID: not a position from this stream (nor a feed watermark)",
            )
    hashed = token_hash(token)
    try:
        if request.method == "HEAD":  # what a GET would answer, without opening a stream
            await hub.authenticate(hashed)
            return Response(status_code=200, headers=_HEADERS, media_type="text/event-stream")
        sub = await hub.open(hashed, position)
    except Refused as refused:
        return error(refused.status, refused.code, refused.message, refused.retry_after)
    return _Stream(hub, sub, hub.settings.stream_heartbeat)
