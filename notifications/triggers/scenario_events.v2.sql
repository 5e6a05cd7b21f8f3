-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- The same statement-level triggers as v1 (a bulk write is one INSERT ... SELECT into
-- scenario_events, not a call per row), with the wake-up written once.
--
-- The wake-up: pg_notify(event_channel_v2(), '') with a constant payload, which PostgreSQL
-- folds into one notification per transaction however many rows it writes. The listener
-- never reads the payload; it only wakes up and drains the backlog.
--
-- A NOTIFY makes commits take a database-wide lock in turn (through their WAL flush), so
-- concurrent writers that all notify lose group commit. So a write skips its NOTIFY while
-- a listener is surely busy with the backlog already: while the oldest waiting event is
-- younger than the re-poll window (100 ms, within the listener's LINGER_DELAYS, 155 ms in
-- all). A listener woken for that event drains the backlog until empty and then re-polls
-- briefly, which picks this event up. An older waiting event means that nobody may be
-- coming (its writer skipped its NOTIFY and committed late, after the listener's last
-- re-poll): then the write notifies, so one slow writer delays only itself, not every
-- writer after it. But only when nothing was written within the window either: the
-- writer of that newer event saw the same old backlog and notified (or one before it
-- did). Without that second look, a backlog that nobody drains (no listener running)
-- would make every writer notify, and commit one at a time: 8 writers lost 88% of their
-- throughput in `make bench`. Whatever is missed is still found by the poll
-- (POLL_INTERVAL): NOTIFY is only ever a hint. Set-aside events (failed_at) are not
-- waiting for anyone.
--
-- Under REPEATABLE READ the check may see a backlog long since drained, and under
-- SERIALIZABLE its read of the backlog index makes concurrent writers abort each other
-- (each one's insert falls in the range another one read): any isolation but READ
-- COMMITTED skips the check and always notifies.
--
-- The check reads the first entry of the waiting-events index (and, when that one is old,
-- its last), never a range: the query's predicate is the index's, so the plan is an index
-- scan in id order under LIMIT 1 whatever the statistics say. Entries of events processed
-- since the last VACUUM are walked over (and marked dead on the way, so that later scans
-- skip them cheaply); vacuum_index_cleanup = on (queue.sql) makes VACUUM remove them.
--
-- The actor of an update or delete is taken from the setting notifications.actor_id
-- (current_actor_v1), which the API sets per transaction and a psql user may set by hand.

-- Asked before a trigger writes its own rows: should this write wake the listeners?
CREATE FUNCTION wake_needed_v2() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    waited interval;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN true;
    END IF;
    SELECT clock_timestamp() - e.occurred_at INTO waited
    FROM scenario_events e
    WHERE e.processed_at IS NULL AND e.failed_at IS NULL
    ORDER BY e.id LIMIT 1;
    IF waited IS NULL THEN
        RETURN true;
    ELSIF waited <= interval '100 milliseconds' THEN
        RETURN false;
    END IF;
    -- An old event waits. Was anything written within the window? Then its writer saw
    -- the same old backlog and woke the listeners (or one before it did).
    SELECT clock_timestamp() - e.occurred_at INTO waited
    FROM scenario_events e
    WHERE e.processed_at IS NULL AND e.failed_at IS NULL
    ORDER BY e.id DESC LIMIT 1;
    RETURN waited > interval '100 milliseconds';
END;
$$;

-- Called by every trigger after its INSERT, with what wake_needed_v2() said before it and
-- whether the INSERT wrote anything.
CREATE FUNCTION wake_listeners_v2(needed boolean, wrote boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF wrote AND needed THEN
        PERFORM pg_notify(event_channel_v2(), '');
    END IF;
END;
$$;

CREATE FUNCTION scenario_events_on_insert_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE wake boolean := wake_needed_v2();
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n ORDER BY n.id;
    PERFORM wake_listeners_v2(wake, FOUND);
    RETURN NULL;
END;
$$;

-- An execution (a new last_executed_at or last_status) and a soft delete of a live
-- scenario are events; one UPDATE may be both, the execution first.
CREATE FUNCTION scenario_events_on_update_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE wake boolean := wake_needed_v2();
BEGIN
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, status, actor_id)
    SELECT happened.event_type, n.id, n.name, happened.status, current_actor_v1()
    FROM new_rows n
    JOIN old_rows o USING (id)
    CROSS JOIN LATERAL (VALUES
        (1, 'scenario.executed', n.last_status,
         -- A second run in one transaction may reuse now(); a new status still counts.
         n.last_executed_at IS NOT NULL
         AND (n.last_executed_at, n.last_status)
             IS DISTINCT FROM (o.last_executed_at, o.last_status)),
        (2, 'scenario.deleted', NULL, n.deleted_at IS NOT NULL)
    ) AS happened (ord, event_type, status, is_event)
    WHERE o.deleted_at IS NULL AND happened.is_event
    ORDER BY n.id, happened.ord;
    PERFORM wake_listeners_v2(wake, FOUND);
    RETURN NULL;
END;
$$;

-- A plain DELETE, or a TRUNCATE, of a scenario that was not already soft-deleted is a
-- deletion event. TRUNCATE has no transition table: it records the live rows before they
-- go (plpgsql plans each branch only when it runs, so old_rows is never looked up there).
CREATE FUNCTION scenario_events_on_removal_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE wake boolean := wake_needed_v2();
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
        SELECT 'scenario.deleted', live.id, live.name, current_actor_v1()
        FROM test_scenarios live WHERE live.deleted_at IS NULL ORDER BY live.id;
    ELSE
        INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
        SELECT 'scenario.deleted', o.id, o.name, current_actor_v1()
        FROM old_rows o WHERE o.deleted_at IS NULL ORDER BY o.id;
    END IF;
    PERFORM wake_listeners_v2(wake, FOUND);
    RETURN NULL;
END;
$$;

-- The same four triggers, now calling the v2 functions.
CREATE OR REPLACE TRIGGER scenario_events_insert AFTER INSERT ON test_scenarios
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_insert_v2();
CREATE OR REPLACE TRIGGER scenario_events_update AFTER UPDATE ON test_scenarios
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_update_v2();
CREATE OR REPLACE TRIGGER scenario_events_delete AFTER DELETE ON test_scenarios
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_removal_v2();
CREATE OR REPLACE TRIGGER scenario_events_truncate BEFORE TRUNCATE ON test_scenarios
    FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_removal_v2();
