"""The one way tests run the `notifications` command: the installed console script, in a
subprocess, with an environment that holds only what the test gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from notifications.config import Settings

CLI = str(Path(sys.executable).with_name("notifications"))

# Every variable Settings reads, and systemd's: the caller's environment must not leak in.
_SCRUB = frozenset(
    {str(f.validation_alias) for f in Settings.model_fields.values()}
    | {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
)


def cli_env(database_url: str | None = None, **env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    if database_url is not None:
        environ["DATABASE_URL"] = database_url
    environ.update(env)
    return environ


def run_cli(
    *args: str, database_url: str | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run one command to its end; stdout and stderr captured as text."""
    return subprocess.run(
        [CLI, *args],
        env=cli_env(database_url, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(
    *args: str, database_url: str | None = None, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[Any]:
    """Start a long-running command (listen, serve); the caller stops and reaps it."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen([CLI, *args], env=cli_env(database_url, **(env or {})), **popen)
