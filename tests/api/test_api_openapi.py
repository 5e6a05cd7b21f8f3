"""The OpenAPI document is generated from the routes and models that serve requests."""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from flask import Flask
from flask.testing import FlaskClient

from notifications.api import models


def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()  # type: ignore[no-any-return]


def test_document_lists_exactly_the_served_routes(app: Flask, client: FlaskClient) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in spec(client)["paths"].items()
        for method in operations
    }
    served = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(("api_v1.", "health."))
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    # The stream is served beside Flask, by the ASGI app (tests/stream/).
    assert documented == served | {("GET", "/api/v1/stream")}
    assert ("GET", "/api/v1/notifications/unread-count") in documented
    assert {"/healthz", "/readyz", "/metrics"} <= {path for _, path in documented}


def test_every_api_operation_but_the_document_needs_a_token(client: FlaskClient) -> None:
    document = spec(client)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            needs_token = path.startswith("/api/v1/") and path != "/api/v1/openapi.json"
            assert (operation["security"] == [{"bearer": []}]) is needs_token, (method, path)
            assert ("401" in operation["responses"]) is needs_token, (method, path)


def test_status_codes_are_documented(client: FlaskClient) -> None:
    paths = spec(client)["paths"]

    def statuses(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    # 503: every route with a token reaches the database (down, or conflicts on every try).
    assert statuses("post", "/api/v1/scenarios") == {
        "201",
        "400",
        "401",
        "413",
        "415",
        "422",
        "503",
    }
    assert statuses("delete", "/api/v1/scenarios/{id}") == {"204", "401", "403", "404", "503"}
    assert statuses("get", "/api/v1/notifications") == {"200", "401", "422", "503"}
    assert statuses("put", "/api/v1/preferences/{event_type}") == {
        "200",
        "400",
        "401",
        "404",
        "413",
        "415",
        "422",
        "503",
    }
    assert statuses("get", "/readyz") == {"200", "503"}
    read_all = paths["/api/v1/notifications/read-all"]["post"]["requestBody"]
    assert read_all["required"] is False
    error = paths["/api/v1/me"]["get"]["responses"]["401"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/Error"}


def test_schemas_are_the_validating_models(client: FlaskClient) -> None:
    schemas = spec(client)["components"]["schemas"]
    template = "#/components/schemas/{model}"
    for model in (models.ScenarioCreate, models.ExecutionCreate, models.PreferenceUpdate):
        assert schemas[model.__name__] == model.model_json_schema(ref_template=template)
    assert schemas["ScenarioCreate"]["additionalProperties"] is False
    assert schemas["PreferenceUpdate"]["properties"]["enabled"]["type"] == "boolean"
    feed = spec(client)["paths"]["/api/v1/notifications"]["get"]["parameters"]
    by_name = {p["name"]: p for p in feed}
    assert by_name["limit"]["schema"] == {
        "default": 20,
        "maximum": 100,
        "minimum": 1,
        "type": "integer",
    }
    assert by_name["status"]["schema"]["enum"] == ["unread", "read", "all"]
    # Every reference resolves.
    text = str(spec(client))
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in schemas


def test_schemathesis_reads_every_operation(app: Flask, client: FlaskClient) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    labels = {result.ok().label for result in schema.get_all_operations()}
    documented = {
        f"{method.upper()} {path}"
        for path, operations in spec(client)["paths"].items()
        for method in operations
    }
    # schemathesis leaves out the document it was loaded from.
    assert labels == documented - {"GET /api/v1/openapi.json"}
