"""random: any available agent, uniformly (seeded by the engine's rng, so tests replay)."""

from __future__ import annotations

import random

from ringmaster.acd.model import AgentState, QueueState
from ringmaster.acd.strategies.base import Strategy


class RandomOrder(Strategy):
    name = "random"

    def order(self, candidates: list[AgentState], queue: QueueState, now: float, rng: random.Random) -> list[AgentState]:
        out = list(candidates)
        rng.shuffle(out)
        return out
