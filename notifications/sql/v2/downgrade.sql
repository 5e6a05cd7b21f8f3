-- Revision 0002 down: the triggers go back to their v1 functions, then the v2 objects go.
CREATE OR REPLACE TRIGGER scenario_events_insert AFTER INSERT ON test_scenarios REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_insert_v1();
CREATE OR REPLACE TRIGGER scenario_events_update AFTER UPDATE ON test_scenarios REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_update_v1();
CREATE OR REPLACE TRIGGER scenario_events_delete AFTER DELETE ON test_scenarios REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_delete_v1();
CREATE OR REPLACE TRIGGER scenario_events_truncate BEFORE TRUNCATE ON test_scenarios FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_truncate_v1();
CREATE OR REPLACE TRIGGER users_delete_notifications AFTER DELETE ON users REFERENCING OLD TABLE AS old_users FOR EACH STATEMENT EXECUTE FUNCTION users_delete_notifications_v1();
DROP TRIGGER scenario_events_wake ON scenario_events;
DROP SEQUENCE scenario_events_woken_at_v2;
DROP FUNCTION scenario_events_on_insert_v2(), scenario_events_on_update_v2(),
    scenario_events_on_removal_v2(), wake_listeners_v2(),
    fan_out_events_v2(integer, bigint, bigint), next_event_v2(),
    record_fanout_failure_v2(bigint, text, integer),
    finish_user_deletions_v2(), users_delete_notifications_v2(),
    event_recipients_v2(text, bigint), event_channel_v2();
DROP TABLE user_deletions;
CREATE INDEX scenario_events_backlog_idx ON scenario_events (id) WHERE processed_at IS NULL;
DROP INDEX scenario_events_waiting_idx, scenario_events_set_aside_idx;
ALTER TABLE scenario_events
    DROP COLUMN fanout_attempts, DROP COLUMN fanout_error, DROP COLUMN failed_at;
