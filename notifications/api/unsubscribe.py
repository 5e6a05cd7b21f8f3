"""`/unsubscribe/TOKEN`: the one-click unsubscribe of e-mails (RFC 8058), no bearer token.

POST (a mail client's one-click, or the page's button) turns the token's e-mail preference
off; GET shows a page with that button and changes nothing (link scanners follow GETs).
The token is signed (notifications/unsubscribe.py): a forged or altered one is a 400, and
nothing changes.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from markupsafe import escape

from notifications.api.database import connection, execute
from notifications.api.errors import error_response
from notifications.config import Settings
from notifications.queries import query
from notifications.unsubscribe import Unsubscribe, read_token

bp = Blueprint("unsubscribe", __name__)

# The inbox's policy (api/inbox.py), but the page's own form may post back to this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "style-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _token(token: str) -> Unsubscribe | None:
    settings: Settings = current_app.config["SETTINGS"]
    if not settings.unsubscribe_secret or len(token) > 1000:
        return None
    return read_token(settings.unsubscribe_secret, token)


def _page(status: int, title: str, body: str) -> Response:
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/static/inbox.css"></head>'
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "text/html"
        and request.accept_mimetypes[best] > request.accept_mimetypes["application/json"]
    )


_INVALID = "this unsubscribe link is invalid (altered or incomplete)"


@bp.get("/unsubscribe/<token>")
def show(token: str) -> Response:
    found = _token(token)
    if found is None:
        return _page(400, "Invalid link", f"<p>{escape(_INVALID)}.</p>")
    return _page(
        200,
        "Unsubscribe",
        f"<p>Stop e-mails about <strong>{escape(found.event_type)}</strong>?</p>"
        '<form method="post"><button type="submit">Unsubscribe</button></form>',
    )


@bp.post("/unsubscribe/<token>")
def unsubscribe(token: str) -> Response:
    found = _token(token)
    if found is None:
        if _wants_html():
            return _page(400, "Invalid link", f"<p>{escape(_INVALID)}.</p>")
        return error_response(400, "invalid_token", _INVALID)
    execute(query("unsubscribe_as"), {"user_id": found.user_id})
    row = execute(
        query("deliver_unsubscribe"),
        {"user_id": found.user_id, "event_type": found.event_type, "channel": found.channel},
    ).fetchone()
    connection().commit()
    if row is None:
        return error_response(404, "not_found", "no such user or event type")
    if _wants_html():
        return _page(
            200,
            "Unsubscribed",
            f"<p>You will get no more e-mails about <strong>{escape(found.event_type)}"
            "</strong>. Switch them back on in your inbox's preferences.</p>",
        )
    return jsonify({"unsubscribed": {"event_type": row["event_type"], "channel": found.channel}})
