-- Released with revision 0001. Frozen: never edit, add a v2 file and a new revision.
DROP VIEW IF EXISTS listener_activity, user_subscriptions, user_overview, notification_backlog,
    notification_feed;
DROP TABLE IF EXISTS user_notifications, scenario_events, subscriptions, test_scenarios,
    event_types, api_tokens, users CASCADE;
DROP FUNCTION IF EXISTS
    fan_out_events_v1(integer), event_recipients_v1(text, bigint), create_user(text), require_user_v1(bigint), token_hash_v1(text),
    issue_token(bigint), revoke_tokens(bigint), authenticate_token_v1(text),
    set_subscription(bigint, text, boolean), purge_read_notifications(interval),
    redeliver_event(bigint), delete_user(bigint), notification_message_v1(text, text, text, text),
    current_actor_v1(), scenario_events_on_insert_v1(),
    scenario_events_on_update_v1(),
    scenario_events_on_delete_v1(), scenario_events_on_truncate_v1(),
    users_delete_notifications_v1(), fan_out_lock_key_v1();
