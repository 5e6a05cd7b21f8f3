"""Metrics across serve's worker processes (prometheus_client's multiprocess mode).

A scrape reaches whichever worker accepts it, so with API_WORKERS > 1 each worker writes
its figures to files in one directory and /metrics adds them all up. `serve` prepares the
directory before the workers start (PROMETHEUS_MULTIPROC_DIR, or a fresh temporary one);
with one process (`dev`, the tests' servers) nothing of this is used.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def prepare() -> Path:
    """In the supervisor, before any worker: an empty directory the workers inherit."""
    path = Path(os.environ.get(ENV) or tempfile.mkdtemp(prefix="notifications-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    os.environ[ENV] = str(path)
    return path


def prune_dead_workers() -> None:
    """A worker that died without retiring (killed, crashed) leaves its live gauges behind;
    each new worker removes those of processes that no longer exist."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    for file in Path(directory).iterdir():
        match = _LIVE_FILE.match(file.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's


def retire() -> None:
    """A worker leaving: its live gauges (open streams, listening) stop counting."""
    if enabled():
        with contextlib.suppress(OSError):
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def registry() -> CollectorRegistry:
    collected = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
    return collected
