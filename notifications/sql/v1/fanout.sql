-- Released with revision 0001. Frozen once released: then add a v2 file and a new revision.
--
-- The fan-out core. One call claims up to batch_size unprocessed events (SKIP LOCKED, so
-- several listeners share a backlog without waiting on each other), writes every
-- recipient's notification with one set-based INSERT ... SELECT per event, and marks the
-- events processed, all in the caller's transaction: either all of it commits or none.
--
-- Recipients (event_recipients_v1): every user whose own subscription row says enabled,
-- or who has no row for the event type while the type is enabled by default; never the
-- actor.
--
-- The claim makes the first fan-out of an event exactly-once, so it needs no ON CONFLICT
-- (which costs about 40% of a million-row insert; see bench/README.md). Only a
-- redelivered event (fanout_count already set) can meet rows of its own, and only its
-- insert skips conflicts. Returns one row per event: its id, the notifications it wrote,
-- and the seconds from its trigger to this fan-out. A batch ends early once it has
-- written 500,000 rows.

-- Who is notified of an event: the single definition of the subscription rules. A plain
-- SQL function, so PostgreSQL inlines it into the fan-out's INSERT ... SELECT (no per-row
-- call); operators can also ask it who would hear of an event type:
--   SELECT * FROM event_recipients_v1('scenario.executed', NULL);
CREATE FUNCTION event_recipients_v1(event_type text, actor_id bigint)
RETURNS TABLE (user_id bigint)
LANGUAGE sql STABLE AS $$
    SELECT u.id
    FROM users u
    JOIN event_types t ON t.name = event_recipients_v1.event_type
    LEFT JOIN subscriptions s
           ON s.user_id = u.id AND s.event_type = event_recipients_v1.event_type
    WHERE coalesce(s.enabled, t.default_enabled)
      AND u.id IS DISTINCT FROM event_recipients_v1.actor_id
$$;

CREATE FUNCTION fan_out_events_v1(batch_size integer DEFAULT 100)
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
            SELECT r.user_id, c.id FROM event_recipients_v1(c.event_type, c.actor_id) r
            ORDER BY r.user_id;
        ELSE
            INSERT INTO user_notifications (user_id, event_id)
            SELECT r.user_id, c.id FROM event_recipients_v1(c.event_type, c.actor_id) r
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
        -- A batch is bounded by rows too, not only by events, so that the caller gets
        -- back within seconds (to ping systemd's watchdog, to see a stop) even when
        -- every event reaches a million users. The rest stays claimable.
        total := total + written;
        EXIT WHEN total >= 500000;
    END LOOP;
END;
$$;
