-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- Least privilege: group roles, grants, SECURITY DEFINER with a fixed search_path, row-level security, token checks by hash.
--
-- Applied last in revision 0002, so it grants on, and hardens, what every other file made.
-- Functions are found by kind and name in pg_proc, not by signature: the other files may
-- add or change overloads without an edit here. The migration role owns every object; it
-- is not subject to row-level security (not FORCEd), and the SECURITY DEFINER functions
-- (triggers, fan-out, token look-up) run as it. docs/operations.md shows the set-up.

-- Roles are cluster-wide and this runs once per database, possibly for several databases
-- at once (the test suite migrates many from one server): check first, so that a migration
-- role without CREATEROLE works once an operator made the roles, and tolerate the race.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['notifications_api', 'notifications_listener',
                             'notifications_deliver'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration made it meanwhile
        END;
    END LOOP;
END;
$$;

-- issue_token(user_id) stays as released (no expiry); this overload gives one.
CREATE FUNCTION issue_token(user_id bigint, valid_for interval) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    token text;
BEGIN
    PERFORM require_user_v1(user_id);
    IF valid_for IS NULL OR valid_for <= interval '0' THEN
        RAISE EXCEPTION 'valid_for must be a positive interval, not %', coalesce(valid_for::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'for example issue_token(42, ''90 days''), or issue_token(42) for no expiry';
    END IF;
    token := 'ntf_' || replace(gen_random_uuid()::text || gen_random_uuid()::text
                               || gen_random_uuid()::text, '-', '');
    INSERT INTO api_tokens (user_id, token_hash, expires_at)
    VALUES (issue_token.user_id, token_hash_v1(token), now() + valid_for);
    RETURN token;
END;
$$;

-- SECURITY DEFINER with a fixed search_path: every trigger function (a writer needs no
-- right on scenario_events, and a psql user's CREATE TEMP TABLE scenario_events cannot
-- take their events: pg_temp comes last, not first as it does by default), the fan-out
-- and its bookkeeping (the listener needs no right on user_notifications: it may only
-- EXECUTE them: claim one event, record a failed fan-out, finish user deletions) and the
-- token look-up.
DO $$
DECLARE
    f regprocedure;
    listeners boolean;
BEGIN
    FOR f, listeners IN
        SELECT fn.oid::regprocedure, fn.listeners
        FROM (SELECT p.oid, p.prorettype, p.proname,
                     p.proname LIKE 'fan\_out\_events\_v%'
                     OR p.proname ~ '^(next_event|record_fanout_failure|finish_user_deletions)_v[0-9]+$'
                     AS listeners
              FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace) fn
        WHERE fn.listeners OR fn.prorettype = 'trigger'::regtype
           OR fn.proname IN ('authenticate_token_v2', 'stream_round_v2')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp',
                       f, current_schema());
        IF listeners THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO notifications_listener', f);
        END IF;
    END LOOP;
END;
$$;

-- EXECUTE: every volatile function (the admin functions of the contract and of the other
-- v2 files, the fan-out) is the operators' (the owner's) unless granted below; stable and
-- immutable helpers (messages, the actor, the channel name) stay callable by all, since
-- views and queries use them. The plaintext token check goes too: the API no longer uses it.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.prokind = 'f'
          AND p.prorettype <> 'trigger'::regtype
          AND (p.provolatile = 'v' OR p.proname IN ('authenticate_token_v1',
                                                     'authenticate_token_v2',
                                                     'stream_round_v2'))
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END;
$$;

DO $$
DECLARE
    s text := quote_ident(current_schema());
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %s TO notifications_api, notifications_listener,'
                   ' notifications_deliver', s);
END;
$$;

-- Monitoring views (no personal data; they read as their owner).
GRANT SELECT ON notification_backlog, listener_activity
    TO notifications_api, notifications_listener, notifications_deliver;

-- The API: team data, its users' personal rows (row-level security below), read state only.
GRANT SELECT ON users, event_types, test_scenarios, scenario_events, user_notifications,
    subscriptions, notification_feed, user_subscriptions, alembic_version
    TO notifications_api;
