"""The ACD's state: agents with their presence, queues and waiting tasks (plain dataclasses, no IO).

A task is anything routed to an agent: a call (channel `voice`), a chat or an email. An agent
holds tasks (connected) and offers (reserved, ringing or waiting for accept), counted per
channel against the agent's capacity, and the cross-channel policy decides whether tasks of
another channel may sit beside them.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ringmaster.acd.config import CHANNELS, AgentConfig, PresenceProfile, QueueConfig

__all__ = ["CHANNELS", "AgentAction", "AgentState", "QueuedTask", "QueueState"]


class AgentAction(StrEnum):
    """What an operator (CLI, API) or the agent's desk (MQTT) may do to an agent's presence."""

    LOGIN = "login"
    LOGOUT = "logout"
    PAUSE = "pause"      # with a reason (lunch, training, ...)
    UNPAUSE = "unpause"


@dataclass(eq=False)  # identity: agents and tasks are compared by who they are
class AgentState:
    """One agent's presence: logged in, paused (with the reason), registered at the edge, and per channel
    the tasks it holds and is offered (task id -> channel), wrap-up ends (channel -> epoch seconds) and
    the figures strategies use (idle since, calls by queue, talk time, no-answer streak). Times are
    seconds on the engine's clock.
    """

    id: str
    spec: AgentConfig
    presence: PresenceProfile = field(default_factory=PresenceProfile)
    logged_in: bool = False
    paused: str | None = None         # pause reason while paused
    registered: bool = False          # softphone registered at the edge (a mobile always counts)
    holding: dict[str, str] = field(default_factory=dict)   # connected task -> channel
    offered: dict[str, str] = field(default_factory=dict)   # reserved task (ringing / offered) -> channel
    # calls whose ring was withdrawn (CANCEL sent) but has not ended on the phone yet -> the time
    # it is taken as ended anyway: the phone still rings, so the agent is still reserved for voice
    withdrawn: dict[str, float] = field(default_factory=dict)
    wrapup_until: dict[str, float] = field(default_factory=dict)  # channel -> end of wrap-up
    wrapup_queue: str = ""
    idle_since: float = 0.0
    calls_by_queue: Counter[str] = field(default_factory=Counter)
    talk_time: float = 0.0
    no_answer_streak: int = 0

    # the voice view, which the call side and the status pages read
    @property
    def call(self) -> str | None:
        """The call (voice task) the agent is connected to, or None."""
        return next((t for t, ch in self.holding.items() if ch == "voice"), None)

    @property
    def reserved_by(self) -> str | None:
        """The call ringing this agent now (offered, or withdrawn and not yet ended on the
        phone), or None."""
        return next((t for t, ch in self.offered.items() if ch == "voice"), next(iter(self.withdrawn), None))

    def capacity(self, channel: str) -> int:
        """Tasks of `channel` the agent may hold and be offered at once (voice: always 1)."""
        if channel == "voice":
            return 1
        return self.presence.capacity_of(channel)

    def load(self, channel: str) -> int:
        """Tasks of `channel` the agent holds plus those offered to it (for voice, also the
        withdrawn rings still ringing on the phone)."""
        return (sum(1 for ch in self.holding.values() if ch == channel)
                + sum(1 for ch in self.offered.values() if ch == channel)
                + (len(self.withdrawn) if channel == "voice" else 0))

    def in_wrapup(self, channel: str, now: float) -> bool:
        """True while the agent wraps up after a task of `channel` (until wrapup_until)."""
        return now < self.wrapup_until.get(channel, 0.0)

    def engaged(self, channel: str, now: float) -> bool:
        """Holding, offered (a withdrawn ring still ringing counts) or wrapping up something of
        this channel."""
        return (channel in self.holding.values() or channel in self.offered.values()
                or (channel == "voice" and bool(self.withdrawn)) or self.in_wrapup(channel, now))

    def can_take(self, channel: str, now: float) -> bool:
        """Whether an offer of `channel` may be made now: logged in, not paused, registered (voice), not
        wrapping up, under capacity, and no other channel engaged under the exclusive policy.
        """
        if not self.logged_in or self.paused is not None:
            return False
        if channel == "voice" and not self.registered:
            return False
        if self.in_wrapup(channel, now) or self.load(channel) >= self.capacity(channel):
            return False
        if self.presence.policy == "exclusive":
            # one channel at a time: a call blocks chats and emails, a chat or email blocks calls
            return not any(self.engaged(other, now) for other in CHANNELS if other != channel)
        return True

    def available(self, now: float) -> bool:
        """can_take for voice."""
        return self.can_take("voice", now)

    def skill(self, name: str) -> int:
        """The agent's level of skill `name` (0: none)."""
        return self.spec.skills.get(name, 0)

    def status(self, now: float) -> str:
        """One word for status pages: on-call, ringing, logged-out, paused:REASON, unregistered,
        wrap-up, busy (chat/email holds the agent), available."""
        if self.call is not None:
            return "on-call"
        if any(ch == "voice" for ch in self.offered.values()):
            return "ringing"
        if not self.logged_in:
            return "logged-out"
        if self.paused is not None:
            return f"paused:{self.paused}"
        if self.withdrawn:
            return "ringing"  # a withdrawn ring the phone has not ended yet (milliseconds)
        if any(self.in_wrapup(ch, now) for ch in CHANNELS):
            return "wrap-up"
        if self.holding or self.offered or self.withdrawn:
            return "busy"
        if not self.registered:
            return "unregistered"
        return "available"

    def channel_states(self, now: float) -> dict[str, dict[str, Any]]:
        """Per channel: tasks held and offered, capacity, wrap-up, and whether an offer could come now."""
        out: dict[str, dict[str, Any]] = {}
        for ch in CHANNELS:
            out[ch] = {"capacity": self.capacity(ch),
                       "holding": sorted(t for t, c in self.holding.items() if c == ch),
                       "offered": sorted(t for t, c in self.offered.items() if c == ch),
                       "wrapup": self.in_wrapup(ch, now),
                       "available": self.can_take(ch, now)}
        return out


