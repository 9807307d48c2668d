"""round-robin: member order, starting after the agent offered last (Asterisk's rrmemory)."""

from __future__ import annotations

import random

from ringmaster.acd.model import AgentState, QueueState
from ringmaster.acd.strategies.base import Strategy


class RoundRobin(Strategy):
    name = "round-robin"

    def order(self, candidates: list[AgentState], queue: QueueState, now: float, rng: random.Random) -> list[AgentState]:
        members = [m.agent for m in queue.spec.members]
        if queue.rr_last not in members:
            return candidates
        start = members.index(queue.rr_last) + 1
        rank = {a: (i - start) % len(members) for i, a in enumerate(members)}
        return sorted(candidates, key=lambda a: rank.get(a.id, len(members)))

    def rotation(self, queue: QueueState) -> int | None:
        members = queue.spec.members
        for i, m in enumerate(members):
            if m.agent == queue.rr_last:
                return (i + 1) % len(members)
        return 0
