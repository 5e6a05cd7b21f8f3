// The web inbox: a plain client of the public JSON API under /api/v1 (no build step).
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
    loadPreferences(session);
    loadScenarios(session);
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
    try {
      const [count, page] = await Promise.all([
        api("GET", "/notifications/unread-count"),
        api("GET", `/notifications?status=all&limit=${PAGE_SIZE}`),
      ]);
      if (session !== state.session) return;
      const wasDown = state.failures > 0;
      state.failures = 0;
      hideBanner();
      setUnread(count.unread);
      const added = mergeFirstPage(page);
      refreshTimes();
      // Others' changes to scenarios arrive as notifications; the panel follows them.
      if (added || wasDown) loadScenarios(session);
    } catch (err) {
      if (session !== state.session) return;
      if (err instanceof ApiError && err.status === 401) {
        handleError(err);
        return;
      }
      state.failures += 1;
      handleError(err, isDown(err) ? null : $("inbox-status"));
    }
    if (session === state.session) schedulePoll();
  }

  async function refreshCount(session) {
    try {
      const count = await api("GET", "/notifications/unread-count");
      if (session === state.session) setUnread(count.unread);
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
    try {
      const updated = await api("POST", `/notifications/${encodeURIComponent(id)}/${action}`);
      if (session !== state.session) return;
      // The pressed button is now disabled or hidden; keep focus on the item.
      const hadFocus = node.contains(document.activeElement);
      upsert(updated);
      if (hadFocus) activeMark(node).focus();
      setStatus($("inbox-status"), "");
      await refreshCount(session);
    } catch (err) {
      if (session === state.session) handleError(err, $("inbox-status"));
    } finally {
      state.pending.delete(id);
      node.removeAttribute("aria-busy");
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
      if (!document.hidden && state.token && $("app").hidden === false) poll();
    });
    window.addEventListener("online", () => {
      if (state.token && $("app").hidden === false) poll();
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
