"""The HTTP API (aiohttp), the wallboard and Prometheus /metrics, served by the daemon.

Bearer tokens from the config carry a role: operator reads; supervisor may also change agent
states, pause recordings and read every voicemail box; admin may also reload the plan. An agent
token (an agent's desk) reaches only the voicemail boxes its agent may read, and nothing else.
No token -> 401, wrong role -> 403, bad parameters -> 400 with the reason, a store that cannot
be read -> 503; none of them changes anything.

Every route is one entry of ROUTES: the app is built from it, the role each route needs comes
from it, and /openapi.json is generated from it (query parameters from the reports' filters),
so the document cannot drift from what is served. Stored records are read through
ringmaster.reports (in its reader thread); live state through Controller.live_state().
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiohttp import web

from ringmaster import inputs
from ringmaster.acd.config import CHANNELS
from ringmaster.acd.model import AgentAction
from ringmaster.config import HttpConfig
from ringmaster.desk import DeskApi, ssl_context
from ringmaster.metrics import Metrics
from ringmaster.reports import CallFilter, FilterError, TaskFilter, VoicemailFilter, reads
from ringmaster.reports import stats as st
from ringmaster.reports.filters import MESSAGE_STATES, Param
from ringmaster.reports.reader import ReportReader, StoreUnreadable
from ringmaster.reports.today import TodayFigures
from ringmaster.supervisor import (
    REASON_MAX,
    ActionRefused,
    agent_change,
    member_add_fields,
    member_change,
    role_refusal,
)
from ringmaster.voicemail import VoicemailError, boxes_of, url_base

if TYPE_CHECKING:
    from ringmaster.controller import Controller

log = structlog.get_logger("ringmaster.api")
T = TypeVar("T")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# request bodies are small commands ({"action": "pause", "reason": "lunch"}): a few kB at most
BODY_MAX = 16_384
BODY_DEPTH = 4
TODAY_CACHE_SECONDS = 1.0  # the wallboard's "service level today" is read at most this often


class RecordingAction(StrEnum):
    """What a supervisor may do to a live call's recording."""

    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class Route:
    """One served route: method, path (aiohttp syntax, {name} for path parameters), the Api
    method that answers it, what it does, the least role it needs (None: no token at all),
    its query parameters and the JSON Schema of its body (None: no body); access: who may call
    it, where the role's rank alone does not say (the voicemail routes: ROLES["agent"] lets
    every token through, the handler keeps operators out and agents to their boxes)."""

    method: str
    path: str
    handler: str
    summary: str
    role: str | None = "operator"
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    responses: dict[str, str] = field(default_factory=dict)
    access: str = ""


def _voicemail_routes() -> tuple[Route, ...]:
    # role "agent" lets every token through the middleware; Api._boxes then keeps an agent token
    # to its agent's boxes and refuses operators (like recordings, a caller's voice is for
    # supervisors), who with admins read every box
    access = ("Role: agent (the boxes its agent may read), supervisor or admin (every box); "
              "an operator token is refused (403).")
    forbidden = {"403": "an operator token, or a box that is not this agent's"}
    unreadable = {"503": "the store cannot be read"}
    missing = {"404": "no such message in the boxes this token may read"}
    stored = {"503": "the store is not taking writes: the change is kept, written and announced when it recovers"}

    def route(method: str, path: str, handler: str, summary: str, **kw: Any) -> Route:
        return Route(method, path, handler, summary, role="agent", access=access, **kw)

    return (
        route("GET", "/api/voicemail", "voicemail_list",
              "Voicemail messages (not deleted) in the boxes the token may read, newest first",
              params=VoicemailFilter.PARAMS, responses={**forbidden, "404": "no such box", **unreadable}),
        route("GET", "/api/voicemail/{message}", "voicemail_message", "One voicemail message",
              responses={**forbidden, **missing, **unreadable}),
        route("GET", "/api/voicemail/{message}/audio", "voicemail_audio", "The message's audio (WAV, 8 kHz mono)",
              responses={**forbidden, "404": "no such message in the token's boxes, or its audio is gone",
                         **unreadable}),
        route("POST", "/api/voicemail/{message}", "voicemail_change", "Mark a message heard, or new again",
              body={"type": "object", "required": ["state"], "additionalProperties": False,
                    "properties": {"state": {"type": "string", "enum": list(MESSAGE_STATES)}}},
              responses={**forbidden, **missing, **stored}),
        route("DELETE", "/api/voicemail/{message}", "voicemail_delete",
              "Delete a message (its audio; the record stays, marked)", responses={**forbidden, **missing, **stored}),
    )


