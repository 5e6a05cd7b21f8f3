-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- Users' admin flag and e-mail, scenario ownership, read-state watermarks (API hardening).

-- Scenario deletion is for its creator or an admin (the API answers 403 to anyone else).
ALTER TABLE users
    ADD COLUMN is_admin boolean NOT NULL DEFAULT false,
    ADD COLUMN email text NULL;

-- The one shape check of an e-mail address, shared by create_user and the table's CHECK:
-- local@domain, at most 254 characters, no spaces or control characters, a DNS-like domain.
CREATE FUNCTION email_is_valid_v2(email text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT length(email) <= 254
       AND email ~ '^[A-Za-z0-9.!#$&''*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
$$;

ALTER TABLE users ADD CONSTRAINT users_email_shape CHECK (email_is_valid_v2(email));

-- Replaces v1's create_user(name): with defaults, create_user('x') still works from psql,
-- and one function (not two overloads) keeps such a call unambiguous.
DROP FUNCTION create_user(text);

CREATE FUNCTION create_user(name text, email text DEFAULT NULL, is_admin boolean DEFAULT false)
RETURNS bigint
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
    IF email IS NOT NULL AND NOT email_is_valid_v2(email) THEN
        RAISE EXCEPTION 'invalid e-mail address %: expected local@domain, at most 254 characters', quote_literal(email)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO users (name, email, is_admin)
    VALUES (create_user.name, create_user.email, coalesce(create_user.is_admin, false))
    RETURNING id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'user % already exists', quote_literal(name)
        USING ERRCODE = 'unique_violation';
END;
$$;

-- Read-all with a watermark (docs/api.md): the transaction that made an event's
-- notifications visible, so that read-all marks only what a page's snapshot could see.
-- NULL (events fanned out before this revision) counts as visible to every watermark.
ALTER TABLE scenario_events ADD COLUMN fanout_xid xid8;

-- Set where an event becomes processed, by whichever fan-out does it first, so that no
-- fan-out path can forget it. One row per event, not per notification. A redelivery's
-- fan-out keeps it: the rows it adds carry their own (user_notifications.fanout_xid,
-- sql/v2/stream.sql), and the rows from before stay as visible as they were.
CREATE FUNCTION scenario_events_fanout_xid_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.fanout_xid := pg_current_xact_id();
    RETURN NEW;
END;
$$;

CREATE TRIGGER scenario_events_fanout_xid
    BEFORE UPDATE OF processed_at ON scenario_events
    FOR EACH ROW WHEN (OLD.processed_at IS NULL AND NEW.processed_at IS NOT NULL
                       AND OLD.fanout_count IS NULL)
    EXECUTE FUNCTION scenario_events_fanout_xid_v2();

-- A name inside a sentence must not be able to end the quote or reorder the text: quotes
-- and backslashes are escaped, control and format characters (Unicode Cc, Cf: bidi
-- overrides, zero-width characters) become U+FFFD. The API refuses such names; psql
-- writers may still store them.
CREATE FUNCTION notification_quote_v2(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT '''' || regexp_replace(
        replace(replace(value, '\', '\\'), '''', '\'''),
        '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]',
        U&'\FFFD', 'g') || ''''
$$;

CREATE FUNCTION notification_message_v2(event_type text, actor_name text, scenario_name text,
                                        status text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(actor_name, 'Someone') || ' '
        || CASE event_type
               WHEN 'scenario.created' THEN 'created'
               WHEN 'scenario.executed' THEN 'executed'
               WHEN 'scenario.deleted' THEN 'deleted'
               ELSE event_type
           END
        || ' scenario ' || notification_quote_v2(scenario_name)
        || CASE WHEN status IS NOT NULL THEN ': ' || status ELSE '' END
$$;

-- Same columns as v1's view; only the message is rendered by the v2 function.
CREATE OR REPLACE VIEW notification_feed AS
SELECT n.user_id,
       n.event_id AS id,
       e.event_type,
       e.scenario_id,
       e.scenario_name,
       e.actor_id,
       a.name AS actor_name,
       notification_message_v2(e.event_type, a.name, e.scenario_name, e.status) AS message,
       e.occurred_at AS created_at,
       n.read_at
FROM user_notifications n
-- One primary-key probe per row of the page. As a plain join, the planner may merge-join
-- scenario_events walked down from its newest event: the page's bound on n.event_id is
-- not carried over to e.id, so a page deep in a long feed read every event above it.
-- OFFSET 0 keeps the subquery from being flattened into such a join.
CROSS JOIN LATERAL (SELECT * FROM scenario_events ev WHERE ev.id = n.event_id OFFSET 0) e
LEFT JOIN users a ON a.id = e.actor_id;

-- Tokens: an optional expiry, and the look-up by hash. The API hashes the token itself
-- (sha256, as token_hash_v1), so the plaintext never reaches the server, its logs or
-- pg_stat_activity; the API's role cannot read api_tokens.token_hash at all.
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;

CREATE FUNCTION authenticate_token_v2(token_hash bytea)
RETURNS TABLE (user_id bigint, token_id bigint)
LANGUAGE sql STABLE AS $$
    SELECT t.user_id, t.id FROM api_tokens t
    WHERE t.token_hash = authenticate_token_v2.token_hash
      AND t.revoked_at IS NULL
      AND (t.expires_at IS NULL OR t.expires_at > now())
$$;