GRANT INSERT (name, description, created_by),
      UPDATE (last_executed_at, last_status, deleted_at) ON test_scenarios TO notifications_api;
GRANT UPDATE (read_at) ON user_notifications TO notifications_api;
GRANT INSERT (user_id, event_type, enabled), UPDATE (enabled, updated_at)
    ON subscriptions TO notifications_api;
-- Everything of a token but its hash, and revoking it (DELETE /api/v1/tokens/current).
GRANT SELECT (id, user_id, created_at, revoked_at, expires_at), UPDATE (revoked_at)
    ON api_tokens TO notifications_api;
GRANT EXECUTE ON FUNCTION authenticate_token_v2(bytea), set_subscription(bigint, text, boolean)
    TO notifications_api;
-- The stream's round (sql/v2/stream.sql): it serves only the holders of valid tokens.
GRANT EXECUTE ON FUNCTION stream_round_v2(bytea[], text[], text[], bigint[], boolean[], integer)
    TO notifications_api;

-- The listener: the backlog (its functions were granted above, with SECURITY DEFINER).
GRANT SELECT ON scenario_events TO notifications_listener;

-- The deliverer reads what a message says (its delivery tables get their grants below
-- once they exist).
GRANT SELECT ON users, event_types, test_scenarios, scenario_events, user_notifications,
    notification_feed TO notifications_deliver;

-- Delivery (sql/v2/delivery.sql). The API: the user's e-mail address and channel choices
-- through the admin functions (they check what they are given), the user's endpoints
-- without ever reading a secret back (it writes one, at creation), and their delivery log.
GRANT UPDATE (email) ON users TO notifications_api;
GRANT SELECT, INSERT (user_id, event_type, channel, enabled), UPDATE (enabled, updated_at)
    ON channel_preferences TO notifications_api;
GRANT SELECT (user_id, id, url, event_types, created_at, disabled_at, disabled_reason),
      INSERT (user_id, url, secret, event_types), DELETE
    ON webhook_endpoints TO notifications_api;
GRANT SELECT (user_id, id, event_id, channel, endpoint_id, status, attempts, next_attempt_at,
              last_error, delivered_at, created_at)
    ON deliveries TO notifications_api;
GRANT EXECUTE ON FUNCTION set_user_email(bigint, text),
    set_channel_preference(bigint, text, text, boolean) TO notifications_api;
GRANT SELECT ON delivery_backlog TO notifications_api, notifications_deliver;
-- The deliverer (notifications/delivery/ owns these grants; see its module).
GRANT SELECT, UPDATE ON deliveries TO notifications_deliver;
GRANT SELECT, UPDATE (disabled_at, disabled_reason) ON webhook_endpoints TO notifications_deliver;
GRANT SELECT, UPDATE ON channel_preferences TO notifications_deliver;
GRANT SELECT, INSERT ON delivery_attempts TO notifications_deliver;

-- Row-level security on the personal tables: the API's role sees and changes only the rows
-- of the user its request is for, the transaction-local setting notifications.user_id that
-- the API sets right after authentication (no setting, no rows). It guards against a query
-- that forgets its user_id, not against a compromised API (which could set the setting).
-- The daemons work for every user. The owner is not subject to it (no FORCE): the
-- fan-out, the triggers and the admin functions run as the owner.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_notifications', 'subscriptions', 'api_tokens',
                             'channel_preferences', 'webhook_endpoints', 'deliveries'] LOOP
        CONTINUE WHEN to_regclass(t) IS NULL;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I TO notifications_api'
            ' USING (user_id = nullif(current_setting(''notifications.user_id'', true), '''')::bigint)'
            ' WITH CHECK (user_id = nullif(current_setting(''notifications.user_id'', true), '''')::bigint)',
            t || '_request_user', t);
        EXECUTE format('CREATE POLICY %I ON %I TO notifications_listener, notifications_deliver'
                       ' USING (true)', t || '_daemons', t);
    END LOOP;
END;
$$;

-- The views the API reads apply its row-level security (they read as the caller).
ALTER VIEW notification_feed SET (security_invoker = true);
ALTER VIEW user_subscriptions SET (security_invoker = true);
