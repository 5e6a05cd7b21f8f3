"""g. Webhook delivery: throughput of one deliverer, commit-to-receiver latency, a baseline.

All against a real HTTP receiver on this machine (http.server in a thread of the bench
process) and a real `notifications deliver` process (default settings, WEBHOOK_ALLOW_PRIVATE
for the loopback address), so the deliverer, the receiver and PostgreSQL share the 2 cores.

1. Throughput: N pending webhook deliveries for one user with one endpoint, inserted in one
   transaction (keyed as the fan-out keys them: user, event, 'webhook', endpoint) after the
   deliverer is up and idle, with the fan-out's NOTIFY. Timed from that COMMIT to every row
   recorded `delivered`. Once against a receiver answering 200 at once, once against one
   answering after 200 ms (the sends must overlap for that to go fast).
2. Latency: scenarios inserted at 20/s by a writer, fanned out by a real listener, sent by
   the deliverer; time.time() right after the writer's COMMIT to time.time() when the
   request reaches the receiver (one clock, one machine).
3. Baseline: the replaced design, one worker per delivery: claim one row, send it over a
   new connection, record it, then the next; the same SQL and payload, nothing overlaps.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from bench.env import (
    BenchServer,
    connect,
    daemon_process,
    listener_process,
    percentile,
    proc_stat,
)
from notifications.delivery import webhook
from notifications.delivery.job import Job
from notifications.queries import query

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """Counts webhook requests: arrival time (time.time()) per webhook-id, and per scenario
    id when asked to read the bodies."""

    def __init__(self, delay: float, read_bodies: bool = False) -> None:
        self.delay = delay
        self.read_bodies = read_bodies
        self.lock = threading.Lock()
        self.arrivals: dict[str, float] = {}  # webhook-id -> first arrival
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0  # requests being answered at once, at most
        self.by_scenario: dict[int, float] = {}
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def received(self, msg_id: str, body: bytes) -> None:
        now = time.time()
        scenario = None
        if self.read_bodies:
            scenario = int(json.loads(body)["data"]["scenario"]["id"])
        with self.lock:
            self.requests += 1
            self.arrivals.setdefault(msg_id, now)
            if scenario is not None:
                self.by_scenario.setdefault(scenario, now)

    def distinct(self) -> int:
        with self.lock:
            return len(self.arrivals)


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when a deliverer opens dozens at once.
    request_queue_size = 1024
    daemon_threads = True


@contextlib.contextmanager
def receiver(delay: float = 0.0, read_bodies: bool = False) -> Iterator[Receiver]:
    rc = Receiver(delay, read_bodies)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the deliverer reuses its connections

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            rc.received(self.headers.get("webhook-id", ""), body)
            if rc.delay:
                with rc.lock:
                    rc.in_flight += 1
                    rc.max_in_flight = max(rc.max_in_flight, rc.in_flight)
                time.sleep(rc.delay)
                with rc.lock:
                    rc.in_flight -= 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    rc.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rc
    finally:
        server.shutdown()
        server.server_close()


def deliverer_process(url: str, logfile: Path, **env: str) -> Any:
    """`notifications deliver` with loopback allowed and no e-mail, see daemon_process."""
    return daemon_process("deliver", url, logfile, WEBHOOK_ALLOW_PRIVATE="1", SMTP_URL="", **env)


def _notified_user(conn: psycopg.Connection[Any], events: int) -> tuple[int, int]:
    """An actor and a recipient; `events` scenarios by the actor, fanned out. (actor, user)"""
    actor = conn.execute("SELECT create_user('bench-actor')").fetchone()
    user = conn.execute("SELECT create_user('bench-recipient')").fetchone()
    assert actor is not None and user is not None
    conn.execute(
        "INSERT INTO test_scenarios (name, created_by)"
        " SELECT 'Checkout ' || g, %s FROM generate_series(1, %s) g",
        [actor[0], events],
    )
    while conn.execute("SELECT * FROM fan_out_events_v2(1000)").fetchall():
        pass
    row = conn.execute(
        "SELECT count(*) FROM user_notifications WHERE user_id = %s", [user[0]]
    ).fetchone()
    if not row or row[0] != events:
        raise AssertionError(f"the recipient has {row and row[0]} notifications, not {events}")
    return int(actor[0]), int(user[0])


def _add_endpoint(conn: psycopg.Connection[Any], user_id: int, url: str) -> int:
    row = conn.execute(
        "INSERT INTO webhook_endpoints (user_id, url, secret) VALUES (%s, %s, %s) RETURNING id",
        [user_id, url, SECRET],
    ).fetchone()
    assert row is not None
    return int(row[0])


def _fill_outbox(conn: psycopg.Connection[Any], user_id: int, endpoint_id: int) -> int:
    """One pending delivery per notification of the user, as the fan-out writes them, and
    the fan-out's NOTIFY, in one transaction."""
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO deliveries (user_id, event_id, channel, endpoint_id)"
            " SELECT n.user_id, n.event_id, 'webhook', %s FROM user_notifications n"
            " WHERE n.user_id = %s ORDER BY n.event_id",
            [endpoint_id, user_id],
        )
        conn.execute("SELECT pg_notify(delivery_channel_v2(), '')")
    return cur.rowcount


