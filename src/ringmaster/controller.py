"""Controller: the one process that decides. Owns the store, the worker pool, the edge,
the dial plan, the live calls and the upstream registrations, and dispatches worker events.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import structlog

from ringmaster import inputs, live, prompts
from ringmaster import protocol as p
from ringmaster.acd.consult import MAX_LEGS
from ringmaster.acd.membership import Membership
from ringmaster.acd.phone_transfer import PhoneConsults
from ringmaster.acd.runtime import AcdRuntime
from ringmaster.callbacks import Callbacks, window_closed_until
from ringmaster.calls import CallSession, display_name, new_call_id, sip_user
from ringmaster.config import Config
from ringmaster.customers import CustomerBook
from ringmaster.edge import Edge, events_port
from ringmaster.edge.events import EdgeEvents
from ringmaster.edge.loadcheck import LoadReconciler
from ringmaster.edge.rtpengine import RtpEngine
from ringmaster.flows import DialPlan
from ringmaster.flows.interpreter import FlowRun
from ringmaster.legaudit import LegAudit, MissingLeg, UnknownLeg
from ringmaster.lookups import LookupClient
from ringmaster.mqtt.broker import EmbeddedBroker
from ringmaster.mqtt.link import MqttLink
from ringmaster.mwi import MwiNotifier
from ringmaster.outbound import OutboundCall, Permit, Refusal, decide, warning_header
from ringmaster.pool import WorkerPool, registration_agent_spec, worker_specs
from ringmaster.poolplan import PoolPlan, Retire, Spawn, WorkerView
from ringmaster.registrations import RegistrationState
from ringmaster.store import Store
from ringmaster.supervision import DTMF_MODES, Supervisions
from ringmaster.tasks import TaskRouter
from ringmaster.tts import Speech
from ringmaster.voicemail import Voicemail, boxes_of
from ringmaster.webhooks.sender import WebhookSender
from ringmaster.workerproc import WorkerProcess

# a supervisor's feature code: *1 listen, *2 whisper, *3 barge, then the agent (docs/supervision.md)
FEATURE_CODE = re.compile(r"\*([123])([A-Za-z0-9_.+-]{1,64})")
log = structlog.get_logger("ringmaster.controller")
STOP_SLOW_AFTER = 3.0  # s a stop may take before the watchdog says what it waits on


class Controller:
    def __init__(self, cfg: Config, config_file: str = ""):
        self.cfg = cfg
        self.config_file = config_file
        self._stop_stage = ""  # the part stop() is stopping (its watchdog's log)
        self.dialplan = DialPlan(cfg)
        # writes a failing store cannot take are spilled beside the edge's runtime files: another
        # path than the store's, so a full or read-only store disk does not take them too
        self.store = Store(cfg.storage.path, spill_path=Path(cfg.paths.runtime) / "store-spill.jsonl")
        specs = worker_specs(cfg)
        w = cfg.workers
        self.pool = WorkerPool(specs, self.on_worker_event, self.on_worker_lost,
                               restart_delay=w.restart_delay, warm=w.count, spawn=w.spawn,
                               per_process=min(w.per_process, w.ceiling),  # no library copy that no worker uses
                               # 10 MB a copy: beside the store, on disk, not in a tmpfs runtime dir
                               copies=str(Path(cfg.storage.path).resolve().parent / "pjsua2-copies"))
        self.edge = Edge(cfg, specs[:w.count], config_file)
        # browser phones' media relay (sip.webrtc): started before the edge, which drives it
        self.rtpengine = RtpEngine(cfg) if cfg.sip.webrtc is not None else None
        self.pool_plan = PoolPlan([s.name for s in specs], warm=w.count, spare=w.spare, idle_retire=w.idle_retire)
        self._pool_task: asyncio.Task[None] | None = None
        self.spawning: set[str] = set()
        self.retiring: set[str] = set()
        # upstream registrations live in their own pjsua2 process (see registration_agent_spec)
        self.reg_agent = WorkerPool([registration_agent_spec(cfg)], self.on_worker_event,
                                    self.on_reg_agent_lost, restart_delay=cfg.workers.restart_delay) \
            if cfg.sip.registrations else None
        self.sessions: dict[tuple[str, str], CallSession] = {}
        # queued callbacks' legs (no inbound call holds them): (worker, leg) -> their handler
        self.callback_legs: dict[tuple[str, str], Callbacks] = {}
        self.registrations = {
            r.name: RegistrationState(r, contact=f"sip:{r.username}@{cfg.sip.host}:{cfg.sip.port}")
            for r in cfg.sip.registrations}
        self.changed = asyncio.Event()  # set on every ACD change: the wallboard pushes at once
        # `say` steps and spoken announcements; `http` steps' lookups
        self.speech = Speech(cfg.tts, cfg.tts.cache or Path(cfg.paths.runtime) / "tts")
        self.lookups = LookupClient()
        self.acd = AcdRuntime(cfg, self.store, on_change=self.changed.set) if cfg.queues else None
        # the queued callbacks' calls: the runtime knows them only as acd/ports.QueueCallbacks
        self.callbacks: Callbacks | None = None
        if self.acd is not None:
            self.acd.speech = self.speech
            self.acd.legs_in_use = self.legs_in_use
            self.callbacks = Callbacks(self.acd, self._place_callback_leg, self.pool.send,
                                       forget_leg=self._forget_callback_leg)
            self.acd.callbacks = self.callbacks
        self.broker = EmbeddedBroker(cfg) if cfg.mqtt is not None and cfg.mqtt.embedded else None
        self.mqtt: MqttLink | None = None
        if cfg.mqtt is not None and self.acd is not None:
            self.mqtt = MqttLink(cfg.mqtt, password=self.broker.password if self.broker else None,
                                 username=cfg.mqtt.client_id if self.broker else None)
        self.router = TaskRouter(self.acd, self.store, self.mqtt) if self.acd is not None else None
        self.members = Membership(self.acd, self.store) if self.acd is not None else None
        # attended transfers from the agent's phone (hold, second call, REFER with Replaces)
        self.phone_consults = (PhoneConsults(self.acd, self.legs_promised, self._steer_agent_calls,
                                             self._agent_by_user) if self.acd is not None else None)
        # webhooks: every event published (MQTT or not) and the calls' own ends, from a stored outbox
        self.webhooks = WebhookSender(lambda: self.cfg, self.store)
        if self.router is not None:
            self.router.tap = self.webhooks.observe
            self.router.dial = self.dial
            self.router.call_task = self.call_from_task
        # customers: keys, offer context and wrap-up (docs/customers.md); None without the section
        self.customers = CustomerBook(cfg.customers, self.store, cfg.storage.path, cfg.paths.prompts,
                                      publish=self.mqtt.publish if self.mqtt is not None else None,
                                      topic_prefix=self.mqtt.prefix if self.mqtt is not None else "") \
            if cfg.customers is not None else None
        if self.acd is not None:
            self.acd.customers = self.customers
        if self.router is not None:
            self.router.customers = self.customers
        # listen / whisper / barge (supervision.py): the supervisor's leg lives in the call's worker
        self.supervisions = Supervisions(lambda: self.cfg, self.acd, self.store, lambda w, c: self.pool.send(w, c),
                                         lambda worker, leg, s: self.sessions.__setitem__((worker, leg), s),
                                         self.inbound_calls,
                                         notice=self.router.agent_notice if self.router is not None else None)
        self.edge_events = EdgeEvents(cfg.sip.host, events_port(cfg), self._edge_event)
        # voicemail: messages, their readers on MQTT, and the phones' message-waiting lamps
        self._messages: dict[str, tuple[str, str, str, str, float]] = {}  # rec_id -> message not yet announced
        self.mwi = MwiNotifier(self.edge_events.send, self._mwi_counts, cfg.sip.host, cfg.sip.port)
        self.voicemail = Voicemail(lambda: self.cfg, self.store, publish=self._voicemail_publish,
                                   counts_changed=self._voicemail_counts_changed)
        self._reg_task: asyncio.Task[None] | None = None
        self._edge_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.started_at = time.time()
        self.schedule_overrides: dict[str, str] = {}  # schedule -> open|closed, set by operators
        self.calls_total = 0
        # bridges whose media left the workers (direct) or stayed / came back (anchored)
        self.media_paths: dict[str, int] = {"direct": 0, "anchored": 0}
        self.load_check = LoadReconciler()
        self.edge_counters: dict[str, int] = {}
        self.auth_banned: list[str] = []
        self.over_capacity_refused = 0
        self.leg_audit = LegAudit()
        self.outbound_calls: dict[str, OutboundCall] = {}  # calls agents place, by call id (docs/outbound.md)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        Path(self.cfg.paths.runtime).mkdir(parents=True, exist_ok=True)
        Path(self.cfg.paths.recordings).mkdir(parents=True, exist_ok=True)
        # prompts and hold music the workers cannot play as they are: converted (or left out) now,
        # one warning each, not in the middle of a caller's wait
        prompts.configure(Path(self.cfg.paths.runtime) / "prompts-8k")
        prompts.prewarm(self.cfg)
        await self.store.open()
        self.schedule_overrides.update(await self.store.schedule_overrides())
        await self.store.close_orphans(time.time())  # logs store.orphans_closed
        await self.voicemail.start()  # its boxes' counts, read once before any call can change them
        if self.members is not None:
            await self.members.load(self.cfg)  # members changed at run time, over the YAML's
        await self.webhooks.start()  # deliveries a previous run left, in event order
        if self.customers is not None:
            await self.customers.start()  # before the router: restored tasks get their context
        await self.edge.check()
        if self.broker is not None:
            await self.broker.start()
        if self.router is not None:
            await self.router.start()  # agents' presence and open tasks come back from the store
        await self.pool.start()
        if self.reg_agent is not None:
            await self.reg_agent.start()
        if self.rtpengine is not None:
            await self.rtpengine.start()
        await self.edge.start()
        self.edge_events.start()
        self.mwi.start()
        if self.callbacks is not None:
            # callbacks come back in their places once workers can dial them (docs/callbacks.md)
            self.callback_windows()
            restored = self.callbacks.restore(await self.store.open_callbacks())
            if restored:
                log.info("callbacks.restored", callbacks=restored)
            task = asyncio.create_task(self._callback_window_loop(), name="callback-windows")
            self._background.add(task)
        self._reg_task = asyncio.create_task(self._registration_loop(), name="registrations")
        self._edge_task = asyncio.create_task(self._edge_watch_loop(), name="edge-watch")
        if self.cfg.workers.ceiling > self.cfg.workers.count:
            self._pool_task = asyncio.create_task(self._pool_loop(), name="pool-plan")
        days = self.cfg.storage.recording_retention_days
        if days is not None:
            from ringmaster import retention

            task = asyncio.create_task(retention.run_forever(
                self.store, days, self.cfg.paths.recordings, lambda: {s.call_id for s in self.live_sessions()}),
                name="retention")
            self._background.add(task)
        vm_days = self.cfg.storage.voicemail_retention_days
        if vm_days is not None:
            from ringmaster import retention

            task = asyncio.create_task(retention.run_voicemail_forever(
                self.voicemail, vm_days, lambda: {s.call_id for s in self.live_sessions()}), name="retention")
            self._background.add(task)
        log.info("controller.started", workers=len(self.pool.workers), edge=self.cfg.sip.listen,
                 pid=os.getpid())
        from ringmaster.acd.config import routing_warnings
        for w in routing_warnings(self.cfg.queues, self.cfg.agents):
            log.warning("acd.queue_unstaffed", detail=w)
        if self.cfg.placeholder_secrets():
            log.warning("config.placeholder_secrets", places=self.cfg.placeholder_secrets())
        from ringmaster.tts import voice_problems

        for problem in voice_problems(self.cfg):  # the calls still run; what they say is left out
            log.error("tts.voice_missing", detail=problem)

    async def stop(self) -> None:
        """Hang up every call, let the BYEs out, record the ends, stop workers then the edge.
        Each part's stop is bounded by its own timeout; while one takes longer than
        STOP_SLOW_AFTER s, `controller.stop_slow` names it and every task's stack, every few
        seconds (a stop that hangs is otherwise only a SIGKILL from systemd)."""
        log.info("controller.stopping", calls=len(self.live_sessions()))
        self._stop_stage = "calls"
        watchdog = asyncio.create_task(self._watch_stop(), name="stop-watchdog")
        try:
            await self._stop_parts()
        finally:
            watchdog.cancel()
        log.info("controller.stopped")

    async def _watch_stop(self) -> None:
        began = time.monotonic()
        while True:
            await asyncio.sleep(STOP_SLOW_AFTER)
            me = asyncio.current_task()
            tasks = {t.get_name(): "".join(_task_where(t)) for t in asyncio.all_tasks() if t is not me}
            log.warning("controller.stop_slow", stage=self._stop_stage,
                        seconds=round(time.monotonic() - began, 1), tasks=tasks)

    async def _stop_parts(self) -> None:
        if self._reg_task is not None:
            self._reg_task.cancel()
        if self._edge_task is not None:
            self._edge_task.cancel()
        if self._pool_task is not None:
            self._pool_task.cancel()
        for task in list(self._background):
            if task.get_name() in ("retention", "callback-windows"):
                task.cancel()
        if self.callbacks is not None:
            self.callbacks.stop()  # hung up; the callbacks stay stored for the next start
        for s in self.live_sessions():
            s.execute([_shutdown_hangup()])
        deadline = time.monotonic() + 2.0
        while self.live_sessions() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._stop_stage = "edge-events"
        await self.edge_events.stop()
        self._stop_stage = "mwi"
        await self.mwi.stop()
        self._stop_stage = "workers"
        codes = await self.pool.stop()
        if self.reg_agent is not None:
            self._stop_stage = "registrations"
            codes += await self.reg_agent.stop()  # its shutdown un-REGISTERs
        for s in self.live_sessions():
            s.fail("shutdown")
        self._stop_stage = "edge"
        await self.edge.stop()
        if self.rtpengine is not None:
            self._stop_stage = "rtpengine"
            await self.rtpengine.stop()
        if self.router is not None:
            self._stop_stage = "mqtt"
            await self.router.stop()
        if self.broker is not None:
            self._stop_stage = "mqtt-broker"
            await self.broker.stop()
        self._stop_stage = "lookups"
        await self.lookups.close()
        self._stop_stage = "voicemail"
        await self.voicemail.stop()
        self._stop_stage = "webhooks"
        await self.webhooks.stop()  # what is not delivered stays in the store's outbox
        if self.customers is not None:
            self._stop_stage = "customers"
            await self.customers.stop()
        self._stop_stage = "store"
        await self.store.close()
        bad = [c for c in codes if c != 0]
        if bad:
            log.error("controller.worker_exit_codes", codes=codes)

    def live_sessions(self) -> list[CallSession]:
        unique = {id(s): s for s in self.sessions.values()}  # a transfer maps two legs to one call
        return [s for s in unique.values() if not s.ended]

    # ------------------------------------------------------------ worker events

    def on_worker_event(self, wp: WorkerProcess, msg: p.Message) -> None:
        if isinstance(msg, p.Incoming):
            self._incoming(wp.name, msg)
            return
        if isinstance(msg, p.RegState):
            self._reg_state(wp.name, msg)
            return
        if isinstance(msg, p.Slots):
            self._slots(wp, msg)
            return
        if isinstance(msg, p.MediaPath):
            self._media_path(wp, msg)
            return
        if isinstance(msg, p.RecordingDone):
            self._announce_message(msg.rec_id)
            return
        if isinstance(msg, p.SourceRefused):
            # the worker's own defence held: someone reached its SIP port around the edge
            # (403) or a burst spent its media budget (480); summed per second by the worker
            log.warning("worker.request_refused", worker=wp.name, source=msg.source,
                        method=msg.method, code=msg.code, count=msg.count)
            return
        leg = getattr(msg, "leg", "")
        handler = self.callback_legs.get((wp.name, leg))
        if handler is not None:
            handler.on_event(msg)
            if isinstance(msg, p.CallState) and msg.state == "disconnected":
                self.callback_legs.pop((wp.name, leg), None)
            return
        session = self.sessions.get((wp.name, leg))
        if session is None:
            if isinstance(msg, p.Error):
                log.error("worker.error", worker=wp.name, command=msg.command, error=msg.message, leg=leg)
            return
        if self.phone_consults is not None and self.phone_consults.refer(session, msg):
            return  # her phone's REFER with Replaces: done, or refused with the reason
        session.on_event(msg)
        if self.phone_consults is not None:
            self.phone_consults.observe(wp.name, session, msg)
        if isinstance(msg, p.CallState) and msg.state == "disconnected" and leg != session.leg:
            self.sessions.pop((wp.name, leg), None)  # an agent or transfer leg ended: not ours any more
        if session.ended and not session.b_leg and not session.wrapup_leg:
            # an agent leg still ending (a cancelled ring) keeps its route: its end frees the agent
            held = self.acd.holds_leg if self.acd is not None else (lambda leg: False)
            for key in [k for k, v in self.sessions.items() if v is session and not held(k[1])]:
                del self.sessions[key]

    def _media_path(self, wp: WorkerProcess, msg: p.MediaPath) -> None:
        """A bridge's RTP now flows between the parties ("direct") or through the worker
        ("anchored": a release refused, or media taken back for a prompt or a recording)."""
        session = self.sessions.get((wp.name, msg.leg_a))
        self.media_paths[msg.path] += 1
        (log.info if msg.path == "direct" or not msg.reason.startswith(("caller leg", "agent leg", "re-INVITE", "no plain"))
         else log.warning)("call.media_" + msg.path, worker=wp.name, leg=msg.leg_a, other_leg=msg.leg_b,
                           call_id=session.call_id if session else "", reason=msg.reason)

    def _slots(self, wp: WorkerProcess, msg: p.Slots) -> None:
        """A worker's call slots as pjsua counts them (shown by `ringmaster status`); a dial
        that waits for a free slot is logged once, when it starts waiting."""
        before = set(wp.slots.waiting) if wp.slots is not None else set()
        for leg in msg.waiting:
            if leg not in before:
                log.info("leg.dial_waiting", worker=wp.name, leg=leg, slots_used=msg.used, slots=msg.max)
        wp.slots = msg

    def on_worker_lost(self, worker: str) -> None:
        for key, s in list(self.sessions.items()):
            if key[0] == worker:
                s.fail("worker_died")
                self.sessions.pop(key, None)
        if self.phone_consults is not None:
            self.phone_consults.worker_lost(worker)
        if self.acd is not None:
            self.acd.worker_lost(worker)
            if self.callbacks is not None:
                for key in [k for k in self.callback_legs if k[0] == worker]:
                    del self.callback_legs[key]
                self.callbacks.worker_lost(worker)
        spec = self.pool.specs[worker]
        task = asyncio.create_task(self._end_dialogs(worker, f"{spec.sip_host}:{spec.sip_port}"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _end_dialogs(self, worker: str, hostport: str) -> None:
        """The dead worker's callers (and transfer targets) get a BYE from the edge, not silence."""
        try:
            ended = await self.edge.end_dialogs_of(hostport)
            log.warning("worker.calls_ended_at_edge", worker=worker, dialogs=ended)
        except Exception as exc:
            log.error("worker.end_dialogs_failed", worker=worker, error=str(exc))

    def on_reg_agent_lost(self, worker: str) -> None:
        for reg in self.registrations.values():
            reg.worker, reg.state, reg.retry_at = "", "unregistered", time.monotonic() + 0.5

    def inbound_calls(self) -> dict[str, int]:
        """worker -> live calls that came in on it (the calls the edge's dispatcher counts)."""
        held = dict.fromkeys(self.pool.workers, 0)
        for (worker, leg), s in self.sessions.items():
            # each call once: under its caller's leg (a transfer maps more legs to it); only
            # calls the edge dispatched (an agent's own outbound call is not in its count)
            if leg == s.leg and worker in held and not s.ended and s.dispatched:
                held[worker] += 1
        return held

    def legs_promised(self, worker: str) -> int:
        """Legs `worker` holds or has promised: 2 per live call (its caller and the agent or
        transfer leg it has or may get) + 1 per consult leg (acd/consult.py) + 1 per
        supervisor's leg (supervision.py)."""
        calls = self.inbound_calls().get(worker, 0)
        return (2 * calls + (self.acd.consults.on_worker(worker) if self.acd is not None else 0)
                + self.supervisions.legs_on(worker))

    def legs_in_use(self, worker: str) -> int:
        """The larger of the legs promised and the call slots the worker's pjsua counts (a leg
        being torn down, an INVITE just arrived): what a new consult leg must fit beside."""
        wp = self.pool.workers.get(worker)
        used = wp.slots.used if wp is not None and wp.slots is not None else 0
        return max(self.legs_promised(worker), used)

    def _incoming(self, worker: str, msg: p.Incoming) -> None:
        # The edge never sends a worker more than max_inbound_calls, unless its count of that
        # worker's calls ran low (after a correction, see edge/loadcheck.py): the legs left
        # are for agent and transfer legs, so refuse with 486 and let the edge fail over. A
        # consult's leg and a supervisor's leg count too: a caller whose agent leg would not
        # fit there goes to another worker (acd/consult.py, supervision.py). An agent's own
        # INVITE while she is on a queue call is her consult (acd/phone_transfer.py): not an
        # inbound call, it checks the legs it needs itself.
        if self.phone_consults is not None and self.phone_consults.incoming(worker, msg):
            return
        if (self.inbound_calls().get(worker, 0) >= self.cfg.workers.max_inbound_calls
                or self.legs_promised(worker) + 2 > MAX_LEGS):
            self.over_capacity_refused += 1
            log.warning("call.worker_full_refused", worker=worker, sip_call_id=msg.sip_call_id,
                        supervisor_legs=self.supervisions.legs_on(worker) or None)
            self.pool.send(worker, p.Reject(leg=msg.leg, code=486, reason="Worker Full"))
            return
        agent_user = next((v for k, v in msg.headers if k.lower() == "x-ringmaster-agent"), None)
        if agent_user is not None:  # the edge authenticated an agent's softphone (route[AGENTCALL])
            self._agent_call(worker, msg, agent_user.strip())
            return
        called = sip_user(msg.request_uri)
        for reg in self.registrations.values():
            # a registered trunk calls our Contact (the registration user); the DID is in To
            if called == reg.spec.username:
                called = sip_user(msg.to_uri) or called
        # both are the caller's to choose: bounded here, before routing matches the plan's
        # patterns against them and the store and flows keep them
        called = inputs.party_id(called)
        caller = inputs.party_id(sip_user(msg.from_uri) or msg.from_uri)
        session = CallSession(call_id=new_call_id(), worker=worker, leg=msg.leg, caller=caller,
                              called=called, send=self.pool.send, store=self.store,
                              recordings_dir=self.cfg.paths.recordings, direct_media=self.cfg.sip.direct_media)
        session.on_message = self._message_left
        session.notify = lambda kind, data: self._call_notified(session.call_id, kind, data)
        session.bind_leg = lambda leg: self.sessions.__setitem__((worker, leg), session)
        session.acd = self.acd
        session.supervisions = self.supervisions
        # hold music when a party holds a call outside a queue (a queue's own `moh` otherwise)
        session.default_moh = (str(Path(self.cfg.paths.prompts) / "please-hold.wav"),)
        # the agent's phone shows the caller: From's name and number, on the edge's host
        session.caller_name = display_name(msg.from_uri)
        session.identity_host = self.cfg.sip.host
        session.send_pai = self.cfg.sip.send_pai
        session.speech, session.lookups = self.speech, self.lookups
        session.customers = self.customers
        self.sessions[(worker, msg.leg)] = session
        self.calls_total += 1
        self.store.call_arrived(session.call_id, msg.sip_call_id, caller, called, msg.request_uri,
                                worker, session.arrived_at)
        if self.customers is not None:
            self.customers.call_identified(session)  # the caller ID's customer, from the first moment
        route = self.dialplan.route(called)
        if route.flow is None:
            session.log.info("call.no_route", called=called, reject=route.reject)
            session.reject(route.reject, "no_route")
            return
        self.store.call_flow(session.call_id, route.flow.name)
        session.run = FlowRun(self.dialplan, route.flow, variables={**dict(route.variables), "caller": caller, "called": called},
                              overrides=self.schedule_overrides)
        session.start()

    # ------------------------------------------------------------ calls agents place (docs/outbound.md)

    def _steer_agent_calls(self, user: str, worker: str | None) -> None:
        """Have the edge send the softphone `user`'s next INVITE to `worker` (None: by load
        again): its htable `agentcall` (route[AGENTCALL]; acd/phone_transfer.py).

        A set and the clear after it reach the table in the order asked: background tasks
        start in creation order, each sends its one datagram in its first step, and the edge
        reads its RPC socket in one process (jsonrpcs dgram_workers 1, kamailio.cfg.tmpl)."""
        spec = self.pool.specs.get(worker) if worker is not None else None

        async def rpc() -> None:
            try:
                if spec is None:
                    await self.edge.rpc("htable.delete", "agentcall", f"w:{user}")
                else:
                    await self.edge.rpc("htable.sets", "agentcall", f"w:{user}", f"sip:{spec.sip_host}:{spec.sip_port}")
            except Exception as exc:  # the edge restarting: the INVITE goes by load, and is refused there
                log.warning("edge.agent_steer_failed", user=user, worker=worker, error=str(exc))

        self._background_task(rpc(), f"steer-{user}")

    def _agent_by_user(self, user: str) -> str | None:
        return next((name for name, a in self.cfg.agents.items()
                     if a.softphone is not None and a.softphone.username == user), None)

    def _agent_call(self, worker: str, msg: p.Incoming, user: str) -> None:
        """An agent's softphone INVITE (digest-checked at the edge as that agent): placed by
        the outbound rules, or refused with 403, a Warning with the reason and a stored record."""
        agent = self._agent_by_user(user)
        number = inputs.party_id(sip_user(msg.request_uri))
        if agent is None:  # the edge knows her, the controller's plan no more (a reload between)
            log.warning("outbound.unknown_agent", user=user[:64], sip_call_id=msg.sip_call_id)
            self.pool.send(worker, p.Reject(leg=msg.leg, code=403, reason="Forbidden",
                                            headers=(warning_header("unknown agent"),)))
            return
        feature = FEATURE_CODE.fullmatch(number)
        if feature is not None and agent in self.cfg.supervision.supervisors:
            self._supervise_by_code(worker, msg, agent, DTMF_MODES[feature.group(1)], feature.group(2))
            return
        verdict = self._outbound_verdict(agent, number)
        if isinstance(verdict, Refusal):
            self._refused(agent, number, verdict.reason, "softphone", msg.sip_call_id, msg.request_uri, worker)
            self.pool.send(worker, p.Reject(leg=msg.leg, code=403, reason="Not Allowed",
                                            headers=(warning_header(verdict.reason),)))
            return
        self._place(verdict, agent, worker, msg.leg, "softphone", "softphone", sip_call_id=msg.sip_call_id,
                    request_uri=msg.request_uri)

    def _supervise_by_code(self, worker: str, msg: p.Incoming, supervisor: str, mode: str, target: str) -> None:
        """A supervisor's phone dialled *1 / *2 / *3 and an agent's name or username (listen,
        whisper, barge, as FreeSWITCH eavesdrop's keys): her INVITE is answered 480 "Ringing You
        Back" and she is rung from the worker that holds that agent's call (all its legs must
        meet in one conference bridge, docs/supervision.md), or 403/404 with the reason in a
        Warning. Nothing is dialled for a refusal."""
        agent = target if target in self.cfg.agents else self._agent_by_user(target)
        q = next((q for q in self.acd.calls.values() if q.agent == agent and q.connected), None) \
            if self.acd is not None and agent is not None else None
        if q is None:
            result: dict[str, Any] = {"error": f"agent {target[:64]!r} is not on a queue call", "code": 404}
        else:
            result = self.supervisions.request(q.session.call_id, supervisor, mode, "feature_code",
                                               as_supervisor=supervisor)
        if "error" in result:
            log.warning("supervision.code_refused", supervisor=supervisor, target=target[:64], mode=mode,
                        reason=result["error"])
            code = 404 if result.get("code") == 404 else 403
            self.pool.send(worker, p.Reject(leg=msg.leg, code=code, reason="Not Found" if code == 404 else "Forbidden",
                                            headers=(warning_header(str(result["error"])),)))
            return
        log.info("supervision.code", supervisor=supervisor, agent=agent, mode=mode, call_id=result.get("call_id"))
        self.pool.send(worker, p.Reject(leg=msg.leg, code=480, reason="Ringing You Back",
                                        headers=(warning_header(f"{mode} on {agent}'s call: your phone rings now"),)))

    def _outbound_verdict(self, agent: str, number: str) -> Permit | Refusal:
        verdict = decide(self.cfg, agent, number)
        if isinstance(verdict, Refusal):
            return verdict
        for call in self.outbound_calls.values():
            if call.agent == agent and not call.ended:
                return Refusal(f"agent {agent!r} is placing a call already")
        return verdict

    def _refused(self, agent: str, number: str, reason: str, via: str, sip_call_id: str = "",
                 request_uri: str = "", worker: str = "", task_ref: str = "") -> None:
        """A call the outbound rules (or the agent's state) refused: logged, and stored as an
        outbound call with disposition `refused` and the reason; nothing was dialled."""
        call_id = new_call_id()
        now = time.time()
        log.warning("outbound.refused", call_id=call_id, agent=agent, number=number[:40], via=via, reason=reason)
        self.store.call_arrived(call_id, sip_call_id or call_id, agent, number, request_uri or f"tel:{number}",
                                worker, now)
        self.store.call_outbound(call_id, agent, number, None, None, task_ref)
        self.store.event(call_id, "OUTBOUND_REFUSED", now, agent=agent, number=number, via=via, reason=reason)
        self.store.call_ended(call_id, now, "refused", "outbound_refused", 403, "ringmaster", [], {"reason": reason})

    def _place(self, permit: Permit, agent: str, worker: str, leg: str, mode: str, via: str, *,
               sip_call_id: str = "", request_uri: str = "", task_ref: str = "", customer_key: str | None = None,
               agent_uri: str = "") -> OutboundCall | Refusal:
        call_id = new_call_id()
        if self.acd is not None:
            refusal = self.acd.outbound_started(agent, call_id)
            if refusal is not None:
                self._refused(agent, permit.number, refusal, via, sip_call_id, request_uri, worker, task_ref)
                if mode == "softphone":
                    # 403, not 486: the edge would try a 486 on another worker (failure_route[DSFAIL])
                    self.pool.send(worker, p.Reject(leg=leg, code=403, reason="Agent Busy",
                                                    headers=(warning_header(refusal),)))
                return Refusal(refusal)
        call = OutboundCall(call_id=call_id, worker=worker, leg=leg, caller=permit.caller_id or agent,
                            called=permit.number, send=self.pool.send, store=self.store,
                            recordings_dir=self.cfg.paths.recordings, direct_media=self.cfg.sip.direct_media,
                            agent=agent, number=permit.number, mode=mode, via=via, permit=permit, task_ref=task_ref,
                            agent_uri=agent_uri, dispatched=mode == "softphone")
        call.bind_leg = lambda lg: self.sessions.__setitem__((worker, lg), call)
        call.notify = lambda kind, data: self._call_notified(call.call_id, kind, data)
        call.identity_host = self.cfg.sip.host
        call.edge = f"{self.cfg.sip.host}:{self.cfg.sip.port}"
        call.default_moh = (str(Path(self.cfg.paths.prompts) / "please-hold.wav"),)
        call.on_done = self._outbound_done
        self.sessions[(worker, leg)] = call
        self.outbound_calls[call_id] = call
        self.calls_total += 1
        self.store.call_arrived(call_id, sip_call_id or call_id, call.caller, permit.number,
                                request_uri or f"tel:{permit.number}", worker, call.arrived_at)
        if self.customers is not None:
            from ringmaster.customers import caller_key, key_kind

            key = customer_key or caller_key(permit.number, self.customers.cfg.default_country)
            if key is not None:
                self.store.customer_seen(key, key_kind(key), call.arrived_at)
                self.store.call_customer(call_id, key)
                call.customer_key = key
        call.begin()
        if self.router is not None:
            self.router.outbound_event("started", call)
        return call

    def _outbound_done(self, call: OutboundCall) -> None:
        self.outbound_calls.pop(call.call_id, None)
        if self.acd is not None:
            talked = call.customer_answered_at is not None and call.agent_answered_at is not None
            self.acd.outbound_ended(call.agent, call.call_id, talked)
        if self.router is not None:
            self.router.outbound_event("ended", call)

    def dial(self, agent: str, number: str, via: str, task_ref: str = "",
             customer_key: str | None = None) -> dict[str, Any]:
        """Click-to-dial (API, MQTT, a chat's call): ring the agent's phone first, then, once
        she answers, the customer through the rule's trunk. Returns {"call_id", "agent",
        "number", "route"} or {"error": reason} (refused: stored, nothing dialled)."""
        spec = self.cfg.agents.get(agent)
        if spec is None:
            return {"error": f"unknown agent {agent[:64]!r}"}
        verdict = self._outbound_verdict(agent, number)
        if isinstance(verdict, Permit) and self.acd is not None:
            unreachable = self.acd.agent_reachable(agent)
            if unreachable is not None:
                verdict = Refusal(unreachable)
        alive = [n for n, w in self.pool.workers.items() if w.alive and n not in self.retiring]
        if isinstance(verdict, Permit) and not alive:
            verdict = Refusal("no media worker is running")
        if isinstance(verdict, Refusal):
            self._refused(agent, number[:40], verdict.reason, via, task_ref=task_ref)
            return {"error": verdict.reason}
        legs = self.worker_calls()
        worker = min(alive, key=lambda n: legs.get(n, 0))
        user = spec.softphone.username if spec.softphone is not None else (spec.mobile or "")
        agent_uri = f"sip:{user}@{self.cfg.sip.host}:{self.cfg.sip.port}"
        call_id_leg = f"{new_call_id()}-a"
        placed = self._place(verdict, agent, worker, call_id_leg, "click", via, task_ref=task_ref,
                             customer_key=customer_key, agent_uri=agent_uri)
        if isinstance(placed, Refusal):
            return {"error": placed.reason}
        return {"call_id": placed.call_id, "agent": agent, "number": verdict.number, "route": verdict.rule.route,
                "task": task_ref or None}

    def call_from_task(self, task_id: str, agent: str | None, via: str) -> dict[str, Any]:
        """Chat to voice (issue 13 item 6): the agent holding chat/email task `task_id` calls the
        customer's number (the task's `phone` field, else its customer key when that is a
        phone number), ringing her first; the call record carries the task's id. `agent`:
        who asks (None: an operator for the task's agent). {"error": reason} if it cannot."""
        if self.acd is None:
            return {"error": "no queues are configured"}
        task = self.acd.engine.tasks.get(task_id)
        if task is None or task.channel == "voice":
            return {"error": f"unknown or closed task {task_id[:64]!r}"}
        if task.agent is None:
            return {"error": f"task {task_id!r} is not assigned to an agent"}
        if agent is not None and task.agent != agent:
            return {"error": f"task {task_id!r} is not held by agent {agent!r}"}
        number, key = self._task_number(task_id, task.data)
        if number is None:
            return {"error": f"task {task_id!r} has no phone number (a `phone` field or a phone customer key)"}
        result = self.dial(task.agent, number, via, task_ref=task_id, customer_key=key)
        if "error" not in result and self.router is not None:
            self.router.task_call(task_id, task.queue, task.channel, task.agent, result["call_id"], number)
        return result

    async def chat_from_call(self, call_id: str, queue: str, task_id: str | None = None) -> dict[str, Any]:
        """Voice to chat (issue 13 item 6): an integration has sent the caller of live call
        `call_id` a chat link; the chat task it opens is created here, in `queue`, carrying the
        call's context (its id, caller, called number, IVR variables; `data.call_id` links it)
        and the call's customer, so its offer shows who it is and what happened before.
        {"task", "queue", "call_id"} or {"error": reason}."""
        from ringmaster.mqtt.payloads import BadPayload, NewTask

        if self.router is None:
            return {"error": "no queues are configured"}
        session = next((s for s in self.live_sessions() if s.call_id == call_id), None)
        if session is None:
            return {"error": f"no live call {call_id[:64]!r}"}
        variables = {k: v for k, v in (session.run.variables if session.run is not None else {}).items()
                     if isinstance(v, str | int | float | bool)}
        data = {"call_id": call_id, "caller": session.caller, "called": session.called, "variables": variables}
        try:
            msg = NewTask(version=1, id=task_id, channel="chat", queue=queue, data=data, customer=session.customer_key)
            new_id = await self.router.new_task(msg)
        except BadPayload as exc:
            return {"error": str(exc)}
        except ValueError as exc:  # pydantic: a task id or queue name that is not plain
            return {"error": str(exc).splitlines()[0][:200]}
        self.store.event(call_id, "CHAT_OPENED", task=new_id, queue=queue)
        session.log.info("call.chat_opened", task=new_id, queue=queue)
        return {"task": new_id, "queue": queue, "call_id": call_id}

    def _task_number(self, task_id: str, data: dict[str, Any]) -> tuple[str | None, str | None]:
        """(number to dial, customer key) of a task: its data's `phone`, else its customer's key
        if that is a phone number."""
        context = self.router.context_of(task_id) if self.router is not None else None
        key = context.key if context is not None else None
        phone = data.get("phone")
        if isinstance(phone, str) and phone.strip():
            return phone.strip().replace(" ", ""), key
        if key is not None and key.startswith("+"):
            return key, key
        return None, key

    # ------------------------------------------------------------ agents at the edge

    def _edge_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "mwi-subscribe":
            self.mwi.on_event(event)
            return
        if self.acd is None:
            return
        if event.get("event") == "sync":
            # (re)connected: events may have been missed, so read the registrar's table
            task = asyncio.create_task(self._sync_registrations())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            self.acd.edge_event(event)

    async def _sync_registrations(self) -> None:
        try:
            dump = await self.edge.rpc("ul.dump")
        except Exception as exc:
            log.error("edge.registrations_unreadable", error=str(exc))
            return
        users: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "AoR" and isinstance(v, str):
                        users.add(v.split("@", 1)[0])
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(dump)
        if self.acd is not None:
            self.acd.edge_event({"event": "sync"}, registered_users=users)

    # ------------------------------------------------------------ registrations

    def _reg_state(self, worker: str, msg: p.RegState) -> None:
        reg = self.registrations.get(msg.reg_id)
        if reg is None:
            return
        name = reg.on_result(msg.code, msg.reason, msg.expires, msg.registered, msg.auth_failed,
                             time.monotonic())
        fields = dict(registration=reg.spec.name, registrar=reg.spec.registrar, code=msg.code,
                      reason=msg.reason, worker=worker)
        if name == "registration.ok":
            log.info(name, expires=msg.expires, **fields)
        elif name == "registration.auth_failed":
            log.error(name, hint="the registrar rejected username/password; check sip.registrations",
                      retry_in=int(reg.retry_at - time.monotonic()) if reg.retry_at else None, **fields)
            self._send_reg(p.Unregister(reg_id=reg.spec.name))  # stop pjsua's own retries
            reg.worker = ""
        elif name == "registration.failed":
            log.warning(name, retry_in=round(reg.retry_at - time.monotonic(), 1) if reg.retry_at else None,
                        failures=reg.failures, **fields)
            self._send_reg(p.Unregister(reg_id=reg.spec.name))
            reg.worker = ""

    def _send_reg(self, cmd: p.Message) -> bool:
        return self.reg_agent is not None and self.reg_agent.send("reg", cmd)

    async def _registration_loop(self) -> None:
        while self.reg_agent is not None:
            now = time.monotonic()
            agent = self.reg_agent.workers.get("reg")
            for reg in self.registrations.values():
                if reg.worker or (reg.retry_at is not None and now < reg.retry_at):
                    continue
                if agent is None or not agent.alive:
                    continue
                worker = agent.name
                s = reg.spec
                sent = self._send_reg(p.Register(
                    reg_id=s.name, registrar=s.registrar, aor=s.address_of_record,
                    username=s.username, password=s.password, contact_uri=reg.contact,
                    expires=s.expires))
                if sent:
                    reg.worker, reg.state, reg.retry_at = worker, "registering", None
                    log.info("registration.sent", registration=s.name, registrar=s.registrar, worker=worker)
            await asyncio.sleep(0.25)

    # ------------------------------------------------------------ an elastic pool

    async def _pool_loop(self, every: float = 0.25) -> None:
        """Grow the pool ahead of the load and retire idle workers (poolplan.PoolPlan)."""
        while True:
            await asyncio.sleep(every)
            try:
                self._plan_pool()
            except Exception:
                log.exception("pool.plan_failed")

    def worker_calls(self) -> dict[str, int]:
        """worker -> live call legs it holds (inbound and dialled), as the controller knows them."""
        held = dict.fromkeys(self.pool.workers, 0)
        for (worker, _leg), s in self.sessions.items():
            if worker in held and not s.ended:
                held[worker] += 1
        return held

    def _plan_pool(self) -> None:
        calls = self.worker_calls()
        running = [WorkerView(name, calls.get(name, 0)) for name, wp in self.pool.workers.items()
                   if name not in self.retiring and wp.alive]
        running += [WorkerView(name, 0, ready=False) for name in self.spawning]
        for step in self.pool_plan.decide(running, time.monotonic()):
            if isinstance(step, Spawn) and step.worker not in self.spawning:
                self.spawning.add(step.worker)
                self._background_task(self._grow(step.worker), f"grow-{step.worker}")
            elif isinstance(step, Retire):
                self.retiring.add(step.worker)
                self._background_task(self._retire(step.worker), f"retire-{step.worker}")

    def _background_task(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _grow(self, name: str) -> None:
        try:
            await self.pool.grow(name)
            await self.edge.add_worker(self.pool.specs[name])
        except Exception as exc:
            log.error("pool.grow_failed", worker=name, error=str(exc))
            await self.pool.retire(name)
        finally:
            self.spawning.discard(name)

    async def _retire(self, name: str) -> None:
        try:
            await self.edge.remove_worker(self.pool.specs[name])
            await asyncio.sleep(1.0)  # an INVITE already on its way still lands: let it
            while self.worker_calls().get(name, 0):
                await asyncio.sleep(0.5)
            await self.pool.retire(name)
        except Exception as exc:
            log.error("pool.retire_failed", worker=name, error=str(exc))
        finally:
            self.retiring.discard(name)
            self.leg_audit.forget(name)

    # ------------------------------------------------------------ the edge's view

    async def _edge_watch_loop(self, every: float = 5.0) -> None:
        """Every few seconds: read the edge's security counters and bans (status, /metrics),
        and compare its count of each worker's calls with the calls the worker holds."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.check_edge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the edge may be restarting: try again next time
                log.info("edge.check_skipped", error=str(exc))

    def audit_legs(self, now: float | None = None) -> None:
        """Hold each worker's legs (its last Slots report) against the calls' legs; act on what
        has differed for longer than the audit's grace (legaudit.py)."""
        now = time.monotonic() if now is None else now
        for name, wp in list(self.pool.workers.items()):
            if not wp.alive or wp.slots is None:
                continue
            known = {leg for (w, leg), s in self.sessions.items() if w == name and (not s.ended or leg == s.wrapup_leg)}
            held = set(wp.slots.legs) | set(wp.slots.waiting)
            for finding in self.leg_audit.check(name, known, held, wp.slots.used, now):
                if isinstance(finding, UnknownLeg):
                    log.warning("worker.leg_unknown_hung_up", worker=name, leg=finding.leg)
                    self.pool.send(name, p.Hangup(leg=finding.leg))
                elif isinstance(finding, MissingLeg):
                    session = self.sessions.get((name, finding.leg))
                    log.warning("worker.leg_missing_closed", worker=name, leg=finding.leg,
                                call_id=session.call_id if session else "")
                    self.on_worker_event(wp, p.CallState(leg=finding.leg, state="disconnected", code=0,
                                                         reason="leg lost in the worker (leg audit)"))
                else:
                    # one worker drained at a time: the audit must never empty the pool
                    draining = bool(self.retiring)
                    log.error("worker.slots_hidden", worker=name, slots_used=finding.slots_used, legs=finding.legs,
                              action="left alone: another worker is draining" if draining
                              else "drained, replaced when its calls end")
                    if not draining:
                        self.retiring.add(name)
                        self._background_task(self._retire(name), f"retire-{name}")

    async def check_edge(self) -> None:
        self.audit_legs()
        self.edge_counters = await self.edge.counters()
        self.auth_banned = await self.edge.banned_sources()
        loads = await self.edge.dispatcher_loads()
        alive = {n for n, w in self.pool.workers.items() if w.alive}
        real = {n: c for n, c in self.inbound_calls().items() if n in alive}
        for drift in self.load_check.check(loads, real):
            log.warning("edge.load_corrected", worker=drift.worker, edge_calls=drift.edge, real_calls=drift.real)
            await self.edge.reset_load(self.pool.specs[drift.worker])

    # ------------------------------------------------------------ reload and overrides

    def reload(self, drain: dict[str, str] | None = None) -> dict[str, Any]:
        """Validate the config file again and apply it to the running daemon only if it is valid
        and every change can be made; otherwise change nothing and say why ({"reloaded": False,
        "errors": [...]}, YAML errors as file:line:column).

        Applied without a restart: the dial plan, schedules, languages, speech, voicemail,
        HTTP endpoints; agents, queues, profiles and skills (the queue engine's reconfigure:
        presence and places kept, waiting callers keep the settings they entered with, a member
        removed keeps the call in hand); softphone accounts (the edge's subscriber table); MQTT
        users of the embedded broker. A queue removed while callers wait in it is refused unless
        `drain` names where they go (removed queue -> queue of the new config). Calls in progress
        keep the plan they started with (their FlowRun holds it). Sections that need processes
        rebuilt (sip, workers, storage, paths, http, the broker's address) change at a restart
        (listed in "needs_restart").
        """
        from ringmaster import yamlsource
        from ringmaster.config import validate
        from ringmaster.yamlsource import ConfigInvalid

        try:
            src = yamlsource.load(self.config_file)  # as config.load_config, keeping the positions
            cfg = validate(src, base_dir=Path(self.config_file).resolve().parent)
            plan = DialPlan(cfg)
        except ConfigInvalid as exc:
            errors = [str(e) for e in exc.errors]
            for e in errors:
                log.error("reload.error", error=e)
            log.error("reload.rejected", errors=len(errors), kept="previous plan")
            return {"reloaded": False, "errors": errors}
        except Exception as exc:  # unreadable file, anything else: keep the live plan
            log.error("reload.rejected", error=str(exc), kept="previous plan")
            return {"reloaded": False, "errors": [str(exc)]}
        restart = [k for k in RESTART_SECTIONS if getattr(cfg, k) != getattr(self.cfg, k)]
        if _broker_settings(cfg) != _broker_settings(self.cfg):
            restart.append("mqtt")
        errors = []
        queues: dict[str, Any] = {}
        if self.acd is None:
            # no ACD runs (the daemon started without queues): queues come at a restart; agents
            # without queues (softphones, voicemail boxes) apply like the rest
            if cfg.queues:
                errors.append(str(src.error(("queues",), "queues: the daemon started without queues: restart "
                                            "ringmaster to add queues", key=True)))
        else:
            assert self.members is not None
            queues = self.members.effective(cfg)
            # the problem is what the file no longer has: it is named at the queues section
            errors += [str(src.error(("queues",), f"queues: {p}", key=True))
                       for p in self.acd.engine.reconfigure_problems(queues, cfg.agents, drain)]
        if errors:
            for e in errors:
                log.error("reload.error", error=e)
            log.error("reload.rejected", errors=len(errors), kept="previous plan")
            return {"reloaded": False, "errors": errors}
        old = self.cfg
        # what needs a restart stays as it runs; the broker keeps its address, takes the new users
        keep = {k: getattr(old, k) for k in RESTART_SECTIONS}
        if old.mqtt is not None and cfg.mqtt is not None:
            keep["mqtt"] = old.mqtt.model_copy(update={"clients": cfg.mqtt.clients})
        else:
            keep["mqtt"] = old.mqtt
        self.cfg = cfg.model_copy(update=keep)
        self.dialplan = plan
        self.speech.cfg = cfg.tts  # the cache keeps its directory until a restart
        if self.acd is not None and self.members is not None:
            self.acd.reconfigure(self.cfg, queues, drain)
            self.members.prune(self.cfg)
            from ringmaster.acd.config import routing_warnings

            for w in routing_warnings(queues, self.cfg.agents):
                log.warning("acd.queue_unstaffed", detail=w)
            # a softphone the reload added may have registered already (or a renamed one):
            # the registrar's table says who is reachable
            self._background_task(self._sync_registrations(), "registrations-sync")
        # the new plan's prompts are converted in a thread, not on the event loop
        try:
            asyncio.get_running_loop().run_in_executor(None, prompts.prewarm, self.cfg)
        except RuntimeError:  # no loop (called outside the daemon)
            prompts.prewarm(self.cfg)
        changed = [k for k in ("agents", "queues", "profiles") if getattr(cfg, k) != getattr(old, k)]
        log.info("reload.applied", flows=len(plan.flows), entry_points=len(cfg.entry_points),
                 changed=changed or None, drained=drain or None, needs_restart=restart or None)
        self._background_task(self._edge_policy(self.cfg), "edge-policy")
        if self.broker is not None:  # clients, agents' passwords and voicemail boxes shape its users and ACL
            self._background_task(self._broker_users(self.cfg), "broker-users")
        return {"reloaded": True, "flows": sorted(plan.flows), "changed": changed, "drained": drain or {},
                "needs_restart": restart}

    async def _broker_users(self, cfg: Config) -> None:
        assert self.broker is not None
        try:
            await self.broker.reload_users(cfg)
        except Exception as exc:
            log.error("mqtt.broker_users_failed", error=str(exc))

    async def _edge_policy(self, cfg: Config) -> None:
        """The edge learns the reloaded plan's numbers, transfer targets and softphone accounts."""
        try:
            changed = await self.edge.apply_policy(cfg)
            if self.edge.apply_subscribers(cfg):
                changed.append("subscriber")
            log.info("edge.policy_applied", tables=changed)
        except Exception as exc:
            log.error("edge.policy_failed", error=str(exc))

    # ------------------------------------------------------------ webhooks

    def _call_notified(self, call_id: str, kind: str, data: dict[str, Any]) -> None:
        from ringmaster.webhooks.events import call_ended, callback_requested

        self.webhooks.emit(call_ended(call_id, data) if kind == "ended" else callback_requested(call_id, data))

    def _voicemail_publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self.mqtt is not None:
            self.mqtt.publish(topic, payload)
        self.webhooks.observe(topic, payload)

    def webhooks_status(self) -> dict[str, Any] | None:
        """Each configured endpoint's outbox (pending, in flight, dead letters, ...); None: no webhooks."""
        found = self.webhooks.status()
        return {name: e.as_dict() for name, e in found.items()} if found else None

    # ------------------------------------------------------------ voicemail

    def _message_left(self, rec_id: str, call_id: str, box: str, caller: str, path: str, seconds: float) -> None:
        # announced when the worker reports the WAV whole (RecordingDone, docs/engine-findings.md
        # 9: a reader fetching it at once must get a valid file), or after a few seconds anyway
        # (the worker died: the message is still there, maybe cut)
        self._messages[rec_id] = (call_id, box, caller, path, seconds)
        asyncio.get_running_loop().call_later(MESSAGE_DONE_WAIT, self._announce_message, rec_id)

    def _announce_message(self, rec_id: str) -> None:
        args = self._messages.pop(rec_id, None)
        if args is None:
            return
        task = asyncio.create_task(self.voicemail.message_left(*args))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _softphone_users(self, agents: frozenset[str]) -> set[str]:
        return {a.softphone.username for n, a in self.cfg.agents.items() if n in agents and a.softphone is not None}

    def _voicemail_counts_changed(self, agents: frozenset[str]) -> None:
        self.mwi.users_changed(self._softphone_users(agents))

    async def _mwi_counts(self, user: str) -> tuple[int, int] | None:
        """(new, heard) over every box the softphone user's agent may read (kept counts: no IO);
        None: no such agent."""
        agent = next((n for n, a in self.cfg.agents.items() if a.softphone is not None and a.softphone.username == user), None)
        if agent is None:
            return None
        return self.voicemail.counts(boxes_of(self.cfg, agent))

    async def voicemail_command(self, req: dict[str, Any]) -> dict[str, Any]:
        """The control socket's `voicemail` command (the CLI): list, get, heard, new, delete.
        The CLI's user reads the daemon's files: it sees every box, as an admin does."""
        from ringmaster.reports import FilterError, VoicemailFilter
        from ringmaster.voicemail import VoicemailError, url_base

        action = req.get("action")
        base = url_base(self.cfg)
        try:
            if action == "list":
                box = req.get("box")
                if box is not None and box not in self.cfg.voicemail.boxes:
                    return {"error": f"unknown box {box!r}; boxes: {', '.join(sorted(self.cfg.voicemail.boxes)) or 'none'}"}
                try:
                    f = VoicemailFilter(box=box, state=req.get("state"))  # the CLI lists every message
                except FilterError as exc:
                    return {"error": str(exc)}
                msgs = await self.voicemail.messages(None, f)
                return {"messages": [m.view(base) for m in msgs]}
            message = req.get("message")
            if not isinstance(message, int) or isinstance(message, bool):
                return {"error": "message: a message id (a number; `ringmaster voicemail list` shows them)"}
            if action == "get":
                m = await self.voicemail.message(message)
                return {"message": m.view(base), "path": str(self.voicemail.audio_path(m))}
            if action in ("heard", "new"):
                m = await self.voicemail.set_state(message, action, "cli")
                return {"message": m.view(base)}
            if action == "delete":
                m = await self.voicemail.delete(message, "cli")
                return {"message": m.view(base), "deleted": True}
        except VoicemailError as exc:
            return {"error": str(exc)}
        return {"error": "action: list, get, heard, new or delete"}

    def member_command(self, queue: str, agent: str, action: str, tier: Any = None, by: str = "") -> dict[str, Any]:
        """Add (AddQueueMember), remove (RemoveQueueMember) or re-tier (QueueMemberPenalty) a
        queue member now; kept across restarts (acd.membership). {"error": ...} changes nothing."""
        if self.members is None:
            return {"error": "no queues are configured"}
        return self.members.command(self.cfg, queue, agent, action, tier, by)
    async def customers_command(self, req: dict[str, Any]) -> dict[str, Any]:
        """The control socket's `customers` command (the CLI): merge FROM INTO, wrapup."""
        if self.customers is None:
            return {"error": "no customers section in the config"}
        action = req.get("action")
        if action == "merge":
            result = await self.customers.merge(req.get("from"), req.get("into"), "cli")
            result.pop("code", None)
            return result
        return {"error": "action: merge"}

    def agent_command(self, agent: str, action: str, reason: str = "") -> dict[str, Any]:
        if self.acd is None:
            return {"error": "no queues are configured"}
        error = self.acd.agent_command(agent, action, reason)
        if error:
            return {"error": error}
        return {"agent": agent, "state": self._agents_status().get(agent)}

    def set_recording(self, call_id: str, paused: bool) -> dict[str, Any]:
        session = next((s for s in self.live_sessions() if s.call_id == call_id), None)
        if session is None:
            return {"error": f"no live call {call_id!r}"}
        error = session.set_recording(paused)
        return {"error": error} if error else {"call_id": call_id, "recording": "paused" if paused else "recording"}

    def transfer(self, agent: str, kind: str, target: str, via: str, mode: str = "blind") -> dict[str, Any]:
        """Transfer of the call `agent` is connected to: blind (AcdRuntime.blind_transfer) or
        attended (a consult first: acd/consult.py, then `finish_consult`)."""
        if self.acd is None:
            return {"error": "no queues configured"}
        if mode == "attended":
            return self.acd.consults.start(agent, kind, target, via)
        return self.acd.blind_transfer(agent, kind, target, via)

    def finish_consult(self, agent: str, action: str, via: str) -> dict[str, Any]:
        """complete | cancel the consult `agent` started (acd/consult.py)."""
        if self.acd is None:
            return {"error": "no queues configured"}
        return self.acd.consults.finish(agent, action, via)

    def supervise(self, call_id: str, supervisor: str, mode: str, via: str,
                  as_supervisor: str | None = None) -> dict[str, Any]:
        """Listen, whisper or barge on a live queue call, or change the mode (Supervisions.request):
        {"call_id", "supervisor", "mode", "state", "leg"} or {"error", "code"}."""
        return self.supervisions.request(call_id, supervisor, mode, via, as_supervisor)

    def supervise_stop(self, call_id: str, as_supervisor: str | None = None) -> dict[str, Any]:
        """End the supervision of a call (Supervisions.stop)."""
        return self.supervisions.stop(call_id, as_supervisor)

    def set_schedule(self, name: str, state: str | None) -> dict[str, Any]:
        if name not in self.dialplan.schedules:
            return {"error": f"unknown schedule {name!r}; known: {sorted(self.dialplan.schedules)}"}
        if state not in (None, "open", "closed"):
            return {"error": "state must be open, closed or auto"}
        if state is None:
            self.schedule_overrides.pop(name, None)
        else:
            self.schedule_overrides[name] = state
        self.store.set_schedule_override(name, state, time.time())
        log.info("schedule.override", schedule=name, state=state or "auto")
        self.callback_windows()
        return {"schedule": name, "state": state or "auto"}

    # ------------------------------------------------------------ queued callbacks (docs/callbacks.md)

    def _place_callback_leg(self, leg: str, handler: Callbacks, worker: str | None = None) -> str | None:
        """The worker a callback leg is dialled from (given, or the alive one with the fewest
        legs), its events routed to `handler`; None when no worker is alive."""
        if worker is None:
            alive = [n for n, w in self.pool.workers.items() if w.alive and n not in self.retiring]
            if not alive:
                return None
            load = {n: 0 for n in alive}
            for (w, _), s in self.sessions.items():
                if w in load and not s.ended:
                    load[w] += 1
            for w, _ in self.callback_legs:
                if w in load:
                    load[w] += 1
            worker = min(alive, key=lambda n: (load[n], n))
        self.callback_legs[(worker, leg)] = handler
        return worker

    def _forget_callback_leg(self, worker: str, leg: str) -> None:
        self.callback_legs.pop((worker, leg), None)

    def callback_windows(self) -> None:
        """Tell the engine when each queue's callbacks may be dialled (its callback schedule,
        with the operators' overrides)."""
        if self.acd is None:
            return
        now = time.time()
        actions = []
        for name, q in self.acd.engine.queues.items():
            cb = q.spec.callback
            schedule = self.dialplan.schedules.get(cb.schedule) if cb is not None and cb.schedule else None
            closed = 0.0
            if cb is not None and cb.schedule and schedule is not None:
                closed = window_closed_until(schedule, self.schedule_overrides.get(cb.schedule), now)
            actions += self.acd.engine.set_callback_window(name, closed, now)
        self.acd.apply(actions)

    async def _callback_window_loop(self, every: float = 30.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                self.callback_windows()
            except Exception as exc:  # a schedule bug must not stop the others' windows
                log.error("callbacks.window_failed", error=str(exc))

    def callbacks_waiting(self) -> list[dict[str, Any]]:
        if self.callbacks is None:
            return []
        return self.callbacks.waiting()

    def cancel_callback(self, callback_id: str, by: str) -> dict[str, Any]:
        if self.callbacks is None:
            return {"error": "no queues configured", "status": 404}
        return self.callbacks.cancel(callback_id, by)

    # ------------------------------------------------------------ status

    def _agents_status(self) -> dict[str, str]:
        if self.acd is None:
            return {}
        now = time.time()
        return {name: _agent_state(a, now) for name, a in self.acd.engine.agents.items()}

    async def status(self) -> dict[str, Any]:
        try:
            edge_view, edge_loads = await self.edge.dispatcher_view()
        except Exception as exc:  # the edge may be restarting: say so, don't fail status
            edge_view, edge_loads = {"error": str(exc)}, {}
        workers = []
        members = self.members.view(self.cfg) if self.members is not None else {}
        inbound = self.inbound_calls()
        for name, w in self.pool.workers.items():
            legs = sum(1 for k, s in self.sessions.items() if k[0] == name and not s.ended)
            workers.append({"name": name, "pid": w.pid, "sip": w.spec.sip_uri, "calls": legs,
                            # call slots as the worker's pjsua counts them (legs still ending too)
                            "slots_used": w.slots.used if w.slots else 0,
                            "slots": w.slots.max if w.slots else None,
                            "alive": w.alive, "inbound_calls": inbound.get(name, 0),
                            "edge": edge_view.get(name, "unknown"), "edge_calls": edge_loads.get(name)})
        return {"pid": os.getpid(), "uptime": round(time.time() - self.started_at, 1),
                "edge": {"listen": self.cfg.sip.listen, "pid": self.edge.proc.pid if self.edge.proc else None,
                         "restarts": self.edge.restarts, "counters": self.edge_counters,
                         "auth_banned": self.auth_banned, "load_corrections": self.load_check.corrections,
                         "worker_full_refused": self.over_capacity_refused},
                "workers": workers, "worker_restarts": self.pool.restarts,
                "last_worker_restart_seconds": self.pool.last_restart_seconds,
                "leg_audit_findings": self.leg_audit.findings_total,
                "calls": {"live": len(self.live_sessions()), "total": self.calls_total,
                          "media_paths": dict(self.media_paths),
                          "ids": [s.call_id for s in self.live_sessions()]},
                "flows": sorted(self.dialplan.flows),
                "agents": self._agents_status(),
                "queues": {q: {"waiting": len(st.waiting), "answered": st.answered, "abandoned": st.abandoned,
                               "transferred": st.transferred,
                               # waiting calls/tasks no logged-in member can take, and why
                               "unroutable": acd.waiting_diagnosis(q),
                               # waiting callers and callbacks in service order (the places the
                               # position announcements say): id -> 1-based position
                               "positions": {t.id: i for i, t in enumerate(
                                   (t for t in st.waiting if t.channel == "voice"), start=1)},
                               # members as they are now; dynamic: added or re-tiered at run time
                               "members": members.get(q, [])}
                           for acd in ([self.acd] if self.acd else []) for q, st in acd.engine.queues.items()},
                "schedules": {n: self.schedule_overrides.get(n, "auto") for n in sorted(self.dialplan.schedules)},
                "callbacks": self.callbacks_waiting(),
                "registrations": [r.as_dict() for r in self.registrations.values()],
                "mqtt": self.mqtt_status(),
                "webhooks": self.webhooks_status(),
                "mwi": self.mwi.status(),
                "store": self.store.status()}

    def task_card(self, task_id: str) -> dict[str, Any] | None:
        """The customer card of a task in the ACD (the desk shows it to the agent offered or
        holding it): channel, queue, caller, enqueued_at (epoch s), and for a call the IVR's
        variables, for a chat or email the task's data, and `customer` (CustomerContext.view(): key,
        id, name, tier, history; None without a customer). None when the ACD has no such task."""
        engine = self.acd.engine if self.acd is not None else None
        task = engine.tasks.get(task_id) if engine is not None else None
        if task is None:
            return None
        card: dict[str, Any] = {"task": task.id, "channel": task.channel, "queue": task.queue,
                                "caller": task.caller, "enqueued_at": task.enqueued_at}
        context = None
        if task.channel == "voice":
            session = next((s for s in self.live_sessions() if s.call_id == task_id), None)
            card["variables"] = dict(session.run.variables) if session is not None and session.run is not None else {}
            context = session.customer if session is not None else None
        else:
            card["data"] = dict(task.data)
            context = self.router.context_of(task_id) if self.router is not None else None
        # the customer (docs/customers.md): key, name, tier and the last interactions, as the
        # offer carried them (read once when the call entered its queue or the task arrived)
        card["customer"] = context.view() if context is not None else None
        return card

    def live_state(self) -> live.LiveState:
        """What is true now, as typed read-only values (ringmaster.live): the API, the wallboard
        and /metrics read this, never the controller's parts."""
        now = time.time()
        engine = self.acd.engine if self.acd is not None else None
        legs = self.worker_calls()
        mq = self.mqtt_status()
        health = self.store.status()
        return live.LiveState(
            at=now,
            agents=live.agents_of(engine.agents.values(), now) if engine else {},
            queues={n: live.LiveQueue.of(q) for n, q in engine.queues.items()} if engine else {},
            tasks=tuple(live.LiveTask.of(t) for t in engine.tasks.values()) if engine else (),
            calls_in_progress=len(self.live_sessions()),
            workers=tuple(live.LiveWorker(n, w.alive, legs.get(n, 0)) for n, w in sorted(self.pool.workers.items())),
            worker_restarts=self.pool.restarts,
            registrations=tuple(live.LiveRegistration(r.spec.name, r.state == "registered")
                                for r in self.registrations.values()),
            edge=live.LiveEdge(self.edge_events.connected, dict(self.edge_counters), len(self.auth_banned),
                               self.load_check.corrections),
            store=live.LiveStore(health["state"] == "ok", health["pending"], health["write_failures"],
                                 self.store.last_commit_seconds, dict(self.store.ended_calls)),
            mqtt=live.LiveMqtt(mq["connected"], mq["queued"], mq["bad_payloads"]) if mq else None,
            voicemail=live.LiveVoicemail(self.voicemail.box_counts(), len(self.mwi.subs)),
            webhooks=tuple(live.LiveWebhook(e.name, e.pending, e.in_flight, e.dead, e.delivered, e.failed_attempts,
                                            e.oldest_pending_seconds) for e in self.webhooks.status().values()))

    def mqtt_status(self) -> dict[str, Any] | None:
        if self.mqtt is None:
            return None
        return {"broker": self.mqtt.cfg.listen, "connected": self.mqtt.connected, "connects": self.mqtt.connects,
                "queued": len(self.mqtt.outbox), "dropped": self.mqtt.dropped, "last_error": self.mqtt.last_error,
                "bad_payloads": self.router.errors if self.router else 0,
                "embedded": self.broker is not None,
                "tasks_open": sum(1 for t in self.acd.engine.tasks.values() if t.channel != "voice") if self.acd else 0}


MESSAGE_DONE_WAIT = 3.0  # seconds a new voicemail message waits for its RecordingDone
# config sections a reload leaves as they run: they need processes rebuilt (a restart)
RESTART_SECTIONS = ("sip", "workers", "storage", "paths", "http", "run_as", "customers")


def _broker_settings(cfg: Config) -> Any:
    """The MQTT section less its users (which a reload applies): what needs a restart."""
    return cfg.mqtt.model_copy(update={"clients": []}) if cfg.mqtt is not None else None


def _agent_state(a: Any, now: float) -> str:
    return str(a.status(now))


def _task_where(task: asyncio.Task[Any]) -> list[str]:
    """Where a task waits: its innermost frames as `file:line function` (the stop watchdog)."""
    return [f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {f.f_code.co_name}; " for f in task.get_stack(limit=4)]


def _shutdown_hangup():  # type: ignore[no-untyped-def]
    from ringmaster.flows.actions import HangUp

    return HangUp(200, cause="shutdown")
