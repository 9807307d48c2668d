// The desk's WebRTC phone: JsSIP (npm, served by the daemon) registers at the edge over secure
// WebSocket with the agent's SIP identity (/desk/api/phone gives the HA1, never the password);
// calls ring here with the caller's name; answer, hang up, hold, mute, DTMF (RFC 4733).
// The media goes browser <-> rtpengine (DTLS-SRTP, ICE) <-> the workers (plain RTP, G.711).
"use strict";

(function () {
  const $ = id => document.getElementById(id);
  const phone = { ua: null, session: null, analyser: null, ctx: null, state: "idle", registered: false, tonesSent: [] };
  window.deskPhone = phone;

  function status(text, cls) { const el = $("phone-status"); el.textContent = text; el.className = cls || ""; }

  function showCall() {
    const s = phone.session;
    const call = $("call");
    call.hidden = !s;
    call.className = phone.state === "ringing" ? "ringing" : "";
    $("answer").hidden = phone.state !== "ringing";
    $("hold").hidden = $("mute").hidden = $("keypad").hidden = $("transfer").hidden = phone.state !== "talking";
    if (phone.state !== "talking") { $("transfer-form").hidden = true; $("transfer").setAttribute("aria-expanded", "false"); }
    if (s) {
      const from = s.remote_identity;
      const who = (from.display_name ? from.display_name + " " : "") + "<" + from.uri.user + ">";
      $("call-who").textContent = (phone.state === "ringing" ? "Ringing: " : phone.state === "talking" ? "On a call: " : "") + who;
    }
    $("hold").setAttribute("aria-pressed", String(!!(s && s.isOnHold().local)));
    $("mute").setAttribute("aria-pressed", String(!!(s && s.isMuted().audio)));
  }

  function remote(stream) {
    const audio = $("remote-audio");
    audio.srcObject = stream;
    audio.play().catch(() => {});
    // the level and frequency of what the agent hears (the tests read it; a meter could too)
    try {
      phone.ctx = phone.ctx || new AudioContext();
      const an = phone.ctx.createAnalyser();
      an.fftSize = 8192;
      phone.ctx.createMediaStreamSource(stream).connect(an);
      phone.analyser = an;
      phone.ctx.resume();
    } catch (e) { /* no WebAudio: the call works without the analyser */ }
  }

  // the strongest frequency the agent hears now: {freq (Hz), db}
  phone.peak = () => {
    const an = phone.analyser;
    if (!an) return null;
    const buf = new Float32Array(an.frequencyBinCount);
    an.getFloatFrequencyData(buf);
    let best = 1;
    for (let i = 2; i < buf.length; i++) if (buf[i] > buf[best]) best = i;
    return { freq: best * phone.ctx.sampleRate / an.fftSize, db: buf[best] };
  };

  function attach(session) {
    phone.session = session;
    phone.state = "ringing";
    session.on("peerconnection", e => {
      e.peerconnection.addEventListener("track", t => remote(t.streams[0] || new MediaStream([t.track])));
    });
    session.on("accepted", () => { phone.state = "talking"; showCall(); });
    session.on("confirmed", () => { phone.state = "talking"; showCall(); });
    session.on("hold", showCall);
    session.on("unhold", showCall);
    session.on("muted", showCall);
    session.on("unmuted", showCall);
    const end = e => {
      phone.lastEnd = { cause: e.cause, originator: e.originator };
      phone.session = null; phone.state = "idle"; phone.analyser = null;
      showCall();
    };
    session.on("ended", end);
    session.on("failed", end);
    // the existing connection's peer (a re-used session's tracks) also counts
    if (session.connection) {
      session.connection.addEventListener("track", t => remote(t.streams[0] || new MediaStream([t.track])));
    }
    showCall();
  }

  async function start() {
    const r = await window.desk.api("GET", "/desk/api/phone");
    if (r.status !== 200) { status(r.data.error || "no phone", "bad"); return; }
    if (typeof JsSIP === "undefined") { status("JsSIP is not installed on the server (scripts/setup)", "bad"); return; }
    const c = r.data;
    const ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(c.ws)], uri: c.uri, authorization_user: c.user,
      ha1: c.ha1, realm: c.realm, display_name: c.display_name, register: true, register_expires: 300,
      session_timers: false, user_agent: "Ringmaster desk (JsSIP)",
    });
    phone.ua = ua;
    status("connecting…");
    ua.on("connected", () => status("connected, registering…"));
    ua.on("disconnected", () => { phone.registered = false; status("disconnected", "bad"); });
    ua.on("registered", () => { phone.registered = true; status("registered: " + c.uri, "ok"); });
    ua.on("unregistered", () => { phone.registered = false; status("not registered", "bad"); });
    ua.on("registrationFailed", e => { phone.registered = false; status("registration failed: " + e.cause, "bad"); });
    ua.on("newRTCSession", e => {
      if (e.originator !== "remote") return;
      if (phone.session) { e.session.terminate({ status_code: 486, reason_phrase: "Busy Here" }); return; }
      attach(e.session);
    });
    ua.start();
  }

  function stop() {
    if (phone.ua) { phone.ua.stop(); phone.ua = null; }
    phone.session = null; phone.state = "idle"; phone.registered = false;
    status("not connected");
    showCall();
  }

  // the Transfer control's names: what the server offers for the call in hand (the view's
  // "transfer"); typing another name is allowed, the server refuses it with the reason
  function transferChoices() {
    const v = (window.desk.view && window.desk.view.transfer) || {};
    const names = v[$("transfer-kind").value] || [];
    const list = $("transfer-targets");
    if (list.dataset.names === names.join("\n")) return;
    list.dataset.names = names.join("\n");
    list.textContent = "";
    for (const n of names) { const o = document.createElement("option"); o.value = n; list.appendChild(o); }
  }

  async function transfer(e) {
    e.preventDefault();
    const kind = $("transfer-kind").value, target = $("transfer-target").value.trim();
    $("transfer-error").textContent = "";
    if (!phone.session || phone.state !== "talking" || !target) return;
    const r = await window.desk.api("POST", "/desk/api/transfer", { kind, target });
    // done: the controller hangs up this leg (BYE), the phone goes idle and wrap-up follows
    if (r.status === 200) { phone.transferred = r.data; return; }
    $("transfer-error").textContent = "Transfer refused: " + (r.data.error || "HTTP " + r.status);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("transfer").addEventListener("click", () => {
      const form = $("transfer-form");
      form.hidden = !form.hidden;
      $("transfer").setAttribute("aria-expanded", String(!form.hidden));
      $("transfer-error").textContent = "";
      transferChoices();
    });
    $("transfer-kind").addEventListener("change", transferChoices);
    $("transfer-form").addEventListener("submit", transfer);
    $("answer").addEventListener("click", () => {
      if (!phone.session || phone.state !== "ringing") return;
      phone.session.answer({ mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } });
    });
    $("hangup").addEventListener("click", () => { if (phone.session) phone.session.terminate(); });
    $("hold").addEventListener("click", () => {
      const s = phone.session;
      if (!s) return;
      if (s.isOnHold().local) s.unhold(); else s.hold();
    });
    $("mute").addEventListener("click", () => {
      const s = phone.session;
      if (!s) return;
      if (s.isMuted().audio) s.unmute({ audio: true }); else s.mute({ audio: true });
    });
    $("keypad").addEventListener("click", e => {
      const b = e.target.closest("[data-dtmf]");
      const s = phone.session;
      if (!b || !s) return;
      // RFC 4733 events in the RTP stream (RTCDTMFSender): what the workers take as digits
      const sender = s.connection && s.connection.getSenders().find(x => x.dtmf);
      if (sender && !sender.dtmf.ontonechange) {
        sender.dtmf.ontonechange = ev => { if (ev.tone) phone.tonesSent.push(ev.tone); };
      }
      s.sendDTMF(b.dataset.dtmf, { transportType: "RFC2833", duration: 160 });
    });
  });
  window.desk.onSignIn.push(start);
  (window.desk.onView = window.desk.onView || []).push(transferChoices);
  window.desk.onSignOut.push(stop);
})();
