"""The controller's live state as typed, read-only values: what /api/queues, /api/agents, the
wallboard and /metrics show. Nothing here is stored; the stored records are read by
ringmaster.reports.

`Controller.live()` builds a LiveState from its parts in one pass (no IO, microseconds per
agent and queue); readers never reach into the controller, the ACD engine or the pool. Each
value is a frozen snapshot: later changes do not show in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ringmaster.acd.config import CHANNELS
from ringmaster.acd.model import AgentState, QueuedTask, QueueState


class ChannelState(StrEnum):
    """One agent's state on one channel (the wallboard's and /metrics' vocabulary)."""

    LOGGED_OUT = "logged-out"
    PAUSED = "paused"
    BUSY = "busy"          # holding a task of this channel
    OFFERED = "offered"    # ringing, or a chat/email offer waiting for accept
    WRAPUP = "wrap-up"
    AVAILABLE = "available"
    BLOCKED = "blocked"    # free on this channel, but another channel holds the agent, or no phone registered


def channel_state(a: AgentState, channel: str, now: float) -> ChannelState:
    """The agent's state on `channel` at `now` (epoch seconds), first match in the order above."""
    if not a.logged_in:
        return ChannelState.LOGGED_OUT
    if a.paused is not None:
        return ChannelState.PAUSED
    if channel in a.holding.values():
        return ChannelState.BUSY
    if channel in a.offered.values() or (channel == "voice" and a.withdrawn):
        return ChannelState.OFFERED  # a withdrawn ring still ringing on the phone is still an offer
    if a.in_wrapup(channel, now):
        return ChannelState.WRAPUP
    return ChannelState.AVAILABLE if a.can_take(channel, now) else ChannelState.BLOCKED


@dataclass(frozen=True)
class LiveChannel:
    """An agent on one channel: its state, capacity (tasks at once), the task ids it holds
    and is offered, and when its wrap-up ends (epoch seconds)."""

    state: ChannelState
    capacity: int
    holding: tuple[str, ...]
    offered: tuple[str, ...]
    wrapup_until: float = 0.0  # epoch seconds; past: not wrapping up


@dataclass(frozen=True)
class LiveAgent:
    """One agent. status: one word for status pages (on-call, ringing, logged-out,
    paused:REASON, unregistered, wrap-up, busy, available: AgentState.status)."""

    name: str
    status: str
    logged_in: bool
    paused: str | None
    registered: bool
    channels: dict[str, LiveChannel]

    @property
    def summary(self) -> str:
        """status without the pause reason (paused:lunch -> paused)."""
        return self.status.split(":", 1)[0]

    @classmethod
    def of(cls, a: AgentState, now: float) -> LiveAgent:
        """The agent's view at `now` (epoch seconds)."""
        return cls(a.id, a.status(now), a.logged_in, a.paused, a.registered,
                   {ch: LiveChannel(channel_state(a, ch, now), a.capacity(ch),
                                    tuple(sorted(t for t, c in a.holding.items() if c == ch)),
                                    tuple(sorted(t for t, c in a.offered.items() if c == ch)),
                                    a.wrapup_until.get(ch, 0.0))
                    for ch in CHANNELS})


@dataclass(frozen=True)
class LiveTask:
    """A call (voice), chat or email waiting in a queue or held by an agent. enqueued_at: epoch
    seconds; agent: who holds it (None: waiting); unroutable: why no logged-in member can take it
    ("" if one can)."""

    id: str
    queue: str
    channel: str
    enqueued_at: float
    agent: str | None
    unroutable: str

    @classmethod
    def of(cls, t: QueuedTask) -> LiveTask:
        """The task's view."""
        return cls(t.id, t.queue, t.channel, t.enqueued_at, t.agent, t.unroutable)


