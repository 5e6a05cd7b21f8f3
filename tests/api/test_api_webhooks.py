"""/api/v1/webhooks: endpoints with a secret shown once, refused URLs, isolation, the log."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask import Flask

from tests.api.conftest import Caller, error_of

PUBLIC = "https://93.184.215.14/hooks"  # an address literal: no DNS needed


def create(caller: Caller, **body: Any) -> Any:
    return caller.post("/api/v1/webhooks", json={"url": PUBLIC, **body})


def test_create_shows_the_secret_once(alice: Caller) -> None:
    r = create(alice, event_types=["scenario.executed"])
    assert r.status_code == 201, r.get_data(as_text=True)
    body = r.get_json()
    assert set(body) == {"id", "url", "event_types", "created_at", "disabled_at", "secret"}
    assert body["url"] == PUBLIC and body["event_types"] == ["scenario.executed"]
    assert body["secret"].startswith("whsec_")
    assert 24 <= len(base64.b64decode(body["secret"][len("whsec_") :])) <= 64
    listed = alice.get("/api/v1/webhooks").get_json()["items"]
    assert listed == [{k: v for k, v in body.items() if k != "secret"}]
    assert body["secret"] not in alice.get("/api/v1/webhooks").get_data(as_text=True)
    assert create(alice).get_json()["secret"] != body["secret"]


def test_secret_is_the_one_stored(alice: Caller, db: psycopg.Connection[Any]) -> None:
    body = create(alice).get_json()
    row = db.execute("SELECT secret FROM webhook_endpoints WHERE id = %s", [body["id"]]).fetchone()
    assert row == (body["secret"],)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/x",
        "https://user:pw@93.184.215.14/x",
        "https://user@93.184.215.14/x",
        "http://127.0.0.1:8080/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fe80::1]/x",
        "http://localhost/x",
        "https://does-not-exist.invalid/x",
        "https:///nohost",
        "https://93.184.215.14:99999/x",
        "not a url",
        "javascript:alert(1)",
    ],
)
def test_refused_urls(alice: Caller, url: str) -> None:
    assert error_of(alice.post("/api/v1/webhooks", json={"url": url}), 422)
    assert alice.get("/api/v1/webhooks").get_json()["items"] == []


def test_private_addresses_allowed_by_the_setting(
    make_app: Callable[..., Flask], as_role: Callable[[str], str], alice: Caller
) -> None:
    app = make_app(as_role("notifications_api"), webhook_allow_private=True)
    r = app.test_client().post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=alice.headers()
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    # Credentials and other schemes stay refused.
    r = app.test_client().post(
        "/api/v1/webhooks", json={"url": "http://a:b@127.0.0.1/x"}, headers=alice.headers()
    )
    assert error_of(r, 422)


@pytest.mark.parametrize(
    "body",
    [
        {"url": PUBLIC, "event_types": ["scenario.nope"]},
        {"url": PUBLIC, "event_types": []},
        {"url": PUBLIC, "event_types": "scenario.created"},
        {"url": PUBLIC, "event_types": [1]},
        {"url": 5},
        {},
        {"url": PUBLIC, "secret": "whsec_mine"},
    ],
)
def test_bad_bodies(alice: Caller, body: dict[str, Any]) -> None:
    assert error_of(alice.post("/api/v1/webhooks", json=body), 422)


def test_another_users_endpoint_is_not_found(alice: Caller, bob: Caller) -> None:
    ep = create(alice).get_json()["id"]
    assert error_of(bob.delete(f"/api/v1/webhooks/{ep}"), 404)
    assert error_of(bob.get(f"/api/v1/webhooks/{ep}/deliveries"), 404)
    assert bob.get("/api/v1/webhooks").get_json()["items"] == []
    assert alice.delete(f"/api/v1/webhooks/{ep}").status_code == 204
    assert error_of(alice.delete(f"/api/v1/webhooks/{ep}"), 404)
    assert alice.get("/api/v1/webhooks").get_json()["items"] == []


def test_delivery_log_pages(
    alice: Caller, bob: Caller, db: psycopg.Connection[Any], fan_out: Callable[[], int]
) -> None:
    ep = create(bob).get_json()["id"]
    for i in range(5):
        alice.post("/api/v1/scenarios", json={"name": f"S{i}"})
    fan_out()
    db.execute("UPDATE deliveries SET status = 'dead', attempts = 3, last_error = 'HTTP 500'")
    seen: list[int] = []
    cursor = None
    while True:
        q = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = bob.get(f"/api/v1/webhooks/{ep}/deliveries{q}").get_json()
        for item in page["items"]:
            assert set(item) == {
                "id",
                "event_id",
                "status",
                "attempts",
                "last_error",
                "delivered_at",
            }
            assert (item["status"], item["attempts"], item["last_error"]) == ("dead", 3, "HTTP 500")
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    assert error_of(bob.get(f"/api/v1/webhooks/{ep}/deliveries?cursor=zzz"), 422)
    assert error_of(bob.get(f"/api/v1/webhooks/{ep}/deliveries?limit=0"), 422)
