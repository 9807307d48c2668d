"""PoolPlan: how many media workers to run, decided from what they hold (sans-IO).

A worker costs ~17 MB PSS even asleep (bench/run idle), so a pool sized for the busy hour
wastes most of the box the rest of the day. The pool therefore runs `count` warm workers and
grows, one spawn at a time, whenever fewer than `spare` workers hold no call: the spare ones
take the next callers while the new worker starts (~0.5 s), so no caller waits for a spawn.
A worker above `count` that has held no call for `idle_retire` seconds is retired, newest
first (its ports and RTP slice are the highest), while `spare` free ones remain.

Fed the workers' state and the time; returns Spawn/Retire decisions. The WorkerPool does
the IO (process start/stop) and the edge follows (dispatcher.add / dispatcher.remove).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spawn:
    """Start the worker of this slot and add it to the edge's dispatcher set once ready."""

    worker: str


@dataclass(frozen=True)
class Retire:
    """Take this worker out of the edge's set, then stop it once it holds nothing."""

    worker: str


@dataclass
class WorkerView:
    """What the plan needs of one running worker: its live calls (inbound and legs)."""

    name: str
    calls: int
    ready: bool = True  # False while it starts: counts as spare, takes no decision yet


@dataclass
class PoolPlan:
    """slots: every worker name in order (the first `warm` always run); warm = workers.count,
    spare = workers.spare, idle_retire in seconds."""

    slots: list[str]
    warm: int
    spare: int
    idle_retire: float
    idle_since: dict[str, float] = field(default_factory=dict)

    def decide(self, running: list[WorkerView], now: float) -> list[Spawn | Retire]:
        """One step: at most one Spawn (a burst is met by the spare ones meanwhile; the next
        step spawns again if needed) and at most one Retire."""
        names = {w.name for w in running}
        for w in running:
            if w.calls or not w.ready:
                self.idle_since.pop(w.name, None)
            else:
                self.idle_since.setdefault(w.name, now)
        for gone in set(self.idle_since) - names:
            del self.idle_since[gone]
        free = [w for w in running if w.calls == 0]
        if len(free) < self.spare or len(running) < self.warm:
            slot = next((s for s in self.slots if s not in names), None)
            return [Spawn(slot)] if slot is not None else []
        if len(running) > self.warm and len(free) > self.spare:
            extra = [s for s in reversed(self.slots[self.warm:]) if s in names]
            for name in extra:
                since = self.idle_since.get(name)
                if since is not None and now - since >= self.idle_retire:
                    del self.idle_since[name]
                    return [Retire(name)]
        return []
