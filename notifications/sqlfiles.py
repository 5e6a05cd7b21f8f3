"""Loads the SQL files shipped with the package (sql/ and triggers/ in the checkout)."""

from __future__ import annotations

import hashlib
from importlib import resources

# Every file a released migration applies. Its digest is recorded in sql/RELEASED, and a
# test fails if a released file changes: a new behaviour needs a new versioned file.
_PACKAGES = {"sql": "notifications.sql", "triggers": "notifications.triggers"}


def read_sql(path: str) -> str:
    """Read 'sql/v1/tables.sql' or 'triggers/scenario_events.v1.sql'."""
    top, _, rest = path.partition("/")
    package = _PACKAGES[top]
    parts = rest.split("/")
    if len(parts) > 1:
        package = package + "." + ".".join(parts[:-1])
    return resources.files(package).joinpath(parts[-1]).read_text(encoding="utf-8")


def digest(path: str) -> str:
    return hashlib.sha256(read_sql(path).encode("utf-8")).hexdigest()


def released() -> dict[str, str]:
    """The frozen manifest: path -> sha256."""
    text = resources.files("notifications.sql").joinpath("RELEASED").read_text(encoding="utf-8")
    manifest = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            sha, path = line.split()
            manifest[path] = sha
    return manifest
