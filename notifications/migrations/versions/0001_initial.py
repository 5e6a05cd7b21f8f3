"""Initial schema: tables, triggers, fan-out and admin functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from notifications.migrations.apply import apply_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(
        "sql/v1/tables.sql",
        "triggers/scenario_events.v1.sql",
        "sql/v1/fanout.sql",
        "sql/v1/admin.sql",
    )


def downgrade() -> None:
    apply_sql("sql/v1/downgrade.sql")
