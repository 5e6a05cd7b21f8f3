"""The insert trigger's cost, piece by piece (`python -m bench --only triggers`; an
experiment, not part of the default run).

pgbench (section i's harness) drives single-row INSERTs into test_scenarios, 8 clients on
the same 2 cores, no listener, against variants of the INSERT trigger installed in place
of the shipped one (the others stay disabled). Rounds alternate with triggers off, so a
neighbour's load hits both sides alike; each variant's figure is the median ratio of its
rounds to the off rounds next to them.

Variants (each adds or removes one piece):
- `shipped`: statement trigger, transition table, wake check (current_setting + 1-2 index
  probes of the waiting-events index), INSERT ... SELECT, the NOTIFY rule;
- `no wake check`: the same statement trigger without wake_needed_v2/wake_listeners_v2;
- `row trigger`: FOR EACH ROW, INSERT ... VALUES from NEW, no transition table, no wake;
- `row trigger + wake`: the row trigger with the shipped wake check and NOTIFY rule;
- `statement, wake by sequence`: the statement trigger with another wake rule (notify
  unless a NOTIFY went out in the last 100 ms, its time kept in a sequence: setval() is
  neither transactional nor locking, so the check is one page read);
- `shipped, fewer indexes`: the shipped trigger with scenario_events reduced to its
  primary key and the waiting-events index (the others dropped for the experiment).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import pgbench
from bench.env import BenchServer, connect

VARIANTS: dict[str, str] = {
    "no wake check": """
CREATE FUNCTION bench_insert_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n ORDER BY n.id;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_variant AFTER INSERT ON test_scenarios
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_insert_statement();
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
    "row trigger + wake": """
CREATE FUNCTION bench_insert_row_wake() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE wake boolean := wake_needed_v2();
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    VALUES ('scenario.created', NEW.id, NEW.name, coalesce(NEW.created_by, current_actor_v1()));
    PERFORM wake_listeners_v2(wake, true);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_variant AFTER INSERT ON test_scenarios
    FOR EACH ROW EXECUTE FUNCTION bench_insert_row_wake();
""",
    # The wake rule on a sequence instead of the backlog index: setval() is not
    # transactional and takes no lock, so a writer reads the time of the last NOTIFY in one
    # page read, and only the writer that notifies writes it.
    "statement, wake by sequence": """
CREATE SEQUENCE bench_last_wake_ms;
CREATE FUNCTION bench_insert_seq_wake() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n ORDER BY n.id;
    IF now_ms - (SELECT last_value FROM bench_last_wake_ms) > 100 THEN
        PERFORM setval('bench_last_wake_ms', now_ms);
        PERFORM pg_notify(event_channel_v2(), '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_variant AFTER INSERT ON test_scenarios
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_insert_seq_wake();
""",
}
SHIPPED = "scenario_events_insert"
EXTRA_INDEXES = (
    "scenario_events_set_aside_idx",
    "scenario_events_unreferenced_idx",
    "scenario_events_fanout_xid_idx",
)


def _ratio_rounds(
    pg: str, url: str, trigger: str, rounds: int, seconds: float, workdir: Path
) -> tuple[list[float], list[float]]:
    """Alternating rounds: every trigger off, then only `trigger` on."""
    off: list[float] = []
    on: list[float] = []
    for _ in range(rounds):
        with connect(url) as conn:
            conn.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
        off.append(pgbench.pgbench_tps(pg, url, {"insert": 1}, seconds, workdir))
        pgbench._restore(url)
        with connect(url) as conn:
            conn.execute("ALTER TABLE test_scenarios DISABLE TRIGGER USER")
            conn.execute(f"ALTER TABLE test_scenarios ENABLE TRIGGER {trigger}")
        on.append(pgbench.pgbench_tps(pg, url, {"insert": 1}, seconds, workdir))
        pgbench._restore(url)
    return off, on


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
        off, on = _ratio_rounds(pg, url, trigger, rounds, seconds, server.workdir)
        results[label] = {
            "off_tps": off,
            "on_tps": on,
            "ratio": statistics.median(o / f for o, f in zip(on, off, strict=True)),
        }

    measure("shipped", SHIPPED)
    for label, sql in VARIANTS.items():
        with connect(url) as conn:
            conn.execute(sql)
        measure(label, "bench_variant")
        with connect(url) as conn:
            conn.execute("DROP TRIGGER bench_variant ON test_scenarios")
    with connect(url) as conn:
        for index in EXTRA_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
    measure("shipped, fewer indexes", SHIPPED)
    with connect(url) as conn:
        conn.execute("ALTER TABLE test_scenarios ENABLE TRIGGER USER")
    server.drop(url)
    return results
