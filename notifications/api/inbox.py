"""The web inbox at `/`: one static page that talks only to the public JSON API."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, send_from_directory

bp = Blueprint("inbox", __name__)

# The page is static and loads nothing from elsewhere, so it can refuse everything else:
# no inline script or style, no framing, and fetch() only to this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


@bp.get("/")
def index() -> Response:
    static_folder = current_app.static_folder
    assert static_folder is not None  # create_app always sets one
    return send_from_directory(static_folder, "index.html", max_age=0)


@bp.after_app_request
def _page_headers(response: Response) -> Response:
    # Every HTML page, however it is reached (`/`, /static/index.html, a page added later),
    # not only the route that was written with them in mind.
    if response.mimetype == "text/html":
        # A page with a policy of its own (the unsubscribe form posts back) keeps it.
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
    return response