def _desk_routes() -> tuple[Route, ...]:
    # the desk signs its agents in itself (ringmaster.desk): no bearer token, a session cookie,
    # and only on the desk's HTTPS listener (404 on the plain one)
    access = ("A desk session: the rm_desk cookie from POST /desk/api/session (HTTPS listener http.desk only); "
              "everything is about the session's own agent.")
    signed_out = {"401": "no session, or it has expired", "404": "not the desk's HTTPS listener"}
    stale = {"409": "the change cannot be applied now (the reason says why): nothing changed"}
    sup_access = ("A desk session of one of http.desk.supervisors (an agent's session: 403, the API's role check); "
                  "only the supervisor's queues (http.desk.supervisors.NAME.queues) and their members.")

    def route(method: str, path: str, handler: str, summary: str, **kw: Any) -> Route:
        return Route(method, path, "desk." + handler, summary, role=None, access=access, **kw)

    return (
        route("GET", "/desk", "page", "The agent's desk page (sign-in form until signed in)"),
        route("GET", "/desk/static/{name}", "static", "The desk page's script and style"),
        route("POST", "/desk/api/session", "sign_in", "Sign in: sets the session cookie",
              body={"type": "object", "required": ["agent", "password"], "additionalProperties": False,
                    "properties": {"agent": {"type": "string"}, "password": {"type": "string"}}},
              responses={"401": "wrong agent or password", "429": "too many wrong passwords for this agent"}),
        route("DELETE", "/desk/api/session", "sign_out", "Sign out: ends the session"),
        route("GET", "/desk/api/me", "me", "The agent's state, wrap-up left, tasks and pause reasons",
              responses=signed_out),
        route("GET", "/desk/api/phone", "phone",
              "The WebRTC phone's registration: the edge's WSS address, SIP URI, user, realm and HA1",
              responses={**signed_out, "404": "no browser phone for this agent (sip.webrtc, softphone)"}),
        route("GET", "/desk/api/inbox", "inbox",
              "The inbox's MQTT connection: the WebSocket path, the agent's MQTT user and password, the prefix",
              responses={**signed_out, "404": "no MQTT broker, or no mqtt_password for this agent"}),
        route("GET", "/desk/mqtt", "mqtt_socket",
              "MQTT over WebSocket (subprotocol mqtt), relayed to the broker (which checks the agent's "
              "credentials and ACL)", responses=signed_out),
        route("GET", "/desk/api/events", "events", "Server-sent events: the agent's view on every change",
              responses=signed_out),
        route("POST", "/desk/api/state", "change_state", "The state button: available, pause, logout, wrapup-done",
              body={"type": "object", "required": ["action"], "additionalProperties": False,
                    "properties": {"action": {"type": "string", "enum": ["available", "pause", "logout", "wrapup-done"]},
                                   "reason": {"type": "string"}, "channel": {"type": "string"}}},
              responses={**signed_out, **stale}),
        route("POST", "/desk/api/tasks/{task}", "task_action",
              "Accept or reject a chat/email offered to the agent, or complete one it holds",
              body={"type": "object", "required": ["action"], "additionalProperties": False,
                    "properties": {"action": {"type": "string", "enum": ["accept", "reject", "complete"]}}},
              responses={**signed_out, "409": "the task is not offered to / held by this agent: nothing changed"}),
        route("POST", "/desk/api/transfer", "transfer",
              "Blind transfer of the agent's call to a queue, another agent or a flow (as POST "
              "/api/agents/{agent}/transfer, for the session's own agent)",
              body={"type": "object", "required": ["kind", "target"], "additionalProperties": False,
                    "properties": {"kind": {"type": "string", "enum": ["queue", "agent", "flow"]},
                                   "target": {"type": "string"}}},
              responses={**signed_out, "400": "no connected call, or a target the plan does not allow (the "
                                              "reason says why): nothing dialled"}),
        route("GET", "/desk/api/session", "whoami", "Who the session is: agent name and role (agent or supervisor)",
              responses=signed_out),
        *(Route(r.method, r.path, r.handler, r.summary, role=None, body=r.body, access=sup_access,
                responses={**signed_out, "403": "an agent's session, or an agent or queue that is not the "
                                                "supervisor's", **r.responses})
          for r in (
              route("GET", "/desk/api/supervisor", "supervisor",
                    "The supervisor's queues: waiting, longest wait, members with their live state"),
              route("GET", "/desk/api/supervisor/events", "supervisor_events",
                    "Server-sent events: the supervisor's view on every change"),
              route("POST", "/desk/api/supervisor/agents/{agent}", "supervisor_agent",
                    "Change the presence of an agent of the supervisor's queues (as POST /api/agents/{agent})",
                    body={"type": "object", "required": ["action"], "additionalProperties": False,
                          "properties": {"action": {"type": "string", "enum": [a.value for a in AgentAction]},
                                         "reason": {"type": "string", "maxLength": REASON_MAX}}},
                    responses={"400": "a bad action or reason, or one the ACD refuses: nothing changed"}),
              route("POST", "/desk/api/supervisor/queues/{queue}/members", "supervisor_member_add",
                    "AddQueueMember in one of the supervisor's queues (as POST /api/queues/{queue}/members)",
                    body={"type": "object", "required": ["agent"], "additionalProperties": False,
                          "properties": {"agent": {"type": "string"},
                                         "tier": {"type": "integer", "minimum": 1, "maximum": 9}}},
                    responses={"400": "an unknown agent or queue, a member already, a bad tier: nothing changed"}),
              route("POST", "/desk/api/supervisor/queues/{queue}/members/{agent}", "supervisor_member_tier",
                    "QueueMemberPenalty in one of the supervisor's queues (as POST /api/queues/{queue}/members/{agent})",
                    body={"type": "object", "required": ["tier"], "additionalProperties": False,
                          "properties": {"tier": {"type": "integer", "minimum": 1, "maximum": 9}}},
                    responses={"400": "not a member, or a bad tier: nothing changed"}),
              route("DELETE", "/desk/api/supervisor/queues/{queue}/members/{agent}", "supervisor_member_remove",
                    "RemoveQueueMember in one of the supervisor's queues (as DELETE /api/queues/{queue}/members/{agent})",
                    responses={"400": "not a member: nothing changed"}),
          )),
    )


_TOKEN = (Param("token", "string", "the bearer token, for wall displays and EventSource that cannot send headers",
                lambda v: v),)
