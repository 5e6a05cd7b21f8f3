"""Fault tests: real `notifications listen` processes, real PostgreSQL, real kills.

Every test records its figures (events, kills, restarts, notifications expected, lost,
duplicated, ...) through the `fault_report` fixture. At the end of the session they are
written to test-artifacts/fault-summary.json and printed in pytest's terminal summary, so
they show whether or not output capture (-s) is on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from notifications import migrate
from notifications.db import check_url
from notifications.embedded import EmbeddedServer
from tests.faults.support import ListenerPool
from tests.pg import with_dbname

_databases = itertools.count()
_FIGURES = pytest.StashKey[dict[str, dict[str, Any]]]()


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict of figures for this test; it lands in the session's fault summary."""
    figures: dict[str, Any] = {}
    request.config.stash.setdefault(_FIGURES, {})[request.node.nodeid] = figures
    return figures


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, {})
    if not figures:
        return
    out = config.rootpath / "test-artifacts" / "fault-summary.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")
    terminalreporter.section("fault summary")
    for nodeid, values in figures.items():
        terminalreporter.write_line(nodeid.split("::")[-1])
        for key, value in values.items():
            terminalreporter.write_line(f"    {key}: {value}")
    terminalreporter.write_line(f"(written to {out})")


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[ListenerPool]:
    pool = ListenerPool(tmp_path)
    yield pool
    pool.close()


# -- a server of our own, which the tests may stop, restart and freeze ------------------------


@dataclass
class OwnServer:
    server: EmbeddedServer
    url: str
    log_dir: Path

    @property
    def socket_dir(self) -> str:
        return str(check_url(self.url)["host"])

    def pg_ctl(self, *args: str) -> None:
        # The server runs as the package's system user when the tests run as root.
        with open(self.log_dir / "pg_ctl.log", "ab") as log:
            subprocess.run(
                [str(self.server.bin_path / "pg_ctl"), "-D", str(self.server.data_dir), *args],
                user=self.server.system_user,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
                timeout=60,
            )

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast", "-w")

    def start(self) -> None:
        # Same socket directory as before, so every client's URL stays valid.
        self.pg_ctl(
            "start",
            "-w",
            "-l",
            str(self.server.data_dir / "log"),
            "-o",
            f'-h "" -k {self.socket_dir}',
        )

    def new_database(self) -> str:
        name = f"fault_{next(_databases)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = with_dbname(self.url, name)
        migrate.upgrade(url)
        return url


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    root = Path(tempfile.mkdtemp(prefix="notif-fault-"))
    server = EmbeddedServer(
        root / "pg", throwaway=True, extra={"shared_buffers": "64MB", "max_connections": "50"}
    )
    url = server.start()
    own = OwnServer(server, url, root)
    try:
        yield own
    finally:
        # pgserver only stops the postmaster it started itself; after a restart by pg_ctl
        # that one is gone, so stop whatever runs now before it deletes the data directory.
        with contextlib.suppress(subprocess.CalledProcessError):
            own.pg_ctl("stop", "-m", "immediate", "-w")
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_database_url(own_server: OwnServer) -> str:
    return own_server.new_database()
