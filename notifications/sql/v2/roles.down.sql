-- Revision 0002 down: undoes sql/v2/roles.sql.
--
-- The group roles stay: they are cluster-wide, and other databases of the server may use
-- them. What this database gave them goes.
ALTER VIEW notification_feed RESET (security_invoker);
ALTER VIEW user_subscriptions RESET (security_invoker);

DO $$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT pol.polname, c.relname FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
        WHERE c.relnamespace = current_schema()::regnamespace
          AND (pol.polname LIKE '%\_request\_user' OR pol.polname LIKE '%\_daemons')
    LOOP
        EXECUTE format('DROP POLICY %I ON %I', p.polname, p.relname);
    END LOOP;
    FOR p IN
        SELECT c.relname FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relrowsecurity
          AND c.relname IN ('user_notifications', 'subscriptions', 'api_tokens',
                            'channel_preferences', 'webhook_endpoints', 'deliveries')
    LOOP
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', p.relname);
    END LOOP;
END;
$$;

-- Every grant to the three roles on this schema's tables, views and functions (a REVOKE on
-- a table takes its column grants with it).
DO $$
DECLARE
    r text;
    s text := quote_ident(current_schema());
BEGIN
    FOREACH r IN ARRAY ARRAY['notifications_api', 'notifications_listener',
                             'notifications_deliver'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %s FROM %I', s, r);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %s FROM %I', s, r);
        EXECUTE format('REVOKE USAGE ON SCHEMA %s FROM %I', s, r);
    END LOOP;
END;
$$;
-- Back to the released defaults: invoker's rights, the caller's search_path, EXECUTE for all.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace AND p.prokind = 'f'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER RESET search_path', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
END;
$$;

DROP FUNCTION issue_token(bigint, interval);
