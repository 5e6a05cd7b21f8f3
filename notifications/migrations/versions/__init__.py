"""Alembic revisions. Each applies frozen, versioned SQL files (see docs/migrations.md)."""
