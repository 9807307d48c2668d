"""The agents' desk (/desk): sign-in, sessions, and what a signed-in agent may see and do.

An agent signs in with their own password (`agents.NAME.desk_password`, else their softphone's
SIP password) and gets a session: a random id in a cookie that is HttpOnly (page scripts cannot
read it), Secure (only sent over TLS: the desk has its own HTTPS listener, `http.desk`) and
SameSite=Strict (no other site's page can make the browser send it), and every change also
needs `Content-Type: application/json`, which a cross-site form cannot send. A session ends
after `idle_minutes` unused or `session_hours` after sign-in (OWASP Session Management Cheat
Sheet: idle and absolute timeouts), and at sign-out. A session carries exactly one agent: every
read and change is about that agent; there is no parameter naming another one, so a second
agent's session cannot act on alice's tasks (a task not offered to or held by the session's
agent is refused by the same checks as its MQTT command).

Passwords are compared as scrypt digests (RFC 7914) with a per-process salt, in a thread, with
hmac.compare_digest; an unknown agent costs the same work as a known one. Five wrong passwords
for one agent within a minute refuse further tries for that agent for a minute (429).

Supervisors (http.desk.supervisors) sign in on the same form; their session has the role
"supervisor" and no agent: it reaches only /desk/api/supervisor/... (their queues, members and
agents' live states, and the API's supervisor actions through ringmaster.supervisor, the code
the API runs), and an agent's session gets the API's 403 there.

DeskSessions holds no IO (time is passed in); DeskApi is the aiohttp side.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from ringmaster import inputs
from ringmaster.config import Config, DeskConfig, DeskSupervisor
from ringmaster.mqtt.payloads import AgentCommand, BadPayload
from ringmaster.supervisor import ActionRefused, agent_change, member_add_fields, member_change, role_refusal

if TYPE_CHECKING:
    from ringmaster.controller import Controller

log = structlog.get_logger("ringmaster.desk")

COOKIE = "rm_desk"
FAILURES_ALLOWED = 5       # wrong passwords per agent within FAILURE_WINDOW ...
FAILURE_WINDOW = 60.0      # ... before sign-in for that agent is refused for LOCKOUT seconds
LOCKOUT = 60.0
SESSIONS_MAX = 10_000      # a flood of sign-ins cannot grow memory without bound
BODY_MAX = 4096
# scrypt cost: n=2**14, r=8 (16 MiB, ~40 ms here): RFC 7914's interactive-login figure
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
# state-button actions (the presence commands the phone, MQTT and the API use)
STATE_ACTIONS = ("available", "pause", "logout", "wrapup-done")
TASK_ACTIONS = ("accept", "reject", "complete")
TRANSFER_KINDS = ("queue", "agent", "flow")  # POST /api/agents/{agent}/transfer's kinds
STATIC = {"desk.js": "application/javascript", "desk-phone.js": "application/javascript", "desk.css": "text/css",
          "desk-supervisor.js": "application/javascript",
          # JsSIP (npm), bundled for the browser by scripts/setup (package.json's "bundle")
          "jssip.min.js": "application/javascript",
          "desk-inbox.js": "application/javascript",
          # MQTT.js (npm), its own browser bundle, copied by scripts/setup
          "mqtt.min.js": "application/javascript"}
VENDOR = {"jssip.min.js", "mqtt.min.js"}
MQTT_FRAME_MAX = 131_072  # the broker's max_packet_size (mqtt/broker.py)
SESSION_CHECK = 5.0  # seconds: how soon a relayed MQTT connection ends after its session did


def desk_secret(cfg: Config, agent: str) -> str | None:
    """The password `agent` signs in to the desk with: desk_password, else the SIP password;
    None when it has neither (a mobile agent without desk_password cannot sign in)."""
    spec = cfg.agents.get(agent)
    if spec is None:
        return None
    if spec.desk_password:
        return spec.desk_password
    return spec.softphone.password if spec.softphone is not None else None


def desk_user(cfg: Config, name: str) -> tuple[str | None, str]:
    """Who `name` is at the desk's sign-in: (its password, "agent") for an agent,
    (its password, "supervisor") for one of http.desk.supervisors, (None, "agent") for nobody
    (`ringmaster check` keeps the two sets of names apart)."""
    if name in cfg.agents:
        return desk_secret(cfg, name), "agent"
    desk = cfg.http.desk if cfg.http is not None else None
    sup = desk.supervisors.get(name) if desk is not None else None
    return (sup.password, "supervisor") if sup is not None else (None, "agent")


@dataclass
class DeskSession:
    """One signed-in agent (or supervisor: role "supervisor", agent is then the supervisor's
    name): started and last used at (epoch seconds)."""

    agent: str
    started: float
    used: float
    role: str = "agent"


@dataclass
class DeskSessions:
    """Sessions and sign-in throttling, with no IO. idle/absolute: seconds."""

    idle: float
    absolute: float
    sessions: dict[str, DeskSession] = field(default_factory=dict)
    failures: dict[str, list[float]] = field(default_factory=dict)

    def locked(self, agent: str, now: float) -> bool:
        """True while `agent` has had FAILURES_ALLOWED wrong passwords within the window (the
        lock lasts LOCKOUT seconds after the last of them)."""
        recent = [t for t in self.failures.get(agent, []) if now - t < max(FAILURE_WINDOW, LOCKOUT)]
        self.failures[agent] = recent
        return len(recent) >= FAILURES_ALLOWED and now - recent[-1] < LOCKOUT

    def failed(self, agent: str, now: float) -> None:
        self.failures.setdefault(agent, []).append(now)
        if len(self.failures) > SESSIONS_MAX:  # names that are no agents: forget the oldest
            del self.failures[next(iter(self.failures))]

    def start(self, agent: str, now: float, role: str = "agent") -> str:
        """A new session for `agent` (role: agent or supervisor); its id (256 random bits, URL-safe)."""
        self.failures.pop(agent, None)
        self.expire(now)
        while len(self.sessions) >= SESSIONS_MAX:
            del self.sessions[next(iter(self.sessions))]  # the oldest sign-in goes first
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = DeskSession(agent, now, now, role)
        return sid

    def get(self, sid: str, now: float) -> DeskSession | None:
        """The live session `sid` (its last use moves to now), None when unknown or expired."""
        s = self.sessions.get(sid)
        if s is None:
            return None
        if now - s.used > self.idle or now - s.started > self.absolute:
            del self.sessions[sid]
            return None
        s.used = now
        return s

    def alive(self, sid: str, now: float) -> bool:
        """Whether `sid` is a live session, without counting this as a use."""
        s = self.sessions.get(sid)
        return s is not None and now - s.used <= self.idle and now - s.started <= self.absolute

    def end(self, sid: str) -> None:
        self.sessions.pop(sid, None)

    def expire(self, now: float) -> None:
        for sid in [k for k, s in self.sessions.items() if now - s.used > self.idle or now - s.started > self.absolute]:
            del self.sessions[sid]


class PasswordCheck:
    """scrypt digests of the agents' desk secrets, made on first use and kept; compares in
    constant time. The salt is per process: nothing here is stored."""

    def __init__(self) -> None:
        self.salt = secrets.token_bytes(16)
        self._digests: dict[str, bytes] = {}

    def _digest(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode(), salt=self.salt, **SCRYPT)  # type: ignore[arg-type]

    def check(self, secret: str | None, given: str) -> bool:
        """True when `given` is `secret` (None: nobody; the same work is done, then False)."""
        key = secret if secret is not None else "\x00no-secret"
        want = self._digests.get(key)
        if want is None:
            want = self._digest(key)
            if len(self._digests) < SESSIONS_MAX:
                self._digests[key] = want
        ok = hmac.compare_digest(want, self._digest(given))
        return ok and secret is not None


def ssl_context(desk: DeskConfig) -> ssl.SSLContext:
    """A server context for the desk's certificate and key (TLS 1.2 or later). OSError or
    ssl.SSLError naming the file when they cannot be read."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(desk.certificate, desk.key)
    except (OSError, ssl.SSLError) as exc:
        raise RuntimeError(f"http.desk: cannot load certificate {desk.certificate} / key {desk.key}: {exc}") from None
    return ctx


