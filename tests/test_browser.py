"""The web inbox at `/`, driven in Debian's Chromium through Playwright against a live server
(the serve app under uvicorn, stream included), a real database and an in-process listener."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Locator, Page, Request, expect, sync_playwright

from tests.conftest import wait_until
from tests.live import Live, start_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Generous: the stream brings things in well under a second, polling within 2 s; the machine
# is shared and slow at times.
LIVE = 10_000
STREAM = "**/api/v1/stream"
# Records, in the page, when each notification first shows (by scenario name) and every text
# the stream status had: Date.now() of the DOM change, not of Playwright's next look.
WATCH_PAGE = """() => {
  window.__seen = {};
  window.__statuses = [];
  const status = document.querySelector('[data-testid="stream-status"]');
  const look = () => {
    const now = Date.now();
    if (window.__statuses[window.__statuses.length - 1] !== status.textContent) {
      window.__statuses.push(status.textContent);
    }
    for (const item of document.querySelectorAll('[data-testid="notification"]')) {
      const name = /'([^']+)'/.exec(item.textContent);
      if (name && !(name[1] in window.__seen)) window.__seen[name[1]] = now;
    }
  };
  new MutationObserver(look).observe(document.body, {
    subtree: true, childList: true, characterData: true,
  });
  look();
}"""


@dataclass
class PageWatch:
    """What the page reported on its own: uncaught errors and console errors."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def live(database_url: str) -> Iterator[Live]:
    """The serve app as `notifications serve` runs it, so that /api/v1/stream exists."""
    server = start_server(database_url)
    yield server
    server.stop()


def watched(page: Page, watch: PageWatch) -> Page:
    page.set_default_timeout(LIVE)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: watch.console.append(msg.text) if msg.type == "error" else None,
    )
    return page


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, PageWatch]]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    watch = PageWatch()
    page = watched(context.new_page(), watch)
    yield page, watch
    context.close()
    assert watch.errors == [], "uncaught errors in the page"
    assert not [m for m in watch.console if "Content Security Policy" in m], watch.console


def token_for(db: psycopg.Connection[Any], user_id: int) -> str:
    row = db.execute("SELECT issue_token(%s)", [user_id]).fetchone()
    assert row is not None
    return str(row[0])


def client_as(live: Live, token: str) -> Callable[..., Any]:
    """A JSON caller for the API as the given user, over HTTP to the same server."""

    def call(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = httpx.request(
            method,
            live.url + "/api/v1" + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=LIVE / 1000,
        )
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    return call


def create_as(db: psycopg.Connection[Any], actor_id: int, name: str) -> float:
    """A scenario created by another user, straight in the database (as any writer of the
    product's tables would); the time.time() of its commit."""
    with db.transaction():
        db.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(actor_id)])
        db.execute(
            "INSERT INTO test_scenarios (name, created_by) VALUES (%s, %s)", [name, actor_id]
        )
    return time.time()


def requests_to(page: Page, fragment: str) -> list[Request]:
    """The page's requests whose URL contains `fragment`, from now on."""
    seen: list[Request] = []

    def note(request: Request) -> None:
        if fragment in request.url:
            seen.append(request)

    page.on("request", note)
    return seen


def assert_every_item_has_mark_as_read(items: Locator) -> None:
    """The contract: a "Mark as read" button on each notification, read or not; disabled
    on read ones, which offer "Mark as unread" instead."""
    count = items.count()
    assert count > 0
    for i in range(count):
        item = items.nth(i)
        mark_read = item.get_by_role("button", name="Mark as read", exact=True)
        mark_unread = item.get_by_role("button", name="Mark as unread", exact=True)
        expect(mark_read).to_be_visible()
        if item.get_attribute("data-unread") == "true":
            expect(mark_read).to_be_enabled()
            expect(mark_unread).to_be_hidden()
        else:
            expect(mark_read).to_be_disabled()
            expect(mark_read).to_have_attribute("aria-disabled", "true")
            expect(mark_unread).to_be_visible()


