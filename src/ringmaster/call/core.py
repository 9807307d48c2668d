"""CallCore: one inbound call's state machine, sans-IO (events in, outputs out).

The third core beside the queue engine (acd/engine.py) and the flow interpreter
(flows/interpreter.py). It holds one call's phase and the state of each of its legs (the
caller's, agents' rings and the connected agent's, a transfer target's) and decides what
the record says: when the call was answered, how it ended (the disposition), which agent's
leg won a ring-all race, hold stretches, transfer results, a recording that failed to start,
a worker that died. It reads no clock (time is `now`, monotonic seconds, passed in), sends
nothing and writes nothing: every method returns a list of outputs, in order:

- worker commands (`protocol` messages, all for the call's own worker),
- record events (`records.py`) for the store writer,
- notices for the adapter (`FeedFlow`, `TransferResult`, `QueueExit`, `EndSupervision`),
- `IllegalEvent`: an event the current phase or leg state does not allow (a second end, an
  answer on an ended leg, a hang-up of a leg already ending); the adapter logs and counts it.

Deadlines (a transfer target's ring timeout, a voicemail message's maximum length) are kept
here and exposed as `next_deadline()`; the adapter calls `tick(now)` when it passes, as
AcdRuntime does for `QueueEngine.next_deadline`.

`calls.CallSession` is the adapter: worker events and the flow's and queue runtime's
requests in, the outputs applied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum

from ringmaster import protocol as p
from ringmaster.call import records as r
from ringmaster.flows.actions import Answered, Connect, ConnectEnded, FlowEvent, HangUp, MessageRecorded

# SIP final responses of an unanswered transfer target -> the transfer step's result
# (RFC 3261 21.4: 486 Busy Here, 487 Request Terminated (our CANCEL at the ring timeout),
# 408 Request Timeout, 480 Temporarily Unavailable, 404 Not Found, 603 Decline)
TRANSFER_RESULTS = {486: "busy", 487: "no_answer", 408: "no_answer", 480: "no_answer",
                    404: "not_found", 603: "declined"}


class Phase(StrEnum):
    """Where the call is. ENDING: we decided to end it (Reject or BYE sent) and wait for the
    worker's `disconnected`; ENDED: the record is closed."""

    RINGING_IN = "ringing_in"      # the caller's INVITE is in, not answered
    IN_FLOW = "in_flow"            # answered, walking the dial plan
    QUEUED = "queued"              # waiting in a queue, no agent's phone rings
    OFFERING = "offering"          # waiting, one or more agents' phones ring
    CONNECTING = "connecting"      # an agent answered, the bridge is asked, the worker has not joined them
    BRIDGED = "bridged"            # caller and agent (or transfer target) talk
    HELD = "held"                  # a party of the conversation holds
    TRANSFERRING = "transferring"  # a transfer target's phone rings (the caller hears music)
    ENDING = "ending"
    ENDED = "ended"


class LegRole(StrEnum):
    """What a leg is to the call (a StrEnum: stored and logged as its value)."""

    CALLER = "caller"
    AGENT = "agent"                      # an agent's ring (one agent, or a ring-all fork), then the connected agent
    TRANSFER_TARGET = "transfer_target"  # the B leg of a transfer step or a blind transfer out


class LegState(StrEnum):
    """A leg's SIP state as the call sees it (RFC 3261 17.1.1: calling, proceeding, completed;
    the worker's CallState names)."""

    DIALLING = "dialling"  # Dial sent (or the caller's INVITE in), no provisional answer yet
    RINGING = "ringing"    # 180/183 (early) or calling
    ANSWERED = "answered"
    HELD = "held"
    ENDING = "ending"      # our Hangup / Reject is out
    ENDED = "ended"        # the worker reported `disconnected`


_DONE = (LegState.ENDING, LegState.ENDED)
_TALKING = (Phase.CONNECTING, Phase.BRIDGED, Phase.HELD)


@dataclass
class Leg:
    """One leg of the call: its id (the worker's), role, state, the agents a queue's ring
    reaches on it, when it answered (monotonic s) and whether it carried the conversation."""

    id: str
    role: LegRole
    state: LegState = LegState.DIALLING
    agents: tuple[str, ...] = ()
    answered_at: float | None = None
    bridged: bool = False  # carried the call's conversation (its end is charged)


@dataclass(frozen=True)
class IllegalEvent:
    """An event the call's state does not allow: `event` names it, `phase` and `leg_state`
    are the state it met. Nothing was changed."""

    event: str
    phase: str
    leg: str = ""
    leg_state: str = ""
    detail: str = ""


@dataclass(frozen=True)
class FeedFlow:
    """Hand `event` to the call's FlowRun (the adapter ignores it when the call is ending)."""

    event: FlowEvent


