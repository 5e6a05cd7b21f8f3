"""The bench's PostgreSQL: a fresh embedded server with the shipped durable settings.

Every measurement gets its own freshly migrated database on that server, so one section's
tables (and their bloat) never colour another's figures.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from notifications import migrate

_counter = itertools.count()


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@dataclass
class BenchServer:
    """Where the bench databases live, and the settings it ran with (for the report)."""

    url: str
    settings: dict[str, str]
    workdir: Path
    embedded: bool
    created: list[str] = field(default_factory=list)

    def fresh_database(self, label: str) -> str:
        """A new, migrated database; dropped again by close()."""
        name = f"bench_{label}_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        url = with_dbname(self.url, name)
        migrate.upgrade(url)
        return url

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(psycopg.Error):
                self.drop(with_dbname(self.url, name))


def _server_settings(url: str) -> dict[str, str]:
    names = [
        "server_version",
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "max_wal_size",
        "checkpoint_timeout",
        "wal_compression",
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "wal_buffers",
        "effective_io_concurrency",
        "max_parallel_workers_per_gather",
        "jit",
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings"
            " WHERE name = ANY(%s) ORDER BY name",
            [names],
        ).fetchall()
    return {str(k): str(v) for k, v in rows}


@contextlib.contextmanager
def bench_server(extra: dict[str, str] | None = None) -> Iterator[BenchServer]:
    """BENCH_DATABASE_URL's server when set, else a fresh embedded one (durable settings)."""
    workdir = Path(tempfile.mkdtemp(prefix="notif-bench-"))
    external = os.environ.get("BENCH_DATABASE_URL")
    try:
        if external:
            server = BenchServer(external, _server_settings(external), workdir, embedded=False)
            try:
                yield server
            finally:
                server.close()
            return
        from notifications.embedded import EmbeddedServer

        # throwaway=False: the project's SERVER_SETTINGS, fsync and synchronous_commit on.
        embedded = EmbeddedServer(workdir / "pg", throwaway=False, extra=extra)
        url = embedded.start()
        try:
            server = BenchServer(url, _server_settings(url), workdir, embedded=True)
            try:
                yield server
            finally:
                server.close()
        finally:
            embedded.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def connect(url: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=autocommit, application_name="notifications-bench")


def add_users(conn: psycopg.Connection[Any], upto: int, prefix: str = "u") -> None:
    """Grow the users table to `upto` rows in one statement (names u1, u2, ...)."""
    row = conn.execute("SELECT count(*) FROM users").fetchone()
    have = int(row[0]) if row else 0
    if have < upto:
        conn.execute(
            "INSERT INTO users (name) SELECT %s || g FROM generate_series(%s::bigint, %s) g",
            [prefix, have + 1, upto],
        )
        conn.execute("ANALYZE users")


@contextlib.contextmanager
def daemon_process(
    command: str, url: str, logfile: Path, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`notifications COMMAND` (listen, deliver) with its default settings, ready when its
    two connections show."""
    exe = Path(sys.executable).with_name("notifications")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "notifications.cli"]
    full_env = {**os.environ, "DATABASE_URL": url, **env}
    with open(logfile, "ab") as log:
        proc = subprocess.Popen([*cmd, command], env=full_env, stdout=log, stderr=subprocess.STDOUT)
    app = {"listen": "notifications-listener", "deliver": "notifications-deliver"}[command]
    try:
        deadline = time.monotonic() + 30
        with connect(url) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE %s AND datname = current_database()",
                    [app + "%"],
                ).fetchone()
                if row and row[0] >= 2:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command} did not start; see {logfile}")
                time.sleep(0.05)
        # LISTEN runs right after the second connection opens; a missed NOTIFY would still
        # be caught by the catch-up, but give it a moment so the first event is not slower.
        time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def listener_process(url: str, logfile: Path, **env: str) -> Any:
    """`notifications listen`, see daemon_process."""
    return daemon_process("listen", url, logfile, **env)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank style percentile with interpolation (statistics.quantiles)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1])


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class ProcStat:
    """A live process's parent and CPU seconds (user + system), from Linux /proc: the bench's
    server runs on this machine. `reaped` is the CPU of the children it has waited for."""

    ppid: int
    cpu: float
    reaped: float


def proc_stat(pid: int) -> ProcStat | None:
    """None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return ProcStat(
        ppid=int(fields[1]),
        cpu=(int(fields[11]) + int(fields[12])) / tick,
        reaped=(int(fields[13]) + int(fields[14])) / tick,
    )
