-- Revision 0002 down: the triggers go back to their v1 functions, then the v2 objects go.
CREATE OR REPLACE TRIGGER scenario_events_insert AFTER INSERT ON test_scenarios REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_insert_v1();
CREATE OR REPLACE TRIGGER scenario_events_update AFTER UPDATE ON test_scenarios REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_update_v1();
CREATE OR REPLACE TRIGGER scenario_events_delete AFTER DELETE ON test_scenarios REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_delete_v1();
CREATE OR REPLACE TRIGGER scenario_events_truncate BEFORE TRUNCATE ON test_scenarios FOR EACH STATEMENT EXECUTE FUNCTION scenario_events_on_truncate_v1();
DROP FUNCTION scenario_events_on_insert_v2(), scenario_events_on_update_v2(),
    scenario_events_on_removal_v2(),
    wake_listeners_v2(boolean, boolean), backlog_is_empty_v2(),
    fan_out_events_v2(integer, bigint), event_recipients_v2(text, bigint), event_channel_v2();
