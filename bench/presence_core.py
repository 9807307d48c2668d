"""The routing core alone (no IO): 1000 agents, 10,000 queued chat/email tasks over 50 queues.

All tasks wait first; then every agent logs in and each offer is accepted and completed at once,
so the engine keeps offering until the backlog is gone. Each assignment is an offer (reserve,
strategy, skills, capacity and policy checks) plus an accept and a completion.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ringmaster.acd.config import STRATEGY_NAMES, AgentConfig, PresenceProfile, QueueConfig
from ringmaster.acd.engine import Bridge, QueueEngine, Ring


@dataclass
class CoreResult:
    agents: int
    queues: int
    tasks: int
    assignments: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.assignments / self.seconds


def run_core(n_agents: int = 1000, n_queues: int = 50, n_tasks: int = 10_000, seed: int = 1) -> CoreResult:
    rng = random.Random(seed)
    names = [f"a{i}" for i in range(n_agents)]
    members: dict[str, list[str]] = {f"q{i}": [] for i in range(n_queues)}
    for n in names:  # every agent serves three queues
        for q in rng.sample(sorted(members), 3):
            members[q].append(n)
    strategies = [s for s in STRATEGY_NAMES if s != "ring-all"]
    queues = {q: QueueConfig(strategy=strategies[i % len(strategies)], members=m)  # type: ignore[arg-type]
              for i, (q, m) in enumerate(members.items())}
    agents = {n: AgentConfig(mobile=f"+45{i:08d}") for i, n in enumerate(names)}
    presence = {n: PresenceProfile(policy=rng.choice(["exclusive", "concurrent"]),  # type: ignore[arg-type]
                                   capacity={"chat": rng.randint(1, 3), "email": 1}) for n in names}
    e = QueueEngine(queues, agents, rng=random.Random(seed), presence=presence)
    now = 1000.0
    for i in range(n_tasks):
        ch = "chat" if i % 3 else "email"
        e.enqueue(f"t{i}", f"q{rng.randrange(n_queues)}", now, channel=ch,
                  due=now + rng.uniform(0, 3600) if ch == "email" else None)
    start = time.perf_counter()
    pending: list[Ring] = []
    for n in names:
        pending += [a for a in e.agent_login(n, now) if isinstance(a, Ring)]
    assignments = 0
    while pending:
        ring = pending.pop()
        now += 0.0001
        for act in e.ring_answered(ring.call_id, ring.agents[0], now):
            if isinstance(act, Bridge):
                assignments += 1
            elif isinstance(act, Ring):
                pending.append(act)
        pending += [a for a in e.call_ended(ring.call_id, "agent", now) if isinstance(a, Ring)]
    seconds = time.perf_counter() - start
    if e.tasks:
        raise RuntimeError(f"{len(e.tasks)} tasks were never assigned")
    return CoreResult(n_agents, n_queues, n_tasks, assignments, seconds)


if __name__ == "__main__":
    r = run_core()
    print(f"core assignments: {r.assignments} tasks")
    print(f"core assignment rate: {r.per_second:.0f} /s")
