-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- Queue hygiene and retention: SQL functions and settings of the event queue (listener hardening).

-- PostgreSQL skips index vacuuming when under 2% of the heap's pages hold dead rows; on a
-- queue that leaves the dead entries of processed events in the backlog index, and every
-- claim walks them. Always clean the indexes.
ALTER TABLE scenario_events SET (vacuum_index_cleanup = on);

-- The unread badge is an index-only count, which stays one only while the visibility map
-- covers the user's rows: after a fan-out or a user's mark-all-read, until VACUUM, it
-- visits every row's heap page and costs about twice as much. The defaults wait for 20%
-- of the table to change (a million rows of five); vacuum after 2% instead. A vacuum after
-- inserts only scans the new pages and no index.
ALTER TABLE user_notifications SET (autovacuum_vacuum_insert_scale_factor = 0.02,
                                    autovacuum_vacuum_scale_factor = 0.02);

-- Processed events that never wrote a notification (nobody subscribed), found without a
-- scan of the whole table by purge_processed_events(). Only such events enter it.
CREATE INDEX scenario_events_unreferenced_idx ON scenario_events (id)
    WHERE fanout_count = 0;

-- What the listeners still have to do. Alert on oldest_age, not on the count: a burst
-- of a million events is fine if it drains, one event stuck for ten minutes is not.
-- An event whose fan-out keeps failing is listed in failing_events (its error and
-- attempts; set_aside_at once the listeners stopped retrying it, see redeliver_event).
CREATE OR REPLACE VIEW notification_backlog AS
SELECT count(*) AS unprocessed_events,
       min(e.occurred_at) AS oldest_occurred_at,
       coalesce(now() - min(e.occurred_at), interval '0') AS oldest_age,
       min(e.id) AS oldest_event_id,
       count(*) FILTER (WHERE e.failed_at IS NOT NULL) AS set_aside_events,
       coalesce(jsonb_agg(jsonb_build_object('event_id', e.id,
                                             'attempts', e.fanout_attempts,
                                             'error', e.fanout_error,
                                             'set_aside_at', e.failed_at) ORDER BY e.id)
                    FILTER (WHERE e.fanout_attempts > 0),
                '[]'::jsonb) AS failing_events
-- In two parts, each on its own partial index (a plain processed_at IS NULL has none).
FROM (SELECT w.id, w.occurred_at, w.failed_at, w.fanout_attempts, w.fanout_error
      FROM scenario_events w WHERE w.processed_at IS NULL AND w.failed_at IS NULL
      UNION ALL
      SELECT a.id, a.occurred_at, a.failed_at, a.fanout_attempts, a.fanout_error
      FROM scenario_events a WHERE a.processed_at IS NULL AND a.failed_at IS NOT NULL) e;

-- Puts an event back in the backlog, and wakes the listeners. Users who already hold its
-- notification keep their single row, read or not; users who should have it and do not
-- (a subscription fixed since, a user created since, or a row purged since) get it.
-- An event set aside after failed fan-outs is tried again, its attempts counted afresh.
CREATE OR REPLACE FUNCTION redeliver_event(event_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE scenario_events e
    SET processed_at = NULL, failed_at = NULL, fanout_attempts = 0, fanout_error = NULL
    WHERE e.id = redeliver_event.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no event with id %', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'see SELECT id, event_type, occurred_at FROM scenario_events';
    END IF;
    PERFORM pg_notify(event_channel_v2(), '');
END;
$$;

CREATE FUNCTION retention_age_v2(older_than interval, example text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'for example ' || example;
    END IF;
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, not %', older_than
            USING ERRCODE = 'invalid_parameter_value', HINT = 'for example ' || example;
    END IF;
    RETURN older_than;
END;
$$;

-- Retention of events: processed events older than older_than that no notification
-- refers to (none was written, or all were purged since). Events that wrote none are
-- found through scenario_events_unreferenced_idx; the others by one anti-join against
-- user_notifications, a scan of that table: run it from a nightly job, not in a loop.
-- Unprocessed and set-aside events always stay.
CREATE FUNCTION purge_processed_events(older_than interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    age interval := retention_age_v2(older_than, 'purge_processed_events(''90 days'')');
    purged bigint;
BEGIN
    DELETE FROM scenario_events e
    WHERE e.processed_at IS NOT NULL AND e.occurred_at < now() - age
      AND (e.fanout_count = 0
           OR NOT EXISTS (SELECT 1 FROM user_notifications n WHERE n.event_id = e.id));
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END;
$$;

-- Retention of scenarios: soft-deleted ones whose deletion is older than older_than.
-- Their notifications stay readable (events keep the scenario's name); deleting a row
-- that was already soft-deleted writes no event.
CREATE FUNCTION purge_deleted_scenarios(older_than interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    age interval := retention_age_v2(older_than, 'purge_deleted_scenarios(''90 days'')');
    purged bigint;
BEGIN
    DELETE FROM test_scenarios s
    WHERE s.deleted_at IS NOT NULL AND s.deleted_at < now() - age;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END;
$$;

-- Retention of unread notifications: those older than older_than (NULL: any age), and
-- beyond the newest keep_per_user of each user (NULL: no limit). Read ones are
-- purge_read_notifications()'s.
CREATE FUNCTION purge_unread_notifications(older_than interval DEFAULT NULL,
                                           keep_per_user integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    purged bigint := 0;
    n bigint;
BEGIN
    IF older_than IS NULL AND keep_per_user IS NULL THEN
        RAISE EXCEPTION 'give older_than, keep_per_user or both'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'for example purge_unread_notifications(''180 days'', 1000)';
    END IF;
    IF keep_per_user < 0 THEN
        RAISE EXCEPTION 'keep_per_user must not be negative, not %', keep_per_user
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF older_than IS NOT NULL THEN
        DELETE FROM user_notifications un
        WHERE un.read_at IS NULL
          AND un.created_at < now()
              - retention_age_v2(older_than, 'purge_unread_notifications(''180 days'')');
        GET DIAGNOSTICS n = ROW_COUNT;
        purged := purged + n;
    END IF;
    IF keep_per_user IS NOT NULL THEN
        DELETE FROM user_notifications un
        USING (SELECT ranked.user_id, ranked.event_id
               FROM (SELECT u.user_id, u.event_id,
                            row_number() OVER (PARTITION BY u.user_id
                                               ORDER BY u.event_id DESC) AS rank
                     FROM user_notifications u WHERE u.read_at IS NULL) ranked
               WHERE ranked.rank > keep_per_user) beyond
        WHERE un.user_id = beyond.user_id AND un.event_id = beyond.event_id
          AND un.read_at IS NULL;
        GET DIAGNOSTICS n = ROW_COUNT;
        purged := purged + n;
    END IF;
    RETURN purged;
END;
$$;
