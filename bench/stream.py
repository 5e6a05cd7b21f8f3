"""h. The stream (GET /api/v1/stream): push latency, the JSON API's cost of idle streams, and
the polling inbox it replaced, measured side by side in one run.

Real processes: `notifications serve` (default settings: 2 uvicorn workers, each with its
own LISTEN connection and rounds) and `notifications listen`, on one database built as
bench/reads.py builds its data (2,000 users x 50 notifications; user 1 holds a notification
for every built event and is the writer's actor, so it has no stream). The client side is
ONE asyncio thread of the bench holding every stream (httpx.AsyncClient + httpx_sse), one
stream per user. The writer is a psql-like session in a thread: set_config(
'notifications.actor_id', ...) and an INSERT, one transaction per scenario; every user is
subscribed, so each event reaches every stream.

1. Push: N streams open, 5 events/s. time.time() at receipt per (stream, notification),
   against the writer's time.time() after its COMMIT and the event's processed_at (the
   fan-out's clock_timestamp() just before its COMMIT; one machine, one clock). Every
   stream must get every event exactly once: missing and duplicates are counted, and the
   run says FAIL if either is not zero.
2. The JSON API's cost of idle streams: 4 client threads, first feed page and unread count,
   rounds with no stream open (a) alternating with rounds holding N idle streams (b).
3. Baseline: the inbox before the stream polled GET unread-count and the first page every
   2 s (the next poll 2 s after the last answered). P pollers, staggered over the first
   2 s, under the same write load; a notification is received when a page holding it
   comes back.

Each phase also records the database's transactions/s (pg_stat_database) and the CPU of
the serve workers, PostgreSQL, the listener and the client thread (/proc), and the push
the hub's own view from /metrics (its rounds, and fan-out -> queued for a stream), to say
where time goes on the shared 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from httpx_sse import aconnect_sse

from bench.env import BenchServer, connect, listener_process, percentile, proc_stat
from bench.reads import HEAVY, Http, api_server, build, load

RATE = 5.0  # events/s from the writer
USERS, EVENTS, PER_USER = 2_000, 2_000, 50  # the data set (see reads.build)
POLL_SECONDS = 2.0  # the replaced inbox's polling interval
PAGE_SIZE = 20  # its first page
CLIENTS = 4  # JSON API client threads
# Streams being opened at once (until each has its first event): the serve processes
# answer each open with one query on a pool of 4 connections, and 503 after API_POOL_TIMEOUT.
OPENING = 200


# -- CPU and database counters --------------------------------------------------------------


def _tree(roots: dict[str, int]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of every live process under each root (the root included)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := proc_stat(int(entry))) is not None:
            parent[int(entry)], cpu[int(entry)] = st.ppid, st.cpu
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, dict[int, float]] = {}
    for name, root in roots.items():
        seen: dict[int, float] = {}
        todo = [root] if root in cpu else []
        while todo:
            pid = todo.pop()
            seen[pid] = cpu[pid]
            todo.extend(children.get(pid, ()))
        out[name] = seen
    return out


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / hz, sum(values) / hz


class Meter:
    """CPU per process group, the machine's busy CPU and the database's transactions over
    one phase. Processes that exit during the phase take their CPU with them."""

    def __init__(self, url: str, roots: dict[str, int]) -> None:
        self.url = url
        self.roots = roots

    def _xacts(self) -> int:
        with connect(self.url) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            ).fetchone()
        return int(row[0]) if row else 0

    def start(self) -> dict[str, Any]:
        return {
            "t": time.perf_counter(),
            "tree": _tree(self.roots),
            "machine": _machine_busy(),
            "own": time.process_time(),
            "xacts": self._xacts(),
        }

    def stop(self, began: dict[str, Any], client_cpu: float | None = None) -> dict[str, Any]:
        """xacts/s and CPU s/s: per group, `bench` (this whole process: the client thread,
        the writer, the JSON clients), `client` (the event loop's thread alone), `machine`
        (every core's busy time) and `others` (the machine less all of ours: this machine
        is shared, and what others run competes for the same cores)."""
        xacts = self._xacts()
        seconds = time.perf_counter() - began["t"]
        tree = _tree(self.roots)
        busy, total = _machine_busy()
        cpu = {
            name: sum(v - began["tree"][name].get(pid, 0.0) for pid, v in procs.items()) / seconds
            for name, procs in tree.items()
        }
        cpu["bench"] = (time.process_time() - began["own"]) / seconds
        if client_cpu is not None:
            cpu["client"] = client_cpu / seconds
        b0, t0 = began["machine"]
        cpu["machine"] = (busy - b0) / max(total - t0, 1e-9) * (os.cpu_count() or 1)
        ours = sum(cpu.get(n, 0.0) for n in ("serve", "postgres", "listener", "bench"))
        cpu["others"] = max(cpu["machine"] - ours, 0.0)
        return {"seconds": seconds, "xacts_per_s": (xacts - began["xacts"]) / seconds, "cpu": cpu}


def _roots(url: str, listener_pid: int) -> dict[str, int]:
    """The serve master (a child of this process), the listener, and the postmaster when
    the database runs on this machine (the parent of this connection's backend)."""
    roots = {"listener": listener_pid}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == listener_pid:
            continue
        st = proc_stat(int(entry))
        if st is None or st.ppid != os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline:
            roots["serve"] = int(entry)
    with connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        backend = proc_stat(int(row[0])) if row else None
    if backend is not None:
        roots["postgres"] = backend.ppid
    return roots


# -- the writer -----------------------------------------------------------------------------


def _writer(
    url: str, actor: int, rate: float, seconds: float, commits: dict[int, float]
) -> dict[str, Any]:
    """Scenarios at a fixed rate as a psql user writes them: the actor set in the
    transaction, one INSERT, COMMIT. commits: scenario id -> time.time() after COMMIT."""
    with connect(url) as conn:
        start = time.perf_counter()
        count = round(rate * seconds)
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with conn.transaction():
                conn.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(actor)])
                row = conn.execute(
                    "INSERT INTO test_scenarios (name) VALUES (%s) RETURNING id", [f"Stream {i}"]
                ).fetchone()
            commits[int(row[0]) if row else -1] = time.time()
        return {"events": count, "seconds": time.perf_counter() - start}


