-- The runtime queries of every process, one named block each, loaded by
-- notifications/queries.py: a block starts with a line `-- name: NAME` and runs to the next.
-- Parameters are psycopg's %(name)s. These are not migrations: they change with the code
-- that runs them, and only ever read and call what a migration created.
--
-- Personal tables are read by user_id first, always: it keeps every query on its index
-- and, on Citus, on one shard.

-- ============================== API: authentication ==============================

-- name: authenticate
-- By the token's sha256, computed by the API: the plaintext never reaches the server. The
-- request's user, transaction-local, is what row-level security lets the API's role see.
SELECT a.user_id, a.token_id, set_config('notifications.user_id', a.user_id::text, true)
FROM authenticate_token_v2(%(token_hash)s) a;

-- name: revoke_current_token
UPDATE api_tokens SET revoked_at = now()
WHERE user_id = %(me)s AND id = %(token_id)s AND revoked_at IS NULL;

-- name: act_as
-- Transaction-local, so the triggers name the actor and a pooled connection forgets it.
SELECT set_config('notifications.actor_id', %(me)s::text, true);

-- name: me
SELECT id, name, email, is_admin FROM users WHERE id = %(me)s;

-- ============================== API: scenarios (team data) ==============================

-- name: scenario_list
SELECT id, name, description, created_by, created_at, last_executed_at, last_status
FROM test_scenarios WHERE deleted_at IS NULL ORDER BY id;

-- name: scenario_get
SELECT id, name, description, created_by, created_at, last_executed_at, last_status
FROM test_scenarios WHERE id = %(id)s AND deleted_at IS NULL;

-- name: scenario_create
INSERT INTO test_scenarios (name, description, created_by)
VALUES (%(name)s, %(description)s, %(me)s)
RETURNING id, name, description, created_by, created_at, last_executed_at, last_status;

-- name: scenario_execute
UPDATE test_scenarios SET last_executed_at = clock_timestamp(), last_status = %(status)s
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id, name, description, created_by, created_at, last_executed_at, last_status;

-- name: scenario_delete_check
-- Locks the live scenario, so that the check and the delete see the same creator.
SELECT s.created_by = %(me)s OR coalesce(u.is_admin, false) AS allowed
FROM test_scenarios s LEFT JOIN users u ON u.id = %(me)s
WHERE s.id = %(id)s AND s.deleted_at IS NULL
FOR UPDATE OF s;

-- name: scenario_delete
UPDATE test_scenarios SET deleted_at = now()
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id;

-- ============================== API: the feed (personal) ==============================
-- A page is a backward range scan from the cursor (%(before)s, NULL on the first page) on
-- user_notifications' primary key (user_id, event_id), or on the partial unread index.
-- The NULL becomes the largest bigint rather than a second query text: the bound stays a
-- plain index condition either way.

-- name: feed_page_all
SELECT id, event_type, scenario_id, scenario_name, actor_id, actor_name, message,
       created_at, read_at
FROM notification_feed
WHERE user_id = %(me)s AND id < coalesce(%(before)s, 9223372036854775807)
ORDER BY id DESC LIMIT %(limit)s;

-- name: feed_page_unread
SELECT id, event_type, scenario_id, scenario_name, actor_id, actor_name, message,
       created_at, read_at
FROM notification_feed
WHERE user_id = %(me)s AND read_at IS NULL AND id < coalesce(%(before)s, 9223372036854775807)
ORDER BY id DESC LIMIT %(limit)s;

-- name: feed_page_read
SELECT id, event_type, scenario_id, scenario_name, actor_id, actor_name, message,
       created_at, read_at
FROM notification_feed
WHERE user_id = %(me)s AND read_at IS NOT NULL
  AND id < coalesce(%(before)s, 9223372036854775807)
ORDER BY id DESC LIMIT %(limit)s;

-- name: feed_item
SELECT id, event_type, scenario_id, scenario_name, actor_id, actor_name, message,
       created_at, read_at
