"""The push stream (GET /api/v1/stream): server-sent events for every open inbox.

One `Hub` per serve process holds one LISTEN connection and a registry of the process's
open streams; a hint (or a poll interval) starts a round, one statement that reads what is
new for every registered stream at once (sql/v2/stream.sql). The endpoint (endpoint.py) is
an async route beside the Flask app (notifications/api/asgi.py). Nothing here imports Flask.
"""
