"""Supervision of live queue calls: a supervisor listens, whispers or barges (issue 11 item 4).

The vocabulary is Asterisk's ChanSpy (spy; option w = whisper, B = barge) and FreeSWITCH's
eavesdrop, whose DTMF 1/2/3 switch a connected eavesdropper between the modes:

- listen:  the supervisor hears caller and agent; nobody hears the supervisor;
- whisper: the supervisor hears both; only the agent hears the supervisor (coaching);
- barge:   everybody hears everybody (a three-way call).

How: the controller rings the supervisor's phone (an agent of `agents` named in
`supervision.supervisors`: its softphone through the edge, or its mobile through the trunk)
from the worker that anchors the call, so the three legs meet in one conference bridge; once
the supervisor answers it sends `Supervise` (protocol.py) and the worker connects the ports
for the mode (worker/engine.py, `_wire_supervision`), taking a direct-media bridge's RTP back
into the worker first. The supervisor changes mode from the API / CLI (the same request
again) or by pressing 1, 2 or 3 on the phone; hanging up ends it, as does the end of the
caller's conversation with the agent (the supervisor's leg is hung up then).

Leg budget (the 4 call legs of one pjsua2 worker, docs/supervision.md): a queue call needs
two legs (its caller's and its agent's; the agent's is reserved from the caller's arrival,
because the ring is dialled from the caller's worker), a supervisor one. A supervision is
refused (409, with the reason) when the anchoring worker cannot hold one more leg by that
count; while a supervisor's leg is up, a new inbound call that would not leave room for its
agent leg is refused by that worker (486: the edge tries the next worker). One supervisor per
call: a second would take the leg another caller's agent needs.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from ringmaster import prompts
from ringmaster import protocol as p

if TYPE_CHECKING:
    from ringmaster.acd.runtime import AcdRuntime
    from ringmaster.calls import CallSession
    from ringmaster.config import Config
    from ringmaster.store import Store

log = structlog.get_logger("ringmaster.supervision")

Mode = Literal["listen", "whisper", "barge"]
MODES: tuple[str, ...] = ("listen", "whisper", "barge")
# FreeSWITCH eavesdrop's keys (mod_dptools eavesdrop: 1 = hear both, 2 = speak to the agent
# ("the channel being eavesdropped"), 3 = three-way); 0 and * change nothing
DTMF_MODES: dict[str, Mode] = {"1": "listen", "2": "whisper", "3": "barge"}
LEGS_PER_WORKER = 4  # worker/engine.py MAX_LEGS: PJSUA_MAX_CALLS of the wheel
LEGS_PER_CALL = 2    # the caller's and the agent's
# the pause reason that keeps a supervisor who is also a queue member from being offered calls
# while her phone is on a supervision (the design's "never double-booked")
SUPERVISING = "supervising"


def room_for_supervisor(inbound_calls: int, supervisor_legs: int, max_legs: int = LEGS_PER_WORKER) -> bool:
    """Whether a worker holding `inbound_calls` calls and `supervisor_legs` supervisors' legs can
    take one more supervisor's leg without taking the leg one of its calls needs for its agent."""
    return LEGS_PER_CALL * inbound_calls + supervisor_legs + 1 <= max_legs


@dataclass(eq=False)
class Supervision:
    """One supervisor on one call: the leg dialled to her phone (`state` ringing, then connected),
    the mode, and how it began (via: api, cli, dtmf)."""

    call_id: str
    session: CallSession
    supervisor: str
    agent: str
    queue: str
    agent_leg: str
    leg: str
    mode: Mode
    via: str
    rung_at: float
    state: Literal["ringing", "connected", "ended"] = "ringing"
    connected_at: float | None = None
    ring_timer: asyncio.TimerHandle | None = None
    # the mode each change came from (for the record), newest last
    changes: list[str] = field(default_factory=list)
    paused_her: bool = False  # we paused her (SUPERVISING) and unpause her at the end


