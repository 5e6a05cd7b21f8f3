// The web inbox: a plain client of the public JSON API under /api/v1 (no build step).
// New notifications arrive through the stream (GET /api/v1/stream, one per browser, shared
// by its tabs); the page polls only while that stream is down.
"use strict";

(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "notifications.token";
  const PAGE_SIZE = 20;
  const POLL_MS = 2000;
  // A background tab still keeps the title's count fresh, just less eagerly.
  const HIDDEN_POLL_MS = 10000;
  const MAX_BACKOFF_MS = 10000;
  const BASE_TITLE = document.title;
  // Stream reconnects: doubling from 0.5 s to 15 s, never sooner than the server's `retry:`
  // or Retry-After asks.
  const STREAM_MIN_MS = 500;
  const STREAM_MAX_MS = 15000;
  // The server sends a comment at least every 20 s; a connection silent for longer than this
  // is dead without having said so (a sleeping laptop, a dropped NAT entry).
  const STREAM_SILENCE_MS = 45000;
  const STREAM_TEXT = {
    off: "",
    connecting: "Connecting to live updates…",
    live: "Live",
    shared: "Live (shared)",
    down: `Offline: polling every ${POLL_MS / 1000} s`,
  };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  class NetworkError extends Error {}

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    // Bumped on every sign-in/out so that answers to an old session's requests are dropped.
    session: 0,
    // Bumped whenever the list is rebuilt so that a "Load more" in flight is dropped.
    listEpoch: 0,
    items: new Map(),
    elements: new Map(),
    nextCursor: null,
    // What the newest page shown could see: "Mark all as read" marks nothing that committed
    // after it, even with a lower id (docs/api.md, read-all).
    watermark: null,
    loaded: false,
    pending: new Set(),
    pollTimer: null,
    failures: 0,
    unread: 0,
  };

  // The live side of a session: this tab's stream (when it leads, or when tabs cannot share
  // one) or the leader tab's, relayed on a BroadcastChannel.
  const live = {
    // "leader" holds the Web Lock and streams, "follower" applies what the leader relays,
    // "solo" streams without sharing (no navigator.locks or BroadcastChannel).
    role: "none",
    status: "off",
    // The last `id` received (from our stream or relayed): where a stream resumes.
    position: null,
    // A position the server refused (422): the next stream starts afresh.
    noResume: false,
    refreshOnOpen: false,
    // An unread count came while a mark of ours was on its way: compare once it is back.
    recheck: false,
    // Counts the stream's `unread` events: a count asked over HTTP before the latest of them
    // is older than it, and is not shown.
    unreadSeq: 0,
    controller: null,
    timer: null,
    attempt: 0,
    retryMs: 0,
    channel: null,
    // Identifies one startLive(): a lock granted to an older one is given straight back.
    claim: null,
    release: null,
    // Events that arrived before the first page did; applied on top of it.
    pending: [],
  };

  // -- HTTP ---------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch {
      throw new NetworkError("The server cannot be reached.");
    }
    if (response.status === 204) return null;
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    if (!response.ok) {
      const error = (payload && payload.error) || {};
      throw new ApiError(
        response.status,
        error.code || `http_${response.status}`,
        error.message || `The server answered ${response.status} ${response.statusText}.`,
      );
    }
    return payload;
  }

  const isDown = (err) => err instanceof NetworkError || (err instanceof ApiError && err.status >= 500);

  // Returns true when the error ended the session or means the server is down.
  function handleError(err, statusEl) {
    if (err instanceof ApiError && err.status === 401) {
      signOut("Your token is no longer accepted (it may have been revoked). Please sign in again.");
      return true;
    }
    if (isDown(err)) {
      showBanner(err);
      if (statusEl) setStatus(statusEl, "The server cannot be reached; try again in a moment.", true);
      return true;
    }
    if (statusEl) {
      setStatus(statusEl, err instanceof ApiError ? err.message : "Something went wrong.", true);
    }
    if (!(err instanceof ApiError)) console.error(err);
    return false;
  }

  // -- small UI helpers ---------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function setStatus(node, message, isError = false) {
    node.textContent = message;
    node.classList.toggle("error", isError);
  }

  function showBanner(err) {
    const banner = $("banner");
    const problem =
      err instanceof ApiError
        ? `The server is having trouble (HTTP ${err.status}).`
        : "Cannot reach the server.";
    const text = `${problem} Retrying automatically; your inbox updates again once it is back.`;
    // Rewriting the same text would make screen readers announce it on every retry.
    if (banner.textContent !== text) banner.textContent = text;
    banner.hidden = false;
  }

  function hideBanner() {
    const banner = $("banner");
    banner.hidden = true;
    banner.textContent = "";
  }

  const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

  function formatTime(iso) {
    const then = new Date(iso);
    const seconds = Math.round((then.getTime() - Date.now()) / 1000);
    const abs = Math.abs(seconds);
    if (Number.isNaN(abs)) return iso;
    if (abs < 45) return "just now";
    if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
    if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
    return then.toLocaleString();
  }

  function refreshTimes() {
    for (const node of document.querySelectorAll("time[datetime]")) {
      node.textContent = formatTime(node.getAttribute("datetime"));
    }
  }

  function setUnread(count) {
    state.unread = count;
    const badge = $("unread-count");
    if (badge.textContent !== String(count)) badge.textContent = String(count);
    badge.classList.toggle("zero", count === 0);
    document.title = count > 0 ? `(${count}) ${BASE_TITLE}` : BASE_TITLE;
  }

  // -- sign-in and session ------------------------------------------------------------------

  function showSignIn(message = "") {
    $("app").hidden = true;
    $("session").hidden = true;
    $("sign-in").hidden = false;
    setStatus($("sign-in-error"), message, Boolean(message));
    $("token").value = "";
    $("token").focus();
  }

  function resetUi() {
    state.items.clear();
    state.elements.clear();
    state.pending.clear();
    state.nextCursor = null;
    state.watermark = null;
    state.loaded = false;
    state.listEpoch += 1;
    state.failures = 0;
    $("notifications").replaceChildren();
    $("preferences").replaceChildren();
    $("scenarios").replaceChildren();
    for (const id of ["inbox-status", "prefs-status", "scenarios-status"]) setStatus($(id), "");
    $("empty").hidden = true;
    $("load-more").hidden = true;
    setUnread(0);
  }

  function signOut(message = "") {
    state.session += 1;
    state.token = null;
    clearTimeout(state.pollTimer);
    stopLive();
    localStorage.removeItem(TOKEN_KEY);
    hideBanner();
    resetUi();
    showSignIn(message);
  }

  // The button gives the token up on the server too (DELETE /tokens/current): a copy left
  // in this browser's storage or history no longer works. Signed out here either way.
  async function revokeAndSignOut() {
    try {
      if (state.token) await api("DELETE", "/tokens/current");
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) console.warn("token not revoked", err);
    }
    signOut("You are signed out.");
  }

  function startSession(me) {
    const session = state.session;
    $("whoami").textContent = me.name;
    $("sign-in").hidden = true;
    $("session").hidden = false;
    $("app").hidden = false;
    hideBanner();
    resetUi();
    startLive(session, me.id);
    loadPreferences(session);
    loadScenarios(session);
    // The first page; the stream starts from its watermark once it is drawn.
    poll();
  }

  async function submitSignIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    const errorEl = $("sign-in-error");
    if (!token) {
      setStatus(errorEl, "Paste your API token first.", true);
      $("token").focus();
      return;
    }
    const button = $("sign-in-button");
    button.setAttribute("aria-busy", "true");
    setStatus(errorEl, "");
    clearTimeout(state.pollTimer);
    stopLive();
    state.session += 1;
    const session = state.session;
    state.token = token;
    try {
      const me = await api("GET", "/me");
      if (session !== state.session) return;
      localStorage.setItem(TOKEN_KEY, token);
      startSession(me);
    } catch (err) {
      if (session !== state.session) return;
      state.token = null;
      let message = "Signing in failed; please try again.";
      if (err instanceof ApiError && err.status === 401) {
        message = "That token was not accepted. Check that you pasted all of it.";
      } else if (isDown(err)) {
        message = "The server cannot be reached; try again in a moment.";
      }
      setStatus(errorEl, message, true);
      $("token").focus();
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  // A saved token is tried until the server answers: down means retry, 401 means sign in.
  async function resume(token, attempt = 0) {
    stopLive();
    state.session += 1;
    const session = state.session;
    state.token = token;
    try {
      const me = await api("GET", "/me");
      if (session === state.session) startSession(me);
    } catch (err) {
      if (session !== state.session) return;
      if (isDown(err)) {
        showBanner(err);
        state.pollTimer = setTimeout(() => resume(token, attempt + 1), backoff(attempt + 1));
      } else {
        signOut("Your saved token is no longer accepted. Please sign in again.");
      }
    }
  }

  // -- notifications ------------------------------------------------------------------------

  // Newest first, as the API pages them.
  const newerFirst = (a, b) => b.id - a.id;

  function renderNotification(n) {
    const messageId = `message-${n.id}`;
    // Every item has "Mark as read" (disabled once read); read ones also "Mark as unread".
    const markButton = (cls, text, read) =>
      el("button", {
        type: "button",
        class: `mark ${cls}`,
        text,
        "aria-describedby": messageId,
        onclick: () => setRead(n.id, read),
      });
    const node = el(
      "li",
      { class: "notification", dataset: { testid: "notification", id: String(n.id) } },
      el("span", { class: "dot", "aria-hidden": "true" }),
      el(
        "div",
        { class: "body" },
        el(
          "p",
          { class: "message", id: messageId },
          el("span", { class: "visually-hidden unread-label", text: "Unread: " }),
          el("span", { class: "text" }),
        ),
        el(
          "p",
          { class: "meta" },
          el("span", { class: "event-type" }),
          " · ",
          el("time"),
        ),
      ),
      el(
        "div",
        { class: "marks" },
        markButton("mark-read", "Mark as read", true),
        markButton("mark-unread", "Mark as unread", false),
      ),
    );
    updateNotification(node, n);
    return node;
  }

  function updateNotification(node, n) {
    const unread = !n.read_at;
    node.dataset.unread = String(unread);
    node.classList.toggle("unread", unread);
    node.dataset.eventType = n.event_type;
    node.querySelector(".text").textContent = n.message;
    node.querySelector(".unread-label").hidden = !unread;
    node.querySelector(".event-type").textContent = n.event_type;
    const time = node.querySelector("time");
    time.setAttribute("datetime", n.created_at);
    time.title = new Date(n.created_at).toLocaleString();
    time.textContent = formatTime(n.created_at);
    const markRead = node.querySelector(".mark-read");
    markRead.disabled = !unread;
    markRead.setAttribute("aria-disabled", String(!unread));
    node.querySelector(".mark-unread").hidden = unread;
  }

  function upsert(n, where = "sorted") {
    state.items.set(n.id, n);
    const existing = state.elements.get(n.id);
    if (existing) {
      updateNotification(existing, n);
      return false;
    }
    const node = renderNotification(n);
    state.elements.set(n.id, node);
    const list = $("notifications");
    if (where === "end") {
      list.append(node);
    } else {
      const before = [...list.children].find(
        (child) => newerFirst(n, state.items.get(Number(child.dataset.id))) < 0,
      );
      list.insertBefore(node, before || null);
    }
    return true;
  }

  function rebuildList(page) {
    state.items.clear();
    state.elements.clear();
    state.listEpoch += 1;
    $("notifications").replaceChildren();
    for (const n of page.items) upsert(n, "end");
    state.nextCursor = page.next_cursor;
  }

  function updateListChrome() {
    $("empty").hidden = state.items.size > 0;
    $("load-more").hidden = !state.nextCursor;
  }

  function mergeFirstPage(page) {
    const firstLoad = !state.loaded;
    state.loaded = true;
    state.watermark = page.watermark;
    const overlaps = page.items.some((n) => state.items.has(n.id));
    // First load, an empty list, or more than a page arrived since the last poll (the old
    // list would have a hole in it): start again from the newest page.
    if (firstLoad || !overlaps) {
      rebuildList(page);
      updateListChrome();
      return !firstLoad && page.items.length > 0;
    }
    let added = false;
    for (const n of page.items) {
      if (upsert(n)) {
        added = true;
        state.elements.get(n.id).classList.add("fresh");
      }
    }
    updateListChrome();
    return added;
  }

  function backoff(failures) {
    return Math.min(POLL_MS * 2 ** Math.max(failures - 1, 0), MAX_BACKOFF_MS);
  }

  function schedulePoll() {
    clearTimeout(state.pollTimer);
    let delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    if (state.failures > 0) delay = backoff(state.failures);
    state.pollTimer = setTimeout(poll, delay);
  }

  async function poll() {
    clearTimeout(state.pollTimer);
    const session = state.session;
    if (!state.token) return;
    const seq = live.unreadSeq;
    try {
      const [count, page] = await Promise.all([
        api("GET", "/notifications/unread-count"),
        api("GET", `/notifications?status=all&limit=${PAGE_SIZE}`),
      ]);
      if (session !== state.session) return;
      const wasDown = state.failures > 0;
      state.failures = 0;
      hideBanner();
      const firstLoad = !state.loaded;
      const added = mergeFirstPage(page);
      if (seq === live.unreadSeq) setUnread(count.unread);
      // The stream's newer count stands; this page may be older than it too.
      else checkInStep(session);
      refreshTimes();
      // Others' changes to scenarios arrive as notifications; the panel follows them.
      if (added || wasDown) loadScenarios(session);
      if (firstLoad) firstPageShown(session);
    } catch (err) {
      if (session !== state.session) return;
      if (err instanceof ApiError && err.status === 401) {
        handleError(err);
        return;
      }
      state.failures += 1;
      handleError(err, isDown(err) ? null : $("inbox-status"));
    }
    // While the stream is up it brings everything; polling is only its stand-in.
    if (session === state.session && !streamUp()) schedulePoll();
  }

  async function refreshCount(session) {
    const seq = live.unreadSeq;
    try {
      const count = await api("GET", "/notifications/unread-count");
      if (session === state.session && seq === live.unreadSeq) setUnread(count.unread);
    } catch (err) {
      if (session === state.session) handleError(err);
    }
  }

  // The button that can act on an item now: what keyboard focus moves to.
  const activeMark = (node) => node.querySelector(".mark:not(:disabled):not([hidden])");

  async function setRead(id, read) {
    const n = state.items.get(id);
    if (!n || state.pending.has(id) || !n.read_at === !read) return;
    const session = state.session;
    const action = read ? "read" : "unread";
    const node = state.elements.get(id);
    state.pending.add(id);
    node.setAttribute("aria-busy", "true");
    // Taken now: the stream may redraw the item (and disable the focused button, which drops
    // focus to the body) before our own answer is back.
    const hadFocus = node.contains(document.activeElement);
    try {
      const updated = await api("POST", `/notifications/${encodeURIComponent(id)}/${action}`);
      if (session !== state.session) return;
      upsert(updated);
      // The pressed button is now disabled or hidden; keep focus on the item, unless the
      // person has moved on meanwhile.
      const focused = document.activeElement;
      if (hadFocus && (!focused || focused === document.body || node.contains(focused))) {
        activeMark(node).focus();
      }
      setStatus($("inbox-status"), "");
      await refreshCount(session);
    } catch (err) {
      if (session === state.session) handleError(err, $("inbox-status"));
    } finally {
      state.pending.delete(id);
      node.removeAttribute("aria-busy");
      if (session === state.session && state.pending.size === 0 && live.recheck) {
        live.recheck = false;
        checkInStep(session);
      }
    }
  }

  async function markAllRead() {
    const session = state.session;
    const ids = [...state.items.keys()];
    if (ids.length === 0) {
      setStatus($("inbox-status"), "Nothing to mark as read.");
      return;
    }
    // Only what the person has seen: anything newer that arrives meanwhile stays unread.
    const upTo = Math.max(...ids);
    const button = $("mark-all");
    button.setAttribute("aria-busy", "true");
    try {
      const body = { up_to: upTo };
      if (state.watermark) body.watermark = state.watermark;
      const result = await api("POST", "/notifications/read-all", body);
      if (session !== state.session) return;
      const now = new Date().toISOString();
      for (const n of state.items.values()) {
        if (!n.read_at && n.id <= upTo) upsert({ ...n, read_at: now });
      }
      const updated = result.updated;
      setStatus(
        $("inbox-status"),
        updated === 0 ? "Everything was already read." : `Marked ${updated} as read.`,
      );
      await poll();
    } catch (err) {
      if (session === state.session) handleError(err, $("inbox-status"));
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  async function loadMore() {
    if (!state.nextCursor) return;
    const session = state.session;
    const epoch = state.listEpoch;
    const button = $("load-more");
    button.setAttribute("aria-busy", "true");
    try {
      const cursor = encodeURIComponent(state.nextCursor);
      const page = await api(
        "GET",
        `/notifications?status=all&limit=${PAGE_SIZE}&cursor=${cursor}`,
      );
      if (session !== state.session || epoch !== state.listEpoch) return;
      let firstNew = null;
      for (const n of page.items) {
        if (upsert(n, "end") && !firstNew) firstNew = state.elements.get(n.id);
      }
      state.nextCursor = page.next_cursor;
      updateListChrome();
      refreshTimes();
      // The button vanishes after the last page; keep keyboard focus somewhere useful.
      if (button.hidden && firstNew) activeMark(firstNew).focus();
    } catch (err) {
      if (session === state.session) handleError(err, $("inbox-status"));
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  // -- live updates: the stream ---------------------------------------------------------------

  const streamUp = () => live.status === "live" || live.status === "shared";

  function setStreamStatus(status) {
    const node = $("stream-status");
    const text = STREAM_TEXT[status];
    if (node.textContent !== text) node.textContent = text;
    node.dataset.state = status;
    node.hidden = status === "off";
    if (status === live.status) return;
    const wasUp = streamUp();
    live.status = status;
    if (live.role === "leader") relay({ kind: "status", live: status === "live" });
    if (streamUp()) {
      clearTimeout(state.pollTimer);
    } else if (wasUp && status !== "off" && state.loaded && state.token) {
      schedulePoll();
    }
  }

  function relay(message) {
    if (!live.channel) return;
    try {
      live.channel.postMessage(message);
    } catch (err) {
      console.warn("could not relay to the other tabs", err);
    }
  }

  // One stream per browser: the tab holding the Web Lock streams and relays every event on a
  // BroadcastChannel; the others follow. A lock dies with its tab, so another tab takes over
  // and resumes from the last position it saw relayed.
  function startLive(session, userId) {
    stopLive();
    live.position = null;
    live.noResume = false;
    live.refreshOnOpen = false;
    live.attempt = 0;
    live.retryMs = 0;
    live.pending = [];
    const name = `notifications-stream-${userId}`;
    if (!(navigator.locks && typeof BroadcastChannel === "function")) {
      live.role = "solo";
      setStreamStatus("connecting");
      return;
    }
    live.role = "follower";
    setStreamStatus("connecting");
    const channel = new BroadcastChannel(name);
    channel.addEventListener("message", (event) => onRelayed(session, event.data));
    live.channel = channel;
    const claim = new AbortController();
    live.claim = claim;
    navigator.locks
      .request(name, { signal: claim.signal }, () => {
        if (claim !== live.claim || session !== state.session) return undefined;
        // Held for as long as this promise is pending: until sign-out or the tab goes.
        return new Promise((resolve) => {
          live.release = resolve;
          live.role = "leader";
          setStreamStatus("connecting");
          relay({ kind: "status", live: false });
          connectWhenReady(session);
        });
      })
      .catch((err) => {
        if (err.name !== "AbortError") console.warn("no stream lock", err);
      });
    // A leader already streaming says so; without an answer this tab polls meanwhile.
    relay({ kind: "hello" });
  }

  function stopLive() {
    if (live.role === "leader") relay({ kind: "status", live: false });
    clearTimeout(live.timer);
    live.timer = null;
    const controller = live.controller;
    live.controller = null;
    if (controller) controller.abort();
    if (live.claim) live.claim.abort();
    live.claim = null;
    if (live.release) live.release();
    live.release = null;
    if (live.channel) live.channel.close();
    live.channel = null;
    live.role = "none";
    live.pending = [];
    setStreamStatus("off");
  }

  function onRelayed(session, message) {
    if (session !== state.session || !message || typeof message !== "object") return;
    if (message.kind === "hello") {
      if (live.role === "leader") relay({ kind: "status", live: live.status === "live" });
    } else if (live.role === "follower") {
      if (message.kind === "status") setStreamStatus(message.live ? "shared" : "down");
      else if (message.kind === "event") applyEvent(session, message);
    }
  }

  function firstPageShown(session) {
    // Where the stream starts: nothing committed after this page is missed, and what polling
    // shows meanwhile comes again (once) when the stream opens.
    if (!live.position) live.position = state.watermark;
    const queued = live.pending;
    live.pending = [];
    // Older than the page's watermark, or not: the page keeps its own for "Mark all".
    for (const event of queued) applyEvent(session, event, false);
    connectWhenReady(session);
  }

  function connectWhenReady(session) {
    if (live.role === "leader" || live.role === "solo") {
      if (state.loaded && !live.controller && !live.timer) connect(session);
    }
  }

  function reconnectNow(session) {
    if (live.timer && (live.role === "leader" || live.role === "solo")) {
      clearTimeout(live.timer);
      live.timer = null;
      live.attempt = 0;
      connectWhenReady(session);
    }
  }

  async function connect(session) {
    const controller = new AbortController();
    live.controller = controller;
    const current = () => session === state.session && controller === live.controller;
    // The token goes in the header, never in the URL (logs, history): hence fetch, not
    // EventSource.
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${state.token}` };
    const position = live.noResume ? null : live.position;
    if (position) headers["Last-Event-ID"] = position;
    let response;
    try {
      response = await fetch(`${API}/stream`, {
        headers,
        cache: "no-store",
        signal: controller.signal,
      });
    } catch {
      if (current()) streamDown(session);
      return;
    }
    if (!current()) {
      controller.abort();
      return;
    }
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !response.body || !type.startsWith("text/event-stream")) {
      controller.abort();
      if (response.status === 401) {
        live.controller = null;
        handleError(new ApiError(401, "unauthorized", "invalid or revoked token"));
        return;
      }
      if (response.status === 422) {
        // A position this server cannot resume from: stream from now, then redraw the page.
        live.noResume = true;
        live.refreshOnOpen = true;
      }
      const retryAfter = Number(response.headers.get("Retry-After"));
      streamDown(session, Number.isFinite(retryAfter) ? retryAfter * 1000 : 0);
      return;
    }
    live.attempt = 0;
    live.noResume = false;
    state.failures = 0;
    hideBanner();
    setStreamStatus("live");
    if (live.refreshOnOpen) {
      live.refreshOnOpen = false;
      refreshList(session);
    }
    try {
      await readEvents(response.body, controller, {
        event: (event) => {
          if (!current()) return;
          if (live.role === "leader") relay({ kind: "event", ...event });
          applyEvent(session, event);
        },
        retry: (ms) => {
          live.retryMs = ms;
        },
      });
    } catch {
      // Cut, aborted for silence, or stopped; current() tells which.
    }
    if (current()) streamDown(session);
  }

  function streamDown(session, atLeastMs = 0) {
    live.controller = null;
    setStreamStatus("down");
    const doubled = Math.min(STREAM_MAX_MS, STREAM_MIN_MS * 2 ** live.attempt);
    live.attempt += 1;
    const delay = Math.max(doubled, live.retryMs, atLeastMs);
    // Upwards only, so the server's minimum holds; spreads a crowd that lost one server.
    const jittered = delay + Math.random() * delay * 0.25;
    clearTimeout(live.timer);
    live.timer = setTimeout(() => {
      live.timer = null;
      if (session === state.session) connectWhenReady(session);
    }, jittered);
  }

  // A server-sent events reader (the parsing part of the HTML spec's EventSource): lines end
  // with CRLF, LF or CR; `:` starts a comment; an event is dispatched at a blank line; an
  // event left unfinished when the body ends is dropped.
  async function readEvents(body, controller, on) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = [];
    let type = "";
    let id = null;
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), STREAM_SILENCE_MS);
    };
    const line = (text) => {
      if (text === "") {
        if (data.length > 0 || id !== null) {
          on.event({ event: data.length > 0 ? type || "message" : null, data: data.join("\n"), id });
        }
        data = [];
        type = "";
        id = null;
        return;
      }
      if (text.startsWith(":")) return;
      const colon = text.indexOf(":");
      const name = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "event") type = value;
      else if (name === "data") data.push(value);
      else if (name === "id" && !value.includes("\0")) id = value;
      else if (name === "retry" && /^[0-9]+$/.test(value)) on.retry(Number(value));
    };
    try {
      watch();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        watch();
        buffer += decoder.decode(value, { stream: true });
        let start = 0;
        for (let i = 0; i < buffer.length; i += 1) {
          const c = buffer[i];
          if (c !== "\n" && c !== "\r") continue;
          // A CR that ends the chunk may be half of a CRLF: decide with the next chunk.
          if (c === "\r" && i + 1 === buffer.length) break;
          line(buffer.slice(start, i));
          if (c === "\r" && buffer[i + 1] === "\n") i += 1;
          start = i + 1;
        }
        buffer = buffer.slice(start);
      }
    } finally {
      clearTimeout(silence);
      reader.cancel().catch(() => {});
    }
  }

  // One event from our stream or relayed by the leader tab. `moveWatermark` is false for
  // events queued before the first page, which may be older than that page.
  function applyEvent(session, event, moveWatermark = true) {
    if (session !== state.session) return;
    if (event.id) live.position = event.id;
    if (!event.event) return;
    if (!state.loaded) {
      // Bounded: a first page that takes long brings the newest ones itself.
      if (live.pending.length >= 1000) live.pending.shift();
      live.pending.push(event);
      return;
    }
    // A complete position is written as a watermark and covers everything sent so far,
    // which this list now shows: "Mark all as read" may mark all of it.
    if (moveWatermark && event.id && event.id.startsWith("w1.")) state.watermark = event.id;
    let payload;
    try {
      payload = JSON.parse(event.data);
    } catch {
      console.warn("unreadable stream event", event.event);
      return;
    }
    if (event.event === "notification") {
      if (upsert(payload)) {
        state.elements.get(payload.id).classList.add("fresh");
        updateListChrome();
        loadScenarios(session);
      }
    } else if (event.event === "unread") {
      live.unreadSeq += 1;
      setUnread(payload.unread);
      checkInStep(session);
    }
  }

  // A read (or unread) in another tab or on another device changes the count without
  // telling which item: when the list disagrees with the count, it is drawn again. Not while
  // our own mark is on its way (its answer will make them agree); after it, if still needed.
  function checkInStep(session) {
    if (state.pending.size > 0) {
      live.recheck = true;
      return;
    }
    let shown = 0;
    for (const n of state.items.values()) if (!n.read_at) shown += 1;
    if (shown !== state.unread) refreshList(session);
  }

  let refreshing = false;
  let refreshAgain = false;

  // The first page again, at most one request at a time (a burst of changes asks once more).
  async function refreshList(session) {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      do {
        refreshAgain = false;
        await poll();
      } while (refreshAgain && session === state.session);
    } finally {
      refreshing = false;
    }
  }

  // -- preferences --------------------------------------------------------------------------

  async function loadPreferences(session) {
    try {
      const result = await api("GET", "/preferences");
      if (session !== state.session) return;
      const list = $("preferences");
      list.replaceChildren(...result.items.map(renderPreference));
    } catch (err) {
      if (session !== state.session) return;
      handleError(err, $("prefs-status"));
      // Preferences are loaded once per session; retry while the server is away.
      if (isDown(err)) setTimeout(() => loadPreferences(session), MAX_BACKOFF_MS);
    }
  }

  function renderPreference(pref) {
    const slug = pref.event_type.replace(/[^a-zA-Z0-9_-]/g, "-");
    const input = el("input", {
      type: "checkbox",
      id: `pref-${slug}`,
      "aria-describedby": `pref-${slug}-description`,
      onchange: () => savePreference(pref.event_type, input),
    });
    input.checked = Boolean(pref.enabled);
    return el(
      "li",
      { class: "preference" },
      input,
      el(
        "div",
        { class: "pref-text" },
        el("label", { for: `pref-${slug}`, text: pref.event_type }),
        el("span", {
          class: "description",
          id: `pref-${slug}-description`,
          text: pref.description || "",
        }),
        el(
          "div",
          { class: "channels" },
          ...CHANNELS.map(([channel, name]) => renderChannel(pref, slug, channel, name)),
        ),
      ),
    );
  }

  // Beside the in-app switch: e-mail and webhooks for the same event type.
  const CHANNELS = [
    ["email", "e-mail"],
    ["webhook", "webhook"],
  ];

  function renderChannel(pref, slug, channel, name) {
    const id = `pref-${slug}-${channel}`;
    const input = el("input", {
      type: "checkbox",
      id,
      onchange: () => saveChannel(pref.event_type, channel, name, input),
    });
    input.checked = Boolean(pref.channels && pref.channels[channel]);
    return el(
      "span",
      { class: "channel" },
      input,
      el("label", { for: id, text: `${pref.event_type} by ${name}` }),
    );
  }

  async function saveChannel(eventType, channel, name, input) {
    const session = state.session;
    const enabled = input.checked;
    input.setAttribute("aria-busy", "true");
    try {
      const result = await api("PUT", `/preferences/${encodeURIComponent(eventType)}`, {
        channels: { [channel]: enabled },
      });
      if (session !== state.session) return;
      const now = Boolean(result.channels && result.channels[channel]);
      input.checked = now;
      setStatus(
        $("prefs-status"),
        now
          ? `You will get ${eventType} by ${name}.`
          : `You will no longer get ${eventType} by ${name}.`,
      );
    } catch (err) {
      if (session !== state.session) return;
      input.checked = !enabled;
      handleError(err, $("prefs-status"));
    } finally {
      input.removeAttribute("aria-busy");
    }
  }

  async function savePreference(eventType, input) {
    const session = state.session;
    const enabled = input.checked;
    input.setAttribute("aria-busy", "true");
    try {
      const result = await api("PUT", `/preferences/${encodeURIComponent(eventType)}`, {
        enabled,
      });
      if (session !== state.session) return;
      input.checked = Boolean(result.enabled);
      setStatus(
        $("prefs-status"),
        result.enabled
          ? `You will be notified about ${eventType}.`
          : `You will no longer be notified about ${eventType}.`,
      );
    } catch (err) {
      if (session !== state.session) return;
      input.checked = !enabled;
      handleError(err, $("prefs-status"));
    } finally {
      input.removeAttribute("aria-busy");
    }
  }

  // -- scenarios ----------------------------------------------------------------------------

  let scenariosLoading = null;

  async function loadScenarios(session) {
    // Coalesce bursts (several notifications at once) into one request.
    if (scenariosLoading) return scenariosLoading;
    scenariosLoading = (async () => {
      try {
        const result = await api("GET", "/scenarios");
        if (session !== state.session) return;
        renderScenarios(result.items);
      } catch (err) {
        if (session === state.session) handleError(err, $("scenarios-status"));
      } finally {
        scenariosLoading = null;
      }
    })();
    return scenariosLoading;
  }

  function renderScenarios(items) {
    const list = $("scenarios");
    const focusedKey = document.activeElement && document.activeElement.dataset.key;
    const sorted = [...items].sort((a, b) => b.id - a.id);
    list.replaceChildren(...sorted.map(renderScenario));
    if (sorted.length === 0) {
      list.append(el("li", { class: "empty", text: "No scenarios yet." }));
    }
    // The list is redrawn wholesale; put keyboard focus back where it was.
    if (focusedKey) {
      const again = list.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`);
      if (again) again.focus();
    }
  }

  function renderScenario(s) {
    let lastRun = "never run";
    if (s.last_executed_at) {
      lastRun = `last run ${s.last_status || "done"}, `;
    }
    const meta = el("p", { class: "meta" }, lastRun);
    if (s.last_executed_at) {
      meta.append(el("time", { datetime: s.last_executed_at, text: formatTime(s.last_executed_at) }));
    }
    const statusClass = s.last_status ? `status-${s.last_status}` : "status-none";
    const button = (key, text, label, handler, cls = "small") =>
      el("button", {
        type: "button",
        class: cls,
        "aria-label": label,
        text,
        dataset: { key: `${s.id}:${key}` },
        onclick: handler,
      });
    const del = button("delete", "Delete", `Delete ${s.name}`, () => deleteScenario(s, del), "small danger");
    return el(
      "li",
      { class: `scenario ${statusClass}`, dataset: { testid: "scenario", id: String(s.id) } },
      el("div", { class: "scenario-text" }, el("p", { class: "name", text: s.name }), meta),
      el(
        "div",
        { class: "actions", role: "group", "aria-label": `Actions for ${s.name}` },
        button("passed", "Passed", `Record a passed run of ${s.name}`, () => execute(s, "passed")),
        button("failed", "Failed", `Record a failed run of ${s.name}`, () => execute(s, "failed")),
        del,
      ),
    );
  }

  async function scenarioAction(run, success) {
    const session = state.session;
    try {
      await run();
      if (session !== state.session) return;
      setStatus($("scenarios-status"), success);
      await loadScenarios(session);
    } catch (err) {
      if (session !== state.session) return;
      handleError(err, $("scenarios-status"));
      if (err instanceof ApiError && err.status === 404) await loadScenarios(session);
    }
  }

  async function createScenario(event) {
    event.preventDefault();
    const name = $("scenario-name").value.trim();
    const description = $("scenario-description").value.trim();
    if (!name) {
      setStatus($("scenarios-status"), "Give the scenario a name.", true);
      $("scenario-name").focus();
      return;
    }
    const body = description ? { name, description } : { name };
    await scenarioAction(async () => {
      await api("POST", "/scenarios", body);
      $("scenario-form").reset();
    }, `Created "${name}".`);
  }

  function execute(s, status) {
    return scenarioAction(
      () => api("POST", `/scenarios/${encodeURIComponent(s.id)}/executions`, { status }),
      `Recorded a ${status} run of "${s.name}".`,
    );
  }

  function deleteScenario(s, button) {
    // Two presses, so that a stray click or key press does not delete anything.
    if (button.dataset.armed !== "true") {
      button.dataset.armed = "true";
      button.textContent = "Confirm delete";
      setTimeout(() => {
        if (button.isConnected) {
          button.dataset.armed = "false";
          button.textContent = "Delete";
        }
      }, 4000);
      return undefined;
    }
    return scenarioAction(
      () => api("DELETE", `/scenarios/${encodeURIComponent(s.id)}`),
      `Deleted "${s.name}".`,
    );
  }

  // -- wiring -------------------------------------------------------------------------------

  function init() {
    $("sign-in-form").addEventListener("submit", submitSignIn);
    $("sign-out").addEventListener("click", revokeAndSignOut);
    $("mark-all").addEventListener("click", markAllRead);
    $("load-more").addEventListener("click", loadMore);
    $("scenario-form").addEventListener("submit", createScenario);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.token && $("app").hidden === false && !streamUp()) poll();
    });
    window.addEventListener("online", () => {
      if (!state.token || $("app").hidden !== false) return;
      reconnectNow(state.session);
      if (!streamUp()) poll();
    });
    // Signing in or out in another tab applies here too.
    window.addEventListener("storage", (event) => {
      if (event.key !== TOKEN_KEY) return;
      if (!event.newValue) signOut("You signed out in another tab.");
      else if (event.newValue !== state.token) resume(event.newValue);
    });
    const saved = localStorage.getItem(TOKEN_KEY);
    if (saved) resume(saved);
    else showSignIn();
  }

  init();
})();
