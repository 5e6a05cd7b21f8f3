-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- The fan-out core, v2: the same claim-insert-mark transaction as fan_out_events_v1, with
-- the subscription rule read from its one definition (the user_subscriptions view) and
-- the row budget of a batch chosen by the caller (BATCH_ROW_BUDGET).

-- An event whose fan-out keeps failing (a statement timeout on a huge event, a broken row)
-- is set aside after a few attempts, so that the events behind it are still delivered: the
-- listener records each failure here (record_fanout_failure_v2) and the claim skips what
-- is set aside until redeliver_event() clears it. notification_backlog lists them.
ALTER TABLE scenario_events
    ADD COLUMN fanout_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN fanout_error text,
    ADD COLUMN failed_at timestamptz;
-- The backlog index splits in two: the events waiting for a fan-out, which every claim and
-- every writer's wake check reads in id order (their predicate is exactly this one, so the
-- planner never trades the index order for a sort of the whole backlog), and the few set
-- aside. A new event enters the first alone, as it entered the v1 index.
CREATE INDEX scenario_events_waiting_idx ON scenario_events (id)
    WHERE processed_at IS NULL AND failed_at IS NULL;
CREATE INDEX scenario_events_set_aside_idx ON scenario_events (id)
    WHERE processed_at IS NULL AND failed_at IS NOT NULL;
