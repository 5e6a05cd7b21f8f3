-- Revision 0002 down: undoes sql/v2/queue.sql.
DROP FUNCTION purge_unread_notifications(interval, integer), purge_deleted_scenarios(interval),
    purge_processed_events(interval), retention_age_v2(interval, text);

CREATE OR REPLACE FUNCTION redeliver_event(event_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE scenario_events e SET processed_at = NULL WHERE e.id = redeliver_event.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no event with id %', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'see SELECT id, event_type, occurred_at FROM scenario_events';
    END IF;
    PERFORM pg_notify('scenario_events', '');
END;
$$;

-- A view loses no columns through CREATE OR REPLACE: the v1 views are made again.
DROP VIEW listener_activity;
DROP VIEW notification_backlog;
CREATE VIEW notification_backlog AS
SELECT count(*) AS unprocessed_events,
       min(e.occurred_at) AS oldest_occurred_at,
       coalesce(now() - min(e.occurred_at), interval '0') AS oldest_age,
       min(e.id) AS oldest_event_id
FROM scenario_events e
WHERE e.processed_at IS NULL;

CREATE VIEW listener_activity AS
SELECT a.pid,
       a.application_name,
       substring(a.application_name FROM ' ([0-9]+)( fanout)?$')::integer AS listener_pid,
       CASE WHEN a.application_name LIKE '% fanout' THEN 'fanout' ELSE 'listen' END AS connection,
       a.usename,
       a.client_addr,
       a.backend_start,
       a.state,
       a.wait_event_type,
       a.wait_event,
       a.query_start AS last_query_at,
       now() - a.state_change AS idle_for,
       b.unprocessed_events,
       b.oldest_age AS backlog_age
FROM pg_stat_activity a
CROSS JOIN notification_backlog b
WHERE a.datname = current_database()
  AND a.application_name LIKE 'notifications-listener%';

DROP INDEX scenario_events_unreferenced_idx;
ALTER TABLE scenario_events RESET (vacuum_index_cleanup);
ALTER TABLE user_notifications
    RESET (autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_scale_factor);
