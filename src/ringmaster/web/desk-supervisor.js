// The supervisor's view of the desk: per queue of theirs, who waits and for how long, and the
// members with their live state, refreshed by server-sent events; the actions the API allows a
// supervisor (pause with a reason, unpause, log in, log out an agent; add, re-tier or remove a
// queue's members at run time) go through /desk/api/supervisor/..., which run the API's own checks.
"use strict";

(function () {
  const $ = id => document.getElementById(id);
  const sup = { events: null, view: null };
  window.deskSupervisor = sup;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const seconds = s => s >= 60 ? Math.floor(s / 60) + "m " + Math.round(s % 60) + "s" : Math.round(s) + "s";
  const STATE = { "available": "Available", "paused": "Paused", "logged-out": "Logged out" };

  async function act(method, path, body) {
    const r = await window.desk.api(method, path, body);
    if (r.status === 200) $("super-error").textContent = "";
    else if (r.status === 401) { window.desk.signedOut(); }
    else $("super-error").textContent = r.data.error || ("error " + r.status);
    return r;
  }

  function agentAction(agent, action) {
    const body = { action };
    if (action === "pause") body.reason = $("super-reason").value;
    return act("POST", "/desk/api/supervisor/agents/" + encodeURIComponent(agent), body);
  }

  function panel(q) {
    const box = $("super-queues");
    let p = box.querySelector(`section[data-queue="${CSS.escape(q.name)}"]`);
    if (p) return p;
    p = el("section", { class: "panel queue", "data-queue": q.name });
    p.append(el("h2", {}, q.name), el("p", { class: "stats" }));
    const table = el("table", { class: "members" });
    const head = el("tr");
    for (const h of ["Agent", "State", "Tier", ""]) head.appendChild(el("th", {}, h));
    table.append(el("thead"), el("tbody"));
    table.tHead.appendChild(head);
    const add = el("div", { class: "row add" });
    const pick = el("select", { class: "add-agent" });
    const tier = el("select", { class: "add-tier" });
    for (let t = 1; t <= 9; t++) tier.appendChild(el("option", { value: String(t) }, "tier " + t));
    const btn = el("button", { type: "button", "data-action": "add" }, "Add member");
    btn.addEventListener("click", () => {
      if (!pick.value) return;
      act("POST", "/desk/api/supervisor/queues/" + encodeURIComponent(q.name) + "/members",
          { agent: pick.value, tier: Number(tier.value) });
    });
    add.append(pick, tier, btn);
    p.append(table, add);
    box.appendChild(p);
    return p;
  }

  function render(v) {
    sup.view = v;
    $("super-who").textContent = v.name + " (" + v.supervisor + ")";
    const reasons = $("super-reason");
    if (reasons.dataset.reasons !== v.pause_reasons.join("\n")) {
      reasons.dataset.reasons = v.pause_reasons.join("\n");
      reasons.textContent = "";
      for (const r of v.pause_reasons) reasons.appendChild(el("option", { value: r }, r));
    }
    const shown = new Set(v.queues.map(q => q.name));
    for (const old of $("super-queues").querySelectorAll("section[data-queue]")) {
      if (!shown.has(old.dataset.queue)) old.remove();
    }
    for (const q of v.queues) {
      const p = panel(q);
      const per = Object.entries(q.channels).filter(([, c]) => c.waiting)
        .map(([ch, c]) => `${ch} ${c.waiting} (longest ${seconds(c.longest_wait)})`);
      p.querySelector(".stats").textContent = q.waiting
        ? `Waiting: ${q.waiting} · longest ${seconds(q.longest_wait)} · ${per.join(", ")}` : "Waiting: 0";
      p.querySelector(".stats").dataset.waiting = String(q.waiting);
      const body = p.querySelector("tbody");
      // rebuilt only when a member or its state changed: a tier list open in the page stays open
      const sig = JSON.stringify(q.members);
      if (body.dataset.sig !== sig) renderMembers(q, body, sig);
      // the agents who may be added: every configured agent not in the queue yet
      const members = new Set(q.members.map(m => m.agent));
      const addable = v.agents.filter(a => !members.has(a));
      const pick = p.querySelector(".add-agent");
      if (pick.dataset.agents !== addable.join("\n")) {
        const keep = pick.value;
        pick.dataset.agents = addable.join("\n");
        pick.textContent = "";
        for (const a of addable) pick.appendChild(el("option", { value: a }, a));
        if (addable.includes(keep)) pick.value = keep;
      }
      p.querySelector(".add").hidden = addable.length === 0;
    }
  }

  function renderMembers(q, body, sig) {
    body.dataset.sig = sig;
    body.textContent = "";
    for (const m of q.members) {
      const tr = el("tr", { "data-agent": m.agent, "data-state": m.state });
      tr.appendChild(el("td", {}, m.name === m.agent ? m.agent : `${m.name} (${m.agent})`));
      const status = m.state === "paused" ? "Paused: " + (m.reason || "")
        : m.state === "available" && m.status !== "available" ? m.status : (STATE[m.state] || m.state);
      tr.appendChild(el("td", { class: "state" }, status + (m.registered || m.state === "logged-out" ? "" : " (no phone)")));
      // the tier (Asterisk's penalty): a pick sets it at once (QueueMemberPenalty)
      const tierCell = el("td", m.dynamic ? { title: "changed at run time (kept across restarts)" } : {});
      const tierPick = el("select", { class: "tier" });
      for (let t = 1; t <= 9; t++) tierPick.appendChild(el("option", { value: String(t) }, String(t)));
      tierPick.value = String(m.tier);
      tierPick.addEventListener("change", () => act("POST", "/desk/api/supervisor/queues/" + encodeURIComponent(q.name)
        + "/members/" + encodeURIComponent(m.agent), { tier: Number(tierPick.value) })
        .then(r => { if (r.status !== 200) body.dataset.sig = ""; }));  // refused: the next view puts it back
      tierCell.append(tierPick, m.dynamic ? " *" : "");
      tr.appendChild(tierCell);
      const actions = el("div", { class: "row" });
      const buttons = m.state === "logged-out" ? [["login", "Log in"]]
        : m.state === "paused" ? [["unpause", "Unpause"], ["logout", "Log out"]]
        : [["pause", "Pause"], ["logout", "Log out"]];
      for (const [action, label] of buttons) {
        const b = el("button", { type: "button", "data-action": action }, label);
        b.addEventListener("click", () => agentAction(m.agent, action));
        actions.appendChild(b);
      }
      const rm = el("button", { type: "button", "data-action": "remove", class: "stop" }, "Remove");
      rm.addEventListener("click", () => act("DELETE", "/desk/api/supervisor/queues/" + encodeURIComponent(q.name)
        + "/members/" + encodeURIComponent(m.agent), {}));
      actions.appendChild(rm);
      const cell = el("td");
      cell.appendChild(actions);
      tr.appendChild(cell);
      body.appendChild(tr);
    }
  }

  function listen() {
    if (sup.events) sup.events.close();
    const es = new EventSource("/desk/api/supervisor/events");
    sup.events = es;
    es.onopen = () => { $("super-conn").textContent = "live"; $("super-conn").className = ""; };
    es.onmessage = e => render(JSON.parse(e.data));
    es.onerror = async () => {
      $("super-conn").textContent = "reconnecting…"; $("super-conn").className = "down";
      const r = await window.desk.api("GET", "/desk/api/supervisor");
      if (r.status === 401) window.desk.signedOut();
    };
  }

  async function start() {
    const r = await window.desk.api("GET", "/desk/api/supervisor");
    if (r.status !== 200) { window.desk.signedOut(); return; }
    $("super").hidden = false;
    render(r.data);
    listen();
  }

  function stop() {
    if (sup.events) { sup.events.close(); sup.events = null; }
    $("super").hidden = true;
    $("super-queues").textContent = "";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("super-signout").addEventListener("click", async () => {
      await window.desk.api("DELETE", "/desk/api/session");
      window.desk.signedOut();
    });
  });
  window.desk.onSupervisor.push(start);
  window.desk.onSignOut.push(stop);
})();
