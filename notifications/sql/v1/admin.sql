-- Released with revision 0001. Frozen: never edit, add a v2 file and a new revision.
--
-- Administration from psql. Errors are raised with a clear message and a standard
-- SQLSTATE so that the CLI and the API can show them as they are.

CREATE FUNCTION create_user(name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid user name %: use 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit', quote_literal(name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO users (name) VALUES (create_user.name) RETURNING id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'user % already exists', quote_literal(name)
        USING ERRCODE = 'unique_violation';
END;
$$;

-- Shared check of the admin functions: a clear error before anything is written.
CREATE FUNCTION require_user_v1(user_id bigint) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM users u WHERE u.id = require_user_v1.user_id) THEN
        RAISE EXCEPTION 'no user with id %', user_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'see SELECT id, name FROM user_overview';
    END IF;
END;
$$;

CREATE FUNCTION token_hash_v1(token text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT sha256(convert_to(token, 'UTF8'))
$$;

-- Tokens carry 3 x 122 random bits from gen_random_uuid() (pg_strong_random), more than
-- 32 bytes of entropy, without needing the pgcrypto extension.
CREATE FUNCTION issue_token(user_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    token text;
BEGIN
    PERFORM require_user_v1(user_id);
    token := 'ntf_' || replace(gen_random_uuid()::text || gen_random_uuid()::text
                               || gen_random_uuid()::text, '-', '');
    INSERT INTO api_tokens (user_id, token_hash) VALUES (issue_token.user_id, token_hash_v1(token));
    RETURN token;
END;
$$;

CREATE FUNCTION revoke_tokens(user_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    revoked integer;
BEGIN
    PERFORM require_user_v1(user_id);
    UPDATE api_tokens t SET revoked_at = now()
    WHERE t.user_id = revoke_tokens.user_id AND t.revoked_at IS NULL;
    GET DIAGNOSTICS revoked = ROW_COUNT;
    RETURN revoked;
END;
$$;

-- The API's only way in: the user behind a live token, or NULL.
CREATE FUNCTION authenticate_token_v1(token text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT t.user_id FROM api_tokens t
    WHERE t.token_hash = token_hash_v1(token) AND t.revoked_at IS NULL
$$;

CREATE FUNCTION set_subscription(user_id bigint, event_type text, enabled boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM require_user_v1(user_id);
    IF event_type IS NULL THEN
        RAISE EXCEPTION 'event_type must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM event_types t WHERE t.name = set_subscription.event_type) THEN
        RAISE EXCEPTION 'unknown event type %', quote_literal(event_type)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'see SELECT name FROM event_types';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO subscriptions AS s (user_id, event_type, enabled)
    VALUES (set_subscription.user_id, set_subscription.event_type, set_subscription.enabled)
    ON CONFLICT ON CONSTRAINT subscriptions_pkey
    DO UPDATE SET enabled = excluded.enabled, updated_at = now();
END;
$$;

-- Retention: only read notifications go; unread ones stay however old they are.
CREATE FUNCTION purge_read_notifications(older_than interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    purged bigint;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'for example purge_read_notifications(''30 days'')';
    END IF;
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, not %', older_than
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'for example purge_read_notifications(''30 days'')';
    END IF;
    DELETE FROM user_notifications n
    WHERE n.read_at IS NOT NULL AND n.read_at < now() - older_than;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END;
$$;

-- Puts an event back in the backlog, and wakes the listeners. Users who already hold its
-- notification keep their single row, read or not; users who should have it and do not
-- (a subscription fixed since, a user created since, or a row purged since) get it.
CREATE FUNCTION redeliver_event(event_id bigint) RETURNS void
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

-- Removes a user with their tokens, subscriptions and notifications. Their scenarios and
-- the events they caused stay, without an actor (shown as "Someone").
CREATE FUNCTION delete_user(user_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM require_user_v1(user_id);
    DELETE FROM users u WHERE u.id = delete_user.user_id;
END;
$$;

-- A sentence a person can read, shared by the API and psql users.
CREATE FUNCTION notification_message_v1(event_type text, actor_name text, scenario_name text,
                                        status text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(actor_name, 'Someone') || ' '
        || CASE event_type
               WHEN 'scenario.created' THEN 'created'
               WHEN 'scenario.executed' THEN 'executed'
               WHEN 'scenario.deleted' THEN 'deleted'
               ELSE event_type
           END
        || ' scenario ''' || scenario_name || ''''
        || CASE WHEN status IS NOT NULL THEN ': ' || status ELSE '' END
$$;

CREATE VIEW notification_feed AS
SELECT n.user_id,
       n.event_id AS id,
       e.event_type,
       e.scenario_id,
       e.scenario_name,
       e.actor_id,
       a.name AS actor_name,
       notification_message_v1(e.event_type, a.name, e.scenario_name, e.status) AS message,
       e.occurred_at AS created_at,
       n.read_at
FROM user_notifications n
JOIN scenario_events e ON e.id = n.event_id
LEFT JOIN users a ON a.id = e.actor_id;

-- What the listeners still have to do. Alert on oldest_age, not on the count: a burst
-- of a million events is fine if it drains, one event stuck for ten minutes is not.
CREATE VIEW notification_backlog AS
SELECT count(*) AS unprocessed_events,
       min(e.occurred_at) AS oldest_occurred_at,
       coalesce(now() - min(e.occurred_at), interval '0') AS oldest_age,
       min(e.id) AS oldest_event_id
FROM scenario_events e
WHERE e.processed_at IS NULL;

-- One row per user: what an operator checks before issuing or revoking tokens.
CREATE VIEW user_overview AS
SELECT u.id,
       u.name,
       u.created_at,
       t.active_tokens,
       t.last_token_issued_at,
       n.notifications,
       n.unread_notifications
FROM users u
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE k.revoked_at IS NULL) AS active_tokens,
           max(k.created_at) AS last_token_issued_at
    FROM api_tokens k WHERE k.user_id = u.id
) t
CROSS JOIN LATERAL (
    SELECT count(*) AS notifications,
           count(*) FILTER (WHERE un.read_at IS NULL) AS unread_notifications
    FROM user_notifications un WHERE un.user_id = u.id
) n;

-- Each user's effective choice per event type, and where it comes from.
CREATE VIEW user_subscriptions AS
SELECT u.id AS user_id,
       u.name AS user_name,
       t.name AS event_type,
       coalesce(s.enabled, t.default_enabled) AS enabled,
       CASE WHEN s.enabled IS NULL THEN 'default' ELSE 'user' END AS source
FROM users u
CROSS JOIN event_types t
LEFT JOIN subscriptions s ON s.user_id = u.id AND s.event_type = t.name;

-- The listeners connected to this database. Each listener process holds two sessions,
-- named 'notifications-listener <pid>' (LISTEN) and '... <pid> fanout' (the work).
-- last_query_at of the fanout session is when that listener last looked at the backlog;
-- it moves at least once per poll interval while the listener is healthy. Without
-- superuser or pg_read_all_stats, other roles' sessions show NULL in the detail columns.
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
