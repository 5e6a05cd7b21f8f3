"""/api/v1/tokens: the caller's own API token. Issuing stays with operators (the API's
database role may not), so the API only ever gives a token up."""

from __future__ import annotations

from notifications.api.auth import current_token_id
from notifications.api.database import execute
from notifications.api.routes import api
from notifications.queries import query


@api.route(
    "DELETE",
    "/tokens/current",
    summary="Revoke the token this request is made with (sign out); other tokens stay",
    tag="me",
    status=204,
)
def revoke_current_token(me: int) -> None:
    execute(query("revoke_current_token"), {"me": me, "token_id": current_token_id()})
