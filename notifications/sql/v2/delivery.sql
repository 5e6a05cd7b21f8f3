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