def sign_in(page: Page, live: Live, token: str) -> None:
    page.goto(live.url + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_bob_follows_alice_live(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    start_listener: Callable[..., Any],
) -> None:
    browser_page, _ = page
    alice_id, bob_id = make_user("alice"), make_user("bob")
    alice = client_as(live, token_for(db, alice_id))
    start_listener()

    sign_in(browser_page, live, token_for(db, bob_id))
    expect(browser_page.locator("#whoami")).to_have_text("bob")
    badge = browser_page.get_by_test_id("unread-count")
    items = browser_page.get_by_test_id("notification")
    expect(badge).to_have_text("0")
    expect(browser_page.get_by_text("No notifications yet.")).to_be_visible()
    expect(browser_page.get_by_label("scenario.executed", exact=True)).to_be_checked()

    # Alice works; bob's page follows without a reload.
    scenario = alice("POST", "/scenarios", {"name": "Checkout"}, status=201)
    alice("POST", f"/scenarios/{scenario['id']}/executions", {"status": "failed"}, status=201)
    expect(items).to_have_count(2, timeout=LIVE)
    expect(badge).to_have_text("2")
    expect(items.nth(0)).to_contain_text("alice executed scenario 'Checkout': failed")
    expect(items.nth(0)).to_contain_text("scenario.executed")
    expect(items.nth(1)).to_contain_text("scenario.created")
    for i in range(2):
        expect(items.nth(i)).to_have_attribute("data-unread", "true")
        expect(items.nth(i).get_by_role("button", name="Mark as read")).to_be_enabled()
        expect(items.nth(i).get_by_role("button", name="Mark as unread")).to_be_hidden()
    # The scenarios panel follows other people's changes too.
    expect(browser_page.get_by_test_id("scenario")).to_contain_text(["Checkout"])

    ARTIFACTS.mkdir(exist_ok=True)
    # Mark one read from the keyboard: the badge drops and the item is no longer marked.
    newest = items.nth(0)
    newest.get_by_role("button", name="Mark as read").focus()
    browser_page.keyboard.press("Enter")
    expect(badge).to_have_text("1")
    expect(newest).to_have_attribute("data-unread", "false")
    expect(newest.get_by_role("button", name="Mark as unread")).to_be_focused()
    mark_read = newest.get_by_role("button", name="Mark as read")
    expect(mark_read).to_be_disabled()
    expect(mark_read).to_have_attribute("aria-disabled", "true")
    expect(items.nth(1)).to_have_attribute("data-unread", "true")
    assert_every_item_has_mark_as_read(items)
    browser_page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)

    # Mark all as read covers only what is on screen: up to the newest id shown.
    shown = [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.id)")]
    with browser_page.expect_request("**/api/v1/notifications/read-all") as request:
        browser_page.get_by_role("button", name="Mark all as read").click()
    sent = request.value.post_data_json
    assert isinstance(sent, dict)
    assert sent["up_to"] == max(shown)
    assert set(sent) == {"up_to", "watermark"} and sent["watermark"].startswith("w1.")
    expect(badge).to_have_text("0")
    expect(browser_page.locator('[data-testid="notification"][data-unread="true"]')).to_have_count(
        0
    )
    expect(browser_page.locator("#inbox-status")).to_have_text("Marked 1 as read.")
    assert_every_item_has_mark_as_read(items)

    # And back: "Mark as unread" re-enables "Mark as read", which takes the focus.
    newest.get_by_role("button", name="Mark as unread").click()
    expect(badge).to_have_text("1")
    expect(newest).to_have_attribute("data-unread", "true")
    expect(newest.get_by_role("button", name="Mark as read")).to_be_focused()
    expect(newest.get_by_role("button", name="Mark as read")).to_have_attribute(
        "aria-disabled", "false"
    )
    expect(newest.get_by_role("button", name="Mark as unread")).to_be_hidden()
    newest.get_by_role("button", name="Mark as read").click()
    expect(badge).to_have_text("0")

    # Bob switches off executions: a new execution no longer reaches him, a creation does.
    switch = browser_page.get_by_label("scenario.executed", exact=True)
    with browser_page.expect_response(re.compile(r"/api/v1/preferences/scenario\.executed$")):
        switch.uncheck()
    expect(browser_page.locator("#prefs-status")).to_contain_text("no longer be notified")
    expect(switch).not_to_be_checked()
    row = db.execute(
        "SELECT enabled FROM subscriptions WHERE user_id = %s AND event_type = 'scenario.executed'",
        [bob_id],
    ).fetchone()
    assert row == (False,)

    alice("POST", f"/scenarios/{scenario['id']}/executions", {"status": "passed"}, status=201)
    alice("POST", "/scenarios", {"name": "Login"}, status=201)
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) = 0 FROM scenario_events WHERE processed_at IS NULL"
            ).fetchone()
            == (True,)
        ),
        timeout=LIVE / 1000,
    )
    expect(items.nth(0)).to_contain_text("alice created scenario 'Login'", timeout=LIVE)
    # Both events were fanned out before the stream sent 'Login': the execution reached no
    # one, so nothing more is coming.
    expect(browser_page.get_by_test_id("stream-status")).to_have_text("Live")
    expect(items).to_have_count(3)
    expect(badge).to_have_text("1")
    expect(items.nth(0)).to_have_attribute("data-unread", "true")
    expect(items.filter(has_text="passed")).to_have_count(0)


