"""f. Reads on a big table: the feed's first page, a deep cursor page and the unread count.

The data set is built in a few INSERT ... SELECT generate_series statements: E events, one
heavy user holding a notification for each of them (half unread), every other user about
97 notifications (the newest fifth unread). Then several client threads hit one request
kind at a time for a fixed time.

Growth: the feed's first page and the unread count again on the same shape with every
count four times larger (5.05M -> 20.2M rows; see GROWTH_FACTOR), for bench/growth.png.

Over HTTP (`notifications serve`: uvicorn, as in production) when the API answers
GET /api/v1/notifications; otherwise the same queries straight in SQL, which the report
says (mode "sql").
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import psycopg

from bench.env import BenchServer, add_users, connect, percentile

HEAVY = 1  # the user who holds a notification for every event

# What the API is expected to run per request: authenticate (by the token's sha256, which
# also sets the request's user for row-level security), then one query.
AUTH_SQL = (
    "SELECT user_id, token_id, set_config('notifications.user_id', user_id::text, true)"
    " FROM authenticate_token_v2(%s)"
)
SET_USER_SQL = "SELECT set_config('notifications.user_id', %s, true)"
PAGE_SQL = """
SELECT id, event_type, scenario_id, scenario_name, actor_id, actor_name, message,
       created_at, read_at
FROM notification_feed
WHERE user_id = %s AND id < %s
ORDER BY id DESC
LIMIT 21
"""
UNREAD_SQL = "SELECT count(*) FROM user_notifications WHERE user_id = %s AND read_at IS NULL"


def build(conn: psycopg.Connection[Any], users: int, events: int, per_user: int) -> int:
    add_users(conn, users)
    conn.execute(
        """
        INSERT INTO scenario_events (id, event_type, scenario_id, scenario_name, status,
                                     actor_id, occurred_at, processed_at, fanout_count)
        OVERRIDING SYSTEM VALUE
        SELECT g, (ARRAY['scenario.created', 'scenario.executed', 'scenario.deleted'])[1 + g %% 3],
               g, 'Scenario ' || g,
               CASE WHEN g %% 3 = 1 THEN (ARRAY['passed', 'failed'])[1 + g %% 2] END,
               2 + g %% (%(users)s - 1),
               now() - (%(events)s - g) * interval '1 second', now(), 0
        FROM generate_series(1, %(events)s::bigint) g
        """,
        {"users": users, "events": events},
    )
    conn.execute("SELECT setval(pg_get_serial_sequence('scenario_events', 'id'), %s)", [events])
    # Rows arrive in primary-key order, so the index builds append at the right edge.
    conn.execute(
        """
        INSERT INTO user_notifications (user_id, event_id, created_at, read_at)
        SELECT %(heavy)s, g, now(), CASE WHEN g <= %(events)s / 2 THEN now() END
        FROM generate_series(1, %(events)s::bigint) g
        """,
        {"heavy": HEAVY, "events": events},
    )
    conn.execute(
        """
        INSERT INTO user_notifications (user_id, event_id, created_at, read_at)
        SELECT u, (u * 7919 + k * 2003) %% %(events)s + 1, now(),
               CASE WHEN k > %(per_user)s / 5 THEN now() END
        FROM generate_series(2, %(users)s::bigint) u, generate_series(1, %(per_user)s) k
        """,
        {"events": events, "users": users, "per_user": per_user},
    )
    conn.execute("VACUUM (ANALYZE) user_notifications")
    conn.execute("VACUUM (ANALYZE) scenario_events")
    # The build and the vacuum leave gigabytes dirty (20M rows): written now, not by a
    # checkpoint in the middle of the measurement.
    conn.execute("CHECKPOINT")
    row = conn.execute("SELECT count(*) FROM user_notifications").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def api_server(url: str, log: Path) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    exe = Path(sys.executable).with_name("notifications")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "notifications.cli"]
    env = {**os.environ, "DATABASE_URL": url}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`notifications serve` did not start; see {log}")
            time.sleep(0.1)
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Http:
    """One keep-alive connection per client thread."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str, token: str, **params: Any) -> Any:
        query = ("?" + urlencode(params)) if params else ""
        self.conn.request("GET", path + query, headers={"Authorization": f"Bearer {token}"})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}{query} answered {resp.status}: {body[:200]!r}")
        return json.loads(body)


