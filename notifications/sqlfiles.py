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


def all_files() -> list[str]:
    """Every SQL file shipped, as 'sql/...' and 'triggers/...' paths."""
    found = []
    for top, package in _PACKAGES.items():
        root = resources.files(package)
        stack = [(root, top)]
        while stack:
            node, prefix = stack.pop()
            for child in node.iterdir():
                if child.is_dir() and child.name != "__pycache__":
                    stack.append((child, f"{prefix}/{child.name}"))
                elif child.name.endswith(".sql"):
                    found.append(f"{prefix}/{child.name}")
    return sorted(found)


def freeze() -> str:
    """The manifest text for the files as they are now (run when releasing a revision)."""
    lines = ["# sha256 of every released SQL file; see docs/migrations.md. Never edit by hand."]
    lines += [f"{digest(path)}  {path}" for path in all_files()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(freeze(), end="")
