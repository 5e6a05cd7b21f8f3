"""The listener loop.

It waits for a NOTIFY, a poll interval or a stop, whichever comes first; NOTIFY is only a
hint, so a lost one costs at most one poll interval. On every wake it drains the backlog
through fan_out_events_v2(), one transaction per batch. Any lost connection leads to a
reconnect with backoff, and every (re)connect starts with a catch-up.

A batch that fails for another reason (a statement timeout, a broken row, a trigger added
by hand) is retried in halves until the failing event is alone; an event that still fails
FANOUT_MAX_ATTEMPTS times alone is set aside (listed in notification_backlog, tried again
after `notifications event redeliver`), and the events behind it go on being delivered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from notifications.config import ConfigError, Settings
from notifications.db import connect
from notifications.listener import metrics
from notifications.queries import query
from notifications.sdnotify import SdNotifier, watchdog_interval

log = logging.getLogger("notifications.listener")

# The defaults of every tuning knob are Settings' own, defined in one place.
_DEFAULTS = Settings.model_fields


class ListenConnectionLost(psycopg.OperationalError):
    """The LISTEN connection stopped answering its own probes."""


class PooledSession(ConfigError):
    """DATABASE_URL leads to a pooler that does not keep a session on one server connection."""


# Failures that say nothing about the events: they are retried as they are, uncounted.
_TRANSIENT = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
)
# Failures of the set-up, not of an event: a role without rights, an unmigrated database.
# They end the session like a lost connection (and a first start in one line).
_SETUP = (
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.ReadOnlySqlTransaction,
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Listener:
    def __init__(
        self,
        database_url: str,
        *,
        poll_interval: float = _DEFAULTS["poll_interval"].default,
        batch_size: int = _DEFAULTS["batch_size"].default,
        row_budget: int = _DEFAULTS["batch_row_budget"].default,
        linger_delays: tuple[float, ...] = _DEFAULTS["linger_delays"].default,
        busy_pause: float = _DEFAULTS["busy_pause"].default,
        notifier: SdNotifier | None = None,
        max_backoff: float = _DEFAULTS["max_backoff"].default,
        statement_timeout: float = _DEFAULTS["listener_statement_timeout"].default,
        lock_timeout: float = _DEFAULTS["listener_lock_timeout"].default,
        max_attempts: int = _DEFAULTS["fanout_max_attempts"].default,
        name: str = "notifications-listener",
    ) -> None:
        self.database_url = database_url
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.row_budget = row_budget
        # Seconds between the re-polls after a busy wake (see _linger).
        self.linger_delays = tuple(linger_delays)
        # Seconds between two fan-out calls while busy (see catch_up).
        self.busy_pause = busy_pause
        self.channel = ""  # read from the database at each session start
        self.notifier = notifier or SdNotifier()
        # systemd kills the service when WATCHDOG=1 stops for WatchdogSec; every wait and
        # every backoff sleep is capped at half of that so a quiet loop still pings in time.
        ping_every = watchdog_interval() if self.notifier.enabled else None
        self.max_wait = min(poll_interval, ping_every) if ping_every else poll_interval
        self.max_backoff = max_backoff
        self.statement_timeout = statement_timeout
        self.lock_timeout = lock_timeout
        self.max_attempts = max_attempts
        self.name = f"{name} {os.getpid()}"
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._attempt = 0
        self._pipe_lock = threading.Lock()

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return. Safe from a signal handler."""
        self._stop.set()
        # After run() has closed the pipe, its descriptor number may belong to another file.
        # Never wait for the lock: a signal handler that blocks on a lock its own thread
        # holds (run() closing the pipe) would hang the process, and then the pipe is
        # closing anyway.
        if not self._pipe_lock.acquire(blocking=False):
            return
        try:
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.write(self._wake_w, b"x")
        finally:
            self._pipe_lock.release()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            log.info("received %s, finishing the current batch", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> None:
        # Nothing is logged before the first connection: a listener that cannot start ends
        # in the CLI's one-line error alone.
        try:
            while not self.stopping:
                try:
                    self._session()
                except psycopg.Error as exc:
                    # psycopg files deadlocks, cancels and timeouts under OperationalError
                    # too, so the class does not tell a lost connection from a failed
                    # statement; either way the session's connections are gone, and the
                    # cure is the same: back off, reconnect, catch up.
                    if self.stopping:
                        break
                    if not self.ready.is_set():
                        # Never got through a first catch-up: a wrong URL, a server that
                        # is not there, an unmigrated database. Fail loudly and let the
                        # supervisor (systemd) retry.
                        raise
                    self._back_off(exc)
        finally:
            self.notifier.stopping()
            with self._pipe_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            if self.ready.is_set():
                log.info("listener stopped")

    def backoff_delay(self) -> float:
        """Seconds before the next reconnect: doubling from 0.1 s, capped, with jitter."""
        delay: float = min(self.max_backoff, 0.1 * 2 ** min(self._attempt, 10))
        return delay * random.uniform(0.5, 1.0)

    def _back_off(self, exc: psycopg.Error) -> None:
        metrics.RECONNECTS.inc()
        delay = self.backoff_delay()
        self._attempt += 1
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("database session failed (%s); reconnecting in %.2fs", reason, delay)
        self.notifier.status(f"reconnecting: {type(exc).__name__}")
        self._sleep(delay)

    def _session(self) -> None:
        with (
            connect(self.database_url, self.name, autocommit=True) as listen_conn,
            connect(self.database_url, self.name + " fanout", autocommit=True) as work_conn,
        ):
            # The server's own pid: a pooler hands the client a made-up one (even negative).
            row = listen_conn.execute(query("backend_pid")).fetchone()
            server_pid = int(row[0]) if row else 0
            probe_channel = f"notifications_probe_{server_pid}"
            if server_pid != listen_conn.info.backend_pid:
                self._require_session(listen_conn, work_conn, probe_channel)
            # Our own limits, whatever the role or the database sets: a statement timeout
            # of an ALTER ROLE must not make a large event fail forever, and no wait for a
            # lock may outlast LISTENER_LOCK_TIMEOUT.
            work_conn.execute(
                query("listener_session"),
                {
                    "statement_timeout_ms": round(self.statement_timeout * 1000),
                    "lock_timeout_ms": round(self.lock_timeout * 1000),
                },
            )
            # The channel is defined once, in SQL, beside the triggers that notify it.
            row = work_conn.execute(query("listen_channel")).fetchone()
            self.channel = str(row[0]) if row else ""
            for channel in (self.channel, probe_channel):
                listen_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            # Anything committed while nobody listened is picked up here.
            if not self.catch_up(work_conn):
                self._record_backlog(work_conn)  # catch_up records it when it did work
            self._attempt = 0
            if not self.ready.is_set():
                self.ready.set()
                self.notifier.ready("listening")
                log.info(
                    "listening on %s (poll every %.1fs, batches of %d)",
                    self.channel,
                    self.poll_interval,
                    self.batch_size,
                )
            else:
                self.notifier.status("listening")
                log.info("listening on %s", self.channel)

            # A NOTIFY sent while nobody listened is lost, and the writers within 100 ms
            # of it skipped theirs: re-poll as after any NOTIFY.
            self._linger(listen_conn.fileno(), work_conn)

            probe_sent_at: float | None = None
            while not self.stopping:
                readable = self._wait(listen_conn.fileno(), self.max_wait)
                if self.stopping:
                    break
                hint = False
                if readable:
                    for notify in listen_conn.notifies(timeout=0):
                        if notify.channel == probe_channel:
                            probe_sent_at = None
                        else:
                            hint = True
                metrics.WAKEUPS.labels("notify" if hint else "poll").inc()
                found = self.catch_up(work_conn)
                if not found:
                    self._record_backlog(work_conn)
                # After a NOTIFY even when its events were taken already (by a re-poll):
                # writers within 100 ms of it skipped theirs and may commit just after.
                if found or hint:
                    self._linger(listen_conn.fileno(), work_conn)
                self._finish_user_deletions(work_conn)
                self.notifier.watchdog()
                if not readable:
                    # Quiet for a whole interval: is the LISTEN connection still alive? A
                    # probe sent last time and never seen means it is not.
                    if probe_sent_at is not None:
                        raise ListenConnectionLost("LISTEN connection did not deliver its probe")
                    work_conn.execute(query("probe"), {"channel": probe_channel})
                    probe_sent_at = time.monotonic()

    def _require_session(
        self,
        listen_conn: psycopg.Connection[Any],
        work_conn: psycopg.Connection[Any],
        channel: str,
    ) -> None:
        """Behind a pooler (the pid the client was told is not the server's): LISTEN works
        only if the pooler keeps this client on one server connection (session mode). A
        notification sent from the other connection must come back to this one."""
        listen_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        work_conn.execute(query("probe"), {"channel": channel})
        for notify in listen_conn.notifies(timeout=2.0):
            if notify.channel == channel:
                return
        raise PooledSession(
            "DATABASE_URL leads to a connection pooler in transaction mode (PgBouncer?):"
            " LISTEN needs a direct session connection to PostgreSQL"
            " (or a session-mode pool) for the listener"
        )

    def _wait(self, fileno: int, timeout: float) -> bool:
        """True when the connection has something to read; False on timeout or stop."""
        ready, _, _ = select.select([fileno, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        return fileno in ready

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            select.select([self._wake_r], [], [], min(left, self.max_wait))
            self.notifier.watchdog()

    # -- fan-out ---------------------------------------------------------------------------

    def catch_up(self, conn: psycopg.Connection[Any]) -> int:
        """Fan out batches until the backlog is empty or a stop is asked. Returns events done.

        A failed batch is retried in halves; a batch of one names its event, whose failures
        are recorded in the database (record_fanout_failure_v2), which sets it aside after
        max_attempts. Batches grow back after each success.
        """
        done = 0
        size = self.batch_size
        failures = 0
        while not self.stopping:
            started = time.perf_counter()
            event_id: int | None = None
            try:
                with self._watchdog_fed():
                    if size > 1:
                        rows = conn.execute(
                            query("fan_out"),
                            {"batch_size": size, "row_budget": self.row_budget},
                        ).fetchall()
                    else:
                        row = conn.execute(query("next_event")).fetchone()
                        event_id = row[0] if row else None
                        if event_id is None:
                            break
                        rows = conn.execute(
                            query("fan_out_event"),
                            {"row_budget": self.row_budget, "event_id": event_id},
                        ).fetchall()
            except psycopg.Error as exc:
                if not self._is_event_failure(conn, exc):
                    raise
                metrics.FANOUT_FAILURES.inc()
                reason = _first_line(exc)
                if isinstance(exc, _TRANSIENT):
                    log.warning("fan-out failed (%s); retrying", reason)
                elif event_id is None:
                    size = max(1, size // 2)
                    log.warning(
                        "fan-out of a batch failed (%s); retrying in batches of %d", reason, size
                    )
                    continue
                elif self._record_failure(conn, event_id, reason):
                    metrics.EVENTS_SET_ASIDE.inc()
                    log.error(
                        "event %d set aside after %d failed fan-outs (%s);"
                        " see notification_backlog, then: notifications event redeliver %d",
                        event_id,
                        self.max_attempts,
                        reason,
                        event_id,
                        extra={"event_id": event_id},
                    )
                    continue
                else:
                    log.warning(
                        "fan-out of event %d failed (%s); retrying",
                        event_id,
                        reason,
                        extra={"event_id": event_id},
                    )
                # Retries of one cause (a lock held, an event failing alone) back off.
                failures += 1
                self._sleep(min(self.max_backoff, 0.05 * 2 ** min(failures, 10)))
                continue
            if not rows:
                if event_id is not None:
                    continue  # taken by another listener meanwhile: look again
                break
            failures = 0
            size = min(self.batch_size, size * 2)
            metrics.BATCH_DURATION.observe(time.perf_counter() - started)
            written = 0
            for event, count, lag in rows:
                metrics.EVENT_LAG.observe(lag)
                written += count
                log.debug(
                    "event %d fanned out to %d users after %.3fs",
                    event,
                    count,
                    lag,
                    extra={"event_id": event, "notifications": count},
                )
            metrics.EVENTS_PROCESSED.inc(len(rows))
            metrics.NOTIFICATIONS_WRITTEN.inc(written)
            log.info(
                "fanned out events %d..%d (%d events, %d notifications)",
                rows[0][0],
                rows[-1][0],
                len(rows),
                written,
                extra={"event_ids": [r[0] for r in rows], "notifications": written},
            )
            done += len(rows)
            self.notifier.watchdog()
            # Always go round once more, until a call finds nothing: writers skip their
            # NOTIFY within 100 ms of another one, trusting this loop to reach theirs.
            if len(rows) < size and self.busy_pause:
                # Optionally, under a stream of small writes, a pause lets the next batch
                # gather: fewer, larger fan-outs for a few milliseconds of latency.
                select.select([self._wake_r], [], [], self.busy_pause)
        if done:
            self._record_backlog(conn)
        return done

    @staticmethod
    def _is_event_failure(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
        """A statement that failed on a working connection, for a reason other than set-up."""
        return (
            not conn.closed
            and not conn.broken
            and exc.sqlstate is not None
            and not isinstance(exc, _SETUP)
        )

    def _record_failure(self, conn: psycopg.Connection[Any], event_id: int, reason: str) -> bool:
        """Counts a failed fan-out of this event alone; True once it is set aside."""
        row = conn.execute(
            query("record_fanout_failure"),
            {"event_id": event_id, "error": reason, "max_attempts": self.max_attempts},
        ).fetchone()
        return bool(row and row[0])

    @contextlib.contextmanager
    def _watchdog_fed(self) -> Iterator[None]:
        """Pings systemd's watchdog from a thread while one fan-out statement runs: a single
        event for millions of users is one statement, and it may outlast WatchdogSec. The
        statement itself is bounded by LISTENER_STATEMENT_TIMEOUT and its lock waits by
        LISTENER_LOCK_TIMEOUT, so a listener that is truly stuck still stops pinging."""
        if not self.notifier.enabled:
            yield
            return
        finished = threading.Event()

        def feed() -> None:
            while not finished.wait(self.max_wait):
                self.notifier.watchdog()

        feeder = threading.Thread(target=feed, name="watchdog", daemon=True)
        feeder.start()
        try:
            yield
        finally:
            finished.set()
            feeder.join()

    def _finish_user_deletions(self, conn: psycopg.Connection[Any]) -> None:
        """Removes what fan-outs in flight wrote for users deleted meanwhile (see
        finish_user_deletions_v2); a failure here waits for the next wake."""
        try:
            conn.execute(query("finish_user_deletions"))
        except psycopg.Error as exc:
            if not self._is_event_failure(conn, exc):
                raise
            log.warning("clean-up after user deletions failed (%s)", _first_line(exc))

    def _linger(self, fileno: int, conn: psycopg.Connection[Any]) -> None:
        """Re-poll briefly after a NOTIFY or a busy wake.

        A writer within 100 ms of another writer's NOTIFY did not notify
        (triggers/scenario_events.v2.sql); if it committed just after our last empty call,
        these short re-polls find its event in milliseconds rather than at the next poll
        interval. Any work found starts the sequence again; a notification ends the
        lingering, and the main loop takes it from there.
        """
        delays = self.linger_delays
        while delays and not self.stopping:
            ready, _, _ = select.select([fileno, self._wake_r], [], [], delays[0])
            if ready:
                return
            delays = self.linger_delays if self.catch_up(conn) else delays[1:]

    def _record_backlog(self, conn: psycopg.Connection[Any]) -> None:
        backlog = conn.execute(query("backlog_count")).fetchone()
        metrics.BACKLOG.set(backlog[0] if backlog else 0)
        metrics.SET_ASIDE.set(backlog[1] if backlog else 0)
