"""Queue members changed at run time, laid over the YAML's `members:` (no IO).

An admin adds and removes queue members and sets their tiers while the daemon runs, as
Asterisk's AddQueueMember / RemoveQueueMember / QueueMemberPenalty do (Asterisk's penalty is
Ringmaster's tier: 1 rings first). Each change is one MemberChange per (queue, agent), kept in
the store (table queue_members) and laid over the config's members at every start and reload,
so it outlives both. The YAML stays the base: a change names only what differs from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ringmaster.acd.config import AgentConfig, Member, QueueConfig


@dataclass(frozen=True)
class MemberChange:
    """One run-time change of a queue's members. removed: the agent is no member of `queue`
    even if the YAML lists it; otherwise it is a member at `tier` (1-9), added if the YAML does
    not list it. at: epoch seconds; by: who asked (an API token's name, "cli")."""

    queue: str
    agent: str
    tier: int | None
    removed: bool = False
    at: float = 0.0
    by: str = ""


Changes = Mapping[tuple[str, str], MemberChange]


@dataclass(frozen=True)
class MemberView:
    """A member as `status` and the API show it: dynamic when it (or its tier) comes from a
    run-time change rather than the YAML."""

    agent: str
    tier: int
    dynamic: bool

    def as_dict(self) -> dict[str, object]:
        return {"agent": self.agent, "tier": self.tier, "dynamic": self.dynamic}


def effective_queue(spec: QueueConfig, name: str, changes: Changes) -> QueueConfig:
    """The queue `name` of the YAML (`spec`) with the run-time changes of its members applied:
    YAML members first in their order (a removed one left out, a changed tier applied), then
    the members added at run time in the order they were added."""
    mine = sorted((c for (q, _), c in changes.items() if q == name), key=lambda c: (c.at, c.agent))
    if not mine:
        return spec
    by_agent = {c.agent: c for c in mine}
    members = []
    listed = set()
    for m in spec.members:
        listed.add(m.agent)
        c = by_agent.get(m.agent)
        if c is None:
            members.append(m)
        elif not c.removed:
            members.append(Member(agent=m.agent, tier=c.tier or m.tier))
    for c in mine:
        if c.agent not in listed and not c.removed:
            members.append(Member(agent=c.agent, tier=c.tier or 1))
    return spec.model_copy(update={"members": members})


def effective_queues(queues: Mapping[str, QueueConfig], changes: Changes) -> dict[str, QueueConfig]:
    """Every queue of the YAML with its run-time member changes applied (effective_queue)."""
    return {name: effective_queue(spec, name, changes) for name, spec in queues.items()}


def stale(queues: Mapping[str, QueueConfig], agents: Mapping[str, AgentConfig], changes: Changes) -> list[MemberChange]:
    """The changes that name a queue or an agent the config no longer has (to be dropped: a
    queue or agent of the same name added later starts from the YAML alone), and removals of
    members the YAML no longer lists (nothing left to remove)."""
    out = []
    for (q, a), c in changes.items():
        if q not in queues or a not in agents:
            out.append(c)
        elif c.removed and all(m.agent != a for m in queues[q].members):
            out.append(c)
    return out


def members_view(spec: QueueConfig, name: str, changes: Changes) -> list[MemberView]:
    """The queue's effective members, each marked dynamic or not, in ring order."""
    eff = effective_queue(spec, name, changes)
    return [MemberView(m.agent, m.tier, (name, m.agent) in changes) for m in eff.members]


def change_for(spec: QueueConfig, name: str, changes: Changes, agent: str, action: str,
               tier: int | None, at: float, by: str) -> MemberChange | None:
    """The change that does `action` (add, remove, tier) for `agent` in queue `name`, given the
    YAML's `spec` and the changes so far: a MemberChange to store, or None when the change
    goes back to exactly what the YAML says (its row is deleted). ValueError with the reason
    when the action does not apply (adding a member, removing or re-tiering a non-member)."""
    current = {m.agent: m.tier for m in effective_queue(spec, name, changes).members}
    in_yaml = {m.agent: m.tier for m in spec.members}
    if action == "add":
        if agent in current:
            raise ValueError(f"agent {agent!r} is already a member of queue {name!r} (tier {current[agent]})")
        tier = tier or 1
        if in_yaml.get(agent) == tier:
            return None  # a YAML member removed earlier is back as the YAML has it
        return MemberChange(name, agent, tier, False, at, by)
    if agent not in current:
        raise ValueError(f"agent {agent!r} is not a member of queue {name!r}")
    if action == "remove":
        return MemberChange(name, agent, None, True, at, by) if agent in in_yaml else None
    if action == "tier":
        if tier is None:
            raise ValueError("tier: 1-9")
        if in_yaml.get(agent) == tier:
            return None
        old = changes.get((name, agent))
        return MemberChange(name, agent, tier, False, old.at if old is not None else at, by)
    raise ValueError(f"unknown action {action!r}: add, remove or tier")
