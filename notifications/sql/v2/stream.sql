-- Revision 0002 (open until the v2 release; frozen from then on, see docs/migrations.md).
--
-- The stream (GET /api/v1/stream, notifications/stream/): hints sent at commit, and what
-- is new for every user connected to a serve process, read in one statement.
--
-- A stream's resume position is a database snapshot, as the feed's watermark is: a
-- notification is new to a position when the fan-out that wrote it (scenario_events.
-- fanout_xid) had not committed in that snapshot. Event ids are assigned at insert and
-- fan-outs commit out of order, so "ids above the last one sent" would skip a lower id
-- committed late; "not visible in the snapshot the last one was read in" never does.

-- The events fanned out since a position: fanout_xid >= the snapshot's xmin (every
-- transaction below xmin had ended when the snapshot was taken). Partial: a writer's new
-- event (not fanned out yet) adds no entry, so the writers do not pay for it.
CREATE INDEX scenario_events_fanout_xid_idx ON scenario_events (fanout_xid)
    WHERE fanout_xid IS NOT NULL;

-- A redelivered event (redeliver_event) keeps its first fanout_xid, so that the rows it
-- already had are not new again to every stream and watermark; the rows its redelivery
-- adds are made visible by a later transaction, recorded on them. NULL on every row of a
-- first fan-out, so the hot path writes no index entry for it.
ALTER TABLE user_notifications ADD COLUMN fanout_xid xid8;
CREATE INDEX user_notifications_fanout_xid_idx ON user_notifications (fanout_xid)
    WHERE fanout_xid IS NOT NULL;

-- The channel the fan-out (payload 'new') and read-state changes (payload 'read:' and the
-- users' ids, or 'read:*') notify, and every serve process LISTENs on, named once.
CREATE FUNCTION stream_channel_v2() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'notification_stream'::text $$;

-- Read state changed by anyone (the API, another device, psql), or unread notifications
-- deleted (retention, a psql DELETE): the streams of those users send their new unread
-- count. One NOTIFY per statement, naming at most 100 users; a bigger change asks every
-- process to recount all its users. Deleting read rows changes no count: no hint.
CREATE FUNCTION user_notifications_read_hint_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    users text;
BEGIN
    SELECT CASE WHEN count(DISTINCT c.user_id) <= 100
                THEN string_agg(DISTINCT c.user_id::text, ',') ELSE '*' END
    INTO users
    FROM changed c
    WHERE TG_OP = 'UPDATE' OR c.read_at IS NULL;
    IF users IS NOT NULL THEN
        PERFORM pg_notify(stream_channel_v2(), 'read:' || users);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER user_notifications_read_hint
    AFTER UPDATE ON user_notifications
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION user_notifications_read_hint_v2();
CREATE TRIGGER user_notifications_delete_hint
    AFTER DELETE ON user_notifications
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION user_notifications_read_hint_v2();

-- One round of a serve process: for each open stream (slot), given its token's hash and its
-- position, the user's notifications it has not been sent (at most row_limit, in id
-- order) and, where asked, the user's unread count, all as of one snapshot (returned in
-- every row). A position is (prev, next, after): the stream has been sent every
-- notification whose fan-out prev sees, and those next sees with an id up to after; next
-- is NULL once a round ended complete (then this round's snapshot serves as next).
-- A slot whose token is revoked, expired or unknown gets no row at all: the caller ends
-- it. Only a valid token's holder is served, so the API's role, which may execute this,
-- reads no one's rows without their token (row-level security is not needed here).
-- Rows, by kind:
--   'h' one per valid slot: its user and unread count (NULL unless asked);
--   'e' one per event any slot is owed: what a notification of it says (the feed's view,
--       read once per event rather than once per recipient);
--   'n' one per notification owed: slot, event id, the recipient's read_at.
CREATE FUNCTION stream_round_v2(token_hashes bytea[], prevs text[], nexts text[],
                                afters bigint[], recounts boolean[], row_limit integer)
RETURNS TABLE (kind text, slot bigint, user_id bigint, snapshot text, unread bigint,
               id bigint, read_at timestamptz, event_type text, scenario_id bigint,
               scenario_name text, actor_id bigint, actor_name text, message text,
               created_at timestamptz, fanned_out_at timestamptz)
LANGUAGE sql STABLE AS $$
    WITH s AS MATERIALIZED (
        SELECT c.slot, t.user_id, c.prev::pg_snapshot AS prev, c.next::pg_snapshot AS next,
               c.after, c.recount
        FROM unnest(token_hashes, prevs, nexts, afters, recounts)
             WITH ORDINALITY AS c(token_hash, prev, next, after, recount, slot)
        CROSS JOIN LATERAL authenticate_token_v2(c.token_hash) t
    ),
    -- The events fanned out since the oldest position (usually the few since the last
    -- round, whatever the number of streams), and those a redelivery added rows to since.
    since AS MATERIALIZED (SELECT min(pg_snapshot_xmin(s.prev)) AS xmin FROM s),
    ev AS MATERIALIZED (
        SELECT e.id, e.fanout_xid, e.processed_at
        FROM scenario_events e
        WHERE e.fanout_xid >= (SELECT xmin FROM since)
        UNION
        SELECT e.id, e.fanout_xid, e.processed_at
        FROM scenario_events e
        WHERE e.id IN (SELECT un.event_id FROM user_notifications un
                       WHERE un.fanout_xid >= (SELECT xmin FROM since))
    ),
    owed AS MATERIALIZED (
        SELECT s.slot, s.user_id, o.event_id, o.read_at
        FROM s CROSS JOIN LATERAL (
            SELECT un.event_id, un.read_at
            FROM ev JOIN user_notifications un ON un.user_id = s.user_id AND un.event_id = ev.id
            CROSS JOIN LATERAL (SELECT coalesce(un.fanout_xid, ev.fanout_xid) AS xid) made
            WHERE NOT pg_visible_in_snapshot(made.xid, s.prev)
              AND pg_visible_in_snapshot(made.xid, coalesce(s.next, pg_current_snapshot()))
              AND ev.id > s.after
            ORDER BY ev.id
            LIMIT row_limit
        ) o
    )
    SELECT 'h', s.slot, s.user_id, pg_current_snapshot()::text,
           CASE WHEN s.recount THEN (SELECT count(*) FROM user_notifications n
                                     WHERE n.user_id = s.user_id AND n.read_at IS NULL) END,
           NULL::bigint, NULL::timestamptz, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM s
    UNION ALL
    SELECT 'e', NULL, NULL, NULL, NULL, f.id, NULL, f.event_type, f.scenario_id,
           f.scenario_name, f.actor_id, f.actor_name, f.message, f.created_at, ev.processed_at
    FROM (SELECT DISTINCT ON (o.event_id) o.event_id, o.user_id FROM owed o
          ORDER BY o.event_id) one
    CROSS JOIN LATERAL (SELECT * FROM notification_feed f
                        WHERE f.user_id = one.user_id AND f.id = one.event_id) f
    JOIN ev ON ev.id = one.event_id
    UNION ALL
    SELECT 'n', o.slot, o.user_id, NULL, NULL, o.event_id, o.read_at, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL
    FROM owed o
$$;
