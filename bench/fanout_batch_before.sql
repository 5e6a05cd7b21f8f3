-- fan_out_events_v2 as it was before the set-based fan-out of small events (one INSERT
-- ... SELECT, two outbox INSERTs and one UPDATE per event): bench/fanout_batch.py installs
-- it over the current one for the "before" side of its side-by-side runs.

CREATE OR REPLACE FUNCTION fan_out_events_v2(batch_size integer DEFAULT 100,
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