@dataclass(frozen=True)
class TransferResult:
    """An ACD blind transfer out was not answered (`result`: busy, no_answer, ...): the queue
    runtime takes the caller back (its `on_failed`)."""

    result: str


@dataclass(frozen=True)
class QueueExit:
    """The caller is gone while the queue runtime holds the call: `how` = "connected" (he had
    an agent: COMPLETECALLER, or ABANDON if the BYE crossed the bridge) or "waiting" (ABANDON)."""

    how: str


@dataclass(frozen=True)
class EndSupervision:
    """The conversation a supervisor joined is over (`how`)."""

    how: str


Output = p.Message | r.Record | FeedFlow | TransferResult | QueueExit | EndSupervision | IllegalEvent


@dataclass
class Hold:
    """A hold stretch under way: since `started` (monotonic s), by `party`."""

    started: float
    party: str


@dataclass
class Recording:
    """The conversation's recording: `kind` "queue" (an agent's part, or an outbound call) or
    "transfer" (a flow's recorded transfer)."""

    rec_id: str
    path: str
    started: float
    kind: str


@dataclass
class Transfer:
    """The transfer target's leg (the B leg), dialled to `uri`; times monotonic s."""

    leg: str
    uri: str
    record_path: str | None = None  # record the bridge into this file (a flow's `record: true`)
    deadline: float | None = None   # ring timeout (monotonic)
    answered_at: float | None = None
    acd: bool = False               # an agent's blind transfer out: failure goes back to her queue


@dataclass
class Message:
    """A voicemail message being recorded into `path` for `box`; started and deadline monotonic s."""

    rec_id: str
    box: str
    path: str
    started: float
    deadline: float


