-- Revision 0002 down: undoes sql/v2/stream.sql.
DROP FUNCTION stream_round_v2(bytea[], text[], text[], bigint[], boolean[], integer);
DROP TRIGGER user_notifications_read_hint ON user_notifications;
DROP TRIGGER user_notifications_delete_hint ON user_notifications;
DROP FUNCTION user_notifications_read_hint_v2(), stream_channel_v2();
DROP INDEX scenario_events_fanout_xid_idx;
DROP INDEX user_notifications_fanout_xid_idx;
ALTER TABLE user_notifications DROP COLUMN fanout_xid;
