"""LegAudit: the controller's legs per worker held against what the worker's pjsua2 holds.

Sans-IO: fed snapshots, returns findings; the controller acts on them (issue 10, item 1). The
worker reports its pjsua call-slot count and the leg ids it holds in every `Slots` message (sent
whenever either changes). A difference that lasts longer than `grace` seconds is a finding; a
shorter one is a leg being set up or torn down (a BYE whose answer is awaited holds its slot
for up to the worker's 4 s transaction timeout).

Findings and what the controller does with them:
- UnknownLeg: the worker holds a leg no call of the controller owns (its end was lost, or it
  was dialled for a call that is gone): hung up.
- MissingLeg: a call's leg the worker no longer holds (its end was never reported): the leg is
  closed in the call as ended, so the caller's record and the agent's state move on.
- HiddenSlots: pjsua counts more call slots than the worker has legs (a slot no Python object
  owns can never be used or freed), for `hidden_grace` (60 s): the worker is drained (no new
  calls from the edge) and replaced once its calls end; one worker at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class UnknownLeg:
    worker: str
    leg: str


@dataclass(frozen=True)
class MissingLeg:
    worker: str
    leg: str


@dataclass(frozen=True)
class HiddenSlots:
    worker: str
    slots_used: int
    legs: int


Finding = UnknownLeg | MissingLeg | HiddenSlots


@dataclass
class LegAudit:
    """Differences seen per (worker, kind, leg) with the monotonic time first seen; a finding is
    returned once per difference, when it has lasted `grace` seconds."""

    grace: float = 15.0
    # hidden slots drain a worker: only after a minute. Under overload (bench/run load at 22
    # calls/s on a box saturated by other runs) workers reported pjsua slots beyond their legs
    # for more than 15 s, and draining 56 of them at once turned an overload into an outage.
    hidden_grace: float = 60.0
    since: dict[tuple[str, str, str], float] = field(default_factory=dict)
    reported: set[tuple[str, str, str]] = field(default_factory=set)
    findings_total: int = 0

    def check(self, worker: str, known: set[str], held: set[str], slots_used: int,
              now: float) -> list[Finding]:
        """known: leg ids the controller's calls own on `worker`; held: leg ids the worker
        reports (dials still waiting for a slot included); slots_used: pjsua's count."""
        seen: set[tuple[str, str, str]] = set()
        seen.update((worker, "unknown", leg) for leg in held - known)
        seen.update((worker, "missing", leg) for leg in known - held)
        if slots_used > len(held):
            seen.add((worker, "hidden", ""))
        for key in [k for k in self.since if k[0] == worker and k not in seen]:
            del self.since[key]  # the difference went away by itself
            self.reported.discard(key)
        out: list[Finding] = []
        for key in seen:
            first = self.since.setdefault(key, now)
            wait = self.hidden_grace if key[1] == "hidden" else self.grace
            if now - first < wait or key in self.reported:
                continue
            self.reported.add(key)
            self.findings_total += 1
            _, kind, leg = key
            if kind == "unknown":
                out.append(UnknownLeg(worker, leg))
            elif kind == "missing":
                out.append(MissingLeg(worker, leg))
            else:
                out.append(HiddenSlots(worker, slots_used, len(held)))
        return sorted(out, key=repr)

    def forget(self, worker: str) -> None:
        """The worker is gone (retired, died): its differences are history."""
        for key in [k for k in self.since if k[0] == worker]:
            del self.since[key]
            self.reported.discard(key)