@dataclass
class CallCore:
    """One call's state. Methods take `now` (monotonic seconds) and return `list[Output]`.

    Fields the adapter sets before use: `direct_media` (sip.direct_media) and
    `default_music` (the plan's hold music for a party left alone by a hold outside a queue;
    a queue's own music, given by `enqueued`, comes first)."""

    call_id: str
    caller_leg: str
    direct_media: bool = False
    default_music: tuple[str, ...] = ()
    queue_music: tuple[str, ...] = ()
    phase: Phase = Phase.RINGING_IN
    legs: dict[str, Leg] = field(default_factory=dict)
    answered_at: float | None = None
    hangup: HangUp | None = None   # our decision to end the call
    disposition: str = ""          # decided before the end (rejected)
    queue: str | None = None       # the queue the caller waits in
    agent_leg: str = ""            # the connected (or connecting) agent's leg
    ended_by_agent: bool = False
    abandoned_in_queue: bool = False
    # the queue turned the caller out unserved (EXITEMPTY, EXITWITHTIMEOUT, FULL, JOINEMPTY) and
    # nothing served it since (an agent of an overflow queue, a message, a callback, a transfer):
    # its end is `abandoned`, not `completed`, whoever hangs up
    unserved_exit: str = ""
    holds: dict[str, Hold] = field(default_factory=dict)
    hold_seconds: float = 0.0
    hold_count: int = 0
    hold_play_id: str = ""
    recording: Recording | None = None
    recording_paused_by_operator: bool = False
    transfer: Transfer | None = None
    message: Message | None = None
    consulting: bool = False
    ended_at: float | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.legs.setdefault(self.caller_leg, Leg(self.caller_leg, LegRole.CALLER, LegState.RINGING))

    # ------------------------------------------------------------ reading

    @property
    def ended(self) -> bool:
        """The record is closed."""
        return self.phase is Phase.ENDED

    @property
    def ending(self) -> bool:
        """We decided to end the call, or it ended."""
        return self.hangup is not None or self.phase in (Phase.ENDING, Phase.ENDED)

    @property
    def hold_music(self) -> tuple[str, ...]:
        """Files the party left alone by a hold hears: the queue's music, else the plan's."""
        return self.queue_music or self.default_music

    @property
    def b_leg(self) -> str:
        """The transfer target's leg until it ends ("" when none)."""
        return self.transfer.leg if self.transfer is not None else ""

    @property
    def rec_id(self) -> str:
        """The running recording's id ("" when none)."""
        return self.recording.rec_id if self.recording is not None else ""

    def leg_state(self, leg: str) -> LegState | None:
        """The state of `leg`, None for a leg the call does not know."""
        x = self.legs.get(leg)
        return x.state if x is not None else None

    def next_deadline(self) -> float | None:
        """The earliest monotonic time `tick` has something to do, or None."""
        times = []
        if self.transfer is not None and self.transfer.deadline is not None and self.transfer.answered_at is None:
            times.append(self.transfer.deadline)
        if self.message is not None:
            times.append(self.message.deadline)
        return min(times) if times else None

    def tick(self, now: float) -> list[Output]:
        """Deadlines due at `now`: an unanswered transfer target is CANCELled (487); a voicemail
        message at its maximum length is stopped and handed to the flow."""
        out: list[Output] = []
        t = self.transfer
        if t is not None and t.answered_at is None and t.deadline is not None and now >= t.deadline:
            t.deadline = None
            out += self._end_leg_quiet(t.leg, 487)
        if self.message is not None and now >= self.message.deadline:
            out += self.stop_message(now, feed=True)
        return out

    def _illegal(self, event: str, leg: str = "", detail: str = "") -> list[Output]:
        st = self.legs.get(leg)
        return [IllegalEvent(event, self.phase.value, leg, st.state.value if st is not None else "", detail)]

    def _next(self, prefix: str) -> str:
        return f"{self.call_id}-{prefix}{next(self._ids)}"

    # ------------------------------------------------------------ the caller's leg

    def caller_state(self, state: str, code: int, reason: str, now: float) -> list[Output]:
        """The worker's CallState of the caller's leg. "connecting" (our 200 OK is out) or
        "confirmed" answers the call; "disconnected" ends it and decides the disposition."""
        leg = self.legs[self.caller_leg]
        if state in ("connecting", "confirmed"):
            if leg.state in _DONE and self.phase is Phase.ENDED:
                return self._illegal(f"caller_{state}", self.caller_leg, "the call has ended")
            if self.answered_at is not None:
                return []  # connecting, then confirmed: one answer
            self.answered_at = now
            leg.state, leg.answered_at = LegState.ANSWERED, now
            if self.phase is Phase.RINGING_IN:
                self.phase = Phase.IN_FLOW
            return [r.CallAnswered(now), FeedFlow(Answered())]
        if state == "disconnected":
            if self.phase is Phase.ENDED:
                return self._illegal("caller_disconnected", self.caller_leg, "the call has ended")
            leg.state = LegState.ENDED
            out = self._end_transfer_leg()
            out += self.stop_message(now, feed=False)  # hanging up is how most messages end
            out += self._leave_queue(now, "caller_hangup")
            return out + self._ended(code, now)
        if state in ("calling", "early") and leg.state is LegState.DIALLING:
            leg.state = LegState.RINGING
        return []

    def reject(self, code: int, cause: str) -> list[Output]:
        """Refuse the caller's INVITE with `code` (no route, no capacity): disposition rejected."""
        if self.ending:
            return self._illegal("reject", self.caller_leg, "already ending")
        self.hangup = HangUp(code, cause)
        self.disposition = "rejected"
        self.phase = Phase.ENDING
        self.legs[self.caller_leg].state = LegState.ENDING
        return [p.Reject(leg=self.caller_leg, code=code)]

    def hang_up(self, action: HangUp, now: float) -> list[Output]:
        """End the call (a flow's hang-up step, the agent's hang-up, the transfer target's):
        the transfer leg goes, the caller gets BYE, or a final answer if never answered
        (`action.code` if it is one (>= 300), else 480; disposition rejected)."""
        if self.ending:
            return self._illegal("hang_up", self.caller_leg, f"already ending ({action.cause})")
        self.hangup = action
        out = self._end_transfer_leg()
        self.phase = Phase.ENDING
        self.legs[self.caller_leg].state = LegState.ENDING
        if self.answered_at is None:
            self.disposition = "rejected"
            out.append(p.Reject(leg=self.caller_leg, code=action.code if action.code >= 300 else 480))
        else:
            out.append(p.Hangup(leg=self.caller_leg))
        return out

    def worker_lost(self, cause: str, now: float) -> list[Output]:
        """The worker holding the call is gone (it died, or the daemon stops): the call is
        closed as failed. The legs keep their states: the queue runtime still hangs up the
        agent's (at a stop the worker is there to do it; a dead one never hears it, and none of
        its legs reports again). A call that ended already is illegal here."""
        if self.phase is Phase.ENDED:
            return self._illegal("worker_lost", detail=cause)
        if self.transfer is not None:
            self.transfer.deadline = None
        out = self.stop_message(now, feed=False)
        out.append(EndSupervision("failed"))
        out += self._leave_queue(now, "caller_hangup")
        return out + self._close("failed", cause, 0, "ringmaster", now)

    def _ended(self, code: int, now: float) -> list[Output]:
        """The caller's leg ended: who ended the call and how it is stored.

        - the transfer target hung up after talking: completed, by target;
        - the agent hung up (we then sent BYE): completed, by agent;
        - we ended it (a flow's hang-up, a reject, a callback taken): the decided disposition,
          else abandoned if the queue had turned the caller out unserved, else completed;
        - the caller hung up: completed if he was served (answered and not left waiting: in a
          queue, or with the agent's 200 crossing his BYE before the worker joined them, or
          turned out of a queue by EXITEMPTY/EXITWITHTIMEOUT with nothing since), else
          abandoned."""
        if self.hangup is not None and self.hangup.cause == "transfer_target_hangup":
            return self._close("completed", self.hangup.cause, code, "target", now)
        if self.ended_by_agent:
            return self._close("completed", "agent_hangup", code, "agent", now)
        if self.hangup is not None:
            disposition = self.disposition or ("abandoned" if self.unserved_exit else "completed")
            return self._close(disposition, self.hangup.cause, code, "ringmaster", now)
        served = self.answered_at is not None and not self.abandoned_in_queue and not self.unserved_exit
        return self._close("completed" if served else "abandoned", "caller_hangup", code, "caller", now)

    def _close(self, disposition: str, cause: str, code: int, by: str, now: float) -> list[Output]:
        self.phase = Phase.ENDED
        self.ended_at = now
        return [r.CallEnded(now, disposition, cause, code, by)]

    def _leave_queue(self, now: float, how: str) -> list[Output]:
        """The caller's end as the queue runtime must hear it; holds close, the queue's
        recording stops. A caller whose agent was chosen but not yet joined by the worker (his
        BYE crossed her 200) never talked to her: abandoned, as Asterisk's app_queue logs it."""
        out: list[Output] = [EndSupervision(how)]
        out += self.close_holds(now, how)
        out += self._stop_recording("queue")
        if self.agent_leg and not self.ended_by_agent:
            if self.phase is Phase.CONNECTING:
                self.abandoned_in_queue = True
            self.agent_leg = ""
            out.append(QueueExit("connected"))
        elif self.queue is not None:
            self.queue = None
            self.abandoned_in_queue = True
            out.append(QueueExit("waiting"))
        return out

    # ------------------------------------------------------------ queue (from AcdRuntime)

    def enqueued(self, queue: str, hold_music: tuple[str, ...]) -> list[Output]:
        """The caller waits in `queue` (hearing `hold_music`, also what the other party hears
        when one holds later)."""
        self.queue = queue
        self.queue_music = hold_music
        if not self.ending:
            self.phase = Phase.QUEUED
        return []

    def left_queue(self, reason: str) -> list[Output]:
        """The caller left the queue unserved (LeaveQueue's reason). Only the exit key
        ("key") is the caller's own choice; any other exit makes the call's end abandoned
        unless something serves him later."""
        self.queue = None
        if reason != "key":
            self.unserved_exit = reason
        if not self.ending:
            self.phase = Phase.IN_FLOW
        return [p.StopPlay(leg=self.caller_leg)]

    def served(self) -> None:
        """The caller got what he asked for without an agent (a callback was queued)."""
        self.unserved_exit = ""

    def left_for_callback(self) -> list[Output]:
        """The waiting caller took a callback: his place passes to it (the queue runtime has
        moved it), he is served and hears the confirmation, then we hang up."""
        self.queue = None
        self.unserved_exit = ""
        if not self.ending:
            self.phase = Phase.IN_FLOW
        return []

    def leg_dialled(self, leg: str, agents: tuple[str, ...] = ()) -> list[Output]:
        """An agent's leg is dialled from the call's worker (a ring, a consult): it is the
        call's from here. A ring while the caller waits makes the phase OFFERING."""
        if leg in self.legs:
            return self._illegal("leg_dialled", leg, "leg id used twice")
        self.legs[leg] = Leg(leg, LegRole.AGENT, agents=agents)
        if self.phase is Phase.QUEUED and agents:
            self.phase = Phase.OFFERING
        return []

    def other_leg_state(self, leg: str, state: str, code: int, now: float) -> list[Output]:
        """CallState of one of the call's agent legs (rings, the connected agent, consults):
        the leg's state follows; an event after the leg ended is illegal. Legs the call does
        not know (a supervisor's, which supervision.py owns) return nothing."""
        x = self.legs.get(leg)
        if x is None or x.role is LegRole.CALLER or (self.transfer is not None and leg == self.transfer.leg):
            return []
        if x.state is LegState.ENDED:
            return self._illegal(f"leg_{state}", leg, "the leg has ended")
        if state == "disconnected":
            x.state = LegState.ENDED
            if self.phase is Phase.OFFERING and not any(
                    o.role is LegRole.AGENT and o.state not in _DONE and o.agents for o in self.legs.values()):
                self.phase = Phase.QUEUED
            return [r.LegEnded(leg, x.role.value, code, x.bridged)]
        if state in ("calling", "early") and x.state is LegState.DIALLING:
            x.state = LegState.RINGING
        elif state in ("connecting", "confirmed") and x.state in (LegState.DIALLING, LegState.RINGING):
            x.state, x.answered_at = LegState.ANSWERED, now
        elif state == "confirmed" and x.state is LegState.ENDING:
            # the phone's 200 crossed our CANCEL (RFC 3261 9.1: a CANCEL after the final
            # response has no effect): the leg is up now, and only a BYE ends it
            return [p.Hangup(leg=leg, code=200)]
        return []

    def ring_answered(self, leg: str) -> tuple[bool, list[Output]]:
        """An agent's ring leg answered: may it take the call? The first answered leg the
        queue bridges wins; a leg that answers when another agent already has the call, or the
        caller is gone, loses the ring-all race: it is hung up at once and never charged.
        Returns (may take it, outputs)."""
        x = self.legs.get(leg)
        if x is None or x.role is not LegRole.AGENT:
            return False, self._illegal("ring_answered", leg, "not an agent leg of this call")
        if x.state is LegState.ENDING:
            return False, []  # the answer crossed our hang-up: other_leg_state sent the BYE
        if x.state is LegState.ENDED:
            return False, self._illegal("ring_answered", leg, "the leg has ended")
        if (self.agent_leg and self.agent_leg != leg) or self.ending:
            return False, self.end_leg(leg, 200)
        return True, []

    def end_leg(self, leg: str, code: int = 200) -> list[Output]:
        """Hang up one of the call's other legs (a withdrawn ring: 487 CANCEL; an answered one:
        BYE). A leg already ending or ended is illegal (its Hangup was sent)."""
        x = self.legs.get(leg)
        if x is None:
            return [*self._illegal("end_leg", leg, "not a leg of this call"), p.Hangup(leg=leg, code=code)]
        if x.state in _DONE:
            return self._illegal("end_leg", leg, "already ending")
        x.state = LegState.ENDING
        return [p.Hangup(leg=leg, code=code)]

    def _end_leg_quiet(self, leg: str, code: int = 200) -> list[Output]:
        x = self.legs.get(leg)
        if x is not None and x.state in _DONE:
            return []
        if x is not None:
            x.state = LegState.ENDING
        return [p.Hangup(leg=leg, code=code)]

    def agent_bridging(self, leg: str, recording: str | None, now: float) -> list[Output]:
        """The queue gave the call to the agent on `leg` (its Bridge action): join the caller
        to her (the hold music stops), record if the queue says so. The call is answered for
        the record when the worker says they are joined (`bridged`)."""
        x = self.legs.get(leg)
        if x is None or x.state in _DONE or self.ending:
            return self._illegal("agent_bridging", leg, "no live leg to bridge")
        self.queue = None
        self.unserved_exit = ""
        self.agent_leg = leg
        x.bridged = True
        self.phase = Phase.CONNECTING
        out: list[Output] = [p.Bridge(leg_a=self.caller_leg, leg_b=leg,
                                      direct_media=self.direct_media and not recording)]
        if recording:
            out += self._start_recording(recording, (self.caller_leg, leg), "queue", "qr", now)
        return out

    def bridged(self, other: str) -> bool:
        """The worker's Bridged (caller <-> `other`): True when it joins the connecting agent
        (the queue's CONNECT is written then); a re-bridge after a hold, or a transfer's, is
        not news."""
        if other and other == self.agent_leg and self.phase is Phase.CONNECTING:
            self.phase = Phase.BRIDGED
            return True
        return False

    def agent_hung_up(self, cause: str, now: float) -> list[Output]:
        """The connected agent hung up: the caller's call is complete (we send BYE)."""
        out: list[Output] = [EndSupervision("agent_hangup")]
        out += self.close_holds(now, "agent_hangup")
        self.agent_leg = ""
        self.ended_by_agent = True
        out += self._stop_recording("queue")
        return out + self.hang_up(HangUp(200, cause=cause), now)

    def continue_after_agent(self, flow: str, now: float) -> list[Output]:
        """The agent hung up and the caller goes on in `flow` (a survey): the record keeps the
        agent and talk time."""
        out: list[Output] = [EndSupervision("agent_hangup")]
        out += self.close_holds(now, "agent_hangup")
        self.agent_leg = ""
        out += self._stop_recording("queue")
        out.append(p.StopPlay(leg=self.caller_leg))  # hold music, if the agent hung up holding
        out.append(r.FlowContinued(flow, "agent_hangup"))
        if not self.ending:
            self.phase = Phase.IN_FLOW
        return out

    def transferred_away(self, agent_leg: str) -> list[Output]:
        """The agent sent the caller on (blind transfer): her leg gets BYE, the queue's
        recording of her part ends; the caller is no longer bridged."""
        out: list[Output] = [EndSupervision("transfer")]
        self.agent_leg = ""
        out += self._stop_recording("queue")
        out.append(p.StopPlay(leg=self.caller_leg))
        if agent_leg:
            out += self.end_leg(agent_leg)
        if not self.ending:
            self.phase = Phase.IN_FLOW
        return out

    # ------------------------------------------------------------ recordings

    def _start_recording(self, path: str, legs: tuple[str, ...], kind: str, prefix: str, now: float) -> list[Output]:
        rec_id = self._next(prefix)
        self.recording = Recording(rec_id, path, now, kind)
        return [p.RecordStart(rec_id=rec_id, legs=legs, path=path), r.RecordingStarted(path)]

    def recording_started(self, rec_id: str, path: str, now: float) -> None:
        """A recording the adapter started itself (an outbound call's): kept for holds and stops."""
        self.recording = Recording(rec_id, path, now, "queue")

    def _stop_recording(self, kind: str) -> list[Output]:
        if self.recording is None or self.recording.kind != kind:
            return []
        rec_id, self.recording = self.recording.rec_id, None
        return [p.RecordStop(rec_id=rec_id)]

    def stop_recording(self) -> list[Output]:
        """Stop whichever recording runs (an outbound call's end)."""
        if self.recording is None:
            return []
        return self._stop_recording(self.recording.kind)

    def set_recording(self, paused: bool) -> tuple[str | None, list[Output]]:
        """An operator pauses (a card number read out) or resumes the recording. Returns (an
        error text or None, outputs). On hold the worker's recording is paused already: only
        the mark is kept, and it resumes with the call only if not paused meanwhile."""
        if self.recording is None:
            return "this call is not being recorded", []
        self.recording_paused_by_operator = paused
        if self.holds:
            return None, [r.RecordingPaused(paused, on_hold=True)]
        rec_id = self.recording.rec_id
        cmd: p.Message = p.RecordPause(rec_id=rec_id) if paused else p.RecordResume(rec_id=rec_id)
        return None, [cmd, r.RecordingPaused(paused, on_hold=False)]

    def worker_error(self, command: str, message: str) -> list[Output]:
        """A worker command failed. A recording that never began (the caller left at that
        very moment, a disk error) is taken off the record."""
        out: list[Output] = []
        if command == "record_start" and self.recording is not None:
            self.recording = None
            out.append(r.RecordingFailed(message))
        out.append(r.WorkerError(command, message))
        return out

    # ------------------------------------------------------------ hold (RFC 3264 8.4)

    def _talking_to(self, leg: str) -> tuple[str, str] | None:
        t = self.transfer
        other = self.agent_leg or (t.leg if t is not None and t.answered_at is not None else "")
        if not other:
            return None
        if leg == self.caller_leg:
            return "caller", other
        if leg == self.agent_leg:
            return "agent", self.caller_leg
        if t is not None and leg == t.leg:
            return "transfer_target", self.caller_leg
        return None

    def _offset(self, now: float) -> float | None:
        return round(now - self.recording.started, 2) if self.recording is not None else None

    def hold_changed(self, leg: str, held: bool, direction: str, now: float) -> list[Output]:
        """A party's phone holds (re-INVITE sendonly/inactive) or resumes (sendrecv). The
        other party hears the hold music meanwhile (the bridge is cut, so not the holding
        phone's own sound), the stretch is kept as hold time, a recording is paused (a silent
        stretch) and marked with its offsets. A hold outside a conversation (a ring, the IVR,
        a consult, an ending call) changes nothing."""
        talk = self._talking_to(leg)
        if talk is None or self.ending or self.consulting:
            return []
        party, other = talk
        far = other if leg == self.caller_leg else leg  # the bridge is caller <-> far
        offset = self._offset(now)
        out: list[Output] = []
        rec_id = self.rec_id
        if held and leg not in self.holds:
            first = not self.holds
            self.holds[leg] = Hold(now, party)
            self.hold_count += 1
            self.phase = Phase.HELD
            if leg in self.legs:
                self.legs[leg].state = LegState.HELD
            out.append(r.HoldStarted(now, party, direction, offset))
            if first:
                out.append(p.Unbridge(leg_a=self.caller_leg, leg_b=far))
                if rec_id and not self.recording_paused_by_operator:
                    out.append(p.RecordPause(rec_id=rec_id))
            if self.hold_music and other not in self.holds:
                self.hold_play_id = self._next("hold")
                out.append(p.Play(leg=other, files=self.hold_music, play_id=self.hold_play_id, loop=True))
            if self.holds.keys() >= {self.caller_leg, other}:
                out.append(p.StopPlay(leg=leg))  # both hold: nobody listens to music
        elif not held and leg in self.holds:
            out += self._end_hold(leg, now, offset, "resumed")
            if other not in self.holds:
                out.append(p.StopPlay(leg=other))
            if not self.holds:
                out.append(p.Bridge(leg_a=self.caller_leg, leg_b=far,
                                    direct_media=self.direct_media and not rec_id))
                if rec_id and not self.recording_paused_by_operator:
                    out.append(p.RecordResume(rec_id=rec_id))
            elif self.hold_music:
                # the other party still holds: the one who resumed hears the music now
                out.append(p.Play(leg=leg, files=self.hold_music, play_id=self.hold_play_id, loop=True))
        return out

    def _end_hold(self, leg: str, now: float, offset: float | None, how: str) -> list[Output]:
        h = self.holds.pop(leg)
        seconds = max(0.0, now - h.started)
        self.hold_seconds += seconds
        x = self.legs.get(leg)
        if x is not None and x.state is LegState.HELD:
            x.state = LegState.ANSWERED
        if not self.holds and self.phase is Phase.HELD:
            self.phase = Phase.BRIDGED
        return [r.HoldEnded(now, h.party, seconds, how, offset, self.hold_seconds, self.hold_count)]

    def close_holds(self, now: float, how: str) -> list[Output]:
        """The call (or the held party's leg) ends while on hold: the stretches end here."""
        offset = self._offset(now)
        out: list[Output] = []
        for leg in list(self.holds):
            out += self._end_hold(leg, now, offset, how)
        return out

    # ------------------------------------------------------------ transfers (B leg)

    def connect(self, action: Connect, record_path: str | None, now: float) -> list[Output]:
        """A flow's transfer step: dial `action.uri`; unanswered after `action.ring_timeout`
        seconds it is CANCELled (tick), and the flow hears ConnectEnded with the result."""
        if self.ending:
            return self._illegal("connect", detail=action.uri)
        leg = self._next("b")
        self.transfer = Transfer(leg, action.uri, record_path if action.record else None,
                                 now + action.ring_timeout)
        self.legs[leg] = Leg(leg, LegRole.TRANSFER_TARGET)
        self.phase = Phase.TRANSFERRING
        return [r.TransferDialled(action.uri), p.Dial(leg=leg, uri=action.uri)]

    def transfer_out(self, uri: str, ring_timeout: float, from_uri: str, now: float) -> list[Output]:
        """An agent's blind transfer to a listed external number: as `connect`, but an
        unanswered target is a TransferResult for the queue runtime (back to her queue)."""
        if self.ending:
            return self._illegal("transfer_out", detail=uri)
        leg = self._next("b")
        self.transfer = Transfer(leg, uri, None, now + ring_timeout, acd=True)
        self.legs[leg] = Leg(leg, LegRole.TRANSFER_TARGET)
        self.phase = Phase.TRANSFERRING
        return [p.Dial(leg=leg, uri=uri, from_uri=from_uri)]

    def transfer_state(self, leg: str, state: str, code: int, now: float) -> list[Output]:
        """CallState of the transfer target's leg: answered -> bridged (and recorded if the
        step says so); ended -> the caller's call ends too if they talked, else the result
        (busy, no_answer, ...) goes to the flow (ConnectEnded) or the queue (TransferResult)."""
        t = self.transfer
        if t is None or leg != t.leg:
            return self._illegal(f"transfer_{state}", leg, "no such transfer leg")
        x = self.legs[leg]
        if state == "confirmed" and t.answered_at is None:
            if x.state in _DONE:
                return self._illegal("transfer_confirmed", leg, "the leg is ending")
            t.answered_at, t.deadline = now, None
            x.state, x.answered_at, x.bridged = LegState.ANSWERED, now, True
            self.unserved_exit = ""
            self.phase = Phase.BRIDGED
            out: list[Output] = [r.TransferAnswered(t.uri),
                                 p.Bridge(leg_a=self.caller_leg, leg_b=leg,
                                          direct_media=self.direct_media and not t.record_path)]
            if t.record_path:
                out += self._start_recording(t.record_path, (self.caller_leg, leg), "transfer", "r", now)
            return out
        if state in ("calling", "early") and x.state is LegState.DIALLING:
            x.state = LegState.RINGING
            return []
        if state != "disconnected":
            return []
        x.state = LegState.ENDED
        self.transfer = None
        out = self.close_holds(now, "transfer_target_hangup")
        out += self._stop_recording("transfer")
        out.append(r.LegEnded(leg, x.role.value, code, x.bridged))
        if t.answered_at is not None:
            # the target hung up after talking: the caller's call is over too
            out.append(r.TransferEnded("target"))
            if not self.ending:
                out += self.hang_up(HangUp(200, cause="transfer_target_hangup"), now)
            return out
        result = TRANSFER_RESULTS.get(code, "failed")
        out.append(r.TransferFailed(code, result, leg))
        if not self.ending:
            self.phase = Phase.IN_FLOW
        out.append(TransferResult(result) if t.acd else FeedFlow(ConnectEnded(result, code)))
        return out

    def _end_transfer_leg(self) -> list[Output]:
        """The call ends: the transfer's recording stops, its leg gets BYE (or CANCEL)."""
        t = self.transfer
        out = self._stop_recording("transfer")
        if t is None:
            return out
        t.deadline = None
        return out + self._end_leg_quiet(t.leg)

    # ------------------------------------------------------------ consults (acd/consult.py)

    def _consult_pause(self, pause: bool) -> list[Output]:
        rec_id = self.rec_id
        if rec_id and not self.recording_paused_by_operator and not self.holds:
            return [p.RecordPause(rec_id=rec_id) if pause else p.RecordResume(rec_id=rec_id)]
        return []

    def consult_started(self, agent_leg: str, music: tuple[str, ...]) -> list[Output]:
        """The agent consults someone: she and the caller are unbridged, the caller hears
        `music`, the recording pauses (the consult is not the caller's talk)."""
        self.consulting = True
        out: list[Output] = [p.Unbridge(leg_a=self.caller_leg, leg_b=agent_leg)]
        out += self._consult_pause(True)
        music = music or self.default_music
        if music:
            self.hold_play_id = self._next("consult")
            out.append(p.Play(leg=self.caller_leg, files=music, play_id=self.hold_play_id, loop=True))
        return out

    def consult_back(self, agent_leg: str) -> list[Output]:
        """The consult ended without a transfer: agent and caller talk again."""
        self.consulting = False
        out: list[Output] = [p.StopPlay(leg=self.caller_leg)]
        if not self.holds:
            out.append(p.Bridge(leg_a=self.caller_leg, leg_b=agent_leg,
                                direct_media=self.direct_media and not self.rec_id))
        return out + self._consult_pause(False)

    def consult_completed(self, agent_leg: str, leg: str, external_uri: str, now: float) -> list[Output]:
        """Attended transfer: the agent's leg gets BYE, the caller is bridged to the consulted
        party's leg: a consulted agent's becomes the call's agent leg, an external party's the
        call's transfer leg (its hang-up ends the call)."""
        self.consulting = False
        out = self._stop_recording("queue")
        out += self.end_leg(agent_leg)
        x = self.legs.setdefault(leg, Leg(leg, LegRole.AGENT, LegState.ANSWERED))
        x.bridged = True
        if external_uri:
            self.agent_leg = ""
            x.role = LegRole.TRANSFER_TARGET
            self.transfer = Transfer(leg, external_uri, None, None, answered_at=now)
        else:
            self.agent_leg = leg
        self.phase = Phase.BRIDGED
        out.append(p.Bridge(leg_a=self.caller_leg, leg_b=leg, direct_media=self.direct_media))
        return out

    def direct_again(self) -> list[Output]:
        """A supervisor left: with sip.direct_media an unrecorded bridge nobody holds goes
        direct again."""
        if self.direct_media and self.agent_leg and not self.holds and not self.recording and not self.ending:
            return [p.Bridge(leg_a=self.caller_leg, leg_b=self.agent_leg, direct_media=True)]
        return []

    # ------------------------------------------------------------ voicemail

    def start_message(self, box: str, caller: str, path: str, max_seconds: float, now: float) -> list[Output]:
        """Record the caller's message for `box` into `path`, at most `max_seconds` long."""
        if self.ending:
            return self._illegal("start_message", detail=box)
        rec_id = self._next("vm")
        self.message = Message(rec_id, box, path, now, now + max_seconds)
        return [r.VoicemailStarted(now, box, caller, path), p.RecordStart(rec_id=rec_id, legs=(self.caller_leg,), path=path)]

    def stop_message(self, now: float, feed: bool) -> list[Output]:
        """Stop the message being recorded (# key: `feed` the flow MessageRecorded; the
        caller's hang-up: not). Leaving a message serves the caller. Nothing when none runs."""
        m = self.message
        if m is None:
            return []
        self.message = None
        seconds = now - m.started
        self.unserved_exit = ""  # served: the caller left a message
        out: list[Output] = [p.RecordStop(rec_id=m.rec_id), r.VoicemailFinished(m.rec_id, m.box, m.path, seconds)]
        if feed:
            out.append(FeedFlow(MessageRecorded(m.path, seconds)))
        return out
