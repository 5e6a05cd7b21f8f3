-- Revision 0002 down: undoes sql/v2/delivery.sql.
DROP TABLE delivery_attempts, deliveries, webhook_endpoints, channel_preferences;