def test_scenarios_panel_notifies_others(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    start_listener: Callable[..., Any],
) -> None:
    browser_page, _ = page
    alice_id, bob_id = make_user("alice"), make_user("bob")
    alice = client_as(live, token_for(db, alice_id))
    start_listener()
    sign_in(browser_page, live, token_for(db, bob_id))

    # An empty name is refused in the page, before any request.
    browser_page.get_by_role("button", name="Create scenario").click()
    expect(browser_page.locator("#scenarios-status")).to_have_text("Give the scenario a name.")

    browser_page.get_by_label("Name", exact=True).fill("Signup")
    browser_page.get_by_label("Description").fill("new account flow")
    browser_page.get_by_role("button", name="Create scenario").click()
    row = browser_page.get_by_test_id("scenario").filter(has_text="Signup")
    expect(row).to_contain_text("never run")
    browser_page.get_by_role("button", name="Record a passed run of Signup").click()
    expect(row).to_contain_text("last run passed")
    delete = browser_page.get_by_role("button", name="Delete Signup")
    delete.click()
    expect(delete).to_have_text("Confirm delete")
    delete.click()
    expect(row).to_have_count(0)
    expect(browser_page.locator("#scenarios-status")).to_have_text('Deleted "Signup".')

    # Bob's own actions reach alice, not bob.
    def alice_feed() -> list[str]:
        page_ = alice("GET", "/notifications?limit=10")
        return [n["message"] for n in page_["items"]]

    messages = wait_until(
        lambda: (feed := alice_feed()) and len(feed) == 3 and feed, timeout=LIVE / 1000
    )
    assert [m.split(" scenario ")[0] for m in messages] == [
        "bob deleted",
        "bob executed",
        "bob created",
    ]
    assert all("'Signup'" in m for m in messages)
    expect(browser_page.get_by_test_id("unread-count")).to_have_text("0")
    expect(browser_page.get_by_test_id("notification")).to_have_count(0)