class Supervisions:
    """The live supervisions, by call id; carries out requests and the supervisor legs' events.

    `send(worker, command)` reaches a worker; `bind(worker, leg, session)` routes a leg's events
    to its call; `notice(agent, payload)` publishes on agents/ID/offers (None: no MQTT)."""

    def __init__(self, cfg: Callable[[], Config], acd: AcdRuntime | None, store: Store,
                 send: Callable[[str, p.Message], bool], bind: Callable[[str, str, CallSession], None],
                 inbound_calls: Callable[[], dict[str, int]],
                 notice: Callable[[str, dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.cfg_of = cfg
        self.acd = acd
        self.store = store
        self.send = send
        self.bind = bind
        self.inbound_calls = inbound_calls
        self.notice = notice
        self.clock = clock
        self.live: dict[str, Supervision] = {}
        self._ids = itertools.count(1)

    def legs_on(self, worker: str) -> int:
        """Supervisors' legs (ringing or connected) held by `worker`."""
        return sum(1 for s in self.live.values() if s.session.worker == worker)

    # ------------------------------------------------------------ requests

    def request(self, call_id: str, supervisor: str, mode: str, via: str,
                as_supervisor: str | None = None) -> dict[str, Any]:
        """Join `supervisor` to the live queue call `call_id` in `mode`, or change the mode of the
        supervision she already has on it. as_supervisor: the requester may act only as that
        supervisor (a supervisor-role token that names one). Returns {"call_id", "supervisor",
        "mode", "state", "leg"} or {"error": why, "code": HTTP status} (nothing changed)."""
        cfg = self.cfg_of()
        if mode not in MODES:
            return {"error": f"mode {mode[:16]!r}: listen, whisper or barge", "code": 400}
        spec = cfg.supervision.supervisors.get(supervisor)
        if spec is None:
            known = ", ".join(sorted(cfg.supervision.supervisors)) or "none configured"
            return {"error": f"unknown supervisor {supervisor[:64]!r} (supervision.supervisors: {known})", "code": 400}
        if as_supervisor is not None and supervisor != as_supervisor:
            return {"error": f"this token is supervisor {as_supervisor!r}'s, not {supervisor[:64]!r}'s", "code": 403}
        q = self.acd.calls.get(call_id) if self.acd is not None else None
        if q is None or q.agent is None or not q.agent_leg or not q.connected or q.session.ended:
            return {"error": f"call {call_id[:64]!r} is not a live queue call connected to an agent", "code": 404}
        if spec.queues is not None and q.queue not in spec.queues:
            return {"error": f"supervisor {supervisor!r} does not oversee queue {q.queue!r}", "code": 403}
        current = self.live.get(call_id)
        if current is not None:
            if current.supervisor != supervisor:
                return {"error": f"supervisor {current.supervisor!r} is on this call already", "code": 409}
            return self._change(current, mode, via)  # type: ignore[arg-type]
        if supervisor == q.agent:
            return {"error": f"{supervisor!r} is the call's agent", "code": 409}
        refusal = self._phone_refusal(supervisor)
        if refusal is not None:
            return {"error": refusal, "code": 409}
        worker = q.session.worker
        inbound, legs = self.inbound_calls().get(worker, 0), self.legs_on(worker)
        legs += self.acd.consults.on_worker(worker) if self.acd is not None else 0  # a consult's leg
        if not room_for_supervisor(inbound, legs):
            return {"error": f"worker {worker} is full ({inbound} calls, {legs} supervisor legs of its "
                             f"{LEGS_PER_WORKER} legs): no leg for a supervisor there", "code": 409}
        return self._ring(q.session, supervisor, q.agent, q.queue, q.agent_leg, mode, via)  # type: ignore[arg-type]

    def stop(self, call_id: str, as_supervisor: str | None = None) -> dict[str, Any]:
        """End the supervision of `call_id` (her leg is hung up; SUPERVISE_END how "stopped").
        as_supervisor: only her own. Returns {"call_id", "supervisor", "state": "ended"} or
        {"error", "code"}."""
        sup = self.live.get(call_id)
        if sup is None:
            return {"error": f"nobody supervises call {call_id[:64]!r}", "code": 404}
        if as_supervisor is not None and sup.supervisor != as_supervisor:
            return {"error": f"this token is supervisor {as_supervisor!r}'s, not {sup.supervisor!r}'s", "code": 403}
        self.end(sup, "stopped")
        return {"call_id": call_id, "supervisor": sup.supervisor, "state": "ended"}

    def _phone_refusal(self, supervisor: str) -> str | None:
        if self.acd is None:
            return "no queues"
        st = self.acd.engine.agents.get(supervisor)
        if st is not None and not st.registered:
            return f"supervisor {supervisor!r}'s phone is not registered"
        if self.acd.agent_call(supervisor) is not None:
            return f"supervisor {supervisor!r} is on a call"
        if st is not None and ("voice" in st.offered.values() or st.withdrawn or "voice" in st.holding.values()):
            return f"supervisor {supervisor!r}'s phone is ringing or on a call"
        if any(s.supervisor == supervisor for s in self.live.values()):
            return f"supervisor {supervisor!r} is supervising another call"
        return None

    def _ring(self, session: CallSession, supervisor: str, agent: str, queue: str, agent_leg: str,
              mode: Mode, via: str) -> dict[str, Any]:
        assert self.acd is not None
        cfg = self.cfg_of()
        leg = f"{session.call_id}-s{next(self._ids)}"
        sup = Supervision(session.call_id, session, supervisor, agent, queue, agent_leg, leg, mode, via,
                          rung_at=self.clock())
        self.live[session.call_id] = sup
        session.supervision = sup
        self.bind(session.worker, leg, session)
        st = self.acd.engine.agents.get(supervisor)
        if st is not None and st.logged_in and st.paused is None:
            # a queue member: no call offered to her phone while it is on this one
            sup.paused_her = self.acd.agent_command(supervisor, "pause", SUPERVISING) is None
        uri = self.acd.agent_uri(supervisor)
        # her phone shows whom she is joining: the agent (From) and the call (X- headers)
        headers = (("X-Ringmaster-Call", session.call_id), ("X-Ringmaster-Queue", queue),
                   ("X-Ringmaster-Supervised-Agent", agent), ("X-Ringmaster-Supervise", mode))
        self.send(session.worker, p.Dial(leg=leg, uri=uri, extra_headers=headers,
                                         from_uri=f'"{mode} {agent}" <sip:{agent}@{cfg.sip.host}>'))
        sup.ring_timer = asyncio.get_running_loop().call_later(cfg.supervision.ring_timeout, self._ring_timeout, sup)
        session.log.info("supervision.ring", supervisor=supervisor, agent=agent, queue=queue, mode=mode, via=via,
                         leg=leg)
        return {"call_id": session.call_id, "supervisor": supervisor, "mode": mode, "state": "ringing", "leg": leg}

    def _ring_timeout(self, sup: Supervision) -> None:
        if sup.state == "ringing":
            sup.session.log.info("supervision.no_answer", supervisor=sup.supervisor, leg=sup.leg)
            self.send(sup.session.worker, p.Hangup(leg=sup.leg, code=487))

    def _change(self, sup: Supervision, mode: Mode, via: str) -> dict[str, Any]:
        if mode != sup.mode:
            previous, sup.mode = sup.mode, mode
            sup.changes.append(previous)
            if sup.state == "connected":
                self.send(sup.session.worker, p.Supervise(leg=sup.leg, caller=sup.session.leg, agent=sup.agent_leg,
                                                          mode=mode))
                self.store.event(sup.call_id, "SUPERVISE", self.clock(), supervisor=sup.supervisor, mode=mode,
                                 previous=previous, agent=sup.agent, queue=sup.queue, via=via)
                self._tell_agent(sup, "changed")
            sup.session.log.info("supervision.mode", supervisor=sup.supervisor, mode=mode, previous=previous, via=via)
        return {"call_id": sup.call_id, "supervisor": sup.supervisor, "mode": sup.mode, "state": sup.state,
                "leg": sup.leg}

    # ------------------------------------------------------------ the supervisor's leg

    def on_event(self, sup: Supervision, msg: p.Message) -> None:
        """A worker event of the supervisor's leg: answered, a key pressed (1/2/3: mode),
        ended (hung up, or the ring failed)."""
        if isinstance(msg, p.CallState):
            if msg.state == "confirmed" and sup.state == "ringing":
                self._connected(sup)
            elif msg.state == "disconnected":
                self._leg_ended(sup, msg.code, msg.reason)
        elif isinstance(msg, p.Digit) and sup.state == "connected":
            mode = DTMF_MODES.get(msg.digit)
            if mode is not None:
                self._change(sup, mode, "dtmf")
        elif isinstance(msg, p.Error):
            sup.session.log.error("supervision.leg_error", leg=msg.leg, command=msg.command, error=msg.message)

    def _connected(self, sup: Supervision) -> None:
        sup.state = "connected"
        sup.connected_at = self.clock()
        if sup.ring_timer is not None:
            sup.ring_timer.cancel()
        self.send(sup.session.worker, p.Supervise(leg=sup.leg, caller=sup.session.leg, agent=sup.agent_leg,
                                                  mode=sup.mode))
        self.store.event(sup.call_id, "SUPERVISE", sup.connected_at, supervisor=sup.supervisor, mode=sup.mode,
                         agent=sup.agent, queue=sup.queue, via=sup.via)
        sup.session.log.info("supervision.connected", supervisor=sup.supervisor, mode=sup.mode,
                             ring=round(sup.connected_at - sup.rung_at, 2))
        self._tell_agent(sup, "joined")

    def _leg_ended(self, sup: Supervision, code: int, reason: str) -> None:
        if sup.state == "ended":
            return
        was = sup.state
        self._forget(sup)
        now = self.clock()
        if was == "ringing":
            self.store.event(sup.call_id, "SUPERVISE_FAILED", now, supervisor=sup.supervisor, code=code,
                             reason=reason[:100])
            sup.session.log.info("supervision.failed", supervisor=sup.supervisor, code=code, reason=reason)
            return
        self._record_end(sup, now, "supervisor_hangup")
        sup.session.supervision_ended()

    def end(self, sup: Supervision, how: str) -> None:
        """The conversation the supervisor joined is over (the caller or the agent left, a
        transfer, the worker died): her leg is hung up."""
        if sup.state == "ended":
            return
        was = sup.state
        self._forget(sup)
        self.send(sup.session.worker, p.Hangup(leg=sup.leg, code=487 if was == "ringing" else 200))
        if was == "connected":
            self._record_end(sup, self.clock(), how)
        else:
            self.store.event(sup.call_id, "SUPERVISE_FAILED", self.clock(), supervisor=sup.supervisor, code=0,
                             reason=how)

    def _forget(self, sup: Supervision) -> None:
        sup.state = "ended"
        if sup.paused_her and self.acd is not None:
            sup.paused_her = False
            st = self.acd.engine.agents.get(sup.supervisor)
            if st is not None and st.paused == SUPERVISING:  # not if she paused herself meanwhile
                self.acd.agent_command(sup.supervisor, "unpause")
        if sup.ring_timer is not None:
            sup.ring_timer.cancel()
            sup.ring_timer = None
        if self.live.get(sup.call_id) is sup:
            del self.live[sup.call_id]
        if sup.session.supervision is sup:
            sup.session.supervision = None

    def _record_end(self, sup: Supervision, now: float, how: str) -> None:
        seconds = round(now - (sup.connected_at or now), 2)
        self.store.event(sup.call_id, "SUPERVISE_END", now, supervisor=sup.supervisor, mode=sup.mode,
                         seconds=seconds, how=how)
        sup.session.log.info("supervision.ended", supervisor=sup.supervisor, seconds=seconds, how=how)
        self._tell_agent(sup, "left")

    def _tell_agent(self, sup: Supervision, what: str) -> None:
        """The agent learns of it as `supervision.tell_agent` says: a beep on her leg (never the
        caller's), a message on agents/ID/offers."""
        tell = self.cfg_of().supervision.tell_agent
        if tell.mqtt and self.notice is not None:
            self.notice(sup.agent, {"event": "supervision", "call_id": sup.call_id, "supervisor": sup.supervisor,
                                    "mode": sup.mode, "state": what})
        if tell.beep and what != "left" and not sup.session.ended:
            cfg = self.cfg_of()
            base = Path(cfg.paths.prompts)
            beep = base / f"{cfg.supervision.beep}.wav"
            if beep.is_file():
                self.send(sup.session.worker, p.Play(leg=sup.agent_leg, files=prompts.playable((str(beep),)),
                                                     play_id=f"{sup.call_id}-beep"))
            else:
                sup.session.log.warning("supervision.no_beep", prompt=str(beep))
