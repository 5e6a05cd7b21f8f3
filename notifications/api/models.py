"""The API's request and response shapes: they validate requests and generate the spec."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from notifications.feed import iso

# Ids are PostgreSQL bigints; anything outside that range cannot name a row.
BIGINT_MAX = 2**63 - 1


def _whole_number(value: object) -> object:
    # JSON has one number type: 7.0 is the integer 7 (as JSON Schema says), 7.5 is not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Id = Annotated[int, Field(ge=1, le=BIGINT_MAX), BeforeValidator(_whole_number)]

# PostgreSQL text cannot hold NUL, so NUL is an invalid value (422), never a database error.
# The patterns are written for both pydantic's linear-time engine and JSON Schema generators.
NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"


def _format_characters() -> str:
    """Unicode's format characters (Cf: bidi overrides, zero-width characters) as a regex
    class body, from this Python's Unicode database."""
    ranges: list[list[int]] = []
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)) == "Cf":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])

    def esc(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


# Names and descriptions are shown to other people: control and format characters could
# reorder or hide what they read (a bidi override, a zero-width-only name), so they are
# invalid values. A description may keep line breaks and tabs. Written as classes, which
# both pydantic's engine and JSON Schema generators read.
_CF = _format_characters()
_NAME_BAD = r"\u0000-\u001f\u007f-\u009f" + _CF
_TEXT_BAD = r"\u0000-\u0008\u000b-\u001f\u007f-\u009f" + _CF
SAFE_NAME = rf"^[^{_NAME_BAD}]*[^\s{_NAME_BAD}][^{_NAME_BAD}]*$"
SAFE_TEXT = rf"^[^{_TEXT_BAD}]*$"


Timestamp = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Request(BaseModel):
    """A JSON body: types are strict (a string is not a number) and unknown fields are errors."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Query(BaseModel):
    """Query strings are text by nature, so numbers are parsed from them; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests

# A page's watermark is its database snapshot; its in-progress list grows with concurrent
# writers, so the bound is generous.
WATERMARK_MAX = 20000


class ScenarioCreate(Request):
    name: str = Field(min_length=1, max_length=200, pattern=SAFE_NAME)
    description: str = Field(default="", max_length=5000, pattern=SAFE_TEXT)


class ExecutionCreate(Request):
    status: Literal["passed", "failed"]


class ReadAll(Request):
    up_to: Id | None = Field(
        default=None, description="Mark only notifications whose id is at most this one."
    )
    watermark: str | None = Field(
        default=None,
        min_length=1,
        max_length=WATERMARK_MAX,
        pattern=r"^w1\.[A-Za-z0-9_-]+$",
        description=(
            "The watermark of the feed page the user saw: only notifications visible to that"
            " page are marked, even if one with a lower id committed later. Opaque."
        ),
    )


# The shape email_is_valid_v2 (sql/v2/access.sql) checks, so that the document says which
# addresses are accepted; the database checks again.
EMAIL = (
    r"^[A-Za-z0-9.!#$&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class MeUpdate(Request):
    email: str | None = Field(
        max_length=254, pattern=EMAIL, description="Your e-mail address, or null to clear it."
    )


CHANNELS = Literal["email", "webhook"]
# The default of an optional field that must not be null when given: pydantic does not
# validate defaults, so only an explicit null meets the strict type (and is refused).
UNSET: Any = None


class PreferenceUpdate(Request):
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    # Optional, never null (the handler reads model_fields_set).
    enabled: bool = Field(default=UNSET, description="The in-app feed.")
    channels: dict[CHANNELS, bool] = Field(
        default=UNSET, min_length=1, description="E-mail, your webhook endpoints, or both."
    )

    @model_validator(mode="after")
    def _something(self) -> PreferenceUpdate:
        if not self.model_fields_set:
            raise ValueError('give "enabled", "channels" or both')
        return self


EVENT_TYPE = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]


class WebhookCreate(Request):
    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^\s\x00-\x1f\x7f]+$",
        description="http(s); public addresses only unless the server allows private ones.",
    )
    event_types: list[EVENT_TYPE] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="The event types to send; absent or null for all.",
    )


class DeliveryQuery(Query):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(
        default=None, max_length=200, description="next_cursor of the previous page; opaque."
    )


class FeedQuery(Query):
    status: Literal["unread", "read", "all"] = "all"
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(
        default=None,
        max_length=200,
        description="next_cursor of the previous page; opaque.",
    )


# Responses


class ErrorDetail(Response):
    code: str
    message: str


class Error(Response):
    error: ErrorDetail


class Me(Response):
    id: int
    name: str
    email: str | None
    is_admin: bool


class Scenario(Response):
    id: int
    name: str
    description: str
    created_by: int | None
    created_at: Timestamp
    last_executed_at: Timestamp | None
    last_status: Literal["passed", "failed"] | None


class ScenarioList(Response):
    items: list[Scenario]


class Ref(Response):
    id: int
    name: str


class Notification(Response):
    id: int
    event_type: str
    scenario: Ref
    actor: Ref | None
    message: str
    created_at: Timestamp
    read_at: Timestamp | None


class NotificationPage(Response):
    items: list[Notification]
    next_cursor: str | None
    watermark: str = Field(
        description="What this page could see; send it to read-all to mark only that. Opaque."
    )


class UnreadCount(Response):
    unread: int


class Updated(Response):
    updated: int


class Channels(Response):
    email: bool
    webhook: bool


class Preference(Response):
    event_type: str
    description: str
    enabled: bool
    channels: Channels


class Endpoint(Response):
    id: int
    url: str
    event_types: list[str] | None
    created_at: Timestamp
    disabled_at: Timestamp | None


class EndpointCreated(Endpoint):
    secret: str = Field(
        description="whsec_ + base64: verify our signatures with it. Shown only here, once."
    )


class EndpointList(Response):
    items: list[Endpoint]


class Delivery(Response):
    id: int
    event_id: int
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    last_error: str | None
    delivered_at: Timestamp | None


class DeliveryPage(Response):
    items: list[Delivery]
    next_cursor: str | None


class PreferenceList(Response):
    items: list[Preference]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    revision: str | None = None
    reason: str | None = None