def _wait_delivered(conn: psycopg.Connection[Any], n: int, timeout: float) -> float:
    """perf_counter() when all n rows are recorded delivered (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'delivered'),"
            " count(*) FILTER (WHERE status = 'dead') FROM deliveries"
        ).fetchone()
        assert row is not None
        if row[0] >= n:
            return time.perf_counter()
        if row[1]:
            raise AssertionError(f"{row[1]} deliveries are dead; see the deliverer's log")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {row[0]} of {n} delivered within {timeout:g} s")
        time.sleep(0.01)


def _cpu_seconds(pid: int) -> float:
    st = proc_stat(pid)
    if st is None:
        raise RuntimeError(f"process {pid} is gone")
    return st.cpu


def throughput(server: BenchServer, log: Path, n: int, delay: float, **env: str) -> dict[str, Any]:
    url = server.fresh_database("delivery")
    try:
        with connect(url) as conn, receiver(delay) as rc:
            _, user_id = _notified_user(conn, n)
            endpoint_id = _add_endpoint(conn, user_id, rc.url)
            conn.execute("VACUUM ANALYZE")
            with deliverer_process(url, log, **env) as proc:
                cpu0, own0 = _cpu_seconds(proc.pid), time.process_time()
                written = _fill_outbox(conn, user_id, endpoint_id)
                began = time.perf_counter()
                began_wall = time.time()
                if written != n:
                    raise AssertionError(f"{written} deliveries written, expected {n}")
                ended = _wait_delivered(conn, n, timeout=60 + n * max(delay, 0.01))
                deliverer_cpu = _cpu_seconds(proc.pid) - cpu0
                bench_cpu = time.process_time() - own0
            if rc.distinct() != n:
                raise AssertionError(f"the receiver saw {rc.distinct()} of {n} deliveries")
            arrivals = sorted(rc.arrivals.values())
            tries = conn.execute(
                "SELECT count(*), percentile_cont(array[0.5, 0.99])"
                " WITHIN GROUP (ORDER BY duration_ms) FROM delivery_attempts"
            ).fetchone()
            assert tries is not None
        seconds = ended - began
        return {
            "deliveries": n,
            "receiver_delay_s": delay,
            "seconds": seconds,
            "per_s": n / seconds,
            "first_arrival_ms": (arrivals[0] - began_wall) * 1000,
            "receiver_per_s": n / max(arrivals[-1] - arrivals[0], 1e-9),
            "requests": rc.requests,
            "attempts_logged": int(tries[0]),
            "send_p50_ms": float(tries[1][0]),
            "send_p99_ms": float(tries[1][1]),
            "receiver_max_in_flight": rc.max_in_flight,
            "deliverer_cpu_s": deliverer_cpu,
            "receiver_cpu_s": bench_cpu,
        }
    finally:
        server.drop(url)


def baseline(server: BenchServer, n: int, delay: float) -> dict[str, Any]:
    """One delivery at a time: claim one (the deliverer's claim, limit 1), send it over a new
    connection, record it (the deliverer's record), next."""
    url = server.fresh_database("delivery_seed")
    try:
        with connect(url) as conn, receiver(delay) as rc:
            _, user_id = _notified_user(conn, n)
            endpoint_id = _add_endpoint(conn, user_id, rc.url)
            _fill_outbox(conn, user_id, endpoint_id)
            target = urlsplit(rc.url)
            began = time.perf_counter()
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as work:
                while True:
                    rows = work.execute(
                        query("deliver_claim"),
                        {"limit": 1, "lease": 60.0, "channels": ["webhook"]},
                    ).fetchall()
                    if not rows:
                        break
                    r = rows[0]
                    job = Job(
                        r["user_id"], r["id"], r["event_id"], r["channel"], r["endpoint_id"],
                        r["attempts"], r,
                    )  # fmt: skip
                    body = webhook.payload(job)
                    stamp = int(time.time())
                    started = datetime.now(UTC)
                    t0 = time.perf_counter()
                    conn_http = http.client.HTTPConnection(
                        target.hostname or "", target.port, timeout=10
                    )
                    try:
                        conn_http.request(
                            "POST",
                            target.path,
                            body=body,
                            headers={
                                "content-type": "application/json",
                                "webhook-id": str(job.id),
                                "webhook-timestamp": str(stamp),
                                "webhook-signature": webhook.sign(
                                    str(r["secret"]), str(job.id), stamp, body
                                ),
                            },
                        )
                        status = conn_http.getresponse().status
                    finally:
                        conn_http.close()
                    duration = (time.perf_counter() - t0) * 1000
                    with work.transaction():
                        work.execute(
                            query("deliver_record"),
                            {
                                "user_ids": [job.user_id],
                                "ids": [job.id],
                                "attempts": [job.attempts],
                                "outcomes": ["delivered" if status == 200 else "dead"],
                                "delays": [0.0],
                                "errors": [None],
                            },
                        )
                        work.execute(
                            query("deliver_log_attempts"),
                            {
                                "user_ids": [job.user_id],
                                "ids": [job.id],
                                "started": [started],
                                "durations": [duration],
                                "statuses": [status],
                                "replies": [None],
                                "errors": [None],
                            },
                        )
            seconds = time.perf_counter() - began
            row = conn.execute(
                "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
            ).fetchone()
            if not row or row[0] != n or rc.distinct() != n:
                raise AssertionError(f"baseline delivered {row and row[0]} of {n}")
        return {
            "deliveries": n,
            "receiver_delay_s": delay,
            "seconds": seconds,
            "per_s": n / seconds,
        }
    finally:
        server.drop(url)


def _writer(url: str, rate: float, seconds: float, commits: dict[int, float]) -> dict[str, Any]:
    with connect(url) as conn:
        start = time.perf_counter()
        count = int(rate * seconds)
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            row = conn.execute(
                "INSERT INTO test_scenarios (name) VALUES ('delivery latency') RETURNING id"
            ).fetchone()
            committed = time.time()
            assert row is not None
            commits[int(row[0])] = committed
        return {"events": count, "seconds": time.perf_counter() - start}


def latency(server: BenchServer, log: Path, rate: float, seconds: float) -> dict[str, Any]:
    url = server.fresh_database("delivery_latency")
    try:
        with connect(url) as conn, receiver(read_bodies=True) as rc:
            user = conn.execute("SELECT create_user('bench-recipient')").fetchone()
            assert user is not None
            _add_endpoint(conn, int(user[0]), rc.url)
            with listener_process(url, log), deliverer_process(url, log):
                _writer(url, rate, 1.0, {})  # warm-up, not measured
                commits: dict[int, float] = {}
                out = _writer(url, rate, seconds, commits)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    with rc.lock:
                        missing = [s for s in commits if s not in rc.by_scenario]
                    if not missing:
                        break
                    time.sleep(0.02)
                else:
                    raise AssertionError(f"{len(missing)} events never reached the receiver")
            db = conn.execute(
                "SELECT extract(epoch FROM d.delivered_at - e.occurred_at)::float8 * 1000"
                " FROM deliveries d JOIN scenario_events e ON e.id = d.event_id"
                " WHERE e.scenario_id = ANY(%s)",
                [list(commits)],
            ).fetchall()
        lat = [(rc.by_scenario[s] - c) * 1000 for s, c in commits.items()]
        recorded = [float(r[0]) for r in db]
        return {
            "rate_target": rate,
            "rate_achieved": out["events"] / out["seconds"],
            "seconds": seconds,
            "events": len(lat),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat),
            "recorded_p50_ms": percentile(recorded, 50),
            "recorded_p99_ms": percentile(recorded, 99),
        }
    finally:
        server.drop(url)


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    fast = throughput(server, log, 5_000, 0.0)
    slow = throughput(server, log, 1_000 if quick else 5_000, 0.2)
    lat = latency(server, log, 20.0, 5.0 if quick else 15.0)
    seed_fast = baseline(server, 100 if quick else 300, 0.0)
    seed_slow = baseline(server, 5 if quick else 15, 0.2)
    return {
        "fast": fast,
        "slow": slow,
        "latency": lat,
        "seed_fast": seed_fast,
        "seed_slow": seed_slow,
        "fast_vs_seed": fast["per_s"] / seed_fast["per_s"],
        "slow_vs_seed": slow["per_s"] / seed_slow["per_s"],
    }
