-- Released with revision 0001. Frozen: never edit, add a v2 file and a new revision.
--
-- Statement-level triggers with transition tables: a bulk write of 10,000 scenarios is one
-- INSERT ... SELECT into scenario_events, not 10,000 trigger calls. The NOTIFY payload is
-- constant, and PostgreSQL folds identical notifications of one transaction into one, so a
-- transaction sends at most one wake-up however many rows it writes. The listener treats
-- it only as a hint and never reads the payload.
--
-- The actor of an update or delete is taken from the setting notifications.actor_id,
-- which the API sets per transaction (SET LOCAL) and a psql user may set by hand.

CREATE FUNCTION current_actor_v1() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('notifications.actor_id', true), '')::bigint
$$;

CREATE FUNCTION scenario_events_on_insert_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n
    ORDER BY n.id;
    IF FOUND THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION scenario_events_on_update_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, status, actor_id)
    SELECT e.event_type, e.id, e.name, e.status, current_actor_v1()
    FROM (
        SELECT 1 AS ord, 'scenario.executed' AS event_type, n.id, n.name, n.last_status AS status
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.deleted_at IS NULL
          AND n.last_executed_at IS NOT NULL
          -- A second run in one transaction may reuse now(); a new status still counts.
          AND (n.last_executed_at, n.last_status) IS DISTINCT FROM (o.last_executed_at, o.last_status)
        UNION ALL
        SELECT 2, 'scenario.deleted', n.id, n.name, NULL
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.deleted_at IS NULL AND n.deleted_at IS NOT NULL
    ) e
    ORDER BY e.id, e.ord;
    IF FOUND THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;

-- A plain DELETE of a scenario that was not already soft-deleted is a deletion event.
CREATE FUNCTION scenario_events_on_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.deleted', o.id, o.name, current_actor_v1()
    FROM old_rows o
    WHERE o.deleted_at IS NULL
    ORDER BY o.id;
    IF FOUND THEN
        PERFORM pg_notify('scenario_events', '');
    END IF;
    RETURN NULL;
END;
$$;

-- TRUNCATE has no transition table: record the live rows before they go.
CREATE FUNCTION scenario_events_on_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.deleted', s.id, s.name, current_actor_v1()
    FROM test_scenarios s
    WHERE s.deleted_at IS NULL
    ORDER BY s.id;
    IF FOUND THEN
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
