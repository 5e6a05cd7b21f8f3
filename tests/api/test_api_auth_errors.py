"""Authentication and the error contract, across every route.

Each test loops over its cases rather than being parametrized: every test pays for a fresh
database, and these cases need nothing but an empty one.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.conftest import Caller, error_of

# Every authenticated route, with a request that would otherwise succeed or 404.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/me", None),
    ("PUT", "/api/v1/me", {"email": None}),
    ("GET", "/api/v1/scenarios", None),
    ("POST", "/api/v1/scenarios", {"name": "x"}),
    ("GET", "/api/v1/scenarios/1", None),
    ("POST", "/api/v1/scenarios/1/executions", {"status": "passed"}),
    ("DELETE", "/api/v1/scenarios/1", None),
    ("GET", "/api/v1/notifications", None),
    ("GET", "/api/v1/notifications/unread-count", None),
    ("POST", "/api/v1/notifications/1/read", None),
    ("POST", "/api/v1/notifications/1/unread", None),
    ("POST", "/api/v1/notifications/read-all", None),
    ("GET", "/api/v1/preferences", None),
    ("PUT", "/api/v1/preferences/scenario.created", {"enabled": False}),
    ("DELETE", "/api/v1/tokens/current", None),
    ("POST", "/api/v1/webhooks", {"url": "https://93.184.216.34/hook"}),
    ("GET", "/api/v1/webhooks", None),
    ("DELETE", "/api/v1/webhooks/1", None),
    ("GET", "/api/v1/webhooks/1/deliveries", None),
]

BAD_AUTHORIZATIONS: list[str | None] = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic YWxpY2U6c2VjcmV0",
    "Token ntf_0000",
    "Bearer ntf_0000000000000000",
    "Bearer " + "x" * 5000,
    "Bearer ntf_\u00e9\u00e8",
    "Bearer a\tb",
]


def test_every_api_route_is_covered_here(app: Flask) -> None:
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "api_v1.openapi"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    listed = {
        (m, p.replace("/1", "/<id:id>").replace("scenario.created", "<name:event_type>"))
        for m, p, _ in ROUTES
    }
    assert served == listed


def test_no_valid_token_is_401(client: FlaskClient, alice: Caller) -> None:
    for method, path, body in ROUTES:
        for authorization in BAD_AUTHORIZATIONS:
            headers = {} if authorization is None else {"Authorization": authorization}
            response = client.open(path, method=method, json=body, headers=headers)
            assert error_of(response, 401) == "unauthorized", (method, path, authorization)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_401(
    client: FlaskClient, db: psycopg.Connection[Any], alice: Caller, bob: Caller
) -> None:
    assert alice.get("/api/v1/me").status_code == 200
    db.execute("SELECT revoke_tokens(%s)", [alice.id])
    for method, path, body in ROUTES:
        response = client.open(path, method=method, json=body, headers=alice.headers())
        assert error_of(response, 401) == "unauthorized", (method, path)
    # Only alice's tokens went; bob's still works, and alice gets back in with a new one.
    assert bob.get("/api/v1/me").status_code == 200
    alice.token = db.execute("SELECT issue_token(%s)", [alice.id]).fetchone()[0]  # type: ignore[index]
    assert alice.get("/api/v1/me").get_json() == {
        "id": alice.id,
        "name": "alice",
        "email": None,
        "is_admin": False,
    }


def test_no_token_is_checked_before_anything_else(client: FlaskClient) -> None:
    # Without a token, a bad body or an absent id says nothing: 401 first.
    response = client.post("/api/v1/scenarios/abc/executions", data=b"{", headers={})
    assert error_of(response, 401) == "unauthorized"


def test_bearer_scheme_is_case_insensitive(client: FlaskClient, alice: Caller) -> None:
    response = client.get("/api/v1/me", headers={"Authorization": f"bearer  {alice.token} "})
    assert response.get_json() == {
        "id": alice.id,
        "name": "alice",
        "email": None,
        "is_admin": False,
    }


def test_each_token_is_its_own_user(alice: Caller, bob: Caller) -> None:
    assert alice.get("/api/v1/me").get_json() == {
        "id": alice.id,
        "name": "alice",
        "email": None,
        "is_admin": False,
    }
    assert bob.get("/api/v1/me").get_json() == {
        "id": bob.id,
        "name": "bob",
        "email": None,
        "is_admin": False,
    }


def test_openapi_needs_no_token(client: FlaskClient) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.get_json()["openapi"].startswith("3.")


NOT_FOUND = [
    ("GET", "/api/v1/nope"),
    ("GET", "/api/v1/scenarios/"),
    ("GET", "/api/v1/scenarios/abc"),
    ("GET", "/api/v1/scenarios/-1"),
    ("GET", "/api/v1/scenarios/0"),
    ("GET", "/api/v1/scenarios/1.5"),
    ("GET", "/api/v1/scenarios/1e3"),
    ("GET", "/api/v1/scenarios/%201"),
    ("GET", "/api/v1/scenarios/\u0661"),  # an Arabic-Indic digit: int() would take it
    ("GET", "/api/v1/scenarios/9223372036854775808"),
    ("GET", "/api/v1/scenarios/99999999999999999999999999999999"),
    ("GET", "/api/v1/scenarios/%00"),
    ("GET", "/api/v1/scenarios/%F0%9F%92%A9"),
    ("GET", "/api/v1/scenarios/9223372036854775807"),
    ("DELETE", "/api/v1/scenarios/9223372036854775807"),
    ("POST", "/api/v1/scenarios/9223372036854775807/executions"),
    ("POST", "/api/v1/notifications/9223372036854775808/read"),
    ("POST", "/api/v1/notifications/9223372036854775807/read"),
    ("POST", "/api/v1/notifications/x/unread"),
    ("PUT", "/api/v1/preferences/nope"),
    ("PUT", "/api/v1/preferences/a%00b"),
    ("PUT", "/api/v1/preferences/" + "x" * 300),
    ("PUT", "/api/v1/preferences/%ED%A0%80"),
    ("PUT", "/api/v1/preferences/SCENARIO.CREATED"),
]


def test_absent_or_malformed_ids_are_404(alice: Caller) -> None:
    for method, path in NOT_FOUND:
        body = {"enabled": True} if method == "PUT" else {"status": "passed"}
        response = alice.client.open(path, method=method, json=body, headers=alice.headers())
        assert error_of(response, 404) == "not_found", (method, path)


WRONG_METHOD = [
    ("DELETE", "/api/v1/me"),
    ("PUT", "/api/v1/webhooks"),
    ("POST", "/api/v1/webhooks/1/deliveries"),
    ("DELETE", "/api/v1/scenarios"),
    ("PATCH", "/api/v1/scenarios/1"),
    ("GET", "/api/v1/scenarios/1/executions"),
    ("GET", "/api/v1/notifications/1/read"),
    ("DELETE", "/api/v1/notifications/unread-count"),
    ("GET", "/api/v1/notifications/read-all"),
    ("POST", "/api/v1/preferences"),
    ("GET", "/api/v1/preferences/scenario.created"),
    ("POST", "/api/v1/openapi.json"),
]


def test_wrong_method_is_405_with_allow(alice: Caller) -> None:
    for method, path in WRONG_METHOD:
        response = alice.client.open(path, method=method, headers=alice.headers())
        assert error_of(response, 405) == "method_not_allowed", (method, path)
        assert response.headers["Allow"]


BODY_ROUTES = [
    ("POST", "/api/v1/scenarios"),
    ("POST", "/api/v1/scenarios/{sid}/executions"),
    ("PUT", "/api/v1/preferences/scenario.created"),
    ("POST", "/api/v1/notifications/read-all"),
]


@pytest.fixture
def scenario_id(alice: Caller) -> int:
    return int(alice.post("/api/v1/scenarios", json={"name": "S"}).get_json()["id"])


def test_body_too_large_is_413(app: Flask, alice: Caller, scenario_id: int) -> None:
    big = b'{"name": "' + b"x" * app.config["MAX_CONTENT_LENGTH"] + b'"}'
    for method, path in BODY_ROUTES:
        response = alice.client.open(
            path.format(sid=scenario_id),
            method=method,
            data=big,
            headers=alice.headers({"Content-Type": "application/json"}),
        )
        assert error_of(response, 413) == "payload_too_large", (method, path)


def test_body_that_is_not_json_is_415(alice: Caller, scenario_id: int) -> None:
    for method, path in BODY_ROUTES:
        for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "json"):
            headers = alice.headers({"Content-Type": content_type} if content_type else None)
            response = alice.client.open(
                path.format(sid=scenario_id), method=method, data=b'{"up_to": 1}', headers=headers
            )
            assert error_of(response, 415) == "unsupported_media_type", (path, content_type)


MALFORMED = [
    b"{",
    b"{'name': 1}",
    b'{"name": NaN}',
    b'{"name": Infinity}',
    b"[1,]",
    b"\xff\xfe\xfd",
    b'{"name": "\xc3\x28"}',
    b"[" * 30000,
    b"  ",
    b"",
]


def test_malformed_json_is_400(alice: Caller, scenario_id: int) -> None:
    # read-all takes an empty body as "no body"; the others need one.
    for method, path in BODY_ROUTES:
        for data in MALFORMED:
            if path.endswith("read-all") and not data.strip():
                continue
            response = alice.client.open(
                path.format(sid=scenario_id),
                method=method,
                data=data,
                headers=alice.headers({"Content-Type": "application/json"}),
            )
            assert error_of(response, 400) == "bad_request", (path, data[:20])


INVALID: list[tuple[str, str, Any]] = [
    ("POST", "/api/v1/scenarios", []),
    ("POST", "/api/v1/scenarios", "name"),
    ("POST", "/api/v1/scenarios", None),
    ("POST", "/api/v1/scenarios", {}),
    ("POST", "/api/v1/scenarios", {"name": ""}),
    ("POST", "/api/v1/scenarios", {"name": "   "}),
    ("POST", "/api/v1/scenarios", {"name": 5}),
    ("POST", "/api/v1/scenarios", {"name": None}),
    ("POST", "/api/v1/scenarios", {"name": ["x"]}),
    ("POST", "/api/v1/scenarios", {"name": "a\u0000b"}),
    ("POST", "/api/v1/scenarios", {"name": "\ud800"}),
    ("POST", "/api/v1/scenarios", {"name": "x" * 201}),
    ("POST", "/api/v1/scenarios", {"name": "x", "description": "a\u0000"}),
    ("POST", "/api/v1/scenarios", {"name": "x", "description": "\udfff"}),
    ("POST", "/api/v1/scenarios", {"name": "x", "description": "d" * 5001}),
    ("POST", "/api/v1/scenarios", {"name": "x", "description": None}),
    ("POST", "/api/v1/scenarios", {"name": "x", "created_by": 2}),
    ("POST", "/api/v1/scenarios", {"name": "x", "\u0000\ud800" * 50: 1}),
    ("POST", "/api/v1/scenarios/{sid}/executions", {"status": "skipped"}),
    ("POST", "/api/v1/scenarios/{sid}/executions", {"status": "PASSED"}),
    ("POST", "/api/v1/scenarios/{sid}/executions", {"status": True}),
    ("POST", "/api/v1/scenarios/{sid}/executions", {}),
    ("PUT", "/api/v1/preferences/scenario.created", {"enabled": "true"}),
    ("PUT", "/api/v1/preferences/scenario.created", {"enabled": 1}),
    ("PUT", "/api/v1/preferences/scenario.created", {"enabled": None}),
    ("PUT", "/api/v1/preferences/scenario.created", {}),
    ("PUT", "/api/v1/preferences/scenario.created", {"enabled": True, "x": 1}),
    ("POST", "/api/v1/notifications/read-all", {"up_to": "5"}),
    ("POST", "/api/v1/notifications/read-all", {"up_to": 1.5}),
    ("POST", "/api/v1/notifications/read-all", {"up_to": True}),
    ("POST", "/api/v1/notifications/read-all", {"up_to": 0}),
    ("POST", "/api/v1/notifications/read-all", {"up_to": 2**63}),
    ("POST", "/api/v1/notifications/read-all", b'{"up_to": 1' + b"0" * 5000 + b"}"),
    ("POST", "/api/v1/notifications/read-all", {"up_to": 1.5e300}),
    ("POST", "/api/v1/notifications/read-all", {"before": 1}),
    ("POST", "/api/v1/notifications/read-all", [1]),
    ("POST", "/api/v1/notifications/read-all", None),
]


def test_valid_json_invalid_values_are_422(alice: Caller, scenario_id: int) -> None:
    for method, path, body in INVALID:
        # Encoded here: the test client's json= would refuse lone surrogates.
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = alice.client.open(
            path.format(sid=scenario_id),
            method=method,
            data=data,
            headers=alice.headers({"Content-Type": "application/json"}),
        )
        assert error_of(response, 422) == "invalid", (method, path, data[:60])
    # Nothing was written by any of them.
    assert len(alice.get("/api/v1/scenarios").get_json()["items"]) == 1


def test_422_message_names_the_field(alice: Caller) -> None:
    response = alice.post("/api/v1/scenarios", json={"name": "a\u0000"})
    assert response.get_json()["error"]["message"] == (
        "name: must contain a visible character and no control or format character"
        " (such as a bidi override or a zero-width space)"
    )
    response = alice.put("/api/v1/preferences/scenario.created", json={"enabled": "yes"})
    assert response.get_json()["error"]["message"] == "enabled: Input should be a valid boolean"


BAD_QUERIES = [
    "limit=0",
    "limit=101",
    "limit=-5",
    "limit=abc",
    "limit=",
    "limit=1.5",
    "limit=99999999999999999999999999999999999999",
    "limit=%00",
    "status=new",
    "status=%00",
    "status=",
    "cursor=%00",
    "cursor=abc",
    "cursor=%ED%A0%80",
    "cursor=" + "A" * 201,
    "cursor=eyJiZWZvcmUiOiAiMSJ9",  # {"before": "1"}
    "cursor=eyJiZWZvcmUiOiAwfQ",  # {"before": 0}
    "cursor=eyJiZWZvcmUiOiAxZTk5OX0",  # {"before": 1e999}
    "cursor=eyJiZWZvcmUiOiB0cnVlfQ",  # {"before": true}
    "cursor=WzFd",  # [1]
    "page=2",
]


def test_bad_feed_query_is_422(alice: Caller) -> None:
    for query in BAD_QUERIES:
        response = alice.get(f"/api/v1/notifications?{query}")
        assert error_of(response, 422) == "invalid", query


def test_unicode_round_trips(alice: Caller) -> None:
    name = "Caf\u00e9 \u2615 \U0001f680 \u0627\u0644\u0639\u0631\u0628\u064a\u0629"
    response = alice.post(
        "/api/v1/scenarios", json={"name": name, "description": "\u00fc\n\t\u2028"}
    )
    assert response.status_code == 201
    scenario = alice.get(f"/api/v1/scenarios/{response.get_json()['id']}").get_json()
    assert scenario["name"] == name
    assert scenario["description"] == "\u00fc\n\t\u2028"


def test_json_with_charset_and_suffix_types_is_accepted(alice: Caller) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = alice.post(
            "/api/v1/scenarios",
            data=b'{"name": "typed"}',
            headers=alice.headers({"Content-Type": content_type}),
        )
        assert response.status_code == 201, content_type
