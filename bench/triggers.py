"""The insert trigger's cost, piece by piece (`python -m bench --only triggers`; an
experiment, not part of the default run).

pgbench (section i's harness) drives single-row INSERTs into test_scenarios, 8 clients on
the same 2 cores, no listener, against variants of the INSERT trigger installed in place
of the shipped one (the others stay disabled). Rounds alternate with triggers off, so a
neighbour's load hits both sides alike; each variant's figure is the median ratio of its
rounds to the off rounds next to them.

Variants (each adds or removes one piece):
- `shipped`: statement trigger (SECURITY DEFINER with a fixed search_path, as roles.sql
  makes every trigger function), transition table, INSERT ... SELECT; the wake-up decided
  at commit by the deferred constraint trigger `scenario_events_wake` (queued by the
  transaction's first event row; reads and, at most every 100 ms, sets a sequence);
- `shipped without its wake-up`: `scenario_events_wake` disabled;
- `no wake-up, SECURITY INVOKER`: the same statement as a plain function;
- `row trigger`: FOR EACH ROW, INSERT ... VALUES from NEW, no transition table, no wake;
- `backlog-age rule (before)`: the statement trigger with the rule shipped before: at the
  INSERT, read the oldest waiting event of the waiting-events index and, when that one is
  older than 100 ms, the newest (the right-most leaf, which every writer inserts into);
- `sequence rule at the INSERT`: the shipped rule, checked in the statement trigger
  instead of at commit (what the deferred trigger costs on top of it);
- `shipped, fewer indexes`: the shipped trigger with scenario_events reduced to its
  primary key and the waiting-events index (the others dropped for the experiment).
All but the first two are plain (SECURITY INVOKER) functions. Each is measured as
transactions per second and as the server's CPU per transaction (/proc: the postmaster
and its children, reaped ones included), on and off.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from bench import pgbench
from bench.env import BenchServer, connect, proc_stat

_STATEMENT_INSERT = """
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n ORDER BY n.id;
"""
_STATEMENT_TRIGGER = """
CREATE TRIGGER bench_variant AFTER INSERT ON test_scenarios
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""
# Each variant runs with the shipped wake-up at commit disabled. Their functions are
# created after the migration, so unlike the shipped ones they are not SECURITY DEFINER
# with a fixed search_path (roles.sql): compare them with the first.
VARIANTS: dict[str, str] = {
    "no wake-up, SECURITY INVOKER": f"""
CREATE FUNCTION bench_insert_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {_STATEMENT_INSERT} RETURN NULL; END $$;
{_STATEMENT_TRIGGER.format(function="bench_insert_statement")}
""",
    "row trigger": """
CREATE FUNCTION bench_insert_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    VALUES ('scenario.created', NEW.id, NEW.name, coalesce(NEW.created_by, current_actor_v1()));
    RETURN NULL;
END $$;
CREATE TRIGGER bench_variant AFTER INSERT ON test_scenarios
    FOR EACH ROW EXECUTE FUNCTION bench_insert_row();
""",
    # The baseline: the rule this one replaced, as it shipped until 2026-12-04.
    "backlog-age rule (before)": f"""
CREATE FUNCTION bench_wake_needed() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE waited interval;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN RETURN true; END IF;
    SELECT clock_timestamp() - e.occurred_at INTO waited FROM scenario_events e
    WHERE e.processed_at IS NULL AND e.failed_at IS NULL ORDER BY e.id LIMIT 1;
    IF waited IS NULL THEN RETURN true;
    ELSIF waited <= interval '100 milliseconds' THEN RETURN false;
    END IF;
    SELECT clock_timestamp() - e.occurred_at INTO waited FROM scenario_events e
    WHERE e.processed_at IS NULL AND e.failed_at IS NULL ORDER BY e.id DESC LIMIT 1;
    RETURN waited > interval '100 milliseconds';
END $$;
CREATE FUNCTION bench_insert_backlog_age() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE wake boolean := bench_wake_needed();
BEGIN {_STATEMENT_INSERT}
    IF FOUND AND wake THEN PERFORM pg_notify(event_channel_v2(), ''); END IF;
    RETURN NULL;
END $$;
{_STATEMENT_TRIGGER.format(function="bench_insert_backlog_age")}
""",
    "sequence rule at the INSERT": f"""
CREATE FUNCTION bench_insert_seq_wake() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN {_STATEMENT_INSERT}
    IF now_ms - (SELECT last_value FROM scenario_events_woken_at_v2) >= 100 THEN
        PERFORM setval('scenario_events_woken_at_v2', now_ms);
        PERFORM pg_notify(event_channel_v2(), '');
    END IF;
    RETURN NULL;
END $$;
{_STATEMENT_TRIGGER.format(function="bench_insert_seq_wake")}
""",
}
SHIPPED = "scenario_events_insert"
WAKE = "ALTER TABLE scenario_events {} TRIGGER scenario_events_wake"
EXTRA_INDEXES = (
    "scenario_events_set_aside_idx",
    "scenario_events_unreferenced_idx",
    "scenario_events_fanout_xid_idx",
)


