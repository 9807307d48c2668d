"""Calls agents place themselves (issue 12 item 4, issue 13 item 6): the dial plan's outbound
rules, and OutboundCall, one such call from the first INVITE to its row in the store.

Three ways in, one rule set (`decide`):
- the agent's softphone INVITEs a number: the edge digest-authenticates her as for her
  REGISTER and tags the INVITE `X-Ringmaster-Agent` (kamailio.cfg.tmpl route[AGENTCALL]);
  the worker that got it rings back (180) while the customer's leg is dialled, answers her
  leg when the customer answers, and bridges the two;
- click-to-dial (API `POST /api/agents/{agent}/dial`, MQTT `dial`): the controller has a worker
  ring the agent first (her softphone, or her mobile through the mobile trunk), then, once
  she answers, the customer;
- from a chat (API `POST /api/tasks/{id}/call`, MQTT `call`): click-to-dial to the chat's
  customer number, the call linked to the task (`calls.task_ref`).

The customer's leg goes to `sip:NUMBER@EDGE` with `X-Ringmaster-Route: TRUNK`; the edge checks
the number against the rules' patterns for that trunk (table `outbound`, policy.py) before it
sends it to the trunk, whose digest challenge it answers (failure_route[TRUNKAUTH]).

Dispositions (calls.disposition, direction `outbound`): completed (answered, then ended),
no_answer, busy, failed, refused (the rules said no: nothing was dialled).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ringmaster import inputs
from ringmaster import protocol as p
from ringmaster.calls import CallSession
from ringmaster.config import Config, OutboundRule, Trunk
from ringmaster.numberpatterns import sample_numbers as sample_numbers  # still outbound's to callers
from ringmaster.sipuri import identity

NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")
AGENT_RING_TIMEOUT = 30.0  # click-to-dial: how long the agent's own phone rings first

# SIP final answers of the customer's leg -> the call's disposition (RFC 3261 21.4-21.6)
_BUSY = {486, 600}
_NO_ANSWER = {408, 480, 487}


# ---------------------------------------------------------------- rules (pure)


@dataclass(frozen=True)
class Permit:
    """The call may be placed: the rule that lets it, its trunk, the number and the caller ID
    to present ("" for none)."""

    rule: OutboundRule
    trunk: Trunk
    number: str
    caller_id: str


@dataclass(frozen=True)
class Refusal:
    """The call may not be placed, and why (shown to the agent: a SIP Warning, API 400, MQTT errors)."""

    reason: str


def decide(cfg: Config, agent: str, number: str) -> Permit | Refusal:
    """The outbound rules' answer for `agent` dialling `number` (as dialled: '+4512345678').

    The first rule in `outbound` that is for the agent (by name, '*', or her profile) and
    whose `numbers` match decides; the number must also be one its trunk's `allowed` lets
    through. Anything else is a Refusal with the reason."""
    spec = cfg.agents.get(agent)
    if spec is None:
        return Refusal(f"unknown agent {agent[:64]!r}")
    if not NUMBER.match(number):
        return Refusal(f"{number[:40]!r} is not a number (digits, an optional leading +)")
    rules = [r for r in cfg.outbound if r.applies_to(agent, spec.profile)]
    if not rules:
        return Refusal(f"agent {agent!r} may not place calls (no outbound rule is for her)")
    for rule in rules:
        if not rule.matches(number):
            continue
        trunk = cfg.sip.trunks.get(rule.route)
        if trunk is None:
            return Refusal(f"rule {rule.name!r}: route {rule.route!r} is not a trunk")
        if not trunk.allows(number):
            return Refusal(f"{number} is not a number trunk {rule.route!r} allows")
        if rule.caller_id == "trunk":
            cid = trunk.caller_id
        elif rule.caller_id == "agent":
            cid = spec.caller_id or trunk.caller_id
        else:
            cid = rule.caller_id
        return Permit(rule, trunk, number, cid)
    return Refusal(f"{number} is not a number agent {agent!r} may dial (rules: {', '.join(r.name for r in rules)})")


# ---------------------------------------------------------------- one call


def disposition_of(code: int) -> str:
    """The disposition of an outbound call whose customer leg ended with `code` unanswered."""
    if code in _BUSY:
        return "busy"
    if code in _NO_ANSWER:
        return "no_answer"
    return "failed"


def warning_header(text: str) -> tuple[str, str]:
    """A Warning header (RFC 3261 20.43: code 399, miscellaneous) carrying a refusal's reason."""
    clean = "".join(c for c in text if c.isprintable() and c not in '"\\')[:200]
    return ("Warning", f'399 ringmaster "{clean}"')


