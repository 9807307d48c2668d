"""Consults (attended transfers): the third leg of a queue call, and the worker's leg budget.

An agent connected to a caller consults a target (another agent, or an external number the
dial plan lists in `transfer_targets`): the caller is unbridged and hears the queue's hold
music, a third leg rings the target from the caller's own worker, and once it answers the
agent and the target talk. Then the agent

- completes: the caller is bridged to the target, the agent's leg is hung up and she wraps up
  (queue_log ATTENDEDTRANSFER under her); a consulted agent becomes the call's agent (her
  hang-up is COMPLETEAGENT, the caller's COMPLETECALLER), an external party ends the call
  when it hangs up;
- or cancels: the consult leg is hung up and the agent is back with the caller.

A consult that is not answered (busy, no answer within the ring timeout) or that the target
hangs up ends like a cancel. The caller or the agent hanging up during it ends it too.

Leg budget (issue 11 item 5). A pjsua2 worker holds at most 4 call legs (PJSUA_MAX_CALLS of
the wheel, worker/engine.py MAX_LEGS) and the conference bridge that joins two legs is the
worker's own: the agent and the consulted party can only be bridged if both legs are in the
same worker, and the caller's leg cannot leave it (the edge's dialog is with that worker). A
leg in another worker would need a link between the two workers, which is itself a SIP leg
in each (pjsua2 exposes no media-only RTP stream), so it does not help the full worker. The
consult leg therefore goes into the caller's worker when it has a leg to spare; a worker's
legs are counted as promised (2 per call it holds: the caller and its agent or transfer
leg, whether dialled yet or not, +1 per consult), and while a consult is up the worker takes
no new inbound call that would not fit (Controller._incoming answers 486, the edge fails
over). A worker full of calls (2 calls with their agents: 4 legs) refuses the consult with
the reason; a site that wants every call to be able to consult sets
`workers.max_inbound_calls: 1` (a worker's 4 legs: 1 caller, its agent, a consult, a spare)
at twice the workers. docs/agent-calls.md, docs/engine-findings.md (84).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ringmaster import protocol as p

if TYPE_CHECKING:
    from ringmaster.acd.runtime import AcdRuntime, Queued
    from ringmaster.calls import CallSession

MAX_LEGS = 4  # PJSUA_MAX_CALLS of the PyPI wheel (worker/engine.py MAX_LEGS)
CONSULT_KINDS = ("agent", "external")


@dataclass(eq=False)
class Consult:
    """One consult of a connected queue call: who consults (agent, agent_leg), whom (kind:
    agent | external; target: the agent's or the listed target's name; uri: what was dialled)
    on which leg of the caller's worker, since when (wall clock), answered when."""

    session: CallSession
    agent: str
    agent_leg: str
    kind: str
    target: str
    uri: str
    leg: str
    via: str
    started_at: float
    answered_at: float | None = None
    timer: asyncio.TimerHandle | None = None
    leg_ended: bool = False
    # a consult her phone placed (acd/phone_transfer.py): the phone's own INVITE to the worker
    # (answered when the target answers, bridged to it) and its SIP Call-ID, which her REFER's
    # Replaces names to complete the transfer; "" for a consult by the API or MQTT
    phone_leg: str = ""
    phone_call_id: str = ""

    @property
    def key(self) -> str:
        """The consulted agent's hold on voice in the queue engine while the consult lasts."""
        return f"{self.session.call_id}-consult"


