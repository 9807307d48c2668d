"""ring-all: every available member rings at once; the first to answer takes the call."""

from __future__ import annotations

import random

from ringmaster.acd.model import AgentState, QueueState
from ringmaster.acd.strategies.base import Strategy


class RingAll(Strategy):
    name = "ring-all"
    ring_all = True

    def order(self, candidates: list[AgentState], queue: QueueState, now: float, rng: random.Random) -> list[AgentState]:
        return candidates
