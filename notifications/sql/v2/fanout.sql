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
-- users; the rest stays claimable. A first delivery cannot meet rows of its own (the claim
-- makes it exactly-once), so only a redelivered event (fanout_count set) looks for them:
-- the OR stops at its first arm otherwise, and no ON CONFLICT is paid on the hot path.
CREATE FUNCTION fan_out_events_v2(batch_size integer DEFAULT 100,
                                  row_budget bigint DEFAULT 500000)
RETURNS TABLE (event_id bigint, notifications bigint, lag_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    ev record;
    n bigint;
    budget_left bigint := greatest(row_budget, 1);
BEGIN
    -- Shared with other fan-outs, exclusive against a user's deletion (see tables.sql).
    PERFORM pg_advisory_xact_lock_shared(fan_out_lock_key_v1());
    FOR ev IN
        SELECT q.id, q.event_type, q.actor_id, q.fanout_count IS NOT NULL AS redelivered
        FROM scenario_events q WHERE q.processed_at IS NULL
        ORDER BY q.id LIMIT greatest(batch_size, 1) FOR UPDATE SKIP LOCKED
    LOOP
        INSERT INTO user_notifications (user_id, event_id)
        SELECT r.user_id, ev.id
        FROM event_recipients_v2(ev.event_type, ev.actor_id) r
        WHERE NOT ev.redelivered
           OR NOT EXISTS (SELECT 1 FROM user_notifications had
                          WHERE had.user_id = r.user_id AND had.event_id = ev.id)
        ORDER BY r.user_id;
        GET DIAGNOSTICS n = ROW_COUNT;

        UPDATE scenario_events done
        SET processed_at = clock_timestamp(), fanout_count = coalesce(done.fanout_count, 0) + n
        WHERE done.id = ev.id
        RETURNING done.id, n, extract(epoch FROM done.processed_at - done.occurred_at)
        INTO event_id, notifications, lag_seconds;
        RETURN NEXT;
        budget_left := budget_left - n;
        EXIT WHEN budget_left <= 0;
    END LOOP;
END;
$$;
