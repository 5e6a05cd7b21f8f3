"""Watermarks and stream positions: database snapshots, opaque to clients.

Event ids are assigned at insert and fan-outs commit out of order, so no id can say "every
notification up to here". A snapshot can: a notification is covered by a snapshot when
the transaction that fanned its event out (`scenario_events.fanout_xid`) is visible in it.

- A feed page's `watermark` is the snapshot the page was read in (`w1.` + the snapshot).
- A stream position is what a stream has sent: every notification `prev` covers, and those
  `next` covers with an id up to `after`. A round that sent everything new ends on a
  complete position (`next` is None), written exactly as a watermark; a round cut short by
  its row limit ends on a partial one (`p1.` + prev|next|after), resumed by id within
  `next`. So a feed page's watermark is also a valid place to start a stream: the inbox
  reads a page, then streams everything committed after it.

Not signed: a made-up position can only make a user's own stream resend or skip their own
notifications. Decoding checks it is a snapshot PostgreSQL could have produced.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

_WATERMARK = "w1."
_PARTIAL = "p1."
_SNAPSHOT = re.compile(r"([0-9]{1,19}):([0-9]{1,19}):((?:[0-9]{1,19})(?:,[0-9]{1,19})*)?")
_BIGINT_MAX = 2**63 - 1


class BadPosition(ValueError):
    """Not a watermark or stream position this API wrote."""


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(encoded: str) -> str:
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise BadPosition from None


def check_snapshot(snapshot: str) -> str:
    """The pg_snapshot text, if it is one PostgreSQL would produce."""
    match = _SNAPSHOT.fullmatch(snapshot)
    if match is None:
        raise BadPosition
    xmin, xmax = int(match.group(1)), int(match.group(2))
    xip = [int(x) for x in match.group(3).split(",")] if match.group(3) else []
    if not (
        1 <= xmin <= xmax <= _BIGINT_MAX
        and all(xmin <= x < xmax for x in xip)
        and xip == sorted(set(xip))
    ):
        raise BadPosition
    return snapshot


def encode_watermark(snapshot: str) -> str:
    return _WATERMARK + _b64(snapshot)


def decode_watermark(watermark: str) -> str:
    """The snapshot of a watermark (BadPosition if it is not one)."""
    if not watermark.startswith(_WATERMARK):
        raise BadPosition
    return check_snapshot(_unb64(watermark[len(_WATERMARK) :]))


@dataclass(frozen=True, slots=True)
class Position:
    prev: str
    next: str | None = None
    after: int = 0

    @property
    def complete(self) -> bool:
        return self.next is None

    def encode(self) -> str:
        if self.next is None:
            return encode_watermark(self.prev)
        return _PARTIAL + _b64(f"{self.prev}|{self.next}|{self.after}")

    @classmethod
    def decode(cls, text: str) -> Position:
        if len(text) > 4096:
            raise BadPosition
        if text.startswith(_WATERMARK):
            return cls(decode_watermark(text))
        if not text.startswith(_PARTIAL):
            raise BadPosition
        parts = _unb64(text[len(_PARTIAL) :]).split("|")
        if len(parts) != 3 or not parts[2].isdigit() or len(parts[2]) > 19:
            raise BadPosition
        after = int(parts[2])
        if not 1 <= after <= _BIGINT_MAX:
            raise BadPosition
        return cls(check_snapshot(parts[0]), check_snapshot(parts[1]), after)
