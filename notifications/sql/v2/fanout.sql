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
-- The backlog index splits in two: the events waiting for a fan-out, which every claim
-- reads in id order (its predicate is exactly this one, so the planner never trades the
-- index order for a sort of the whole backlog), and the few set
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

-- Claims up to batch_size unprocessed events in id order (SKIP LOCKED: listeners share a
-- backlog without waiting on each other), writes their notifications and deliveries, and
-- marks them processed, all in the caller's transaction; one row per event, in id order.
-- A batch also ends once it has written row_budget rows, so that the caller is back soon
-- (to ping systemd's watchdog, to see a stop) when many events each reach many users; the
-- rest stays claimable. only_event claims that one event alone (the listener's retry of a
-- failing batch, one event at a time).
--
-- Two ways to fan out, chosen per event type (never per guess that could be wrong):
-- - A big event (its type has more than small_max possible recipients) is fanned out
--   alone, as before: one INSERT ... SELECT of its recipients, its deliveries, its
--   UPDATE. One event is one statement however large: the listener feeds the watchdog
--   while it runs, and LISTENER_STATEMENT_TIMEOUT bounds it.
-- - Consecutive small events (a run, up to the next big one) are fanned out together: one
--   INSERT ... SELECT for all of them (ordered by user_id, event_id), the deliveries of
--   the run from its notification rows (one statement per channel), one UPDATE of all its
--   events, each with its own fanout_count. Four statements per run, not four per event.
-- Whether a type is small is read, once per call and type, by counting its recipients
-- with the actor left in (an upper bound for every event of the type) and stopping after
-- small_max + 1: a bounded probe, however many users there are. A run is at most
-- batch_size events of at most small_max rows each, and small_max <= row_budget /
-- batch_size, so a run keeps the budget too; claiming stops before a run could exceed
-- what is left of it. Subscriptions changed meanwhile can only make a run bigger or
-- smaller than its bound (a cost in time, never in correctness: both paths write the
-- same rows with the same statement shapes).
-- Events are claimed one FETCH at a time (each locks only its own row), and every event
-- fetched is fanned out, so a batch that stops early holds no event it does not fan out.
-- A first delivery cannot meet rows of its own (the claim makes it exactly-once), so only
-- a redelivered event (fanout_count set) looks for them: the OR stops at its first arm
-- otherwise, and no ON CONFLICT is paid on the hot path. A redelivered event's new rows
-- carry the transaction that made them visible (the event keeps its first one:
-- sql/v2/stream.sql says why).
-- No lock against user deletion: a user deleted meanwhile may get rows from a fan-out
-- that still saw them, and finish_user_deletions_v2() removes those afterwards.
CREATE FUNCTION fan_out_events_v2(batch_size integer DEFAULT 100,
                                  row_budget bigint DEFAULT 500000,
                                  only_event bigint DEFAULT NULL)
RETURNS TABLE (event_id bigint, notifications bigint, lag_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    claim refcursor;
    ev record;
    n bigint;
    d bigint;
    wrote_deliveries boolean := false;
    wrote_notifications boolean := false;
    budget_left bigint := greatest(row_budget, 1);
    batch integer := greatest(batch_size, 1);
    -- The most recipients a small event may have: a full run of them fits the budget,
    -- and one bigger than 1,000 gains little from sharing statements with others.
    small_max bigint := least(1000, greatest(row_budget, 1) / greatest(batch_size, 1));
    small_types text[] := '{}';
    big_types text[] := '{}';
    is_small boolean;
    claimed_all boolean := false;
    run_ids bigint[] := '{}';
    run_types text[] := '{}';
    run_actors bigint[] := '{}';
    run_redelivered boolean[] := '{}';
    run_counts bigint[];
    run_rows bigint;
BEGIN
    OPEN claim FOR
        SELECT q.id, q.event_type, q.actor_id, q.fanout_count IS NOT NULL AS redelivered
        FROM scenario_events q
        WHERE q.processed_at IS NULL AND q.failed_at IS NULL
          AND q.id >= coalesce(only_event, 0) AND (only_event IS NULL OR q.id = only_event)
        ORDER BY q.id LIMIT batch FOR UPDATE SKIP LOCKED;
    LOOP
        -- Claim the next event, unless the run so far could already use up the budget.
        is_small := false;
        IF budget_left - cardinality(run_ids) * small_max <= 0 THEN
            claimed_all := true;
        ELSE
            FETCH claim INTO ev;
            claimed_all := NOT FOUND;
        END IF;
        IF NOT claimed_all THEN
            IF batch = 1 OR ev.event_type = ANY (big_types) THEN
                is_small := false;
            ELSIF ev.event_type = ANY (small_types) THEN
                is_small := true;
            ELSE
                is_small := (SELECT count(*) FROM (SELECT 1
                                                   FROM event_recipients_v2(ev.event_type, NULL)
                                                   LIMIT small_max + 1) probe) <= small_max;
                IF is_small THEN
                    small_types := small_types || ev.event_type;
                ELSE
                    big_types := big_types || ev.event_type;
                END IF;
            END IF;
            IF is_small THEN
                run_ids := run_ids || ev.id;
                run_types := run_types || ev.event_type;
                run_actors := run_actors || ev.actor_id;
                run_redelivered := run_redelivered || ev.redelivered;
                CONTINUE;
            END IF;
        END IF;

        -- A big event, or the end of the claim: the run of small events before it first.
        IF cardinality(run_ids) > 0 THEN
            WITH written AS (
                INSERT INTO user_notifications AS un (user_id, event_id, fanout_xid)
                SELECT r.user_id, e.id, CASE WHEN e.redelivered THEN pg_current_xact_id() END
                FROM unnest(run_ids, run_types, run_actors, run_redelivered)
                     AS e(id, event_type, actor_id, redelivered)
                CROSS JOIN LATERAL event_recipients_v2(e.event_type, e.actor_id) r
                WHERE NOT e.redelivered
                   OR NOT EXISTS (SELECT 1 FROM user_notifications had
                                  WHERE had.user_id = r.user_id AND had.event_id = e.id)
                ORDER BY r.user_id, e.id
                RETURNING un.event_id
            )
            SELECT array_agg(coalesce(c.n, 0) ORDER BY e.ord), coalesce(sum(c.n), 0)
            INTO run_counts, run_rows
            FROM unnest(run_ids) WITH ORDINALITY AS e(id, ord)
            LEFT JOIN (SELECT w.event_id, count(*) AS n FROM written w GROUP BY w.event_id) c
                   ON c.event_id = e.id;
            wrote_notifications := wrote_notifications OR run_rows > 0;

            -- The outbox of the run, as for one event below, for all its events at once.
            INSERT INTO deliveries (user_id, event_id, channel)
            SELECT cp.user_id, e.id, 'email'
            FROM unnest(run_ids, run_types, run_redelivered) AS e(id, event_type, redelivered)
            JOIN channel_preferences cp
              ON cp.event_type = e.event_type AND cp.channel = 'email' AND cp.enabled
            JOIN user_notifications un ON un.user_id = cp.user_id AND un.event_id = e.id
            JOIN users u ON u.id = cp.user_id
            WHERE u.email IS NOT NULL
              AND (NOT e.redelivered
                   OR NOT EXISTS (SELECT 1 FROM deliveries had
                                  WHERE had.user_id = cp.user_id AND had.event_id = e.id
                                    AND had.channel = 'email' AND had.endpoint_id IS NULL))
            ORDER BY cp.user_id, e.id;
            GET DIAGNOSTICS d = ROW_COUNT;
            wrote_deliveries := wrote_deliveries OR d > 0;

            INSERT INTO deliveries (user_id, event_id, channel, endpoint_id)
            SELECT w.user_id, e.id, 'webhook', w.id
            FROM unnest(run_ids, run_types, run_redelivered) AS e(id, event_type, redelivered)
            JOIN webhook_endpoints w
              ON w.disabled_at IS NULL
             AND (w.event_types IS NULL OR e.event_type = ANY (w.event_types))
            JOIN user_notifications un ON un.user_id = w.user_id AND un.event_id = e.id
            WHERE NOT EXISTS (SELECT 1 FROM channel_preferences optout
                              WHERE optout.user_id = w.user_id
                                AND optout.event_type = e.event_type
                                AND optout.channel = 'webhook' AND NOT optout.enabled)
              AND (NOT e.redelivered
                   OR NOT EXISTS (SELECT 1 FROM deliveries had
                                  WHERE had.user_id = w.user_id AND had.event_id = e.id
                                    AND had.channel = 'webhook' AND had.endpoint_id = w.id))
            ORDER BY w.user_id, e.id, w.id;
            GET DIAGNOSTICS d = ROW_COUNT;
            wrote_deliveries := wrote_deliveries OR d > 0;

            RETURN QUERY
            WITH done AS (
                UPDATE scenario_events s
                SET processed_at = clock_timestamp(),
                    fanout_count = coalesce(s.fanout_count, 0) + c.n,
                    fanout_attempts = 0, fanout_error = NULL
                FROM unnest(run_ids, run_counts) AS c(id, n)
                WHERE s.id = c.id
                RETURNING s.id, c.n,
                          extract(epoch FROM s.processed_at - s.occurred_at)::double precision
                          AS lag
            )
            SELECT done.id, done.n, done.lag FROM done ORDER BY done.id;
            budget_left := budget_left - run_rows;
            run_ids := '{}';
            run_types := '{}';
            run_actors := '{}';
            run_redelivered := '{}';
        END IF;
        EXIT WHEN claimed_all;

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
    CLOSE claim;
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
