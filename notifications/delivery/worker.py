"""The deliverer loop.

One asyncio loop: it claims due deliveries (FOR UPDATE SKIP LOCKED; the claim leases each
row for DELIVERY_LEASE seconds and counts the try), sends them concurrently outside any
transaction (webhooks with httpx, e-mail with smtplib in a small thread pool), and records
the outcomes in short transactions of their own, many at a time. NOTIFY on the delivery
channel is a hint; a poll, and the due time of the next retry, cover a lost one.

A deliverer killed mid-send leaves its leased rows to come due again when the lease ends,
so every delivery is sent at least once; webhook receivers de-duplicate on webhook-id.
SIGTERM stops the claims, lets the sends in flight finish, records them, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from notifications.config import ConfigError, Settings
from notifications.db import conninfo
from notifications.delivery import metrics, webhook
from notifications.delivery.job import Job, Result
from notifications.delivery.mail import Mailer
from notifications.delivery.schedule import next_delay
from notifications.queries import query
from notifications.sdnotify import SdNotifier, watchdog_interval

_CONNECTIONS_PER_CLIENT = 16


def _text(value: str | None) -> str | None:
    """What the other side said, storable: PostgreSQL's text refuses NUL, and one refused
    row would fail the whole batch of results it is recorded with."""
    return None if value is None else value.replace("\x00", "\ufffd")


log = logging.getLogger("notifications.delivery")

AConn = psycopg.AsyncConnection[dict[str, Any]]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Done:
    """A finished try, waiting to be recorded."""

    __slots__ = ("duration_ms", "job", "result", "started")

    def __init__(self, job: Job, result: Result, started: datetime, duration_ms: float) -> None:
        self.job = job
        self.result = result
        self.started = started
        self.duration_ms = duration_ms


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        notifier: SdNotifier | None = None,
        name: str = "notifications-deliver",
    ) -> None:
        self.database_url = settings.require_database_url()
        self.settings = settings
        # httpx logs every request, URL included, at INFO: an endpoint's URL may carry its
        # receiver's credentials, and one line per send would drown the deliverer's own log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.schedule = settings.delivery_retry_schedule
        self.concurrency = settings.delivery_concurrency
        self.notifier = notifier or SdNotifier()
        ping_every = watchdog_interval() if self.notifier.enabled else None
        poll = settings.delivery_poll_interval
        self.max_wait = min(poll, ping_every) if ping_every else poll
        self.name = f"{name} {os.getpid()}"
        self.mailer: Mailer | None = None
        self.channels = ["webhook"]
        if settings.smtp_url:
            if not settings.unsubscribe_secret:
                raise ConfigError(
                    "UNSUBSCRIBE_SECRET is not set: e-mails need it to sign their unsubscribe"
                    " links (the API must have the same one)"
                )
            self.mailer = Mailer(
                settings.smtp_url,
                settings.mail_from,
                settings.public_url,
                settings.unsubscribe_secret,
            )
            self.channels.append("email")
        self.ready = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._done: list[Done] = []
        self._attempt = 0
        self._smtp_pool = ThreadPoolExecutor(
            max_workers=settings.smtp_connections, thread_name_prefix="smtp"
        )
        # E-mails in flight, queued for the SMTP threads included. A claimed row's lease
        # runs while it waits in that queue, so no more are claimed than the threads can
        # start soon: two per thread keeps them busy without outliving a lease.
        self._mail_slots = 2 * settings.smtp_connections
        self._mail_in_flight = 0

    # -- control ---------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Finish the sends in flight, record them, return. Safe from any thread."""
        self._stopping = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(wake.set)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):

            def handler(signum: int = signum) -> None:
                log.info("received %s, finishing the sends in flight", signal.Signals(signum).name)
                self.stop()

            loop.add_signal_handler(signum, handler)

    def run(self, install_signal_handlers: bool = False) -> None:
        asyncio.run(self._main(install_signal_handlers))

    # -- main loop -------------------------------------------------------------------------

    async def _main(self, install_signal_handlers: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._stopping:
            self._wake.set()
        if install_signal_handlers:
            self._install_signal_handlers(self._loop)
        # Several small clients rather than one with `concurrency` connections: httpcore's
        # pool does work quadratic in its size on every request (encode/httpx#3215), which
        # made one pool of 100 spend most of its CPU choosing a connection. Sends take the
        # clients in turn, so one slow endpoint can still use all of `concurrency`.
        per_client = min(self.concurrency, _CONNECTIONS_PER_CLIENT)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        try:
            async with contextlib.AsyncExitStack() as clients:
                self._next_client = 0
                self.clients = [
                    await clients.enter_async_context(
                        httpx.AsyncClient(follow_redirects=False, limits=limits, trust_env=False)
                    )
                    for _ in range(-(-self.concurrency // per_client))
                ]
                while not self.stopping:
                    try:
                        await self._session()
                    except psycopg.Error as exc:
                        if not self.ready:
                            # Never connected: a wrong URL, a server that is not there, an
                            # unmigrated database. One line from the CLI; systemd retries.
                            raise
                        if self.stopping:
                            break
                        await self._back_off(exc)
                # Sends still in flight after a lost session: let them end; their rows come
                # due again when the lease ends (they were not recorded).
                if self._in_flight:
                    await asyncio.wait(self._in_flight)
        finally:
            self.notifier.stopping()
            self._smtp_pool.shutdown(wait=True)
            if self.mailer is not None:
                self.mailer.close()
            if self.ready:
                log.info("deliverer stopped")

    async def _back_off(self, exc: psycopg.Error) -> None:
        metrics.RECONNECTS.inc()
        delay = min(self.settings.max_backoff, 0.1 * 2 ** min(self._attempt, 10))
        delay *= random.uniform(0.5, 1.0)
        self._attempt += 1
        log.warning("database session failed (%s); reconnecting in %.2fs", _first_line(exc), delay)
        self.notifier.status(f"reconnecting: {type(exc).__name__}")
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(left, self.max_wait))
            self._wake.clear()
            self.notifier.watchdog()

    async def _connect(self, suffix: str = "") -> AConn:
        return await psycopg.AsyncConnection.connect(
            conninfo(self.database_url, self.name + suffix), autocommit=True, row_factory=dict_row
        )

    async def _session(self) -> None:
        assert self._wake is not None
        async with await self._connect() as listen_conn, await self._connect(" work") as work:
            await work.execute(query("deliver_session"))
            row = await (await work.execute(query("deliver_channel"))).fetchone()
            channel = str(row["channel"]) if row else ""
            await listen_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            hear = asyncio.create_task(self._hear(listen_conn))
            try:
                self._attempt = 0
                if not self.ready:
                    self.ready = True
                    self.notifier.ready("delivering")
                    log.info(
                        "delivering %s (channel %s, %d at once, poll every %.1fs)",
                        " and ".join(self.channels),
                        channel,
                        self.concurrency,
                        self.settings.delivery_poll_interval,
                    )
                else:
                    self.notifier.status("delivering")
                    log.info("delivering again (reconnected)")
                await self._loop_once_connected(work, hear)
            finally:
                hear.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await hear

    async def _hear(self, conn: AConn) -> None:
        assert self._wake is not None
        async for _notify in conn.notifies():
            self._wake.set()

    async def _loop_once_connected(self, work: AConn, hear: asyncio.Task[None]) -> None:
        assert self._wake is not None
        while True:
            if hear.done() and not hear.cancelled():
                exc = hear.exception()
                raise (
                    exc
                    if isinstance(exc, psycopg.Error)
                    else psycopg.OperationalError("LISTEN connection ended")
                )
            self._wake.clear()
            await self._record(work)
            self.notifier.watchdog()
            if self.stopping:
                if not self._in_flight:
                    return
                await asyncio.wait(self._in_flight, timeout=self.max_wait)
                continue
            # Per channel: webhooks up to the free slots, e-mails up to the free SMTP slots.
            free = self.concurrency - len(self._in_flight)
            open_channels: list[str] = []
            full = False
            for channel in self.channels:
                room = free
                if channel == "email":
                    room = min(room, self._mail_slots - self._mail_in_flight)
                if room <= 0:
                    continue
                open_channels.append(channel)
                claimed = await self._claim(work, room, channel)
                free -= claimed
                full = full or claimed == room
            if full:
                continue  # a full claim: more may be due; sends end as we go
            if self._done:
                continue
            wait = self.max_wait
            if open_channels:
                row = await (
                    await work.execute(query("deliver_next_due"), {"channels": open_channels})
                ).fetchone()
                due_in = row["seconds"] if row else None
                if due_in is not None:
                    wait = max(0.0, min(wait, float(due_in) + 0.005))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    # -- claim, send, record ---------------------------------------------------------------

    async def _claim(self, work: AConn, limit: int, channel: str) -> int:
        cur = await work.execute(
            query("deliver_claim"),
            {"limit": limit, "lease": self.settings.delivery_lease, "channels": [channel]},
        )
        rows = await cur.fetchall()
        for row in rows:
            job = Job(
                user_id=row["user_id"],
                id=row["id"],
                event_id=row["event_id"],
                channel=row["channel"],
                endpoint_id=row["endpoint_id"],
                attempts=row["attempts"],
                row=row,
            )
            if job.channel == "email":
                self._mail_in_flight += 1
            task = asyncio.create_task(self._deliver(job))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        metrics.IN_FLIGHT.set(len(self._in_flight))
        return len(rows)

    async def _deliver(self, job: Job) -> None:
        assert self._wake is not None
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            result = await self._send(job)
        except Exception as exc:  # a bug must not lose the row: it is recorded and retried
            log.exception("delivery %d failed unexpectedly", job.id)
            result = Result("retry", error=f"internal error: {_first_line(exc)}"[:500])
        finally:
            if job.channel == "email":
                self._mail_in_flight -= 1
        duration = time.perf_counter() - t0
        metrics.SEND_DURATION.labels(job.channel).observe(duration)
        metrics.SENDS.labels(job.channel, result.outcome).inc()
        if result.outcome == "delivered" and job.found:
            metrics.DELIVERY_LAG.labels(job.channel).observe(
                (datetime.now(UTC) - job.row["created_at"]).total_seconds()
            )
        self._done.append(Done(job, result, started, duration * 1000))
        self._wake.set()

    async def _send(self, job: Job) -> Result:
        if not job.found:
            return Result("dead", error="the notification no longer exists")
        if job.channel == "webhook":
            if job.row["url"] is None:
                return Result("dead", error="the endpoint was deleted")
            if job.row["disabled_at"] is not None:
                return Result("dead", error="the endpoint is disabled")
            self._next_client = (self._next_client + 1) % len(self.clients)
            client = self.clients[self._next_client]
            return await webhook.send(
                client,
                job,
                allow_private=self.settings.webhook_allow_private,
                timeout=self.settings.webhook_timeout,
            )
        if self.mailer is None:  # not claimed without SMTP_URL; kept for the type checker
            return Result("retry", error="SMTP_URL is not set")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._smtp_pool, self.mailer.send, job)

    async def _record(self, work: AConn) -> None:
        if not self._done:
            return
        done, self._done = self._done, []
        records: list[tuple[Done, str, float, str | None]] = []
        gone: list[Done] = []
        for d in done:
            r = d.result
            outcome: str = r.outcome
            delay, error = 0.0, r.error
            if outcome == "gone":
                gone.append(d)
                outcome = "dead"
            elif outcome == "retry":
                wait = next_delay(self.schedule, d.job.attempts, r.retry_after)
                if wait is None:
                    outcome = "dead"
                    error = f"{error} (gave up after {d.job.attempts} tries)"
                else:
                    delay = wait
            records.append((d, outcome, delay, error))
        try:
            async with work.transaction():
                await work.execute(
                    query("deliver_record"),
                    {
                        "user_ids": [d.job.user_id for d, *_ in records],
                        "ids": [d.job.id for d, *_ in records],
                        "attempts": [d.job.attempts for d, *_ in records],
                        "outcomes": [o for _, o, _, _ in records],
                        "delays": [w for _, _, w, _ in records],
                        "errors": [_text(e) for *_, e in records],
                    },
                )
                await work.execute(
                    query("deliver_log_attempts"),
                    {
                        "user_ids": [d.job.user_id for d in done],
                        "ids": [d.job.id for d in done],
                        "started": [d.started for d in done],
                        "durations": [d.duration_ms for d in done],
                        "statuses": [d.result.http_status for d in done],
                        "replies": [_text(d.result.smtp_reply) for d in done],
                        "errors": [_text(d.result.error) for d in done],
                    },
                )
                for d in gone:
                    await work.execute(
                        query("deliver_disable_endpoint"),
                        {
                            "user_id": d.job.user_id,
                            "endpoint_id": d.job.endpoint_id,
                            "reason": "the receiver answered 410 Gone",
                        },
                    )
        except BaseException:
            # Not recorded: keep them for the next session (their leases still hold them).
            self._done = done + self._done
            raise
        for d in gone:
            metrics.ENDPOINTS_DISABLED.inc()
            log.warning(
                "webhook endpoint %d of user %d answered 410 Gone: disabled",
                d.job.endpoint_id,
                d.job.user_id,
            )
        for d, outcome, delay, error in records:
            if outcome == "dead":
                log.warning("delivery %d (%s) is dead: %s", d.job.id, d.job.channel, error)
            elif outcome == "retry":
                log.info(
                    "delivery %d (%s) try %d failed (%s); next in %.1fs",
                    d.job.id,
                    d.job.channel,
                    d.job.attempts,
                    error,
                    delay,
                )