def test_paging_and_mark_all_covers_only_what_was_seen(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    fan_out: Callable[[], int],
) -> None:
    browser_page, _ = page
    alice_id, bob_id = make_user("alice"), make_user("bob")
    alice = client_as(live, token_for(db, alice_id))
    for i in range(25):
        alice("POST", "/scenarios", {"name": f"Case {i:02}"}, status=201)
    assert fan_out() == 25
    # Frozen timers and no stream: the page polls only when the test says so, never behind
    # its back, which is how a page that has not yet seen something behaves.
    browser_page.clock.install()
    browser_page.route(STREAM, lambda route: route.abort())
    sign_in(browser_page, live, token_for(db, bob_id))
    items = browser_page.get_by_test_id("notification")
    badge = browser_page.get_by_test_id("unread-count")
    expect(items).to_have_count(20)
    expect(items.nth(0)).to_contain_text("'Case 24'")
    expect(badge).to_have_text("25")

    # Something arrives that bob has not seen yet; "Mark all as read" must leave it unread.
    alice("POST", "/scenarios", {"name": "Late"}, status=201)
    assert fan_out() == 1
    expect(items).to_have_count(20)
    browser_page.get_by_role("button", name="Mark all as read").click()
    expect(browser_page.locator("#inbox-status")).to_have_text("Marked 25 as read.")
    expect(items).to_have_count(21)
    expect(items.nth(0)).to_contain_text("'Late'")
    expect(items.nth(0)).to_have_attribute("data-unread", "true")
    expect(badge).to_have_text("1")
    row = db.execute(
        "SELECT count(*) FROM user_notifications WHERE user_id = %s AND read_at IS NULL", [bob_id]
    ).fetchone()
    assert row == (1,)

    # Older pages on demand, until there are none.
    load_more = browser_page.get_by_role("button", name="Load more")
    load_more.click()
    expect(items).to_have_count(26)
    expect(items.nth(25)).to_contain_text("'Case 00'")
    expect(load_more).to_be_hidden()
    expect(items.nth(25)).to_have_attribute("data-unread", "false")
    assert_every_item_has_mark_as_read(items)


def test_bad_token_and_server_trouble(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
) -> None:
    browser_page, _ = page
    bob_id = make_user("bob")
    # Timers advance only when told to, so each retry below happens exactly when intended.
    # The stream is blocked: these are the polling page's failures (an open stream would not
    # see the routes below, which only answer new requests).
    browser_page.clock.install()
    browser_page.route(STREAM, lambda route: route.abort())

    # A wrong token never gets past the sign-in form, and is not kept.
    browser_page.goto(live.url + "/")
    browser_page.get_by_label("API token").fill("ntf_not-a-real-token")
    browser_page.get_by_role("button", name="Sign in").click()
    expect(browser_page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
    expect(browser_page.get_by_role("button", name="Sign out")).to_be_hidden()
    assert browser_page.evaluate("localStorage.length") == 0

    # A good token is kept across reloads.
    sign_in(browser_page, live, token_for(db, bob_id))
    browser_page.reload()
    expect(browser_page.locator("#whoami")).to_have_text("bob")
    expect(browser_page.get_by_test_id("unread-count")).to_have_text("0")

    # The server fails, then goes away: a banner, and the page keeps retrying until it is back.
    banner = browser_page.locator("#banner")
    expect(banner).to_be_hidden()
    browser_page.route(
        "**/api/v1/**",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            body='{"error": {"code": "unavailable", "message": "down for a moment"}}',
        ),
    )
    browser_page.clock.run_for(2_000)
    expect(banner).to_contain_text("The server is having trouble (HTTP 503)")
    expect(banner).to_have_attribute("role", "alert")
    browser_page.unroute("**/api/v1/**")
    browser_page.route("**/api/v1/**", lambda route: route.abort("connectionrefused"))
    browser_page.clock.run_for(10_000)
    expect(banner).to_contain_text("Cannot reach the server")
    browser_page.clock.run_for(10_000)
    expect(banner).to_contain_text("Cannot reach the server")
    browser_page.unroute("**/api/v1/**")
    browser_page.clock.run_for(10_000)
    expect(banner).to_be_hidden()
    expect(browser_page.locator("#whoami")).to_have_text("bob")

    # The token is revoked while bob is signed in: back to sign-in, with the reason.
    db.execute("SELECT revoke_tokens(%s)", [bob_id])
    browser_page.clock.run_for(2_000)
    expect(browser_page.get_by_label("API token")).to_be_visible()
    expect(browser_page.locator("#sign-in-error")).to_contain_text("no longer accepted")
    assert browser_page.evaluate("localStorage.length") == 0

    # Signing out forgets the token, and revokes it on the server (DELETE /tokens/current).
    sign_in(browser_page, live, token_for(db, bob_id))
    browser_page.get_by_role("button", name="Sign out").click()
    expect(browser_page.get_by_label("API token")).to_be_focused()
    assert browser_page.evaluate("localStorage.length") == 0
    live_tokens = "SELECT count(*) FROM api_tokens WHERE user_id = %s AND revoked_at IS NULL"
    wait_until(lambda: db.execute(live_tokens, [bob_id]).fetchone() == (0,), timeout=10)


