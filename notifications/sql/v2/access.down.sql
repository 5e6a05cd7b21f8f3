-- Revision 0002 down: undoes sql/v2/access.sql.

CREATE OR REPLACE VIEW notification_feed AS
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
DROP FUNCTION notification_message_v2(text, text, text, text), notification_quote_v2(text);

DROP TRIGGER scenario_events_fanout_xid ON scenario_events;
DROP FUNCTION scenario_events_fanout_xid_v2();
ALTER TABLE scenario_events DROP COLUMN fanout_xid;

DROP FUNCTION create_user(text, text, boolean);
-- v1's create_user, as sql/v1/admin.sql defined it.
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

ALTER TABLE users DROP CONSTRAINT users_email_shape;
ALTER TABLE users DROP COLUMN email, DROP COLUMN is_admin;
DROP FUNCTION email_is_valid_v2(text);
DROP FUNCTION authenticate_token_v2(bytea);
ALTER TABLE api_tokens DROP COLUMN expires_at;
