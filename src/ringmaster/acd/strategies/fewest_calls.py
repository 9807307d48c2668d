"""fewest-calls: the agent who has answered the fewest calls from this queue."""

from __future__ import annotations

import random

from ringmaster.acd.model import AgentState, QueueState
from ringmaster.acd.strategies.base import Strategy


class FewestCalls(Strategy):
    name = "fewest-calls"

    def order(self, candidates: list[AgentState], queue: QueueState, now: float, rng: random.Random) -> list[AgentState]:
        return sorted(candidates, key=lambda a: a.calls_by_queue[queue.name])