def _wait_fanned_out(conn: psycopg.Connection[Any], timeout: float = 60) -> int:
    """Wait until the listener has fanned out everything; the newest event id."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE processed_at IS NULL), coalesce(max(id), 0)"
            " FROM scenario_events"
        ).fetchone()
        assert row is not None
        if row[0] == 0:
            return int(row[1])
        if time.monotonic() > deadline:
            raise AssertionError(f"{row[0]} events not fanned out within {timeout:g} s")
        time.sleep(0.05)


def _events_since(
    conn: psycopg.Connection[Any], after: int, commits: dict[int, float]
) -> dict[int, tuple[float, float]]:
    """event id -> (writer's commit time, processed_at) for the writer's scenarios, once
    all are fanned out."""
    _wait_fanned_out(conn)
    rows = conn.execute(
        "SELECT id, scenario_id, extract(epoch FROM processed_at)::float8 FROM scenario_events"
        " WHERE id > %s AND event_type = 'scenario.created' AND scenario_id = ANY(%s)",
        [after, list(commits)],
    ).fetchall()
    if len(rows) != len(commits):
        raise AssertionError(f"{len(rows)} events for {len(commits)} scenarios written")
    return {int(r[0]): (commits[int(r[1])], float(r[2])) for r in rows}


# -- streams ----------------------------------------------------------------------------------


class Streams:
    """One stream per user, each a task of this event loop; receipt times per user."""

    def __init__(self, client: httpx.AsyncClient, base: str, tokens: dict[int, str]) -> None:
        self.client = client
        self.base = base
        self.tokens = tokens
        self.received: dict[int, list[tuple[int, float]]] = {u: [] for u in tokens}
        self.unread_events = 0
        self.failures: list[str] = []
        self._ready = 0
        self._all_ready = asyncio.Event()
        self._gate = asyncio.Semaphore(OPENING)
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, timeout: float = 60) -> float:
        """Open every stream; seconds until each has had its first event."""
        began = time.perf_counter()
        self._tasks = [asyncio.create_task(self._follow(u)) for u in self.tokens]
        await asyncio.wait_for(self._all_ready.wait(), timeout)
        if self.failures:
            await self.close()
            raise RuntimeError(f"{len(self.failures)} streams failed, first: {self.failures[0]}")
        return time.perf_counter() - began

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def complete(self, expected: int) -> bool:
        return all(len(got) >= expected for got in self.received.values())

    async def _follow(self, user: int) -> None:
        await self._gate.acquire()
        gated = True
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        try:
            async with aconnect_sse(
                self.client, "GET", self.base + "/api/v1/stream", headers=headers
            ) as source:
                if source.response.status_code != 200:
                    body = await source.response.aread()
                    raise RuntimeError(f"{source.response.status_code} {body[:200]!r}")
                async for sse in source.aiter_sse():
                    now = time.time()
                    if sse.event == "notification":
                        self.received[user].append((int(json.loads(sse.data)["id"]), now))
                    elif sse.event == "unread":
                        self.unread_events += 1
                        if gated:
                            gated = False
                            self._gate.release()
                            self._ready += 1
                            if self._ready == len(self.tokens):
                                self._all_ready.set()
            raise RuntimeError("the server ended the stream")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures.append(f"user {user}: {str(exc) or type(exc).__name__}")
            self._all_ready.set()  # the opener reports it rather than time out
        finally:
            if gated:
                self._gate.release()


async def _loop_lag(stop: asyncio.Event, out: list[float]) -> None:
    """How late a 10 ms sleep wakes: how long the client thread is busy at a stretch."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        out.append((time.perf_counter() - t0 - 0.01) * 1000)


def _metrics(text: str) -> dict[str, float]:
    """Prometheus text: 'name{labels}' -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _histogram(m: dict[str, float], name: str) -> dict[str, float]:
    """Count, mean and the bucket edges holding the 50th and 99th percentiles of one
    histogram of a /metrics scrape (or of the difference of two); ms."""
    count, total = m.get(f"{name}_count", 0.0), m.get(f"{name}_sum", 0.0)
    prefix = f'{name}_bucket{{le="'
    edges = sorted((float(k[len(prefix) : -2]), v) for k, v in m.items() if k.startswith(prefix))

    def bound(q: float) -> float:
        return next((e * 1000 for e, c in edges if c >= q * count), float("nan"))

    return {
        "count": count,
        "mean_ms": total / count * 1000 if count else float("nan"),
        "p50_bound_ms": bound(0.5),
        "p99_bound_ms": bound(0.99),
    }


def _ms(values: list[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}p50_ms": percentile(values, 50),
        f"{prefix}p95_ms": percentile(values, 95),
        f"{prefix}p99_ms": percentile(values, 99),
        f"{prefix}max_ms": max(values) if values else float("nan"),
    }


# -- the phases -------------------------------------------------------------------------------


class Run:
    def __init__(
        self, url: str, port: int, actor: int, tokens: dict[int, str], meter: Meter, quick: bool
    ) -> None:
        self.url = url
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.actor = actor
        self.tokens = tokens
        self.meter = meter
        self.quick = quick
        self.streams = 200 if quick else 1_000
        self.stream_tokens = dict(list(tokens.items())[: self.streams])

    def client(self, connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=httpx.Timeout(30.0, read=None),
        )

    async def scrape(self) -> dict[str, float]:
        """/metrics: serve runs prometheus_client's multiprocess mode, so one scrape sums
        every worker (notifications_stream_listening counts their LISTEN connections)."""
        async with httpx.AsyncClient(timeout=10) as one:
            return _metrics((await one.get(self.base + "/metrics")).text)

    @staticmethod
    def server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
        """The hub's view over a phase: fan-out -> queued for the stream (after the round
        that read it), and the rounds (one statement each for all of a worker's streams)."""
        m = {k: v - before.get(k, 0.0) for k, v in after.items()}
        prefix = 'notifications_stream_rounds_total{cause="'
        return {
            "workers_in_metrics": after.get("notifications_stream_listening", float("nan")),
            "queued": _histogram(m, "notifications_stream_lag_seconds"),
            "rounds": _histogram(m, "notifications_stream_round_seconds"),
            "rounds_by_cause": {
                k[len(prefix) : -2]: v for k, v in m.items() if k.startswith(prefix)
            },
        }

    async def write_only(self, seconds: float) -> dict[str, Any]:
        """The write load with no client at all: the floor the other phases add to; also
        the listener's warm-up."""
        began = self.meter.start()
        out = await asyncio.to_thread(_writer, self.url, self.actor, RATE, seconds, {})
        phase = self.meter.stop(began)
        with connect(self.url) as conn:
            await asyncio.to_thread(_wait_fanned_out, conn)
        return {**out, **phase}

    async def push(self, seconds: float) -> dict[str, Any]:
        with connect(self.url) as conn:
            before = _wait_fanned_out(conn)
        async with self.client(self.streams + 10) as client:
            streams = Streams(client, self.base, self.stream_tokens)
            open_s = await streams.open()
            # Idle backends report their counters within a second: the opens' queries must
            # not land in the measured window.
            await asyncio.sleep(1.5)
            stop = asyncio.Event()
            lag: list[float] = []
            ticker = asyncio.create_task(_loop_lag(stop, lag))
            commits: dict[int, float] = {}
            scraped = await self.scrape()
            began = self.meter.start()
            cpu0 = time.thread_time()
            out = await asyncio.to_thread(_writer, self.url, self.actor, RATE, seconds, commits)
            phase = self.meter.stop(began, time.thread_time() - cpu0)
            stop.set()
            await ticker
            deadline = time.monotonic() + 30
            while not streams.complete(out["events"]) and time.monotonic() < deadline:
                if streams.failures:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a duplicate sent late would arrive now
            server = self.server_side(scraped, await self.scrape())
            server["rounds_per_s"] = server["rounds"]["count"] / phase["seconds"]
            await streams.close()
        with connect(self.url) as conn:
            events = _events_since(conn, before, commits)
        commit_lat: list[float] = []
        fanout_lat: list[float] = []
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        received = duplicates = unexpected = missing = 0
        for got in streams.received.values():
            ids = [i for i, _ in got]
            received += len(ids)
            duplicates += len(ids) - len(set(ids))
            unexpected += len(set(ids) - events.keys())
            missing += len(events.keys() - set(ids))
            for event_id, at in got:
                if event_id not in events:
                    continue
                committed, processed = events[event_id]
                commit_lat.append((at - committed) * 1000)
                fanout_lat.append((at - processed) * 1000)
                first[event_id] = min(first.get(event_id, at), at)
                last[event_id] = max(last.get(event_id, at), at)
        expected = len(events) * self.streams
        exact = received == expected and not (missing or duplicates or unexpected)
        exact = exact and not streams.failures
        if not exact:
            print(
                f"[bench] stream: FAIL: {received:,} notifications received, {expected:,}"
                f" expected; {missing:,} missing, {duplicates:,} duplicates, {unexpected:,}"
                f" unexpected, {len(streams.failures)} streams failed"
                + (f" (first: {streams.failures[0]})" if streams.failures else ""),
                file=sys.stderr,
                flush=True,
            )
        return {
            "streams": self.streams,
            "open_s": open_s,
            "rate_target": RATE,
            "rate_achieved": out["events"] / out["seconds"],
            "seconds": seconds,
            "events": len(events),
            "expected": expected,
            "received": received,
            "missing": missing,
            "duplicates": duplicates,
            "unexpected": unexpected,
            "failed_streams": len(streams.failures),
            "failures": streams.failures[:5],
            "exact": exact,
            "unread_events": streams.unread_events,
            **_ms(commit_lat, "commit_"),
            **_ms(fanout_lat, "fanout_"),
            "commit_to_fanout_p50_ms": percentile([(p - c) * 1000 for c, p in events.values()], 50),
            # Per event: the first and the last of the N streams to get it, from its fan-out.
            "first_stream_p50_ms": percentile(
                [(first[e] - events[e][1]) * 1000 for e in first], 50
            ),
            "last_stream_p50_ms": percentile([(last[e] - events[e][1]) * 1000 for e in last], 50),
            "last_stream_p99_ms": percentile([(last[e] - events[e][1]) * 1000 for e in last], 99),
            "loop_lag_p99_ms": percentile(lag, 99),
            "loop_lag_max_ms": max(lag) if lag else float("nan"),
            "client_cpu_us_per_message": phase["cpu"]["client"]
            * phase["seconds"]
            / max(received + streams.unread_events, 1)
            * 1e6,
            "server": server,
            **phase,
        }

    def _json_kinds(self) -> dict[str, Callable[[], Callable[[random.Random], None]]]:
        users = list(self.tokens)

        def page() -> Callable[[random.Random], None]:
            h = Http(self.port)
            return lambda rng: h.get(
                "/api/v1/notifications", self.tokens[rng.choice(users)], limit=PAGE_SIZE
            )

        def count() -> Callable[[random.Random], None]:
            h = Http(self.port)
            return lambda rng: h.get(
                "/api/v1/notifications/unread-count", self.tokens[rng.choice(users)]
            )

        return {"first page": page, "unread count": count}

    async def json_cost(self, rounds: int, seconds: float) -> dict[str, Any]:
        """Rounds with no stream open (a) alternating with rounds holding N idle ones (b)."""
        kinds = self._json_kinds()

        def measure() -> dict[str, dict[str, float]]:
            return {name: load(CLIENTS, seconds, make) for name, make in kinds.items()}

        a: list[dict[str, dict[str, float]]] = []
        b: list[dict[str, dict[str, float]]] = []
        async with self.client(self.streams + 10) as client:
            for _ in range(rounds):
                a.append(await asyncio.to_thread(measure))
                streams = Streams(client, self.base, self.stream_tokens)
                await streams.open()
                await asyncio.sleep(0.5)
                b.append(await asyncio.to_thread(measure))
                await streams.close()
                await asyncio.sleep(0.5)  # the server sees the disconnects

        def median(side: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
            return {
                name: {
                    key: statistics.median(r[name][key] for r in side)
                    for key in ("p50_ms", "p99_ms", "per_s")
                }
                for name in kinds
            }

        none, idle = median(a), median(b)
        return {
            "streams": self.streams,
            "rounds": rounds,
            "clients": CLIENTS,
            "seconds_per_kind": seconds,
            "no_streams": none,
            "idle_streams": idle,
            "p99_ratio": {k: idle[k]["p99_ms"] / none[k]["p99_ms"] for k in kinds},
            "p50_ratio": {k: idle[k]["p50_ms"] / none[k]["p50_ms"] for k in kinds},
            "raw": {"no_streams": a, "idle_streams": b},
        }

    async def polling(self, pollers: int, seconds: float) -> dict[str, Any]:
        """The replaced inbox: unread count and first page together, then 2 s, again."""
        users = list(self.tokens)[:pollers]
        seen: dict[int, dict[int, float]] = {u: {} for u in users}
        requests = [0]
        errors: list[str] = []
        stop = asyncio.Event()
        with connect(self.url) as conn:
            before = _wait_fanned_out(conn)

        async def poller(client: httpx.AsyncClient, user: int, first: float) -> None:
            headers = {"Authorization": f"Bearer {self.tokens[user]}"}
            mine = seen[user]
            await asyncio.sleep(first)
            while not stop.is_set():
                count, page = await asyncio.gather(
                    client.get(self.base + "/api/v1/notifications/unread-count", headers=headers),
                    client.get(
                        self.base + "/api/v1/notifications",
                        params={"status": "all", "limit": PAGE_SIZE},
                        headers=headers,
                    ),
                )
                now = time.time()
                requests[0] += 2
                if count.status_code != 200 or page.status_code != 200:
                    errors.append(f"{count.status_code}/{page.status_code}")
                else:
                    for item in page.json()["items"]:
                        mine.setdefault(int(item["id"]), now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SECONDS)

        async with self.client(2 * pollers + 10) as client:
            tasks = [
                asyncio.create_task(poller(client, u, POLL_SECONDS * i / pollers))
                for i, u in enumerate(users)
            ]
            await asyncio.sleep(POLL_SECONDS + 0.5)  # each has polled once
            lag: list[float] = []
            ticking = asyncio.Event()
            ticker = asyncio.create_task(_loop_lag(ticking, lag))
            commits: dict[int, float] = {}
            began = self.meter.start()
            cpu0, requests0 = time.thread_time(), requests[0]
            out = await asyncio.to_thread(_writer, self.url, self.actor, RATE, seconds, commits)
            phase = self.meter.stop(began, time.thread_time() - cpu0)
            http_per_s = (requests[0] - requests0) / phase["seconds"]
            ticking.set()
            await ticker
            with connect(self.url) as conn:
                events = _events_since(conn, before, commits)
            deadline = time.monotonic() + 3 * POLL_SECONDS + 5
            while time.monotonic() < deadline and not all(
                events.keys() <= mine.keys() for mine in seen.values()
            ):
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        lat = [
            (mine[e] - committed) * 1000
            for mine in seen.values()
            for e, (committed, _) in events.items()
            if e in mine
        ]
        missing = sum(len(events.keys() - mine.keys()) for mine in seen.values())
        return {
            "pollers": pollers,
            "interval_s": POLL_SECONDS,
            "rate_achieved": out["events"] / out["seconds"],
            "seconds": seconds,
            "events": len(events),
            "expected": len(events) * pollers,
            "seen": len(lat),
            "missing": missing,
            "errors": len(errors),
            **_ms(lat, "commit_"),
            "http_per_s": http_per_s,
            "loop_lag_p99_ms": percentile(lag, 99),
            **phase,
        }


def _tokens(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """A token for every user but the actor, in one statement."""
    rows = conn.execute(
        "SELECT id, issue_token(id) FROM users WHERE id <> %s ORDER BY id", [HEAVY]
    ).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def _wait_listening(conn: psycopg.Connection[Any], workers: int, timeout: float = 30) -> None:
    """Every serve worker's hub has its LISTEN connection (its streams get hints)."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'notifications-stream-listen'"
        ).fetchone()
        if row and row[0] >= workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{row and row[0]} of {workers} serve workers LISTEN")
        time.sleep(0.05)


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    push_s = 5.0 if quick else 20.0
    rounds, json_s = (2, 1.0) if quick else (3, 2.0)
    pollers = 50 if quick else 200
    url = server.fresh_database("stream")
    try:
        with connect(url) as conn:
            t0 = time.perf_counter()
            total = build(conn, USERS, EVENTS, PER_USER)
            tokens = _tokens(conn)
            build_s = time.perf_counter() - t0
        result: dict[str, Any] = {
            "users": USERS,
            "notifications": total,
            "build_s": build_s,
            "serve_workers": 2,
        }
        with (
            listener_process(url, log) as listener,
            api_server(url, server.workdir / "serve.log") as port,
        ):
            with connect(url) as conn:
                _wait_listening(conn, 2)
            meter = Meter(url, _roots(url, listener.pid))
            bench = Run(url, port, HEAVY, tokens, meter, quick)

            async def main() -> None:
                result["write_only"] = await bench.write_only(2.0 if quick else 4.0)
                result["push"] = await bench.push(push_s)
                result["json"] = await bench.json_cost(rounds, json_s)
                result["polling"] = await bench.polling(pollers, push_s)

            asyncio.run(main())
        push, poll, floor = result["push"], result["polling"], result["write_only"]
        result["polling_to_stream_p50"] = poll["commit_p50_ms"] / push["commit_p50_ms"]
        # What the pollers add to the database beyond the writer and the listener. Not
        # done for the stream: a backend idle within a second of its last report sends its
        # counters up to 10 s later, so the opening of the streams (a query each) lands in
        # the window; the stream's database work is its rounds, counted by the hub.
        result["polling_xacts_per_s"] = poll["xacts_per_s"] - floor["xacts_per_s"]
        return result
    finally:
        server.drop(url)