ROUTES: tuple[Route, ...] = (
    Route("GET", "/openapi.json", "openapi", "This document", role=None),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (text 0.0.4, or OpenMetrics when the Accept header asks)"),
    Route("GET", "/api/status", "status", "Daemon, workers, calls, agents, queues, registrations"),
    Route("GET", "/api/calls", "calls", "The call log, newest first", params=CallFilter.PARAMS,
          responses={"503": "the store cannot be read"}),
    Route("GET", "/api/calls/{call_id}", "call", "One call with its events, IVR path and queue events",
          responses={"404": "no such call", "503": "the store cannot be read"}),
    Route("GET", "/api/calls/{call_id}/recording", "recording_file", "The call's recording (WAV)", role="supervisor",
          responses={"404": "no recording for this call"}),
    Route("POST", "/api/calls/{call_id}/recording", "recording_control", "Pause or resume a live call's recording",
          role="supervisor",
          body={"type": "object", "required": ["action"], "additionalProperties": False,
                "properties": {"action": {"type": "string", "enum": [a.value for a in RecordingAction]}}}),
    Route("POST", "/api/calls/{call_id}/supervise", "supervise",
          "Listen, whisper or barge on a live queue call: the supervisor's phone rings, then joins in that mode; "
          "the same request with another mode changes it (docs/supervision.md)", role="supervisor",
          access="Role: supervisor (a token that names a supervisor acts only as that one) or admin; the "
                 "supervisor's queues only (supervision.supervisors.NAME.queues).",
          body={"type": "object", "required": ["mode", "supervisor"], "additionalProperties": False,
                "properties": {"mode": {"type": "string", "enum": ["listen", "whisper", "barge"]},
                               "supervisor": {"type": "string", "description": "a name of supervision.supervisors "
                                              "(default: the token's own supervisor)"}}},
          responses={"400": "a bad mode or an unknown supervisor", "403": "another supervisor's token, or a queue "
                     "the supervisor does not oversee", "404": "no live queue call connected to an agent",
                     "409": "the supervisor's phone is not registered or busy, another supervisor is on the call, "
                            "or the call's worker has no leg left for a supervisor: nothing dialled"}),
    Route("DELETE", "/api/calls/{call_id}/supervise", "supervise_stop",
          "End the supervision of a live call: the supervisor's leg is hung up", role="supervisor",
          access="Role: supervisor (a token that names a supervisor: only her own) or admin.",
          responses={"403": "another supervisor's", "404": "nobody supervises this call"}),
    Route("GET", "/api/tasks", "tasks", "Chat and email tasks, oldest first", params=TaskFilter.PARAMS,
          responses={"503": "the store cannot be read"}),
    Route("GET", "/api/tasks/{task_id}", "task", "One task with its events",
          responses={"404": "no such task", "503": "the store cannot be read"}),
    Route("GET", "/api/queues", "queues", "Queues: waiting callers, longest wait, agents by state, today's figures",
          responses={"503": "the store cannot be read"}),
    Route("GET", "/api/agents", "agents", "Agents and their state"),
    Route("POST", "/api/agents/{agent}", "agent_change", "Change an agent's state", role="supervisor",
          body={"type": "object", "required": ["action"], "additionalProperties": False,
                "properties": {"action": {"type": "string", "enum": [a.value for a in AgentAction]},
                               "reason": {"type": "string", "maxLength": REASON_MAX}}}),
    Route("POST", "/api/reload", "reload",
          "Validate the config file and apply it to the running daemon (dial plan, agents, queues, profiles, "
          "skills, schedules, MQTT users); 422 with the errors (file:line) if invalid or if a change cannot be "
          "made, and then nothing changes. drain: a removed queue's waiting callers go to the named queue",
          role="admin", body={"type": "object", "additionalProperties": False,
                              "properties": {"drain": {"type": "object", "additionalProperties": {"type": "string"},
                                                       "description": "removed queue -> queue of the new config"}}},
          responses={"422": "the config is invalid or cannot be applied: nothing changed"}),
    Route("GET", "/api/queues/{queue}/members", "members", "The queue's members now: agent, tier, dynamic "
          "(added or re-tiered at run time, kept across restarts)", responses={"404": "no such queue"}),
    Route("POST", "/api/queues/{queue}/members", "member_add",
          "AddQueueMember: the agent serves the queue from now on (kept across restarts)", role="supervisor",
          body={"type": "object", "required": ["agent"], "additionalProperties": False,
                "properties": {"agent": {"type": "string"},
                               "tier": {"type": "integer", "minimum": 1, "maximum": 9,
                                        "description": "1 rings first (Asterisk's penalty); default 1"}}}),
    Route("POST", "/api/queues/{queue}/members/{agent}", "member_tier",
          "QueueMemberPenalty: set the member's tier (kept across restarts)", role="supervisor",
          body={"type": "object", "required": ["tier"], "additionalProperties": False,
                "properties": {"tier": {"type": "integer", "minimum": 1, "maximum": 9}}}),
    Route("DELETE", "/api/queues/{queue}/members/{agent}", "member_remove",
          "RemoveQueueMember: no new offers from this queue; a call in hand goes on (kept across restarts)",
          role="supervisor"),
    Route("POST", "/api/agents/{agent}/wrapup", "agent_wrapup",
          "Give the agent's task (default: its latest) a wrap-up code and/or notes", role="agent",
          access="Role: agent (its own agent only), supervisor or admin; an operator token is refused (403).",
          body={"type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": {"task": {"type": "string", "description": "call or task id (default: the latest)"},
                               "code": {"type": "string", "description": "one of customers.wrapup_codes"},
                               "notes": {"type": "string", "description": "at most customers.notes_max characters"}}},
          responses={"404": "no customers section in the config"}),
    Route("POST", "/api/agents/{agent}/transfer", "agent_transfer",
          "Transfer: blind, the caller the agent talks to goes on to a queue, another agent, a flow or a listed "
          "external target (the agent's leg ends, she wraps up; queue_log BLINDTRANSFER); attended "
          "(mode attended: a consult with an agent or an external target while the caller hears hold music), "
          "then {action: complete} (queue_log ATTENDEDTRANSFER) or {action: cancel}", role="agent",
          access="Role: agent (its own agent only), supervisor or admin; an operator token is refused (403).",
          body={"type": "object", "additionalProperties": False,
                "properties": {"kind": {"type": "string", "enum": ["queue", "agent", "flow", "external"]},
                               "target": {"type": "string", "description": "the queue's, agent's or flow's name, "
                                                                           "or a transfer_targets name or number"},
                               "mode": {"type": "string", "enum": ["blind", "attended"]},
                               "action": {"type": "string", "enum": ["complete", "cancel"],
                                          "description": "ends the agent's consult (alone in the body)"}}},
          responses={"400": "no connected call, or a target the plan does not list: nothing dialled"}),
    Route("POST", "/api/agents/{agent}/dial", "agent_dial",
          "Click-to-dial: ring the agent's phone, then, once she answers, the number through the route the "
          "outbound rules give (docs/outbound.md)", role="agent",
          access="Role: agent (its own agent only), supervisor or admin; an operator token is refused (403).",
          body={"type": "object", "required": ["number"], "additionalProperties": False,
                "properties": {"number": {"type": "string", "description": "as dialled, e.g. +4512345678"}}},
          responses={"400": "refused by the outbound rules or the agent's state (the reason); nothing dialled"}),
    Route("POST", "/api/tasks/{task_id}/call", "task_call",
          "Chat to voice: the agent holding the chat or email task calls its customer's number (the task's phone "
          "field or phone customer key), ringing her first; the call is linked to the task", role="agent",
          access="Role: agent (the task's own agent only), supervisor or admin; an operator token is refused (403).",
          responses={"400": "no such held task, no phone number, or refused by the outbound rules"}),
    Route("POST", "/api/calls/{call_id}/chat", "call_chat",
          "Voice to chat: the chat an integration sent the caller of a live call a link to: a chat task in `queue` "
          "carrying the call's id, caller, number and IVR variables and its customer (docs/outbound.md)",
          role="supervisor",
          body={"type": "object", "required": ["queue"], "additionalProperties": False,
                "properties": {"queue": {"type": "string"}, "task": {"type": "string", "description": "its id"}}},
          responses={"400": "no such live call, an unknown queue, a task id in use"}),
    Route("GET", "/api/customers/{key}", "customer",
          "A customer: its keys, name, tier and whole history over every channel, newest first",
          responses={"400": "not a customer key", "404": "no customer has this key", "503": "the store cannot be read"}),
    Route("POST", "/api/customers/merge", "customer_merge",
          "Merge the customer of one key into the customer of another (every key and interaction moves)",
          role="admin",
          body={"type": "object", "required": ["from", "into"], "additionalProperties": False,
                "properties": {"from": {"type": "string"}, "into": {"type": "string"}}},
          responses={"404": "a key no customer has", "409": "both keys are one customer already"}),
    *_voicemail_routes(),
    Route("GET", "/api/callbacks", "callbacks",
          "Queued callbacks waiting or being dialled: queue, number, position, estimated wait, attempts, state"),
    Route("DELETE", "/api/callbacks/{callback_id}", "callback_cancel",
          "Cancel a waiting callback (CALLBACKCANCEL); one being dialled now is refused (409)", role="supervisor"),
    Route("GET", "/api/webhooks", "webhooks", "Webhook endpoints and their outbox: pending, in flight, dead letters"),
    Route("GET", "/api/webhooks/dead-letters", "webhook_dead_letters",
          "Webhook deliveries given up (max attempts or age), oldest first",
          params=(Param("webhook", "string", "only this endpoint's", lambda v: v),
                  Param("limit", "integer", "at most this many (1-1000, default 100)", int)),
          responses={"503": "the store cannot be read"}),
    Route("POST", "/api/webhooks/dead-letters/{id}/retry", "webhook_retry",
          "Send a dead letter again (attempts and max age start over)", role="admin",
          responses={"404": "no dead letter with this id", "409": "its webhook is not configured, or it is being sent",
                     "503": "the store cannot be read"}),
    Route("GET", "/wallboard", "wallboard", "The live wallboard page (token in ?token= for wall displays)",
          params=_TOKEN),
    Route("GET", "/wallboard/events", "wallboard_events",
          "Server-sent events: a snapshot on every change, at least every second", params=_TOKEN),
    *_desk_routes(),
)


