-- Released with revision 0001. Frozen: never edit, add a v2 file and a new revision.

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE
                CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- sha256 of the plaintext; the plaintext is shown once and never stored
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE event_types (
    name             text PRIMARY KEY,
    description      text NOT NULL,
    default_enabled  boolean NOT NULL DEFAULT true
);

INSERT INTO event_types (name, description, default_enabled) VALUES
    ('scenario.created',  'A test scenario was created',  true),
    ('scenario.executed', 'A test scenario was executed', true),
    ('scenario.deleted',  'A test scenario was deleted',  true);

CREATE TABLE test_scenarios (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description       text NOT NULL DEFAULT '' CHECK (length(description) <= 5000),
    created_by        bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_executed_at  timestamptz,
    last_status       text CHECK (last_status IN ('passed', 'failed')),
    deleted_at        timestamptz
);
CREATE INDEX test_scenarios_live_idx ON test_scenarios (id) WHERE deleted_at IS NULL;

CREATE TABLE subscriptions (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event_type  text NOT NULL REFERENCES event_types (name) ON DELETE CASCADE,
    enabled     boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, event_type)
);
-- The fan-out reads subscriptions by event type.
CREATE INDEX subscriptions_event_type_idx ON subscriptions (event_type, user_id) INCLUDE (enabled);

-- One row per event, written only by the triggers on test_scenarios. The scenario's name
-- is copied so that notifications stay readable after the scenario is gone.
-- No foreign keys: every writer of test_scenarios would pay a lookup per event, and all
-- of them would take KEY SHARE locks on the same event_types row (multixacts under
-- concurrent writers). Only the triggers write here, with the three known types; a deleted
-- actor simply shows as no actor (notification_feed LEFT JOINs users).
CREATE TABLE scenario_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type     text NOT NULL,
    scenario_id    bigint NOT NULL,
    scenario_name  text NOT NULL,
    status         text,
    actor_id       bigint,
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    processed_at   timestamptz,
    fanout_count   integer
) WITH (
    -- A queue: every event is updated once when processed, which leaves a dead entry in
    -- the backlog index that every claim and every writer's "backlog empty?" check walks
    -- over until VACUUM. Vacuum it after a few thousand events, not after 20% of the table.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
-- Only the backlog is indexed; processed events fall out of the index.
CREATE INDEX scenario_events_backlog_idx ON scenario_events (id) WHERE processed_at IS NULL;

-- The notification's public id is its event id: (user_id, event_id) is the key, so a
-- user's feed is one contiguous range of the primary key, newest first.
-- No foreign keys here on purpose: they cost one lookup per row, and a single event can
-- fan out to a million rows. Rows are only ever written by fan_out_events_v1(), which
-- takes both ids from their tables; deleting a user removes theirs through a trigger.
CREATE TABLE user_notifications (
    user_id     bigint NOT NULL,
    event_id    bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz,
    CONSTRAINT user_notifications_pkey PRIMARY KEY (user_id, event_id)
);
-- The unread badge is the hottest read (every open inbox polls it): an index of the
-- unread rows alone makes it an index-only count of just those. It costs each fan-out a
-- second index entry per row (bench/README.md has both sides measured).
CREATE INDEX user_notifications_unread_idx ON user_notifications (user_id, event_id)
    WHERE read_at IS NULL;

-- The advisory lock that orders fan-outs (shared) against user deletions (exclusive).
CREATE FUNCTION fan_out_lock_key_v1() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT 7305214920117342001::bigint
$$;

CREATE FUNCTION users_delete_notifications_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Wait for fan-outs in flight (each holds this advisory lock shared) and keep new
    -- ones out until this commits, so none can write rows for a user that is going away.
    -- Only fan-outs wait on it: read-state updates, purges and vacuum do not.
    PERFORM pg_advisory_xact_lock(fan_out_lock_key_v1());
    DELETE FROM user_notifications n USING old_users o WHERE n.user_id = o.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_delete_notifications
    AFTER DELETE ON users REFERENCING OLD TABLE AS old_users
    FOR EACH STATEMENT EXECUTE FUNCTION users_delete_notifications_v1();
