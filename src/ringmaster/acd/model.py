"""The ACD's state: agents, queues and waiting calls (plain dataclasses, no IO)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ringmaster.acd.config import AgentConfig, QueueConfig


@dataclass
class AgentState:
    id: str
    spec: AgentConfig
    logged_in: bool = False
    paused: str | None = None         # pause reason while paused
    registered: bool = False          # softphone registered at the edge (a mobile always counts)
    call: str | None = None           # the call the agent is talking on
    reserved_by: str | None = None    # the call whose offer (ring) holds this agent
    busy_elsewhere: bool = False      # another channel holds the agent (presence: chat, email)
    wrapup_until: float = 0.0
    wrapup_queue: str = ""
    idle_since: float = 0.0
    calls_by_queue: Counter[str] = field(default_factory=Counter)
    talk_time: float = 0.0
    no_answer_streak: int = 0

    def available(self, now: float) -> bool:
        return (self.logged_in and self.paused is None and self.registered and self.call is None
                and self.reserved_by is None and not self.busy_elsewhere and now >= self.wrapup_until)

    def skill(self, name: str) -> int:
        return self.spec.skills.get(name, 0)


@dataclass
class QueuedCall:
    id: str
    queue: str
    priority: int
    enqueued_at: float
    seq: int
    caller: str = ""
    skills: dict[str, int] = field(default_factory=dict)  # needed by this call (from the IVR)
    original_position: int = 0
    ringing: dict[str, float] = field(default_factory=dict)  # agent -> ring start
    ring_deadline: float | None = None
    retry_at: float = 0.0
    next_announce: float | None = None
    agent: str | None = None          # connected agent
    answered_at: float | None = None

    def sort_key(self) -> tuple[int, float, int]:
        return (-self.priority, self.enqueued_at, self.seq)


@dataclass
class QueueState:
    name: str
    spec: QueueConfig
    waiting: list[QueuedCall] = field(default_factory=list)  # in service order
    rr_last: str | None = None        # round-robin memory: the agent offered last
    answered: int = 0
    answered_in_sl: int = 0
    abandoned: int = 0
    avg_hold: float = 0.0             # exponentially weighted wait of answered calls, for estimates

    def position(self, call: QueuedCall) -> int:
        return self.waiting.index(call) + 1
