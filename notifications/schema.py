"""The tables as SQLAlchemy Core sees them.

The migrations (frozen SQL files) are the source of truth; a test compares the migrated
database with this metadata, so code and schema cannot drift apart unnoticed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "user_id",
        BigInteger,
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    Index("api_tokens_user_id_idx", "user_id"),
)

event_types = Table(
    "event_types",
    metadata,
    Column("name", Text, primary_key=True),
    Column("description", Text, nullable=False),
    Column("default_enabled", Boolean, nullable=False, server_default=text("true")),
)

test_scenarios = Table(
    "test_scenarios",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("created_by", BigInteger, ForeignKey("users.id", ondelete="SET NULL")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_executed_at", DateTime(timezone=True)),
    Column("last_status", Text),
    Column("deleted_at", DateTime(timezone=True)),
    Index("test_scenarios_live_idx", "id", postgresql_where=text("deleted_at IS NULL")),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("event_type", Text, ForeignKey("event_types.name", ondelete="CASCADE"), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "event_type"),
    Index(
        "subscriptions_event_type_idx",
        "event_type",
        "user_id",
        postgresql_include=["enabled"],
    ),
)

scenario_events = Table(
    "scenario_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("scenario_id", BigInteger, nullable=False),
    Column("scenario_name", Text, nullable=False),
    Column("status", Text),
    Column("actor_id", BigInteger),
    Column(
        "occurred_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.clock_timestamp(),
    ),
    Column("processed_at", DateTime(timezone=True)),
    Column("fanout_count", Integer),
    Index("scenario_events_backlog_idx", "id", postgresql_where=text("processed_at IS NULL")),
)

user_notifications = Table(
    "user_notifications",
    metadata,
    Column("user_id", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("read_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("user_id", "event_id", name="user_notifications_pkey"),
    Index(
        "user_notifications_unread_idx",
        "user_id",
        "event_id",
        postgresql_where=text("read_at IS NULL"),
    ),
)
