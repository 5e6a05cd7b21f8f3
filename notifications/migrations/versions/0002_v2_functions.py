"""v2 functions: the fan-out reads the one subscription rule, triggers share one wake-up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from notifications.migrations.apply import apply_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(
        "sql/v2/fanout.sql",
        "triggers/scenario_events.v2.sql",
        "sql/v2/queue.sql",
        "sql/v2/access.sql",
        "sql/v2/delivery.sql",
        "sql/v2/stream.sql",
        # Last: it grants on, and hardens, everything the files above created.
        "sql/v2/roles.sql",
    )


def downgrade() -> None:
    apply_sql(
        "sql/v2/roles.down.sql",
        "sql/v2/stream.down.sql",
        "sql/v2/delivery.down.sql",
        "sql/v2/access.down.sql",
        "sql/v2/queue.down.sql",
        "sql/v2/downgrade.sql",
    )
