"""Read-all with a page's watermark (issue 11, item 13): event ids are assigned at insert and
fan-outs commit out of order, so "up to the highest id shown" would mark a lower-id
notification that committed after the page was read. The watermark marks only what the
page could see."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.api.conftest import Caller, error_of


def _feed(caller: Caller, **params: Any) -> Any:
    response = caller.get("/api/v1/notifications", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _unread_ids(caller: Caller) -> list[int]:
    return [n["id"] for n in _feed(caller, status="unread")["items"]]


def test_every_page_carries_a_watermark(
    alice: Caller, bob: Caller, fan_out: Callable[[], int]
) -> None:
    assert isinstance(_feed(bob)["watermark"], str)  # empty feed too
    for i in range(3):
        alice.post("/api/v1/scenarios", json={"name": f"S{i}"})
    fan_out()
    first = _feed(bob, limit=2)
    second = _feed(bob, limit=2, cursor=first["next_cursor"])
    assert first["watermark"] and second["watermark"]
    # Everything shown was visible to the watermark: read-all with it marks all of it.
    response = bob.post("/api/v1/notifications/read-all", json={"watermark": second["watermark"]})
    assert response.get_json() == {"updated": 3}


def test_a_lower_id_committed_after_the_page_stays_unread(
    alice: Caller, bob: Caller, database_url: str, db: psycopg.Connection[Any]
) -> None:
    early = alice.post("/api/v1/scenarios", json={"name": "Early id"}).get_json()["id"]
    alice.post("/api/v1/scenarios", json={"name": "Later id"})
    events = [r[0] for r in db.execute("SELECT id FROM scenario_events ORDER BY id")]
    assert len(events) == 2 and early

    with psycopg.connect(database_url) as held:
        # The lower id's fan-out runs but does not commit yet ...
        rows = held.execute("SELECT event_id FROM fan_out_events_v2(1)").fetchall()
        assert [r[0] for r in rows] == [events[0]]
        # ... while another fan-out commits the higher one.
        while db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall():
            pass
        page = _feed(bob)
        assert [n["id"] for n in page["items"]] == [events[1]]
        held.commit()

    # The late one is there now, with the lower id.
    assert _unread_ids(bob) == [events[1], events[0]]
    shown_max = max(n["id"] for n in page["items"])
    response = bob.post(
        "/api/v1/notifications/read-all",
        json={"watermark": page["watermark"], "up_to": shown_max},
    )
    assert response.get_json() == {"updated": 1}
    assert _unread_ids(bob) == [events[0]]

    # A watermark alone (no up_to) is bounded by what it saw, too.
    bob.post(f"/api/v1/notifications/{events[1]}/unread")
    response = bob.post("/api/v1/notifications/read-all", json={"watermark": page["watermark"]})
    assert response.get_json() == {"updated": 1}
    assert _unread_ids(bob) == [events[0]]

    # A newer page sees it; its watermark marks it.
    fresh = _feed(bob)["watermark"]
    response = bob.post("/api/v1/notifications/read-all", json={"watermark": fresh})
    assert response.get_json() == {"updated": 1}
    assert _unread_ids(bob) == []


def _wm(snapshot: str) -> str:
    return "w1." + base64.urlsafe_b64encode(snapshot.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "watermark",
    [
        "",
        "nonsense",
        "w1.",
        "w1.!!!!",
        _wm("not a snapshot"),
        _wm("10:5:"),  # xmin after xmax
        _wm("5:10:12"),  # in progress beyond xmax
        _wm("5:10:7,6"),  # not in order
        _wm("5:10:6,6"),
        _wm("0:10:"),
        _wm("5:99999999999999999999:"),
        _wm("5:10:\u0661"),  # a non-ASCII digit
    ],
)
def test_a_bad_watermark_is_422(bob: Caller, watermark: str) -> None:
    response = bob.post("/api/v1/notifications/read-all", json={"watermark": watermark})
    assert error_of(response, 422) == "invalid"


def test_a_watermark_only_marks_the_callers_own(
    alice: Caller, bob: Caller, caller: Callable[..., Caller], fan_out: Callable[[], int]
) -> None:
    carol = caller("carol")
    alice.post("/api/v1/scenarios", json={"name": "S"})
    fan_out()
    watermark = _feed(bob)["watermark"]
    response = carol.post("/api/v1/notifications/read-all", json={"watermark": watermark})
    assert response.get_json() == {"updated": 1}
    assert len(_unread_ids(bob)) == 1
