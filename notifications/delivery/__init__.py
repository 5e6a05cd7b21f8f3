"""`notifications deliver`: sends the outbox (`deliveries`) as e-mail and signed webhooks."""
