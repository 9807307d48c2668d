"""Keeps the edge's count of each worker's calls honest (sans-IO; the controller does the IO).

Kamailio's dispatcher (algorithm 10) counts the calls it sent to each worker and sends no new
call to a worker at `maxload`. The count is only as good as the edge's view of every call's
end: a call whose BYE never passes the edge (a caller that ignores Record-Route and hangs up
straight at the worker, a BYE lost in a restart) stays counted for `ds_hash_expire` (2 h),
and a worker counted full takes no calls although it holds none. The controller knows what
each worker really holds (its live sessions), so every few seconds it compares.

A difference seen once may be a call in flight (dispatched, its Incoming not reported yet),
so only a worker counted *higher* than it holds at two checks in a row is corrected. The
correction resets the worker's count to zero (dispatcher.remove + dispatcher.add: the RPC has
no "set load"); calls still up then end without decrementing it (the count never goes below
zero), so the count can under-run by those calls for a while. That is harmless: a worker sent
more inbound calls than `max_inbound_calls` answers 486 and the edge fails over.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoadDrift:
    """One correction: the edge counted `edge` calls on `worker`, which held `real`."""

    worker: str
    edge: int
    real: int


@dataclass
class LoadReconciler:
    """Feed it both views each check; it names the workers whose edge count must be reset."""

    suspects: dict[str, int] = field(default_factory=dict)  # worker -> edge count seen too high once
    corrections: int = 0

    def check(self, edge_loads: dict[str, int], real: dict[str, int]) -> list[LoadDrift]:
        """edge_loads: worker -> the dispatcher's DLGLOAD; real: worker -> live inbound calls.
        Workers missing from either side are skipped (starting, dead, or not in the edge's set)."""
        out: list[LoadDrift] = []
        seen: dict[str, int] = {}
        for worker, load in edge_loads.items():
            if worker not in real:
                continue
            held = real[worker]
            if load > held:
                if worker in self.suspects:
                    out.append(LoadDrift(worker, load, held))
                else:
                    seen[worker] = load
        self.suspects = seen
        self.corrections += len(out)
        return out
