"""Loads the SQL files shipped inside the package (notifications/sql/, notifications/triggers/;
also reachable as sql/ and triggers/ at the top of the checkout)."""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.resources.abc import Traversable

# Every file a released migration applies. Its digest is recorded in sql/RELEASED, and a
# test fails if a released file changes: a new behaviour needs a new versioned file.
_TOPS = ("sql", "triggers")


def _root() -> Traversable:
    return resources.files("notifications")


def read_sql(path: str) -> str:
    """Read 'sql/v1/tables.sql' or 'triggers/scenario_events.v1.sql'."""
    top = path.partition("/")[0]
    if top not in _TOPS:
        raise ValueError(f"not a shipped SQL path: {path!r}")
    return _root().joinpath(*path.split("/")).read_text(encoding="utf-8")


def digest(path: str) -> str:
    return hashlib.sha256(read_sql(path).encode("utf-8")).hexdigest()


def released() -> dict[str, str]:
    """The frozen manifest: path -> sha256."""
    text = _root().joinpath("sql", "RELEASED").read_text(encoding="utf-8")
    manifest = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            sha, path = line.split()
            manifest[path] = sha
    return manifest


# The runtime queries (notifications/queries.py) change with the code; no revision applies them.
_NOT_MIGRATIONS = frozenset({"sql/queries.sql"})


def all_files() -> list[str]:
    """Every SQL file a revision may apply, as 'sql/...' and 'triggers/...' paths."""
    found = []
    for top in _TOPS:
        stack = [(_root().joinpath(top), top)]
        while stack:
            node, prefix = stack.pop()
            for child in node.iterdir():
                if child.is_dir() and child.name != "__pycache__":
                    stack.append((child, f"{prefix}/{child.name}"))
                elif (
                    child.name.endswith(".sql") and f"{prefix}/{child.name}" not in _NOT_MIGRATIONS
                ):
                    found.append(f"{prefix}/{child.name}")
    return sorted(found)


def freeze() -> str:
    """The manifest text for the files as they are now (run when releasing a revision)."""
    lines = ["# sha256 of every released SQL file; see docs/migrations.md. Never edit by hand."]
    lines += [f"{digest(path)}  {path}" for path in all_files()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(freeze(), end="")
