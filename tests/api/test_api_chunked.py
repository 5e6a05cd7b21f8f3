"""Bodies without a Content-Length (Transfer-Encoding: chunked) obey the same size limit.

werkzeug's own limit on such a stream truncates it silently; a body over the limit must be
a 413 whatever its framing, and one at the limit must still be read whole.
"""

from __future__ import annotations

import http.client
import io
import json
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Request

from tests.api.conftest import Caller, error_of
from tests.live import start_server


def post_chunked(client: FlaskClient, path: str, body: bytes, token: str) -> TestResponse:
    environ = EnvironBuilder(
        path=path,
        method="POST",
        input_stream=io.BytesIO(body),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
    ).get_environ()
    # What uvicorn (through a2wsgi) and werkzeug's server hand the app for a chunked request: no length,
    # and a stream the server ends at the last chunk.
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    return client.open(Request(environ))


def padded(name: str, size: int) -> bytes:
    """A valid JSON object of exactly `size` bytes: trailing whitespace is valid JSON."""
    body = json.dumps({"name": name}).encode()
    return body + b" " * (size - len(body))


def test_chunked_body_over_the_limit_is_413(app: Flask, alice: Caller) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    for size in (limit + 1, limit + 200 * 1024):
        response = post_chunked(alice.client, "/api/v1/scenarios", padded("S", size), alice.token)
        assert error_of(response, 413) == "payload_too_large", size
    # An unterminated string longer than the limit is too large, not malformed.
    big = b'{"name": "' + b"x" * (limit + 6 * 1024)
    response = post_chunked(alice.client, "/api/v1/scenarios", big, alice.token)
    assert error_of(response, 413) == "payload_too_large"
    assert alice.get("/api/v1/scenarios").get_json()["items"] == []


def test_chunked_body_at_the_limit_is_read_whole(app: Flask, alice: Caller) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = post_chunked(alice.client, "/api/v1/scenarios", padded("S", limit), alice.token)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["name"] == "S"
    # Parsed whole (a name too long, 422); truncated, an unterminated string (400).
    body = b'{"name": "' + b"y" * (limit - 12) + b'"}'
    assert len(body) == limit
    response = post_chunked(alice.client, "/api/v1/scenarios", body, alice.token)
    assert error_of(response, 422) == "invalid"


@pytest.fixture
def server(as_role: Callable[[str], str]) -> Iterator[int]:
    """The production server: uvicorn, the Flask app behind a2wsgi (tests/live.py)."""
    live = start_server(as_role("notifications_api"))
    yield int(live.url.rsplit(":", 1)[1])
    live.stop()


def send_chunks(port: int, token: str, body: bytes) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        conn.request(
            "POST",
            "/api/v1/scenarios",
            body=chunks,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_chunked_bodies_under_a_real_server(app: Flask, alice: Caller, server: int) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    status, payload = send_chunks(server, alice.token, padded("S", limit + 1))
    assert (status, payload["error"]["code"]) == (413, "payload_too_large"), payload  # type: ignore[index]
    status, payload = send_chunks(server, alice.token, padded("T", limit))
    assert (status, payload["name"]) == (201, "T"), payload
