"""Trigger functions on test_scenarios; see docs/migrations.md for the freezing rule."""
