"""The HTTP API (aiohttp) and Prometheus /metrics, served by the daemon.

Bearer tokens from the config carry a role: operator reads; supervisor may also change agent
states, pause recordings and read every voicemail box; admin may also reload the plan. An agent
token (an agent's desk) reaches only the voicemail boxes its agent may read, and nothing else.
No token -> 401, wrong role -> 403, bad parameters -> 400 with the reason; none of them
changes anything.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from ringmaster import inputs
from ringmaster import stats as st
from ringmaster.acd.config import CHANNELS
from ringmaster.calllog import parse_time
from ringmaster.config import HttpConfig

if TYPE_CHECKING:
    from ringmaster.controller import Controller

log = structlog.get_logger("ringmaster.api")

ROLES = {"agent": 0, "operator": 1, "supervisor": 2, "admin": 3}
DISPOSITIONS = ("in_progress", "completed", "rejected", "abandoned", "failed")
CALL_PARAMS = {"since", "until", "queue", "agent", "caller", "disposition", "min_wait", "limit"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# request bodies are small commands ({"action": "pause", "reason": "lunch"}): a few kB at most
BODY_MAX = 16_384
BODY_DEPTH = 4


def _bad(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": reason}), content_type="application/json")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


class Api:
    def __init__(self, controller: Controller, cfg: HttpConfig):
        self.controller = controller
        self.cfg = cfg
        self.runner: web.AppRunner | None = None
        app = web.Application(middlewares=[self._auth], client_max_size=BODY_MAX)
        app.add_routes([
            web.get("/openapi.json", self.openapi),
            web.get("/metrics", self.metrics),
            web.get("/api/status", self.status),
            web.get("/api/calls", self.calls),
            web.get("/api/calls/{call_id}", self.call),
            web.get("/api/calls/{call_id}/recording", self.recording_file),
            web.post("/api/calls/{call_id}/recording", self.recording_control),
            web.get("/api/tasks", self.tasks),
            web.get("/api/tasks/{task_id}", self.task),
            web.get("/api/queues", self.queues),
            web.get("/api/agents", self.agents),
            web.post("/api/agents/{agent}", self.agent_change),
            web.post("/api/reload", self.reload),
            web.get("/api/voicemail", self.voicemail_list),
            web.get("/api/voicemail/{message}", self.voicemail_message),
            web.get("/api/voicemail/{message}/audio", self.voicemail_audio),
            web.post("/api/voicemail/{message}", self.voicemail_change),
            web.delete("/api/voicemail/{message}", self.voicemail_delete),
            web.get("/wallboard", self.wallboard),
            web.get("/wallboard/events", self.wallboard_events),
        ])
        self._today: tuple[float, dict[str, Any]] = (0.0, {})
        self.app = app
        # the role each route needs beyond operator
        self.needs = {("POST", "/api/agents/{agent}"): "supervisor",
                      ("GET", "/api/calls/{call_id}/recording"): "supervisor",
                      ("POST", "/api/calls/{call_id}/recording"): "supervisor",
                      ("POST", "/api/reload"): "admin",
                      # voicemail: an agent token sees its own boxes; operators none (like
                      # recordings, a caller's voice is for supervisors); see _boxes
                      ("GET", "/api/voicemail"): "agent", ("GET", "/api/voicemail/{message}"): "agent",
                      ("GET", "/api/voicemail/{message}/audio"): "agent",
                      ("POST", "/api/voicemail/{message}"): "agent", ("DELETE", "/api/voicemail/{message}"): "agent"}

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.cfg.host, self.cfg.port).start()
        log.info("api.listening", listen=self.cfg.listen)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------ auth

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/openapi.json":
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
            raise web.HTTPUnauthorized(text=json.dumps({"error": "a valid bearer token is required"}),
                                       content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        needed = self.needs.get((request.method, route), "operator")
        if ROLES[role] < ROLES[needed]:
            raise web.HTTPForbidden(text=json.dumps({"error": f"role {role} may not do this; it needs {needed}"}),
                                    content_type="application/json")
        request["role"] = role
        request["token"] = token
        return await handler(request)

    # ------------------------------------------------------------ reads

    async def status(self, request: web.Request) -> web.Response:
        return _json(await self.controller.status())

    async def calls(self, request: web.Request) -> web.Response:
        q = request.query
        unknown = set(q) - CALL_PARAMS
        if unknown:
            raise _bad(f"unknown parameter(s) {sorted(unknown)}; known: {sorted(CALL_PARAMS)}")
        clauses: list[str] = []
        params: list[Any] = []
        try:
            if "since" in q:
                clauses.append("arrived_at >= ?")
                params.append(parse_time(q["since"]))
            if "until" in q:
                clauses.append("arrived_at < ?")
                params.append(parse_time(q["until"]))
            if "min_wait" in q:
                clauses.append("wait_seconds >= ?")
                params.append(float(q["min_wait"]))
            limit = int(q.get("limit", "100"))
        except (ValueError, OverflowError) as exc:  # year 1 or 9999 overflows a local timestamp
            raise _bad(str(exc)) from None
        if not 1 <= limit <= 10000:
            raise _bad("limit: 1 to 10000")
        for key in ("queue", "agent"):
            if key in q:
                clauses.append(f"{key} = ?")
                params.append(q[key])
        if "caller" in q:
            clauses.append("caller LIKE ?")
            params.append(f"%{q['caller']}%")
        if "disposition" in q:
            if q["disposition"] not in DISPOSITIONS:
                raise _bad(f"disposition: one of {', '.join(DISPOSITIONS)}")
            clauses.append("disposition = ?")
            params.append(q["disposition"])
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._rows(f"SELECT * FROM calls{where} ORDER BY arrived_at DESC, id DESC LIMIT ?", (*params, limit))
        for r in rows:
            r["ivr_path"] = json.loads(r["ivr_path"])
            r["variables"] = json.loads(r["variables"])
        return _json({"calls": rows, "count": len(rows)})

    async def call(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        rows = await self._rows("SELECT * FROM calls WHERE call_id=?", (call_id,))
        if not rows:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no call {call_id!r}"}), content_type="application/json")
        call = rows[0]
        call["ivr_path"] = json.loads(call["ivr_path"])
        call["variables"] = json.loads(call["variables"])
        events = await self._rows("SELECT at, event, data FROM call_events WHERE call_id=? ORDER BY id", (call_id,))
        for e in events:
            e["data"] = json.loads(e["data"])
        qlog = await self._rows("SELECT at, queue, agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", (call_id,))
        return _json({"call": call, "events": events, "queue_events": qlog})

    async def tasks(self, request: web.Request) -> web.Response:
        from ringmaster import tasklog

        q = request.query
        known = {"since", "until", "queue", "agent", "channel", "state", "limit"}
        unknown = set(q) - known
        if unknown:
            raise _bad(f"unknown parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            f = tasklog.TaskFilter(since=parse_time(q["since"]) if "since" in q else None,
                                   until=parse_time(q["until"]) if "until" in q else None,
                                   queue=q.get("queue"), agent=q.get("agent"), channel=q.get("channel"),
                                   state=q.get("state"), limit=int(q.get("limit", "100")))
        except (ValueError, OverflowError) as exc:  # year 1 or 9999 overflows a local timestamp
            raise _bad(str(exc)) from None
        if not 1 <= (f.limit or 0) <= 10000:
            raise _bad("limit: 1 to 10000")
        if f.channel is not None and f.channel not in tasklog.CHANNELS:
            raise _bad(f"channel: one of {', '.join(tasklog.CHANNELS)}")
        if f.state is not None and f.state not in tasklog.STATES:
            raise _bad(f"state: one of {', '.join(tasklog.STATES)}")
        sql, params = f.sql()
        rows = await self._rows(sql, tuple(params))
        return _json({"tasks": [tasklog.row_view(r) for r in rows]})

    async def task(self, request: web.Request) -> web.Response:
        from ringmaster import tasklog

        task_id = request.match_info["task_id"]
        rows = await self._rows("SELECT * FROM tasks WHERE task_id=?", (task_id,))
        if not rows:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no task {task_id!r}"}), content_type="application/json")
        events = await self._rows("SELECT at, queue, agent, event, data, channel FROM task_log WHERE task_id=? ORDER BY id",
                                  (task_id,))
        return _json({"task": tasklog.row_view(rows[0]), "events": events})

    async def recording_file(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["call_id"]
        rows = await self._rows("SELECT recording, ended_at FROM calls WHERE call_id=?", (call_id,))
        path = Path(rows[0]["recording"]) if rows and rows[0]["recording"] else None
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text=json.dumps({"error": "no recording for this call"}), content_type="application/json")
        recordings = Path(self.controller.cfg.paths.recordings).resolve()
        if recordings not in path.resolve().parents:  # never serve a file outside the recordings dir
            raise web.HTTPNotFound(text=json.dumps({"error": "no recording for this call"}), content_type="application/json")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def queues(self, request: web.Request) -> web.Response:
        acd = self.controller.acd
        if acd is None:
            return _json({"queues": {}})
        now = time.time()
        midnight = time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))
        rows = await self._rows("SELECT at, call_id, queue, agent, event, data FROM queue_log WHERE at < ? ORDER BY at, id", (now,))
        cfgq = self.controller.cfg.queues
        today, _ = st.compute([tuple(r.values()) for r in rows], midnight, now,  # type: ignore[misc]
                              {n: q.service_level for n, q in cfgq.items()}, {n: q.wrapup for n, q in cfgq.items()})
        stats = st.as_dicts(today, [])["queues"]
        by_name = {s["queue"]: s for s in stats}
        agents = self.controller._agents_status()
        out = {}
        for name, q in acd.engine.queues.items():
            members = [m.agent for m in q.spec.members]
            out[name] = {"waiting": len(q.waiting),
                         "longest_wait": round(max((now - c.enqueued_at for c in q.waiting), default=0.0), 1),
                         "agents": dict(Counter(agents.get(a, "unknown").split(":")[0] for a in members)),
                         "today": by_name.get(name, {"queue": name, "offered": 0})}
        return _json({"queues": out})

    async def agents(self, request: web.Request) -> web.Response:
        return _json({"agents": self.controller._agents_status()})

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
        body = await self._body(request)
        unknown = set(body) - {"action", "reason"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)[:5]}; fields: action, reason")
        action = body.get("action")
        if not isinstance(action, str) or action not in ("login", "logout", "pause", "unpause"):
            raise _bad("action: login, logout, pause or unpause")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 64 or not reason.isprintable():
            raise _bad("reason: a string of at most 64 printable characters")
        result = self.controller.agent_command(request.match_info["agent"], action, reason)
        if result.get("error"):
            raise _bad(result["error"])
        log.info("api.agent_changed", agent=result["agent"], action=action, role=request["role"])
        return _json(result)

    async def recording_control(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if set(body) - {"action"}:
            raise _bad(f"unknown field(s) {sorted(set(body) - {'action'})[:5]}; fields: action")
        if not isinstance(body.get("action"), str) or body["action"] not in ("pause", "resume"):
            raise _bad("action: pause or resume")
        result = self.controller.set_recording(request.match_info["call_id"], body["action"] == "pause")
        if result.get("error"):
            raise _bad(result["error"])
        return _json(result)

    async def reload(self, request: web.Request) -> web.Response:
        result = self.controller.reload()
        return _json(result, status=200 if result.get("reloaded") else 422)

    # ------------------------------------------------------------ voicemail

    def _boxes(self, request: web.Request) -> frozenset[str] | None:
        """The boxes this token may read: None (all) for supervisors and admins, its agent's for
        an agent token; an operator token gets 403."""
        from ringmaster.voicemail import boxes_of

        role = request["role"]
        if role in ("supervisor", "admin"):
            return None
        if role == "agent":
            return boxes_of(self.controller.cfg, request["token"].agent)
        raise web.HTTPForbidden(text=json.dumps({"error": "voicemail needs an agent token (its own boxes) or supervisor"}),
                                content_type="application/json")

    def _message_id(self, request: web.Request) -> int:
        raw = request.match_info["message"]
        if not raw.isdigit() or len(raw) > 18:
            raise _bad("message: a message id (a number)")
        return int(raw)

    @staticmethod
    def _vm_error(exc: Exception) -> web.HTTPException:
        code = getattr(exc, "code", 400)
        cls = {403: web.HTTPForbidden, 404: web.HTTPNotFound, 503: web.HTTPServiceUnavailable,
               500: web.HTTPInternalServerError}.get(code, web.HTTPBadRequest)
        return cls(text=json.dumps({"error": str(exc)}), content_type="application/json")

    async def voicemail_list(self, request: web.Request) -> web.Response:
        from ringmaster.voicemail import STATES, VoicemailError, url_base

        q = request.query
        unknown = set(q) - {"box", "state", "limit"}
        if unknown:
            raise _bad(f"unknown parameter(s) {sorted(unknown)}; known: box, state, limit")
        visible = self._boxes(request)
        boxes: frozenset[str] | None = visible
        if "box" in q:
            if q["box"] not in self.controller.cfg.voicemail.boxes:
                raise web.HTTPNotFound(text=json.dumps({"error": f"no box {q['box']!r}"}), content_type="application/json")
            if visible is not None and q["box"] not in visible:
                raise web.HTTPForbidden(text=json.dumps({"error": f"box {q['box']!r} is not one of yours"}),
                                        content_type="application/json")
            boxes = frozenset({q["box"]})
        if "state" in q and q["state"] not in STATES:
            raise _bad(f"state: one of {', '.join(STATES)}")
        try:
            limit = int(q.get("limit", "500"))
        except ValueError:
            raise _bad("limit: a number") from None
        if not 1 <= limit <= 10000:
            raise _bad("limit: 1 to 10000")
        try:
            msgs = await self.controller.voicemail.messages(boxes, q.get("state"), limit)
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        base = url_base(self.controller.cfg)
        names = sorted(self.controller.cfg.voicemail.boxes) if boxes is None else sorted(boxes)
        return _json({"boxes": names, "messages": [m.view(base) for m in msgs], "count": len(msgs)})

    async def voicemail_message(self, request: web.Request) -> web.Response:
        from ringmaster.voicemail import VoicemailError, url_base

        try:
            m = await self.controller.voicemail.message(self._message_id(request), self._boxes(request))
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        return _json({"message": m.view(url_base(self.controller.cfg))})

    async def voicemail_audio(self, request: web.Request) -> web.StreamResponse:
        from ringmaster.voicemail import VoicemailError

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
        from ringmaster.voicemail import VoicemailError, url_base

        body = await self._body(request)
        if set(body) - {"state"}:
            raise _bad(f"unknown field(s) {sorted(set(body) - {'state'})[:5]}; fields: state")
        if body.get("state") not in ("heard", "new"):
            raise _bad("state: heard or new")
        try:
            m = await self.controller.voicemail.set_state(self._message_id(request), body["state"],
                                                          request["token"].name, self._boxes(request))
        except VoicemailError as exc:
            raise self._vm_error(exc) from None
        return _json({"message": m.view(url_base(self.controller.cfg))})

    async def voicemail_delete(self, request: web.Request) -> web.Response:
        from ringmaster.voicemail import VoicemailError

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
        c = self.controller
        now = time.time()
        if now - self._today[0] > 5.0:  # today's figures are a query: at most every 5 s
            midnight = time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))
            rows = await self._rows("SELECT at, call_id, queue, agent, event, data FROM queue_log"
                                    " WHERE at >= ? AND at < ? ORDER BY at, id", (midnight - 86400, now))
            cfgq = c.cfg.queues
            qs, _ = st.compute([tuple(r.values()) for r in rows], midnight, now,  # type: ignore[misc]
                               {n: q.service_level for n, q in cfgq.items()}, {n: q.wrapup for n, q in cfgq.items()})
            self._today = (now, {s.queue: s.service_level_pct for s in qs})
        states = c._agents_status()
        queues = []
        for name, q in (c.acd.engine.queues.items() if c.acd else []):
            assert c.acd is not None
            counts: Counter[str] = Counter()
            for m in q.spec.members:
                s = states.get(m.agent, "logged-out").split(":")[0]
                counts["busy" if s == "on-call" else s] += 1
            channels = {}
            for ch in CHANNELS:  # the one presence, seen per channel
                per: Counter[str] = Counter(_channel_state(c.acd.engine.agents[m.agent], ch, now) for m in q.spec.members)
                waiting = [x for x in q.waiting if x.channel == ch]
                channels[ch] = {"waiting": len(waiting), **per,
                                "longest_wait": round(max((now - x.enqueued_at for x in waiting), default=0.0), 1)}
            voice = channels["voice"]
            queues.append({"name": name, "waiting": voice["waiting"], "service_level": q.spec.service_level,
                           "longest_wait": voice["longest_wait"],
                           "sl_today": self._today[1].get(name), "agents": dict(counts), "channels": channels})
        return {"at": now, "queues": queues}

    # ------------------------------------------------------------ metrics

    async def metrics(self, request: web.Request) -> web.Response:
        c = self.controller
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
                lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

        disp = {r["disposition"]: r["n"] for r in await self._rows(
            "SELECT disposition, COUNT(*) AS n FROM calls GROUP BY disposition", ())}
        metric("ringmaster_calls_total", "counter", "Calls in the call log by disposition",
               [({"disposition": d}, disp.get(d, 0)) for d in DISPOSITIONS])
        now = time.time()
        queues = c.acd.engine.queues if c.acd else {}
        metric("ringmaster_queue_waiting", "gauge", "Calls (voice) and tasks (chat, email) waiting in a queue",
               [({"queue": n, "channel": ch}, sum(1 for x in q.waiting if x.channel == ch))
                for n, q in queues.items() for ch in CHANNELS])
        metric("ringmaster_queue_longest_wait_seconds", "gauge", "Longest current wait in a queue",
               [({"queue": n, "channel": ch},
                 round(max((now - x.enqueued_at for x in q.waiting if x.channel == ch), default=0.0), 3))
                for n, q in queues.items() for ch in CHANNELS])
        per_channel: Counter[tuple[str, str]] = Counter()
        for a in (c.acd.engine.agents.values() if c.acd else []):
            for ch in CHANNELS:
                per_channel[(_channel_state(a, ch, now), ch)] += 1
        metric("ringmaster_agents", "gauge", "Agents by state and channel",
               [({"state": s, "channel": ch}, n) for (s, ch), n in sorted(per_channel.items())])
        mq = c.mqtt_status()
        metric("ringmaster_mqtt_connected", "gauge", "The controller is connected to the MQTT broker (absent: no MQTT)",
               [({}, 1 if mq["connected"] else 0)] if mq else [])
        metric("ringmaster_mqtt_outbox_messages", "gauge", "Messages waiting to be published (grows while the broker is away)",
               [({}, mq["queued"])] if mq else [])
        metric("ringmaster_mqtt_bad_payloads_total", "counter", "MQTT messages refused on the errors topic",
               [({}, mq["bad_payloads"])] if mq else [])
        metric("ringmaster_tasks_open", "gauge", "Open chat and email tasks by channel (waiting or assigned)",
               [({"channel": ch, "state": st}, sum(1 for t in (c.acd.engine.tasks.values() if c.acd else [])
                                                   if t.channel == ch and (t.agent is None) == (st == "waiting")))
                for ch in ("chat", "email") for st in ("waiting", "assigned")])
        workers = c.pool.workers
        metric("ringmaster_workers", "gauge", "Media workers by liveness",
               [({"alive": "true"}, sum(1 for w in workers.values() if w.alive)),
                ({"alive": "false"}, sum(1 for w in workers.values() if not w.alive))])
        legs = Counter(k[0] for k, s in c.sessions.items() if not s.ended)
        metric("ringmaster_worker_busy_legs", "gauge", "Call legs in use per worker",
               [({"worker": n}, legs.get(n, 0)) for n in sorted(workers)])
        metric("ringmaster_worker_restarts_total", "counter", "Workers replaced after dying", [({}, c.pool.restarts)])
        metric("ringmaster_registration_up", "gauge", "Upstream registrations (1 = registered)",
               [({"registration": r.spec.name}, 1 if r.state == "registered" else 0) for r in c.registrations.values()])
        metric("ringmaster_edge_events_connected", "gauge", "The edge's registration event stream is connected",
               [({}, 1 if c.edge_events.connected else 0)])
        counters = c.edge_counters
        metric("ringmaster_edge_refused_total", "counter",
               "Requests the edge refused, by reason (auth_failures: wrong passwords; malformed: NUL, control "
               "bytes, size; unknown_dialog: forged in-dialog requests; unknown_number; refused_target)",
               [({"reason": k}, v) for k, v in sorted(counters.items()) if k != "auth_bans"])
        metric("ringmaster_edge_auth_bans_total", "counter", "Sources banned for password guessing",
               [({}, counters.get("auth_bans", 0))])
        metric("ringmaster_edge_auth_banned_sources", "gauge", "Sources banned for password guessing right now",
               [({}, len(c.auth_banned))])
        metric("ringmaster_edge_load_corrections_total", "counter",
               "Times the edge's count of a worker's calls drifted from the calls it held and was reset",
               [({}, c.load_check.corrections)])
        vm = {(r["box"], r["heard"]): r["n"] for r in await self._rows(
            "SELECT box, heard, COUNT(*) AS n FROM voicemails WHERE deleted_at IS NULL GROUP BY box, heard", ())}
        metric("ringmaster_voicemail_messages", "gauge", "Voicemail messages by box and state (new, heard)",
               [({"box": b, "state": st_}, vm.get((b, int(st_ == "heard")), 0))
                for b in sorted(c.cfg.voicemail.boxes) for st_ in ("new", "heard")])
        metric("ringmaster_mwi_subscriptions", "gauge", "Softphones subscribed to their message-waiting lamp",
               [({}, len(c.mwi.subs))])
        metric("ringmaster_store_last_commit_seconds", "gauge", "Duration of the store's last batch commit",
               [({}, round(c.store.last_commit_seconds, 6))])
        st = c.store.status()
        metric("ringmaster_store_ok", "gauge", "The store takes writes (0: failing; records are kept pending)",
               [({}, 1 if st["state"] == "ok" else 0)])
        metric("ringmaster_store_pending_records", "gauge",
               "Records made but not yet in the store (grows while the store fails; memory and spill file)",
               [({}, st["pending"])])
        metric("ringmaster_store_write_failures_total", "counter",
               "Failed store commit attempts (read-only, full or failing disk); alert on any increase",
               [({}, st["write_failures"])])
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    # ------------------------------------------------------------ helpers

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        db = self.controller.store.db
        assert db is not None
        async with db.execute(sql, params) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(OPENAPI)


def _channel_state(a: Any, channel: str, now: float) -> str:
    """One agent's state for one channel: logged-out, paused, busy, offered, wrap-up, available,
    or blocked (free but another channel holds them, or no phone registered)."""
    if not a.logged_in:
        return "logged-out"
    if a.paused is not None:
        return "paused"
    if channel in a.holding.values():
        return "busy"
    if channel in a.offered.values():
        return "offered"
    if a.in_wrapup(channel, now):
        return "wrap-up"
    return "available" if a.can_take(channel, now) else "blocked"


def _op(summary: str, role: str = "operator", params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "description": f"Role: {role} or above.",
                          "responses": {"200": {"description": "OK"}, "400": {"description": "bad parameters"},
                                        "401": {"description": "no or unknown token"},
                                        "403": {"description": "the token's role may not do this"}}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}},
                             "description": f"a JSON object of at most {BODY_MAX} bytes, nested at most "
                                            f"{BODY_DEPTH} levels; no other fields"}
        op["responses"]["400"] = {"description": "bad body or parameters: {\"error\": reason}"}
        op["responses"]["413"] = {"description": f"body over {BODY_MAX} bytes"}
    return op


def _q(name: str, kind: str = "string", desc: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": desc}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Ringmaster API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/api/status": {"get": _op("Daemon, workers, calls, agents, queues, registrations")},
        "/api/calls": {"get": _op("The call log, newest first", params=[
            _q("since", desc="ISO time or an age (2h)"), _q("until"), _q("queue"), _q("agent"), _q("caller"),
            _q("disposition"), _q("min_wait", "number"), _q("limit", "integer")])},
        "/api/calls/{call_id}": {"get": _op("One call with its events, IVR path and queue events", params=[_p("call_id")])},
        "/api/calls/{call_id}/recording": {
            "get": _op("The call's recording (WAV)", "supervisor", [_p("call_id")]),
            "post": _op("Pause or resume a live call's recording", "supervisor", [_p("call_id")],
                        {"type": "object", "required": ["action"], "additionalProperties": False,
                         "properties": {"action": {"type": "string", "enum": ["pause", "resume"]}}})},
        "/api/tasks": {"get": _op("Chat and email tasks, oldest first", params=[
            _q("since", desc="ISO time or an age (2h)"), _q("until"), _q("queue"), _q("agent"),
            _q("channel", desc="chat or email"), _q("state", desc="queued, assigned, completed, cancelled"),
            _q("limit", "integer")])},
        "/api/tasks/{task_id}": {"get": _op("One task with its events", params=[_p("task_id")])},
        "/api/queues": {"get": _op("Queues: waiting callers, longest wait, agents by state, today's figures")},
        "/api/agents": {"get": _op("Agents and their state")},
        "/api/agents/{agent}": {"post": _op("Change an agent's state", "supervisor", [_p("agent")],
                                            {"type": "object", "required": ["action"], "additionalProperties": False,
                                             "properties": {"action": {"type": "string", "enum": ["login", "logout", "pause", "unpause"]},
                                                            "reason": {"type": "string", "maxLength": 64}}})},
        "/api/voicemail": {"get": _op("Voicemail messages (not deleted) in the boxes the token may read, newest first",
                                      "agent (own boxes) or supervisor", [
                                          _q("box"), _q("state", desc="new or heard"), _q("limit", "integer")])},
        "/api/voicemail/{message}": {
            "get": _op("One voicemail message", "agent (own boxes) or supervisor", [_p("message")]),
            "post": _op("Mark a message heard, or new again", "agent (own boxes) or supervisor", [_p("message")],
                        {"type": "object", "required": ["state"], "additionalProperties": False,
                         "properties": {"state": {"type": "string", "enum": ["heard", "new"]}}}),
            "delete": _op("Delete a message (its audio; the record stays, marked)", "agent (own boxes) or supervisor",
                          [_p("message")])},
        "/api/voicemail/{message}/audio": {"get": _op("The message's audio (WAV, 8 kHz mono)",
                                                      "agent (own boxes) or supervisor", [_p("message")])},
        "/api/reload": {"post": _op("Validate the config file and switch to its plan (422 with the errors if invalid)", "admin")},
        "/metrics": {"get": _op("Prometheus metrics")},
        "/wallboard": {"get": _op("The live wallboard page (token in ?token= for wall displays)",
                                  params=[_q("token")])},
        "/wallboard/events": {"get": _op("Server-sent events: a snapshot on every change, at least every second",
                                         params=[_q("token")])},
    },
}
