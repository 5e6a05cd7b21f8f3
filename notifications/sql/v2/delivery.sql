-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- Delivery: a user's channel choices, their webhook endpoints, and the outbox the
-- fan-out writes in the same transaction as the notifications (`deliveries`), which
-- `notifications deliver` drains. Every table is keyed by user_id first (Citus:
-- distributed by user_id, colocated with user_notifications); ids are unique on their
-- own too, but every query names the user as well.

-- A user's choice for one channel and event type. With no row: e-mail off, webhook on.
CREATE TABLE channel_preferences (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event_type  text NOT NULL REFERENCES event_types (name) ON DELETE CASCADE,
    channel     text NOT NULL CHECK (channel IN ('email', 'webhook')),
    enabled     boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, event_type, channel)
);
-- The fan-out reads the (few) users who switched a channel on or off, by event type.
CREATE INDEX channel_preferences_event_idx
    ON channel_preferences (event_type, channel, user_id) INCLUDE (enabled);

-- The secret is kept to sign with (HMAC needs it in the clear); the API shows it once, at
-- creation, and never again. A null event_types means every type.
CREATE TABLE webhook_endpoints (
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    url              text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    secret           text NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/=]{20,}$'),
    event_types      text[] CHECK (event_types IS NULL OR cardinality(event_types) > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    disabled_at      timestamptz,
    disabled_reason  text,
    PRIMARY KEY (user_id, id)
);

-- The outbox: one row per notification and channel (per endpoint for webhooks).
-- status: pending -> delivered | dead. A claim leases a row by moving next_attempt_at past
-- the lease; a deliverer killed mid-send leaves it to come due again when the lease ends.
CREATE TABLE deliveries (
    user_id          bigint NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    event_id         bigint NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('email', 'webhook')),
    endpoint_id      bigint,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, id),
    CONSTRAINT deliveries_once UNIQUE NULLS NOT DISTINCT (user_id, event_id, channel, endpoint_id),
    CHECK ((channel = 'webhook') = (endpoint_id IS NOT NULL))
);
-- The deliverers' claim: due pending rows, oldest first.
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'pending';
-- An endpoint's delivery log (API) and replay (operators).
CREATE INDEX deliveries_endpoint_idx ON deliveries (user_id, endpoint_id, id)
    WHERE endpoint_id IS NOT NULL;

-- One row per try: when, how long, what the other side answered.
CREATE TABLE delivery_attempts (
    user_id      bigint NOT NULL,
    delivery_id  bigint NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    started_at   timestamptz NOT NULL,
    duration_ms  double precision NOT NULL,
    http_status  integer,
    smtp_reply   text,
    error        text,
    PRIMARY KEY (user_id, delivery_id, id)
);

-- The channel the fan-out notifies (a hint, at most once per fan-out transaction that wrote
-- deliveries) and the deliverers LISTEN on, named once.
CREATE FUNCTION delivery_channel_v2() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'deliveries'::text $$;

-- An operator names a delivery by its id alone (retry_delivery, the webhook-id a receiver
-- reports); the id is an identity, unique on its own.
CREATE UNIQUE INDEX deliveries_id_idx ON deliveries (id);
-- Dead letters, few by design: the backlog view, dead_deliveries, an endpoint's replay.
CREATE INDEX deliveries_dead_idx ON deliveries (user_id, endpoint_id, created_at)
    WHERE status = 'dead';
-- replay_endpoint_deliveries names an endpoint by its id alone.
CREATE UNIQUE INDEX webhook_endpoints_id_idx ON webhook_endpoints (id);

-- A deleted endpoint's outbox goes with it: nothing more is sent to it, and its log (the
-- API's GET /webhooks/{id}/deliveries) is gone with the endpoint. A deliverer that was
-- sending one of these meanwhile finds no row to record its result in, and that is fine.
CREATE FUNCTION webhook_endpoints_delete_deliveries_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM delivery_attempts a USING deliveries d, old_endpoints o
    WHERE d.user_id = o.user_id AND d.endpoint_id = o.id
      AND a.user_id = d.user_id AND a.delivery_id = d.id;
    DELETE FROM deliveries d USING old_endpoints o
    WHERE d.user_id = o.user_id AND d.endpoint_id = o.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_endpoints_delete_deliveries
    AFTER DELETE ON webhook_endpoints REFERENCING OLD TABLE AS old_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_endpoints_delete_deliveries_v2();

