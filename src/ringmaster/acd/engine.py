"""QueueEngine: the ACD and task router as a sans-IO state machine.

Events in (a call or a chat/email task enqueued, an agent answered/accepted or did not, a task
ended, an agent logged in, paused or registered, the clock moved, the queues or agents changed:
a reload, a member added or removed), actions out (ring or offer
to these agents, cancel those offers, bridge/assign, leave the queue for an overflow target,
announce the position, write a queue event). Calls, chats and emails share the queues,
strategies, skills and priorities, and one presence per agent: every offer reserves its agents
in the same step that picks them, counted against the agent's per-channel capacity and its
cross-channel policy, so no agent is ever offered more than it may take (the double-booking
bugs of app_queue and mod_callcenter, and of separate phone and chat tools, come from checking
and reserving in separate steps, or in separate systems).

Only queues where something changed are looked at (a task arrived, an agent became free, a
retry or tier time came), so an event costs the size of the queues it touches, not of all the
waiting work. Timers sit in a heap; `next_deadline()` is its head.

queue_log events use Asterisk's names and data fields, so existing reporting tools read them.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ringmaster.acd.config import CHANNELS, AgentConfig, Overflow, PresenceProfile, QueueConfig
from ringmaster.acd.model import AgentState, QueuedTask, QueueState
from ringmaster.acd.strategies import STRATEGIES, Strategy

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Ring:
    """Offer a task to agents (for a call: ring their phones; for chat/email: an offer message)."""

    call_id: str
    queue: str
    agents: tuple[str, ...]
    timeout: float
    channel: str = "voice"


@dataclass(frozen=True)
class CancelRing:
    """Withdraw the offer of a task from these agents (for a call: CANCEL their ringing legs)."""

    call_id: str
    agents: tuple[str, ...]
    channel: str = "voice"


@dataclass(frozen=True)
class Bridge:
    """The agent took the task: connect the call, or hand over the chat/email."""

    call_id: str
    agent: str
    channel: str = "voice"


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
    """Tell a waiting caller its place (1-based, among the callers of its queue) and the estimated wait in
    seconds (None: no answered call yet to estimate from).
    """

    call_id: str
    position: int
    wait_seconds: float | None


@dataclass(frozen=True)
class QueueLog:
    """One queue_log row to store: at (epoch seconds), the call or task id, queue, agent ("NONE" if none),
    Asterisk's event name (ENTERQUEUE, CONNECT, RINGNOANSWER, ABANDON, ...) and its data fields in
    Asterisk's order; channel: voice (queue_log) or chat/email (task_log).
    """

    at: float
    call_id: str
    queue: str
    agent: str
    event: str
    data: tuple[Any, ...] = ()
    channel: str = "voice"


@dataclass(frozen=True)
class AgentChanged:
    """An agent's presence changed (for the agent's state topic and the wallboard)."""

    agent: str


@dataclass(frozen=True)
class Unroutable:
    """Why a waiting task cannot be offered to anyone now, or "" once it can again.

    reason: `no-members` (the queue lists nobody), `no-skills` (no member has the queue's and
    the task's skills at the levels asked), `no-member-logged-in` (members with the skills
    exist, none is logged in). A paused or busy member does not make a task unroutable: it
    will be offered when that member is free. Emitted when a task enters a queue in that state
    and whenever the reason changes while it waits (an agent logged in or out).
    """

    call_id: str
    queue: str
    reason: str
    channel: str = "voice"


UNROUTABLE_TEXT = {
    "no-members": "queue {queue!r} has no members",
    "no-skills": "no member of queue {queue!r} has the skills {skills}",
    "no-member-logged-in": "no member of queue {queue!r} with the skills is logged in",
}


Action = Ring | CancelRing | Bridge | DropAgent | LeaveQueue | Announce | QueueLog | AgentChanged | Unroutable

HOLD_WEIGHT = 0.25  # weight of the newest answered call in the average hold time estimate
# A withdrawn ring keeps its agent reserved for voice until the call side says it ended on the
# phone (`ring_ended`: the CANCEL's 487, or the fork's winner answering). On a LAN that takes
# milliseconds; if no end is ever reported (the worker died with the leg) the agent is free
# after this many seconds anyway: above the worker's SIP transaction timeout of 4 s
# (docs/engine-findings.md, 21), after which pjsua has given up on the leg itself.
RING_END_GRACE = 5.0


class QueueEngine:
    """The ACD of every queue and agent: feed it events (the methods, named for them, each taking
    `now` in seconds on the caller's clock) and carry out the actions each returns, in order. No
    IO and no clock of its own: `tick(now)` runs the timers due, `next_deadline()` says when.

    queues, agents: the config sections; rng: for the random strategy (seed it in tests);
    presence: agent -> its channels' capacities, wrap-up and policy. A method given an unknown
    queue or agent raises KeyError; an event that no longer applies (a task already gone)
    returns no actions.

    A call's ring the engine withdraws (CancelRing: timeout, logout, pause, another agent
    answered, the caller left) keeps its agent reserved for voice until the call side reports
    `ring_ended` (the phone stopped ringing), or RING_END_GRACE seconds pass.
    """

    def __init__(self, queues: dict[str, QueueConfig], agents: dict[str, AgentConfig],
                 rng: random.Random | None = None, presence: dict[str, PresenceProfile] | None = None):
        self.rng = rng or random.Random()
        presence = presence or {}
        self.agents = {a: AgentState(a, spec, presence=presence.get(a) or PresenceProfile(),
                                     registered=spec.mobile is not None) for a, spec in agents.items()}
        self.queues = {q: QueueState(q, spec) for q, spec in queues.items()}
        self.strategies: dict[str, Strategy] = {q: STRATEGIES[spec.strategy]() for q, spec in queues.items()}
        self.tasks: dict[str, QueuedTask] = {}
        self.by_agent: dict[str, list[str]] = {a: [] for a in agents}  # agent -> queues it serves
        for q, spec in queues.items():
            for m in spec.members:
                self.by_agent.setdefault(m.agent, []).append(q)
        self._max_tier = {q: max((m.tier for m in spec.members), default=1) for q, spec in queues.items()}
        self._seq = itertools.count()
        self._dirty: set[str] = set()                         # queues to look at in the next dispatch
        self._timers: list[tuple[float, int, str, str]] = []  # (at, seq, "task"|"agent"|"ring", id)
        self._timer_at: dict[str, float] = {}                 # task -> the valid heap entry's time
        # (queue, channel) -> members who can take a task of that channel now; kept current by
        # _refresh() for every agent whose state changed (_touch), so an offer never scans a
        # queue's members
        self._free: dict[tuple[str, str], set[str]] = {(q, ch): set() for q in queues for ch in CHANNELS}
        self._member_at: dict[str, dict[str, tuple[int, int]]] = {
            q: {m.agent: (i, m.tier) for i, m in enumerate(spec.members)} for q, spec in queues.items()}
        self._touched: set[str] = set(self.agents)
        self._leaving: set[str] = set()  # agents a reload removed who still hold a task
        self._strategies_by_name: dict[str, Strategy] = {}
        # queue -> until when its callbacks may not be offered (its callback schedule is
        # closed; inf: closed with no known opening, e.g. an operator's override)
        self.callback_closed: dict[str, float] = {}

    @property
    def calls(self) -> dict[str, QueuedTask]:
        """Every open task by id (the older name of `tasks`, which holds chats and emails too)."""
        return self.tasks

    # ------------------------------------------------------------ tasks (calls, chats, emails)

    def enqueue(self, call_id: str, queue: str, now: float, priority: int = 0, caller: str = "",
                skills: dict[str, int] | None = None, channel: str = "voice", due: float | None = None,
                data: dict[str, Any] | None = None, offer_to: str | None = None) -> list[Action]:
        """A call (or a chat/email task) enters `queue`: ENTERQUEUE, then offers if an agent can take it
        now. A caller is turned away with FULL (max_length) or JOINEMPTY (nobody logged in, join_empty
        off) and a LeaveQueue to the overflow; a chat or email always waits. priority: higher first;
        skills: name -> least level needed; due: an email's due time (it orders emails). offer_to: the
        first offer goes to this agent alone, member or not, if she can take it now (a blind
        transfer to an agent); when it lapses the task is the queue's like any other. Enqueueing an
        id already queued does nothing.
        """
        if call_id in self.tasks:
            return []
        q = self.queues[queue]
        spec = q.spec
        if channel == "voice":  # a caller on hold can be turned away; a chat or email always waits its turn
            if spec.max_length is not None and sum(t.channel == "voice" for t in q.waiting) >= spec.max_length:
                return [QueueLog(now, call_id, queue, "NONE", "FULL", (len(q.waiting),)),
                        LeaveQueue(call_id, queue, "full", spec.overflow)]
            if not spec.join_empty and not self._anyone_logged_in(q):
                return [QueueLog(now, call_id, queue, "NONE", "JOINEMPTY", ()),
                        LeaveQueue(call_id, queue, "joinempty", spec.overflow)]
        task = QueuedTask(call_id, queue, priority, now, next(self._seq), caller, skills=dict(skills or {}),
                          channel=channel, due=due, data=dict(data or {}), spec=spec)
        self._insert(task)
        task.original_position = q.position(task)
        if spec.announce is not None and channel == "voice":
            task.next_announce = now + spec.announce.every
        self._dirty.add(queue)
        self._arm(task, now)
        out: list[Action] = [QueueLog(now, call_id, queue, "NONE", "ENTERQUEUE", ("", caller), channel)]
        out += self._diagnose_task(task)
        pinned = self.agents.get(offer_to) if offer_to is not None else None
        if pinned is not None and pinned.can_take(channel, now):
            out += self._offer(task, pinned, now)
        return out + self._dispatch(now)

    def _offer(self, task: QueuedTask, a: AgentState, now: float) -> list[Action]:
        """Offer a waiting task to one chosen agent (reserved in this step, as _dispatch does)."""
        a.offered[task.id] = task.channel
        task.ringing[a.id] = now
        self._refresh(a.id, now)
        spec = self._spec(task)
        task.ring_deadline = now + (spec.ring_timeout if task.channel == "voice" else spec.offer_timeout)
        self._arm(task, now)
        self.queues[task.queue].offer_made(task)
        return [Ring(task.id, task.queue, (a.id,), spec.ring_timeout if task.channel == "voice"
                     else spec.offer_timeout, task.channel), AgentChanged(a.id)]

    def caller_left(self, call_id: str, now: float) -> list[Action]:
        """The caller hung up (or the customer left the chat) while waiting; while talking it is
        COMPLETECALLER."""
        task = self.tasks.get(call_id)
        if task is None:
            return []
        if task.agent is not None:
            return self.call_ended(call_id, "caller", now)
        q = self.queues[task.queue]
        pos = q.position(task)
        if task.channel == "voice":
            q.abandoned += 1
        out: list[Action] = self._cancel_rings(task, now)
        out.append(QueueLog(now, call_id, task.queue, "NONE", "ABANDON",
                            (pos, task.original_position, round(now - task.enqueued_at)), task.channel))
        self._remove(task)
        return out + self._dispatch(now)

    def exit_key(self, call_id: str, key: str, now: float) -> list[Action]:
        """The waiting caller pressed `key`: if it is the queue's exit key, EXITWITHKEY and a LeaveQueue to
        the key's flow; any other key (or a caller already connected) does nothing.
        """
        task = self.tasks.get(call_id)
        if task is None or task.agent is not None:
            return []
        ek = self._spec(task).exit_key
        if ek is None or ek.key != key:
            return []
        return self._exit(task, now, "EXITWITHKEY", "key", ek.flow, (key,)) + self._dispatch(now)

    def ring_answered(self, call_id: str, agent: str, now: float) -> list[Action]:
        """The agent answered the ring, or accepted the chat/email offer."""
        task = self.tasks.get(call_id)
        a = self.agents.get(agent)
        if a is None:  # a reload removed the agent while its phone rang: that ring is over
            return [DropAgent(call_id, agent)]
        if task is None or task.agent is not None or agent not in task.ringing:
            # ring-all race (docs/notes/kamailio-edge.md pitfall 4): another agent already has
            # the task; this one is hung up at once and not counted as having handled it. Its
            # phone answered: the ring (offered, or withdrawn and not yet ended) is over
            if a.offered.pop(call_id, None) is not None or a.withdrawn.pop(call_id, None) is not None:
                self._touch(agent)
            dropped: list[Action] = [DropAgent(call_id, agent), AgentChanged(agent)]
            return dropped + self._dispatch(now)
        q = self.queues[task.queue]
        ring_start = task.ringing.pop(agent)
        out: list[Action] = self._cancel_rings(task, now)  # the other agents stop ringing
        a.offered.pop(call_id, None)
        a.holding[call_id] = task.channel
        self._touch(agent)
        a.no_answer_streak = 0
        task.agent = agent
        task.answered_at = now
        task.answered_position = q.position(task)
        hold = now - task.enqueued_at
        q.discard(task)
        self._timer_at.pop(call_id, None)
        if task.callback is not None:
            # she accepted the preview: the customer is dialled now. CONNECT waits for the
            # customer's answer (callback_answered); a failed dial puts the callback back
            task.ring_start = ring_start
            out.append(QueueLog(now, call_id, task.queue, agent, "CALLBACKDIAL", (task.attempts + 1, task.callback)))
            out.append(Bridge(call_id, agent, task.channel))
            out.append(AgentChanged(agent))
            return out + self._dispatch(now)
        if task.channel == "voice":
            q.answered += 1
            if hold <= self._spec(task).service_level:
                q.answered_in_sl += 1
            q.avg_hold = hold if q.answered == 1 else (1 - HOLD_WEIGHT) * q.avg_hold + HOLD_WEIGHT * hold
        out.append(QueueLog(now, call_id, task.queue, agent, "CONNECT", (round(hold), "", round(now - ring_start)),
                            task.channel))
        out.append(Bridge(call_id, agent, task.channel))
        out.append(AgentChanged(agent))
        return out + self._dispatch(now)

    def ring_failed(self, call_id: str, agent: str, now: float, reason: str = "noanswer") -> list[Action]:
        """The agent did not answer, was busy, or rejected the offer: its ring has ended (the
        phone's final answer, a chat offer's reject)."""
        return self._ring_failed(call_id, agent, now, withdraw=False)

    def ring_ended(self, call_id: str, agent: str, now: float) -> list[Action]:
        """A ring the engine withdrew (CancelRing) has ended on the agent's phone: the agent
        is free for new offers. Nothing is logged (the withdrawal was); an agent with no such
        ring gets no actions."""
        a = self.agents[agent]
        if a.withdrawn.pop(call_id, None) is None:
            return []
        self._touch(agent)
        return [AgentChanged(agent)] + self._dispatch(now)

    def _withdraw(self, a: AgentState, task_id: str, channel: str, now: float) -> bool:
        """End the agent's offer of the task. A call's ring keeps the agent reserved until
        `ring_ended` (or RING_END_GRACE): the phone rings until the CANCEL reaches it, and an
        offer made meanwhile (a chat to an exclusive agent, another call) would meet a phone
        that still rings. False if the agent had no such offer."""
        if a.offered.pop(task_id, None) is None:
            return False
        if channel == "voice":
            at = now + RING_END_GRACE
            a.withdrawn[task_id] = at
            heapq.heappush(self._timers, (at, next(self._seq), "ring", f"{a.id}\0{task_id}"))
        self._touch(a.id)
        return True

    def _ring_failed(self, call_id: str, agent: str, now: float, withdraw: bool) -> list[Action]:
        """RINGNOANSWER for the agent's offer of the task; withdraw: the engine ends the offer
        (its timeout), so the phone may ring on until `ring_ended`."""
        task = self.tasks.get(call_id)
        a = self.agents.get(agent)
        if a is None:  # removed by a reload: its offers were withdrawn then
            return []
        out: list[Action] = []
        channel = a.offered.get(call_id)
        if channel is not None:
            if withdraw:
                self._withdraw(a, call_id, channel, now)
            else:
                a.offered.pop(call_id, None)
                self._touch(agent)
            out.append(AgentChanged(agent))
        if task is None or agent not in task.ringing:
            return out + self._dispatch(now)
        start = task.ringing.pop(agent)
        task.declined.add(agent)
        out.append(QueueLog(now, call_id, task.queue, agent, "RINGNOANSWER", (round((now - start) * 1000),),
                            task.channel))
        if not task.ringing:
            task.ring_deadline = None
            self.queues[task.queue].offer_ended(task)
            task.retry_at = now + self._spec(task).retry
            self._dirty.add(task.queue)
            self._arm(task, now)
        a.no_answer_streak += 1
        ap = self._spec(task).auto_pause
        if ap is not None and a.no_answer_streak >= ap.after and a.paused is None:
            a.paused = ap.reason
            self._touch(agent)
            out.append(QueueLog(now, "NONE", task.queue, agent, "PAUSE", (ap.reason,)))
        return out + self._dispatch(now)

    def call_ended(self, call_id: str, by: str, now: float) -> list[Action]:
        """A connected task ended; by: 'agent' or 'caller'. Wrap-up: the longer of the queue's
        (calls) and the agent's for the channel."""
        task = self.tasks.get(call_id)
        if task is None or task.agent is None:
            return []
        del self.tasks[call_id]
        a = self.agents[task.agent]
        talk = now - (task.answered_at or now)
        self._release(a, task, now)
        a.talk_time += talk
        a.calls_by_queue[task.queue] += 1
        self._forget_agent_if_free(task.agent)
        hold = (task.answered_at or now) - task.enqueued_at
        event = "COMPLETEAGENT" if by == "agent" else "COMPLETECALLER"
        out: list[Action] = [QueueLog(now, call_id, task.queue, task.agent, event,
                                      (round(hold), round(talk), task.original_position), task.channel),
                             AgentChanged(task.agent)]
        return out + self._dispatch(now)

    def connect_abandoned(self, call_id: str, now: float) -> list[Action]:
        """The caller hung up after the agent answered but before the call side joined them
        (the caller's BYE crossed the agent's 200): ABANDON under the agent, as app_queue's
        try_calling does when the caller is found hung up before the bridge ("Caller was about
        to talk to agent ... but the caller hungup"). The agent is free at once, with no call
        counted and no wrap-up; the queue counts an abandon instead of an answer. Returns no
        actions for a task that is not connected."""
        task = self.tasks.get(call_id)
        if task is None or task.agent is None:
            return []
        del self.tasks[call_id]
        self._timer_at.pop(call_id, None)
        a = self.agents[task.agent]
        a.holding.pop(call_id, None)
        a.idle_since = now  # she picked up the phone: longest-idle counts her idle from here
        self._touch(a.id)
        q = self.queues[task.queue]
        hold = (task.answered_at or now) - task.enqueued_at
        if task.channel == "voice":
            q.answered -= 1
            q.answered_in_sl -= hold <= q.spec.service_level
            q.abandoned += 1
        out: list[Action] = [QueueLog(now, call_id, task.queue, task.agent, "ABANDON",
                                      (task.answered_position, task.original_position, round(now - task.enqueued_at)),
                                      task.channel),
                             AgentChanged(task.agent)]
        return out + self._dispatch(now)

    def blind_transfer(self, call_id: str, extension: str, context: str, now: float) -> list[Action]:
        """The agent of a connected call sends the caller on unattended (a blind transfer):
        the agent's part ends as after any call (talk time, the call counted, wrap-up), and
        queue_log gets app_queue's BLINDTRANSFER with data (extension, context, holdtime,
        calltime, origposition) -- extension: where the caller went (a queue, agent, flow or
        number), context: its kind. The task is gone from the engine; the caller's new queue,
        if any, is a new enqueue. Returns no actions for a task that is not connected."""
        task = self.tasks.get(call_id)
        if task is None or task.agent is None:
            return []
        del self.tasks[call_id]
        self._timer_at.pop(call_id, None)
        a = self.agents[task.agent]
        talk = now - (task.answered_at or now)
        self._release(a, task, now)
        a.talk_time += talk
        a.calls_by_queue[task.queue] += 1
        self.queues[task.queue].transferred += task.channel == "voice"
        self._forget_agent_if_free(task.agent)
        hold = (task.answered_at or now) - task.enqueued_at
        out: list[Action] = [QueueLog(now, call_id, task.queue, task.agent, "BLINDTRANSFER",
                                      (extension, context, round(hold), round(talk), task.original_position),
                                      task.channel),
                             AgentChanged(task.agent)]
        return out + self._dispatch(now)

    def consult_started(self, agent: str, key: str, now: float) -> list[Action]:
        """`agent` is consulted by another agent (an attended transfer's consult leg rings or
        talks to her): she holds `key` on voice, so no queue offers her a call meanwhile."""
        a = self.agents.get(agent)
        if a is None:
            return []
        a.holding[key] = "voice"
        self._touch(agent)
        return [AgentChanged(agent), *self._dispatch(now)]

    def consult_ended(self, agent: str, key: str, now: float) -> list[Action]:
        """The consult with `agent` ended without a transfer to her (cancelled, unanswered,
        hung up): she is free again at once (a consult is not a call of hers: no wrap-up)."""
        a = self.agents.get(agent)
        if a is None or a.holding.pop(key, None) is None:
            return []
        a.idle_since = now
        self._touch(agent)
        self._forget_agent_if_free(agent)
        return [AgentChanged(agent), *self._dispatch(now)]

    def attended_transfer(self, call_id: str, dest: tuple[str, ...], now: float, to_agent: str | None = None,
                          consult_key: str = "") -> list[Action]:
        """The agent of a connected call completed an attended transfer (after a consult): her
        part ends as after any call (talk time, the call counted, wrap-up) and queue_log gets
        app_queue's ATTENDEDTRANSFER, data (*dest, holdtime, calltime, origposition) with dest
        as Asterisk writes it (`BRIDGE`, the bridge the caller joined; apps/app_queue.c,
        log_attended_transfer). With `to_agent` (the consulted agent, holding `consult_key`)
        the task stays connected, now to her, from `now`; else (an external party) the task
        is gone from the engine. Returns no actions for a task that is not connected."""
        task = self.tasks.get(call_id)
        if task is None or task.agent is None:
            return []
        old = task.agent
        a = self.agents[old]
        talk = now - (task.answered_at or now)
        self._release(a, task, now)
        a.talk_time += talk
        a.calls_by_queue[task.queue] += 1
        self.queues[task.queue].transferred += task.channel == "voice"
        hold = (task.answered_at or now) - task.enqueued_at
        out: list[Action] = [QueueLog(now, call_id, task.queue, old, "ATTENDEDTRANSFER",
                                      (*dest, round(hold), round(talk), task.original_position), task.channel),
                             AgentChanged(old)]
        b = self.agents.get(to_agent) if to_agent is not None else None
        if b is not None:
            b.holding.pop(consult_key, None)
            b.holding[call_id] = task.channel
            task.agent, task.answered_at = b.id, now
            self._touch(b.id)
            out.append(AgentChanged(b.id))
        else:
            del self.tasks[call_id]
            self._timer_at.pop(call_id, None)
        self._forget_agent_if_free(old)
        return out + self._dispatch(now)

    def transfer(self, call_id: str, queue: str, now: float) -> list[Action]:
        """Move a chat or email task to another queue (from its agent, or while it waits)."""
        task = self.tasks.get(call_id)
        if task is None or queue not in self.queues:
            return []
        out: list[Action] = self._cancel_rings(task, now)
        hold = (task.answered_at or now) - task.enqueued_at
        talk = now - task.answered_at if task.answered_at is not None else 0.0
        agent = task.agent or "NONE"
        if task.agent is not None:
            self._release(self.agents[task.agent], task, now)
            out.append(AgentChanged(task.agent))
            self._forget_agent_if_free(task.agent)
        out.append(QueueLog(now, call_id, task.queue, agent, "TRANSFER",
                            (queue, "", round(hold), round(talk), task.original_position), task.channel))
        self._remove(task)
        out += self.enqueue(call_id, queue, now, priority=task.priority, caller=task.caller, skills=task.skills,
                            channel=task.channel, due=task.due, data=task.data)
        return out + self._dispatch(now)

    # ------------------------------------------------------------ queued callbacks (docs/callbacks.md)

    def request_callback(self, call_id: str, callback_id: str, number: str, now: float) -> list[Action]:
        """The waiting caller `call_id` asks to be called back on `number` and will hang up:
        its place passes to a callback task `callback_id` with the same priority, arrival time
        and arrival order, so nobody behind it moves up and it is counted in their position and
        estimated wait. queue_log: CALLBACKREQUEST under the call (data: callback id, number,
        position, original position, wait), in place of app_queue's EXITWITHKEY. The queue
        must have `callback:` settings; returns [] for a caller not waiting (connected, gone)
        or a callback id already queued."""
        task = self.tasks.get(call_id)
        if task is None or task.agent is not None or callback_id in self.tasks or task.channel != "voice":
            return []
        if self._spec(task).callback is None:
            return []
        q = self.queues[task.queue]
        pos = q.position(task)
        out: list[Action] = self._cancel_rings(task, now)
        out.append(QueueLog(now, call_id, task.queue, "NONE", "CALLBACKREQUEST",
                            (callback_id, number, pos, task.original_position, round(now - task.enqueued_at))))
        self._remove(task)
        cb = QueuedTask(callback_id, task.queue, task.priority, task.enqueued_at, task.seq, number,
                        skills=dict(task.skills), data=dict(task.data), spec=task.spec, callback=number,
                        requested_at=now, original_position=task.original_position)
        self._insert(cb)
        self._dirty.add(cb.queue)
        self._arm(cb, now)
        return out + self._dispatch(now)

    def enqueue_callback(self, callback_id: str, queue: str, number: str, now: float, *, enqueued_at: float | None = None,
                         requested_at: float | None = None, priority: int = 0, skills: dict[str, int] | None = None,
                         data: dict[str, Any] | None = None, attempts: int = 0, retry_at: float = 0.0,
                         log_request: str | None = None) -> list[Action]:
        """A callback enters `queue` without a waiting caller (a flow's `callback` step), or
        comes back at start from the store (log_request None: nothing is logged; its arrival
        time, attempts made and next attempt time are as stored, so it is where it was).
        log_request: the requesting call's id, for its CALLBACKREQUEST row. KeyError for an
        unknown queue; [] for an id already queued."""
        if callback_id in self.tasks:
            return []
        q = self.queues[queue]
        at = now if enqueued_at is None else enqueued_at
        cb = QueuedTask(callback_id, queue, priority, at, next(self._seq), number, skills=dict(skills or {}),
                        data=dict(data or {}), spec=q.spec, callback=number, attempts=attempts,
                        requested_at=now if requested_at is None else requested_at, retry_at=retry_at)
        self._insert(cb)
        cb.original_position = q.position(cb)
        self._dirty.add(queue)
        self._arm(cb, now)
        out: list[Action] = []
        if log_request is not None:
            out.append(QueueLog(now, log_request, queue, "NONE", "CALLBACKREQUEST",
                                (callback_id, number, cb.original_position, cb.original_position, 0)))
        return out + self._diagnose_task(cb) + self._dispatch(now)

    def callback_answered(self, callback_id: str, now: float) -> list[Action]:
        """The customer answered the callback's dial (and is joined to the agent):
        CALLBACKANSWER (data: attempt, seconds since the request, seconds since the agent's
        preview began), then app_queue's CONNECT (holdtime from the arrival the callback kept,
        "", ring time) so readers of queue_log count it as an answered call."""
        task = self.tasks.get(callback_id)
        if task is None or task.agent is None or task.callback is None:
            return []
        task.attempts += 1
        task.answered_at = now  # the talk starts here (COMPLETE*'s hold and talk times)
        q = self.queues.get(task.queue)
        hold = now - task.enqueued_at
        if q is not None:
            q.answered += 1
            if hold <= self._spec(task).service_level:
                q.answered_in_sl += 1
        return [QueueLog(now, callback_id, task.queue, task.agent, "CALLBACKANSWER",
                         (task.attempts, round(now - task.requested_at), round(now - task.ring_start))),
                QueueLog(now, callback_id, task.queue, task.agent, "CONNECT",
                         (round(hold), "", round(now - task.ring_start)))]

    def callback_failed(self, callback_id: str, reason: str, now: float, counted: bool = True) -> list[Action]:
        """The dial of an accepted callback did not reach the customer (reason: noanswer, busy,
        failed, agent-hangup, worker-lost). The agent is free at once (no call was had, no
        wrap-up). counted: the attempt counts against `attempts` (not when our side failed).
        With attempts left (and not busy with on_busy: fail) the callback waits again in its
        place, not offered before `retry_delay` has passed: CALLBACKFAIL (attempt, reason,
        "retry"); else it is over: CALLBACKFAIL (attempt, reason, "final") and it leaves."""
        task = self.tasks.get(callback_id)
        if task is None or task.agent is None or task.callback is None:
            return []
        cb = self._spec(task).callback
        a = self.agents.get(task.agent)
        agent = task.agent
        out: list[Action] = []
        if a is not None:
            a.holding.pop(callback_id, None)
            a.idle_since = now
            self._touch(agent)
            out.append(AgentChanged(agent))
            self._forget_agent_if_free(agent)
        if counted:
            task.attempts += 1
        final = cb is None or (counted and (task.attempts >= cb.attempts or (reason == "busy" and cb.on_busy == "fail")))
        out.append(QueueLog(now, callback_id, task.queue, agent, "CALLBACKFAIL",
                            (task.attempts, reason, "final" if final else "retry")))
        task.agent = None
        task.answered_at = None
        task.ring_deadline = None
        task.ringing.clear()
        if final or task.queue not in self.queues:
            self._remove(task)
            return out + self._dispatch(now)
        task.retry_at = now + (cb.retry_delay if counted and cb is not None else 0.0)
        task.declined.clear()
        self._insert(task)
        self._arm(task, now)
        self._dirty.add(task.queue)
        return out + self._dispatch(now)

    def cancel_callback(self, callback_id: str, by: str, now: float) -> list[Action]:
        """Cancel a waiting callback (an operator's DELETE): its offer in flight is withdrawn,
        CALLBACKCANCEL (data: by, position, original position, wait) and it leaves. ValueError
        for a callback being dialled or talked to now, KeyError for an unknown one."""
        task = self.tasks.get(callback_id)
        if task is None or task.callback is None:
            raise KeyError(callback_id)
        if task.agent is not None:
            raise ValueError(f"callback {callback_id!r} is being dialled by {task.agent}")
        pos = self.queues[task.queue].position(task)
        out: list[Action] = self._cancel_rings(task, now)
        out.append(QueueLog(now, callback_id, task.queue, "NONE", "CALLBACKCANCEL",
                            (by, pos, task.original_position, round(now - task.enqueued_at))))
        self._remove(task)
        return out + self._dispatch(now)

    def set_callback_window(self, queue: str, closed_until: float, now: float) -> list[Action]:
        """The queue's callback schedule: callbacks may be offered from `closed_until` on (0 or
        a past time: open now; inf: closed until told again). Callbacks waiting meanwhile keep
        their place; they are offered when it opens. The caller (AcdRuntime) looks at the
        schedule again when it may change."""
        if self.callback_closed.get(queue, 0.0) == closed_until:
            return []
        self.callback_closed[queue] = closed_until
        if closed_until != float("inf") and closed_until > now:
            heapq.heappush(self._timers, (closed_until, next(self._seq), "window", queue))
        self._dirty.add(queue)
        return self._dispatch(now)

    def position_of(self, task_id: str) -> tuple[int, float | None] | None:
        """(1-based place, estimated wait in seconds or None) of a waiting task or callback,
        as the announcements say them; None if it is not waiting."""
        task = self.tasks.get(task_id)
        if task is None or task.agent is not None:
            return None
        return self.queues[task.queue].position(task), self.estimated_wait(task)

    # ------------------------------------------------------------ agents

    def agent_login(self, agent: str, now: float) -> list[Action]:
        """The agent logs in to all its queues (ADDMEMBER in each) and may be offered work at once."""
        a = self.agents[agent]
        if a.logged_in:
            return []
        a.logged_in = True
        a.idle_since = now
        self._touch(agent)
        out: list[Action] = [QueueLog(now, "NONE", q, agent, "ADDMEMBER", ()) for q in self.by_agent.get(agent, [])]
        out += self._rediagnose(agent)
        return out + [AgentChanged(agent)] + self._dispatch(now)

    def agent_logout(self, agent: str, now: float) -> list[Action]:
        """The agent logs out of all its queues (REMOVEMEMBER in each); its offers in flight are withdrawn
        and callers of queues left with nobody may leave (leave_when_empty).
        """
        a = self.agents[agent]
        if not a.logged_in:
            return []
        a.logged_in = False
        self._touch(agent)
        out: list[Action] = [QueueLog(now, "NONE", q, agent, "REMOVEMEMBER", ()) for q in self.by_agent.get(agent, [])]
        out += self._rediagnose(agent)
        return out + [AgentChanged(agent)] + self._cancel_offers_to(agent, now) + self._empty_check(now)

    def agent_pause(self, agent: str, reason: str, now: float) -> list[Action]:
        """Pause the agent with a reason (PAUSE in each queue): no new offers until unpaused. Pausing again
        with the same reason does nothing.
        """
        a = self.agents[agent]
        if a.paused == reason:
            return []
        a.paused = reason or "paused"
        self._touch(agent)
        out: list[Action] = [QueueLog(now, "NONE", q, agent, "PAUSE", (a.paused,)) for q in self.by_agent.get(agent, [])]
        out.append(AgentChanged(agent))
        # a paused agent is offered nothing: her rings in flight are withdrawn now, not left to
        # run to the ring timeout (the task goes to the next agent at once)
        return out + self._cancel_offers_to(agent, now)

    def agent_unpause(self, agent: str, now: float) -> list[Action]:
        """End the agent's pause (UNPAUSE with the reason it had) and reset its no-answer streak."""
        a = self.agents[agent]
        if a.paused is None:
            return []
        reason, a.paused = a.paused, None
        a.no_answer_streak = 0
        self._touch(agent)
        out: list[Action] = [QueueLog(now, "NONE", q, agent, "UNPAUSE", (reason,)) for q in self.by_agent.get(agent, [])]
        return out + [AgentChanged(agent)] + self._dispatch(now)

    def agent_registered(self, agent: str, registered: bool, now: float) -> list[Action]:
        """The agent's softphone registered at the edge, or its registration ended: only a registered
        softphone is offered calls (a mobile always counts as registered).
        """
        a = self.agents[agent]
        if a.spec.mobile is not None or a.registered == registered:
            return []
        a.registered = registered
        self._touch(agent)
        if not registered:
            return [AgentChanged(agent)]
        self._touch(agent)
        return [AgentChanged(agent)] + self._dispatch(now)

    def wrapup_done(self, agent: str, now: float, channel: str | None = None) -> list[Action]:
        """The agent ends wrap-up early (for one channel, or all)."""
        a = self.agents[agent]
        ended = [ch for ch in CHANNELS if (channel is None or ch == channel) and a.in_wrapup(ch, now)]
        if not ended:
            return []
        for ch in ended:
            a.wrapup_until[ch] = now
        self._touch(agent)
        return [AgentChanged(agent)] + self._dispatch(now)

    # ------------------------------------------------------------ calls agents place (docs/outbound.md)

    def outbound_started(self, agent: str, call_id: str, now: float) -> tuple[list[Action], str | None]:
        """The agent places a call: she holds it as her voice task from now (busy: no queue call
        is offered to her, and under the exclusive policy no chat or email either). Refused
        (the reason, no change) while she holds or is offered a call. Her chat offers already
        out stay (she may still take or lapse them); her held chat is why she may call (a chat
        to voice). Returns (actions, refusal)."""
        a = self.agents.get(agent)
        if a is None:
            return [], None  # an agent the ACD does not know (no queues): no presence to keep
        if a.call is not None or a.reserved_by is not None:
            return [], f"agent {agent!r} is on a call"
        a.holding[call_id] = "voice"
        self._touch(agent)
        return [AgentChanged(agent)] + self._dispatch(now), None

    def outbound_ended(self, agent: str, call_id: str, now: float, talked: bool) -> list[Action]:
        """The agent's own call ended: she wraps up (her voice wrap-up) if she talked, and is
        offered work again after that."""
        a = self.agents.get(agent)
        if a is None or a.holding.pop(call_id, None) is None:
            return []
        if talked:
            wrapup = a.presence.wrapup_of("voice")
            a.idle_since = now
            a.wrapup_until["voice"] = now + wrapup
            if wrapup > 0:
                heapq.heappush(self._timers, (now + wrapup, next(self._seq), "agent", a.id))
        self._touch(agent)
        self._forget_agent_if_free(agent)
        return [AgentChanged(agent)] + self._dispatch(now)

    # ------------------------------------------------------------ restart: state back from the store

    def restore_agent(self, agent: str, logged_in: bool, paused: str | None, now: float) -> None:
        """At start: the agent's login and pause as stored before the restart. Writes no queue event."""
        a = self.agents[agent]
        a.logged_in, a.paused = logged_in, paused
        if logged_in and not a.idle_since:
            a.idle_since = now
        self._touch(agent)

    def restore_task(self, task_id: str, queue: str, channel: str, enqueued_at: float, now: float, *,
                     priority: int = 0, skills: dict[str, int] | None = None, due: float | None = None,
                     data: dict[str, Any] | None = None, agent: str | None = None,
                     answered_at: float | None = None) -> None:
        """An open task as it was stored: waiting again (an offer in flight is made anew), or
        held by its agent. Writes no queue event: nothing happened to it."""
        if task_id in self.tasks or queue not in self.queues:
            return
        task = QueuedTask(task_id, queue, priority, enqueued_at, next(self._seq), skills=dict(skills or {}),
                          channel=channel, due=due, data=dict(data or {}), spec=self.queues[queue].spec)
        if agent is not None and agent in self.agents:
            task.agent, task.answered_at = agent, answered_at or now
            self.tasks[task_id] = task
            self.agents[agent].holding[task_id] = channel
            self._touch(agent)
            return
        self._insert(task)
        task.original_position = self.queues[queue].position(task)
        self._dirty.add(queue)
        self._arm(task, now)

    def dispatch(self, now: float) -> list[Action]:
        """Offer what can be offered now (after restoring state at start)."""
        return self._dispatch(now)

    # ------------------------------------------------------------ clock

    def tick(self, now: float) -> list[Action]:
        """Run the timers due by `now`: ring timeouts (RINGNOANSWER), max waits (EXITWITHTIMEOUT),
        announcements, retries and tier times, wrap-up ends. Call it at `next_deadline()`.
        """
        out: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            at, _, kind, key = heapq.heappop(self._timers)
            if kind == "window":
                if key in self.queues:
                    self._dirty.add(key)  # its callbacks may be offered now
                continue
            if kind == "agent":
                if key not in self.agents:
                    continue  # wrap-up of an agent a reload removed
                self._touch(key)
                out.append(AgentChanged(key))
                continue
            if kind == "ring":
                agent, task_id = key.split("\0", 1)
                a = self.agents.get(agent)
                if a is not None and a.withdrawn.get(task_id) == at:
                    del a.withdrawn[task_id]  # no end was reported: taken as ended
                    self._touch(agent)
                    out.append(AgentChanged(agent))
                continue
            task = self.tasks.get(key)
            if task is None or self._timer_at.get(key) != at:
                continue  # stale entry: the task left, or its timer moved
            del self._timer_at[key]
            out += self._task_due(task, now)
        return out + self._empty_check(now) + self._dispatch(now)

    def _task_due(self, task: QueuedTask, now: float) -> list[Action]:
        out: list[Action] = []
        if task.agent is not None:
            return out
        q = self.queues[task.queue]
        spec = self._spec(task)
        if task.ring_deadline is not None and now >= task.ring_deadline:
            # one CancelRing for all: a ring-all fork is one INVITE, cancelled as a whole
            agents = tuple(task.ringing)
            out.append(CancelRing(task.id, agents, task.channel))
            for agent in agents:
                out += self._ring_failed(task.id, agent, now, withdraw=True)
        if (task.channel == "voice" and spec.max_wait is not None and now - task.enqueued_at >= spec.max_wait
                and task.id in self.tasks and task.agent is None and task.callback is None):
            return out + self._exit(task, now, "EXITWITHTIMEOUT", "timeout", spec.overflow)
        if task.id not in self.tasks or task.agent is not None:
            return out
        if task.next_announce is not None and now >= task.next_announce and spec.announce is not None:
            task.next_announce = now + spec.announce.every
            out.append(Announce(task.id, q.position(task), self.estimated_wait(task)))
        self._dirty.add(task.queue)  # a retry time or a tier came
        self._arm(task, now)
        return out

    def next_deadline(self) -> float | None:
        """When the next timer is due (seconds on the clock given to the events), or None if none is."""
        while self._timers:
            at, _, kind, key = self._timers[0]
            if kind == "agent" or (kind == "task" and self._timer_at.get(key) == at):
                return at
            if kind == "window" and self.callback_closed.get(key) == at:
                return at
            if kind == "ring":
                agent, task_id = key.split("\0", 1)
                a = self.agents.get(agent)
                if a is not None and a.withdrawn.get(task_id) == at:
                    return at
            heapq.heappop(self._timers)
        return None

    def estimated_wait(self, task: QueuedTask) -> float | None:
        """Seconds a waiting task may still wait: the queue's average hold of answered calls times its
        place; None before any call was answered.
        """
        q = self.queues[task.queue]
        if q.answered == 0:
            return None
        return q.avg_hold * q.position(task)

    # ------------------------------------------------------------ the one place offers are made

    def _dispatch(self, now: float) -> list[Action]:
        """Offer waiting tasks to agents who can take them, by priority then waiting time (an
        email by its due time) across the queues that changed. Choosing and reserving an agent
        is one step: nothing can interleave."""
        for agent in self._touched:
            self._refresh(agent, now)
        self._touched.clear()
        if not self._dirty:
            return []
        dirty = [self.queues[n] for n in sorted(self._dirty)]
        self._dirty = set()
        free = self._free

        def stream(q: QueueState, channel: str) -> Iterator[QueuedTask]:
            agents = free[(q.name, channel)]
            for t in q.unoffered[channel]:  # offered tasks leave the list after the loop
                if not agents:
                    return  # nobody in this queue can take this channel any more: stop looking
                yield t

        out: list[Action] = []
        offered: list[QueuedTask] = []
        for task in heapq.merge(*(stream(q, ch) for q in dirty for ch in CHANNELS
                                           if q.unoffered[ch] and free[(q.name, ch)]), key=QueuedTask.sort_key):
            if task.agent is not None or task.ringing or now < task.retry_at or task.id not in self.tasks:
                continue
            if task.callback is not None and now < self.callback_closed.get(task.queue, 0.0):
                continue  # after hours: it waits, in place, for the window (set_callback_window)
            q = self.queues[task.queue]
            spec = self._spec(task)
            strategy = self._strategy(spec.strategy)
            start = None if strategy.ring_all else strategy.rotation(q)
            if start is not None:
                ordered = self._first_candidate(q, task, now, start)
                if not ordered:
                    continue
            else:
                candidates = self._candidates(q, task, now)
                if not candidates:
                    continue
                fresh = [a for a in candidates if a.id not in task.declined]
                if fresh:  # the next agent, not the one who just let it go (Asterisk's linpos)
                    candidates = fresh
                ordered = strategy.order(candidates, q, now, self.rng)
            # a callback is previewed by one agent at a time, even in a ring-all queue: the
            # preview is hers, and the customer is dialled for the one who accepts it
            chosen = ordered if strategy.ring_all and task.callback is None else ordered[:1]
            for a in chosen:
                a.offered[task.id] = task.channel
                task.ringing[a.id] = now
            for a in chosen:
                self._refresh(a.id, now)
            self._dirty.clear()  # _refresh marks; this pass already covers the queues that matter
            timeout = self._offer_timeout(task)
            task.ring_deadline = now + timeout
            self._arm(task, now)
            q.rr_last = chosen[-1].id if not strategy.ring_all else q.rr_last
            out.append(Ring(task.id, q.name, tuple(a.id for a in chosen), timeout, task.channel))
            if task.callback is not None:
                out += [QueueLog(now, task.id, q.name, a.id, "CALLBACKOFFER", (task.attempts + 1, task.callback))
                        for a in chosen]
            out += [AgentChanged(a.id) for a in chosen]
            offered.append(task)
        for task in offered:
            self.queues[task.queue].offer_made(task)
        return out

    def _offer_timeout(self, task: QueuedTask) -> float:
        """Seconds an offer of the task lasts: a callback's preview, a call's ring timeout, a
        chat's or email's offer timeout."""
        spec = self._spec(task)
        if task.callback is not None and spec.callback is not None:
            return spec.callback.preview
        return spec.ring_timeout if task.channel == "voice" else spec.offer_timeout

    def _candidates(self, q: QueueState, task: QueuedTask, now: float) -> list[AgentState]:
        """The free members who may take this task, in member order (strategies rely on it)."""
        free = self._free[(q.name, task.channel)]
        if not free:
            return []
        waited = now - task.enqueued_at
        tier_wait = self._spec(task).tier_wait
        top_tier = 1 + (int(waited // tier_wait) if tier_wait > 0 else 8)
        at = self._member_at[q.name]
        out = []
        for name in sorted(free, key=at.__getitem__):
            a = self.agents[name]
            if at[name][1] > top_tier or not a.can_take(task.channel, now):
                continue
            if any(a.skill(s) < level for s, level in q.spec.skills.items()):
                continue
            if any(a.skill(s) < level for s, level in task.skills.items()):
                continue
            out.append(a)
        return out

    def _first_candidate(self, q: QueueState, task: QueuedTask, now: float, start: int) -> list[AgentState]:
        """What `_candidates` + a hunt strategy's `order` would pick first, found without
        looking at everyone: members from index `start` round the list, the first free one who
        may take the task and did not just decline it; else the first who declined it. [] or
        [agent]."""
        free = self._free[(q.name, task.channel)]
        members = q.spec.members
        n = len(members)
        if not free or not n:
            return []
        waited = now - task.enqueued_at
        tier_wait = self._spec(task).tier_wait
        top_tier = 1 + (int(waited // tier_wait) if tier_wait > 0 else 8)
        declined: AgentState | None = None
        for i in range(n):
            m = members[(start + i) % n]
            if m.agent not in free or m.tier > top_tier:
                continue
            a = self.agents[m.agent]
            if not a.can_take(task.channel, now):
                continue
            if any(a.skill(s) < level for s, level in q.spec.skills.items()):
                continue
            if any(a.skill(s) < level for s, level in task.skills.items()):
                continue
            if a.id not in task.declined:
                return [a]
            declined = declined or a
        return [declined] if declined is not None else []

    # ------------------------------------------------------------ routing diagnosis

    def diagnose(self, queue: str, skills: dict[str, int] | None = None) -> str:
        """Why a task for `queue` needing `skills` (on top of the queue's own) could not be
        offered to anyone, as one of Unroutable's reasons, or "" when some logged-in member
        has the skills (free or not). Costs the queue's member count."""
        q = self.queues[queue]
        spec = q.spec
        if not spec.members:
            return "no-members"
        need = {**spec.skills}
        for s, level in (skills or {}).items():
            need[s] = max(level, need.get(s, 0))
        if not need:  # every member is skilled: the common case, without a pass over them
            return "" if self._anyone_logged_in(q) else "no-member-logged-in"
        skilled = [self.agents[m.agent] for m in spec.members
                   if all(self.agents[m.agent].skill(s) >= level for s, level in need.items())]
        if not skilled:
            return "no-skills"
        if not any(a.logged_in for a in skilled):
            return "no-member-logged-in"
        return ""

    def _diagnose_task(self, task: QueuedTask) -> list[Action]:
        reason = self.diagnose(task.queue, task.skills)
        if reason == task.unroutable:
            return []
        task.unroutable = reason
        return [Unroutable(task.id, task.queue, reason, task.channel)]

    def _rediagnose(self, agent: str) -> list[Action]:
        """The agent logged in or out: the waiting tasks of its queues may have become
        routable, or unroutable."""
        out: list[Action] = []
        for q in self.by_agent.get(agent, ()):
            for task in self.queues[q].waiting:
                if task.agent is None:
                    out += self._diagnose_task(task)
        return out

    # ------------------------------------------------------------ run-time changes (reload, member commands)

    def reconfigure_problems(self, queues: dict[str, QueueConfig], agents: dict[str, AgentConfig],
                             drain: dict[str, str] | None = None) -> list[str]:
        """Why `reconfigure` with these sections would be refused, as sentences ([] if it may go
        ahead). A queue may not go while tasks wait in it, unless `drain` names the queue of the
        new config they move to (removed queue -> target). Members must be agents of `agents`.
        Pure: looks, changes nothing."""
        problems = []
        drain = drain or {}
        for old, target in sorted(drain.items()):
            if old in queues or old not in self.queues:
                problems.append(f"drain {old}={target}: {old!r} is not a queue this change removes")
            elif target not in queues:
                problems.append(f"drain {old}={target}: {target!r} is not a queue of the new config")
        for name in sorted(set(self.queues) - set(queues)):
            waiting = self.queues[name].waiting
            if waiting and name not in drain:
                kinds = Counter("caller" if t.channel == "voice" else t.channel for t in waiting)
                what = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in sorted(kinds.items()))
                problems.append(f"queue {name!r} is removed but {what} wait in it ({', '.join(t.id for t in waiting[:5])}"
                                f"{', ...' if len(waiting) > 5 else ''}): drain them to another queue "
                                f"(reload --drain {name}=QUEUE) or remove it once nobody waits")
        for name, spec in sorted(queues.items()):
            for m in spec.members:
                if m.agent not in agents:
                    problems.append(f"queue {name!r}: member {m.agent!r} is not an agent")
        return problems

    def reconfigure(self, queues: dict[str, QueueConfig], agents: dict[str, AgentConfig],
                    presence: dict[str, PresenceProfile] | None = None, now: float = 0.0,
                    drain: dict[str, str] | None = None) -> list[Action]:
        """Switch the running ACD to new `queues:` and `agents:` sections (a reload), keeping
        every agent's presence and every task's place. Raises ValueError with
        `reconfigure_problems` if there are any; then changes nothing.

        - agents: new ones start logged out (a mobile agent counts as registered); a changed one
          takes its new skills, reach and presence now; a removed one is logged out of its
          queues (REMOVEMEMBER, its offers withdrawn) and forgotten once it holds nothing.
        - queues: a new one takes tasks at once; a changed one gives its new settings to the
          tasks that enter it from now on (each waiting task keeps the strategy, timeouts, max
          wait, announcements and wrap-up it entered with), while who may take its tasks
          (members, tiers, skills) is the new config's at once: a member removed has its
          offers from this queue withdrawn and gets no new ones, and keeps a task in hand;
          a member added or removed while logged in gets ADDMEMBER / REMOVEMEMBER (app_queue's
          names for AddQueueMember / RemoveQueueMember). A removed queue's waiting tasks move
          to `drain[queue]` (TRANSFER; a caller leaves through LeaveQueue with reason
          "drained"), its connected tasks end normally.
        """
        problems = self.reconfigure_problems(queues, agents, drain)
        if problems:
            raise ValueError("; ".join(problems))
        presence = presence or {}
        out: list[Action] = []
        for name in sorted(set(self.agents) - set(agents)):
            out += self._remove_agent(name, now)
        for name, spec in agents.items():
            out += self._set_agent(name, spec, presence.get(name) or PresenceProfile(), now)
        for name, qspec in queues.items():
            out += self._set_queue(name, qspec, now)
        moved: list[tuple[QueuedTask, str]] = []
        for name in sorted(set(self.queues) - set(queues)):
            out += self._remove_queue(name, (drain or {}).get(name), now, moved)
        self._reindex()
        for task, target in moved:  # chats, emails, callbacks of a drained queue, once the index is whole again
            if task.callback is not None:
                out += self.enqueue_callback(task.id, target, task.callback, now, enqueued_at=task.enqueued_at,
                                             requested_at=task.requested_at, priority=task.priority,
                                             skills=task.skills, data=task.data, attempts=task.attempts)
                continue
            out += self.enqueue(task.id, target, now, priority=task.priority, caller=task.caller, skills=task.skills,
                                channel=task.channel, due=task.due, data=task.data)
        for q in self.queues.values():
            for task in q.waiting:
                if task.agent is None:
                    out += self._diagnose_task(task)
        return out + self._empty_check(now) + self._dispatch(now)

    def add_member(self, queue: str, agent: str, tier: int, now: float) -> list[Action]:
        """Asterisk's AddQueueMember: `agent` serves `queue` from now on, at `tier` (1 rings
        first; Asterisk's penalty). ValueError if it already does; KeyError for an unknown
        queue or agent."""
        from ringmaster.acd.config import Member

        spec = self.queues[queue].spec
        if agent not in self.agents:
            raise KeyError(agent)
        if any(m.agent == agent for m in spec.members):
            raise ValueError(f"agent {agent!r} is already a member of queue {queue!r}")
        return self.set_members(queue, [*spec.members, Member(agent=agent, tier=tier)], now)

    def remove_member(self, queue: str, agent: str, now: float) -> list[Action]:
        """Asterisk's RemoveQueueMember: `agent` gets no new offers from `queue`; a ring from it
        is withdrawn, a task in hand is kept to its end. ValueError if not a member."""
        spec = self.queues[queue].spec
        if not any(m.agent == agent for m in spec.members):
            raise ValueError(f"agent {agent!r} is not a member of queue {queue!r}")
        return self.set_members(queue, [m for m in spec.members if m.agent != agent], now)

    def set_member_tier(self, queue: str, agent: str, tier: int, now: float) -> list[Action]:
        """Asterisk's QueueMemberPenalty: the member's tier (1 rings first, higher tiers after
        tier_wait). ValueError if not a member."""
        spec = self.queues[queue].spec
        if not any(m.agent == agent for m in spec.members):
            raise ValueError(f"agent {agent!r} is not a member of queue {queue!r}")
        members = [m.model_copy(update={"tier": tier}) if m.agent == agent else m for m in spec.members]
        return self.set_members(queue, members, now)

    def set_members(self, queue: str, members: list[Any], now: float) -> list[Action]:
        """Replace the queue's members (a list of acd.config.Member) and offer what can be
        offered now."""
        before = {m.agent for m in self.queues[queue].spec.members}
        spec = self.queues[queue].spec.model_copy(update={"members": list(members)})
        out = self._set_queue(queue, spec, now)
        # only this queue's members moved: the index changes for them alone (not agents x queues)
        after = {m.agent for m in spec.members}
        for agent in before - after:
            if queue in self.by_agent.get(agent, ()):
                self.by_agent[agent].remove(queue)
            for ch in CHANNELS:
                self._free[(queue, ch)].discard(agent)
        for agent in after - before:
            if agent in self.by_agent and queue not in self.by_agent[agent]:
                self.by_agent[agent].append(queue)
            self._touch(agent)
        for task in self.queues[queue].waiting:
            if task.agent is None:
                out += self._diagnose_task(task)
        return out + self._empty_check(now) + self._dispatch(now)

    def _set_agent(self, name: str, spec: AgentConfig, presence: PresenceProfile, now: float) -> list[Action]:
        self._leaving.discard(name)  # removed by an earlier reload, back before its call ended
        a = self.agents.get(name)
        if a is None:
            self.agents[name] = AgentState(name, spec, presence=presence, registered=spec.mobile is not None)
            self.by_agent.setdefault(name, [])
            self._touch(name)
            return [AgentChanged(name)]
        if a.spec == spec and a.presence == presence:
            return []
        if spec.mobile is not None:
            a.registered = True  # a mobile is always reachable
        elif a.spec.softphone is None or spec.softphone is None or a.spec.softphone.username != spec.softphone.username:
            a.registered = False  # another phone: reachable once it registers
        a.spec, a.presence = spec, presence
        self._touch(name)
        return [AgentChanged(name)]

    def _remove_agent(self, name: str, now: float) -> list[Action]:
        out = self.agent_logout(name, now)
        out += self._cancel_offers_to(name, now)
        self._leaving.add(name)
        self._forget_agent_if_free(name)
        return out

    def _forget_agent_if_free(self, name: str) -> None:
        a = self.agents.get(name)
        if name not in self._leaving or a is None or a.holding or a.offered:
            return
        self._leaving.discard(name)
        del self.agents[name]
        self.by_agent.pop(name, None)
        self._touched.discard(name)
        for members in self._free.values():
            members.discard(name)

    def _set_queue(self, name: str, spec: QueueConfig, now: float) -> list[Action]:
        q = self.queues.get(name)
        out: list[Action] = []
        if q is None:
            self.queues[name] = QueueState(name, spec)
            for ch in CHANNELS:
                self._free[(name, ch)] = set()
            self.strategies[name] = STRATEGIES[spec.strategy]()
            before: set[str] = set()
        else:
            before = {m.agent for m in q.spec.members}
            q.spec = spec
            self.strategies[name] = STRATEGIES[spec.strategy]()
        after = {m.agent for m in spec.members}
        for agent in sorted(after - before):
            if agent in self.agents and self.agents[agent].logged_in:
                out.append(QueueLog(now, "NONE", name, agent, "ADDMEMBER", ()))
        for agent in sorted(before - after):
            if agent in self.agents and self.agents[agent].logged_in:
                out.append(QueueLog(now, "NONE", name, agent, "REMOVEMEMBER", ()))
            out += self._withdraw_queue_offers(name, agent, now)
        self._member_at[name] = {m.agent: (i, m.tier) for i, m in enumerate(spec.members)}
        self._max_tier[name] = max((m.tier for m in spec.members), default=1)
        self._dirty.add(name)
        return out

    def _withdraw_queue_offers(self, queue: str, agent: str, now: float) -> list[Action]:
        """The agent left `queue`: its offers of that queue's tasks end (RINGCANCELED); a task
        it holds stays with it."""
        out: list[Action] = []
        a = self.agents.get(agent)
        if a is None:
            return out
        for task_id in list(a.offered):
            task = self.tasks.get(task_id)
            if task is None or task.queue != queue or agent not in task.ringing:
                continue
            a.offered.pop(task_id, None)
            start = task.ringing.pop(agent)
            out.append(CancelRing(task.id, (agent,), task.channel))
            out.append(QueueLog(now, task.id, task.queue, agent, "RINGCANCELED", (round((now - start) * 1000),),
                                task.channel))
            out.append(AgentChanged(agent))
            if not task.ringing:
                task.ring_deadline = None
                self.queues[task.queue].offer_ended(task)
                self._arm(task, now)
            self._touch(agent)
        return out

    def _remove_queue(self, name: str, target: str | None, now: float,
                      moved: list[tuple[QueuedTask, str]]) -> list[Action]:
        out: list[Action] = []
        q = self.queues[name]
        for task in list(q.waiting):
            out += self._cancel_rings(task, now)
            hold = now - task.enqueued_at
            out.append(QueueLog(now, task.id, name, "NONE", "TRANSFER",
                                (target, "", round(hold), 0, task.original_position), task.channel))
            self._remove(task)
            if task.callback is not None:
                assert target is not None  # reconfigure_problems: tasks wait only where a drain is named
                moved.append((task, target))  # keeps its arrival time in `target` (reconfigure)
            elif task.channel == "voice":
                # the caller's side moves it (hold music, the call record): as an overflow does
                out.append(LeaveQueue(task.id, name, "drained", Overflow(queue=target)))
            else:
                assert target is not None  # reconfigure_problems: tasks wait only where a drain is named
                moved.append((task, target))  # re-enters `target` in reconfigure
        del self.queues[name]
        self.strategies.pop(name, None)
        self._member_at.pop(name, None)
        self._max_tier.pop(name, None)
        self._dirty.discard(name)
        for ch in CHANNELS:
            self._free.pop((name, ch), None)
        for agent in self.by_agent.values():  # the index forgets it now: _refresh must not look for it
            if name in agent:
                agent.remove(name)
        return out

    def _reindex(self) -> None:
        """Rebuild the agent -> queues index and the free sets from the queues' members (after
        a change of members or queues): every agent's place is looked at again."""
        self.by_agent = {a: [] for a in self.agents}
        for q, state in self.queues.items():
            for m in state.spec.members:
                if m.agent in self.by_agent:
                    self.by_agent[m.agent].append(q)
        for members in self._free.values():
            members.clear()
        self._touched.update(self.agents)

    def check_index(self) -> list[str]:
        """The agent -> queues index and the free sets against the queues' members, as the
        differences found ([] when they agree): for tests and `status` (costs agents x queues)."""
        wrong = []
        for agent in self.agents:
            should = sorted(q for q, st in self.queues.items() if any(m.agent == agent for m in st.spec.members))
            if sorted(self.by_agent.get(agent, [])) != should:
                wrong.append(f"by_agent[{agent}] = {sorted(self.by_agent.get(agent, []))}, members say {should}")
        for (q, ch), free in self._free.items():
            if q not in self.queues:
                wrong.append(f"free set of removed queue {q}")
                continue
            members = {m.agent for m in self.queues[q].spec.members}
            if free - members:
                wrong.append(f"free[{q},{ch}] holds non-members {sorted(free - members)}")
        return wrong

    def _spec(self, task: QueuedTask) -> QueueConfig:
        """The settings the task entered its queue with."""
        return task.spec if task.spec is not None else self.queues[task.queue].spec

    def _strategy(self, name: str) -> Strategy:
        s = self._strategies_by_name.get(name)
        if s is None:
            s = self._strategies_by_name[name] = STRATEGIES[name]()
        return s

    # ------------------------------------------------------------ helpers

    def _insert(self, task: QueuedTask) -> None:
        self.tasks[task.id] = task
        self.queues[task.queue].add(task)

    def _arm(self, task: QueuedTask, now: float) -> None:
        """Put the task's next time (offer timeout, retry, max wait, announcement, next tier) in the heap."""
        q = self.queues[task.queue]
        spec = self._spec(task)
        times = []
        if task.ring_deadline is not None:
            times.append(task.ring_deadline)
        if task.retry_at > now:
            times.append(task.retry_at)
        if task.channel == "voice" and spec.max_wait is not None and task.callback is None:
            times.append(task.enqueued_at + spec.max_wait)  # a callback waits for its turn however long
        if task.next_announce is not None:
            times.append(task.next_announce)
        if spec.tier_wait > 0 and self._max_tier[q.name] > 1:
            step = int((now - task.enqueued_at) // spec.tier_wait) + 1
            if step < self._max_tier[q.name]:
                times.append(task.enqueued_at + step * spec.tier_wait)
        if not times:
            self._timer_at.pop(task.id, None)
            return
        at = min(times)
        if self._timer_at.get(task.id) != at:
            self._timer_at[task.id] = at
            heapq.heappush(self._timers, (at, next(self._seq), "task", task.id))

    def _release(self, a: AgentState, task: QueuedTask, now: float) -> None:
        """The agent no longer holds the task: wrap-up for its channel starts."""
        a.holding.pop(task.id, None)
        wrapup = a.presence.wrapup_of(task.channel)
        if task.channel == "voice":
            wrapup = max(wrapup, self._spec(task).wrapup)
        a.idle_since = now
        a.wrapup_until[task.channel] = now + wrapup
        a.wrapup_queue = task.queue
        if wrapup > 0:
            heapq.heappush(self._timers, (now + wrapup, next(self._seq), "agent", a.id))
        self._touch(a.id)

    def _touch(self, agent: str) -> None:
        """The agent's state changed: its availability is looked at again before the next offer."""
        self._touched.add(agent)

    def _refresh(self, agent: str, now: float) -> None:
        """Update the agent's place in the free sets of its queues; a queue where the agent can
        take something gets looked at."""
        a = self.agents.get(agent)
        if a is None:
            return
        queues = self.by_agent.get(agent, ())
        for ch in CHANNELS:
            if a.can_take(ch, now):
                for q in queues:
                    self._free[(q, ch)].add(agent)
                self._dirty.update(queues)
            else:
                for q in queues:
                    self._free[(q, ch)].discard(agent)

    def withdraw_offers(self, task_id: str, now: float) -> list[Action]:
        """Cancel a task's offers in flight and offer it to no one else (a clean stop: the task
        itself is kept for the next start, which offers it anew)."""
        task = self.tasks.get(task_id)
        return self._cancel_rings(task, now) if task is not None else []

    def _cancel_rings(self, task: QueuedTask, now: float) -> list[Action]:
        if not task.ringing:
            return []
        agents = tuple(task.ringing)
        out: list[Action] = [CancelRing(task.id, agents, task.channel)]
        for agent in agents:
            start = task.ringing.pop(agent)
            self._withdraw(self.agents[agent], task.id, task.channel, now)
            out.append(QueueLog(now, task.id, task.queue, agent, "RINGCANCELED", (round((now - start) * 1000),),
                                task.channel))
            out.append(AgentChanged(agent))
        task.ring_deadline = None
        if task.agent is None:
            self.queues[task.queue].offer_ended(task)
        return out

    def _cancel_offers_to(self, agent: str, now: float) -> list[Action]:
        out: list[Action] = []
        a = self.agents[agent]
        self._touch(agent)
        for task_id in list(a.offered):
            task = self.tasks.get(task_id)
            if task is None or agent not in task.ringing:
                a.offered.pop(task_id, None)
                continue
            self._withdraw(a, task_id, task.channel, now)
            start = task.ringing.pop(agent)
            out.append(CancelRing(task.id, (agent,), task.channel))
            out.append(QueueLog(now, task.id, task.queue, agent, "RINGCANCELED", (round((now - start) * 1000),),
                                task.channel))
            if not task.ringing:
                task.ring_deadline = None
                self.queues[task.queue].offer_ended(task)
                self._dirty.add(task.queue)
        return out + self._dispatch(now)

    def _remove(self, task: QueuedTask) -> None:
        self.tasks.pop(task.id, None)
        self._timer_at.pop(task.id, None)
        q = self.queues.get(task.queue)  # a connected task outlives a queue a reload removed
        if q is not None:
            q.discard(task)

    def _anyone_logged_in(self, q: QueueState) -> bool:
        return any(self.agents[m.agent].logged_in for m in q.spec.members)

    def _empty_check(self, now: float) -> list[Action]:
        out: list[Action] = []
        for q in self.queues.values():
            if not q.spec.leave_when_empty or not q.waiting or self._anyone_logged_in(q):
                continue
            for task in [t for t in q.waiting if t.channel == "voice" and t.callback is None]:
                out += self._exit(task, now, "EXITEMPTY", "empty", self._spec(task).overflow)
        return out

    def _exit(self, task: QueuedTask, now: float, event: str, reason: str, target: Overflow | str | None,
              data: tuple[Any, ...] = ()) -> list[Action]:
        """A caller leaves the queue unserved (exit key, max wait, empty queue): the event with
        Asterisk's fields (..., position, original position, wait), then where they go."""
        pos = self.queues[task.queue].position(task)
        out = self._cancel_rings(task, now)
        out.append(QueueLog(now, task.id, task.queue, "NONE", event,
                            (*data, pos, task.original_position, round(now - task.enqueued_at))))
        out.append(LeaveQueue(task.id, task.queue, reason, target))
        self._remove(task)
        return out