@dataclass(eq=False)
class QueuedTask:
    """A call (voice), chat or email waiting in a queue or held by an agent: who asked for it (priority,
    needed skills, an email's due time), when it entered (epoch seconds on the engine's clock) and its
    offers in flight (ringing: agent -> offer start).
    """

    id: str
    queue: str
    priority: int
    enqueued_at: float
    seq: int
    caller: str = ""
    skills: dict[str, int] = field(default_factory=dict)  # needed by this task (from the IVR or the task)
    channel: str = "voice"
    due: float | None = None          # email: the time it is due; ordered by it
    data: dict[str, Any] = field(default_factory=dict)
    original_position: int = 0
    ringing: dict[str, float] = field(default_factory=dict)  # agent -> offer start
    declined: set[str] = field(default_factory=set)  # agents who let this task's offer lapse or rejected it
    ring_deadline: float | None = None
    retry_at: float = 0.0
    next_announce: float | None = None
    agent: str | None = None          # connected agent
    answered_at: float | None = None
    answered_position: int = 0        # its place in the queue when its agent answered (1-based)
    unroutable: str = ""              # why no logged-in member could take it (engine.Unroutable), "" if one can
    # a queued callback (docs/callbacks.md): the number to call back (None: a call, chat or
    # email), the dial attempts made, when it was requested (epoch seconds: time to callback)
    callback: str | None = None
    attempts: int = 0
    requested_at: float = 0.0
    ring_start: float = 0.0           # a callback: when the agent's preview began (CONNECT's ring time)
    # the queue's settings when the task entered it: a reload changes them for the next task,
    # never for this one (its strategy, timeouts, retry, max wait, announcements, wrap-up);
    # who may take it (members, tiers, required skills) is the queue's as it is now
    spec: QueueConfig | None = None

    def sort_key(self) -> tuple[int, float, int]:
        """Service order: higher priority first, then the due time (email) or entry time, then arrival
        order.
        """
        return (-self.priority, self.due if self.due is not None else self.enqueued_at, self.seq)


@dataclass
class QueueState:
    """One queue: its config, the tasks waiting in service order, round-robin memory, counts since start
    (answered, answered within the service level, abandoned) and the average hold time used for
    estimates. unoffered: per channel, the waiting tasks with no offer out.
    """

    name: str
    spec: QueueConfig
    waiting: list[QueuedTask] = field(default_factory=list)  # in service order
    rr_last: str | None = None        # round-robin memory: the agent offered last
    answered: int = 0
    answered_in_sl: int = 0
    abandoned: int = 0
    transferred: int = 0              # calls its agents sent on (BLINDTRANSFER)
    avg_hold: float = 0.0             # exponentially weighted wait of answered calls, for estimates

    # per channel, the waiting tasks with no offer out, in service order: what a dispatch reads
    unoffered: dict[str, list[QueuedTask]] = field(default_factory=lambda: {ch: [] for ch in CHANNELS})

    def add(self, task: QueuedTask) -> None:
        """A task enters the waiting list, in service order."""
        bisect.insort(self.waiting, task, key=QueuedTask.sort_key)
        self.offer_ended(task)

    def discard(self, task: QueuedTask) -> None:
        """A task leaves the waiting list (answered, left, moved)."""
        if task in self.waiting:
            self.waiting.remove(task)
        self.offer_made(task)

    def offer_made(self, task: QueuedTask) -> None:
        """An offer went out for the task: it leaves the unoffered list of its channel."""
        lst = self.unoffered[task.channel]
        i = bisect.bisect_left(lst, task.sort_key(), key=QueuedTask.sort_key)
        if i < len(lst) and lst[i] is task:
            del lst[i]

    def offer_ended(self, task: QueuedTask) -> None:
        """The task's offers ended without an answer: it is unoffered again."""
        lst = self.unoffered[task.channel]
        i = bisect.bisect_left(lst, task.sort_key(), key=QueuedTask.sort_key)
        if not (i < len(lst) and lst[i] is task):
            lst.insert(i, task)

    def position(self, task: QueuedTask) -> int:
        """1-based place among the waiting tasks of its channel (a caller is not behind emails)."""
        key = task.sort_key()
        return 1 + sum(1 for t in self.waiting if t.channel == task.channel and t.sort_key() < key)