FROM notification_feed WHERE user_id = %(me)s AND id = %(id)s;

-- name: unread_count
-- Counted on user_notifications alone: an index-only scan of the partial unread index.
SELECT count(*) AS unread FROM user_notifications WHERE user_id = %(me)s AND read_at IS NULL;

-- name: mark_read
-- Keeps the first read_at: a second mark changes nothing.
UPDATE user_notifications SET read_at = now()
WHERE user_id = %(me)s AND event_id = %(id)s AND read_at IS NULL;

-- name: mark_unread
UPDATE user_notifications SET read_at = NULL
WHERE user_id = %(me)s AND event_id = %(id)s AND read_at IS NOT NULL;

-- name: mark_all_read
-- %(up_to)s NULL marks everything unread; the bound keeps the same index condition.
UPDATE user_notifications SET read_at = now()
WHERE user_id = %(me)s AND read_at IS NULL
  AND event_id <= coalesce(%(up_to)s, 9223372036854775807);

-- name: feed_watermark
-- Taken just before the page's own statement: whatever this snapshot sees, the page saw.
SELECT pg_current_snapshot()::text AS snapshot;

-- name: mark_all_read_watermark
-- Only notifications whose fan-out had committed in the page's snapshot: a lower id that
-- committed later was not shown, so it stays unread (events fanned out before revision
-- 0002 have no fanout_xid and were visible to every page; a redelivery's rows carry
-- their own, sql/v2/stream.sql).
UPDATE user_notifications n SET read_at = now()
FROM scenario_events e
WHERE n.user_id = %(me)s AND n.read_at IS NULL
  AND n.event_id <= coalesce(%(up_to)s, 9223372036854775807)
  AND e.id = n.event_id
  AND (coalesce(n.fanout_xid, e.fanout_xid) IS NULL
       OR pg_visible_in_snapshot(coalesce(n.fanout_xid, e.fanout_xid),
                                 %(snapshot)s::text::pg_snapshot));

-- ============================== API: the stream (notifications/stream/) ==============================

-- name: stream_open
-- A stream's token, and the snapshot it starts from when the client names no position.
SELECT a.user_id, pg_current_snapshot()::text AS snapshot
FROM authenticate_token_v2(%(token_hash)s) a;

-- name: stream_round
-- Every open stream of the process in one statement (sql/v2/stream.sql).
SELECT kind, slot, user_id, snapshot, unread, id, read_at, event_type, scenario_id,
       scenario_name, actor_id, actor_name, message, created_at, fanned_out_at
FROM stream_round_v2(%(token_hashes)s, %(prevs)s, %(nexts)s, %(afters)s, %(recounts)s,
                     %(row_limit)s)
ORDER BY slot NULLS FIRST, id NULLS FIRST;

-- name: stream_listen
LISTEN notification_stream;

-- name: stream_probe
-- To the process's own LISTEN connection: proves it still delivers while the channel is quiet.
SELECT pg_notify(stream_channel_v2(), %(payload)s);

-- ============================== API: preferences (personal) ==============================
-- The subscription rule itself lives in one place, the user_subscriptions view, which the
-- fan-out reads too (event_recipients_v2).

-- With each type's channels; with no channel_preferences row, e-mail is off and webhooks
-- are on (the fan-out applies the same defaults, sql/v2/fanout.sql).

-- name: preference_list
SELECT us.event_type, t.description, us.enabled,
       coalesce(ce.enabled, false) AS email, coalesce(cw.enabled, true) AS webhook
FROM user_subscriptions us JOIN event_types t ON t.name = us.event_type
LEFT JOIN channel_preferences ce
       ON ce.user_id = us.user_id AND ce.event_type = us.event_type AND ce.channel = 'email'
LEFT JOIN channel_preferences cw
       ON cw.user_id = us.user_id AND cw.event_type = us.event_type AND cw.channel = 'webhook'
WHERE us.user_id = %(me)s
ORDER BY us.event_type;