def _error(cls: type[web.HTTPException], reason: str, **kw: Any) -> web.HTTPException:
    return cls(text=json.dumps({"error": reason}), content_type="application/json", **kw)


def _bad(reason: str) -> web.HTTPException:
    return _error(web.HTTPBadRequest, reason)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


class Api:
    """The daemon's HTTP server. controller: what it reads live state from and sends changes
    to; cfg: the `http` section (listen address, tokens)."""

    def __init__(self, controller: Controller, cfg: HttpConfig):
        self.controller = controller
        self.cfg = cfg
        self.runner: web.AppRunner | None = None
        self.reader: ReportReader | None = None  # opened at start (the store's file exists by then)
        self.today = TodayFigures()
        self._today_cache: tuple[float, dict[str, st.QueueStats]] = (0.0, {})
        self.metrics_registry = Metrics(lambda: self.controller.live_state())
        # the desk's routes answer 404 unless http.desk is set and the request came over its TLS
        self.desk = DeskApi(controller, lambda: self.controller.cfg)
        app = web.Application(middlewares=[self._auth], client_max_size=BODY_MAX)
        app.add_routes([web.get(r.path, self._handler(r.handler)) if r.method == "GET"  # HEAD too, as before
                        else web.route(r.method, r.path, self._handler(r.handler)) for r in ROUTES])
        self.app = app
        self.needs = {(r.method, r.path): r.role for r in ROUTES}
        self.params = {(r.method, r.path): r.params for r in ROUTES}

    def _handler(self, name: str) -> Handler:
        # "desk.sign_in": a DeskApi method; others are the Api's own
        owner: Any = self
        for part in name.split(".")[:-1]:
            owner = getattr(owner, part)
        return getattr(owner, name.rsplit(".", 1)[-1])  # type: ignore[no-any-return]

    async def start(self) -> None:
        """Open the reader on the store and listen on the configured address, and the desk on its
        HTTPS address (OSError if one cannot listen; RuntimeError naming the file if the desk's
        certificate or key cannot be loaded)."""
        self.reader = ReportReader(self.controller.store.path)
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.cfg.host, self.cfg.port).start()
        log.info("api.listening", listen=self.cfg.listen)
        if self.cfg.desk is not None:
            desk = self.cfg.desk
            await web.TCPSite(self.runner, desk.host, desk.port, ssl_context=ssl_context(desk)).start()
            log.info("desk.listening", listen=f"https://{desk.listen}/desk")

    async def stop(self) -> None:
        """Stop listening (open event streams end) and close the reader."""
        if self.runner is not None:
            await self.runner.cleanup()
        if self.reader is not None:
            await asyncio.to_thread(self.reader.close)

    # ------------------------------------------------------------ auth

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource else ""
        method = "GET" if request.method == "HEAD" else request.method  # a HEAD needs what its GET needs
        needed = self.needs.get((method, route), "operator")
        if needed is None:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not given and request.path.startswith("/wallboard"):
            # a wall display (and EventSource) cannot send headers: the page takes ?token=
            given = request.query.get("token", "")
        role = None
        token = None
        for t in self.cfg.tokens:
            if given and hmac.compare_digest(given.encode(), t.token.encode()):
                role, token = t.role, t
        if role is None:
            raise _error(web.HTTPUnauthorized, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        refusal = role_refusal(role, needed)
        if refusal:
            raise _error(web.HTTPForbidden, refusal)
        request["role"] = role
        request["token"] = token
        return await handler(request)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A reports read in the reader thread; 503 with the reason if the store cannot be read."""
        assert self.reader is not None, "Api.start() opens the reader"
        try:
            return await self.reader.run(fn, *args)
        except StoreUnreadable as exc:
            raise _error(web.HTTPServiceUnavailable, str(exc)) from None

    # ------------------------------------------------------------ stored records

    async def status(self, request: web.Request) -> web.Response:
        return _json(await self.controller.status())

    async def calls(self, request: web.Request) -> web.Response:
        try:
            f = CallFilter.from_query(request.query)
        except FilterError as exc:
            raise _bad(str(exc)) from None
        rows = await self._read(reads.calls, f)
        return _json({"calls": rows, "count": len(rows)})

    async def call(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        detail = await self._read(reads.call_detail, call_id)
        if detail is None:
            raise _error(web.HTTPNotFound, f"no call {call_id!r}")
        return _json(detail)

    async def tasks(self, request: web.Request) -> web.Response:
        try:
            f = TaskFilter.from_query(request.query)
        except FilterError as exc:
            raise _bad(str(exc)) from None
        return _json({"tasks": await self._read(reads.tasks, f)})

    async def task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        detail = await self._read(reads.task_detail, task_id)
        if detail is None:
            raise _error(web.HTTPNotFound, f"no task {task_id!r}")
        return _json(detail)

    async def recording_file(self, request: web.Request) -> web.StreamResponse:
        stored = await self._read(reads.recording_path, request.match_info["call_id"])
        path = Path(stored) if stored else None
        if path is None or not path.is_file():
            raise _error(web.HTTPNotFound, "no recording for this call")
        recordings = Path(self.controller.cfg.paths.recordings).resolve()
        if recordings not in path.resolve().parents:  # never serve a file outside the recordings dir
            raise _error(web.HTTPNotFound, "no recording for this call")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def _today(self, now: float) -> dict[str, st.QueueStats]:
        """queue -> today's figures (since local midnight): the rows stored since the last read."""
        queues = self.controller.cfg.queues
        return await self._read(self.today.read, now, {n: q.service_level for n, q in queues.items()},
                                {n: q.wrapup for n, q in queues.items()})

    # ------------------------------------------------------------ live state

    async def queues(self, request: web.Request) -> web.Response:
        state = self.controller.live_state()
        today = await self._today(state.at) if state.queues else {}
        out = {}
        for name, q in state.queues.items():
            stats = st.as_dicts([today[name]], [])["queues"][0] if name in today else {"queue": name, "offered": 0}
            out[name] = {"waiting": len(q.waiting),
                         "longest_wait": round(max((state.at - t.enqueued_at for t in q.waiting), default=0.0), 1),
                         "agents": dict(q.member_states(state.agents)), "today": stats}
        return _json({"queues": out})

    async def agents(self, request: web.Request) -> web.Response:
        return _json({"agents": {n: a.status for n, a in self.controller.live_state().agents.items()}})

    # ------------------------------------------------------------ changes

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object, within ringmaster.inputs' bounds; 400 with the reason if not
        (a body of 20 000 brackets used to raise RecursionError: a 500)."""
        raw = await request.read()  # at most BODY_MAX: aiohttp answers 413 beyond client_max_size
        try:
            return inputs.json_object(raw, max_bytes=BODY_MAX, max_depth=BODY_DEPTH)
        except inputs.InputRefused as exc:
            raise _bad(f"body: {exc}") from None

    async def agent_change(self, request: web.Request) -> web.Response:
        # the same checks and command as the desk's supervisor sessions (ringmaster.supervisor)
        body = await self._body(request)
        try:
            result = agent_change(self.controller, request.match_info["agent"], body)
        except ActionRefused as exc:
            raise _bad(str(exc)) from None
        log.info("api.agent_changed", agent=result["agent"], action=body["action"], role=request["role"])
        return _json(result)

    async def recording_control(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if set(body) - {"action"}:
            raise _bad(f"unknown field(s) {sorted(set(body) - {'action'})[:5]}; fields: action")
        action = body.get("action")
        if not isinstance(action, str) or action not in set(RecordingAction):
            raise _bad("action: " + " or ".join(RecordingAction))
        result = self.controller.set_recording(request.match_info["call_id"], action == RecordingAction.PAUSE)
        if result.get("error"):
            raise _bad(result["error"])
        return _json(result)

    async def supervise(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        unknown = set(body) - {"mode", "supervisor"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)[:5]}; fields: mode, supervisor")
        token = request["token"]
        as_supervisor = token.supervisor if token.role == "supervisor" else None
        mode, supervisor = body.get("mode"), body.get("supervisor", as_supervisor)
        if not isinstance(mode, str) or not isinstance(supervisor, str) or not supervisor:
            raise _bad("mode (listen, whisper or barge) and supervisor (a name of supervision.supervisors) are strings")
        result = self.controller.supervise(request.match_info["call_id"], supervisor, mode, "api", as_supervisor)
        code = result.pop("code", 200)
        if "error" in result:
            cls = {403: web.HTTPForbidden, 404: web.HTTPNotFound, 409: web.HTTPConflict}.get(code, web.HTTPBadRequest)
            raise _error(cls, result["error"])
        log.info("api.supervise", call_id=result["call_id"], supervisor=supervisor, mode=mode, token=token.name)
        return _json(result)

    async def supervise_stop(self, request: web.Request) -> web.Response:
        token = request["token"]
        as_supervisor = token.supervisor if token.role == "supervisor" else None
        result = self.controller.supervise_stop(request.match_info["call_id"], as_supervisor)
        code = result.pop("code", 200)
        if "error" in result:
            raise _error(web.HTTPForbidden if code == 403 else web.HTTPNotFound, result["error"])
        log.info("api.supervise_stop", call_id=result["call_id"], token=token.name)
        return _json(result)

    # ------------------------------------------------------------ customers

    def _customers(self) -> Any:
        book = self.controller.customers
        if book is None:
            raise _error(web.HTTPNotFound, "no customers section in the config")
        return book

    async def customer(self, request: web.Request) -> web.Response:
        from ringmaster.customers import KeyRefused

        book = self._customers()
        try:
            found = await book.show(request.match_info["key"])
        except KeyRefused as exc:
            raise _bad(f"key: {exc}") from None
        except StoreUnreadable as exc:
            raise _error(web.HTTPServiceUnavailable, str(exc)) from None
        if found is None:
            raise _error(web.HTTPNotFound, f"no customer has the key {request.match_info['key'][:100]!r}")
        return _json(found)

    async def customer_merge(self, request: web.Request) -> web.Response:
        book = self._customers()
        body = await self._body(request)
        unknown = set(body) - {"from", "into"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)[:5]}; fields: from, into")
        try:
            result = await book.merge(body.get("from"), body.get("into"), request["token"].name)
        except StoreUnreadable as exc:
            raise _error(web.HTTPServiceUnavailable, str(exc)) from None
        code = result.pop("code", 200)
        if "error" in result:
            cls = {404: web.HTTPNotFound, 409: web.HTTPConflict}.get(code, web.HTTPBadRequest)
            raise _error(cls, result["error"])
        return _json(result)

    async def agent_wrapup(self, request: web.Request) -> web.Response:
        from ringmaster.customers import KeyRefused

        book = self._customers()
        agent = request.match_info["agent"]
        role = request["role"]
        if role == "operator" or (role == "agent" and request["token"].agent != agent):
            raise _error(web.HTTPForbidden, "a wrap-up is the agent's own (its token) or a supervisor's")
        if agent not in self.controller.cfg.agents:
            raise _error(web.HTTPNotFound, f"unknown agent {agent[:64]!r}")
        body = await self._body(request)
        unknown = set(body) - {"task", "code", "notes"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)[:5]}; fields: task, code, notes")
        for name in ("task", "code", "notes"):
            if name in body and not isinstance(body[name], str):
                raise _bad(f"{name}: a string")
        try:
            w = book.wrapup(agent, body.get("task"), body.get("code"), body.get("notes"), "api")
        except KeyRefused as exc:
            raise _bad(str(exc)) from None
        return _json({"wrapup": w.as_dict()})

    async def agent_transfer(self, request: web.Request) -> web.Response:
        agent = request.match_info["agent"]
        role = request["role"]
        if role == "operator" or (role == "agent" and request["token"].agent != agent):
            raise _error(web.HTTPForbidden, "a transfer is the agent's own (its token) or a supervisor's")
        if agent not in self.controller.cfg.agents:
            raise _error(web.HTTPNotFound, f"unknown agent {agent[:64]!r}")
        body = await self._body(request)
        unknown = set(body) - {"kind", "target", "mode", "action"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)[:5]}; fields: kind, target, mode, action")
        if "action" in body:
            action = body["action"]
            if set(body) != {"action"} or action not in ("complete", "cancel"):
                raise _bad("action is complete or cancel, alone in the body")
            result = self.controller.finish_consult(agent, action, "api")
            if result.get("error"):
                raise _bad(result["error"])
            return _json(result)
        kind, target, mode = body.get("kind"), body.get("target"), body.get("mode", "blind")
        if not isinstance(kind, str) or not isinstance(target, str) or not target:
            raise _bad("kind (queue, agent, flow or external) and target (its name) are strings")
        if mode not in ("blind", "attended"):
            raise _bad("mode is blind or attended")
        result = self.controller.transfer(agent, kind, target, "api", mode)
        if result.get("error"):
            raise _bad(result["error"])
        return _json(result)

    async def agent_dial(self, request: web.Request) -> web.Response:
        agent = request.match_info["agent"]
        role = request["role"]
        if role == "operator" or (role == "agent" and request["token"].agent != agent):
            raise _error(web.HTTPForbidden, "a call is the agent's own (its token) or a supervisor's")
        if agent not in self.controller.cfg.agents:
            raise _error(web.HTTPNotFound, f"unknown agent {agent[:64]!r}")
        body = await self._body(request)
        unknown = set(body) - {"number"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)[:5]}; fields: number")
        number = body.get("number")
        if not isinstance(number, str) or not number:
            raise _bad("number: a string, e.g. +4512345678")
        result = self.controller.dial(agent, number[:40], "api")
        if result.get("error"):
            raise _bad(result["error"])
        return _json(result)

    async def call_chat(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        unknown = set(body) - {"queue", "task"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)[:5]}; fields: queue, task")
        queue, task = body.get("queue"), body.get("task")
        if not isinstance(queue, str) or (task is not None and not isinstance(task, str)):
            raise _bad("queue (a queue's name) and task (optional, its id) are strings")
        result = await self.controller.chat_from_call(request.match_info["call_id"][:100], queue, task)
        if result.get("error"):
            raise _bad(result["error"])
        return _json(result)

    async def task_call(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        role = request["role"]
        if role == "operator":
            raise _error(web.HTTPForbidden, "a call is the agent's own (its token) or a supervisor's")
        if await request.read():
            body = await self._body(request)
            if body:
                raise _bad(f"unknown field(s) {sorted(body)[:5]}; this call takes no body")
        agent = request["token"].agent if role == "agent" else None
        result = self.controller.call_from_task(task_id[:100], agent, "api")
        if result.get("error"):
            raise _bad(result["error"])
        return _json(result)

    async def reload(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = await self._body(request) if raw.strip() else {}
        if set(body) - {"drain"}:
            raise _bad(f"unknown field(s) {sorted(set(body) - {'drain'})[:5]}; fields: drain")
        drain = body.get("drain", {})
        if not isinstance(drain, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in drain.items()):
            raise _bad("drain: an object of removed queue -> queue of the new config")
        result = self.controller.reload(drain or None)
        log.info("api.reload", reloaded=result.get("reloaded"), drain=drain or None, token=request["token"].name)
        return _json(result, status=200 if result.get("reloaded") else 422)

    # ------------------------------------------------------------ queue members at run time

    async def members(self, request: web.Request) -> web.Response:
        queue = request.match_info["queue"]
        view = self.controller.members.view(self.controller.cfg) if self.controller.members is not None else {}
        if queue not in view:
            raise _error(web.HTTPNotFound, f"no queue {queue!r}")
        return _json({"queue": queue, "members": view[queue]})

    def _member(self, request: web.Request, agent: str, action: str, tier: Any = None) -> web.Response:
        # the same checks and command as the desk's supervisor sessions (ringmaster.supervisor)
        try:
            return _json(member_change(self.controller, request.match_info["queue"], agent, action, tier,
                                       by=request["token"].name))
        except ActionRefused as exc:
            raise _bad(str(exc)) from None

    async def member_add(self, request: web.Request) -> web.Response:
        try:
            agent, tier = member_add_fields(await self._body(request))
        except ActionRefused as exc:
            raise _bad(str(exc)) from None
        return self._member(request, agent, "add", tier)

    async def member_tier(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if set(body) != {"tier"}:
            raise _bad("fields: tier (1-9)")
        return self._member(request, request.match_info["agent"], "tier", body["tier"])

    async def member_remove(self, request: web.Request) -> web.Response:
        return self._member(request, request.match_info["agent"], "remove")

    # ------------------------------------------------------------ callbacks (docs/callbacks.md)

    async def callbacks(self, request: web.Request) -> web.Response:
        return _json({"callbacks": self.controller.callbacks_waiting()})

    async def callback_cancel(self, request: web.Request) -> web.Response:
        out = self.controller.cancel_callback(request.match_info["callback_id"], by=request["token"].name)
        status = out.pop("status", 200) if "error" in out else 200
        if status == 404:
            raise _error(web.HTTPNotFound, out["error"])
        if status == 409:
            raise _error(web.HTTPConflict, out["error"])
        if "error" in out:
            raise _bad(out["error"])
        return _json(out)

    # ------------------------------------------------------------ webhooks

    async def webhooks(self, request: web.Request) -> web.Response:
        return _json({"webhooks": self.controller.webhooks_status() or {}})

    async def webhook_dead_letters(self, request: web.Request) -> web.Response:
        from ringmaster.reports import webhooks as wr

        q = request.query
        unknown = set(q) - {"webhook", "limit", "token"}
        if unknown:
            raise _bad(f"unknown parameter(s) {sorted(unknown)[:5]}; parameters: webhook, limit")
        limit = q.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= wr.DEAD_LETTERS_MAX:
            raise _bad(f"limit: a whole number 1-{wr.DEAD_LETTERS_MAX}")
        rows = await self._read(wr.dead_letters, q.get("webhook"), int(limit))
        return _json({"dead_letters": rows})

    async def webhook_retry(self, request: web.Request) -> web.Response:
        from ringmaster.reports import webhooks as wr

        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise _bad("id: a dead letter's id (a number; GET /api/webhooks/dead-letters lists them)")
        row = await self._read(wr.dead_letter, int(raw))
        if row is None:
            raise _error(web.HTTPNotFound, f"no dead letter {raw}")
        err = self.controller.webhooks.retry(row)
        if err:
            raise _error(web.HTTPConflict, err)
        log.info("api.webhook_retried", id=int(raw), webhook=row["webhook"], role=request["role"])
        return _json({"retried": int(raw), "webhook": row["webhook"], "event_id": row["event_id"]})

    # ------------------------------------------------------------ voicemail

    def _boxes(self, request: web.Request) -> frozenset[str] | None:
        """The boxes this token may read: None (all) for supervisors and admins, its agent's for
        an agent token; an operator token gets 403."""
        role = request["role"]
        if role in ("supervisor", "admin"):
            return None
        if role == "agent":
            return boxes_of(self.controller.cfg, request["token"].agent)
        raise _error(web.HTTPForbidden, "voicemail needs an agent token (its own boxes) or supervisor")

    def _message_id(self, request: web.Request) -> int:
        raw = request.match_info["message"]
        if not raw.isdigit() or len(raw) > 18:
            raise _bad("message: a message id (a number)")
        return int(raw)

    @staticmethod
    def _vm_error(exc: VoicemailError) -> web.HTTPException:
        cls = {403: web.HTTPForbidden, 404: web.HTTPNotFound, 503: web.HTTPServiceUnavailable,
               500: web.HTTPInternalServerError}.get(exc.code, web.HTTPBadRequest)
        return _error(cls, str(exc))

    async def voicemail_list(self, request: web.Request) -> web.Response:
        visible = self._boxes(request)
        try:
            f = VoicemailFilter.from_query(request.query)
        except FilterError as exc:
            raise _bad(str(exc)) from None
        boxes = visible
        if f.box is not None:
            if f.box not in self.controller.cfg.voicemail.boxes:
                raise _error(web.HTTPNotFound, f"no box {f.box!r}")
            if visible is not None and f.box not in visible:
                raise _error(web.HTTPForbidden, f"box {f.box!r} is not one of yours")
            boxes = frozenset({f.box})
        try:
            msgs = await self.controller.voicemail.messages(visible, f)
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        base = url_base(self.controller.cfg)
        names = sorted(self.controller.cfg.voicemail.boxes) if boxes is None else sorted(boxes)
        return _json({"boxes": names, "messages": [m.view(base) for m in msgs], "count": len(msgs)})

    async def voicemail_message(self, request: web.Request) -> web.Response:
        try:
            m = await self.controller.voicemail.message(self._message_id(request), self._boxes(request))
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        return _json({"message": m.view(url_base(self.controller.cfg))})

    async def voicemail_audio(self, request: web.Request) -> web.StreamResponse:
        vm = self.controller.voicemail
        try:
            m = await vm.message(self._message_id(request), self._boxes(request))
            path = vm.audio_path(m)
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        log.info("api.voicemail_fetched", message=m.id, box=m.box, token=request["token"].name)
        return web.FileResponse(path, headers={"Content-Type": "audio/wav",
                                               "Content-Disposition": f'attachment; filename="voicemail-{m.id}.wav"'})

    async def voicemail_change(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if set(body) - {"state"}:
            raise _bad(f"unknown field(s) {sorted(set(body) - {'state'})[:5]}; fields: state")
        state = body.get("state")
        if not isinstance(state, str) or state not in MESSAGE_STATES:
            raise _bad("state: " + " or ".join(MESSAGE_STATES))
        try:
            m = await self.controller.voicemail.set_state(self._message_id(request), state,
                                                          request["token"].name, self._boxes(request))
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        return _json({"message": m.view(url_base(self.controller.cfg))})

    async def voicemail_delete(self, request: web.Request) -> web.Response:
        try:
            m = await self.controller.voicemail.delete(self._message_id(request), request["token"].name,
                                                       self._boxes(request))
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        return _json({"message": m.id, "box": m.box, "deleted": True})

    # ------------------------------------------------------------ wallboard

    async def wallboard(self, request: web.Request) -> web.Response:
        from importlib import resources

        html = resources.files("ringmaster.web").joinpath("wallboard.html").read_text()
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def wallboard_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a snapshot at once, on every ACD change, and at least every second."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        changed = self.controller.changed
        try:
            while True:
                snap = await self.snapshot()
                await resp.write(f"data: {json.dumps(snap)}\n\n".encode())
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), 1.0)
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def snapshot(self) -> dict[str, Any]:
        """The wallboard's picture: per queue, callers waiting and the longest wait (voice), the
        service level today (%), members by state, and the same per channel."""
        state = self.controller.live_state()
        now = state.at
        if state.queues and now - self._today_cache[0] > TODAY_CACHE_SECONDS:
            try:
                self._today_cache = (now, await self._today(now))
            except web.HTTPServiceUnavailable:
                pass  # the store cannot be read: the live part still shows, the SL figure is older
        today = self._today_cache[1]
        queues = []
        for name, q in state.queues.items():
            counts: Counter[str] = Counter()
            for s, n in q.member_states(state.agents).items():  # the wallboard's words: on a call is busy
                counts["busy" if s == "on-call" else "logged-out" if s == "unknown" else s] += n
            channels = {}
            for ch in CHANNELS:  # the one presence, seen per channel
                per = q.member_states(state.agents, ch)
                channels[ch] = {"waiting": len(q.waiting_on(ch)), **per,
                                "longest_wait": round(q.longest_wait(ch, now), 1)}
            voice = channels["voice"]
            queues.append({"name": name, "waiting": voice["waiting"], "service_level": q.service_level,
                           "longest_wait": voice["longest_wait"],
                           "sl_today": today[name].service_level_pct if name in today else None,
                           "agents": counts, "channels": channels})
        return {"at": now, "queues": queues}

    # ------------------------------------------------------------ metrics and the document

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics_registry.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"})

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())


def _operation(r: Route) -> dict[str, Any]:
    responses = {"200": {"description": "OK"}, "400": {"description": "bad parameters: {\"error\": reason}"}}
    if r.role is not None:
        responses |= {"401": {"description": "no or unknown token"},
                      "403": {"description": "the token's role may not do this"}}
    op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler,
                          "description": r.access or (f"Role: {r.role} or above." if r.role else "No token needed.")}
    if r.role is None:
        op["security"] = []
    params: list[dict[str, Any]] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                    for n in re.findall(r"{(\w+)}", r.path)]
    for p in r.params:
        schema: dict[str, Any] = {"type": p.kind}
        if p.choices:
            schema["enum"] = list(p.choices)
        params.append({"name": p.name, "in": "query", "required": False, "schema": schema,
                       "description": p.description})
    if params:
        op["parameters"] = params
    if r.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}},
                             "description": f"a JSON object of at most {BODY_MAX} bytes, nested at most "
                                            f"{BODY_DEPTH} levels; no other fields"}
        responses["400"] = {"description": "bad body or parameters: {\"error\": reason}"}
        responses["413"] = {"description": f"body over {BODY_MAX} bytes"}
    responses |= {code: {"description": text} for code, text in r.responses.items()}
    op["responses"] = responses
    return op


def openapi_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.0 document of `routes`: one operation per route, its path and query
    parameters, body schema, roles and answers."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {"openapi": "3.0.3", "info": {"title": "Ringmaster API", "version": "1"},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}], "paths": paths}
