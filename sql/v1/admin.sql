-- Released with revision 0001. Frozen: never edit, add a v2 file and a new revision.
--
-- Administration from psql. Errors are raised with a clear message and a standard
-- SQLSTATE so that the CLI and the API can show them as they are.

CREATE FUNCTION create_user(name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid user name %: use 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit', quote_nullable(name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO users (name) VALUES (create_user.name) RETURNING id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'user % already exists', quote_literal(name)
        USING ERRCODE = 'unique_violation';
END;
$$;

CREATE FUNCTION require_user_v1(user_id bigint) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF user_id IS NULL OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = require_user_v1.user_id) THEN
        RAISE EXCEPTION 'no user with id %', coalesce(user_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
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
    IF event_type IS NULL OR NOT EXISTS (SELECT 1 FROM event_types t WHERE t.name = set_subscription.event_type) THEN
        RAISE EXCEPTION 'unknown event type %', quote_nullable(event_type)
            USING ERRCODE = 'no_data_found',
                  HINT = 'see SELECT name FROM event_types';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO subscriptions AS s (user_id, event_type, enabled)
    VALUES (set_subscription.user_id, set_subscription.event_type, set_subscription.enabled)
    ON CONFLICT (user_id, event_type)
    DO UPDATE SET enabled = excluded.enabled, updated_at = now();
END;
$$;

CREATE FUNCTION purge_read_notifications(older_than interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    purged bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be a non-negative interval, not %', coalesce(older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM user_notifications n
    WHERE n.read_at IS NOT NULL AND n.read_at < now() - older_than;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END;
$$;

-- Puts an event back in the backlog. Users who already hold its notification keep their
-- single row; users who should have it and do not (say, a subscription fixed since) get it.
CREATE FUNCTION redeliver_event(event_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE scenario_events e SET processed_at = NULL WHERE e.id = redeliver_event.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no event with id %', coalesce(event_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM pg_notify('scenario_events', '');
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
        || ' scenario ' || quote_literal(scenario_name)
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

CREATE VIEW notification_backlog AS
SELECT count(*) AS unprocessed_events,
       min(e.occurred_at) AS oldest_occurred_at,
       coalesce(now() - min(e.occurred_at), interval '0') AS oldest_age
FROM scenario_events e
WHERE e.processed_at IS NULL;

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

-- Listeners identify themselves with application_name 'notifications-listener ...'.
CREATE VIEW listener_activity AS
SELECT a.pid,
       a.application_name,
       a.client_addr,
       a.backend_start,
       a.state,
       now() - a.state_change AS idle_for,
       (SELECT b.oldest_age FROM notification_backlog b) AS backlog_age
FROM pg_stat_activity a
WHERE a.application_name LIKE 'notifications-listener%';
