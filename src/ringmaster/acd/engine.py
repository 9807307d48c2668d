"""QueueEngine: the ACD as a sans-IO state machine.

Events in (a call enqueued, an agent answered or did not, a call ended, an agent logged in,
paused or registered, the clock moved), actions out (ring these agents, cancel those rings,
bridge, leave the queue for an overflow target, announce the position, write a queue_log
event). Every offer reserves its agents in the same step that picks them, so no agent is
ever offered two calls at once, whichever queues they serve (the double-booking bugs of
app_queue and mod_callcenter come from checking and reserving in separate steps).

queue_log events use Asterisk's names and data fields, so existing reporting tools read them.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

from ringmaster.acd.config import AgentConfig, Overflow, QueueConfig
from ringmaster.acd.model import AgentState, QueuedCall, QueueState
from ringmaster.acd.strategies import STRATEGIES, Strategy

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Ring:
    call_id: str
    queue: str
    agents: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class CancelRing:
    call_id: str
    agents: tuple[str, ...]


@dataclass(frozen=True)
class Bridge:
    call_id: str
    agent: str


@dataclass(frozen=True)
class DropAgent:
    """An agent answered a ring-all offer just after another one did: hang that leg up."""

    call_id: str
    agent: str


@dataclass(frozen=True)
class LeaveQueue:
    """The caller leaves the queue unserved; reason: timeout, full, joinempty, empty, key."""

    call_id: str
    queue: str
    reason: str
    target: Overflow | str | None  # an Overflow, a flow name (exit key), or None (hang up)


@dataclass(frozen=True)
class Announce:
    call_id: str
    position: int
    wait_seconds: float | None


@dataclass(frozen=True)
class QueueLog:
    at: float
    call_id: str
    queue: str
    agent: str
    event: str
    data: tuple[Any, ...] = ()


Action = Ring | CancelRing | Bridge | DropAgent | LeaveQueue | Announce | QueueLog

HOLD_WEIGHT = 0.25  # weight of the newest answered call in the average hold time estimate


class QueueEngine:
    def __init__(self, queues: dict[str, QueueConfig], agents: dict[str, AgentConfig], rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.agents = {a: AgentState(a, spec, registered=spec.mobile is not None) for a, spec in agents.items()}
        self.queues = {q: QueueState(q, spec) for q, spec in queues.items()}
        self.strategies: dict[str, Strategy] = {q: STRATEGIES[spec.strategy]() for q, spec in queues.items()}
        self.calls: dict[str, QueuedCall] = {}
        self.by_agent: dict[str, list[str]] = {a: [] for a in agents}  # agent -> queues it serves
        for q, spec in queues.items():
            for m in spec.members:
                self.by_agent.setdefault(m.agent, []).append(q)
        self._seq = itertools.count()

    # ------------------------------------------------------------ calls

    def enqueue(self, call_id: str, queue: str, now: float, priority: int = 0, caller: str = "",
                skills: dict[str, int] | None = None) -> list[Action]:
        q = self.queues[queue]
        spec = q.spec
        if spec.max_length is not None and len(q.waiting) >= spec.max_length:
            return [QueueLog(now, call_id, queue, "NONE", "FULL", (len(q.waiting),)),
                    LeaveQueue(call_id, queue, "full", spec.overflow)]
        if not spec.join_empty and not self._anyone_logged_in(q):
            return [QueueLog(now, call_id, queue, "NONE", "JOINEMPTY", ()),
                    LeaveQueue(call_id, queue, "joinempty", spec.overflow)]
        call = QueuedCall(call_id, queue, priority, now, next(self._seq), caller, skills=dict(skills or {}))
        self.calls[call_id] = call
        q.waiting.append(call)
        q.waiting.sort(key=QueuedCall.sort_key)
        call.original_position = q.position(call)
        if spec.announce is not None:
            call.next_announce = now + spec.announce.every
        out: list[Action] = [QueueLog(now, call_id, queue, "NONE", "ENTERQUEUE", ("", caller))]
        return out + self._dispatch(now)

    def caller_left(self, call_id: str, now: float) -> list[Action]:
        """The caller hung up while waiting (or while talking: then it is COMPLETECALLER)."""
        call = self.calls.get(call_id)
        if call is None:
            return []
        if call.agent is not None:
            return self.call_ended(call_id, "caller", now)
        q = self.queues[call.queue]
        pos = q.position(call)
        q.abandoned += 1
        out: list[Action] = self._cancel_rings(call, now)
        out.append(QueueLog(now, call_id, call.queue, "NONE", "ABANDON", (pos, call.original_position, round(now - call.enqueued_at))))
        self._remove(call)
        return out + self._dispatch(now)

    def exit_key(self, call_id: str, key: str, now: float) -> list[Action]:
        call = self.calls.get(call_id)
        if call is None or call.agent is not None:
            return []
        q = self.queues[call.queue]
        ek = q.spec.exit_key
        if ek is None or ek.key != key:
            return []
        pos = q.position(call)
        out: list[Action] = self._cancel_rings(call, now)
        out.append(QueueLog(now, call_id, call.queue, "NONE", "EXITWITHKEY", (key, pos, call.original_position, round(now - call.enqueued_at))))
        out.append(LeaveQueue(call_id, call.queue, "key", ek.flow))
        self._remove(call)
        return out + self._dispatch(now)

    def ring_answered(self, call_id: str, agent: str, now: float) -> list[Action]:
        call = self.calls.get(call_id)
        a = self.agents[agent]
        if call is None or call.agent is not None or agent not in call.ringing:
            # ring-all race (shared/notes/kamailio-edge.md pitfall 4): another agent already has
            # the call; this one is hung up at once and not counted as having handled it
            if a.reserved_by == call_id:
                a.reserved_by = None
            return [DropAgent(call_id, agent)] + self._dispatch(now)
        q = self.queues[call.queue]
        ring_start = call.ringing.pop(agent)
        out: list[Action] = self._cancel_rings(call, now)  # the other agents stop ringing
        a.reserved_by = None
        a.call = call_id
        a.no_answer_streak = 0
        call.agent = agent
        call.answered_at = now
        hold = now - call.enqueued_at
        q.waiting.remove(call)
        q.answered += 1
        if hold <= q.spec.service_level:
            q.answered_in_sl += 1
        q.avg_hold = hold if q.answered == 1 else (1 - HOLD_WEIGHT) * q.avg_hold + HOLD_WEIGHT * hold
        out.append(QueueLog(now, call_id, call.queue, agent, "CONNECT", (round(hold), "", round(now - ring_start))))
        out.append(Bridge(call_id, agent))
        return out + self._dispatch(now)

    def ring_failed(self, call_id: str, agent: str, now: float, reason: str = "noanswer") -> list[Action]:
        """The agent did not answer (timeout), was busy, or rejected the offer."""
        call = self.calls.get(call_id)
        a = self.agents[agent]
        if a.reserved_by == call_id:
            a.reserved_by = None
        if call is None or agent not in call.ringing:
            return self._dispatch(now)
        start = call.ringing.pop(agent)
        out: list[Action] = [QueueLog(now, call_id, call.queue, agent, "RINGNOANSWER", (round((now - start) * 1000),))]
        if not call.ringing:
            call.ring_deadline = None
            call.retry_at = now + self.queues[call.queue].spec.retry
        a.no_answer_streak += 1
        ap = self.queues[call.queue].spec.auto_pause
        if ap is not None and a.no_answer_streak >= ap.after and a.paused is None:
            a.paused = ap.reason
            out.append(QueueLog(now, "NONE", call.queue, agent, "PAUSE", (ap.reason,)))
        return out + self._dispatch(now)

    def call_ended(self, call_id: str, by: str, now: float) -> list[Action]:
        """A connected call ended; by: 'agent' or 'caller'. Wrap-up is the call's queue's."""
        call = self.calls.pop(call_id, None)
        if call is None or call.agent is None:
            return []
        a = self.agents[call.agent]
        q = self.queues[call.queue]
        talk = now - (call.answered_at or now)
        a.call = None
        a.talk_time += talk
        a.calls_by_queue[call.queue] += 1
        a.idle_since = now
        a.wrapup_until = now + q.spec.wrapup
        a.wrapup_queue = call.queue
        hold = (call.answered_at or now) - call.enqueued_at
        event = "COMPLETEAGENT" if by == "agent" else "COMPLETECALLER"
        out: list[Action] = [QueueLog(now, call_id, call.queue, call.agent, event, (round(hold), round(talk), call.original_position))]
        return out + self._dispatch(now)

    # ------------------------------------------------------------ agents

    def agent_login(self, agent: str, now: float) -> list[Action]:
        a = self.agents[agent]
        if a.logged_in:
            return []
        a.logged_in = True
        a.idle_since = now
        out: list[Action] = [QueueLog(now, "NONE", q, agent, "ADDMEMBER", ()) for q in self.by_agent.get(agent, [])]
        return out + self._dispatch(now)

    def agent_logout(self, agent: str, now: float) -> list[Action]:
        a = self.agents[agent]
        if not a.logged_in:
            return []
        a.logged_in = False
        out: list[Action] = [QueueLog(now, "NONE", q, agent, "REMOVEMEMBER", ()) for q in self.by_agent.get(agent, [])]
        return out + self._cancel_offers_to(agent, now) + self._empty_check(now)

    def agent_pause(self, agent: str, reason: str, now: float) -> list[Action]:
        a = self.agents[agent]
        if a.paused == reason:
            return []
        a.paused = reason or "paused"
        return [QueueLog(now, "NONE", q, agent, "PAUSE", (a.paused,)) for q in self.by_agent.get(agent, [])]

    def agent_unpause(self, agent: str, now: float) -> list[Action]:
        a = self.agents[agent]
        if a.paused is None:
            return []
        reason, a.paused = a.paused, None
        a.no_answer_streak = 0
        out: list[Action] = [QueueLog(now, "NONE", q, agent, "UNPAUSE", (reason,)) for q in self.by_agent.get(agent, [])]
        return out + self._dispatch(now)

    def agent_registered(self, agent: str, registered: bool, now: float) -> list[Action]:
        a = self.agents[agent]
        if a.spec.mobile is not None or a.registered == registered:
            return []
        a.registered = registered
        return self._dispatch(now) if registered else []

    def agent_busy_elsewhere(self, agent: str, busy: bool, now: float) -> list[Action]:
        """Presence: a chat or email holds the agent (exclusive policy), or released them."""
        self.agents[agent].busy_elsewhere = busy
        return [] if busy else self._dispatch(now)

    # ------------------------------------------------------------ clock

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        for call in list(self.calls.values()):
            if call.agent is not None:
                continue
            q = self.queues[call.queue]
            if call.ring_deadline is not None and now >= call.ring_deadline:
                for agent in list(call.ringing):
                    out += [CancelRing(call.id, (agent,))] + self.ring_failed(call.id, agent, now)
            if q.spec.max_wait is not None and now - call.enqueued_at >= q.spec.max_wait and call.id in self.calls:
                pos = q.position(call)
                out += self._cancel_rings(call, now)
                out.append(QueueLog(now, call.id, call.queue, "NONE", "EXITWITHTIMEOUT", (pos, call.original_position, round(now - call.enqueued_at))))
                out.append(LeaveQueue(call.id, call.queue, "timeout", q.spec.overflow))
                self._remove(call)
                continue
            if call.next_announce is not None and now >= call.next_announce and q.spec.announce is not None:
                call.next_announce = now + q.spec.announce.every
                out.append(Announce(call.id, q.position(call), self.estimated_wait(call)))
        return out + self._empty_check(now) + self._dispatch(now)

    def next_deadline(self) -> float | None:
        times: list[float] = []
        for call in self.calls.values():
            if call.agent is not None:
                continue
            if call.ring_deadline is not None:
                times.append(call.ring_deadline)
            elif call.retry_at:
                times.append(call.retry_at)
            spec = self.queues[call.queue].spec
            if spec.max_wait is not None:
                times.append(call.enqueued_at + spec.max_wait)
            if call.next_announce is not None:
                times.append(call.next_announce)
        if any(c.agent is None for c in self.calls.values()):
            times += [a.wrapup_until for a in self.agents.values() if a.wrapup_until and a.call is None]
        return min(times) if times else None

    def estimated_wait(self, call: QueuedCall) -> float | None:
        q = self.queues[call.queue]
        if q.answered == 0:
            return None
        return q.avg_hold * q.position(call)

    # ------------------------------------------------------------ the one place offers are made

    def _dispatch(self, now: float) -> list[Action]:
        """Offer waiting calls to available agents, longest-waiting (by priority) first across
        all queues. Choosing and reserving an agent is one step: nothing can interleave."""
        out: list[Action] = []
        waiting = sorted((c for c in self.calls.values() if c.agent is None and not c.ringing and now >= c.retry_at),
                         key=QueuedCall.sort_key)
        for call in waiting:
            q = self.queues[call.queue]
            candidates = self._candidates(q, call, now)
            if not candidates:
                continue
            strategy = self.strategies[q.name]
            ordered = strategy.order(candidates, q, now, self.rng)
            chosen = ordered if strategy.ring_all else ordered[:1]
            for a in chosen:
                a.reserved_by = call.id
                call.ringing[a.id] = now
            call.ring_deadline = now + q.spec.ring_timeout
            q.rr_last = chosen[-1].id if not strategy.ring_all else q.rr_last
            out.append(Ring(call.id, q.name, tuple(a.id for a in chosen), q.spec.ring_timeout))
        return out

    def _candidates(self, q: QueueState, call: QueuedCall, now: float) -> list[AgentState]:
        waited = now - call.enqueued_at
        top_tier = 1 + (int(waited // q.spec.tier_wait) if q.spec.tier_wait > 0 else 8)
        out = []
        for m in q.spec.members:
            a = self.agents[m.agent]
            if m.tier > top_tier or not a.available(now):
                continue
            if any(a.skill(s) < level for s, level in q.spec.skills.items()):
                continue
            if any(a.skill(s) < level for s, level in call.skills.items()):
                continue
            out.append(a)
        return out

    def _cancel_rings(self, call: QueuedCall, now: float) -> list[Action]:
        if not call.ringing:
            return []
        agents = tuple(call.ringing)
        out: list[Action] = [CancelRing(call.id, agents)]
        for agent in agents:
            start = call.ringing.pop(agent)
            a = self.agents[agent]
            if a.reserved_by == call.id:
                a.reserved_by = None
            out.append(QueueLog(now, call.id, call.queue, agent, "RINGCANCELED", (round((now - start) * 1000),)))
        call.ring_deadline = None
        return out

    def _cancel_offers_to(self, agent: str, now: float) -> list[Action]:
        out: list[Action] = []
        for call in self.calls.values():
            if agent in call.ringing:
                start = call.ringing.pop(agent)
                out.append(CancelRing(call.id, (agent,)))
                out.append(QueueLog(now, call.id, call.queue, agent, "RINGCANCELED", (round((now - start) * 1000),)))
                if not call.ringing:
                    call.ring_deadline = None
        self.agents[agent].reserved_by = None
        return out + self._dispatch(now)

    def _remove(self, call: QueuedCall) -> None:
        self.calls.pop(call.id, None)
        q = self.queues[call.queue]
        if call in q.waiting:
            q.waiting.remove(call)

    def _anyone_logged_in(self, q: QueueState) -> bool:
        return any(self.agents[m.agent].logged_in for m in q.spec.members)

    def _empty_check(self, now: float) -> list[Action]:
        out: list[Action] = []
        for q in self.queues.values():
            if not q.spec.leave_when_empty or not q.waiting or self._anyone_logged_in(q):
                continue
            for call in list(q.waiting):
                pos = q.position(call)
                out += self._cancel_rings(call, now)
                out.append(QueueLog(now, call.id, q.name, "NONE", "EXITEMPTY", (pos, call.original_position, round(now - call.enqueued_at))))
                out.append(LeaveQueue(call.id, q.name, "empty", q.spec.overflow))
                self._remove(call)
        return out
