"""The listener loop.

It waits for a NOTIFY, a poll interval or a stop, whichever comes first; NOTIFY is only a
hint, so a lost one costs at most one poll interval. On every wake it drains the backlog
through fan_out_events_v2(), one transaction per batch. Any lost connection leads to a
reconnect with backoff, and every (re)connect starts with a catch-up.
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
from typing import Any

import psycopg
from psycopg import sql

from notifications.config import Settings
from notifications.db import connect
from notifications.listener import metrics
from notifications.listener.sdnotify import SdNotifier, watchdog_interval
from notifications.queries import query

log = logging.getLogger("notifications.listener")

# The defaults of every tuning knob are Settings' own, defined in one place.
_DEFAULTS = Settings.model_fields


class ListenConnectionLost(psycopg.OperationalError):
    """The LISTEN connection stopped answering its own probes."""


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
            probe_channel = f"notifications_probe_{listen_conn.info.backend_pid}"
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
                if self.catch_up(work_conn):
                    self._linger(listen_conn.fileno(), work_conn)
                else:
                    self._record_backlog(work_conn)
                self.notifier.watchdog()
                if not readable:
                    # Quiet for a whole interval: is the LISTEN connection still alive? A
                    # probe sent last time and never seen means it is not.
                    if probe_sent_at is not None:
                        raise ListenConnectionLost("LISTEN connection did not deliver its probe")
                    work_conn.execute(query("probe"), {"channel": probe_channel})
                    probe_sent_at = time.monotonic()

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
        """Fan out batches until the backlog is empty or a stop is asked. Returns events done."""
        done = 0
        while not self.stopping:
            started = time.perf_counter()
            rows = conn.execute(
                query("fan_out"), {"batch_size": self.batch_size, "row_budget": self.row_budget}
            ).fetchall()
            if not rows:
                break
            metrics.BATCH_DURATION.observe(time.perf_counter() - started)
            written = 0
            for event_id, count, lag in rows:
                metrics.EVENT_LAG.observe(lag)
                written += count
                log.debug(
                    "event %d fanned out to %d users after %.3fs",
                    event_id,
                    count,
                    lag,
                    extra={"event_id": event_id, "notifications": count},
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
            # NOTIFY while an older event waits, trusting this loop to reach theirs.
            if len(rows) < self.batch_size:
                # Under a stream of small writes, a short pause lets the next batch
                # gather: fewer, larger fan-outs, and a backlog that is rarely empty, so
                # that few writers pay for a NOTIFY. It costs a few milliseconds of
                # latency only while busy.
                select.select([self._wake_r], [], [], self.busy_pause)
        if done:
            self._record_backlog(conn)
        return done

    def _linger(self, fileno: int, conn: psycopg.Connection[Any]) -> None:
        """Re-poll briefly after a busy wake.

        A writer that saw an older event waiting did not notify; if it committed just
        after our last empty call, these short re-polls find its event in milliseconds
        rather than at the next poll interval. Any work found starts the sequence again;
        a notification ends the lingering, and the main loop takes it from there.
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
