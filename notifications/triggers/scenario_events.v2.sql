-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- The same statement-level triggers as v1 (a bulk write is one INSERT ... SELECT into
-- scenario_events, not a call per row); the wake-up moved to the transaction's commit.
--
-- The wake-up: pg_notify(event_channel_v2(), '') with a constant payload, which PostgreSQL
-- folds into one notification per transaction however many rows it writes. The listener
-- never reads the payload; it only wakes up and drains the backlog.
--
-- A NOTIFY makes commits take a database-wide lock in turn (through their WAL flush), so
-- concurrent writers that all notify lose group commit. So about one writer in 100 ms
-- notifies. A transaction's first event row looks at the time of the last NOTIFY: sent
-- less than 100 ms ago, the transaction will not notify, because that NOTIFY's listener
-- drains the backlog until empty and then re-polls for 155 ms (LINGER_DELAYS), which finds
-- this transaction's events if it commits soon. Otherwise the row queues one call at
-- commit (a deferred constraint trigger), which looks again and, if still nobody notified
-- within 100 ms, records the time and notifies. Deciding the NOTIFY at commit matters: a
-- writer that recorded it at its INSERT and then kept its transaction open would silence
-- every writer behind it until it commits. A writer that commits long after its first
-- event row delays only its own events, until the next writer's NOTIFY or the poll.
--
-- The time is kept in a sequence: setval() is not transactional and takes no row lock,
-- and reading it is one buffer read, where the rule it replaced read the backlog index's
-- right-most page, which every writer was inserting into (most of the triggers' cost:
-- bench/README.md). Under saturation almost no transaction queues the call at commit, and
-- the check costs one expression per transaction. Any isolation level reads the same
-- value; only a SERIALIZABLE transaction, whose commit may still fail after the call,
-- notifies without recording the time, so that it never silences anyone. A transaction
-- that fails after recording it (a later deferred constraint, a failed commit) leaves the
-- writers of that 100 ms to the poll (POLL_INTERVAL): NOTIFY is only ever a hint.
--
-- The actor of an update or delete is taken from the setting notifications.actor_id
-- (current_actor_v1), which the API sets per transaction and a psql user may set by hand.

-- Milliseconds since the epoch of the last stamped NOTIFY.
CREATE SEQUENCE scenario_events_woken_at_v2 AS bigint MINVALUE 0 START 0;

-- At commit. Plain expressions only (no query): plpgsql evaluates them without starting
-- an executor. Milliseconds since the epoch by date_part (double precision: cheaper than
-- extract's numeric).
CREATE FUNCTION wake_listeners_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (date_part('epoch', clock_timestamp()) * 1000)::bigint;
BEGIN
    IF current_setting('transaction_isolation') = 'serializable' THEN
        PERFORM pg_notify(event_channel_v2(), '');
    ELSIF now_ms - coalesce(pg_sequence_last_value('scenario_events_woken_at_v2'), 0) >= 100
    THEN
        PERFORM setval('scenario_events_woken_at_v2', now_ms);
        PERFORM pg_notify(event_channel_v2(), '');
    END IF;
    RETURN NULL;
END;
$$;

-- The WHEN clause runs at each row's INSERT, not at commit. The transaction's first event
-- row marks the transaction (a transaction-local setting, which a rolled-back savepoint
-- takes back with its rows) and looks at the time of the last NOTIFY; every later row
-- stops at the mark, so a bulk write costs one setting look-up per row and queues at most
-- one call. Built-in functions only: a WHEN clause is planned again by every statement,
-- and an SQL function in it would be parsed again each time (that doubled its cost).
CREATE CONSTRAINT TRIGGER scenario_events_wake AFTER INSERT ON scenario_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (current_setting('notifications.wake_checked', true) IS DISTINCT FROM 'on'
          AND set_config('notifications.wake_checked', 'on', true) = 'on'
          AND (date_part('epoch', clock_timestamp()) * 1000)::bigint
              - coalesce(pg_sequence_last_value('scenario_events_woken_at_v2'), 0) >= 100)
    EXECUTE FUNCTION wake_listeners_v2();

CREATE FUNCTION scenario_events_on_insert_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- No ORDER BY: the transition table holds the rows in the order they were inserted,
    -- which is the order of their identity ids (unless given by OVERRIDING SYSTEM VALUE);
    -- a sort would cost every one-row INSERT.
    INSERT INTO scenario_events (event_type, scenario_id, scenario_name, actor_id)
    SELECT 'scenario.created', n.id, n.name, coalesce(n.created_by, current_actor_v1())
    FROM new_rows n;
    RETURN NULL;
END;
$$;

-- An execution (a new last_executed_at or last_status) and a soft delete of a live
-- scenario are events; one UPDATE may be both, the execution first.
CREATE FUNCTION scenario_events_on_update_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
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
    RETURN NULL;
END;
$$;

-- A plain DELETE, or a TRUNCATE, of a scenario that was not already soft-deleted is a
-- deletion event. TRUNCATE has no transition table: it records the live rows before they
-- go (plpgsql plans each branch only when it runs, so old_rows is never looked up there).
CREATE FUNCTION scenario_events_on_removal_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
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
