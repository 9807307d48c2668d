// The desk's inbox: chat and email offers over MQTT (MQTT.js over the desk's WebSocket, relayed
// to the embedded broker) with the agent's own credentials; the broker's ACL lets the agent read
// only its own offers and state and write only its own commands. Accept or reject an offer
// (its time left shows), read and answer a chat or an email, complete it with a wrap-up code
// and notes. docs/mqtt.md has the payloads.
"use strict";

(function () {
  const $ = id => document.getElementById(id);
  const inbox = { client: null, connected: false, tasks: new Map(), me: null, prefix: "", sent: [] };
  window.deskInbox = inbox;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function command(cmd) {
    const payload = JSON.stringify({ version: 1, ...cmd });
    inbox.sent.push(cmd);
    inbox.client.publish(inbox.prefix + "agents/" + inbox.me + "/commands", payload, { qos: 1 });
  }

  function render() {
    const ul = $("inbox");
    const focus = document.activeElement && document.activeElement.closest("li[data-task]");
    const keep = {};  // what the agent is typing survives a re-render
    for (const li of ul.querySelectorAll("li[data-task]")) {
      keep[li.dataset.task] = { reply: li.querySelector(".reply-text")?.value || "",
                                code: li.querySelector(".code")?.value || "", notes: li.querySelector(".notes")?.value || "" };
    }
    ul.textContent = "";
    const now = Date.now() / 1000;
    for (const t of inbox.tasks.values()) {
      const li = el("li", { "class": t.state, "data-task": t.id, "data-channel": t.channel });
      const data = t.data || {};
      const who = data.customer || data.from || data.name || "";
      const head = el("div", { "class": "head" });
      head.append(el("span", {}, (t.channel === "email" ? "Email" : "Chat") + (who ? " from " + who : "") + " · " + t.queue));
      if (t.state === "offer") head.append(el("span", { "class": "left" }, Math.max(0, Math.ceil(t.expires - now)) + "s left"));
      li.append(head);
      if (t.channel === "email" && (data.subject || data.body)) {
        li.append(el("div", { "class": "subject" }, "Subject: " + (data.subject || "")));
        li.append(el("div", { "class": "body" }, data.body || ""));
      } else if (data.text) {
        li.append(el("div", { "class": "body" }, data.text));
      }
      if (t.state === "offer") {
        const row = el("div", { "class": "row" });
        row.append(el("button", { type: "button", "class": "go", "data-action": "accept" }, "Accept"),
                   el("button", { type: "button", "data-action": "reject" }, "Reject"));
        li.append(row);
      } else {
        const msgs = el("div", { "class": "msgs" });
        for (const m of t.messages) {
          msgs.append(el("div", { "class": m.from }, (m.from === "agent" ? "You" : (m.name || who || "Customer")) + ": " + m.text));
        }
        li.append(msgs);
        const k = keep[t.id] || {};
        const reply = el("textarea", { "class": "reply-text", placeholder: t.channel === "email" ? "Your answer" : "Message" });
        reply.value = k.reply || "";
        li.append(reply, el("div", { "class": "row" }, ""));
        li.lastChild.append(el("button", { type: "button", "data-action": "reply" }, "Send"));
        const wrap = el("div", { "class": "wrap" });
        const code = el("input", { "class": "code", placeholder: "wrap-up code" });
        code.value = k.code || "";
        const notes = el("textarea", { "class": "notes", placeholder: "notes" });
        notes.value = k.notes || "";
        wrap.append(code, notes, el("button", { type: "button", "class": "stop", "data-action": "complete" }, "Complete"));
        li.append(wrap);
      }
      ul.append(li);
    }
    $("inbox-empty").hidden = inbox.tasks.size > 0;
    if (focus) {
      const again = ul.querySelector(`li[data-task="${CSS.escape(focus.dataset.task)}"] .reply-text`);
      if (again) again.focus();
    }
  }

  function onMessage(topic, raw) {
    let m;
    try { m = JSON.parse(new TextDecoder().decode(raw)); } catch (e) { return; }
    if (!topic.endsWith("/offers")) return;
    const t = inbox.tasks.get(m.task);
    if (m.event === "offer") {
      inbox.tasks.set(m.task, { id: m.task, channel: m.channel, queue: m.queue, data: m.data || {}, state: "offer",
                                expires: m.expires_at || (Date.now() / 1000 + (m.timeout || 30)), messages: [] });
    } else if (m.event === "offer-cancelled") {
      if (t && t.state === "offer") inbox.tasks.delete(m.task);
    } else if (m.event === "assigned") {
      const held = t || { id: m.task, channel: m.channel, queue: m.queue, data: m.data || {}, messages: [] };
      held.state = "held";
      held.data = m.data || held.data;
      inbox.tasks.set(m.task, held);
    } else if (m.event === "message" && t) {
      t.messages.push({ from: "customer", name: m.name, text: m.text });
    } else {
      return;
    }
    render();
  }

  // a task that is no longer held or offered (completed, transferred, expired) leaves the inbox
  function onView(v) {
    const live = new Set();
    for (const [ch, c] of Object.entries(v.channels || {})) {
      if (ch === "voice") continue;
      for (const id of [...(c.holding || []), ...(c.offered || [])]) live.add(id);
    }
    let changed = false;
    for (const id of [...inbox.tasks.keys()]) {
      if (!live.has(id) && inbox.tasks.get(id).seen) { inbox.tasks.delete(id); changed = true; }
      else if (live.has(id)) inbox.tasks.get(id).seen = true;
    }
    if (changed) render();
  }

  async function start(view) {
    inbox.me = view.agent;
    const r = await window.desk.api("GET", "/desk/api/inbox");
    if (r.status !== 200) { $("inbox-conn").textContent = r.data.error || "no inbox"; return; }
    if (typeof mqtt === "undefined") { $("inbox-conn").textContent = "MQTT.js is not installed (scripts/setup)"; return; }
    inbox.prefix = r.data.prefix;
    const url = "wss://" + location.host + r.data.path;
    const client = mqtt.connect(url, {
      username: r.data.username, password: r.data.password, protocolVersion: 4, clean: true,
      clientId: "desk-" + view.agent + "-" + Math.random().toString(16).slice(2, 10), reconnectPeriod: 2000,
    });
    inbox.client = client;
    client.on("connect", () => {
      client.subscribe([inbox.prefix + "agents/" + inbox.me + "/offers"], { qos: 1 }, err => {
        inbox.connected = !err;
        $("inbox-conn").textContent = err ? "refused: " + err.message : "online";
        $("inbox-conn").className = err ? "" : "ok";
      });
    });
    client.on("close", () => { inbox.connected = false; $("inbox-conn").textContent = "offline"; $("inbox-conn").className = ""; });
    client.on("error", e => { $("inbox-conn").textContent = "error: " + e.message; });
    client.on("message", onMessage);
  }

  function stop() {
    if (inbox.client) { inbox.client.end(true); inbox.client = null; }
    inbox.tasks.clear(); inbox.connected = false;
    render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("inbox").addEventListener("click", e => {
      const b = e.target.closest("[data-action]");
      const li = e.target.closest("li[data-task]");
      if (!b || !li || !inbox.client) return;
      const t = inbox.tasks.get(li.dataset.task);
      const action = b.dataset.action;
      if (action === "accept" || action === "reject") {
        command({ command: action, task: t.id });
        if (action === "reject") { inbox.tasks.delete(t.id); render(); }
      } else if (action === "reply") {
        const text = li.querySelector(".reply-text").value.trim();
        if (!text) return;
        command({ command: "reply", task: t.id, text });
        t.messages.push({ from: "agent", text });
        li.querySelector(".reply-text").value = "";
        render();
      } else if (action === "complete") {
        command({ command: "complete", task: t.id, code: li.querySelector(".code").value.trim(),
                  notes: li.querySelector(".notes").value.trim() });
        inbox.tasks.delete(t.id);
        render();
      }
    });
    setInterval(() => { if ([...inbox.tasks.values()].some(t => t.state === "offer")) render(); }, 1000);
  });
  window.desk.onSignIn.push(start);
  window.desk.onSignOut.push(stop);
  window.desk.onView.push(onView);
})();
