"""least-talk-time: the agent with the least total talk time (all queues)."""

from __future__ import annotations

import random

from ringmaster.acd.model import AgentState, QueueState
from ringmaster.acd.strategies.base import Strategy


class LeastTalkTime(Strategy):
    name = "least-talk-time"

    def order(self, candidates: list[AgentState], queue: QueueState, now: float, rng: random.Random) -> list[AgentState]:
        return sorted(candidates, key=lambda a: a.talk_time)
