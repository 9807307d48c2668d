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

    def rotation(self, queue: QueueState) -> int | None:
        """For a hunt strategy whose order is the member list itself, started at some index
        and wrapping round: that index (0..len(members)-1); the engine then looks at members in
        that order and stops at the first who can take the task, instead of checking every
        member (measured: a third of the controller's CPU with 250 agents, finding 90).
        None (the default): the strategy needs every candidate (`order`)."""
        return None
