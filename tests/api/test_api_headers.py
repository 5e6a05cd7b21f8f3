"""Headers every response carries, whatever served it."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from tests.api.conftest import Caller


def test_every_response_is_nosniff(app: Flask, client: FlaskClient, alice: Caller) -> None:
    scenario = alice.post("/api/v1/scenarios", json={"name": "S"})
    big = b'{"name": "' + b"x" * app.config["MAX_CONTENT_LENGTH"] + b'"}'
    responses = {
        "201 json": scenario,
        "200 json": alice.get("/api/v1/scenarios"),
        "204": alice.delete(f"/api/v1/scenarios/{scenario.get_json()['id']}"),
        "openapi": client.get("/api/v1/openapi.json"),
        "401": client.get("/api/v1/notifications"),
        "404 route": client.get("/api/v1/nothing-here"),
        "404 id": alice.get("/api/v1/scenarios/0"),
        "405": client.put("/healthz"),
        "413": alice.post(
            "/api/v1/scenarios", data=big, headers={"Content-Type": "application/json"}
        ),
        "415": alice.post("/api/v1/scenarios", data="name=S"),
        "healthz": client.get("/healthz"),
        "readyz": client.get("/readyz"),
        "metrics": client.get("/metrics"),
        "inbox": client.get("/"),
        "static": client.get("/static/inbox.js"),
    }
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {
        "201 json": 201,
        "200 json": 200,
        "204": 204,
        "openapi": 200,
        "401": 401,
        "404 route": 404,
        "404 id": 404,
        "405": 405,
        "413": 413,
        "415": 415,
        "healthz": 200,
        "readyz": 200,
        "metrics": 200,
        "inbox": 200,
        "static": 200,
    }
    for name, response in responses.items():
        assert response.headers.get("X-Content-Type-Options") == "nosniff", name
        response.close()
