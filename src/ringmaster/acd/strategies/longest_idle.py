"""longest-idle: the agent idle the longest since their last call ended (or since login)."""

from __future__ import annotations

import random

from ringmaster.acd.model import AgentState, QueueState
from ringmaster.acd.strategies.base import Strategy


class LongestIdle(Strategy):
    name = "longest-idle"

    def order(self, candidates: list[AgentState], queue: QueueState, now: float, rng: random.Random) -> list[AgentState]:
        return sorted(candidates, key=lambda a: a.idle_since)  # stable: member order breaks ties