@dataclass
class OutboundCall(CallSession):
    """One call an agent places. `self.leg` is the agent's leg: the INVITE of her softphone
    (mode "softphone"), or the leg the controller dialled to ring her first ("click").
    `customer_leg` is the leg to the customer through the permit's trunk.

    Life: the customer is dialled (softphone: at once, her phone hears 180 meanwhile; click:
    once her leg is answered) -> answered: the agent's leg is answered if it was not, the two
    are bridged and recorded if the rule says so -> whoever hangs up ends the other leg. An
    unanswered customer leg ends the agent's with the same kind of answer (600 busy, 480 no
    answer, 502 failed: never the 486/500/503 the edge fails over on) and a Warning naming
    the result."""

    agent: str = ""
    number: str = ""
    mode: str = "softphone"
    via: str = "softphone"
    permit: Permit | None = None
    task_ref: str = ""
    agent_uri: str = ""  # click: where her phone is rung
    edge: str = ""  # HOST:PORT of the edge, where the customer's leg is sent (it relays to the trunk)
    customer_leg: str = ""
    agent_answered_at: float | None = None
    customer_answered_at: float | None = None
    rec_path: str | None = None
    on_done: Callable[[OutboundCall], None] = lambda call: None
    _timer: asyncio.TimerHandle | None = None
    _result: tuple[str, str, int, str] | None = None  # disposition, cause, code, by
    _legs_up: set[str] = field(default_factory=set)

    # ------------------------------------------------------------ start

    def begin(self) -> None:
        """Store the call as outbound and start it: dial the customer (softphone) or ring the agent (click)."""
        assert self.permit is not None
        rule = self.permit.rule
        self.store.call_outbound(self.call_id, self.agent, self.number, rule.route, rule.name, self.task_ref)
        self.store.event(self.call_id, "OUTBOUND", agent=self.agent, number=self.number, route=rule.route,
                         rule=rule.name, caller_id=self.permit.caller_id, via=self.via, task=self.task_ref or None)
        self.log = self.log.bind(agent=self.agent)
        self.log.info("outbound.started", number=self.number, route=rule.route, rule=rule.name, via=self.via,
                      caller_id=self.permit.caller_id, task=self.task_ref or None)
        self._legs_up.add(self.leg)
        if self.mode == "softphone":
            self._command(p.Answer(leg=self.leg, code=180))
            self._dial_customer()
        else:
            self.bind_leg(self.leg)
            who = identity(self.number, "", self.identity_host) if self.identity_host else None
            headers = (("X-Ringmaster-Call", self.call_id), ("X-Ringmaster-Outbound", self.number))
            self._command(p.Dial(leg=self.leg, uri=self.agent_uri, extra_headers=headers, from_uri=who or ""))
            self._arm(AGENT_RING_TIMEOUT, self.leg)

    def _dial_customer(self) -> None:
        assert self.permit is not None
        permit = self.permit
        self.customer_leg = f"{self.call_id}-o1"
        self.bind_leg(self.customer_leg)
        self._legs_up.add(self.customer_leg)
        headers: tuple[tuple[str, str], ...] = (("X-Ringmaster-Route", permit.rule.route),)
        who = identity(permit.caller_id, "", self.identity_host) if permit.caller_id else None
        from_uri = ""
        if who is not None and permit.trunk.identity in ("from", "both"):
            from_uri = who
        if who is not None and permit.trunk.identity in ("pai", "both"):
            headers += (("P-Asserted-Identity", who),)
        self.store.event(self.call_id, "DIALLED", number=self.number, route=permit.rule.route, leg=self.customer_leg)
        self._command(p.Dial(leg=self.customer_leg, uri=f"sip:{self.number}@{self.edge}",
                             extra_headers=headers, from_uri=from_uri))
        self._arm(permit.rule.ring_timeout, self.customer_leg)

    def _arm(self, seconds: float, leg: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._ring_timeout, leg)

    def _ring_timeout(self, leg: str) -> None:
        self._timer = None
        if self.ended or self._result is not None:
            return
        if leg == self.customer_leg and self.customer_answered_at is None:
            self.log.info("outbound.no_answer", number=self.number)
            self._finish("no_answer", "customer_no_answer", 480, "ringmaster")
        elif leg == self.leg and self.agent_answered_at is None:
            self.log.info("outbound.agent_no_answer")
            self._finish("no_answer", "agent_no_answer", 480, "ringmaster")

    # ------------------------------------------------------------ worker events

    def on_event(self, msg: p.Message) -> None:
        if isinstance(msg, p.HoldState):
            self._hold_changed(msg)  # hold music for the other party, as on a queue call
            return
        if isinstance(msg, p.TransferRequested):
            self.store.event(self.call_id, "TRANSFER_REFUSED", via=msg.via, target=msg.target, leg=msg.leg)
            return
        if isinstance(msg, p.CallState):
            if msg.leg == self.leg:
                self._agent_state(msg)
            elif msg.leg == self.customer_leg:
                self._customer_state(msg)
        elif isinstance(msg, p.Error):
            self.log.error("outbound.worker_error", command=msg.command, error=msg.message, leg=msg.leg)
            self.store.event(self.call_id, "ERROR", command=msg.command, error=msg.message)

    def _agent_state(self, msg: p.CallState) -> None:
        if msg.state == "confirmed" and self.agent_answered_at is None:
            self.agent_answered_at = time.time()
            if self.mode == "click":
                self.store.event(self.call_id, "AGENT_ANSWERED", agent=self.agent)
                self.log.info("outbound.agent_answered")
                if self._timer is not None:
                    self._timer.cancel()
                self._dial_customer()
            self._maybe_bridge()
        elif msg.state == "disconnected":
            self._legs_up.discard(self.leg)
            if self._result is None:
                if self.customer_answered_at is not None:
                    self._finish("completed", "agent_hangup", msg.code, "agent")
                elif self.mode == "click" and self.agent_answered_at is None:
                    self._finish(disposition_of(msg.code) if msg.code in _BUSY else "no_answer",
                                 "agent_no_answer", msg.code, "agent")
                else:
                    self._finish("no_answer", "agent_cancelled", msg.code, "agent")
            self._maybe_end(msg.code, msg.reason)

    def _customer_state(self, msg: p.CallState) -> None:
        if msg.state == "confirmed" and self.customer_answered_at is None:
            self.customer_answered_at = time.time()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.answered_at = self.customer_answered_at
            self.store.call_answered(self.call_id, self.customer_answered_at)
            self.store.call_agent(self.call_id, self.agent, self.customer_answered_at - self.arrived_at)
            self.log.info("outbound.answered", number=self.number)
            if self.mode == "softphone":
                self._command(p.Answer(leg=self.leg, code=200))
            self._maybe_bridge()
        elif msg.state == "disconnected":
            self._legs_up.discard(self.customer_leg)
            if self._result is None:
                if self.customer_answered_at is not None:
                    self._finish("completed", "customer_hangup", msg.code, "customer")
                else:
                    result = disposition_of(msg.code)
                    self.store.event(self.call_id, "DIAL_FAILED", code=msg.code, reason=msg.reason[:80],
                                     result=result)
                    self._finish(result, f"customer_{result}", msg.code, "customer")
            self._maybe_end(msg.code, msg.reason)

    def _maybe_bridge(self) -> None:
        if self.customer_answered_at is None or self.agent_answered_at is None or self._result is not None:
            return
        if self.queue_agent_leg:
            return  # bridged already
        self.queue_agent_leg = self.customer_leg  # hold handling (CallSession) sees the two as talking
        record = self.permit is not None and self.permit.rule.record
        self._command(p.Bridge(leg_a=self.leg, leg_b=self.customer_leg, direct_media=self.direct_media and not record))
        if record:
            self.rec_path = self._recording_path()
            if self.rec_path is not None:
                rec_id = f"{self.call_id}-or"
                self.core.recording_started(rec_id, self.rec_path, time.monotonic())  # hold marks and stops
                self._command(p.RecordStart(rec_id=rec_id, legs=(self.leg, self.customer_leg),
                                            path=self.rec_path))
                self.store.call_recording(self.call_id, self.rec_path)
        self.store.event(self.call_id, "CONNECT", agent=self.agent, number=self.number, recording=self.rec_path)
        self.log.info("outbound.connected", number=self.number, recording=self.rec_path)

    def _recording_path(self) -> str | None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        try:
            return str(inputs.contained(self.recordings_dir, f"outbound/{day}/{inputs.file_name_part(self.call_id)}.wav"))
        except inputs.InputRefused as exc:
            self.log.error("outbound.recording_refused", reason=exc.reason)
            return None

    # ------------------------------------------------------------ end

    def _finish(self, disposition: str, cause: str, code: int, by: str) -> None:
        """Decide how the call ended (once) and end the legs still up."""
        if self._result is not None:
            return
        self._result = (disposition, cause, code, by)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for cmd in self.core.stop_recording():
            if isinstance(cmd, p.Message):
                self._command(cmd)
        if self.customer_answered_at is not None and self.agent_answered_at is not None:
            self.store.call_talk(self.call_id, time.time() - self.customer_answered_at)
        if self.customer_leg in self._legs_up:
            self._command(p.Hangup(leg=self.customer_leg, code=487 if self.customer_answered_at is None else 200))
        if self.leg in self._legs_up:
            if self.agent_answered_at is None and self.mode == "softphone":
                # never 486/500/503: the edge's failure route takes those from a worker as "try
                # another worker" (failure_route[DSFAIL]) and would place the call again
                code, text = {"busy": (600, "Busy Everywhere"), "no_answer": (480, "No Answer")}.get(
                    disposition, (502, "Call Failed"))
                self._command(p.Reject(leg=self.leg, code=code, reason=text,
                                       headers=(warning_header(f"{self.number}: {disposition.replace('_', ' ')}"),)))
            else:
                self._command(p.Hangup(leg=self.leg, code=487 if self.agent_answered_at is None else 200))

    def _maybe_end(self, code: int, reason: str) -> None:
        if self._legs_up or self.ended:
            return
        self._record_outbound_end()

    def _record_outbound_end(self) -> None:
        disposition, cause, code, by = self._result or ("failed", "unknown", 0, "ringmaster")
        self.ended_at = time.time()
        self.close_holds("hangup")
        self.store.call_ended(self.call_id, self.ended_at, disposition, cause, code, by, [], {})
        talk = (self.ended_at - self.customer_answered_at) if self.customer_answered_at and self.agent_answered_at else 0.0
        self.notify("ended", {"caller": self.caller, "called": self.called, "flow": None, "direction": "outbound",
                              "agent": self.agent, "disposition": disposition, "cause": cause, "code": code, "by": by,
                              "arrived_at": self.arrived_at, "answered_at": self.answered_at,
                              "ended_at": self.ended_at, "variables": {}, "task": self.task_ref or None})
        self.log.info("outbound.ended", disposition=disposition, cause=cause, code=code, by=by, talk=round(talk, 2))
        self.on_done(self)

    # CallSession's entry points the controller calls on every session

    def execute(self, actions: list[Any]) -> None:
        """Only a HangUp reaches an outbound call (the daemon stopping)."""
        if actions:
            self._finish("failed" if self.customer_answered_at is None else "completed", "shutdown", 0, "ringmaster")

    def fail(self, cause: str) -> None:
        if self.ended:
            return
        if self._result is None:
            self._result = ("failed" if self.customer_answered_at is None else "completed", cause, 0, "ringmaster")
        if self._timer is not None:
            self._timer.cancel()
        self._legs_up.clear()
        self._record_outbound_end()

    def legs(self) -> Iterator[str]:
        yield self.leg
        if self.customer_leg:
            yield self.customer_leg
