"""CallSession: one inbound call, from its INVITE at a worker to its row in the store.

It is the IO adapter around two sans-IO cores: the call's FlowRun (flows/interpreter.py)
and its CallCore (call/core.py), which decides the call's phase, its legs' states, what the
record says (answer, disposition, holds, recordings, transfers) and its deadlines. The
session routes worker events and the queue runtime's requests to them, sends their worker
commands, hands their record events to call/records.py's RecordWriter (the one place that
maps them to store writes), runs the core's deadlines on the loop's monotonic clock, and logs
and counts (metrics.ILLEGAL_CALL_EVENTS) every event the core finds illegal.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from ringmaster import inputs, prompts
from ringmaster import protocol as p
from ringmaster.acd.config import NumberRefused
from ringmaster.call import records as rec
from ringmaster.call.core import (
    CallCore,
    EndSupervision,
    FeedFlow,
    IllegalEvent,
    Output,
    QueueExit,
    TransferResult,
)
from ringmaster.call.records import RECORDS, RecordWriter
from ringmaster.flows.actions import (
    Action,
    AnswerCall,
    CallbackStored,
    CollectDigits,
    Connect,
    DigitPressed,
    DigitsEntered,
    EnqueueCall,
    FlowEvent,
    HangUp,
    HttpAnswered,
    HttpRequest,
    PlayPrompts,
    PromptsDone,
    QueueLeft,
    RecordMessage,
    Speak,
    StoreCallback,
)
from ringmaster.flows.interpreter import FlowRun
from ringmaster.metrics import ILLEGAL_CALL_EVENTS
from ringmaster.sipuri import display_name, identity, sip_user
from ringmaster.store import Store

if TYPE_CHECKING:
    from ringmaster.acd.config import CallbackConfig
    from ringmaster.call.ports import CustomerDirectory, CustomerView, QueueRuntime, SupervisionDesk, SupervisionRef
    from ringmaster.lookups import LookupClient
    from ringmaster.tts import Speech

log = structlog.get_logger("ringmaster.call")

Send = Callable[[str, p.Message], bool]
MAX_COLLECTED = 64  # a collect step's `max` is at most 64 digits


def new_call_id() -> str:
    # sortable by time, unique across restarts: what operators paste into searches
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


__all__ = ["CallSession", "display_name", "identity", "new_call_id", "sip_user"]


@dataclass
class CallSession:
    call_id: str
    worker: str
    leg: str
    caller: str
    called: str
    send: Send
    store: Store
    bind_leg: Callable[[str], None] = lambda leg: None
    recordings_dir: str = "."
    direct_media: bool = False  # sip.direct_media: unrecorded bridges leave the worker's media path
    # came in through the edge's dispatcher (counted in its load of the worker); a click-to-dial
    # call the controller started itself is not
    dispatched: bool = True
    run: FlowRun | None = None
    arrived_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    media_ready: bool = False
    pending_play: PlayPrompts | None = None
    play_id: str = ""
    collect_id: str = ""
    # told when a message is stored: (rec_id, call_id, box, caller, path, seconds); the controller's
    # voicemail announces it once the worker's RecordingDone says the WAV is whole
    on_message: Callable[[str, str, str, str, str, float], None] = lambda *a: None
    # told of the call's events integrations hear of (webhooks), right after their record is
    # written: ("ended", {...}) and ("callback", {...})
    notify: Callable[[str, dict[str, Any]], None] = lambda kind, data: None
    # the core's next deadline as armed on the loop (monotonic), and its timer
    _deadline: float | None = None
    _deadline_timer: asyncio.TimerHandle | None = None
    # ACD: the queue's hold music, plays the session starts while the caller waits
    acd: QueueRuntime | None = None
    moh: tuple[str, ...] = ()
    moh_play_id: str = ""
    announce_play_id: str = ""
    # who is calling, for the agent's phone: the From's display name, the host the identity
    # URIs carry (the edge), and whether agent legs also get P-Asserted-Identity (sip.send_pai)
    caller_name: str = ""
    identity_host: str = ""
    send_pai: bool = False
    # IO the flow asks for and waits on: speech to render, lookups to make (cancelled at the end)
    speech: Speech | None = None
    lookups: LookupClient | None = None
    _io: set[asyncio.Task[None]] = field(default_factory=set)
    # the customer (docs/customers.md): its key as stored, the context its offers carry, and
    # the agent's leg kept up after the caller left for a wrap-up code keyed on the phone
    customers: CustomerDirectory | None = None
    customer_key: str | None = None
    customer: CustomerView | None = None
    wrapup_leg: str = ""
    # a blind transfer to an external number that was not answered (result: busy, no_answer,
    # ...): the ACD's "back to the queue"; None for a flow's transfer step (the flow goes on)
    transfer_failed: Callable[[str], None] | None = None
    # a supervisor listening, whispering or barging on the conversation (supervision.py)
    supervision: SupervisionRef | None = None
    supervisions: SupervisionDesk | None = None
    # a queued callback being asked for (docs/callbacks.md): the number's collect, the prompt
    # that ends it (then: hang up, back to the hold music, or on in the flow with the answer)
    callback_collect_id: str = ""
    callback_play_id: str = ""
    callback_then: Any = None
    _plays: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.log = log.bind(call_id=self.call_id, worker=self.worker, leg=self.leg)
        self.core = CallCore(self.call_id, self.leg, direct_media=self.direct_media)
        self.writer = RecordWriter(self.store, self.call_id, self._flow_record)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    # the core's state, read (and, for OutboundCall, set) under the names the rest of the
    # daemon knows
    @property
    def hangup(self) -> HangUp | None:
        return self.core.hangup

    @property
    def disposition(self) -> str:
        return self.core.disposition

    @property
    def queued(self) -> str | None:
        return self.core.queue

    @property
    def queue_agent_leg(self) -> str:
        return self.core.agent_leg

    @queue_agent_leg.setter
    def queue_agent_leg(self, leg: str) -> None:
        self.core.agent_leg = leg

    @property
    def b_leg(self) -> str:
        return self.core.b_leg

    @property
    def holds(self) -> dict[str, Any]:
        return self.core.holds

    @property
    def hold_seconds(self) -> float:
        return self.core.hold_seconds

    @property
    def hold_count(self) -> int:
        return self.core.hold_count

    @property
    def consulting(self) -> bool:
        return self.core.consulting

    @property
    def message(self) -> Any:
        return self.core.message

    @property
    def default_moh(self) -> tuple[str, ...]:
        return self.core.default_music

    @default_moh.setter
    def default_moh(self, files: tuple[str, ...]) -> None:
        self.core.default_music = files

    def _flow_record(self) -> tuple[list[str], dict[str, Any]]:
        run = self.run
        return (run.path if run else [], run.variables if run else {})

    def _apply(self, outputs: list[Output]) -> None:
        """Carry out the core's outputs in order: commands to the worker (a Dial's leg is
        routed to this call first, a Play's files made playable), records to the writer,
        notices to the flow, the queue runtime and supervision; illegal events logged and
        counted. Then the core's deadline is armed."""
        for o in outputs:
            if isinstance(o, p.Message):
                if isinstance(o, p.Dial):
                    self.bind_leg(o.leg)
                elif isinstance(o, p.Play):
                    o = p.Play(leg=o.leg, files=prompts.playable(o.files), play_id=o.play_id, loop=o.loop,
                               barge_in=o.barge_in)
                self._command(o)
            elif isinstance(o, RECORDS):
                self._record(o)
            elif isinstance(o, FeedFlow):
                self._feed(o.event)
            elif isinstance(o, TransferResult):
                if self.transfer_failed is not None:  # an agent's blind transfer out: back to her queue
                    failed, self.transfer_failed = self.transfer_failed, None
                    failed(o.result)
            elif isinstance(o, QueueExit):
                if self.acd is not None:
                    if o.how == "connected":
                        self.acd.caller_ended_connected(self)  # COMPLETECALLER, the agent leg is hung up
                    else:
                        self.acd.caller_gone(self)  # ABANDON
            elif isinstance(o, EndSupervision):
                self.end_supervision(o.how)
            elif isinstance(o, IllegalEvent):
                ILLEGAL_CALL_EVENTS.labels(event=o.event, phase=o.phase).inc()
                # (structlog's first argument is named `event`: the refused one is `refused`)
                self.log.warning("call.illegal_event", refused=o.event, phase=o.phase, event_leg=o.leg or None,
                                 leg_state=o.leg_state or None, detail=o.detail or None)
        self._arm_deadline()

    def _record(self, r: rec.Record) -> None:
        """One record event: written, then what the rest of the daemon hears of it."""
        if isinstance(r, rec.CallEnded) and self.customers is not None:
            self.customers.call_identified(self)  # an account keyed in after the queue counts too
        self.writer.apply(r)
        if isinstance(r, rec.CallAnswered):
            self.answered_at = rec.wall_clock(r.at)
            self.log.info("call.answered")
        elif isinstance(r, rec.CallEnded):
            self._record_end(r)
        elif isinstance(r, rec.HoldStarted):
            self.log.info("call.hold", party=r.party, direction=r.direction)
            if self.acd is not None:
                self.acd.hold_changed(self, r.party, True, 0.0)
        elif isinstance(r, rec.HoldEnded):
            self.log.info("call.unhold", party=r.party, seconds=round(r.seconds, 2), how=r.how)
            if self.acd is not None:
                self.acd.hold_changed(self, r.party, False, r.seconds)
        elif isinstance(r, rec.TransferAnswered):
            self.transfer_failed = None
        elif isinstance(r, rec.TransferFailed):
            self.log.info("call.transfer_failed", code=r.code, result=r.result)
        elif isinstance(r, rec.VoicemailFinished):
            self.log.info("call.voicemail_stored", path=r.path, seconds=round(r.seconds, 1))
            self.on_message(r.rec_id, self.call_id, r.box, self.caller, r.path, r.seconds)
        elif isinstance(r, rec.LegEnded):
            self.log.debug("call.leg_ended", event_leg=r.leg, role=r.role, code=r.code, charged=r.charged)

    def _arm_deadline(self) -> None:
        """One timer at the core's next deadline. asyncio's loop.time() is monotonic; the
        core's times are time.monotonic() readings, so the wait is their difference."""
        deadline = self.core.next_deadline()
        if deadline == self._deadline:
            return
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._deadline = deadline
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._deadline_timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._tick)

    def _tick(self) -> None:
        self._deadline_timer, self._deadline = None, None
        self._apply(self.core.tick(time.monotonic()))

    # ------------------------------------------------------------ flow -> worker

    def start(self) -> None:
        assert self.run is not None
        self.log.info("call.flow_started", flow=self.run.flow.name, caller=self.caller, called=self.called)
        self.execute(self.run.start())

    def reject(self, code: int, cause: str) -> None:
        self._apply(self.core.reject(code, cause))

    def execute(self, actions: list[Action]) -> None:
        for action in actions:
            if self.hangup is not None:
                return
            if isinstance(action, AnswerCall):
                self._command(p.Answer(leg=self.leg))
            elif isinstance(action, PlayPrompts):
                if self.media_ready:
                    self._play(action)
                else:
                    self.pending_play = action
            elif isinstance(action, CollectDigits):
                self.collect_id = f"{self.call_id}-c{next(self._plays)}"
                self._command(p.CollectDigits(
                    leg=self.leg, collect_id=self.collect_id, max_digits=action.max_digits,
                    terminators=action.terminators, first_timeout=action.first_timeout,
                    inter_digit_timeout=action.inter_digit_timeout, flush=action.flush))
            elif isinstance(action, Connect):
                self._connect(action)
            elif isinstance(action, RecordMessage):
                self._start_message(action)
            elif isinstance(action, EnqueueCall):
                if self.acd is None:
                    self.log.error("call.no_acd", queue=action.queue)
                    self._feed(QueueLeft("no_acd"))
                elif self.customers is not None:
                    self._background(self._enqueue_with_customer(action))
                else:
                    self.acd.enqueue(self, action.queue, action.priority, action.skills)
            elif isinstance(action, Speak):
                self._background(self._speak(action))
            elif isinstance(action, HttpRequest):
                self._background(self._lookup(action))
            elif isinstance(action, StoreCallback):
                self._flow_callback(action)
            elif isinstance(action, HangUp):
                self._apply(self.core.hang_up(action, time.monotonic()))

    # ------------------------------------------------------------ queued callbacks (docs/callbacks.md)

    def _flow_callback(self, action: StoreCallback) -> None:
        """A flow's `callback` step: the number is checked, the callback queued; the caller
        hears the confirm prompt with the position and wait (or the invalid prompt), then the
        step gets CallbackStored."""
        callbacks = self.acd.callbacks if self.acd is not None else None
        spec = callbacks.spec(action.queue) if callbacks is not None else None
        if callbacks is None or spec is None or self.acd is None:
            self.log.error("call.callback_unavailable", queue=action.queue)
            self._feed(CallbackStored(error=f"queue {action.queue!r} takes no callbacks"))
            return
        try:
            number = callbacks.number_for(action.queue, action.number)
        except NumberRefused as exc:
            self._callback_refused(str(exc), spec.invalid_prompt, then=CallbackStored(error=str(exc)))
            return
        variables = dict(self.run.variables) if self.run is not None else {}
        cb_id = callbacks.request_from_flow(self.call_id, action.queue, number, action.priority, variables)
        self._callback_stored(cb_id, number, action.queue)
        pos = self.acd.engine.position_of(cb_id)
        event = CallbackStored(cb_id, pos[0] if pos else 0,
                               None if pos is None or pos[1] is None else max(1, round(pos[1] / 60)))
        files = self.acd.call_prompts(self, [spec.confirm_prompt]) + self.acd.position_prompts(self, cb_id)
        self._callback_say(files, event)

    def callback_key(self, queue: str, spec: CallbackConfig) -> None:
        """The waiting caller pressed the queue's callback key: for `number: caller` the
        caller ID is taken at once; for `number: ask` the hold music stops and the number is
        asked for (ask_prompt, then digits ended by # or a pause); the caller waits in line
        meanwhile."""
        if self.callback_collect_id or self.callback_play_id:
            return  # already asking
        self._record(rec.CallbackKeyPressed(queue))
        if spec.number == "caller":
            self._callback_number(queue, self.caller)
            return
        self.moh_play_id = ""
        self.callback_collect_id = f"{self.call_id}-cbc{next(self._plays)}"
        files = self.acd.call_prompts(self, [spec.ask_prompt]) if self.acd is not None else []
        if files:
            self._command(p.Play(leg=self.leg, files=prompts.playable(tuple(files)),
                                 play_id=f"{self.call_id}-cba{next(self._plays)}", barge_in=True))
        else:
            self._command(p.StopPlay(leg=self.leg))
        self._command(p.CollectDigits(leg=self.leg, collect_id=self.callback_collect_id,
                                      max_digits=spec.max_digits + 1, terminators="#", first_timeout=10.0,
                                      inter_digit_timeout=4.0, flush=True))

    def _callback_number(self, queue: str, raw: str) -> None:
        if self.acd is None or self.acd.callbacks is None or self.queued != queue:
            return
        spec = self.acd.callbacks.spec(queue)
        try:
            number = self.acd.callbacks.number_for(queue, raw)
        except NumberRefused as exc:
            self._callback_refused(str(exc), spec.invalid_prompt if spec is not None else "", then="moh")
            return
        taken = self.acd.callback_taken(self, number)
        if taken is None:
            return
        cb_id, position = taken
        self.announce_play_id = ""
        self._apply(self.core.left_for_callback())
        self._callback_stored(cb_id, number, queue)
        files = (self.acd.call_prompts(self, [spec.confirm_prompt]) if spec is not None else []) + position
        self._callback_say(files, HangUp(200, cause="callback_requested"))

    def _callback_stored(self, cb_id: str, number: str, queue: str) -> None:
        self.core.served()  # a callback is what the caller asked for
        self._record(rec.CallbackQueued(cb_id, queue, number))
        self.notify("callback", {"caller": self.caller, "queue": queue, "number": number, "callback_id": cb_id})
        self.log.info("call.callback_requested", queue=queue, callback=cb_id)

    def _callback_refused(self, reason: str, prompt: str, then: Any) -> None:
        self.log.warning("call.callback_refused", reason=reason)
        self._record(rec.CallbackRefused(reason))
        files = self.acd.call_prompts(self, [prompt]) if self.acd is not None and prompt else []
        self._callback_say(files, then)

    def _callback_say(self, files: list[str], then: Any) -> None:
        """Play `files`, then carry on with `then`: a HangUp, "moh" (back to waiting in
        line) or a flow event."""
        if not files or not self.media_ready:
            self._callback_next(then)
            return
        self.moh_play_id = ""
        self.callback_then = then
        self.callback_play_id = f"{self.call_id}-cb{next(self._plays)}"
        self._command(p.Play(leg=self.leg, files=prompts.playable(tuple(files)), play_id=self.callback_play_id))

    def _callback_next(self, then: Any) -> None:
        self.callback_play_id, self.callback_then = "", None
        if isinstance(then, HangUp):
            self.execute([then])
        elif then == "moh":
            self._play_moh()
        elif then is not None:
            self._feed(then)

    async def _enqueue_with_customer(self, action: EnqueueCall) -> None:
        """Enter the queue with the customer's context (key, name, tier, last interactions) at
        hand, so the first ring's screen pop carries it; the read is bounded (customers.py)."""
        assert self.customers is not None and self.acd is not None
        self.customer = await self.customers.call_context(self)
        if self.hangup is None and not self.ended:
            self.acd.enqueue(self, action.queue, action.priority, action.skills)

    def _background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._io.add(task)
        task.add_done_callback(self._io.discard)

    def _cancel_io(self) -> None:
        for task in list(self._io):
            task.cancel()

    async def _speak(self, action: Speak) -> None:
        """Render the text (or take it from the cache) and play it as a prompt; a rendering
        that fails ends the step as an interrupted prompt, so the flow goes on."""
        path: str | None = None
        if self.speech is None:
            self.log.error("call.say_failed", error="no speech engine configured")
        else:
            try:
                path = str(await self.speech.render(action.text, action.language, action.voice))
            except Exception as exc:  # SpeechFailed, or anything else: never silence forever
                self.log.error("call.say_failed", language=action.language, voice=action.voice, error=str(exc))
        if self.hangup is not None or self.ended:
            return
        if path is None:
            self._record(rec.SpeechFailed(action.language))
            self._feed(PromptsDone(interrupted=True))
            return
        self._record(rec.Spoken(action.language, action.voice, action.text))
        self.log.info("call.say", language=action.language, voice=action.voice, file=path)
        self.execute([PlayPrompts((path,), barge_in=action.barge_in)])

    async def _lookup(self, action: HttpRequest) -> None:
        started = time.monotonic()
        if self.lookups is None:
            answer = HttpAnswered("error", detail="no HTTP client")
        else:
            answer = await self.lookups.request(action.endpoint, dict(action.values), self.call_id)
        ms = round((time.monotonic() - started) * 1000)
        if self.hangup is not None or self.ended:
            return
        self._record(rec.LookupAnswered(action.name, answer.result, answer.status, ms))
        fields = dict(endpoint=action.name, result=answer.result, status=answer.status, ms=ms)
        if answer.result == "ok":
            self.log.info("call.http", **fields)
        else:
            self.log.warning("call.http", detail=answer.detail, **fields)
        self._feed(answer)

    def _play(self, action: PlayPrompts) -> None:
        self.play_id = f"{self.call_id}-p{next(self._plays)}"
        self._command(p.Play(leg=self.leg, files=prompts.playable(action.files), play_id=self.play_id,
                             barge_in=action.barge_in))

    # ------------------------------------------------------------ ACD (called by AcdRuntime)

    def queue_started(self, queue: str, moh: tuple[str, ...]) -> None:
        self.moh = moh
        self._apply(self.core.enqueued(queue, moh))
        self._play_moh()

    def _play_moh(self) -> None:
        if self.queued is None or not self.moh or self.hangup is not None:
            return
        self.moh_play_id = f"{self.call_id}-moh{next(self._plays)}"
        if self.media_ready:
            self._command(p.Play(leg=self.leg, files=prompts.playable(self.moh), play_id=self.moh_play_id, loop=True))

    def queue_announce(self, files: tuple[str, ...]) -> None:
        if self.queued is None or not self.media_ready:
            return
        self.moh_play_id = ""
        self.announce_play_id = f"{self.call_id}-ann{next(self._plays)}"
        self._command(p.Play(leg=self.leg, files=prompts.playable(files), play_id=self.announce_play_id))

    def dial_agent(self, leg: str, uri: str, headers: tuple[tuple[str, str], ...], direct: bool = False,
                   agents: tuple[str, ...] = ()) -> None:
        """Ring an agent: the leg's From (and, if sip.send_pai, P-Asserted-Identity, RFC 3325)
        carry the caller's number and name, so the phone shows who is calling; the IVR's
        variables stay in their X- headers. `direct`: the bridge will go direct (sip.direct_media,
        not recorded), so the INVITE offers the caller's media from the start (Dial.offer_media_of).
        `agents`: the agents a queue's ring reaches on this leg (none for a consult's leg)."""
        self.bind_leg(leg)
        self._apply(self.core.leg_dialled(leg, agents))
        who = identity(self.caller, self.caller_name, self.identity_host) if self.identity_host else None
        if who is not None and self.send_pai:
            headers = (*headers, ("P-Asserted-Identity", who))
        self._command(p.Dial(leg=leg, uri=uri, extra_headers=headers, from_uri=who or "",
                             offer_media_of=self.leg if direct and self.direct_media else ""))

    def ask_confirm(self, leg: str, files: tuple[str, ...], collect_id: str, timeout: float) -> None:
        """Ask the agent on `leg` to press 1 (confirm_answer): the prompt, then one digit within
        `timeout` seconds of its end (DigitsCollected with `collect_id`)."""
        if files:
            self._command(p.Play(leg=leg, files=prompts.playable(files), play_id=f"{collect_id}-prompt", barge_in=True))
        self._command(p.CollectDigits(leg=leg, collect_id=collect_id, max_digits=1, first_timeout=timeout,
                                      inter_digit_timeout=timeout, flush=True))

    def hangup_leg(self, leg: str, code: int = 200) -> None:
        """End one of the call's other legs (CANCEL a ring with 487, BYE an answered one)."""
        self._apply(self.core.end_leg(leg, code))

    def ring_answered(self, leg: str) -> bool:
        """An agent's ring leg answered: False when it lost the race (another agent has the
        call, or the caller is gone): the core has hung it up and it is charged to nobody."""
        won, out = self.core.ring_answered(leg)
        self._apply(out)
        return won

    def queue_bridged(self, agent_leg: str, recording: str | None) -> None:
        self.moh_play_id, self.announce_play_id = "", ""
        self._apply(self.core.agent_bridging(agent_leg, recording, time.monotonic()))  # stops the hold music

    def queue_connected(self, other: str) -> bool:
        """The worker joined the caller to `other`: True if that is the connecting agent."""
        return self.core.bridged(other)

    def queue_left(self, reason: str, flow: str | None) -> None:
        """The caller left the queue unserved (reason: LeaveQueue's) for `flow`, or back to
        the flow it came from. Only the exit key is the caller's own choice."""
        self.moh_play_id, self.announce_play_id = "", ""
        self._apply(self.core.left_queue(reason))
        if self.run is None:
            return
        if flow is not None:
            self.execute(self.run.jump(flow))
        else:
            self._feed(QueueLeft(reason))

    def end_supervision(self, how: str) -> None:
        """The conversation a supervisor joined is over: her leg is hung up."""
        if self.supervision is not None and self.supervisions is not None:
            self.supervisions.end(self.supervision, how)

    def supervision_ended(self) -> None:
        """The supervisor hung up: with sip.direct_media, caller and agent may talk directly
        again (an unrecorded bridge nobody holds), as after any bridge."""
        if not self.ended:
            self._apply(self.core.direct_again())

    def end_from_queue(self, cause: str) -> None:
        """The agent hung up: the caller's call is complete."""
        self._apply(self.core.agent_hung_up(cause, time.monotonic()))

    def continue_after_agent(self, flow: str) -> None:
        """The agent hung up and the queue says `continue_on_agent_hangup: FLOW` (Asterisk's
        Queue option c): the caller goes on at that flow's start (e.g. a survey) instead of
        being hung up. The call record keeps the agent and talk time; what the flow collects
        lands in its variables and DIGITS events."""
        self._apply(self.core.continue_after_agent(flow, time.monotonic()))
        self.log.info("call.continue_after_agent", flow=flow)
        if self.run is None or self.hangup is not None:
            return
        self.execute(self.run.jump(flow))

    def transferred_away(self, agent_leg: str) -> None:
        """The agent sent the caller on (a blind transfer): her leg is hung up (BYE), the
        queue's recording of this part ends (the next agent's part is recorded anew if its
        queue records) and the caller is no longer bridged to anyone."""
        self._apply(self.core.transferred_away(agent_leg))

    def transfer_out(self, uri: str, ring_timeout: float, moh: tuple[str, ...],
                     on_failed: Callable[[str], None]) -> None:
        """Blind transfer to a listed external number: dial `uri` (the edge sends it to the
        target's trunk) from the caller's worker; the caller hears `moh` while it rings and is
        bridged to it on answer (the call then ends when either hangs up); unanswered within
        `ring_timeout` s, or refused, `on_failed(result)` is called."""
        self.transfer_failed = on_failed
        moh = moh or self.default_moh
        if moh and self.media_ready:
            self._command(p.Play(leg=self.leg, files=prompts.playable(moh), play_id=f"{self.call_id}-xfer{next(self._plays)}",
                                 loop=True))
        who = identity(self.caller, self.caller_name, self.identity_host) if self.identity_host else None
        self._apply(self.core.transfer_out(uri, ring_timeout, who or "", time.monotonic()))
        self.log.info("call.transfer_out", target=uri, b_leg=self.b_leg)

    # ------------------------------------------------------------ consult (acd/consult.py)

    def consult_started(self, agent_leg: str, moh: tuple[str, ...]) -> None:
        """The agent consults someone: she and the caller are unbridged, the caller hears hold
        music (the queue's), the recording pauses (the consult is not the caller's talk)."""
        self._apply(self.core.consult_started(agent_leg, moh))

    def consult_answered(self, agent_leg: str, leg: str) -> None:
        """The consulted party answered: the agent and it talk (the caller keeps the music)."""
        self._command(p.Bridge(leg_a=agent_leg, leg_b=leg))

    def consult_back(self, agent_leg: str) -> None:
        """The consult ended without a transfer: the music stops, agent and caller talk again."""
        self._apply(self.core.consult_back(agent_leg))

    def consult_completed(self, agent_leg: str, leg: str, external_uri: str) -> None:
        """Attended transfer: the agent's leg is hung up, the caller is bridged to the consulted
        party's leg (the music stops). A consulted agent's leg becomes the call's agent leg; an
        external party's is the call's transfer leg (its hang-up ends the call). The queue's
        recording of the agent's part ends."""
        self._apply(self.core.consult_completed(agent_leg, leg, external_uri, time.monotonic()))

    def continue_in_flow(self, flow: str) -> None:
        """Go on at the start of `flow` (a transfer to a flow), variables kept."""
        if self.run is None or self.hangup is not None:
            return
        self.execute(self.run.jump(flow))

    def set_recording(self, paused: bool) -> str | None:
        """Pause (e.g. while a card number is read out) or resume this call's recording.
        Returns an error text, or None."""
        error, out = self.core.set_recording(paused)
        self._apply(out)
        if error is None and not self.holds:
            self.log.info("call.recording_paused" if paused else "call.recording_resumed")
        return error

    def _start_message(self, action: RecordMessage) -> None:
        path = os.path.join(self.recordings_dir, "voicemail", action.box, f"{self.call_id}.wav")
        self.log.info("call.voicemail_recording", box=action.box, path=path)
        self._apply(self.core.start_message(action.box, self.caller, path, action.max_seconds, time.monotonic()))

    def _connect(self, action: Connect) -> None:
        path = os.path.join(self.recordings_dir, f"{self.call_id}.wav")
        self._apply(self.core.connect(action, path, time.monotonic()))
        self.log.info("call.transfer", target=action.uri, b_leg=self.b_leg)

    def _command(self, cmd: p.Message) -> None:
        if not self.send(self.worker, cmd):
            self.log.error("call.worker_unreachable", command=cmd.type)

    def _feed(self, event: FlowEvent) -> None:
        if self.run is not None and self.hangup is None:
            self.execute(self.run.feed(event))

    # ------------------------------------------------------------ worker -> flow

    def on_event(self, msg: p.Message) -> None:
        if isinstance(msg, p.TransferRequested):
            self._transfer_refused(msg)
            return
        if isinstance(msg, p.HoldState):
            self._hold_changed(msg)
            return
        leg = getattr(msg, "leg", None)
        if leg and leg != self.leg and self.supervision is not None and leg == self.supervision.leg:
            if self.supervisions is not None:
                self.supervisions.on_event(self.supervision, msg)
            return
        if leg and leg != self.leg:
            # another leg of this call: an agent's ring or a transfer target. A leg we already
            # let go of (a cancelled ring) still reports its end; that is not the caller's.
            # the agent's wrap-up line (after the caller left) is the customer book's, even
            # though the queue still counts that leg as its own until it ends
            if isinstance(msg, p.CallState) and leg != self.b_leg:
                self._apply(self.core.other_leg_state(leg, msg.state, msg.code, time.monotonic()))
            if leg == self.wrapup_leg and self.customers is not None:
                self.customers.line_event(self, msg)
            elif self.acd is not None and self.acd.owns_leg(self, leg):
                self.acd.agent_leg_event(self, msg)
            elif leg == self.b_leg:
                if isinstance(msg, p.CallState):
                    self._apply(self.core.transfer_state(leg, msg.state, msg.code, time.monotonic()))
                elif isinstance(msg, p.Error):
                    self.log.error("call.b_leg_error", command=msg.command, error=msg.message)
            return
        if isinstance(msg, p.CallState):
            # "connecting" = our 200 OK is out: the caller is answered (and billed) from here;
            # "disconnected": the core decides how the call is stored
            if msg.state == "disconnected" and self.ended:
                # closed already (the daemon stopping closed it as failed, then the worker's
                # last event came): expected, not illegal
                self.log.info("call.end_after_close", code=msg.code)
                return
            self._apply(self.core.caller_state(msg.state, msg.code, msg.reason, time.monotonic()))
        elif isinstance(msg, p.Bridged):
            if self.acd is not None and self.core.bridged(msg.other):
                self.acd.bridged(self, msg.other)
        elif isinstance(msg, p.MediaReady):
            self.media_ready = True
            if self.pending_play is not None:
                play, self.pending_play = self.pending_play, None
                self._play(play)
            elif self.queued is not None:
                self._play_moh()
        elif isinstance(msg, p.PlaybackDone):
            if msg.play_id and msg.play_id == self.callback_play_id:
                self._callback_next(self.callback_then)
            elif msg.play_id and msg.play_id == self.announce_play_id:
                self.announce_play_id = ""
                self._play_moh()  # back to the hold music after an announcement
            elif msg.play_id == self.play_id:
                self.play_id = ""
                self._feed(PromptsDone(interrupted=msg.interrupted))
        elif isinstance(msg, p.Digit):
            digit = msg.digit.upper()  # SIP INFO senders write a-d too (RFC 4733 events 12-15)
            if len(digit) != 1 or digit not in inputs.DTMF_DIGITS:
                # the worker filters too; the controller trusts no one with what reaches a flow
                self.log.warning("call.digit_refused", digit=repr(msg.digit[:8]), method=msg.method[:16])
                return
            self.log.info("call.digit", digit=digit, method=msg.method)
            self._record(rec.DigitHeard(digit, msg.method))
            if self.message is not None and digit == "#":
                # "press the pound key when you are done"
                self._apply(self.core.stop_message(time.monotonic(), feed=True))
            elif self.callback_collect_id:
                pass  # the callback number being keyed in: the worker's collect has it
            elif self.queued is not None and self.acd is not None:
                self.acd.digit(self, digit)  # an exit key, maybe
            else:
                self._feed(DigitPressed(digit))
        elif isinstance(msg, p.DigitsCollected):
            if msg.collect_id and msg.collect_id == self.callback_collect_id:
                self.callback_collect_id = ""
                digits = inputs.dtmf_digits(msg.digits[:MAX_COLLECTED])
                self._record(rec.DigitsHeard(digits, msg.reason, purpose="callback"))
                if self.queued is not None:
                    self._callback_number(self.queued, digits.rstrip("#"))
                return
            if msg.collect_id == self.collect_id:
                self.collect_id = ""
                digits = inputs.dtmf_digits(msg.digits[:MAX_COLLECTED])
                if digits != msg.digits:
                    self.log.warning("call.digits_filtered", got=repr(msg.digits[:40]), kept=digits)
                self._record(rec.DigitsHeard(digits, msg.reason))
                self._feed(DigitsEntered(digits, msg.reason))
        elif isinstance(msg, p.Error):
            self.log.error("call.worker_error", command=msg.command, error=msg.message)
            self._apply(self.core.worker_error(msg.command, msg.message))
            if msg.command == "play" and self.play_id:
                # a prompt that cannot play must not leave the caller in silence forever
                self.play_id = ""
                self._feed(PromptsDone(interrupted=True))

    # ------------------------------------------------------------ hold (RFC 3264 8.4)

    def _hold_changed(self, msg: p.HoldState) -> None:
        """A party's phone holds or resumes (RFC 3264 8.4): the core decides (hold music for
        the other party, the stretch kept, the recording paused and marked); queue_log gets
        HOLD / UNHOLD through the queue runtime as the records are applied."""
        if self.ended:
            return  # an outbound call's record is closed by outbound.py, not by the core
        self._apply(self.core.hold_changed(msg.leg, msg.held, msg.direction, time.monotonic()))

    def close_holds(self, how: str) -> None:
        """The call (or the held party's leg) ends while on hold: the stretch ends there."""
        self._apply(self.core.close_holds(time.monotonic(), how))

    def _transfer_refused(self, msg: p.TransferRequested) -> None:
        """A REFER, INVITE-with-Replaces or 3xx on one of this call's legs (caller or
        agent). The worker has already refused it (603) and dialled nothing. A plain REFER
        from the connected agent's phone is her Transfer button: the controller applies the
        plan's rules (AcdRuntime.blind_transfer: a queue or flow named by the Refer-To's user
        part); anything else goes on as it was and the attempt is kept in the call's record."""
        side = ("caller" if msg.leg == self.leg else "agent" if msg.leg == self.queue_agent_leg
                else "transfer_target" if msg.leg == self.b_leg else "agent_ring")
        if side == "agent" and msg.via == "refer" and not msg.replaces and self.acd is not None:
            q = self.acd.calls.get(self.call_id)
            if q is not None and q.agent is not None and q.agent_leg == msg.leg:
                kind, target = self.acd.refer_target(self, msg.target)
                if kind != "uri":  # the plan names it: made, or refused (and recorded) by the rules
                    self.acd.blind_transfer(q.agent, kind, target, "refer")
                    return
        self.log.warning("call.transfer_refused", via=msg.via, target=msg.target,
                         replaces=msg.replaces, side=side, refused_leg=msg.leg)
        self._record(rec.TransferRefused(msg.via, msg.target, msg.replaces, side, msg.leg))

    def fail(self, cause: str) -> None:
        """The worker holding this call is gone (or the daemon stops): the record is closed
        as failed."""
        if self.ended:
            return
        self._cancel_io()
        self._apply(self.core.worker_lost(cause, time.monotonic()))

    def _record_end(self, r: rec.CallEnded) -> None:
        """The record is closed (the writer wrote it): integrations and logs hear of it."""
        self.ended_at = rec.wall_clock(r.at)
        self._cancel_io()
        run = self.run
        self.notify("ended", {"caller": self.caller, "called": self.called, "flow": run.flow.name if run else None,
                              "disposition": r.disposition, "cause": r.cause, "code": r.code, "by": r.by,
                              "arrived_at": self.arrived_at, "answered_at": self.answered_at,
                              "ended_at": self.ended_at, "variables": dict(run.variables) if run else {}})
        self.log.info("call.ended", disposition=r.disposition, cause=r.cause, code=r.code, by=r.by)
