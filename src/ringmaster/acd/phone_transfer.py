"""Attended transfer from the agent's own phone (issue 11 item 2): RFC 5589 7.1 with RFC 3891.

What her phone does: it holds the queue caller (re-INVITE sendonly: the caller hears the
queue's hold music, calls.py), places a second call to the target (another agent's user name,
a number of `transfer_targets`, or a number her outbound rules let her dial), and once they have talked sends REFER on the caller's
dialog with `Refer-To: <sip:target?Replaces=CONSULT-CALL-ID%3Bto-tag%3D..%3Bfrom-tag%3D..>`.

What the server does (PhoneConsults, fed by the controller):

- steering: while she holds a connected queue call, the edge sends her phone's next INVITE to
  the worker holding that call (Kamailio htable `agentcall`, key `w:USER`, set and cleared at
  run time through the edge's RPC; route[AGENTCALL] in kamailio.cfg.tmpl). A pjsua2 worker
  bridges only its own legs (4 at most), and the caller's leg cannot leave its worker, so the
  consult must be there (docs/engine-findings.md 100);
- her phone's INVITE there becomes a consult of her call (acd/consult.py Consult with
  `phone_leg`): the target is rung from that worker as for a consult by the API (an agent is
  held busy for voice meanwhile), her phone hears 180 and is answered when the target answers,
  then her phone and the target talk. 2 legs more on the worker (her phone's, the target's):
  refused with 403 and a Warning giving the reason when they do not fit, when her INVITE
  reached another worker (the edge's entry came too late, or the worker was full), when a
  consult of the call is up already, or when the target is not one the plan lists;
- REFER with Replaces on her queue leg: the worker has answered it 603 already (pjsua2 cannot
  take a REFER without dialling its Refer-To itself, legs.py), the controller carries it out
  when the Replaces Call-ID is her live, answered consult call's: the caller is bridged to the
  target, both her legs are hung up, and it is booked as an attended transfer by the API
  (Consults.finish: ATTENDEDTRANSFER, TRANSFER, the call's agent). Anything else (no consult,
  another dialog, a consult not answered yet) is kept as TRANSFER_REFUSED with the reason and
  the call goes on;
- she hangs up the consult call: the target's leg ends (CONSULT_ENDED cancelled), and her
  resume (re-INVITE sendrecv) bridges her with the caller again, as after any hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

import structlog

from ringmaster import inputs
from ringmaster import protocol as p
from ringmaster.acd.consult import MAX_LEGS, Consult
from ringmaster.calls import identity, sip_user
from ringmaster.outbound import Permit, decide, warning_header

if TYPE_CHECKING:
    from ringmaster.acd.runtime import AcdRuntime, Queued
    from ringmaster.calls import CallSession

log = structlog.get_logger("ringmaster.phone_transfer")

STEERED = "x-ringmaster-steered"  # set by the edge when it sent the INVITE where agentcall said


def replaces_call_id(refer_to: str) -> str | None:
    """The Call-ID a Refer-To URI's Replaces header names (RFC 3891 6.1: `?Replaces=` with
    the Call-ID and its `to-tag`/`from-tag`, escaped as RFC 3261 19.1.1 says), or None."""
    _, sep, headers = refer_to.partition("?")
    if not sep:
        return None
    for header in headers.split("&"):
        name, _, value = header.partition("=")
        if name.strip().lower() == "replaces":
            call_id = unquote(value).split(";", 1)[0].strip()
            return call_id or None
    return None


class PhoneConsults:
    """Consults her phone places, on the consults of the ACD (acd.consults). `legs_promised`
    gives a worker's promised legs (Controller.legs_promised); `steer(user, worker or None)`
    sets or clears the edge's entry for a softphone user; `agent_by_user` maps a softphone
    user name to its agent."""

    def __init__(self, acd: AcdRuntime, legs_promised: Callable[[str], int],
                 steer: Callable[[str, str | None], None], agent_by_user: Callable[[str], str | None]) -> None:
        self.acd = acd
        self.legs_promised = legs_promised
        self.steer = steer
        self.agent_by_user = agent_by_user
        self.steered: dict[str, tuple[str, str, str]] = {}  # agent -> (softphone user, call id, worker)

    # ------------------------------------------------------------ steering her next INVITE

    def observe(self, worker: str, session: CallSession, msg: p.Message) -> None:
        """After each worker event of a call: her hold on a connected queue call steers her
        phone's next INVITE to this worker; her resume (no consult up) or the call leaving
        her clears it."""
        acd = self.acd
        q = acd.calls.get(session.call_id)
        if isinstance(msg, p.HoldState) and q is not None and q.agent and msg.leg == q.agent_leg and q.connected:
            if msg.held:
                self._steer(q.agent, session, worker)
            elif session.call_id not in acd.consults.by_call:
                self._unsteer(q.agent)
        for agent, (_, call_id, _w) in list(self.steered.items()):
            if call_id == session.call_id and (q is None or q.agent != agent or session.ended):
                self._unsteer(agent)

    def _steer(self, agent: str, session: CallSession, worker: str) -> None:
        spec = self.acd.cfg.agents.get(agent)
        if spec is None or spec.softphone is None or agent in self.steered:
            return
        if self.legs_promised(worker) + 2 > MAX_LEGS:
            # pjsua itself would answer a 5th INVITE 486 with no reason; by load, her call
            # reaches another worker, which refuses it with the reason (_refusal)
            session.log.info("phone_consult.not_steered", agent=agent, worker=worker,
                             legs=self.legs_promised(worker))
            return
        self.steered[agent] = (spec.softphone.username, session.call_id, worker)
        session.log.info("phone_consult.steered", agent=agent, to_worker=worker)
        self.steer(spec.softphone.username, worker)

    def _unsteer(self, agent: str) -> None:
        user, _, _ = self.steered.pop(agent, ("", "", ""))
        if user:
            self.steer(user, None)

    def worker_lost(self, worker: str) -> None:
        """A worker died with its calls: her next INVITE must not be sent to it."""
        for agent in [a for a, (_, _, w) in self.steered.items() if w == worker]:
            self._unsteer(agent)

    # ------------------------------------------------------------ her phone's second call

    def incoming(self, worker: str, msg: p.Incoming) -> bool:
        """An INVITE the edge authenticated as an agent's softphone (X-Ringmaster-Agent): if
        that agent is connected to a queue call, it is her consult call (taken here, True);
        else False (an ordinary call she places, Controller._agent_call)."""
        headers = {k.lower(): v for k, v in msg.headers}
        user = headers.get("x-ringmaster-agent", "").strip()
        agent = self.agent_by_user(user) if user else None
        q = self.acd.agent_call(agent) if agent is not None else None
        if agent is None or q is None:
            return False
        session = q.session
        number = inputs.party_id(sip_user(msg.request_uri))  # her phone's text: bounded first
        kind, target, permit = self._target(agent, number)
        refusal = self._refusal(q, worker, kind, target, number, permit)
        if refusal is not None:
            session.log.warning("phone_consult.refused", agent=agent, target=number[:64], reason=refusal,
                                worker=worker, steered=STEERED in headers)
            self.acd.store.event(session.call_id, "TRANSFER_REFUSED", side="agent", agent=agent, kind=kind,
                                 target=number[:200], via="phone", mode="attended", reason=refusal)
            # 403, not 486: the edge takes a worker's 486 as "try another worker" (DSFAIL)
            session.send(worker, p.Reject(leg=msg.leg, code=403, reason="Not Allowed",
                                          headers=(warning_header(refusal),)))
            return True
        self._start(q, kind, target, msg, permit)
        return True

    def _target(self, agent: str, number: str) -> tuple[str, str, Permit | str | None]:
        """(kind, name, permit) her phone dialled: an agent (by name or softphone user), a
        listed external target (by name or number), or a number her outbound rules permit
        (kind "external", the number as its name, the rules' Permit); else kind "" with the
        rules' refusal text as the third item."""
        cfg = self.acd.cfg
        other = number if number in cfg.agents else self.agent_by_user(number)
        if other is not None:
            return "agent", other, None
        found = cfg.transfer_target(number)
        if found is not None:
            return "external", found[0], None
        verdict = decide(cfg, agent, number)
        if isinstance(verdict, Permit):
            return "external", verdict.number, verdict
        return "", number, verdict.reason

    def _refusal(self, q: Queued, worker: str, kind: str, target: str, number: str,
                 permit: Permit | str | None) -> str | None:
        acd = self.acd
        session = q.session
        if worker != session.worker:
            used = self.legs_promised(session.worker)
            if used + 2 > MAX_LEGS:
                return (f"your call is on worker {session.worker}, this call reached {worker}: a consult must be on "
                        f"the caller's worker, which holds {used} of its {MAX_LEGS} legs and has none for it; "
                        "a blind transfer needs none")
            return (f"your call is on worker {session.worker}, this call reached {worker}: a consult must be on "
                    "the caller's worker to be transferred (hold the caller first; a blind transfer needs no consult)")
        if session.call_id in acd.consults.by_call:
            return "a consult of this call is under way: complete or cancel it first"
        if not kind:
            return (f"{number[:40]!r} is neither an agent nor a listed transfer target, and her outbound rules "
                    f"do not permit it ({permit})")
        if kind == "agent" and target == q.agent:
            return "an agent cannot consult herself"
        if not isinstance(permit, Permit):  # the rules' own check stands for a permitted number
            refusal = acd.transfer_refusal(session, kind, target)
            if refusal is not None:
                return refusal
        used = self.legs_promised(worker)
        if used + 2 > MAX_LEGS:  # her phone's leg and the target's
            return (f"no call leg free for the consult: worker {worker} holds {used} of its {MAX_LEGS} legs and "
                    "a consult from the phone needs 2; a blind transfer needs none")
        return None

    def _start(self, q: Queued, kind: str, target: str, msg: p.Incoming, permit: Permit | str | None) -> None:
        """Ring the target from the caller's worker; her phone hears 180 until it answers."""
        acd = self.acd
        session = q.session
        assert q.agent is not None
        now = acd.clock()
        leg = f"{session.call_id}-c{next(acd._ids)}"
        spec = q.spec or acd.cfg.queues[q.queue]
        if kind == "agent":
            uri, ring_timeout = acd.agent_uri(target), spec.ring_timeout
        elif isinstance(permit, Permit):
            uri, ring_timeout = acd.external_uri(permit.number), permit.rule.ring_timeout
        else:
            listed = acd.cfg.transfer_targets[target]
            uri, ring_timeout = acd.external_uri(listed.number), listed.ring_timeout
        c = Consult(session, q.agent, q.agent_leg or "", kind, target, uri, leg, "phone", now,
                    phone_leg=msg.leg, phone_call_id=msg.sip_call_id)
        consults = acd.consults
        consults.by_call[session.call_id] = c
        consults.by_leg[leg] = c
        consults.by_leg[msg.leg] = c
        session.bind_leg(msg.leg)  # her phone's call reports to the queue call from here
        if kind == "agent":
            acd.apply(acd.engine.consult_started(target, c.key, now))
        acd.store.event(session.call_id, "CONSULT", now, agent=q.agent, queue=q.queue, kind=kind, target=target,
                        via="phone", leg=leg, phone_leg=msg.leg)
        session.log.info("acd.consult", agent=q.agent, kind=kind, target=target, via="phone", leg=leg,
                         phone_leg=msg.leg)
        session.send(session.worker, p.Answer(leg=msg.leg, code=180))
        headers: tuple[tuple[str, str], ...] = (("X-Ringmaster-Call", session.call_id),
                                                ("X-Ringmaster-Queue", q.queue), ("X-Ringmaster-Consult", q.agent))
        if isinstance(permit, Permit):
            self._dial_permitted(session, leg, uri, permit)
        else:
            session.dial_agent(leg, uri, headers)
        consults.arm(c, ring_timeout)

    @staticmethod
    def _dial_permitted(session: CallSession, leg: str, uri: str, permit: Permit) -> None:
        """Dial a number her outbound rules permit as her own outbound call would be
        (docs/outbound.md): through the rule's trunk (X-Ringmaster-Route, which the edge checks
        against the rules' patterns), presenting the rule's caller ID, not the queue caller's."""
        session.bind_leg(leg)
        headers: tuple[tuple[str, str], ...] = (("X-Ringmaster-Route", permit.rule.route),)
        who = identity(permit.caller_id, "", session.identity_host) if permit.caller_id else None
        from_uri = who if who is not None and permit.trunk.identity in ("from", "both") else ""
        if who is not None and permit.trunk.identity in ("pai", "both"):
            headers += (("P-Asserted-Identity", who),)
        session.send(session.worker, p.Dial(leg=leg, uri=uri, extra_headers=headers, from_uri=from_uri))

    # ------------------------------------------------------------ her REFER with Replaces

    def refer(self, session: CallSession, msg: p.Message) -> bool:
        """A REFER with Replaces from the connected agent's phone on her queue leg (the worker
        answered it 603): completes her phone's consult when the Replaces names it (True);
        refused with the reason when it names anything else (True); False for any other
        transfer request (CallSession._transfer_refused keeps it)."""
        if not (isinstance(msg, p.TransferRequested) and msg.replaces and msg.via == "refer"):
            return False
        q = self.acd.calls.get(session.call_id)
        if q is None or q.agent is None or msg.leg != q.agent_leg:
            return False
        agent = q.agent
        call_id = replaces_call_id(msg.target)
        c = self.acd.consults.by_call.get(session.call_id)
        if c is None or not c.phone_leg or c.agent != agent:
            reason = f"no consult call of {agent}'s is up on this call"
        elif call_id != c.phone_call_id:
            reason = f"Replaces names no live consult call of {agent}'s"
        else:
            result = self.acd.consults.finish(agent, "complete", "phone")
            if "error" not in result:
                self._unsteer(agent)
                return True
            reason = str(result["error"])
        session.log.warning("phone_consult.refer_refused", agent=agent, replaces=(call_id or "")[:80], reason=reason)
        self.acd.store.event(session.call_id, "TRANSFER_REFUSED", via="refer", target=msg.target[:200],
                             replaces=True, side="agent", mode="attended", agent=agent, reason=reason, leg=msg.leg)
        return True