def load(
    clients: int, seconds: float, make: Callable[[], Callable[[random.Random], None]]
) -> dict[str, float]:
    """Run `clients` threads, each calling its own request function until time is up."""
    samples: list[list[float]] = []
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        mine: list[float] = []
        try:
            request = make()
            rng = random.Random(seed)
            request(rng)  # warm the connection
            barrier.wait()
            until = time.perf_counter() + seconds
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                request(rng)
                mine.append((time.perf_counter() - t0) * 1000)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        samples.append(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    flat = [x for s in samples for x in s]
    return {
        "requests": len(flat),
        "per_s": len(flat) / elapsed,
        "p50_ms": percentile(flat, 50),
        "p99_ms": percentile(flat, 99),
        "max_ms": max(flat),
    }


# The growth figures: the feed's first page and the badge, for a random and the heavy user.
GROWTH_KINDS = (
    "first page, random user",
    "first page, heavy user",
    "unread count, random user",
    "unread count, heavy user",
)
# The second data set is the first with every count times this: users, events and the heavy
# user's feed (so the heavy user keeps the same share of the table, half unread). Every other
# user keeps 97 notifications, so a random user's own work stays the same and their figures
# show what the table's size alone costs; the heavy user's history grows with the table.
GROWTH_FACTOR = 4


class Dataset:
    """A freshly built reads database, its tokens, and the users the clients pick from."""

    def __init__(self, server: BenchServer, users: int, events: int, per_user: int) -> None:
        self.url = server.fresh_database("reads")
        self.users, self.events = users, events
        with connect(self.url) as conn:
            t0 = time.perf_counter()
            self.total = build(conn, users, events, per_user)
            self.build_s = time.perf_counter() - t0
            self.sample_users = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM users WHERE id <> %s ORDER BY random() LIMIT 200", [HEAVY]
                )
            ]
            self.tokens: dict[int, str] = {}
            for uid in [HEAVY, *self.sample_users]:
                row = conn.execute("SELECT issue_token(%s)", [uid]).fetchone()
                assert row is not None
                self.tokens[uid] = str(row[0])
            row = conn.execute(UNREAD_SQL, [HEAVY]).fetchone()
            self.heavy_unread = int(row[0]) if row else 0

    def anyone(self, rng: random.Random) -> int:
        return rng.choice(self.sample_users)

    @staticmethod
    def heavy(_rng: random.Random) -> int:
        return HEAVY

    def describe(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "notifications": self.total,
            "heavy_user_notifications": self.events,
            "heavy_user_unread": self.heavy_unread,
            "build_s": self.build_s,
        }


def sql_kinds(
    data: Dataset, deep_cursor_id: int
) -> dict[str, Callable[[], Callable[[random.Random], None]]]:
    url, tokens = data.url, data.tokens
    big = 2**62

    def page(user: Callable[[random.Random], int], before: int) -> Callable[[], Any]:
        def make() -> Callable[[random.Random], None]:
            c = connect(url)

            def request(rng: random.Random) -> None:
                uid = user(rng)
                c.execute(AUTH_SQL, [_sha256(tokens[uid])]).fetchone()
                c.execute(PAGE_SQL, [uid, before]).fetchall()

            return request

        return make

    def count(user: Callable[[random.Random], int]) -> Callable[[], Any]:
        def make() -> Callable[[random.Random], None]:
            c = connect(url)

            def request(rng: random.Random) -> None:
                uid = user(rng)
                c.execute(AUTH_SQL, [_sha256(tokens[uid])]).fetchone()
                c.execute(UNREAD_SQL, [uid]).fetchone()

            return request

        return make

    return {
        "first page, random user": page(data.anyone, big),
        "first page, heavy user": page(data.heavy, big),
        "deep cursor page, heavy user": page(data.heavy, deep_cursor_id),
        "unread count, random user": count(data.anyone),
        "unread count, heavy user": count(data.heavy),
    }


