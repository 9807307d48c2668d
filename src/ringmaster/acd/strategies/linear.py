"""linear: always from the top of the member list (a hunt group with a fixed order)."""

from __future__ import annotations

import random

from ringmaster.acd.model import AgentState, QueueState
from ringmaster.acd.strategies.base import Strategy


class Linear(Strategy):
    name = "linear"

    def order(self, candidates: list[AgentState], queue: QueueState, now: float, rng: random.Random) -> list[AgentState]:
        return candidates

    def rotation(self, queue: QueueState) -> int | None:
        return 0
