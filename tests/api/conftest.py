"""Fixtures for the JSON API: an app on the test's fresh database and callers with tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse


@dataclass
class Caller:
    """A user with a token, calling the API through the test client."""

    id: int
    name: str
    token: str
    client: FlaskClient

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.client.get(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, **kw: Any) -> TestResponse:
        return self.client.post(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def put(self, path: str, **kw: Any) -> TestResponse:
        return self.client.put(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> TestResponse:
        return self.client.delete(path, headers=self.headers(kw.pop("headers", None)), **kw)


@pytest.fixture
def caller(
    client: FlaskClient, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> Callable[..., Caller]:
    def make(name: str, **subscriptions: bool) -> Caller:
        user_id = make_user(name, **subscriptions)
        row = db.execute("SELECT issue_token(%s)", [user_id]).fetchone()
        assert row is not None
        return Caller(user_id, name, row[0], client)

    return make


@pytest.fixture
def alice(caller: Callable[..., Caller]) -> Caller:
    return caller("alice")


@pytest.fixture
def bob(caller: Callable[..., Caller]) -> Caller:
    return caller("bob")


def error_of(response: TestResponse, status: int) -> str:
    """Assert the contract's error shape and status; the error code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return str(body["error"]["code"])