@dataclass(frozen=True)
class LiveQueue:
    """One queue: its members, service-level threshold (seconds), the tasks in it in service
    order, and the answered/abandoned counts since start."""

    name: str
    members: tuple[str, ...]
    service_level: float
    waiting: tuple[LiveTask, ...]
    answered: int
    abandoned: int

    def waiting_on(self, channel: str) -> list[LiveTask]:
        """The tasks of `channel` waiting in the queue (ringing ones too), in service order."""
        return [t for t in self.waiting if t.channel == channel]

    def longest_wait(self, channel: str, now: float) -> float:
        """Seconds the longest-waiting task of `channel` has waited (0.0: none waits)."""
        return max((now - t.enqueued_at for t in self.waiting if t.channel == channel), default=0.0)

    def member_states(self, agents: dict[str, LiveAgent], channel: str | None = None) -> Counter[str]:
        """How many members are in each state: AgentState's summary word (channel None), or
        their ChannelState on `channel`. A member unknown to the ACD counts as "unknown"."""
        out: Counter[str] = Counter()
        for m in self.members:
            a = agents.get(m)
            if a is None:
                out["unknown"] += 1
            else:
                out[a.summary if channel is None else a.channels[channel].state.value] += 1
        return out

    @classmethod
    def of(cls, q: QueueState) -> LiveQueue:
        """The queue's view."""
        return cls(q.name, tuple(m.agent for m in q.spec.members), q.spec.service_level,
                   tuple(LiveTask.of(t) for t in q.waiting), q.answered, q.abandoned)


@dataclass(frozen=True)
class LiveWorker:
    """A media worker: alive or not, and the call legs it holds as the controller knows them."""

    name: str
    alive: bool
    legs: int


@dataclass(frozen=True)
class LiveEdge:
    """The Kamailio edge as last read (every few seconds): its refusal counters by reason
    (auth_failures, malformed, unknown_dialog, ...; auth_bans), the sources banned now, the
    times its per-worker call count was corrected, and whether its event stream is up."""

    events_connected: bool
    counters: dict[str, int]
    banned_sources: int
    load_corrections: int


@dataclass(frozen=True)
class LiveMqtt:
    """The controller's MQTT link: connected, messages waiting to go out, refused payloads."""

    connected: bool
    queued: int
    bad_payloads: int


@dataclass(frozen=True)
class LiveStore:
    """The store's health: ok (takes writes), records pending (memory and spill file), failed
    commit attempts since start, the last batch commit's duration (seconds), and the calls in
    the call log by how they ended (kept as calls end, store.Store.ended_calls)."""

    ok: bool
    pending: int
    write_failures: int
    last_commit_seconds: float
    ended_calls: dict[str, int]


@dataclass(frozen=True)
class LiveRegistration:
    """An upstream registration: its name and whether it is registered now."""

    name: str
    registered: bool


@dataclass(frozen=True)
class LiveVoicemail:
    """Voicemail: each configured box's messages not deleted as (new, heard), kept by
    ringmaster.voicemail as they change (read once at start), and the softphones subscribed to
    their message-waiting lamp (RFC 3842) now."""

    boxes: dict[str, tuple[int, int]]
    mwi_subscriptions: int


@dataclass(frozen=True)
class LiveWebhook:
    """A webhook endpoint's outbox: deliveries waiting (age of the oldest event, seconds; None:
    none waits), in flight, dead letters; delivered and failed attempts since start."""

    name: str
    pending: int
    in_flight: int
    dead: int
    delivered: int
    failed_attempts: int
    oldest_pending_seconds: float | None


@dataclass(frozen=True)
class LiveState:
    """Everything live, at `at` (epoch seconds)."""

    at: float
    agents: dict[str, LiveAgent]
    queues: dict[str, LiveQueue]
    tasks: tuple[LiveTask, ...]        # every open call, chat and email the ACD holds
    calls_in_progress: int
    workers: tuple[LiveWorker, ...]
    worker_restarts: int
    registrations: tuple[LiveRegistration, ...]
    edge: LiveEdge
    store: LiveStore
    mqtt: LiveMqtt | None = None
    voicemail: LiveVoicemail | None = None
    webhooks: tuple[LiveWebhook, ...] = ()


def agents_of(agents: Iterable[AgentState], now: float) -> dict[str, LiveAgent]:
    """name -> LiveAgent for the ACD's agents."""
    return {a.id: LiveAgent.of(a, now) for a in agents}
