-- Revision 0002 down: undoes sql/v2/delivery.sql.
DROP VIEW dead_deliveries, delivery_backlog;
DROP FUNCTION replay_endpoint_deliveries(bigint, timestamptz, timestamptz),
    retry_delivery(bigint), set_channel_preference(bigint, text, text, boolean),
    set_user_email(bigint, text), delivery_channel_v2();
DROP TABLE delivery_attempts, deliveries, webhook_endpoints, channel_preferences;
DROP FUNCTION webhook_endpoints_delete_deliveries_v2();
