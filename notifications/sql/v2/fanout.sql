-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- The fan-out core, v2: the same claim-insert-mark transaction as fan_out_events_v1, with
-- the subscription rule read from its one definition (the user_subscriptions view) and
-- the row budget of a batch chosen by the caller (BATCH_ROW_BUDGET).

-- The channel the triggers notify and the listeners LISTEN on, named once.
CREATE FUNCTION event_channel_v2() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'scenario_events'::text $$;

-- Who is notified of an event: every user whose effective choice (user_subscriptions:
-- their own row, else the event type's default) is enabled; never the actor. Plain SQL
-- over a plain view, so PostgreSQL inlines both into the fan-out's INSERT ... SELECT and
-- a distributed planner can push it down to the shards of users and subscriptions.
--   SELECT * FROM event_recipients_v2('scenario.executed', NULL);
CREATE FUNCTION event_recipients_v2(event_type text, actor_id bigint)
RETURNS TABLE (user_id bigint)
LANGUAGE sql STABLE AS $$
    SELECT us.user_id
    FROM user_subscriptions us
    WHERE us.event_type = event_recipients_v2.event_type
      AND us.enabled
      AND us.user_id IS DISTINCT FROM event_recipients_v2.actor_id
$$;

-- Claims up to batch_size unprocessed events (SKIP LOCKED: listeners share a backlog
-- without waiting on each other), writes each one's notifications with one set-based
-- INSERT ... SELECT, and marks it processed, all in the caller's transaction. A batch also
-- ends once it has written row_budget rows, so that the caller is back within seconds
-- (to ping systemd's watchdog, to see a stop) even when every event reaches a million
-- users; the rest stays claimable. Only a redelivered event (fanout_count set) can meet
-- rows of its own, so only its insert pays for ON CONFLICT.
CREATE FUNCTION fan_out_events_v2(batch_size integer DEFAULT 100,
                                  row_budget bigint DEFAULT 500000)
RETURNS TABLE (event_id bigint, notifications bigint, lag_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    written bigint;
    total bigint := 0;
BEGIN
    -- Shared with other fan-outs, exclusive against a user's deletion (see tables.sql).
    PERFORM pg_advisory_xact_lock_shared(fan_out_lock_key_v1());
    FOR c IN
        SELECT e.id, e.event_type, e.actor_id, e.occurred_at, e.fanout_count
        FROM scenario_events e
        WHERE e.processed_at IS NULL
        ORDER BY e.id
        LIMIT greatest(batch_size, 1)
        FOR UPDATE SKIP LOCKED
    LOOP
        IF c.fanout_count IS NULL THEN
            INSERT INTO user_notifications (user_id, event_id)
            SELECT r.user_id, c.id FROM event_recipients_v2(c.event_type, c.actor_id) r
            ORDER BY r.user_id;
        ELSE
            INSERT INTO user_notifications (user_id, event_id)
            SELECT r.user_id, c.id FROM event_recipients_v2(c.event_type, c.actor_id) r
            ORDER BY r.user_id
            ON CONFLICT ON CONSTRAINT user_notifications_pkey DO NOTHING;
        END IF;
        GET DIAGNOSTICS written = ROW_COUNT;

        UPDATE scenario_events e
        SET processed_at = clock_timestamp(),
            fanout_count = coalesce(e.fanout_count, 0) + written
        WHERE e.id = c.id;

        event_id := c.id;
        notifications := written;
        lag_seconds := extract(epoch FROM clock_timestamp() - c.occurred_at);
        RETURN NEXT;
        total := total + written;
        EXIT WHEN total >= greatest(row_budget, 1);
    END LOOP;
END;
$$;
