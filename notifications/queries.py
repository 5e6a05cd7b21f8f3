"""The runtime queries, by name, from notifications/sql/queries.sql.

Every process (API, listener, CLI) runs its SQL through `query(name)`, so the text of a
query is in one file that psql users and reviewers can read whole.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import LiteralString

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def all_queries() -> dict[str, LiteralString]:
    text = resources.files("notifications").joinpath("sql", "queries.sql").read_text("utf-8")
    parts = _NAME.split(text)
    found: dict[str, LiteralString] = {}
    # parts: [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"queries.sql: query {name!r} is defined twice")
        # A block may end with the comment heading the next section; drop trailing comments.
        lines = body.strip().splitlines()
        while lines and lines[-1].lstrip().startswith("--"):
            lines.pop()
        sql = "\n".join(lines).strip()
        if not sql:
            raise ValueError(f"queries.sql: query {name!r} is empty")
        # Read from our own package, never from input: as safe as a literal (mypy treats
        # LiteralString as str, so no cast is needed for psycopg's typed execute()).
        found[name] = sql
    return found


def query(name: str) -> LiteralString:
    """The SQL of one named block; a KeyError names a query that does not exist."""
    return all_queries()[name]
