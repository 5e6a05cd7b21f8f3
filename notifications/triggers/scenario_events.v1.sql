-- Released with revision 0001. Frozen once released: then add a v2 file and a new revision.
--
-- Statement-level triggers with transition tables: a bulk write of 10,000 scenarios is one
-- INSERT ... SELECT into scenario_events, not 10,000 trigger calls.
--
-- The wake-up: pg_notify('scenario_events', '') with a constant payload, which PostgreSQL
-- folds into one notification per transaction however many rows it writes. The listener
-- never reads the payload; it only wakes up and drains the backlog.
--
-- A NOTIFY makes commits take a database-wide lock in turn (through their WAL flush), so
-- concurrent writers that all notify lose group commit. So a write notifies only when no
-- older event was waiting: if one was, a listener has been woken for it already, and
-- before it goes back to sleep it drains the backlog until empty and then re-polls
-- briefly (listener/worker.py), which picks this event up. A writer whose commit comes
-- later than that is still found by the poll (POLL_INTERVAL): NOTIFY is only ever a hint.
-- Under a stream of writes the backlog is rarely empty and almost no commit notifies
-- (13 NOTIFYs for 215,000 events in one bench run).
--
-- The actor of an update or delete is taken from the setting notifications.actor_id,
-- which the API sets per transaction (SET LOCAL) and a psql user may set by hand.

CREATE FUNCTION current_actor_v1() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('notifications.actor_id', true), '')::bigint
$$;

CREATE FUNCTION scenario_events_on_insert_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- Checked before our own rows go in: was any older event still waiting?
    backlog_empty boolean := NOT EXISTS (
        SELECT 1 FROM scenario_events e WHERE e.processed_at IS NULL);
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n
    ORDER BY n.id;
    -- Under REPEATABLE READ the check may have seen a backlog long since drained.
    IF FOUND AND (backlog_empty
                  OR current_setting('transaction_isolation') <> 'read committed') THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION scenario_events_on_update_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- Checked before our own rows go in: was any older event still waiting?
    backlog_empty boolean := NOT EXISTS (
        SELECT 1 FROM scenario_events e WHERE e.processed_at IS NULL);
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, status, actor_id)
    SELECT e.event_type, e.id, e.name, e.status, current_actor_v1()
    FROM (
        SELECT 1 AS ord, 'scenario.executed' AS event_type, n.id, n.name,
               n.last_status AS status
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.deleted_at IS NULL
          AND n.last_executed_at IS NOT NULL
          -- A second run in one transaction may reuse now(); a new status still counts.
          AND (n.last_executed_at, n.last_status)
              IS DISTINCT FROM (o.last_executed_at, o.last_status)
        UNION ALL
        SELECT 2, 'scenario.deleted', n.id, n.name, NULL
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.deleted_at IS NULL AND n.deleted_at IS NOT NULL
    ) e
    ORDER BY e.id, e.ord;
    -- Under REPEATABLE READ the check may have seen a backlog long since drained.
    IF FOUND AND (backlog_empty
                  OR current_setting('transaction_isolation') <> 'read committed') THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;

-- A plain DELETE of a scenario that was not already soft-deleted is a deletion event.
CREATE FUNCTION scenario_events_on_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- Checked before our own rows go in: was any older event still waiting?
    backlog_empty boolean := NOT EXISTS (
        SELECT 1 FROM scenario_events e WHERE e.processed_at IS NULL);
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.deleted', o.id, o.name, current_actor_v1()
    FROM old_rows o
    WHERE o.deleted_at IS NULL
    ORDER BY o.id;
    -- Under REPEATABLE READ the check may have seen a backlog long since drained.
    IF FOUND AND (backlog_empty
                  OR current_setting('transaction_isolation') <> 'read committed') THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;

-- TRUNCATE has no transition table: record the live rows before they go.
CREATE FUNCTION scenario_events_on_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- Checked before our own rows go in: was any older event still waiting?
    backlog_empty boolean := NOT EXISTS (
        SELECT 1 FROM scenario_events e WHERE e.processed_at IS NULL);
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.deleted', s.id, s.name, current_actor_v1()
    FROM test_scenarios s
    WHERE s.deleted_at IS NULL
    ORDER BY s.id;
    -- Under REPEATABLE READ the check may have seen a backlog long since drained.
    IF FOUND AND (backlog_empty
                  OR current_setting('transaction_isolation') <> 'read committed') THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER scenario_events_insert
    AFTER INSERT ON test_scenarios REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_insert_v1();

CREATE TRIGGER scenario_events_update
    AFTER UPDATE ON test_scenarios REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_update_v1();

CREATE TRIGGER scenario_events_delete
    AFTER DELETE ON test_scenarios REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_delete_v1();

CREATE TRIGGER scenario_events_truncate
    BEFORE TRUNCATE ON test_scenarios
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_truncate_v1();
