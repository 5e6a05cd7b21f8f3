"""A serve process's open streams: one LISTEN connection, one registry, one query a round.

The loop is procrastinate's: wait for a hint OR a poll interval OR a stop; a hint is only
a hint. On a hint (coalesced over a few milliseconds) or a quiet poll interval, a round
asks the database, in one statement, what is new for every registered stream since its
position (sql/v2/stream.sql) and queues each stream its own rows. A lost hint therefore
costs at most one poll interval, and so does a LISTEN connection being replaced: every
new LISTEN is followed by a round for everyone. The LISTEN connection proves it still
delivers by a probe NOTIFY of its own whenever the channel was quiet for a poll interval;
a probe that does not come back in time (a frozen backend, a dead link) replaces it.

Unread counts are exact without a count per stream per round: a stream's count is taken
by the round when it opens, when a read hint names its user, and while it catches up; in
between, the round's new unread rows are added, which is exact because a complete
position and its count describe the same snapshot.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from notifications.config import Settings
from notifications.db import conninfo
from notifications.feed import notification_json
from notifications.positions import Position
from notifications.queries import query
from notifications.stream import metrics

log = logging.getLogger("notifications.stream")

# Hints arriving this close together share one round (a burst of fan-outs, a bulk import).
COALESCE_SECONDS = 0.005
# Notifications one stream is sent per round; a stream far behind catches up in steps.
ROW_LIMIT = 500
# Rounds' writes a stream may have waiting for a slow reader before it is ended (its
# client resumes from the last position it received, so ending it loses nothing).
MAX_QUEUED = 256
# Seconds the LISTEN connection has to hand back its own probe.
PROBE_TIMEOUT = 5.0
# Seconds a round waits before retrying after a database error.
RETRY_SECONDS = 1.0
# Seconds a round may take before it is given up (and retried).
ROUND_TIMEOUT = 30.0

AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]


def frame(event: str, data: str, position: str) -> bytes:
    """One server-sent event, encoded once and written to every stream it is for.

    `data` is JSON on one line (json.dumps escapes every line break inside a string)."""
    return f"event: {event}\r\nid: {position}\r\ndata: {data}\r\n\r\n".encode()


class _Encoder:
    """One round's encodings: a notification's JSON, a position, a whole frame, each built
    once however many streams it goes to."""

    def __init__(self, events: dict[int, DictRow]) -> None:
        self._events = events
        self._positions: dict[Position, str] = {}
        self._frames: dict[tuple[int, str], bytes] = {}
        self._json: dict[int, str] = {}
        self.notifications = 0
        self.unreads = 0

    def position(self, position: Position) -> str:
        text = self._positions.get(position)
        if text is None:
            text = self._positions[position] = position.encode()
        return text

    def _dumps(self, event_id: int, read_at: datetime | None) -> str:
        row = {**self._events[event_id], "read_at": read_at}
        return json.dumps(notification_json(row), separators=(",", ":"))

    def notification(self, event_id: int, read_at: datetime | None, position: Position) -> bytes:
        at = self.position(position)
        if read_at is not None:  # read already (elsewhere): this recipient's own JSON
            return frame("notification", self._dumps(event_id, read_at), at)
        key = (event_id, at)
        encoded = self._frames.get(key)
        if encoded is None:
            data = self._json.get(event_id)
            if data is None:
                data = self._json[event_id] = self._dumps(event_id, None)
            encoded = self._frames[key] = frame("notification", data, at)
        return encoded


class Refused(Exception):
    """A stream that cannot be opened: an HTTP status and the contract's error shape."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Subscriber:
    """One open stream: whose it is, what it has been sent, and what waits to be sent."""

    def __init__(self, user_id: int, token_hash: bytes, position: Position) -> None:
        self.user_id = user_id
        self.token_hash = token_hash
        self.position = position
        # The user's unread count as of `position` (while it is complete), None until
        # the first round counts it.
        self.unread: int | None = None
        self.sent_unread: int | None = None
        self.recount = True
        self.ended: str | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def send(self, encoded: bytes) -> None:
        self._queue.put_nowait(encoded)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            metrics.ENDED.labels(reason).inc()
            self._queue.put_nowait(None)

    async def messages(self) -> AsyncIterator[bytes]:
        """Encoded events (hub.frame), until the stream ends."""
        while (encoded := await self._queue.get()) is not None:
            yield encoded


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._url = settings.require_database_url()
        self._subs: set[Subscriber] = set()
        self._by_user: dict[int, set[Subscriber]] = defaultdict(set)
        self._wake = asyncio.Event()
        self._cause = "open"  # what woke the next round: a metrics label
        self._pool: AsyncPool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._probe_ids = itertools.count(1)
        self._probe_prefix = f"probe:{os.getpid()}:{id(self)}:"
        self._probe_seen: str | None = None
        self.listening = False
        self.pooled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        pool: AsyncPool = AsyncConnectionPool(
            conninfo(self._url, "notifications-stream"),
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"row_factory": dict_row, "autocommit": True},
            min_size=1,
            max_size=4,
            timeout=self.settings.api_pool_timeout,
            max_lifetime=1800,
            check=AsyncConnectionPool.check_connection,
            name="notifications-stream",
            open=False,
        )
        # Without waiting: the server starts while the database is down, as the API does.
        await pool.open(wait=False)
        self._pool = pool
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="stream-listen"),
            asyncio.create_task(self._round_loop(), name="stream-rounds"),
        ]

    def end_all(self) -> None:
        for sub in list(self._subs):
            sub.end("shutdown")

    def end_all_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.end_all)

    async def stop(self) -> None:
        self._stopping = True
        self.end_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()

    @property
    def open_streams(self) -> int:
        return len(self._subs)

    # -- streams ---------------------------------------------------------------------------

    async def authenticate(self, token_hash: bytes) -> DictRow:
        """The token's user and the snapshot a stream without a position starts from."""
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(query("stream_open"), {"token_hash": token_hash})
                row = await cur.fetchone()
        except (PoolTimeout, psycopg.OperationalError):
            metrics.REFUSED.labels("unavailable").inc()
            raise Refused(
                503, "unavailable", "the database is unavailable; try again shortly", 2
            ) from None
        if row is None:
            metrics.REFUSED.labels("unauthorized").inc()
            raise Refused(401, "unauthorized", "invalid or revoked token")
        return row

    def _check_room(self) -> None:
        if len(self._subs) >= self.settings.stream_max_streams:
            metrics.REFUSED.labels("process_limit").inc()
            raise Refused(
                503, "too_many_streams", "this server holds all the streams it can; retry", 5
            )

    async def open(self, token_hash: bytes, position: Position | None) -> Subscriber:
        """Authenticate and register a stream; Refused with a status if it cannot be."""
        self._check_room()
        row = await self.authenticate(token_hash)
        user_id = int(row["user_id"])
        self._check_room()  # again: others may have opened while this one authenticated
        mine = self._by_user[user_id]
        if len(mine) >= self.settings.stream_max_per_user:
            metrics.REFUSED.labels("user_limit").inc()
            raise Refused(
                429,
                "too_many_streams",
                f"at most {self.settings.stream_max_per_user} open streams per user;"
                " close one (tabs of one browser share one stream)",
                5,
            )
        sub = Subscriber(user_id, token_hash, position or Position(str(row["snapshot"])))
        self._subs.add(sub)
        mine.add(sub)
        metrics.OPENED.inc()
        metrics.OPEN.set(len(self._subs))
        # Its first round: its unread count, and what it missed since its position.
        self._poke("open")
        return sub

    def close(self, sub: Subscriber) -> None:
        self._subs.discard(sub)
        mine = self._by_user.get(sub.user_id)
        if mine is not None:
            mine.discard(sub)
            if not mine:
                del self._by_user[sub.user_id]
        metrics.OPEN.set(len(self._subs))

    # -- hints -----------------------------------------------------------------------------

    def _poke(self, cause: str) -> None:
        if not self._wake.is_set():
            self._cause = cause
        self._wake.set()

    def _hint(self, payload: str) -> None:
        if payload.startswith("probe:"):
            if payload.startswith(self._probe_prefix):
                self._probe_seen = payload
            return
        if payload.startswith("read:"):
            users = payload[len("read:") :]
            if users == "*":
                self._recount_all()
            else:
                for text in users.split(","):
                    if text.isdigit():
                        for sub in self._by_user.get(int(text), ()):
                            sub.recount = True
        self._poke("hint")

    def _recount_all(self) -> None:
        for sub in self._subs:
            sub.recount = True

    # -- the LISTEN connection ---------------------------------------------------------------

    async def _listen_loop(self) -> None:
        backoff = 0.25
        first = True
        url = self.settings.stream_listen_url or self._url
        while not self._stopping:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo(url, "notifications-stream-listen"), autocommit=True
                )
                # The server's own pid: a transaction pooler hands the client a made-up one,
                # and a LISTEN through it would hear nothing. Then the rounds' poll serves
                # the streams, and this is said once rather than reconnected for ever.
                cur = await conn.execute(query("backend_pid"))
                row = await cur.fetchone()
                if row is None or int(row[0]) != conn.info.backend_pid:
                    log.warning(
                        "stream: the database URL goes through a transaction pooler, where"
                        " LISTEN hears nothing; streams are served by polling every %.1fs."
                        " Set STREAM_LISTEN_URL to a direct connection for push.",
                        self.settings.stream_poll_interval,
                    )
                    self.pooled = True
                    return
                await conn.execute(query("stream_listen"))
                self.listening = True
                metrics.LISTENING.set(1)
                if not first:
                    metrics.RECONNECTS.inc()
                    log.info("stream: listening again")
                first = False
                backoff = 0.25
                # Whatever was committed while nobody listened, and any read change.
                self._recount_all()
                self._poke("reconnect")
                await self._listen(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if not self._stopping:
                    log.warning("stream: LISTEN connection lost: %s", _first_line(exc))
            finally:
                self.listening = False
                metrics.LISTENING.set(0)
                if conn is not None:
                    # Never waits on the server: a frozen backend must not hold us here.
                    conn.pgconn.finish()
            if not self._stopping:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        poll = self.settings.stream_poll_interval
        while not self._stopping:
            heard = False
            async for note in conn.notifies(timeout=poll):
                heard = True
                self._hint(note.payload)
            if not heard:
                # A quiet poll interval: the connection must prove it still delivers.
                await self._probe(conn)

    async def _probe(self, conn: psycopg.AsyncConnection[Any]) -> None:
        assert self._pool is not None
        payload = f"{self._probe_prefix}{next(self._probe_ids)}"
        async with self._pool.connection() as work:
            await work.execute(query("stream_probe"), {"payload": payload})
        deadline = time.monotonic() + PROBE_TIMEOUT
        while self._probe_seen != payload:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the LISTEN connection did not deliver its probe")
            async for note in conn.notifies(timeout=left):
                self._hint(note.payload)
                if self._probe_seen == payload:
                    break

    # -- rounds ------------------------------------------------------------------------------

    async def _round_loop(self) -> None:
        # The poll runs here, not on the LISTEN connection's schedule: while that one is
        # frozen or being replaced, the streams still get their rounds.
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.stream_poll_interval)
            except TimeoutError:
                self._poke("poll")
            await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            subs = [s for s in self._subs if s.ended is None]
            if not subs:
                continue
            metrics.ROUNDS.labels(self._cause).inc()
            started = time.monotonic()
            try:
                # A round that hangs (a frozen backend) must not hold every stream for ever.
                await asyncio.wait_for(self._round(subs), ROUND_TIMEOUT)
            except Exception as exc:
                # Whatever it was, the loop must go on: every stream of the process
                # depends on it. A database error is expected now and then; anything else
                # is a bug, logged whole.
                metrics.ROUND_ERRORS.inc()
                if isinstance(exc, psycopg.Error | PoolTimeout | OSError):
                    log.warning("stream: round failed, retrying: %s", _first_line(exc))
                else:
                    log.exception("stream: round failed, retrying")
                for sub in subs:
                    sub.recount = True
                await asyncio.sleep(RETRY_SECONDS)
                self._poke("retry")
            finally:
                metrics.ROUND_SECONDS.observe(time.monotonic() - started)

    async def _round(self, subs: list[Subscriber]) -> None:
        assert self._pool is not None
        # Without a LISTEN session no read hint arrives: every round counts afresh then.
        deaf = not self.listening
        recounts = [deaf or s.recount or s.unread is None or not s.position.complete for s in subs]
        for sub in subs:
            # Cleared before the statement: a read hint during it asks again.
            sub.recount = False
        params = {
            "token_hashes": [s.token_hash for s in subs],
            "prevs": [s.position.prev for s in subs],
            "nexts": [s.position.next for s in subs],
            "afters": [s.position.after for s in subs],
            "recounts": recounts,
            "row_limit": ROW_LIMIT,
        }
        async with self._pool.connection() as conn:
            cur = await conn.execute(query("stream_round"), params)
            rows = await cur.fetchall()
        self._apply(subs, recounts, rows)

    def _apply(self, subs: list[Subscriber], recounts: list[bool], rows: list[DictRow]) -> None:
        # Rows come as: each event's details ('e'), then per slot its header ('h') and the
        # notifications it is owed ('n', in id order).
        events: dict[int, DictRow] = {}
        headers: dict[int, DictRow] = {}
        owed: dict[int, list[tuple[int, datetime | None]]] = defaultdict(list)
        for row in rows:
            if row["kind"] == "e":
                events[int(row["id"])] = row
            elif row["kind"] == "h":
                headers[int(row["slot"])] = row
            else:
                owed[int(row["slot"])].append((int(row["id"]), row["read_at"]))
        now = time.time()
        for row in events.values():
            # NULL while an operator's redeliver_event() has the event waiting again.
            if row["fanned_out_at"] is not None:
                metrics.LAG.observe(max(0.0, now - row["fanned_out_at"].timestamp()))
        encoder = _Encoder(events)
        for slot, sub in enumerate(subs, start=1):
            if sub.ended is not None or sub not in self._subs:
                continue  # ended, or its client left during the statement
            header = headers.get(slot)
            if header is None:
                # No row at all: its token was revoked or expired, or its user deleted.
                sub.end("token_revoked")
                continue
            self._deliver(sub, header, owed.get(slot, []), recounts[slot - 1], encoder)
        # Counted once a round, not once a stream: with several workers every increment is
        # a write to a shared file.
        metrics.SENT.labels("notification").inc(encoder.notifications)
        metrics.SENT.labels("unread").inc(encoder.unreads)

    def _deliver(
        self,
        sub: Subscriber,
        header: DictRow,
        notes: list[tuple[int, datetime | None]],
        recounted: bool,
        encoder: _Encoder,
    ) -> None:
        start = sub.position
        window = start.next or str(header["snapshot"])
        if len(notes) < ROW_LIMIT:
            final = Position(window)
        else:
            final = Position(start.prev, window, notes[-1][0])
            self._poke("catch-up")
        # A round's events for one stream go out as one write.
        out: list[bytes] = []
        last = len(notes) - 1
        for i, (event_id, read_at) in enumerate(notes):
            position = final if i == last else Position(start.prev, window, event_id)
            out.append(encoder.notification(event_id, read_at, position))
        encoder.notifications += len(notes)
        if recounted:
            sub.unread = int(header["unread"])
        else:
            assert sub.unread is not None
            sub.unread += sum(1 for _, read_at in notes if read_at is None)
        sub.position = final
        if final.complete and start.next is not None:
            # The count was taken in this round's snapshot, newer than the window the
            # stream now stands on: what lies between comes next round, so count again
            # there rather than add it twice.
            sub.recount = True
        if sub.unread != sub.sent_unread:
            sub.sent_unread = sub.unread
            out.append(frame("unread", f'{{"unread": {sub.unread}}}', encoder.position(final)))
            encoder.unreads += 1
        if out:
            sub.send(b"".join(out))
        if sub.backlog > MAX_QUEUED:
            sub.end("slow_reader")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
