"""Membership: the running ACD's queue members changed at run time, kept in the store.

The adapter around acd.members (the pure overlay): it reads the kept changes at start, lays them
over the YAML at start and at every reload, carries out the admin's commands (Asterisk's
AddQueueMember, RemoveQueueMember, QueueMemberPenalty: add, remove, tier) on the queue engine at
once, and keeps each change in the store (table queue_members) so a restart comes back with it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from ringmaster.acd import members as m
from ringmaster.acd.config import QueueConfig

if TYPE_CHECKING:
    from ringmaster.acd.runtime import AcdRuntime
    from ringmaster.config import Config
    from ringmaster.store import Store

log = structlog.get_logger("ringmaster.acd")

MEMBER_ACTIONS = {"add": "AddQueueMember", "remove": "RemoveQueueMember", "tier": "QueueMemberPenalty"}


class Membership:
    """acd: the running ACD (its engine changes at once); store: where changes are kept;
    clock: epoch seconds."""

    def __init__(self, acd: AcdRuntime, store: Store, clock: Any = time.time):
        self.acd = acd
        self.store = store
        self.clock = clock
        self.changes: dict[tuple[str, str], m.MemberChange] = {}

    async def load(self, cfg: Config) -> None:
        """At start, before any call or task is routed: the kept changes over the YAML's members."""
        self.changes = await self.store.queue_members()
        self.prune(cfg)
        if self.changes:
            log.info("acd.members_restored", changes=len(self.changes))
            self.acd.reconfigure(cfg, self.effective(cfg))

    def prune(self, cfg: Config) -> None:
        """Forget the changes that name a queue or agent the config no longer has (acd.members.stale)."""
        for c in m.stale(cfg.queues, cfg.agents, self.changes):
            log.warning("acd.member_change_dropped", queue=c.queue, agent=c.agent,
                        reason="the queue or agent is gone from the config, or the YAML no longer lists the member")
            del self.changes[(c.queue, c.agent)]
            self.store.clear_queue_member(c.queue, c.agent)

    def effective(self, cfg: Config) -> dict[str, QueueConfig]:
        """The config's queues with the run-time changes of their members applied."""
        gone = {(c.queue, c.agent) for c in m.stale(cfg.queues, cfg.agents, self.changes)}
        live = {k: c for k, c in self.changes.items() if k not in gone}
        return m.effective_queues(cfg.queues, live)

    def command(self, cfg: Config, queue: str, agent: str, action: str, tier: Any = None, by: str = "") -> dict[str, Any]:
        """add / remove / tier `agent` in `queue` now and keep it: {"queue", "agent", "action",
        "members": [...]} or {"error": reason} (nothing changed)."""
        if queue not in cfg.queues:
            return {"error": f"unknown queue {queue!r}; queues: {', '.join(sorted(cfg.queues))}"}
        if agent not in cfg.agents:
            return {"error": f"unknown agent {agent!r}; agents: {', '.join(sorted(cfg.agents))}"}
        if action not in MEMBER_ACTIONS:
            return {"error": f"unknown action {action!r}: {', '.join(MEMBER_ACTIONS)}"}
        if tier is not None and (not isinstance(tier, int) or isinstance(tier, bool) or not 1 <= tier <= 9):
            return {"error": "tier: a whole number 1-9 (1 rings first; Asterisk's penalty)"}
        if action == "tier" and tier is None:
            return {"error": "tier: a whole number 1-9 (1 rings first; Asterisk's penalty)"}
        now = self.clock()
        try:
            change = m.change_for(cfg.queues[queue], queue, self.changes, agent, action, tier, now, by)
        except ValueError as exc:
            return {"error": str(exc)}
        if change is None:
            self.changes.pop((queue, agent), None)
            self.store.clear_queue_member(queue, agent)
        else:
            self.changes[(queue, agent)] = change
            self.store.set_queue_member(change)
        spec = m.effective_queue(cfg.queues[queue], queue, self.changes)
        self.acd.apply(self.acd.engine.set_members(queue, list(spec.members), self.acd.clock()))
        log.info("acd.member_changed", queue=queue, agent=agent, action=MEMBER_ACTIONS[action], tier=tier, by=by)
        return {"queue": queue, "agent": agent, "action": action, "members": self.view(cfg)[queue]}

    def view(self, cfg: Config) -> dict[str, list[dict[str, object]]]:
        """queue -> its members as they are now (agent, tier, dynamic), in ring order."""
        return {q: [v.as_dict() for v in m.members_view(spec, q, self.changes)] for q, spec in cfg.queues.items()}
