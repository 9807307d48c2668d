// The agent's desk: sign-in, the one state button, wrap-up. Talks only to its own origin
// (/desk/api/...); the session is an HttpOnly cookie this script never sees.
"use strict";

const $ = id => document.getElementById(id);
const desk = { view: null, events: null, wrapTimer: null };
window.desk = desk;  // for the page's own parts (phone, inbox) and for tests to read

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  let data = {};
  try { data = await r.json(); } catch (e) { /* an empty answer */ }
  return { status: r.status, data };
}

function showError(text) { $("error").textContent = text || ""; }

const LABELS = { "available": "Available", "logged-out": "Logged out", "paused": "Paused",
                 "wrap-up": "Wrap-up", "busy": "On a task", "ringing": "Ringing", "on-call": "On a call" };

function render(v) {
  desk.view = v;
  $("who").textContent = v.name + " (" + v.agent + ")";
  // the button shows the one presence the phone, MQTT and the API see: logged out, paused
  // with its reason, or available; wrap-up and a task in hand show through it
  const summary = (v.status || "").split(":")[0];
  let shown = v.state;
  if (v.state === "available" && ["wrap-up", "on-call", "ringing", "busy"].includes(summary)) shown = summary;
  const btn = $("state");
  btn.dataset.state = shown === "on-call" ? "busy" : shown;
  $("state-label").textContent = (LABELS[shown] || shown) + (v.state === "paused" && v.reason ? ": " + v.reason : "")
    + (v.state === "available" && v.registered === false ? " (phone not registered)" : "");
  const opts = $("pause-options");
  if (opts.dataset.reasons !== v.pause_reasons.join("\n")) {
    opts.dataset.reasons = v.pause_reasons.join("\n");
    opts.textContent = "";
    for (const r of v.pause_reasons) {
      const b = document.createElement("button");
      b.type = "button"; b.setAttribute("role", "menuitem");
      b.dataset.stateOption = "pause"; b.dataset.reason = r;
      b.textContent = "Pause: " + r;
      opts.appendChild(b);
    }
  }
  renderWrapup();
  renderCard(v);
  for (const fn of desk.onView || []) fn(v);
}

// the customer card: the task in hand (held before offered), its caller and what the IVR
// collected (a call) or the task's fields (a chat or email). Text only: the values come from
// callers and integrations, never trusted as markup.
function renderCard(v) {
  const held = new Set(Object.values(v.channels || {}).flatMap(c => c.holding || []));
  const cards = (v.cards || []).slice().sort((a, b) => held.has(b.task) - held.has(a.task));
  const card = cards[0];
  const dl = $("card");
  dl.textContent = "";
  $("card-empty").hidden = !!card;
  if (!card) { renderCustomer(null); return; }
  dl.dataset.task = card.task;
  const rows = [["Channel", card.channel], ["Queue", card.queue], ["Caller", card.caller || "–"],
                ["Waiting since", new Date(card.enqueued_at * 1000).toLocaleTimeString()]];
  for (const [k, val] of Object.entries(card.variables || card.data || {})) {
    rows.push([k, typeof val === "object" ? JSON.stringify(val) : String(val)]);
  }
  for (const [k, val] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = val; dd.dataset.field = k;
    dl.append(dt, dd);
  }
  renderCustomer(card.customer);
}

// who the customer is (the key the call or task came with, name and tier when known) and the
// last interactions over every channel, newest first (docs/customers.md)
function renderCustomer(c) {
  const who = $("card-customer"), box = $("card-history-box"), body = $("card-history").tBodies[0];
  who.textContent = ""; body.textContent = "";
  who.hidden = box.hidden = !c;
  if (!c) return;
  who.dataset.key = c.key;
  for (const [k, field, val] of [["Customer", "key", c.key], ["Name", "name", c.name], ["Tier", "tier", c.tier]]) {
    if (!val) continue;
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = val; dd.dataset.customer = field;
    who.append(dt, dd);
  }
  for (const h of c.history || []) {
    const tr = document.createElement("tr");
    tr.dataset.ref = h.ref || "";
    const when = new Date(h.at * 1000);
    const cells = [when.toLocaleDateString() + " " + when.toLocaleTimeString(), h.channel, h.queue || "–",
                   h.agent || "–", h.disposition || "–", h.code || "–"];
    const names = ["at", "channel", "queue", "agent", "disposition", "code"];
    cells.forEach((text, i) => {
      const td = document.createElement("td"); td.textContent = text; td.dataset.col = names[i];
      tr.appendChild(td);
    });
    if (h.notes) tr.title = h.notes;  // the note (its first 200 characters) on hover
    body.appendChild(tr);
  }
  $("card-history-empty").hidden = (c.history || []).length > 0;
}