def http_kinds(
    data: Dataset, port: int, deep_cursor: str
) -> dict[str, Callable[[], Callable[[random.Random], None]]]:
    tokens = data.tokens

    def page(pick: Callable[[random.Random], int], cursor: str | None) -> Callable[[], Any]:
        def make() -> Callable[[random.Random], None]:
            h = Http(port)

            def request(rng: random.Random) -> None:
                params: dict[str, Any] = {"limit": 20}
                if cursor:
                    params["cursor"] = cursor
                h.get("/api/v1/notifications", tokens[pick(rng)], **params)

            return request

        return make

    def count(pick: Callable[[random.Random], int]) -> Callable[[], Any]:
        def make() -> Callable[[random.Random], None]:
            h = Http(port)

            def request(rng: random.Random) -> None:
                h.get("/api/v1/notifications/unread-count", tokens[pick(rng)])

            return request

        return make

    return {
        "first page, random user": page(data.anyone, None),
        "first page, heavy user": page(data.heavy, None),
        "deep cursor page, heavy user": page(data.heavy, deep_cursor),
        "unread count, random user": count(data.anyone),
        "unread count, heavy user": count(data.heavy),
    }


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    users, events, per_user = (5_000, 20_000, 97) if quick else (50_000, 200_000, 97)
    clients = 4
    seconds = 2.0 if quick else 8.0
    data = Dataset(server, users, events, per_user)
    deep_cursor_id = max(events // 100, 2)  # about 99% of the way down the heavy feed

    result: dict[str, Any] = {
        **data.describe(),
        "clients": clients,
        "seconds_per_query": seconds,
    }
    with api_server(data.url, server.workdir / "serve.log") as port:
        mode, note, deep = _probe_api(port, data.tokens[HEAVY], quick)
        result["mode"] = mode
        result["note"] = note
        if mode == "http":
            result["deep_cursor_depth"] = deep[1]
            kinds = http_kinds(data, port, deep[0])
            result["queries"] = {k: load(clients, seconds, m) for k, m in kinds.items()}
    if mode == "sql":
        result["deep_cursor_depth"] = events - deep_cursor_id
        kinds = sql_kinds(data, deep_cursor_id)
        result["queries"] = {k: load(clients, seconds, m) for k, m in kinds.items()}
    result["rls"] = rls_cost(data.url, clients, seconds, data.anyone, data.heavy)
    # Growth: the same measurement on the data set scaled up, in the same mode. The first
    # one's database goes first, so the two never share the server's caches or the disk.
    server.drop(data.url)
    growth = [{**data.describe(), "queries": {k: result["queries"][k] for k in GROWTH_KINDS}}]
    big = Dataset(server, users * GROWTH_FACTOR, events * GROWTH_FACTOR, per_user)
    try:
        if mode == "http":
            with api_server(big.url, server.workdir / "serve.log") as port:
                kinds = http_kinds(big, port, "")
                measured = {k: load(clients, seconds, kinds[k]) for k in GROWTH_KINDS}
        else:
            kinds = sql_kinds(big, 2)
            measured = {k: load(clients, seconds, kinds[k]) for k in GROWTH_KINDS}
    finally:
        server.drop(big.url)
    growth.append({**big.describe(), "queries": measured})
    result["growth"] = growth
    return result


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def rls_cost(
    url: str,
    clients: int,
    seconds: float,
    anyone: Callable[[random.Random], int],
    heavy: Callable[[random.Random], int],
) -> dict[str, dict[str, dict[str, float]]]:
    """The feed's first page and the unread badge, side by side: as the table owner (not
    subject to row-level security) and as a login role granted notifications_api (subject
    to it), each a transaction that sets the request's user and runs the query, as the API
    does. The same statements, data and clients: the difference is the policy."""
    role, password = f"bench_api_{os.getpid()}", secrets.token_hex(12)
    with connect(url) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.execute(
            f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' IN ROLE notifications_api"
        )
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    api_url = urlunsplit(parts._replace(netloc=f"{quote(role)}:{quote(password)}@{host}"))

    def kind(
        as_url: str, sql: str, pick: Callable[[random.Random], int], *args: Any
    ) -> Callable[[], Callable[[random.Random], None]]:
        def make() -> Callable[[random.Random], None]:
            c = connect(as_url, autocommit=False)

            def request(rng: random.Random) -> None:
                uid = pick(rng)
                c.execute(SET_USER_SQL, [str(uid)])
                c.execute(sql, [uid, *args]).fetchall()
                c.rollback()

            return request

        return make

    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for label, as_url in (("owner, no RLS", url), ("notifications_api, RLS", api_url)):
            out[label] = {
                "first page, random user": load(
                    clients, seconds, kind(as_url, PAGE_SQL, anyone, 2**62)
                ),
                "first page, heavy user": load(
                    clients, seconds, kind(as_url, PAGE_SQL, heavy, 2**62)
                ),
                "unread count, random user": load(
                    clients, seconds, kind(as_url, UNREAD_SQL, anyone)
                ),
                "unread count, heavy user": load(clients, seconds, kind(as_url, UNREAD_SQL, heavy)),
            }
    finally:
        with connect(url) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    return out


def _probe_api(port: int, token: str, quick: bool) -> tuple[str, str, tuple[str, int]]:
    """HTTP when the feed route answers 200 with items; then walk to a deep cursor."""
    h = Http(port)
    try:
        first = h.get("/api/v1/notifications", token, limit=100)
        h.get("/api/v1/notifications/unread-count", token)
    except (RuntimeError, ValueError, OSError) as exc:
        return (
            "sql",
            f"API not available ({str(exc)[:120]}); measured the same queries in SQL directly,"
            " without HTTP, Flask or token parsing",
            ("", 0),
        )
    # Cursors are opaque: follow next_cursor down the heavy feed for a while.
    cursor, depth = first.get("next_cursor"), len(first.get("items", []))
    deadline = time.monotonic() + (10 if quick else 40)
    deep_cursor, deep_depth = cursor or "", depth
    while cursor and time.monotonic() < deadline:
        deep_cursor, deep_depth = cursor, depth
        page = h.get("/api/v1/notifications", token, limit=100, cursor=cursor)
        cursor = page.get("next_cursor")
        depth += len(page.get("items", []))
    return "http", "over HTTP through `notifications serve` (uvicorn)", (deep_cursor, deep_depth)