-- Admin functions (psql, the CLI, the API for the user's own rows).
--   SELECT set_user_email(42, 'ada@example.com');  SELECT set_user_email(42, NULL);
CREATE FUNCTION set_user_email(user_id bigint, email text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM require_user_v1(user_id);
    IF email IS NOT NULL AND NOT email_is_valid_v2(email) THEN
        RAISE EXCEPTION 'invalid e-mail address %: expected local@domain, at most 254 characters', quote_literal(email)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'NULL clears the address';
    END IF;
    UPDATE users u SET email = set_user_email.email WHERE u.id = set_user_email.user_id;
END;
$$;

--   SELECT set_channel_preference(42, 'scenario.executed', 'email', true);
CREATE FUNCTION set_channel_preference(user_id bigint, event_type text, channel text,
                                       enabled boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM require_user_v1(user_id);
    IF event_type IS NULL THEN
        RAISE EXCEPTION 'event_type must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM event_types t WHERE t.name = set_channel_preference.event_type) THEN
        RAISE EXCEPTION 'unknown event type %', quote_literal(event_type)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'see SELECT name FROM event_types';
    END IF;
    IF channel IS NULL OR channel NOT IN ('email', 'webhook') THEN
        RAISE EXCEPTION 'unknown channel %', coalesce(quote_literal(channel), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the channels are ''email'' and ''webhook''';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO channel_preferences AS p (user_id, event_type, channel, enabled)
    VALUES (set_channel_preference.user_id, set_channel_preference.event_type,
            set_channel_preference.channel, set_channel_preference.enabled)
    ON CONFLICT ON CONSTRAINT channel_preferences_pkey
    DO UPDATE SET enabled = excluded.enabled, updated_at = now();
END;
$$;

-- A dead (or still pending) delivery back in the queue, due now, with a fresh schedule
-- (its earlier tries stay in delivery_attempts).   SELECT retry_delivery(1234);
CREATE FUNCTION retry_delivery(id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    found_status text;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT d.status INTO found_status FROM deliveries d WHERE d.id = retry_delivery.id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no delivery with id %', id
            USING ERRCODE = 'no_data_found',
                  HINT = 'see SELECT id, channel, last_error FROM dead_deliveries';
    END IF;
    IF found_status = 'delivered' THEN
        RAISE EXCEPTION 'delivery % was delivered already', id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'only pending and dead deliveries can be retried';
    END IF;
    UPDATE deliveries d
    SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp()
    WHERE d.id = retry_delivery.id;
    PERFORM pg_notify(delivery_channel_v2(), '');
END;
$$;

-- An endpoint's dead deliveries created in [since, until) back in the queue, due now; the
-- number of them. For a receiver that was down or broken and is fixed now.
--   SELECT replay_endpoint_deliveries(7, now() - interval '1 day', now());
CREATE FUNCTION replay_endpoint_deliveries(endpoint_id bigint, since timestamptz,
                                           until timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ep record;
    replayed bigint;
BEGIN
    IF endpoint_id IS NULL OR since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'endpoint_id, since and until must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF until <= since THEN
        RAISE EXCEPTION 'until (%) must be later than since (%)', until, since
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT w.user_id, w.disabled_at INTO ep FROM webhook_endpoints w
    WHERE w.id = replay_endpoint_deliveries.endpoint_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook endpoint with id %', endpoint_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'see SELECT id, user_id, url, disabled_at FROM webhook_endpoints';
    END IF;
    IF ep.disabled_at IS NOT NULL THEN
        RAISE EXCEPTION 'webhook endpoint % is disabled (since %)', endpoint_id, ep.disabled_at
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'enable it first: UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL WHERE id = ...';
    END IF;
    UPDATE deliveries d
    SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp()
    WHERE d.user_id = ep.user_id AND d.endpoint_id = replay_endpoint_deliveries.endpoint_id
      AND d.status = 'dead'
      AND d.created_at >= since AND d.created_at < until;
    GET DIAGNOSTICS replayed = ROW_COUNT;
    IF replayed > 0 THEN
        PERFORM pg_notify(delivery_channel_v2(), '');
    END IF;
    RETURN replayed;
END;
$$;

-- Per channel: what waits, what died, and how long the oldest waiting one has waited.
CREATE VIEW delivery_backlog AS
SELECT c.channel,
       (SELECT count(*) FROM deliveries d
        WHERE d.status = 'pending' AND d.channel = c.channel) AS pending,
       (SELECT count(*) FROM deliveries d
        WHERE d.status = 'dead' AND d.channel = c.channel) AS dead,
       coalesce(now() - (SELECT min(d.created_at) FROM deliveries d
                         WHERE d.status = 'pending' AND d.channel = c.channel),
                interval '0') AS oldest_pending_age
FROM (VALUES ('email'), ('webhook')) AS c (channel);

-- The dead letters, newest first, with what an operator needs to judge and replay them.
CREATE VIEW dead_deliveries AS
SELECT d.id, d.user_id, u.name AS user_name, d.channel, d.endpoint_id, w.url AS endpoint_url,
       d.event_id, e.event_type, d.attempts, d.last_error, d.created_at,
       (SELECT max(a.started_at) FROM delivery_attempts a
        WHERE a.user_id = d.user_id AND a.delivery_id = d.id) AS last_attempt_at
FROM deliveries d
LEFT JOIN users u ON u.id = d.user_id
LEFT JOIN webhook_endpoints w ON w.user_id = d.user_id AND w.id = d.endpoint_id
LEFT JOIN scenario_events e ON e.id = d.event_id
WHERE d.status = 'dead'
ORDER BY d.id DESC;