function renderWrapup() {
  const v = desk.view;
  const left = v && v.wrapup ? Object.entries(v.wrapup) : [];
  const box = $("wrapup");
  if (!left.length) { box.hidden = true; return; }
  const elapsed = (Date.now() / 1000) - desk.viewAt;
  const parts = left.map(([ch, s]) => ch + " " + Math.max(0, Math.ceil(s - elapsed)) + "s").join(", ");
  $("wrapup-left").textContent = parts + " left";
  box.hidden = false;
}

async function setState(action, reason) {
  $("state-menu").hidden = true;
  $("state").setAttribute("aria-expanded", "false");
  const body = { action };
  if (reason) body.reason = reason;
  const r = await api("POST", "/desk/api/state", body);
  if (r.status === 200) { showError(""); desk.viewAt = Date.now() / 1000; render(r.data); }
  else if (r.status === 401) signedOut();
  else showError(r.data.error || ("error " + r.status));
}

function listen() {
  if (desk.events) desk.events.close();
  const es = new EventSource("/desk/api/events");
  desk.events = es;
  es.onopen = () => { $("conn").textContent = "live"; $("conn").className = ""; };
  es.onmessage = e => { desk.viewAt = Date.now() / 1000; render(JSON.parse(e.data)); };
  es.onerror = async () => {
    $("conn").textContent = "reconnecting…"; $("conn").className = "down";
    const r = await api("GET", "/desk/api/me");
    if (r.status === 401) signedOut();
  };
}

function signedIn(view) {
  $("signin").hidden = true;
  $("desk").hidden = false;
  desk.viewAt = Date.now() / 1000;
  render(view);
  listen();
  for (const fn of desk.onSignIn || []) fn(view);
  if (!desk.wrapTimer) desk.wrapTimer = setInterval(renderWrapup, 500);
}

function signedOut() {
  if (desk.events) { desk.events.close(); desk.events = null; }
  for (const fn of desk.onSignOut || []) fn();
  desk.view = null;
  $("desk").hidden = true;
  $("signin").hidden = false;
}

async function start() {
  $("signin-form").addEventListener("submit", async e => {
    e.preventDefault();
    const r = await api("POST", "/desk/api/session", { agent: $("agent").value, password: $("password").value });
    $("password").value = "";
    if (r.status !== 200) { $("signin-error").textContent = r.data.error || ("error " + r.status); return; }
    $("signin-error").textContent = "";
    await enter();
  });
  $("state").addEventListener("click", () => {
    const menu = $("state-menu");
    menu.hidden = !menu.hidden;
    $("state").setAttribute("aria-expanded", String(!menu.hidden));
  });
  $("state-menu").addEventListener("click", e => {
    const b = e.target.closest("[data-state-option]");
    if (b) setState(b.dataset.stateOption, b.dataset.reason);
  });
  $("wrapup-done").addEventListener("click", () => setState("wrapup-done"));
  $("signout").addEventListener("click", async () => { await api("DELETE", "/desk/api/session"); signedOut(); });
  await enter();
}

// the session's role picks the page: an agent's desk, or a supervisor's view (desk-supervisor.js)
async function enter() {
  const who = await api("GET", "/desk/api/session");
  if (who.status !== 200) { signedOut(); return; }
  if (who.data.role === "supervisor") {
    $("signin").hidden = true;
    for (const fn of desk.onSupervisor || []) fn(who.data);
    return;
  }
  const me = await api("GET", "/desk/api/me");
  if (me.status === 200) signedIn(me.data); else signedOut();
}

desk.api = api;
desk.showError = showError;
desk.onView = desk.onView || [];
desk.onSignIn = desk.onSignIn || [];
desk.onSignOut = desk.onSignOut || [];
desk.onSupervisor = desk.onSupervisor || [];
desk.signedOut = signedOut;
document.addEventListener("DOMContentLoaded", start);
