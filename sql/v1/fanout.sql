-- Released with revision 0001. Frozen: never edit, add a v2 file and a new revision.
--
-- The fan-out core. One call claims up to batch_size unprocessed events (SKIP LOCKED, so
-- several listeners share a backlog without waiting on each other), writes every
-- recipient's notification with one set-based INSERT ... SELECT, and marks the events
-- processed, all in the caller's transaction: either all of it commits or none of it.
--
-- Recipients: every user whose own subscription row says enabled, or who has no row for
-- the event type while the type is enabled by default; never the actor. ON CONFLICT keeps
-- a redelivered event from doubling a notification.

-- Returns one row per event processed: its id, how many notifications it wrote, and
-- how long it waited from its trigger to this fan-out (seconds).
CREATE FUNCTION fan_out_events_v1(batch_size integer DEFAULT 100)
RETURNS TABLE (event_id bigint, notifications bigint, lag_seconds double precision)
LANGUAGE sql AS $$
    WITH claimed AS MATERIALIZED (
        SELECT e.id, e.event_type, e.actor_id, e.occurred_at
        FROM scenario_events e
        WHERE e.processed_at IS NULL
        ORDER BY e.id
        LIMIT greatest(batch_size, 1)
        FOR UPDATE SKIP LOCKED
    ),
    written AS (
        INSERT INTO user_notifications (user_id, event_id)
        SELECT u.id, c.id
        FROM claimed c
        JOIN event_types t ON t.name = c.event_type
        CROSS JOIN users u
        LEFT JOIN subscriptions s ON s.user_id = u.id AND s.event_type = c.event_type
        WHERE coalesce(s.enabled, t.default_enabled)
          AND u.id IS DISTINCT FROM c.actor_id
        ORDER BY u.id, c.id
        ON CONFLICT (user_id, event_id) DO NOTHING
        RETURNING event_id
    ),
    counted AS (
        SELECT event_id, count(*) AS n FROM written GROUP BY event_id
    ),
    marked AS (
        UPDATE scenario_events e
        SET processed_at = clock_timestamp(),
            fanout_count = coalesce(e.fanout_count, 0) + coalesce(k.n, 0)
        FROM claimed c LEFT JOIN counted k ON k.event_id = c.id
        WHERE e.id = c.id
        RETURNING e.id, coalesce(k.n, 0) AS n,
                  extract(epoch FROM e.processed_at - c.occurred_at)::double precision AS lag
    )
    SELECT m.id, m.n, m.lag FROM marked m ORDER BY m.id
$$;
