"""When a failed delivery is tried again: the Standard Webhooks schedule, with jitter."""

from __future__ import annotations

import random

# A receiver's Retry-After is honoured up to this; beyond it the schedule decides.
MAX_RETRY_AFTER = 86400.0


def next_delay(
    schedule: tuple[float, ...], attempts: int, retry_after: float | None = None
) -> float | None:
    """Seconds before the next try after `attempts` tries failed, or None: dead.

    schedule[k] is the wait before try k+1 (schedule[0], "now", is the first try's).
    Jitter of up to +20% spreads the retries of a burst that failed together; it never
    shortens a wait, so a retry never comes earlier than the schedule (or Retry-After) says.
    """
    if attempts >= len(schedule):
        return None
    base = max(schedule[attempts], 0.001)
    if retry_after is not None:
        base = max(base, min(retry_after, MAX_RETRY_AFTER))
    return base * random.uniform(1.0, 1.2)