class Consults:
    """The runtime's consults by call id; carries them out with the call's session and the
    queue engine (the one per AcdRuntime)."""

    def __init__(self, acd: AcdRuntime) -> None:
        self.acd = acd
        self.by_call: dict[str, Consult] = {}
        self.by_leg: dict[str, Consult] = {}  # until the leg's end is reported

    def on_worker(self, worker: str) -> int:
        """Consult legs up on `worker` (each is a leg beyond its calls' two; a consult from the
        agent's phone has two: her phone's second call and the target's leg)."""
        return sum(1 for c in self.by_leg.values() if c.session.worker == worker)

    def start(self, agent: str, kind: str, target: str, via: str) -> dict[str, Any]:
        """`agent` consults `target` (kind agent or external) about the caller she talks to.
        Returns {"call_id", "agent", "kind", "target", "mode": "attended", "state": "ringing"}
        or {"error": why} (nothing dialled)."""
        acd = self.acd
        q = acd.agent_call(agent)
        if q is None:
            return {"error": f"agent {agent[:64]!r} is not connected to a call"}
        session = q.session
        refusal = self._refusal(q, kind, target)
        if refusal is not None:
            session.log.warning("acd.consult_refused", agent=agent, kind=kind, target=target[:64], via=via,
                                reason=refusal)
            acd.store.event(session.call_id, "TRANSFER_REFUSED", side="agent", agent=agent, kind=kind,
                            target=target[:200], via=via, mode="attended", reason=refusal)
            return {"error": refusal}
        now = acd.clock()
        leg = f"{session.call_id}-c{next(acd._ids)}"
        spec = q.spec or acd.cfg.queues[q.queue]
        headers: tuple[tuple[str, str], ...] = (("X-Ringmaster-Call", session.call_id),
                                                ("X-Ringmaster-Queue", q.queue), ("X-Ringmaster-Consult", agent))
        if kind == "agent":
            uri, ring_timeout = acd.agent_uri(target), spec.ring_timeout
        else:
            found = acd.cfg.transfer_target(target)
            assert found is not None  # _refusal checked it
            target, listed = found
            uri, ring_timeout = acd.external_uri(listed.number), listed.ring_timeout
        c = Consult(session, agent, q.agent_leg or "", kind, target, uri, leg, via, now)
        self.by_call[session.call_id] = c
        self.by_leg[leg] = c
        if kind == "agent":
            acd.apply(acd.engine.consult_started(target, c.key, now))
        acd.store.event(session.call_id, "CONSULT", now, agent=agent, queue=q.queue, kind=kind, target=target,
                        via=via, leg=leg)
        session.log.info("acd.consult", agent=agent, kind=kind, target=target, via=via, leg=leg)
        session.consult_started(c.agent_leg, acd.moh_files(q.queue))
        session.dial_agent(leg, uri, headers)
        self.arm(c, ring_timeout)
        return {"call_id": session.call_id, "agent": agent, "mode": "attended", "kind": kind, "target": target,
                "state": "ringing"}

    def arm(self, c: Consult, ring_timeout: float) -> None:
        """The consult ends as not answered after `ring_timeout` seconds of ringing."""
        c.timer = asyncio.get_running_loop().call_later(ring_timeout, self._ring_timeout, c)

    def _refusal(self, q: Queued, kind: str, target: str) -> str | None:
        acd = self.acd
        if q.session.call_id in self.by_call:
            return "a consult of this call is under way: complete or cancel it first"
        if kind == "agent":
            if target == q.agent:
                return "an agent cannot consult herself"
            refusal = acd.transfer_refusal(q.session, "agent", target)
        elif kind == "external":
            refusal = acd.transfer_refusal(q.session, "external", target)
        else:
            return f"a consult is to an agent or an external target, not {kind[:16]!r}"
        if refusal is not None:
            return refusal
        used = acd.legs_in_use(q.session.worker) if acd.legs_in_use is not None else 0
        if used + 1 > MAX_LEGS:
            return (f"no call leg free for the consult: worker {q.session.worker} holds {used} of its {MAX_LEGS} "
                    "legs (its calls and their agents); a blind transfer needs none")
        return None

    def finish(self, agent: str, action: str, via: str) -> dict[str, Any]:
        """complete | cancel the consult `agent` started. Returns {"call_id", "agent", "action",
        "kind", "target"} or {"error": why} (nothing changed)."""
        c = next((c for c in self.by_call.values() if c.agent == agent), None)
        if c is None:
            return {"error": f"agent {agent[:64]!r} has no consult under way"}
        if action == "cancel":
            self._end(c, "cancelled", via)
        elif action == "complete":
            if c.answered_at is None:
                return {"error": f"{c.target} has not answered yet: cancel, or complete once answered"}
            self._complete(c, via)
        else:
            return {"error": f"unknown action {action[:16]!r}: complete or cancel"}
        return {"call_id": c.session.call_id, "agent": agent, "action": action, "kind": c.kind, "target": c.target}

    # ------------------------------------------------------------ the consult leg's events

    def owns(self, leg: str) -> bool:
        return leg in self.by_leg

    def leg_event(self, msg: p.Message) -> None:
        """A worker event of a consult leg: answered (agent and target talk) or ended."""
        c = self.by_leg.get(getattr(msg, "leg", ""))
        if c is None or not isinstance(msg, p.CallState):
            return
        if msg.leg == c.phone_leg:
            if msg.state == "disconnected":  # her phone hung up its consult call (or we did)
                self.by_leg.pop(c.phone_leg, None)
                if self.by_call.get(c.session.call_id) is c:
                    self._end(c, "cancelled", "phone", code=msg.code)
            return
        if msg.state == "confirmed" and c.answered_at is None and self.by_call.get(c.session.call_id) is c:
            c.answered_at = self.acd.clock()
            if c.timer is not None:
                c.timer.cancel()
            self.acd.store.event(c.session.call_id, "CONSULT_ANSWERED", c.answered_at, agent=c.agent, kind=c.kind,
                                 target=c.target)
            c.session.log.info("acd.consult_answered", agent=c.agent, target=c.target)
            if c.phone_leg:  # her phone's call is answered now, and it talks to the target
                c.session.send(c.session.worker, p.Answer(leg=c.phone_leg, code=200))
            c.session.consult_answered(c.phone_leg or c.agent_leg, c.leg)
        elif msg.state == "disconnected":
            c.leg_ended = True
            self.by_leg.pop(c.leg, None)
            if self.by_call.get(c.session.call_id) is c:
                outcome = "target_hangup" if c.answered_at is not None else (
                    {486: "busy", 603: "declined", 403: "refused", 404: "not_found"}.get(msg.code, "no_answer"))
                self._end(c, outcome, "sip", code=msg.code)

    def _ring_timeout(self, c: Consult) -> None:
        if c.answered_at is None and self.by_call.get(c.session.call_id) is c:
            self._end(c, "no_answer", "timer")

    # ------------------------------------------------------------ endings

    def _close(self, c: Consult, outcome: str = "") -> None:
        """The consult is over: no timer, the leg hung up (if up), the consulted agent free."""
        self.by_call.pop(c.session.call_id, None)
        if c.timer is not None:
            c.timer.cancel()
        if not c.leg_ended:
            c.session.hangup_leg(c.leg, 200 if c.answered_at is not None else 487)
        self._end_phone_leg(c, outcome)
        if c.kind == "agent":
            self.acd.apply(self.acd.engine.consult_ended(c.target, c.key, self.acd.clock()))

    def _end_phone_leg(self, c: Consult, outcome: str = "") -> None:
        """Her phone's consult call ends with the consult: hung up if answered, else answered
        with the target's result (600 busy, 480 otherwise; never 486/500/503, which the edge
        takes from a worker as "try another worker"), its end event still to come."""
        if not c.phone_leg or c.phone_leg not in self.by_leg:
            return
        if c.answered_at is not None:
            c.session.hangup_leg(c.phone_leg)
        else:
            code, text = (600, "Busy Everywhere") if outcome == "busy" else (480, "Temporarily Unavailable")
            c.session.send(c.session.worker, p.Reject(leg=c.phone_leg, code=code, reason=text))

    def _end(self, c: Consult, outcome: str, via: str, code: int = 0) -> None:
        """Back to the caller: the consult leg ends, agent and caller are bridged again."""
        self._close(c, outcome)
        now = self.acd.clock()
        self.acd.store.event(c.session.call_id, "CONSULT_ENDED", now, agent=c.agent, kind=c.kind, target=c.target,
                             outcome=outcome, via=via, code=code or None,
                             seconds=round(now - c.started_at, 2))
        c.session.log.info("acd.consult_ended", agent=c.agent, target=c.target, outcome=outcome, via=via)
        if not c.phone_leg:
            c.session.consult_back(c.agent_leg)
        # a consult from her phone never touched the caller: the caller's hold (her phone's
        # re-INVITE) decides what the caller hears until she resumes

    def call_ending(self, session: CallSession, how: str) -> None:
        """The caller or the agent hung up during a consult: it ends with the call."""
        c = self.by_call.get(session.call_id)
        if c is None:
            return
        self._close(c)
        self.acd.store.event(session.call_id, "CONSULT_ENDED", agent=c.agent, kind=c.kind, target=c.target,
                             outcome=how, via="sip")

    def worker_lost(self, worker: str) -> None:
        """A worker died with its consults: their legs are gone; consulted agents are free."""
        for c in [c for c in self.by_call.values() if c.session.worker == worker]:
            c.leg_ended = True
            self.by_leg.pop(c.phone_leg, None)  # gone with the worker: nothing to hang up
            self._close(c)
        for leg in [leg for leg, c in self.by_leg.items() if c.session.worker == worker]:
            del self.by_leg[leg]

    def _complete(self, c: Consult, via: str) -> None:
        """The caller goes to the consulted party; the agent's part ends (ATTENDEDTRANSFER)."""
        acd = self.acd
        session = c.session
        q = acd.calls.get(session.call_id)
        if q is None:
            return
        self.by_call.pop(session.call_id, None)
        self.by_leg.pop(c.leg, None)  # the call's own leg from here (its agent's, or the external party's)
        if c.timer is not None:
            c.timer.cancel()
        now = acd.clock()
        acd._record_talk(q, now)
        session.close_holds("transfer")
        acd.store.event(session.call_id, "TRANSFER", now, mode="attended", agent=c.agent, queue=q.queue, kind=c.kind,
                        target=c.target, via=via, consult_seconds=round(now - c.started_at, 2))
        session.log.info("acd.attended_transfer", agent=c.agent, queue=q.queue, kind=c.kind, target=c.target, via=via)
        if c.kind == "agent":
            acd.apply(acd.engine.attended_transfer(session.call_id, ("BRIDGE", c.target), now, c.target, c.key))
            q.agent, q.agent_leg, q.answered_at = c.target, c.leg, now
            acd.store.call_agent(session.call_id, c.target, (q.answered_at or now) - q.enqueued_at)
            acd._call_event("answered", q, agent=c.target, transfer={"mode": "attended", "from": c.agent})
            session.consult_completed(c.agent_leg, c.leg, external_uri="")
        else:
            acd.apply(acd.engine.attended_transfer(session.call_id, ("BRIDGE", c.target), now))
            if acd.calls.pop(session.call_id, None) is not None:
                acd._call_event("ended", q, agent=c.agent, transfer={"mode": "attended", "kind": c.kind,
                                                                     "target": c.target})
            session.consult_completed(c.agent_leg, c.leg, external_uri=c.uri)
        self._end_phone_leg(c)  # her phone's consult call: its part is done too