DROP INDEX scenario_events_backlog_idx;

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
-- ends once it has written row_budget rows, so that the caller is back soon (to ping
-- systemd's watchdog, to see a stop) when many events each reach many users; the rest
-- stays claimable. One event is one statement however large: the listener feeds the
-- watchdog while it runs, and LISTENER_STATEMENT_TIMEOUT bounds it. only_event claims
-- that one event alone (the listener's retry of a failing batch, one event at a time).
-- A first delivery cannot meet rows of its own (the claim makes it exactly-once), so only
-- a redelivered event (fanout_count set) looks for them: the OR stops at its first arm
-- otherwise, and no ON CONFLICT is paid on the hot path.
-- No lock against user deletion: a user deleted meanwhile may get rows from a fan-out
-- that still saw them, and finish_user_deletions_v2() removes those afterwards.
CREATE FUNCTION fan_out_events_v2(batch_size integer DEFAULT 100,
                                  row_budget bigint DEFAULT 500000,
                                  only_event bigint DEFAULT NULL)
RETURNS TABLE (event_id bigint, notifications bigint, lag_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    ev record;
    n bigint;
    d bigint;
    wrote_deliveries boolean := false;
    wrote_notifications boolean := false;
    budget_left bigint := greatest(row_budget, 1);
BEGIN
    FOR ev IN
        SELECT q.id, q.event_type, q.actor_id, q.fanout_count IS NOT NULL AS redelivered
        FROM scenario_events q
        WHERE q.processed_at IS NULL AND q.failed_at IS NULL
          AND q.id >= coalesce(only_event, 0) AND (only_event IS NULL OR q.id = only_event)
        ORDER BY q.id LIMIT greatest(batch_size, 1) FOR UPDATE SKIP LOCKED
    LOOP
        -- A redelivered event's new rows carry the transaction that made them visible
        -- (the event keeps its first one: sql/v2/stream.sql says why).
        INSERT INTO user_notifications (user_id, event_id, fanout_xid)
        SELECT r.user_id, ev.id, CASE WHEN ev.redelivered THEN pg_current_xact_id() END
        FROM event_recipients_v2(ev.event_type, ev.actor_id) r
        WHERE NOT ev.redelivered
           OR NOT EXISTS (SELECT 1 FROM user_notifications had
                          WHERE had.user_id = r.user_id AND had.event_id = ev.id)
        ORDER BY r.user_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        wrote_notifications := wrote_notifications OR n > 0;

        -- The outbox (sql/v2/delivery.sql), one INSERT ... SELECT per channel, driven by
        -- the small tables (the e-mail opt-ins of this event type, the endpoints) and
        -- joined to this event's notifications by primary key: an event whose recipients
        -- have neither costs two index probes, however many recipients it has. Reading
        -- user_notifications (not the recipients again) also covers a redelivered event's
        -- earlier rows; only then can a delivery exist already, hence NOT EXISTS there.
        INSERT INTO deliveries (user_id, event_id, channel)
        SELECT cp.user_id, ev.id, 'email'
        FROM channel_preferences cp
        JOIN user_notifications un ON un.user_id = cp.user_id AND un.event_id = ev.id
        JOIN users u ON u.id = cp.user_id
        WHERE cp.event_type = ev.event_type AND cp.channel = 'email' AND cp.enabled
          AND u.email IS NOT NULL
          AND (NOT ev.redelivered
               OR NOT EXISTS (SELECT 1 FROM deliveries had
                              WHERE had.user_id = cp.user_id AND had.event_id = ev.id
                                AND had.channel = 'email' AND had.endpoint_id IS NULL))
        ORDER BY cp.user_id;
        GET DIAGNOSTICS d = ROW_COUNT;
        wrote_deliveries := wrote_deliveries OR d > 0;

        -- Webhooks are on unless switched off for the event type (a user who registered an
        -- endpoint wants it); one row per live endpoint that takes this event type.
        INSERT INTO deliveries (user_id, event_id, channel, endpoint_id)
        SELECT w.user_id, ev.id, 'webhook', w.id
        FROM webhook_endpoints w
        JOIN user_notifications un ON un.user_id = w.user_id AND un.event_id = ev.id
        WHERE w.disabled_at IS NULL
          AND (w.event_types IS NULL OR ev.event_type = ANY (w.event_types))
          AND NOT EXISTS (SELECT 1 FROM channel_preferences optout
                          WHERE optout.user_id = w.user_id AND optout.event_type = ev.event_type
                            AND optout.channel = 'webhook' AND NOT optout.enabled)
          AND (NOT ev.redelivered
               OR NOT EXISTS (SELECT 1 FROM deliveries had
                              WHERE had.user_id = w.user_id AND had.event_id = ev.id
                                AND had.channel = 'webhook' AND had.endpoint_id = w.id))
        ORDER BY w.user_id, w.id;
        GET DIAGNOSTICS d = ROW_COUNT;
        wrote_deliveries := wrote_deliveries OR d > 0;

        UPDATE scenario_events done
        SET processed_at = clock_timestamp(), fanout_count = coalesce(done.fanout_count, 0) + n,
            fanout_attempts = 0, fanout_error = NULL
        WHERE done.id = ev.id
        RETURNING done.id, n, extract(epoch FROM done.processed_at - done.occurred_at)
        INTO event_id, notifications, lag_seconds;
        RETURN NEXT;
        budget_left := budget_left - n;
        EXIT WHEN budget_left <= 0;
    END LOOP;
    -- A hint for the deliverers, sent at commit; PostgreSQL folds identical notifications
    -- of one transaction into one, so several calls in a transaction still send one.
    IF wrote_deliveries THEN
        PERFORM pg_notify(delivery_channel_v2(), '');
    END IF;
    -- And one for the API's open streams (sql/v2/stream.sql): one per transaction however
    -- many recipients; each serve process then asks what is new for all its users at once.
    IF wrote_notifications THEN
        PERFORM pg_notify(stream_channel_v2(), 'new');
    END IF;
END;
$$;

-- The oldest event the claim would take, for the listener to retry it alone.
CREATE FUNCTION next_event_v2() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT q.id FROM scenario_events q
    WHERE q.processed_at IS NULL AND q.failed_at IS NULL
    ORDER BY q.id LIMIT 1
$$;

-- Called by the listener, in a transaction of its own, after the fan-out of this event
-- alone failed. Returns true when the event is now set aside (after max_attempts).
CREATE FUNCTION record_fanout_failure_v2(event_id bigint, error text, max_attempts integer)
RETURNS boolean
LANGUAGE sql AS $$
    UPDATE scenario_events e
    SET fanout_attempts = e.fanout_attempts + 1,
        fanout_error = left(record_fanout_failure_v2.error, 2000),
        failed_at = CASE WHEN e.fanout_attempts + 1 >= max_attempts THEN clock_timestamp() END
    WHERE e.id = record_fanout_failure_v2.event_id AND e.processed_at IS NULL
    RETURNING e.failed_at IS NOT NULL
$$;

-- A user's deletion removes their notifications at once (users_delete_notifications_v2)
-- without waiting for fan-outs in flight; what those still write for the user lands after
-- it, and is removed here. Each deletion is kept until every transaction that might have
-- seen the user is over: its horizon is the first transaction id that began after the
-- deletion was seen committed, and it goes once all ids below that horizon are finished,
-- in the same statement (one snapshot) as a last removal of the user's rows.
-- The listener calls this after its work; `notifications purge` too.
CREATE TABLE user_deletions (
    user_id     bigint PRIMARY KEY,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    horizon     xid8
);

CREATE FUNCTION users_delete_notifications_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_deletions (user_id) SELECT o.id FROM old_users o
    ON CONFLICT (user_id) DO UPDATE SET horizon = NULL, deleted_at = now();
    DELETE FROM user_notifications n USING old_users o WHERE n.user_id = o.id;
    -- Nothing is sent to a deleted user (channel_preferences and webhook_endpoints go by
    -- their foreign keys; the outbox has none, to keep the fan-out's insert cheap).
    DELETE FROM delivery_attempts a USING old_users o WHERE a.user_id = o.id;
    DELETE FROM deliveries d USING old_users o WHERE d.user_id = o.id;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER users_delete_notifications
    AFTER DELETE ON users REFERENCING OLD TABLE AS old_users
    FOR EACH STATEMENT EXECUTE FUNCTION users_delete_notifications_v2();

CREATE FUNCTION finish_user_deletions_v2() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM user_deletions) THEN
        RETURN 0;
    END IF;
    UPDATE user_deletions d SET horizon = pg_snapshot_xmax(pg_current_snapshot())
    WHERE d.horizon IS NULL;
    WITH finished AS (
        DELETE FROM user_deletions d
        WHERE d.horizon <= pg_snapshot_xmin(pg_current_snapshot())
    ), outbox AS (
        DELETE FROM deliveries o USING user_deletions d WHERE o.user_id = d.user_id
    ), tries AS (
        DELETE FROM delivery_attempts a USING user_deletions d WHERE a.user_id = d.user_id
    )
    DELETE FROM user_notifications n USING user_deletions d WHERE n.user_id = d.user_id;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END;
$$;
