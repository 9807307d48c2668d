"""AcdRuntime: carries out the QueueEngine's actions with real calls, and feeds it back.

- Ring: one Dial from the caller's own worker through the edge (so the bridge stays inside
  one worker): to `sip:USER@edge` for a softphone, `sip:NUMBER@edge` for a mobile (the edge
  sends numbers to the mobile trunk). Ring-all is a single INVITE with an X-Ring header that
  the edge forks; the 200 OK's Contact says which agent answered.
- Withdraw (CancelRing): every ring leg knows which of its agents it still rings for the engine
  (`RingLeg.live`). A leg with none left is CANCELled (the edge CANCELs each branch); a fork
  that still rings others is CANCELled and dialled again for them (Kamailio 5.6's tm has no
  way to CANCEL one branch of a forked INVITE from outside a reply to it:
  docs/engine-findings.md, 72). The engine holds a withdrawn agent reserved until the leg's end
  says the phone stopped (`QueueEngine.ring_ended`), and nothing a leg reports after its
  agents were withdrawn from it (a late answer, its end) is charged to a later offer.
- Bridge: caller and agent leg joined in the worker, recorded if the queue says so.
- LeaveQueue: overflow to another queue or a flow, or back to the caller's flow.
- QueueLog: one row per event in the store's queue_log table (Asterisk's names and fields).
- Chat and email: the engine's actions for a non-voice channel go to the router registered
  for that channel (`route_channel`; tasks.TaskRouter registers for chat and email).
- Presence: every AgentChanged is written by `PresenceStore` (acd/presence_store.py) and heard
  by the listener (`listen`: the task router's MQTT states and stats).
The engine's clock is one timer, re-armed at `next_deadline()` after every change.

Imports go one way: calls.py and tasks.py use this module; it names what it needs of the task
router as acd/ports.py Protocols and imports calls.py only for type checking (calls.py types
its runtime as call/ports.py's QueueRuntime), so the three form no import cycle.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ringmaster import inputs
from ringmaster import protocol as p
from ringmaster.acd.config import AnnounceSay, Channel, Overflow, QueueConfig
from ringmaster.acd.consult import Consults
from ringmaster.acd.engine import (
    UNROUTABLE_TEXT,
    Action,
    AgentChanged,
    Announce,
    Bridge,
    CancelRing,
    DropAgent,
    LeaveQueue,
    QueueEngine,
    QueueLog,
    Ring,
    Unroutable,
)
from ringmaster.acd.presence_store import PresenceStore
from ringmaster.sipuri import sip_user

if TYPE_CHECKING:
    from ringmaster.acd.ports import AcdListener, QueueCallbacks, TaskChannel
    from ringmaster.calls import CallSession
    from ringmaster.config import Config
    from ringmaster.customers import CustomerBook
    from ringmaster.store import Store
    from ringmaster.tts import Speech

log = structlog.get_logger("ringmaster.acd")


@dataclass(eq=False)
class RingLeg:
    """One INVITE that rings agents for a call (one agent, or a ring-all fork): agents in ring
    order; live: those it rings for the engine's current offer; withdrawn: those the engine
    withdrew while this leg rang them (told `ring_ended` when the leg ends); cancelled: our
    CANCEL is out. The leg is known until the worker reports its end, after the call may have
    left the queue."""

    session: CallSession
    leg: str
    queue: str
    agents: tuple[str, ...]
    live: set[str] = field(default_factory=set)
    withdrawn: set[str] = field(default_factory=set)
    answered_by: str | None = None
    cancelled: bool = False
    # confirm_answer: the phone answered, the agent was asked to press 1 (collect id); until she
    # does the engine still counts her ring as ringing
    confirming: str = ""

    @property
    def call_id(self) -> str:
        return self.session.call_id


@dataclass
class Queued:
    session: CallSession
    queue: str
    enqueued_at: float
    legs: dict[str, RingLeg] = field(default_factory=dict)
    agent: str | None = None
    agent_leg: str | None = None
    answered_at: float | None = None
    spec: QueueConfig | None = None  # the queue's settings when the call entered (a reload changes the next call's)
    # the worker's Bridged came: caller and agent are joined. Until then the CONNECT row waits
    # in held_connect; a caller who leaves meanwhile never talked to the agent (ABANDON)
    connected: bool = False
    held_connect: QueueLog | None = None


class AcdRuntime:
    def __init__(self, cfg: Config, store: Store, clock: Any = time.time,
                 on_change: Any = None):
        self.cfg = cfg
        self.on_change = on_change
        self.store = store
        self.clock = clock
        self.engine = QueueEngine(cfg.queues, cfg.agents,
                                  presence={a: cfg.presence_of(a) for a in cfg.agents})
        self.by_user = {a.softphone.username: name for name, a in cfg.agents.items() if a.softphone is not None}
        self.calls: dict[str, Queued] = {}
        self.ring_legs: dict[str, RingLeg] = {}  # leg id -> ring leg, until the worker reports its end
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        # chats and emails: the engine's actions go to the router of their channel
        self.channels: dict[str, TaskChannel] = {}
        # agents' and calls' changes out (MQTT states, stats, calls/events): the task router
        self.listener: AcdListener | None = None
        self.presence = PresenceStore(store, self.engine, clock)  # agents' login and pause, kept
        self.speech: Speech | None = None  # spoken announcements (set by the controller)
        self.customers: CustomerBook | None = None  # offer context and wrap-up (set by the controller)
        self._speaking: set[asyncio.Task[None]] = set()
        self.consults = Consults(self)  # attended transfers' consult legs (acd/consult.py)
        # legs a worker holds or is promised (set by the controller): the consult's leg budget
        self.legs_in_use: Callable[[str], int] | None = None
        self.callbacks: QueueCallbacks | None = None  # queued callbacks as calls (set by the controller)
        now = clock()
        for name, agent in cfg.agents.items():
            if agent.auto_login and agent.mobile is not None:
                self.apply(self.engine.agent_login(name, now))

    def route_channel(self, channel: Channel, router: TaskChannel) -> None:
        """The engine's Ring / CancelRing / Bridge / QueueLog actions for `channel` (chat,
        email) go to `router`. Voice is this runtime's own."""
        if channel is Channel.VOICE:
            raise ValueError("voice is routed by the queue runtime itself")
        self.channels[channel] = router

    def listen(self, listener: AcdListener) -> None:
        """`listener` hears of agents' changes, unroutable work and call events."""
        self.listener = listener

    # ------------------------------------------------------------ from the call sessions

    def enqueue(self, session: CallSession, queue: str, priority: int,
                skills: tuple[tuple[str, int], ...] = (), offer_to: str | None = None) -> None:
        now = self.clock()
        self.calls[session.call_id] = Queued(session, queue, now, spec=self.engine.queues[queue].spec)
        self.store.call_queued(session.call_id, queue)
        session.queue_started(queue, self.moh_files(queue))
        session.log.info("acd.enqueued", queue=queue, priority=priority, skills=dict(skills) or None)
        self.apply(self.engine.enqueue(session.call_id, queue, now, priority=priority, caller=session.caller,
                                       skills=dict(skills), offer_to=offer_to))

    def caller_gone(self, session: CallSession) -> None:
        q = self.calls.get(session.call_id)
        if q is None:
            return
        now = self.clock()
        if q.agent is None:
            self.store.call_wait(session.call_id, now - q.enqueued_at)
        self.apply(self.engine.caller_left(session.call_id, now))
        self._forget(session.call_id)

    def digit(self, session: CallSession, digit: str) -> None:
        q = self.calls.get(session.call_id)
        if q is not None and q.agent is None:
            cb = (q.spec or self.engine.queues[q.queue].spec).callback
            if cb is not None and cb.key == digit and self.callbacks is not None:
                session.callback_key(q.queue, cb)  # docs/callbacks.md: keep the place, hang up
                return
            self.apply(self.engine.exit_key(session.call_id, digit, self.clock()))

    def callback_taken(self, session: CallSession, number: str) -> tuple[str, list[str]] | None:
        """The waiting caller asked for a callback to `number` (checked): its place passes to
        the callback (engine.request_callback) and the caller leaves the queue. Returns (the
        callback id, the prompts that tell its position and estimated wait), or None if the
        caller was not waiting any more (an agent took the call meanwhile)."""
        q = self.calls.get(session.call_id)
        if q is None or q.agent is not None or self.callbacks is None:
            return None
        variables = dict(session.run.variables) if session.run is not None else {}
        cb_id = self.callbacks.request_in_queue(session.call_id, number, variables)
        if cb_id is None:
            return None
        self.calls.pop(session.call_id, None)
        self.store.call_wait(session.call_id, self.clock() - q.enqueued_at)
        self._call_event("ended", q, agent=None, reason="callback", callback_id=cb_id)
        return cb_id, self.position_prompts(session, cb_id)

    def position_prompts(self, session: CallSession, task_id: str) -> list[str]:
        """The recorded prompts saying a waiting task's place and estimated wait (as the
        periodic announcement does), in the call's language; [] if it is not waiting."""
        pos = self.engine.position_of(task_id)
        if pos is None:
            return []
        files = self.call_prompts(session, ["you-are-caller", *self._number(pos[0]), "in-line"])
        if pos[1] is not None:
            minutes = max(1, round(pos[1] / 60))
            files += self.call_prompts(session, ["estimated-wait", *self._number(minutes), "minutes"])
        return files

    def call_prompts(self, session: CallSession, names: list[str]) -> list[str]:
        """prompt_files in the call's language (its plan's fallback language next)."""
        run = session.run
        plan_cfg = run.plan.cfg if run is not None else self.cfg
        fallback = plan_cfg.languages.fallback if plan_cfg.languages is not None else ""
        return self.prompt_files(names, run.language if run is not None else "", fallback)

    def owns_leg(self, session: CallSession, leg: str) -> bool:
        """Whether `leg` is one of this call's agent legs: ringing, cancelled and not ended yet,
        or the connected agent's."""
        if leg in self.ring_legs or self.consults.owns(leg):
            return True
        q = self.calls.get(session.call_id)
        return q is not None and leg == q.agent_leg

    def holds_leg(self, leg: str) -> bool:
        """Whether the runtime still waits for `leg` to end (its call may be over already): a
        ring leg, or a consult leg (the worker's leg budget counts it until then)."""
        return leg in self.ring_legs or self.consults.owns(leg)

    def agent_leg_event(self, session: CallSession, msg: p.Message) -> None:
        """A worker event of one of the call's agent legs: a ring answered or ended, or the
        connected agent hanging up."""
        q = self.calls.get(session.call_id)
        leg = getattr(msg, "leg", "")
        if self.consults.owns(leg):
            self.consults.leg_event(msg)
            return
        if isinstance(msg, p.Error):
            session.log.error("acd.agent_leg_error", leg=leg, command=msg.command, error=msg.message)
            return
        if isinstance(msg, p.DigitsCollected):
            ring = self.ring_legs.get(leg)
            if ring is not None and ring.confirming and msg.collect_id == ring.confirming:
                self._confirmed(ring, msg.digits, msg.reason)
            return
        if not isinstance(msg, p.CallState):
            return
        now = self.clock()
        ring = self.ring_legs.get(leg)
        if msg.state == "confirmed" and ring is not None and ring.answered_by is None:
            self._answered(ring, msg, now)
        elif msg.state == "disconnected":
            if ring is not None:
                self._ring_leg_ended(ring, msg, now)
            if q is not None and leg == q.agent_leg:
                # the agent hung up on a connected call: COMPLETEAGENT, then the caller goes
                if not q.connected:
                    self._connected(q)  # hung up as the bridge was being made: it was answered
                self.consults.call_ending(q.session, "agent_hangup")
                q.session.close_holds("agent_hangup")  # UNHOLD before COMPLETEAGENT
                self._record_talk(q, now)
                self.apply(self.engine.call_ended(q.session.call_id, "agent", now))
                spec = q.spec or self.cfg.queues.get(q.queue)
                after = spec.continue_on_agent_hangup if spec is not None else None
                if after is not None and q.session.run is not None and after in q.session.run.plan.flows:
                    q.session.continue_after_agent(after)  # Asterisk's Queue option c
                else:
                    q.session.end_from_queue("agent_hangup")
                self._forget(q.session.call_id)

    def _answered(self, ring: RingLeg, msg: p.CallState, now: float) -> None:
        """A phone answered the leg (for a fork, the 200's Contact names the agent). Only an
        agent the leg still rings for the engine takes the call; an answer to a ring already
        withdrawn (it crossed our CANCEL) is hung up and charged to nobody; so is one that
        loses the ring-all race in the call's core (another agent has the call, the caller is
        gone: CallCore.ring_answered)."""
        agent = ring.agents[0] if len(ring.agents) == 1 else self.by_user.get(sip_user(msg.remote_contact), "")
        if agent not in ring.agents:
            log.error("acd.unknown_answerer", call_id=ring.call_id, contact=msg.remote_contact)
            agent = next(iter(ring.live), ring.agents[0])
        ring.answered_by = agent
        if not ring.session.ring_answered(ring.leg):
            ring.session.log.info("acd.race_lost", leg=ring.leg, agent=agent)
            ring.cancelled = True
            return
        if agent in ring.live and not ring.cancelled and ring.call_id in self.calls:
            if self._confirm_needed(agent, ring):
                self._ask_confirm(ring, agent)
                return
            self.apply(self.engine.ring_answered(ring.call_id, agent, now))
            return
        ring.session.log.info("acd.stale_answer_dropped", leg=ring.leg, agent=agent)
        ring.cancelled = True
        ring.session.hangup_leg(ring.leg)

    def _confirm_needed(self, agent: str, ring: RingLeg) -> bool:
        spec = self.cfg.agents.get(agent)
        if spec is not None and spec.confirm_answer is not None:
            return spec.confirm_answer
        q = self.calls.get(ring.call_id)
        qspec = (q.spec if q is not None else None) or self.cfg.queues.get(ring.queue)
        return qspec is not None and qspec.confirm_answer

    def _ask_confirm(self, ring: RingLeg, agent: str) -> None:
        """The phone answered but the queue (or the agent) wants a 1 first, like app_queue's
        Queue(...,M(confirm)) / Dial M() macro and FreeSWITCH's group_confirm_key: a carrier's
        voicemail or a pocket answer must not take the call. The agent hears confirm_prompt, the
        caller stays on hold music; 1 within confirm_timeout bridges, anything else (or nothing)
        hangs the leg up and counts as RINGNOANSWER."""
        q = self.calls.get(ring.call_id)
        spec = (q.spec if q is not None else None) or self.cfg.queues[ring.queue]
        files = tuple(self.prompt_files([spec.confirm_prompt])) if spec.confirm_prompt else ()
        ring.confirming = f"{ring.leg}-confirm"
        self.store.event(ring.call_id, "CONFIRM_ASKED", self.clock(), agent=agent, leg=ring.leg)
        ring.session.log.info("acd.confirm_asked", agent=agent, leg=ring.leg, timeout=spec.confirm_timeout)
        ring.session.ask_confirm(ring.leg, files, ring.confirming, spec.confirm_timeout)

    def _confirmed(self, ring: RingLeg, digits: str, reason: str) -> None:
        """The agent's answer to the confirm prompt: 1 takes the call (CONNECT as after any
        answer), anything else ends her leg as a ring nobody answered."""
        ring.confirming = ""
        agent = ring.answered_by or ""
        accepted = digits == "1"
        result = "accepted" if accepted else "timeout" if not digits else "other_key"
        self.store.event(ring.call_id, "CONFIRM", self.clock(), agent=agent, result=result, digits=digits[:1])
        ring.session.log.info("acd.confirm", agent=agent, leg=ring.leg, result=result)
        if accepted and agent in ring.live and not ring.cancelled and ring.call_id in self.calls:
            self.apply(self.engine.ring_answered(ring.call_id, agent, self.clock()))
            return
        # not taken: the agents the leg still rings for are charged a no-answer when it ends
        ring.answered_by = None
        if not ring.cancelled:
            ring.cancelled = True
            ring.session.hangup_leg(ring.leg)

    def _ring_leg_ended(self, ring: RingLeg, msg: p.CallState, now: float) -> None:
        """The worker reports the leg's end: the agents it still rang for the engine did not
        answer (RINGNOANSWER, or busy); those withdrawn from it have stopped ringing now."""
        if ring.confirming:  # hung up (by her phone, or the caller's end) before pressing 1
            ring.confirming, ring.answered_by = "", None
        self.ring_legs.pop(ring.leg, None)
        q = self.calls.get(ring.call_id)
        if q is not None:
            q.legs.pop(ring.leg, None)
        live = [a for a in ring.agents if a in ring.live]
        if ring.answered_by is None and live:
            ring.session.log.info("acd.ring_failed", leg=ring.leg, agents=live, code=msg.code, reason=msg.reason)
        ring.live.clear()
        actions: list[Action] = []
        if ring.answered_by is None:
            for agent in live:
                actions += self.engine.ring_failed(ring.call_id, agent, now, "busy" if msg.code == 486 else "noanswer")
        for agent in sorted(ring.withdrawn):
            actions += self.engine.ring_ended(ring.call_id, agent, now)
        ring.withdrawn.clear()
        self.apply(actions)

    def worker_lost(self, worker: str) -> None:
        """A worker died: its ring legs will never report an end; their agents are free."""
        now = self.clock()
        for ring in [r for r in self.ring_legs.values() if r.session.worker == worker]:
            self.ring_legs.pop(ring.leg, None)
            actions: list[Action] = []
            for agent in sorted(ring.withdrawn | ring.live):
                actions += self.engine.ring_ended(ring.call_id, agent, now)
            self.apply(actions)
        self.consults.worker_lost(worker)

    def hold_changed(self, session: CallSession, party: str, held: bool, seconds: float) -> None:
        """A party of a connected queue call held or resumed: queue_log HOLD (data: party) or
        UNHOLD (data: hold seconds, party), under the call's queue and agent. Asterisk's
        app_queue writes no hold event to queue_log; HOLD / UNHOLD are ours, named and shaped
        like its events (upper case, whole seconds) so queue_log readers can skip or use them."""
        q = self.calls.get(session.call_id)
        if q is None or q.agent is None:
            return
        now = self.clock()
        data: tuple[object, ...] = (party,) if held else (round(seconds), party)
        self.store.queue_log(now, session.call_id, q.queue, q.agent, "HOLD" if held else "UNHOLD", data)

    def caller_ended_connected(self, session: CallSession) -> None:
        """The caller hung up while talking to the agent: COMPLETECALLER."""
        q = self.calls.get(session.call_id)
        if q is None or q.agent is None:
            self.caller_gone(session)
            return
        now = self.clock()
        self.consults.call_ending(session, "caller_hangup")
        if not q.connected:
            # the caller's BYE crossed the agent's 200: he left before the worker joined them
            # and never heard the agent. Asterisk's app_queue, finding the caller hung up when
            # it is about to bridge, logs ABANDON under the member and hangs the member up
            # (apps/app_queue.c, try_calling): so do we, and the call is abandoned, not answered
            session.log.info("acd.abandoned_before_connect", agent=q.agent,
                             since_answer_ms=round((now - (q.answered_at or now)) * 1000))
            q.held_connect = None
            self.store.call_wait(session.call_id, now - q.enqueued_at)
            self.apply(self.engine.connect_abandoned(session.call_id, now))
        else:
            self._record_talk(q, now)
            self.apply(self.engine.call_ended(session.call_id, "caller", now))
        if q.agent_leg and not (q.connected and self.customers is not None
                                and self.customers.open_line(session, q.agent, q.agent_leg)):
            session.hangup_leg(q.agent_leg)
        self._forget(session.call_id)

    # ------------------------------------------------------------ transfers (issue 11)

    def agent_call(self, agent: str) -> Queued | None:
        """The voice call `agent` is connected to now (bridged), or None."""
        return next((q for q in self.calls.values() if q.agent == agent and q.agent_leg and q.connected), None)

    def transfer_refusal(self, session: CallSession, kind: str, target: str) -> str | None:
        """Why a blind transfer of `session` to (kind, target) cannot be made, or None if it can.
        kind: queue (a queue of the config), agent (one who can take a call now), flow (a flow
        of the call's dial plan) or external (a name or number of `transfer_targets`, whose
        trunk allows it; anything else is refused and nothing is dialled)."""
        if kind == "queue":
            if target not in self.engine.queues:
                return f"unknown queue {target[:64]!r}; queues: {', '.join(sorted(self.engine.queues))}"
            return None
        if kind == "flow":
            flows = session.run.plan.flows if session.run is not None else {}
            if target not in flows:
                return f"unknown flow {target[:64]!r}; flows: {', '.join(sorted(flows))}"
            return None
        if kind == "agent":
            a = self.engine.agents.get(target)
            if a is None:
                return f"unknown agent {target[:64]!r}"
            if not a.can_take("voice", self.clock()):
                return f"agent {target!r} cannot take a call now ({a.status(self.clock())})"
            return None
        if kind == "external":
            if self.cfg.transfer_target(target) is None:
                listed = ", ".join(sorted(self.cfg.transfer_targets)) or "none"
                return f"{target[:64]!r} is not a listed transfer target (transfer_targets: {listed})"
            return None
        return f"unknown target kind {kind[:16]!r}: queue, agent, flow or external"

    def blind_transfer(self, agent: str, kind: str, target: str, via: str) -> dict[str, Any]:
        """`agent` sends the caller she talks to on, unattended: to a queue (the caller waits
        there again with the priority and skills it had, its IVR variables kept with the call)
        or to a flow of the dial plan. The agent's leg is hung up (BYE) and she wraps up as
        after any call; queue_log gets BLINDTRANSFER (app_queue's data: extension, context,
        holdtime, calltime, origposition); the call's events get TRANSFER. via: api, mqtt, desk or
        refer (her phone's REFER, already refused by the worker with 603: the transfer is the
        controller's, by the plan's rules, and nothing is dialled that it did not decide).
        Returns {"call_id", "agent", "kind", "target"} or {"error": why} (nothing changed)."""
        q = self.agent_call(agent)
        if q is None:
            return {"error": f"agent {agent[:64]!r} is not connected to a call"}
        session = q.session
        refusal = self.transfer_refusal(session, kind, target)
        if refusal is not None:
            session.log.warning("acd.transfer_refused", agent=agent, kind=kind, target=target[:64], via=via,
                                reason=refusal)
            self.store.event(session.call_id, "TRANSFER_REFUSED", side="agent", agent=agent, kind=kind,
                             target=target[:200], via=via, reason=refusal)
            return {"error": refusal}
        extra: dict[str, str] = {}
        if kind == "external":  # a listed name or number: the record names both
            found = self.cfg.transfer_target(target)
            assert found is not None  # transfer_refusal checked it
            target, extra["number"] = found[0], found[1].number
        now = self.clock()
        task = self.engine.tasks.get(session.call_id)
        priority, skills = (task.priority, tuple(task.skills.items())) if task is not None else (0, ())
        self._record_talk(q, now)
        session.close_holds("transfer")  # UNHOLD before BLINDTRANSFER
        self.store.event(session.call_id, "TRANSFER", now, mode="blind", agent=agent, queue=q.queue, kind=kind,
                         target=target, via=via, **extra)
        session.log.info("acd.blind_transfer", agent=agent, queue=q.queue, kind=kind, target=target, via=via)
        agent_leg = q.agent_leg or ""
        self.apply(self.engine.blind_transfer(session.call_id, target, kind, now))
        if self.calls.pop(session.call_id, None) is not None:  # this queue's part ends (calls/events)
            self._call_event("ended", q, agent=agent, transfer={"kind": kind, "target": target})
        session.transferred_away(agent_leg)
        if kind == "queue":
            self.enqueue(session, target, priority, skills)
        elif kind == "agent":
            # she rings alone (the queue's ring timeout); unanswered, the caller waits in the
            # queue it came from like any caller (its priority and skills kept): a contact
            # centre's "return to queue", rather than a hang-up that loses the customer
            self.enqueue(session, q.queue, priority, skills, offer_to=target)
        elif kind == "external":
            # the caller hears the queue's music while the number rings; unanswered (busy, the
            # target's ring_timeout), the caller waits in the queue it came from again
            def back_to_queue(result: str) -> None:
                session.log.info("acd.external_transfer_failed", target=target, result=result)
                self.enqueue(session, q.queue, priority, skills)

            listed = self.cfg.transfer_targets[target]
            session.transfer_out(self.external_uri(listed.number), listed.ring_timeout, self.moh_files(q.queue), back_to_queue)
        else:
            session.continue_in_flow(target)
        return {"call_id": session.call_id, "agent": agent, "kind": kind, "target": target}

    def external_uri(self, number: str) -> str:
        """Where a worker dials a listed external number: the edge, which sends it to the
        target's trunk (and only for listed numbers: edge/policy.py `x:NUMBER`)."""
        return f"sip:{number}@{self.cfg.sip.host}:{self.cfg.sip.port}"

    def outbound_started(self, agent: str, call_id: str) -> str | None:
        """The agent places a call (docs/outbound.md): busy from now; the refusal text if she
        cannot (on a call or being rung), else None."""
        actions, refusal = self.engine.outbound_started(agent, call_id, self.clock())
        if refusal is None:
            self.apply(actions)
        return refusal

    def outbound_ended(self, agent: str, call_id: str, talked: bool) -> None:
        self.apply(self.engine.outbound_ended(agent, call_id, self.clock(), talked))

    def agent_reachable(self, agent: str) -> str | None:
        """Why the agent's phone cannot be rung for a click-to-dial now, or None."""
        a = self.engine.agents.get(agent)
        if a is not None and not a.registered:
            return f"agent {agent!r} has no registered phone"
        return None

    def refer_target(self, session: CallSession, uri: str) -> tuple[str, str]:
        """(kind, name) an agent phone's REFER target stands for: its user part names a queue,
        else a flow of the call's plan, else an agent, else a listed external target (by name or
        number: kind "external"); anything else is kind "uri"."""
        user = sip_user(uri) or uri
        if user in self.engine.queues:
            return "queue", user
        if session.run is not None and user in session.run.plan.flows:
            return "flow", user
        if user in self.cfg.agents:
            return "agent", user
        found = self.cfg.transfer_target(user)
        if found is not None:
            return "external", found[0]
        return "uri", uri

    # ------------------------------------------------------------ agents

    def edge_event(self, event: dict[str, Any], registered_users: set[str] | None = None) -> None:
        now = self.clock()
        kind = event.get("event")
        user = str(event.get("user", "")).split("@", 1)[0]
        if kind == "registered":
            self._set_registered(user, True, now)
        elif kind in ("unregistered", "expired"):
            self._set_registered(user, False, now)
        elif kind == "sync" and registered_users is not None:
            for u in self.by_user:
                self._set_registered(u, u in registered_users, now)

    def _set_registered(self, user: str, registered: bool, now: float) -> None:
        agent = self.by_user.get(user)
        if agent is None:
            return
        st = self.engine.agents[agent]
        if st.registered == registered:
            return
        log.info("acd.agent_registration", agent=agent, registered=registered)
        actions = self.engine.agent_registered(agent, registered, now)
        if self.cfg.agents[agent].auto_login:
            actions += self.engine.agent_login(agent, now) if registered else self.engine.agent_logout(agent, now)
        self.apply(actions)

    def agent_command(self, agent: str, action: str, reason: str = "") -> str | None:
        """login | logout | pause | unpause, from an operator. Returns an error text or None."""
        if agent not in self.engine.agents:
            return f"unknown agent {agent!r}; agents: {', '.join(sorted(self.engine.agents))}"
        now = self.clock()
        if action == "login":
            actions = self.engine.agent_login(agent, now)
        elif action == "logout":
            actions = self.engine.agent_logout(agent, now)
        elif action == "pause":
            actions = self.engine.agent_pause(agent, reason or "paused", now)
        elif action == "unpause":
            actions = self.engine.agent_unpause(agent, now)
        else:
            return f"unknown action {action!r}: login, logout, pause or unpause"
        log.info("acd.agent_command", agent=agent, action=action, reason=reason or None)
        self.apply(actions)
        return None

    def reconfigure(self, cfg: Config, queues: dict[str, QueueConfig], drain: dict[str, str] | None = None) -> None:
        """A reload: the engine takes the new agents, profiles and `queues` (the YAML's with the
        run-time member changes laid over: acd.members), keeping presence and places; callers
        of a removed queue move to drain[queue]. Check engine.reconfigure_problems first: this
        raises ValueError where that finds any. A new mobile agent with auto_login logs in."""
        now = self.clock()
        actions = self.engine.reconfigure(queues, cfg.agents, {a: cfg.presence_of(a) for a in cfg.agents}, now,
                                          drain)
        old = self.cfg.agents
        self.cfg = cfg
        self.by_user = {a.softphone.username: name for name, a in cfg.agents.items() if a.softphone is not None}
        for name, agent in cfg.agents.items():
            if agent.auto_login and agent.mobile is not None and (name not in old or old[name].mobile is None):
                actions += self.engine.agent_login(name, now)
        self.apply(actions)
        if self.callbacks is not None:
            self.callbacks.queues_changed()

    # ------------------------------------------------------------ actions

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Bridge) and self.customers is not None:
                self.customers.assigned(a.agent, a.call_id, a.channel)  # it may wrap this up from now on
            if isinstance(a, AgentChanged):
                self.presence.changed(a.agent)
                if self.listener is not None:
                    self.listener.agent_changed(a.agent)
                continue
            if isinstance(a, Unroutable):
                self._unroutable(a)
                continue
            if (isinstance(a, Ring | CancelRing | Bridge | DropAgent) and self.callbacks is not None
                    and a.call_id not in self.calls and self.callbacks.owns(a.call_id)):
                self.callbacks.apply(a)
                continue
            if isinstance(a, Ring | CancelRing | Bridge | QueueLog) and a.channel != Channel.VOICE:
                channel = self.channels.get(a.channel)
                if channel is None:
                    log.error("acd.no_channel_router", channel=a.channel, task=a.call_id, action=type(a).__name__)
                else:
                    channel.apply(a)
                continue
            if isinstance(a, QueueLog):
                q = self.calls.get(a.call_id) if a.event == "CONNECT" else None
                if q is not None and not q.connected:
                    q.held_connect = a  # written when the worker says the two are joined
                    continue
                self.store.queue_log(a.at, a.call_id, a.queue, a.agent, a.event, a.data)
            elif isinstance(a, Ring):
                self._ring(a)
            elif isinstance(a, CancelRing):
                self._cancel(a)
            elif isinstance(a, Bridge):
                self._bridge(a)
            elif isinstance(a, DropAgent):
                q = self.calls.get(a.call_id)
                for ring in [r for r in self.ring_legs.values() if r.call_id == a.call_id]:
                    if ring.answered_by == a.agent and (q is None or q.agent_leg != ring.leg):
                        ring.cancelled = True
                        ring.session.hangup_leg(ring.leg)
            elif isinstance(a, LeaveQueue):
                self._leave(a)
            elif isinstance(a, Announce):
                self._announce(a)
        self._arm_timer()
        if actions and self.on_change is not None:
            self.on_change()

    def _unroutable(self, a: Unroutable) -> None:
        """Say why a waiting call or task cannot reach any agent (or that it can again): in the
        log, on MQTT `errors` and the task's events (the router), and in `status` (read live)."""
        skills = self.engine.tasks[a.call_id].skills if a.call_id in self.engine.tasks else {}
        if a.reason:
            text = UNROUTABLE_TEXT[a.reason].format(queue=a.queue, skills=_skills_text(self.engine, a.queue, skills))
            log.warning("acd.unroutable", call_id=a.call_id, queue=a.queue, channel=a.channel, reason=a.reason,
                        detail=text)
        else:
            text = ""
            log.info("acd.routable", call_id=a.call_id, queue=a.queue, channel=a.channel)
        if self.listener is not None:
            self.listener.unroutable(a, text)

    def waiting_diagnosis(self, queue: str) -> dict[str, str]:
        """task/call id -> why it cannot reach a logged-in agent, for the queue's waiting tasks
        that cannot (status)."""
        out = {}
        for t in self.engine.queues[queue].waiting:
            reason = self.engine.diagnose(queue, t.skills) if t.agent is None else ""
            if reason:
                out[t.id] = reason
        return out

    def agent_uri(self, agent: str) -> str:
        """The URI that rings `agent`'s phone through the edge (softphone user or mobile number)."""
        spec = self.cfg.agents[agent]
        user = spec.softphone.username if spec.softphone is not None else (spec.mobile or "")
        return f"sip:{user}@{self.cfg.sip.host}:{self.cfg.sip.port}"

    def _ring(self, a: Ring) -> None:
        q = self.calls.get(a.call_id)
        if q is None:
            return
        self._dial(q, a.queue, a.agents)

    def _dial(self, q: Queued, queue: str, agents: tuple[str, ...], refork: bool = False) -> None:
        """One INVITE ringing `agents` (forked by the edge when there are several)."""
        leg = f"{q.session.call_id}-q{next(self._ids)}"
        uris = [self.agent_uri(agent) for agent in agents]
        # the agent's phone (and a CRM behind it) learns which call and queue this is
        headers: tuple[tuple[str, str], ...] = (("X-Ringmaster-Call", q.session.call_id), ("X-Ringmaster-Queue", queue))
        headers += _variable_headers(q.session)
        if q.session.customer is not None and self.customers is not None:
            headers += q.session.customer.headers(self.customers.cfg.header_bytes)
        if len(uris) > 1:
            headers += (("X-Ring", ", ".join(uris)),)
        ring = RingLeg(q.session, leg, queue, agents, live=set(agents))
        q.legs[leg] = ring
        self.ring_legs[leg] = ring
        # queue_log has no ring-start event (Asterisk logs only how a ring ended): the offer is
        # kept in call_events, so a start after a crash can close the offers left open
        # a new fork for the same offer is REFORK, not OFFERED: a start after a crash closes
        # as many rings per agent as there were offers
        self.store.event(q.session.call_id, "REFORK" if refork else "OFFERED", self.clock(), queue=queue,
                         agents=list(agents), leg=leg)
        if not refork:
            self._call_event("offered", q, agents=list(agents))
        q.session.log.info("acd.ring", queue=queue, agents=list(agents), leg=leg, refork=refork or None)
        # the caller's media offered in the agent's INVITE saves a re-INVITE at the bridge
        # (docs/engine-findings.md, 88); not towards browser phones (rtpengine rewrites their
        # SDP: the worker's own offer must reach it) nor when the queue records (the recorder
        # needs both voices in the worker) nor when the agent must press 1 first (confirm_answer:
        # her prompt and her digit need her media here)
        spec = q.spec or self.cfg.queues.get(queue)
        direct = (spec is not None and spec.record is None and self.cfg.sip.webrtc is None
                  and not any(self._confirm_needed(agent, ring) for agent in agents))
        q.session.dial_agent(leg, uris[0], headers, direct=direct, agents=agents)

    def _cancel(self, a: CancelRing) -> None:
        """The engine withdrew the call's offer from `a.agents`: end their rings on the phones
        now. A leg left ringing nobody is CANCELled; a fork that still rings others is
        CANCELled and dialled again for them; an agent on a fork someone answered stopped
        ringing already (the edge CANCELled the other branches as the 200 passed)."""
        now = self.clock()
        q = self.calls.get(a.call_id)
        left = set(a.agents)
        ended: list[str] = []
        for ring in [r for r in self.ring_legs.values() if r.call_id == a.call_id]:
            hit = ring.live & left
            if not hit:
                continue
            left -= hit
            ring.live -= hit
            if ring.answered_by is not None:
                ended += sorted(hit)
                if ring.confirming and not ring.cancelled:  # answered, not confirmed: end it
                    ring.cancelled = True
                    ring.session.hangup_leg(ring.leg)
                continue
            ring.withdrawn |= hit
            if ring.cancelled:
                continue
            ring.cancelled = True
            ring.session.hangup_leg(ring.leg, 487)
            if ring.live:
                others, ring.live = tuple(x for x in ring.agents if x in ring.live), set()
                if q is not None:
                    q.session.log.info("acd.refork", leg=ring.leg, withdrawn=sorted(hit), agents=list(others))
                    self._dial(q, ring.queue, others, refork=True)
                else:
                    ended += others
        ended += sorted(left)  # no leg rings them (never dialled, or ended already)
        self.apply([x for agent in ended for x in self.engine.ring_ended(a.call_id, agent, now)])

    def _bridge(self, a: Bridge) -> None:
        q = self.calls.get(a.call_id)
        if q is None:
            return
        ring = next((r for r in q.legs.values() if r.answered_by == a.agent and not r.cancelled), None)
        if ring is None:
            return
        ring.live.discard(a.agent)
        now = self.clock()
        q.agent, q.agent_leg, q.answered_at = a.agent, ring.leg, now
        spec = q.spec or self.cfg.queues[q.queue]
        path = None
        if spec.record is not None:
            path = self._recording_path(spec.record.template, q, a.agent, now)
        q.session.log.info("acd.connecting", agent=a.agent, wait=round(now - q.enqueued_at, 2), recording=path)
        q.session.queue_bridged(ring.leg, path)

    def bridged(self, session: CallSession, other: str) -> None:
        """The worker joined the caller and the agent's leg `other` (its Bridged): the call is
        answered from here (CONNECT, the call record's agent and wait, the screen pop)."""
        q = self.calls.get(session.call_id)
        if q is None or q.connected or q.agent is None or other != q.agent_leg:
            return  # a re-bridge after a hold, a transfer's bridge, or a call already over
        self._connected(q)
        session.log.info("acd.connected", agent=q.agent)

    def _connected(self, q: Queued) -> None:
        q.connected = True
        wait = (q.answered_at or self.clock()) - q.enqueued_at
        if q.held_connect is not None:
            c, q.held_connect = q.held_connect, None
            self.store.queue_log(c.at, c.call_id, c.queue, c.agent, c.event, c.data)
        if q.agent is not None:
            self.store.call_agent(q.session.call_id, q.agent, wait)
        self._call_event("answered", q, agent=q.agent, wait=round(wait, 2))

    def _recording_path(self, template: str, q: Queued, agent: str, now: float) -> str | None:
        """The recording's file under paths.recordings, or None (not recorded) if it would leave it.

        Every field is a file name part (a caller ID '../../x' or 230 characters long is the
        caller's to choose), and the result is resolved and checked to stay inside the folder.
        """
        return self.recording_path_for(template, q.queue, q.session.call_id, agent, q.session.caller, now)

    def recording_path_for(self, template: str, queue: str, call_id: str, agent: str, caller: str,
                            now: float) -> str | None:
        fields = {"queue": queue, "date": time.strftime("%Y-%m-%d", time.gmtime(now)),
                  "call_id": call_id, "agent": agent, "caller": caller}
        rel = template.format(**{k: inputs.file_name_part(v) for k, v in fields.items()})
        try:
            return str(inputs.contained(self.cfg.paths.recordings, rel))
        except inputs.InputRefused as exc:
            log.error("acd.recording_refused", call_id=call_id, reason=exc.reason, template=template)
            return None

    def _leave(self, a: LeaveQueue) -> None:
        q = self.calls.pop(a.call_id, None)
        if q is None:
            return
        self._call_event("ended", q, agent=None, reason=a.reason)
        self.store.call_wait(a.call_id, self.clock() - q.enqueued_at)
        for ring in list(q.legs.values()):
            if not ring.cancelled:  # the engine's CancelRing came first; anything else goes too
                ring.cancelled = True
                q.session.hangup_leg(ring.leg, 487)
        target = a.target
        q.session.log.info("acd.left_queue", queue=a.queue, reason=a.reason,
                           target=str(target.queue or target.flow) if isinstance(target, Overflow) else target)
        if isinstance(target, Overflow) and target.queue is not None:
            self.enqueue(q.session, target.queue, 0)
        elif isinstance(target, Overflow) and target.flow is not None:
            q.session.queue_left(a.reason, target.flow)
        elif isinstance(target, str):
            q.session.queue_left(a.reason, target)
        else:
            q.session.queue_left(a.reason, None)

    def _announce(self, a: Announce) -> None:
        q = self.calls.get(a.call_id)
        spec = (q.spec or self.cfg.queues[q.queue]).announce if q is not None else None
        if q is None or spec is None:
            return
        run = q.session.run
        language = run.language if run is not None else ""
        # the call's plan (a reload may have changed languages and voices since the start)
        plan_cfg = run.plan.cfg if run is not None else self.cfg
        if spec.say is not None:
            self._say(q, a, spec.say, language or plan_cfg.tts.language, spec.position, spec.wait_time,
                      plan_cfg.tts.voice(language or plan_cfg.tts.language))
            return
        fallback = plan_cfg.languages.fallback if plan_cfg.languages is not None else ""
        files: list[str] = []
        if spec.position:
            files += self.prompt_files(["you-are-caller", *self._number(a.position), "in-line"], language, fallback)
        if spec.wait_time and a.wait_seconds is not None:
            minutes = max(1, round(a.wait_seconds / 60))
            files += self.prompt_files(["estimated-wait", *self._number(minutes), "minutes"], language, fallback)
        cb = (q.spec or self.cfg.queues[q.queue]).callback
        if cb is not None and cb.offer_prompt and cb.key:  # "press 5 to be called back, keeping your place"
            files += self.prompt_files([cb.offer_prompt], language, fallback)
        if files:
            q.session.queue_announce(tuple(files))

    def _say(self, q: Queued, a: Announce, say: AnnounceSay, language: str, position: bool, wait: bool,
             voice: str) -> None:
        """Render the spoken announcement (TTS, cached) and play it if the caller still waits."""
        from ringmaster.flows.spoken import pick_text, render

        run = q.session.run
        variables = {**(run.variables if run is not None else {}), "position": a.position,
                     "wait": "" if a.wait_seconds is None else round(a.wait_seconds)}
        parts = []
        if position and say.position is not None:
            parts.append(render(pick_text(say.position, language), variables, language)[0])
        if wait and say.wait is not None and a.wait_seconds is not None:
            parts.append(render(pick_text(say.wait, language), variables, language)[0])
        text = " ".join(p for p in parts if p)
        speech = self.speech
        if not text or speech is None:
            return

        async def speak() -> None:
            try:
                path = await speech.render(text, language, voice)
            except Exception as exc:  # the caller keeps the hold music
                q.session.log.error("acd.announce_failed", queue=q.queue, language=language, error=str(exc))
                return
            if self.calls.get(a.call_id) is q:
                q.session.log.info("acd.announce_said", queue=q.queue, language=language, position=a.position,
                                   file=str(path))
                q.session.queue_announce((str(path),))

        task = asyncio.get_running_loop().create_task(speak())
        self._speaking.add(task)
        task.add_done_callback(self._speaking.discard)

    # ------------------------------------------------------------ helpers

    def moh_files(self, queue: str) -> tuple[str, ...]:
        from ringmaster.prompts import moh_files

        return moh_files(self.cfg, queue)  # made playable (converted or left out) when played

    def prompt_files(self, names: list[str], language: str = "", fallback: str = "") -> list[str]:
        """The announcement's files that exist, each in the call's language's folder if it is
        there, else the fallback language's, else the prompts dir itself."""
        base = Path(self.cfg.paths.prompts)
        dirs = [base / lang for lang in dict.fromkeys((language, fallback)) if lang]
        dirs.append(base)
        out = []
        for n in names:
            found = next((f for f in (d / f"{n}.wav" for d in dirs) if f.is_file()), None)
            if found is not None:
                out.append(str(found))
        return out

    @staticmethod
    def _number(n: int) -> list[str]:
        if n <= 20 or n % 10 == 0 and n < 100:
            return [f"digits/{n}"]
        if n < 100:
            return [f"digits/{n - n % 10}", f"digits/{n % 10}"]
        return [f"digits/{d}" for d in str(n)]

    def _record_talk(self, q: Queued, now: float) -> None:
        if q.answered_at is not None:
            self.store.call_talk(q.session.call_id, now - q.answered_at)

    def _forget(self, call_id: str) -> None:
        q = self.calls.pop(call_id, None)
        if q is not None:
            self._call_event("ended", q, agent=q.agent)

    def _call_event(self, event: str, q: Queued, **extra: Any) -> None:
        if self.listener is not None:
            self.listener.call_event(event, q.session, q.queue, **extra)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.engine.next_deadline()
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(max(0.0, deadline - self.clock()) + 0.005, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.apply(self.engine.tick(self.clock()))


def _skills_text(engine: QueueEngine, queue: str, skills: dict[str, int]) -> str:
    need = {**engine.queues[queue].spec.skills}
    for s, level in skills.items():
        need[s] = max(level, need.get(s, 0))
    return ", ".join(f"{s}>={level}" for s, level in sorted(need.items())) or "(none)"


def _variable_headers(session: CallSession) -> tuple[tuple[str, str], ...]:
    """The call's IVR variables (account, language, menu choices) for the agent's screen."""
    if session.run is None:
        return ()
    out = []
    for name, value in sorted(session.run.variables.items()):
        # names and values come from the caller (DTMF, caller ID) and the plan: a header the
        # agent's phone cannot parse, or one CR/LF away from another header, is left out
        text = inputs.header_value(str(value))
        if text is not None and inputs.header_name_ok(name) and all(c.isalnum() or c in "_-" for c in name):
            out.append((f"X-Ringmaster-Var-{name}", text))
    return tuple(out[:20])