-- name: preference_get
SELECT us.event_type, t.description, us.enabled,
       coalesce(ce.enabled, false) AS email, coalesce(cw.enabled, true) AS webhook
FROM user_subscriptions us JOIN event_types t ON t.name = us.event_type
LEFT JOIN channel_preferences ce
       ON ce.user_id = us.user_id AND ce.event_type = us.event_type AND ce.channel = 'email'
LEFT JOIN channel_preferences cw
       ON cw.user_id = us.user_id AND cw.event_type = us.event_type AND cw.channel = 'webhook'
WHERE us.user_id = %(me)s AND us.event_type = %(event_type)s;

-- name: preference_set
SELECT set_subscription(%(me)s, %(event_type)s, %(enabled)s);

-- name: channel_preference_set
SELECT set_channel_preference(%(me)s, %(event_type)s, %(channel)s, %(enabled)s);

-- name: me_set_email
SELECT set_user_email(%(me)s, %(email)s);

-- ============================== API: webhook endpoints (personal) ==============================
-- The API writes an endpoint's secret once and cannot read it back (sql/v2/roles.sql).

-- name: unknown_event_types
SELECT coalesce(array_agg(x.name ORDER BY x.name), '{}') AS unknown
FROM unnest(%(names)s::text[]) AS x (name)
WHERE NOT EXISTS (SELECT 1 FROM event_types t WHERE t.name = x.name);

-- name: webhook_create
INSERT INTO webhook_endpoints (user_id, url, secret, event_types)
VALUES (%(me)s, %(url)s, %(secret)s, %(event_types)s)
RETURNING id, url, event_types, created_at, disabled_at;

-- name: webhook_list
SELECT id, url, event_types, created_at, disabled_at
FROM webhook_endpoints WHERE user_id = %(me)s ORDER BY id;

-- name: webhook_get
SELECT id, url, event_types, created_at, disabled_at
FROM webhook_endpoints WHERE user_id = %(me)s AND id = %(id)s;

-- name: webhook_delete
DELETE FROM webhook_endpoints WHERE user_id = %(me)s AND id = %(id)s RETURNING id;

-- name: webhook_deliveries_page
-- Newest first, a backward range scan on deliveries_endpoint_idx from the cursor.
SELECT id, event_id, status, attempts, last_error, delivered_at
FROM deliveries
WHERE user_id = %(me)s AND endpoint_id = %(id)s
  AND id < coalesce(%(before)s, 9223372036854775807)
ORDER BY id DESC LIMIT %(limit)s;

-- ============================== API: health ==============================

-- name: schema_revision
SELECT version_num FROM alembic_version;

-- name: scrape_timeout
-- A scrape must not hang on a struggling database.
SET LOCAL statement_timeout = '2s';

-- name: scrape_gauges
SELECT b.unprocessed_events,
       extract(epoch FROM b.oldest_age)::double precision AS oldest_age_seconds,
       (SELECT count(DISTINCT a.listener_pid) FROM listener_activity a) AS listeners
FROM notification_backlog b;

-- ============================== listener ==============================

-- name: listen_channel
SELECT event_channel_v2() AS channel;

-- name: listener_session
-- The listener's own limits, whatever ALTER ROLE or ALTER DATABASE set (milliseconds).
SELECT set_config('statement_timeout', %(statement_timeout_ms)s::text, false),
       set_config('lock_timeout', %(lock_timeout_ms)s::text, false),
       set_config('idle_in_transaction_session_timeout', '0', false),
       set_config('default_transaction_isolation', 'read committed', false),
       set_config('default_transaction_read_only', 'off', false);

-- name: backend_pid
SELECT pg_backend_pid();

-- name: fan_out
SELECT event_id, notifications, lag_seconds
FROM fan_out_events_v2(%(batch_size)s::integer, %(row_budget)s::bigint);

-- name: next_event
SELECT next_event_v2();

