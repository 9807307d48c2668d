"""The interface of a routing strategy."""

from __future__ import annotations

import random
from typing import ClassVar

from ringmaster.acd.model import AgentState, QueueState


class Strategy:
    name: ClassVar[str]
    ring_all: ClassVar[bool] = False  # offer to every candidate at once (the edge forks)

    def order(self, candidates: list[AgentState], queue: QueueState, now: float,
              rng: random.Random) -> list[AgentState]:
        """candidates arrive in member order (the queue's `members` list)."""
        raise NotImplementedError