def _error(cls: type[web.HTTPException], reason: str, **kw: Any) -> web.HTTPException:
    return cls(text=json.dumps({"error": reason}), content_type="application/json", **kw)


class DeskApi:
    """The desk's routes (listed in api.ROUTES). controller: the live state and the presence
    commands; cfg_of: the current config (reloads change agents and passwords)."""

    def __init__(self, controller: Controller, cfg_of: Callable[[], Config], clock: Callable[[], float] = time.time):
        self.controller = controller
        self.cfg_of = cfg_of
        self.clock = clock
        self.sessions = DeskSessions(idle=3600.0, absolute=12 * 3600.0)  # set from http.desk at each request
        self.passwords = PasswordCheck()

    def _desk(self) -> DeskConfig:
        http = self.cfg_of().http
        if http is None or http.desk is None:
            raise _error(web.HTTPNotFound, "no desk is configured (http.desk)")
        return http.desk

    # ------------------------------------------------------------ request checks

    def _secure(self, request: web.Request) -> None:
        # the desk lives on its HTTPS listener only: its cookie is Secure, its page needs a
        # secure context for the microphone
        desk = self._desk()
        if not request.secure:
            raise _error(web.HTTPNotFound, f"the desk is served over https on {desk.listen}")
        # a reload may change the timeouts: sessions follow at their next use
        self.sessions.idle, self.sessions.absolute = desk.idle_minutes * 60.0, desk.session_hours * 3600.0

    def _any_session(self, request: web.Request) -> DeskSession:
        self._secure(request)
        s = self.sessions.get(request.cookies.get(COOKIE, ""), self.clock())
        if s is None:
            raise _error(web.HTTPUnauthorized, "sign in first (the session is unknown or has expired)")
        known = s.agent in self.cfg_of().agents if s.role == "agent" else s.agent in self._desk().supervisors
        if not known:  # a reload removed the agent or supervisor: the session is over
            self.sessions.end(request.cookies.get(COOKIE, ""))
            raise _error(web.HTTPUnauthorized, "sign in first (the session is unknown or has expired)")
        return s

    def _session(self, request: web.Request) -> DeskSession:
        """The request's agent session (401 without one; 403 for a supervisor's: these routes act
        on the session's own agent, and a supervisor is none)."""
        s = self._any_session(request)
        if s.role != "agent":
            raise _error(web.HTTPForbidden, "a supervisor's session has no agent of its own: /desk/api/supervisor")
        return s

    def _supervisor(self, request: web.Request) -> tuple[DeskSession, DeskSupervisor]:
        """The request's supervisor session and its config (401 without a session; 403 for an
        agent's, with the API's words: ringmaster.supervisor.role_refusal)."""
        s = self._any_session(request)
        refusal = role_refusal(s.role, "supervisor")
        if refusal:
            raise _error(web.HTTPForbidden, refusal)
        return s, self._desk().supervisors[s.agent]

    async def _body(self, request: web.Request) -> dict[str, Any]:
        # JSON only: a cross-site form cannot send this content type without a CORS preflight,
        # which this server never grants (the cookie's SameSite=Strict is the first wall)
        if request.content_type != "application/json":
            raise _error(web.HTTPUnsupportedMediaType, "send application/json")
        raw = await request.content.read(BODY_MAX + 1)
        try:
            return inputs.json_object(raw, max_bytes=BODY_MAX, max_depth=3)
        except inputs.InputRefused as exc:
            raise _error(web.HTTPBadRequest, f"body: {exc}") from None

    # ------------------------------------------------------------ the page

    async def page(self, request: web.Request) -> web.StreamResponse:
        self._secure(request)
        html = resources.files("ringmaster.web").joinpath("desk.html").read_text()
        webrtc = self.cfg_of().sip.webrtc
        wss = f" wss://{webrtc.listen}" if webrtc is not None else ""
        headers = dict(_PAGE_HEADERS)
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace("CONNECT", wss)
        return web.Response(text=html, content_type="text/html", headers=headers)

    async def static(self, request: web.Request) -> web.StreamResponse:
        self._secure(request)
        name = request.match_info["name"]
        if name not in STATIC:  # a fixed list: no path from the request reaches the file system
            raise _error(web.HTTPNotFound, "no such file")
        path = resources.files("ringmaster.web").joinpath("vendor" if name in VENDOR else "").joinpath(name)
        if not path.is_file():
            raise _error(web.HTTPNotFound, f"{name} is not installed: run scripts/setup (npm install, npm run bundle)")
        body = path.read_bytes()
        return web.Response(body=body, content_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------ sign-in

    async def sign_in(self, request: web.Request) -> web.Response:
        self._secure(request)
        body = await self._body(request)
        agent, password = body.get("agent"), body.get("password")
        if not isinstance(agent, str) or not isinstance(password, str) or len(agent) > 64 or len(password) > 256:
            raise _error(web.HTTPBadRequest, "agent and password: strings")
        now = self.clock()
        if self.sessions.locked(agent, now):
            log.warning("desk.sign_in_locked", agent=agent[:64], peer=request.remote)
            raise _error(web.HTTPTooManyRequests, "too many wrong passwords: try again in a minute",
                         headers={"Retry-After": str(int(LOCKOUT))})
        secret, role = desk_user(self.cfg_of(), agent)
        ok = await asyncio.to_thread(self.passwords.check, secret, password)
        if not ok:
            self.sessions.failed(agent, now)
            log.warning("desk.sign_in_refused", agent=agent[:64], peer=request.remote)
            raise _error(web.HTTPUnauthorized, "wrong agent or password")
        sid = self.sessions.start(agent, now, role)
        log.info("desk.signed_in", agent=agent, role=role, peer=request.remote)
        resp = web.json_response({"agent": agent, "role": role})
        resp.set_cookie(COOKIE, sid, httponly=True, secure=True, samesite="Strict", path="/desk",
                        max_age=int(self.sessions.absolute))
        return resp

    async def whoami(self, request: web.Request) -> web.Response:
        """Who the session is: {"agent": name, "role": agent|supervisor} (the page opens the
        agent's desk or the supervisor's view by it)."""
        s = self._any_session(request)
        return web.json_response({"agent": s.agent, "role": s.role})

    async def sign_out(self, request: web.Request) -> web.Response:
        self._secure(request)
        sid = request.cookies.get(COOKIE, "")
        s = self.sessions.get(sid, self.clock())
        self.sessions.end(sid)
        if s is not None:
            log.info("desk.signed_out", agent=s.agent)
        resp = web.json_response({"signed_out": True})
        resp.del_cookie(COOKIE, path="/desk")
        return resp

    # ------------------------------------------------------------ the agent's state

    def view(self, agent: str) -> dict[str, Any]:
        """What the page shows of `agent`: its state word, pause reason, per channel state,
        wrap-up seconds left, tasks offered and held (ids) with their customer cards
        (Controller.task_card), and the pause reasons to pick from."""
        state = self.controller.live_state()
        cfg = self.cfg_of()
        a = state.agents.get(agent)
        spec = cfg.agents[agent]
        out: dict[str, Any] = {"agent": agent, "name": spec.name or agent,
                               "pause_reasons": list(self._desk().pause_reasons), "at": state.at}
        if a is None:  # an agent in no queue: the ACD does not know it
            return out | {"status": "logged-out", "state": "logged-out", "reason": None, "registered": False,
                          "channels": {}, "wrapup": {}, "cards": []}
        state_word = "logged-out" if not a.logged_in else "paused" if a.paused is not None else "available"
        wrapup = {ch: round(c.wrapup_until - state.at, 1) for ch, c in a.channels.items()
                  if c.wrapup_until > state.at}
        # the customer card of each task offered to or held by the agent (IVR variables, task fields)
        task_ids = sorted({t for c in a.channels.values() for t in (*c.holding, *c.offered)})
        cards = [c for c in (self.controller.task_card(t) for t in task_ids) if c is not None]
        return out | {"status": a.status, "state": state_word, "reason": a.paused, "registered": a.registered,
                      "wrapup": wrapup, "cards": cards, "transfer": self.transfer_targets(agent),
                      "channels": {ch: {"state": c.state.value, "holding": list(c.holding), "offered": list(c.offered)}
                                   for ch, c in a.channels.items()}}

    def transfer_targets(self, agent: str) -> dict[str, list[str]]:
        """What the page's Transfer control offers while `agent` is connected to a call: the
        config's queues, the other agents, and the flows of the call's dial plan (names, sorted);
        empty lists without a connected call. Only a choice list: the transfer itself is checked
        by AcdRuntime.transfer_refusal (an agent who cannot take a call now is refused there)."""
        acd = self.controller.acd
        q = acd.agent_call(agent) if acd is not None else None
        if acd is None or q is None:
            return {kind: [] for kind in TRANSFER_KINDS}
        run = q.session.run
        return {"queue": sorted(acd.engine.queues),
                "agent": sorted(a for a in self.cfg_of().agents if a != agent),
                "flow": sorted(run.plan.flows) if run is not None else []}

    async def transfer(self, request: web.Request) -> web.Response:
        """Blind transfer of the call the session's agent is connected to, to a queue, another
        agent or a flow: the code POST /api/agents/{agent}/transfer runs (Controller.transfer,
        AcdRuntime.blind_transfer), so the dial plan's rules and refusals are the API's; via
        "desk" in the call's events. 400 with the reason when refused (nothing changed)."""
        s = self._session(request)
        body = await self._body(request)
        if set(body) - {"kind", "target"}:
            raise _error(web.HTTPBadRequest, "fields: kind, target")
        kind, target = body.get("kind"), body.get("target")
        if kind not in TRANSFER_KINDS or not isinstance(target, str) or not target or len(target) > 64:
            raise _error(web.HTTPBadRequest, "kind (" + ", ".join(TRANSFER_KINDS) + ") and target (its name) are "
                                             "strings")
        result = self.controller.transfer(s.agent, str(kind), target, "desk")
        if result.get("error"):
            raise _error(web.HTTPBadRequest, str(result["error"]))
        log.info("desk.transfer", agent=s.agent, kind=kind, target=target, call_id=result.get("call_id"))
        return web.json_response(result)

    async def phone(self, request: web.Request) -> web.Response:
        """What the page's WebRTC phone registers with: the edge's WSS address, the agent's SIP
        URI, user name, realm and HA1 (MD5(user:realm:password), RFC 2617: JsSIP's `ha1`; the
        password itself never leaves the server). 404 when the agent has no softphone or the
        edge takes no browser phones (sip.webrtc)."""
        s = self._session(request)
        cfg = self.cfg_of()
        spec = cfg.agents[s.agent]
        if cfg.sip.webrtc is None or spec.softphone is None:
            raise _error(web.HTTPNotFound, "no browser phone: the edge takes none (sip.webrtc), or this agent "
                                           "has no softphone")
        realm = cfg.sip.host
        user = spec.softphone.username
        ha1 = hashlib.md5(f"{user}:{realm}:{spec.softphone.password}".encode()).hexdigest()
        return web.json_response({"ws": f"wss://{cfg.sip.webrtc.listen}", "uri": f"sip:{user}@{realm}",
                                  "user": user, "realm": realm, "ha1": ha1, "display_name": spec.name or s.agent},
                                 headers={"Cache-Control": "no-store"})

    async def inbox(self, request: web.Request) -> web.Response:
        """What the page's inbox connects with: MQTT over WebSocket at /desk/mqtt (relayed to the
        broker), the agent's own MQTT user and password (the broker checks them and confines the
        agent to its topics by its ACL) and the topic prefix. 404 without MQTT or an agent MQTT
        password."""
        s = self._session(request)
        cfg = self.cfg_of()
        spec = cfg.agents[s.agent]
        if cfg.mqtt is None or not spec.mqtt_password:
            raise _error(web.HTTPNotFound, "no inbox: no MQTT broker, or this agent has no mqtt_password")
        return web.json_response({"path": "/desk/mqtt", "username": s.agent, "password": spec.mqtt_password,
                                  "prefix": cfg.mqtt.topic_prefix}, headers={"Cache-Control": "no-store"})

    async def mqtt_socket(self, request: web.Request) -> web.StreamResponse:
        """MQTT over WebSocket (subprotocol mqtt) for a signed-in agent, relayed byte for byte to
        the broker's TCP listener: the broker authenticates the agent's own credentials and
        applies its ACL. The connection ends within SESSION_CHECK seconds of a sign-out. Debian's mosquitto 2.0.11 cannot be asked for this itself: its
        websockets listener ignores the bind address (it listened on every interface) and does
        not start without a plain listener beside it (docs/engine-findings.md)."""
        s = self._session(request)
        mq = self.cfg_of().mqtt
        if mq is None:
            raise _error(web.HTTPNotFound, "no MQTT broker")
        ws = web.WebSocketResponse(protocols=("mqtt",), max_msg_size=MQTT_FRAME_MAX, heartbeat=30.0)
        await ws.prepare(request)
        try:
            reader, writer = await asyncio.open_connection(mq.host, mq.port)
        except OSError as exc:
            log.warning("desk.mqtt_unreachable", agent=s.agent, error=str(exc))
            await ws.close(code=1011, message=b"broker unreachable")
            return ws

        async def up() -> None:
            async for msg in ws:
                if msg.type != web.WSMsgType.BINARY:
                    break  # MQTT over WebSocket is binary frames only (MQTT 3.1.1, 6.0)
                writer.write(msg.data)
                await writer.drain()

        async def down() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(data)

        sid = request.cookies.get(COOKIE, "")

        async def session_ends() -> None:
            while self.sessions.alive(sid, self.clock()):
                await asyncio.sleep(SESSION_CHECK)
            log.info("desk.mqtt_closed_session_ended", agent=s.agent)

        tasks = [asyncio.create_task(up()), asyncio.create_task(down()), asyncio.create_task(session_ends())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            await ws.close()
        return ws

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response(self.view(self._session(request).agent))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the agent's view at once, on every change, at least every second;
        the stream ends when the session does."""
        s = self._session(request)
        sid = request.cookies.get(COOKIE, "")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        changed = self.controller.changed
        try:
            # an open page counts as use; the absolute limit and a sign-out end the stream
            while self.sessions.get(sid, self.clock()) is s:
                await resp.write(f"data: {json.dumps(self.view(s.agent))}\n\n".encode())
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), 1.0)
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    def _command(self, agent: str, command: str, **fields: Any) -> None:
        router = self.controller.router
        if router is None:
            raise _error(web.HTTPConflict, "no queues are configured")
        try:
            router.agent_command(agent, AgentCommand.model_validate({"version": 1, "command": command, **fields}))
        except BadPayload as exc:
            raise _error(web.HTTPConflict, str(exc)) from None

    async def change_state(self, request: web.Request) -> web.Response:
        """The state button: available (log in, end a pause), pause with a configured reason,
        logout, or wrapup-done (for one channel or all)."""
        s = self._session(request)
        body = await self._body(request)
        action = body.get("action")
        if set(body) - {"action", "reason", "channel"}:
            raise _error(web.HTTPBadRequest, "fields: action, reason, channel")
        if action not in STATE_ACTIONS:
            raise _error(web.HTTPBadRequest, "action: " + ", ".join(STATE_ACTIONS))
        view = self.view(s.agent)
        if action == "available":
            if view["state"] == "logged-out":
                self._command(s.agent, "login")
            if self.view(s.agent)["state"] == "paused":
                self._command(s.agent, "unpause")
        elif action == "pause":
            reason = body.get("reason")
            if reason not in self._desk().pause_reasons:
                raise _error(web.HTTPBadRequest, "reason: one of " + ", ".join(self._desk().pause_reasons))
            if view["state"] == "logged-out":
                self._command(s.agent, "login")
            self._command(s.agent, "pause", reason=reason)
        elif action == "logout":
            self._command(s.agent, "logout")
        else:
            channel = body.get("channel")
            self._command(s.agent, "wrapup-done", **({"channel": channel} if channel is not None else {}))
        log.info("desk.state", agent=s.agent, action=action, reason=body.get("reason"))
        return web.json_response(self.view(s.agent))

    async def task_action(self, request: web.Request) -> web.Response:
        """accept or reject a chat/email offered to the session's agent, or complete one it holds;
        a task that is not this agent's is refused (409) and nothing changes."""
        s = self._session(request)
        body = await self._body(request)
        if set(body) - {"action"}:
            raise _error(web.HTTPBadRequest, "fields: action")
        action = body.get("action")
        if action not in TASK_ACTIONS:
            raise _error(web.HTTPBadRequest, "action: " + ", ".join(TASK_ACTIONS))
        task = request.match_info["task"]
        self._command(s.agent, str(action), task=task)
        log.info("desk.task", agent=s.agent, task=task, action=action)
        return web.json_response(self.view(s.agent))

    # ------------------------------------------------------------ the supervisor's view

    def _queues_of(self, sup: DeskSupervisor) -> list[str]:
        queues = self.cfg_of().queues
        return [q for q in queues if sup.queues is None or q in sup.queues]

    def supervisor_view(self, name: str) -> dict[str, Any]:
        """What the supervisor's page shows: per queue of theirs, callers (and chats, emails)
        waiting and the longest wait per channel, and the members (agent, tier, dynamic: changed
        at run time) with their live state (Controller.live_state(): the status word, paused
        reason, registered); the agents that may be added; the pause reasons."""
        sup = self._desk().supervisors[name]
        cfg = self.cfg_of()
        state = self.controller.live_state()
        members = self.controller.members.view(cfg) if self.controller.members is not None else {}
        queues = []
        for qname in self._queues_of(sup):
            q = state.queues.get(qname)
            channels = {ch: {"waiting": len(q.waiting_on(ch)) if q else 0,
                             "longest_wait": round(q.longest_wait(ch, state.at), 1) if q else 0.0}
                        for ch in ("voice", "chat", "email")}
            rows = []
            for m in members.get(qname, []):
                agent = str(m["agent"])
                a = state.agents.get(agent)
                spec = cfg.agents.get(agent)
                word = ("logged-out" if a is None or not a.logged_in else "paused" if a.paused is not None
                        else "available")
                rows.append({**m, "name": (spec.name if spec is not None else "") or agent,
                             "status": a.status if a else "logged-out", "state": word,
                             "reason": a.paused if a else None, "registered": a.registered if a else False})
            queues.append({"name": qname, "waiting": sum(c["waiting"] for c in channels.values()),
                           "longest_wait": max(c["longest_wait"] for c in channels.values()),
                           "channels": channels, "members": rows})
        return {"supervisor": name, "name": sup.name or name, "role": "supervisor", "at": state.at,
                "queues": queues, "agents": sorted(cfg.agents), "pause_reasons": list(self._desk().pause_reasons)}

    async def supervisor(self, request: web.Request) -> web.Response:
        s, _ = self._supervisor(request)
        return web.json_response(self.supervisor_view(s.agent))

    async def supervisor_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the supervisor's view at once, on every change, at least every
        second; the stream ends when the session does."""
        s, _ = self._supervisor(request)
        sid = request.cookies.get(COOKIE, "")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        changed = self.controller.changed
        try:
            while self.sessions.get(sid, self.clock()) is s and s.agent in self._desk().supervisors:
                await resp.write(f"data: {json.dumps(self.supervisor_view(s.agent))}\n\n".encode())
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), 1.0)
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    def _overseen_queue(self, sup: DeskSupervisor, queue: str) -> None:
        if queue in self.cfg_of().queues and queue not in self._queues_of(sup):
            raise _error(web.HTTPForbidden, f"queue {queue[:64]!r} is not one of yours")

    async def supervisor_agent(self, request: web.Request) -> web.Response:
        """Change an agent's presence, as POST /api/agents/{agent} does (the same checks and
        command: ringmaster.supervisor.agent_change): for an agent who is a member of one of the
        supervisor's queues (403 otherwise)."""
        s, sup = self._supervisor(request)
        agent = request.match_info["agent"]
        members = self.controller.members.view(self.cfg_of()) if self.controller.members is not None else {}
        if not any(m["agent"] == agent for q in self._queues_of(sup) for m in members.get(q, [])):
            raise _error(web.HTTPForbidden, f"agent {agent[:64]!r} is in none of your queues")
        body = await self._body(request)
        try:
            result = agent_change(self.controller, agent, body)
        except ActionRefused as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        log.info("desk.supervisor_agent", supervisor=s.agent, agent=agent, action=body.get("action"),
                 reason=body.get("reason"))
        return web.json_response(result)

    async def supervisor_member_add(self, request: web.Request) -> web.Response:
        """AddQueueMember in one of the supervisor's queues, as POST /api/queues/{queue}/members."""
        s, sup = self._supervisor(request)
        queue = request.match_info["queue"]
        self._overseen_queue(sup, queue)
        try:
            agent, tier = member_add_fields(await self._body(request))
            result = member_change(self.controller, queue, agent, "add", tier, by=f"desk:{s.agent}")
        except ActionRefused as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        log.info("desk.supervisor_member", supervisor=s.agent, queue=queue, agent=agent, action="add")
        return web.json_response(result)

    async def supervisor_member_tier(self, request: web.Request) -> web.Response:
        """QueueMemberPenalty in one of the supervisor's queues, as POST
        /api/queues/{queue}/members/{agent} {"tier": 1-9}."""
        s, sup = self._supervisor(request)
        queue, agent = request.match_info["queue"], request.match_info["agent"]
        self._overseen_queue(sup, queue)
        body = await self._body(request)
        if set(body) != {"tier"}:
            raise _error(web.HTTPBadRequest, "fields: tier (1-9)")
        try:
            result = member_change(self.controller, queue, agent, "tier", body["tier"], by=f"desk:{s.agent}")
        except ActionRefused as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        log.info("desk.supervisor_member", supervisor=s.agent, queue=queue, agent=agent, action="tier",
                 tier=body["tier"])
        return web.json_response(result)

    async def supervisor_member_remove(self, request: web.Request) -> web.Response:
        """RemoveQueueMember in one of the supervisor's queues, as DELETE
        /api/queues/{queue}/members/{agent}."""
        s, sup = self._supervisor(request)
        queue, agent = request.match_info["queue"], request.match_info["agent"]
        self._overseen_queue(sup, queue)
        if request.content_type != "application/json":  # no body, but the same wall against cross-site forms
            raise _error(web.HTTPUnsupportedMediaType, "send application/json")
        try:
            result = member_change(self.controller, queue, agent, "remove", by=f"desk:{s.agent}")
        except ActionRefused as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        log.info("desk.supervisor_member", supervisor=s.agent, queue=queue, agent=agent, action="remove")
        return web.json_response(result)


# the page runs only its own scripts; no framing (clickjacking); no referrer leaves the desk
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # CONNECT: the edge's WSS address, when browser phones are on
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'CONNECT; media-src 'self' blob:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