-- name: fan_out_event
SELECT event_id, notifications, lag_seconds
FROM fan_out_events_v2(1, %(row_budget)s::bigint, %(event_id)s::bigint);

-- name: record_fanout_failure
SELECT record_fanout_failure_v2(%(event_id)s, %(error)s, %(max_attempts)s);

-- name: finish_user_deletions
SELECT finish_user_deletions_v2();

-- name: backlog_count
SELECT b.unprocessed_events, b.set_aside_events FROM notification_backlog b;

-- name: probe
-- To our own LISTEN connection: proves it still delivers while the channel is quiet.
SELECT pg_notify(%(channel)s, '');

-- ============================== CLI and operators ==============================
-- Thin calls of the admin functions (sql/v1/admin.sql), so psql and the CLI behave alike.

-- name: create_user
SELECT create_user(%(name)s, %(email)s, %(is_admin)s);

-- name: issue_token
SELECT issue_token(%(user_id)s);

-- name: issue_expiring_token
SELECT issue_token(%(user_id)s, %(valid_for)s::interval);

-- name: revoke_tokens
SELECT revoke_tokens(%(user_id)s);

-- name: set_subscription
SELECT set_subscription(%(user_id)s, %(event_type)s, %(enabled)s);

-- name: purge_read_notifications
SELECT purge_read_notifications(%(older_than)s::interval);

-- name: redeliver_event
SELECT redeliver_event(%(event_id)s);

-- name: delete_user
SELECT delete_user(%(user_id)s);

-- name: retry_delivery
SELECT retry_delivery(%(id)s);

-- name: replay_endpoint_deliveries
SELECT replay_endpoint_deliveries(%(endpoint_id)s, %(since)s, %(until)s);

-- name: purge_processed_events
SELECT purge_processed_events(%(older_than)s::interval);

-- name: purge_deleted_scenarios
SELECT purge_deleted_scenarios(%(older_than)s::interval);

-- name: purge_unread_notifications
SELECT purge_unread_notifications(%(older_than)s::interval, %(keep_per_user)s::integer);

-- name: user_id_by_name
SELECT id FROM users WHERE name = %(name)s;

-- name: backlog
SELECT unprocessed_events, oldest_event_id, oldest_occurred_at,
       extract(epoch FROM oldest_age)::double precision AS oldest_age_seconds,
       set_aside_events, failing_events
FROM notification_backlog;

-- name: listeners
SELECT listener_pid, connection, pid, host(client_addr) AS client_addr, backend_start, state,
       last_query_at
FROM listener_activity ORDER BY listener_pid, connection;

-- ============================== deliverer ==============================
-- `notifications deliver` (notifications/delivery/worker.py). A claim leases due rows by
-- moving next_attempt_at past the lease and counts the try; the send happens after its
-- commit, and its outcome is recorded by deliver_record in a second short transaction.

-- name: deliver_channel
SELECT delivery_channel_v2() AS channel;

-- name: deliver_session
SELECT set_config('statement_timeout', '30000', false),
       set_config('lock_timeout', '5000', false),
       set_config('idle_in_transaction_session_timeout', '0', false),
       set_config('default_transaction_isolation', 'read committed', false),
       set_config('default_transaction_read_only', 'off', false);

-- name: deliver_claim
-- Everything a send needs comes back with the claim: the notification as the API renders
-- it (notification_feed), the endpoint, the address.
WITH due AS (
    SELECT user_id, id FROM deliveries
    WHERE status = 'pending' AND next_attempt_at <= now() AND channel = ANY(%(channels)s)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d
    SET next_attempt_at = now() + make_interval(secs => %(lease)s), attempts = d.attempts + 1
    FROM due
    WHERE d.user_id = due.user_id AND d.id = due.id
    RETURNING d.user_id, d.id, d.event_id, d.channel, d.endpoint_id, d.attempts
)
SELECT c.user_id, c.id, c.event_id, c.channel, c.endpoint_id, c.attempts,
       f.id IS NOT NULL AS found, f.event_type, f.scenario_id, f.scenario_name, f.actor_id,
       f.actor_name, f.message, f.created_at, f.read_at,
       w.url, w.secret, w.disabled_at,
       u.email