def _server_cpu(postmaster: int) -> float:
    """CPU seconds of the whole server so far: the postmaster, its live children, and the
    children it has reaped (pgbench's backends end with each round)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (st := proc_stat(int(entry))) is None:
            continue
        if int(entry) == postmaster:
            total += st.cpu + st.reaped
        elif st.ppid == postmaster:
            total += st.cpu
    return total


def _postmaster(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    backend = proc_stat(int(row[0])) if row else None
    assert backend is not None
    return backend.ppid


def _ratio_rounds(
    pg: str, url: str, trigger: str, rounds: int, seconds: float, workdir: Path
) -> dict[str, list[float]]:
    """Alternating rounds: every trigger off, then only `trigger` on. Besides transactions
    per second, the server's CPU per transaction, which a neighbour's load barely moves."""
    postmaster = _postmaster(url)
    out: dict[str, list[float]] = {"off": [], "on": [], "off_cpu_us": [], "on_cpu_us": []}
    for _ in range(rounds):
        for side in ("off", "on"):
            with connect(url) as conn:
                conn.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
                if side == "on":
                    conn.execute(f"ALTER TABLE test_scenarios ENABLE TRIGGER {trigger}")
            began = _server_cpu(postmaster)
            tps = pgbench.pgbench_tps(pg, url, {"insert": 1}, seconds, workdir)
            used = _server_cpu(postmaster) - began
            out[side].append(tps)
            out[f"{side}_cpu_us"].append(used / (tps * round(seconds)) * 1e6)
            pgbench._restore(url)
    return out


def run(server: BenchServer, quick: bool, log: Path) -> dict[str, Any]:
    pg, version = pgbench.find_pgbench()
    seconds = 3.0 if quick else 5.0
    rounds = 1 if quick else 3
    results: dict[str, Any] = {"pgbench_version": version, "seconds": seconds, "rounds": rounds}
    url = server.fresh_database("triggers")
    pgbench._prepare(url)
    pgbench.pgbench_tps(pg, url, {"insert": 1}, 2, server.workdir)  # warm-up
    pgbench._restore(url)

    def measure(label: str, trigger: str) -> None:
        got = _ratio_rounds(pg, url, trigger, rounds, seconds, server.workdir)
        results[label] = {
            "off_tps": got["off"],
            "on_tps": got["on"],
            "ratio": statistics.median(o / f for o, f in zip(got["on"], got["off"], strict=True)),
            "off_cpu_us": statistics.median(got["off_cpu_us"]),
            "on_cpu_us": statistics.median(got["on_cpu_us"]),
        }

    measure("shipped", SHIPPED)
    with connect(url) as conn:
        conn.execute(WAKE.format("DISABLE"))
    measure("shipped without its wake-up", SHIPPED)
    for label, sql in VARIANTS.items():
        with connect(url) as conn:
            conn.execute(sql)
        measure(label, "bench_variant")
        with connect(url) as conn:
            conn.execute("DROP TRIGGER bench_variant ON test_scenarios")
    with connect(url) as conn:
        conn.execute(WAKE.format("ENABLE"))
    with connect(url) as conn:
        for index in EXTRA_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
    measure("shipped, fewer indexes", SHIPPED)
    with connect(url) as conn:
        conn.execute("ALTER TABLE test_scenarios ENABLE TRIGGER USER")
    server.drop(url)
    return results