def test_page_headers(live: Live) -> None:
    response = httpx.get(live.url + "/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    # The stream is read with fetch() from the same origin, which this allows.
    assert "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for asset in ("/static/inbox.js", "/static/inbox.css"):
        assert httpx.get(live.url + asset).status_code == 200, asset


def test_mark_all_leaves_a_late_commit_with_a_lower_id_unread(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    database_url: str,
    make_user: Callable[..., int],
) -> None:
    """The inbox sends the watermark of the page it showed (issue 11, item 13)."""
    browser_page, _ = page
    alice_id, bob_id = make_user("alice"), make_user("bob")
    alice = client_as(live, token_for(db, alice_id))
    alice("POST", "/scenarios", {"name": "Early id"}, status=201)
    alice("POST", "/scenarios", {"name": "Later id"}, status=201)
    with psycopg.connect(database_url) as held:
        # The lower id's fan-out is still open while the higher one commits.
        assert len(held.execute("SELECT * FROM fan_out_events_v2(1)").fetchall()) == 1
        while db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall():
            pass
        browser_page.clock.install()
        # Without the stream, which would bring 'Early id' on commit: this is about what the
        # page read.
        browser_page.route(STREAM, lambda route: route.abort())
        sign_in(browser_page, live, token_for(db, bob_id))
        items = browser_page.get_by_test_id("notification")
        expect(items).to_have_count(1)
        expect(items.nth(0)).to_contain_text("'Later id'")
        held.commit()
    browser_page.get_by_role("button", name="Mark all as read").click()
    expect(browser_page.locator("#inbox-status")).to_have_text("Marked 1 as read.")
    expect(items).to_have_count(2)
    expect(items.nth(1)).to_contain_text("'Early id'")
    expect(items.nth(1)).to_have_attribute("data-unread", "true")
    expect(browser_page.get_by_test_id("unread-count")).to_have_text("1")


def test_email_switch_persists(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
) -> None:
    """The e-mail switch beside the in-app one: saved with "channels", still on after a
    reload, and the in-app switch untouched."""
    browser_page, _ = page
    bob_id = make_user("bob")
    sign_in(browser_page, live, token_for(db, bob_id))
    email = browser_page.get_by_label("scenario.executed by e-mail", exact=True)
    webhook = browser_page.get_by_label("scenario.executed by webhook", exact=True)
    expect(email).not_to_be_checked()
    expect(webhook).to_be_checked()
    with browser_page.expect_request(
        re.compile(r"/api/v1/preferences/scenario\.executed$")
    ) as request:
        email.check()
    assert request.value.post_data_json == {"channels": {"email": True}}
    expect(browser_page.locator("#prefs-status")).to_contain_text("by e-mail")
    wait_until(
        lambda: (
            db.execute(
                "SELECT enabled FROM channel_preferences WHERE user_id = %s"
                " AND event_type = 'scenario.executed' AND channel = 'email'",
                [bob_id],
            ).fetchone()
            == (True,)
        ),
        timeout=LIVE / 1000,
    )
    browser_page.reload()
    expect(browser_page.get_by_label("scenario.executed by e-mail", exact=True)).to_be_checked()
    expect(browser_page.get_by_label("scenario.executed", exact=True)).to_be_checked()
    expect(browser_page.get_by_label("scenario.created by e-mail", exact=True)).not_to_be_checked()


def test_new_notifications_arrive_by_push(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    start_listener: Callable[..., Any],
) -> None:
    """Ten notifications in a row, each pushed by the stream: the status says "Live" the
    whole time and the page asks the feed for nothing (polling is off while live)."""
    browser_page, _ = page
    alice_id, bob_id = make_user("alice"), make_user("bob")
    start_listener()
    sign_in(browser_page, live, token_for(db, bob_id))
    status = browser_page.get_by_test_id("stream-status")
    items = browser_page.get_by_test_id("notification")
    badge = browser_page.get_by_test_id("unread-count")
    expect(status).to_have_text("Live")
    feed = requests_to(browser_page, "/api/v1/notifications")
    browser_page.evaluate(WATCH_PAGE)

    delays = []
    for i in range(10):
        name = f"Push {i}"
        committed = create_as(db, alice_id, name)
        expect(items.filter(has_text=f"'{name}'")).to_have_count(1)
        shown = browser_page.evaluate("name => window.__seen[name]", name)
        delays.append(shown / 1000 - committed)
    print(
        "\ncommit to visible by push (ms):",
        [round(d * 1000) for d in delays],
        f"p50 {statistics.median(delays) * 1000:.0f}, max {max(delays) * 1000:.0f}",
    )
    expect(items).to_have_count(10)
    expect(items.nth(0)).to_contain_text("'Push 9'")
    expect(badge).to_have_text("10")
    statuses = browser_page.evaluate("window.__statuses")
    assert statuses == ["Live"], statuses
    assert [r.url for r in feed] == []

    # A revoked token: the server ends the stream, the reconnect is refused (401), and the
    # page is back at sign-in with the reason.
    db.execute("SELECT revoke_tokens(%s)", [bob_id])
    expect(browser_page.locator("#sign-in-error")).to_contain_text("no longer accepted")
    expect(browser_page.get_by_label("API token")).to_be_visible()
    assert browser_page.evaluate("localStorage.length") == 0


def test_tabs_share_one_stream_and_stay_in_step(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    start_listener: Callable[..., Any],
) -> None:
    """Two tabs of one browser, one stream: the second follows what the first relays, reads
    in one show in the other, and the second streams itself once the first is closed."""
    tab1, watch = page
    alice_id, bob_id = make_user("alice"), make_user("bob")
    start_listener()
    streams1 = requests_to(tab1, "/api/v1/stream")
    sign_in(tab1, live, token_for(db, bob_id))
    expect(tab1.get_by_test_id("stream-status")).to_have_text("Live")

    # Same browser context: the saved token signs the second tab in.
    tab2 = watched(tab1.context.new_page(), watch)
    streams2 = requests_to(tab2, "/api/v1/stream")
    tab2.goto(live.url + "/")
    expect(tab2.locator("#whoami")).to_have_text("bob")
    expect(tab2.get_by_test_id("stream-status")).to_have_text("Live (shared)")

    create_as(db, alice_id, "One")
    create_as(db, alice_id, "Two")
    for tab in (tab1, tab2):
        items = tab.get_by_test_id("notification")
        expect(items).to_have_count(2)
        expect(items.nth(0)).to_contain_text("'Two'")
        expect(tab.get_by_test_id("unread-count")).to_have_text("2")
    assert len(streams1) == 1 and streams2 == []
    # The token in the header, never in the URL; the first page's watermark as the start.
    headers = streams1[0].all_headers()
    assert streams1[0].url == live.url + "/api/v1/stream"
    assert headers["authorization"].startswith("Bearer ntf_")
    assert headers["last-event-id"].startswith("w1.")

    # Read in tab 1: tab 2's badge follows without a reload, and so does the item.
    tab1.get_by_test_id("notification").nth(0).get_by_role("button", name="Mark as read").click()
    expect(tab1.get_by_test_id("unread-count")).to_have_text("1")
    expect(tab2.get_by_test_id("unread-count")).to_have_text("1")
    expect(tab2.get_by_test_id("notification").nth(0)).to_have_attribute("data-unread", "false")
    expect(tab2.get_by_test_id("notification").nth(1)).to_have_attribute("data-unread", "true")

    # The leader goes; tab 2 takes the lock, streams from where the relay left it.
    tab1.close()
    expect(tab2.get_by_test_id("stream-status")).to_have_text("Live")
    create_as(db, alice_id, "Three")
    items = tab2.get_by_test_id("notification")
    expect(items.nth(0)).to_contain_text("'Three'")
    expect(items).to_have_count(3)
    expect(tab2.get_by_test_id("unread-count")).to_have_text("2")
    assert len(streams2) == 1
    assert streams2[0].url == live.url + "/api/v1/stream"
    assert streams2[0].all_headers()["last-event-id"].startswith(("w1.", "p1."))


def test_polls_while_the_stream_is_blocked(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    fan_out: Callable[[], int],
) -> None:
    """No stream: the page says it polls, and a new notification arrives by polling; once the
    stream is back the page is live again and stops polling."""
    browser_page, _ = page
    alice_id, bob_id = make_user("alice"), make_user("bob")
    # Frozen timers: each poll and each reconnect happens when the test advances the clock.
    browser_page.clock.install()
    browser_page.route(STREAM, lambda route: route.abort())
    sign_in(browser_page, live, token_for(db, bob_id))
    status = browser_page.get_by_test_id("stream-status")
    items = browser_page.get_by_test_id("notification")
    expect(status).to_contain_text("polling")
    expect(browser_page.get_by_text("No notifications yet.")).to_be_visible()

    create_as(db, alice_id, "Polled")
    assert fan_out() == 1
    feed = requests_to(browser_page, "/api/v1/notifications?")
    browser_page.clock.run_for(2_500)
    expect(items.filter(has_text="'Polled'")).to_have_count(1)
    expect(browser_page.get_by_test_id("unread-count")).to_have_text("1")
    expect(status).to_contain_text("polling")
    assert feed, "the notification came without a feed request"

    # The stream is reachable again: the next reconnect (at most 15 s, plus jitter) opens it,
    # from the first page's watermark, so it sends 'Polled' again: shown once all the same.
    browser_page.unroute(STREAM)
    browser_page.clock.run_for(20_000)
    expect(status).to_have_text("Live")
    feed.clear()
    create_as(db, alice_id, "Pushed")
    assert fan_out() == 1
    # The timers stand still, so this one came by push, after the resent 'Polled'.
    expect(items.nth(0)).to_contain_text("'Pushed'")
    expect(items).to_have_count(2)
    expect(items.filter(has_text="'Polled'")).to_have_count(1)
    expect(browser_page.get_by_test_id("unread-count")).to_have_text("2")
    # And polling has stopped.
    browser_page.clock.run_for(10_000)
    expect(status).to_have_text("Live")
    assert [r.url for r in feed] == []


def test_tabs_stream_each_without_web_locks(
    live: Live,
    page: tuple[Page, PageWatch],
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    start_listener: Callable[..., Any],
) -> None:
    """Without navigator.locks (a page served over plain http from another host is not a
    secure context, and has none), each tab keeps a stream of its own."""
    tab1, watch = page
    tab1.context.add_init_script("delete Navigator.prototype.locks;")
    alice_id, bob_id = make_user("alice"), make_user("bob")
    start_listener()
    streams1 = requests_to(tab1, "/api/v1/stream")
    sign_in(tab1, live, token_for(db, bob_id))
    assert tab1.evaluate("navigator.locks === undefined")
    tab2 = watched(tab1.context.new_page(), watch)
    streams2 = requests_to(tab2, "/api/v1/stream")
    tab2.goto(live.url + "/")
    for tab in (tab1, tab2):
        expect(tab.get_by_test_id("stream-status")).to_have_text("Live")
    create_as(db, alice_id, "Each")
    for tab in (tab1, tab2):
        expect(tab.get_by_test_id("notification")).to_contain_text(["'Each'"])
        expect(tab.get_by_test_id("unread-count")).to_have_text("1")
    assert len(streams1) == 1 and len(streams2) == 1