FROM claimed c
LEFT JOIN notification_feed f ON f.user_id = c.user_id AND f.id = c.event_id
LEFT JOIN webhook_endpoints w ON w.user_id = c.user_id AND w.id = c.endpoint_id
LEFT JOIN users u ON u.id = c.user_id;

-- name: deliver_next_due
-- Seconds until the next pending delivery comes due (null: none pending).
SELECT extract(epoch FROM min(next_attempt_at) - now())::double precision AS seconds
FROM deliveries WHERE status = 'pending' AND channel = ANY(%(channels)s);

-- name: deliver_record
-- Outcomes of many tries at once: 'delivered', 'retry' (after delay seconds) or 'dead'.
-- A failure is recorded only by the try that holds the row's latest claim: a deliverer
-- whose lease ran out (the row was claimed again since) must not undo the newer claim;
-- a success always counts.
WITH r AS (
    SELECT * FROM unnest(%(user_ids)s::bigint[], %(ids)s::bigint[], %(attempts)s::integer[],
                         %(outcomes)s::text[], %(delays)s::double precision[],
                         %(errors)s::text[])
        AS r(user_id, id, attempts, outcome, delay, error)
)
UPDATE deliveries d
SET status = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
    delivered_at = CASE WHEN r.outcome = 'delivered' THEN now() END,
    next_attempt_at = CASE WHEN r.outcome = 'retry'
                           THEN now() + make_interval(secs => r.delay)
                           ELSE d.next_attempt_at END,
    last_error = CASE WHEN r.outcome = 'delivered' THEN NULL ELSE r.error END
FROM r
WHERE d.user_id = r.user_id AND d.id = r.id AND d.status = 'pending'
  AND (r.outcome = 'delivered' OR d.attempts = r.attempts);

-- name: deliver_log_attempts
INSERT INTO delivery_attempts (user_id, delivery_id, started_at, duration_ms, http_status,
                               smtp_reply, error)
SELECT t.* FROM unnest(%(user_ids)s::bigint[], %(ids)s::bigint[], %(started)s::timestamptz[],
                       %(durations)s::double precision[], %(statuses)s::integer[],
                       %(replies)s::text[], %(errors)s::text[])
    AS t (user_id, delivery_id, started_at, duration_ms, http_status, smtp_reply, error)
-- Not for a delivery removed meanwhile (its endpoint or user deleted): no orphan tries.
WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.user_id = t.user_id AND d.id = t.delivery_id);

-- name: deliver_disable_endpoint
-- 410 Gone: the receiver asked for no more; its pending deliveries end with it.
WITH off AS (
    UPDATE webhook_endpoints SET disabled_at = coalesce(disabled_at, now()),
                                 disabled_reason = coalesce(disabled_reason, %(reason)s)
    WHERE user_id = %(user_id)s AND id = %(endpoint_id)s
    RETURNING user_id, id
)
UPDATE deliveries d SET status = 'dead', last_error = %(reason)s
FROM off
WHERE d.user_id = off.user_id AND d.endpoint_id = off.id AND d.status = 'pending';

-- name: unsubscribe_as
-- The API's role sees only the rows of the user its request is for (row-level security).
SELECT set_config('notifications.user_id', %(user_id)s::text, true);

-- name: deliver_unsubscribe
-- POST /unsubscribe/TOKEN (API, after act_as): that user's e-mail for that event type off.
INSERT INTO channel_preferences (user_id, event_type, channel, enabled)
SELECT %(user_id)s, name, %(channel)s, false FROM event_types
WHERE name = %(event_type)s AND EXISTS (SELECT 1 FROM users WHERE id = %(user_id)s)
ON CONFLICT (user_id, event_type, channel)
DO UPDATE SET enabled = false, updated_at = now()
RETURNING event_type;
