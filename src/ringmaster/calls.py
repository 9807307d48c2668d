"""CallSession: one inbound call, from its INVITE at a worker to its row in the store.

It is the adapter between a FlowRun (sans-IO: events in, actions out) and the worker
protocol: it turns flow actions into commands for the leg's worker, worker events into
flow events, and keeps the call record up to date.
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
from ringmaster.flows.actions import (
    Action,
    AnswerCall,
    Answered,
    CallbackStored,
    CollectDigits,
    Connect,
    ConnectEnded,
    DigitPressed,
    DigitsEntered,
    EnqueueCall,
    FlowEvent,
    HangUp,
    HttpAnswered,
    HttpRequest,
    MessageRecorded,
    PlayPrompts,
    PromptsDone,
    QueueLeft,
    RecordMessage,
    Speak,
    StoreCallback,
)
from ringmaster.flows.interpreter import FlowRun
from ringmaster.store import Store

if TYPE_CHECKING:
    from ringmaster.acd.config import CallbackConfig
    from ringmaster.acd.runtime import AcdRuntime
    from ringmaster.customers import CustomerBook, CustomerContext
    from ringmaster.lookups import LookupClient
    from ringmaster.supervision import Supervision, Supervisions
    from ringmaster.tts import Speech

log = structlog.get_logger("ringmaster.call")

Send = Callable[[str, p.Message], bool]
MAX_COLLECTED = 64  # a collect step's `max` is at most 64 digits


def new_call_id() -> str:
    # sortable by time, unique across restarts: what operators paste into searches
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def sip_user(uri: str) -> str:
    """User part of a SIP URI in any of its forms ('"Bob" <sip:+45123@host>;tag=x')."""
    u = uri
    if "<" in u:
        u = u.split("<", 1)[1].split(">", 1)[0]
    u = u.split(";", 1)[0]
    if ":" in u and u.split(":", 1)[0] in ("sip", "sips", "tel"):
        u = u.split(":", 1)[1]
    return u.split("@", 1)[0] if "@" in u else ""


def display_name(from_value: str) -> str:
    """The display name of a From header value ('"Dana Jensen" <sip:...>' or 'Dana <sip:...>'),
    made safe to quote again (RFC 3261 25.1 quoted-string: no quote, backslash or control
    character), at most 64 characters; "" when there is none."""
    v = from_value.strip()
    if v.startswith('"'):
        name = v[1:].split('"', 1)[0]
    elif "<" in v:
        name = v.split("<", 1)[0]
    else:
        return ""
    return "".join(c for c in name if c.isprintable() and c not in '"\\').strip()[:64]


def identity(number: str, name: str, host: str) -> str | None:
    """The caller's identity as a name-addr for an agent leg's From / P-Asserted-Identity
    ('"Dana" <sip:4511223344@edge>'), or None when the number is not a plain SIP user part
    (RFC 3261 25.1 unreserved characters; a withheld or odd caller ID is not passed on)."""
    if not number or any(not (c.isalnum() or c in "+-_.!~*'()&=$,;?/") for c in number) or len(number) > 64:
        return None
    uri = f"sip:{number}@{host}"
    return f'"{name}" <{uri}>' if name else f"<{uri}>"


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
    hangup: HangUp | None = None  # set once we decided to end the call
    disposition: str = ""
    # transfer (B) leg
    connect: Connect | None = None
    b_leg: str = ""
    b_answered_at: float | None = None
    rec_id: str = ""
    _ring_timer: asyncio.TimerHandle | None = None
    collect_id: str = ""
    # voicemail being recorded: (rec_id, path, started monotonic), stopped by #, hang-up or timer
    message: tuple[str, str, float] | None = None
    message_box: str = ""
    # told when a message is stored: (rec_id, call_id, box, caller, path, seconds); the controller's
    # voicemail announces it once the worker's RecordingDone says the WAV is whole
    on_message: Callable[[str, str, str, str, str, float], None] = lambda *a: None
    # told of the call's events integrations hear of (webhooks), right after their record is
    # written: ("ended", {...}) and ("callback", {...})
    notify: Callable[[str, dict[str, Any]], None] = lambda kind, data: None
    _message_timer: asyncio.TimerHandle | None = None
    # ACD: the queue the caller waits in, its hold music, the agent leg once bridged
    acd: AcdRuntime | None = None
    queued: str | None = None
    moh: tuple[str, ...] = ()
    moh_play_id: str = ""
    announce_play_id: str = ""
    queue_agent_leg: str = ""
    queue_rec_id: str = ""
    ended_by_agent: bool = False
    abandoned_in_queue: bool = False
    # the queue turned the caller out unserved (EXITEMPTY, EXITWITHTIMEOUT, FULL, JOINEMPTY) and
    # nothing served it since (an agent of an overflow queue, a message, a callback, a transfer):
    # its end is `abandoned`, not `completed`, whoever hangs up
    unserved_exit: str = ""
    # hold (RFC 3264 8.4) from either party's phone: leg -> (wall time it began, party); the
    # other party hears `hold_moh` (the queue's moh, else the plan's default hold music)
    holds: dict[str, tuple[float, str]] = field(default_factory=dict)
    hold_seconds: float = 0.0
    hold_count: int = 0
    default_moh: tuple[str, ...] = ()
    # who is calling, for the agent's phone: the From's display name, the host the identity
    # URIs carry (the edge), and whether agent legs also get P-Asserted-Identity (sip.send_pai)
    caller_name: str = ""
    identity_host: str = ""
    send_pai: bool = False
    hold_play_id: str = ""
    recording_started_at: float | None = None  # wall time the live recording began (hold marks)
    recording_paused_by_operator: bool = False
    # IO the flow asks for and waits on: speech to render, lookups to make (cancelled at the end)
    speech: Speech | None = None
    lookups: LookupClient | None = None
    _io: set[asyncio.Task[None]] = field(default_factory=set)
    # the customer (docs/customers.md): its key as stored, the context its offers carry, and
    # the agent's leg kept up after the caller left for a wrap-up code keyed on the phone
    customers: CustomerBook | None = None
    customer_key: str | None = None
    customer: CustomerContext | None = None
    wrapup_leg: str = ""
    # an agent's consult is under way (acd/consult.py): the caller hears hold music meanwhile
    consulting: bool = False
    # a blind transfer to an external number that was not answered (result: busy, no_answer,
    # ...): the ACD's "back to the queue"; None for a flow's transfer step (the flow goes on)
    transfer_failed: Callable[[str], None] | None = None
    # a supervisor listening, whispering or barging on the conversation (supervision.py)
    supervision: Supervision | None = None
    supervisions: Supervisions | None = None
    # a queued callback being asked for (docs/callbacks.md): the number's collect, the prompt
    # that ends it (then: hang up, back to the hold music, or on in the flow with the answer)
    callback_collect_id: str = ""
    callback_play_id: str = ""
    callback_then: Any = None
    _plays: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.log = log.bind(call_id=self.call_id, worker=self.worker, leg=self.leg)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    # ------------------------------------------------------------ flow -> worker

    def start(self) -> None:
        assert self.run is not None
        self.log.info("call.flow_started", flow=self.run.flow.name, caller=self.caller, called=self.called)
        self.execute(self.run.start())

    def reject(self, code: int, cause: str) -> None:
        self.hangup = HangUp(code, cause)
        self.disposition = "rejected"
        self._command(p.Reject(leg=self.leg, code=code))

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
                self.hangup = action
                self._end_b_leg()
                if self.answered_at is None:
                    code = action.code if action.code >= 300 else 480
                    self.disposition = "rejected"
                    self._command(p.Reject(leg=self.leg, code=code))
                else:
                    self._command(p.Hangup(leg=self.leg))

    # ------------------------------------------------------------ queued callbacks (docs/callbacks.md)

    def _flow_callback(self, action: StoreCallback) -> None:
        """A flow's `callback` step: the number is checked, the callback queued; the caller
        hears the confirm prompt with the position and wait (or the invalid prompt), then the
        step gets CallbackStored."""
        from ringmaster.callbacks import NumberRefused

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
        self.store.event(self.call_id, "CALLBACK_KEY", queue=queue)
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
        from ringmaster.callbacks import NumberRefused

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
        self.queued, self.announce_play_id = None, ""
        self._callback_stored(cb_id, number, queue)
        files = (self.acd.call_prompts(self, [spec.confirm_prompt]) if spec is not None else []) + position
        self._callback_say(files, HangUp(200, cause="callback_requested"))

    def _callback_stored(self, cb_id: str, number: str, queue: str) -> None:
        self.unserved_exit = ""  # served: a callback is what the caller asked for
        self.store.event(self.call_id, "CALLBACK", callback_id=cb_id, queue=queue, number=number)
        self.notify("callback", {"caller": self.caller, "queue": queue, "number": number, "callback_id": cb_id})
        self.log.info("call.callback_requested", queue=queue, callback=cb_id)

    def _callback_refused(self, reason: str, prompt: str, then: Any) -> None:
        self.log.warning("call.callback_refused", reason=reason)
        self.store.event(self.call_id, "CALLBACK_REFUSED", reason=reason)
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
            self.store.event(self.call_id, "SAY_FAILED", language=action.language)
            self._feed(PromptsDone(interrupted=True))
            return
        self.store.event(self.call_id, "SAY", language=action.language, voice=action.voice, text=action.text)
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
        self.store.event(self.call_id, "HTTP", endpoint=action.name, result=answer.result, status=answer.status, ms=ms)
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
        self.queued, self.moh = queue, moh
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

    def dial_agent(self, leg: str, uri: str, headers: tuple[tuple[str, str], ...], direct: bool = False) -> None:
        """Ring an agent: the leg's From (and, if sip.send_pai, P-Asserted-Identity, RFC 3325)
        carry the caller's number and name, so the phone shows who is calling; the IVR's
        variables stay in their X- headers. `direct`: the bridge will go direct (sip.direct_media,
        not recorded), so the INVITE offers the caller's media from the start (Dial.offer_media_of)."""
        self.bind_leg(leg)
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
        self._command(p.Hangup(leg=leg, code=code))

    def queue_bridged(self, agent_leg: str, recording: str | None) -> None:
        self.queued, self.moh_play_id, self.announce_play_id = None, "", ""
        self.unserved_exit = ""
        self.queue_agent_leg = agent_leg
        # stops the hold music
        self._command(p.Bridge(leg_a=self.leg, leg_b=agent_leg, direct_media=self.direct_media and not recording))
        if recording:
            self.recording_started_at = time.time()
            self.queue_rec_id = f"{self.call_id}-qr{next(self._plays)}"
            self._command(p.RecordStart(rec_id=self.queue_rec_id, legs=(self.leg, agent_leg), path=recording))
            self.store.call_recording(self.call_id, recording)

    def queue_left(self, reason: str, flow: str | None) -> None:
        """The caller left the queue unserved (reason: LeaveQueue's) for `flow`, or back to
        the flow it came from. Only the exit key is the caller's own choice."""
        self.queued, self.moh_play_id, self.announce_play_id = None, "", ""
        if reason != "key":
            self.unserved_exit = reason
        self._command(p.StopPlay(leg=self.leg))
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
        if (self.direct_media and self.queue_agent_leg and not self.holds and not self.queue_rec_id
                and self.hangup is None and not self.ended):
            self._command(p.Bridge(leg_a=self.leg, leg_b=self.queue_agent_leg, direct_media=True))

    def end_from_queue(self, cause: str) -> None:
        """The agent hung up: the caller's call is complete."""
        self.end_supervision("agent_hangup")
        self.close_holds("agent_hangup")
        self.queue_agent_leg = ""
        self.ended_by_agent = True
        self._stop_queue_recording()
        self.execute([HangUp(200, cause=cause)])

    def continue_after_agent(self, flow: str) -> None:
        """The agent hung up and the queue says `continue_on_agent_hangup: FLOW` (Asterisk's
        Queue option c): the caller goes on at that flow's start (e.g. a survey) instead of
        being hung up. The call record keeps the agent and talk time; what the flow collects
        lands in its variables and DIGITS events."""
        self.end_supervision("agent_hangup")
        self.close_holds("agent_hangup")
        self.queue_agent_leg = ""
        self._stop_queue_recording()
        self._command(p.StopPlay(leg=self.leg))  # hold music, if the agent hung up holding
        self.store.event(self.call_id, "CONTINUE", flow=flow, after="agent_hangup")
        self.log.info("call.continue_after_agent", flow=flow)
        if self.run is None or self.hangup is not None:
            return
        self.execute(self.run.jump(flow))

    def transferred_away(self, agent_leg: str) -> None:
        """The agent sent the caller on (a blind transfer): her leg is hung up (BYE), the
        queue's recording of this part ends (the next agent's part is recorded anew if its
        queue records) and the caller is no longer bridged to anyone."""
        self.end_supervision("transfer")
        self.queue_agent_leg = ""
        self._stop_queue_recording()
        self._command(p.StopPlay(leg=self.leg))  # hold music, if she transferred while holding
        if agent_leg:
            self.hangup_leg(agent_leg)

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
        self.connect = Connect(uri, record=False, ring_timeout=ring_timeout)
        self.b_leg = f"{self.call_id}-b{next(self._plays)}"
        self.b_answered_at = None
        self.bind_leg(self.b_leg)
        self.log.info("call.transfer_out", target=uri, b_leg=self.b_leg)
        who = identity(self.caller, self.caller_name, self.identity_host) if self.identity_host else None
        self._command(p.Dial(leg=self.b_leg, uri=uri, from_uri=who or ""))
        self._ring_timer = asyncio.get_running_loop().call_later(ring_timeout, self._ring_timeout, self.b_leg)

    # ------------------------------------------------------------ consult (acd/consult.py)

    def _pause_for_consult(self, pause: bool) -> None:
        rec_id = self.queue_rec_id or self.rec_id
        if rec_id and not self.recording_paused_by_operator and not self.holds:
            self._command(p.RecordPause(rec_id=rec_id) if pause else p.RecordResume(rec_id=rec_id))

    def consult_started(self, agent_leg: str, moh: tuple[str, ...]) -> None:
        """The agent consults someone: she and the caller are unbridged, the caller hears hold
        music (the queue's), the recording pauses (the consult is not the caller's talk)."""
        self.consulting = True
        self._command(p.Unbridge(leg_a=self.leg, leg_b=agent_leg))
        self._pause_for_consult(True)
        moh = moh or self.default_moh
        if moh:
            self.hold_play_id = f"{self.call_id}-consult{next(self._plays)}"
            self._command(p.Play(leg=self.leg, files=prompts.playable(moh), play_id=self.hold_play_id, loop=True))

    def consult_answered(self, agent_leg: str, leg: str) -> None:
        """The consulted party answered: the agent and it talk (the caller keeps the music)."""
        self._command(p.Bridge(leg_a=agent_leg, leg_b=leg))

    def consult_back(self, agent_leg: str) -> None:
        """The consult ended without a transfer: the music stops, agent and caller talk again."""
        self.consulting = False
        self._command(p.StopPlay(leg=self.leg))
        recorded = bool(self.queue_rec_id or self.rec_id)
        if not self.holds:
            self._command(p.Bridge(leg_a=self.leg, leg_b=agent_leg, direct_media=self.direct_media and not recorded))
        self._pause_for_consult(False)

    def consult_completed(self, agent_leg: str, leg: str, external_uri: str) -> None:
        """Attended transfer: the agent's leg is hung up, the caller is bridged to the consulted
        party's leg (the music stops). A consulted agent's leg becomes the call's agent leg; an
        external party's is the call's transfer leg (its hang-up ends the call). The queue's
        recording of the agent's part ends."""
        self.consulting = False
        self._stop_queue_recording()
        self.hangup_leg(agent_leg)
        if external_uri:
            self.queue_agent_leg = ""
            self.connect = Connect(external_uri, record=False)
            self.b_leg, self.b_answered_at = leg, time.time()
        else:
            self.queue_agent_leg = leg
        self._command(p.Bridge(leg_a=self.leg, leg_b=leg, direct_media=self.direct_media))

    def continue_in_flow(self, flow: str) -> None:
        """Go on at the start of `flow` (a transfer to a flow), variables kept."""
        if self.run is None or self.hangup is not None:
            return
        self.execute(self.run.jump(flow))

    def set_recording(self, paused: bool) -> str | None:
        """Pause (e.g. while a card number is read out) or resume this call's recording.
        Returns an error text, or None."""
        rec_id = self.queue_rec_id or self.rec_id
        if not rec_id:
            return "this call is not being recorded"
        self.recording_paused_by_operator = paused
        if self.holds:
            # on hold the recording is paused already; it resumes with the call only if the
            # operator has not paused it in the meantime
            self.store.event(self.call_id, "RECORDING_PAUSED" if paused else "RECORDING_RESUMED", on_hold=True)
            return None
        self._command(p.RecordPause(rec_id=rec_id) if paused else p.RecordResume(rec_id=rec_id))
        self.store.event(self.call_id, "RECORDING_PAUSED" if paused else "RECORDING_RESUMED")
        self.log.info("call.recording_paused" if paused else "call.recording_resumed")
        return None

    def _stop_queue_recording(self) -> None:
        if self.queue_rec_id:
            self._command(p.RecordStop(rec_id=self.queue_rec_id))
            self.queue_rec_id = ""

    def _start_message(self, action: RecordMessage) -> None:
        rec_id = f"{self.call_id}-vm{next(self._plays)}"
        path = os.path.join(self.recordings_dir, "voicemail", action.box, f"{self.call_id}.wav")
        self.message = (rec_id, path, time.monotonic())
        self.message_box = action.box
        self.store.voicemail_started(self.call_id, action.box, self.caller, path, time.time())
        self.log.info("call.voicemail_recording", box=action.box, path=path)
        self._command(p.RecordStart(rec_id=rec_id, legs=(self.leg,), path=path))
        self._message_timer = asyncio.get_running_loop().call_later(action.max_seconds, self._stop_message, True)

    def _stop_message(self, feed: bool) -> None:
        if self.message is None:
            return
        rec_id, path, started = self.message
        self.message = None
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None
        seconds = time.monotonic() - started
        self._command(p.RecordStop(rec_id=rec_id))
        self.store.voicemail_finished(self.call_id, path, seconds)
        self.unserved_exit = ""  # served: the caller left a message
        self.log.info("call.voicemail_stored", path=path, seconds=round(seconds, 1))
        self.on_message(rec_id, self.call_id, self.message_box, self.caller, path, seconds)
        if feed:
            self._feed(MessageRecorded(path, seconds))

    def _connect(self, action: Connect) -> None:
        self.connect = action
        self.b_leg = f"{self.call_id}-b{next(self._plays)}"
        self.b_answered_at = None
        self.bind_leg(self.b_leg)
        self.store.event(self.call_id, "TRANSFER", target=action.uri)
        self.log.info("call.transfer", target=action.uri, b_leg=self.b_leg)
        self._command(p.Dial(leg=self.b_leg, uri=action.uri))
        loop = asyncio.get_running_loop()
        self._ring_timer = loop.call_later(action.ring_timeout, self._ring_timeout, self.b_leg)

    def _ring_timeout(self, b_leg: str) -> None:
        if self.b_leg == b_leg and self.b_answered_at is None:
            self.log.info("call.transfer_no_answer", b_leg=b_leg)
            self._command(p.Hangup(leg=b_leg, code=487))

    def _end_b_leg(self) -> None:
        if self._ring_timer is not None:
            self._ring_timer.cancel()
            self._ring_timer = None
        if self.rec_id:
            self._command(p.RecordStop(rec_id=self.rec_id))
            self.rec_id = ""
        if self.b_leg:
            self._command(p.Hangup(leg=self.b_leg))

    def _b_event(self, msg: p.Message) -> None:
        if isinstance(msg, p.CallState):
            if msg.state == "confirmed" and self.b_answered_at is None:
                self.b_answered_at = time.time()
                self.unserved_exit = ""
                self.transfer_failed = None
                if self._ring_timer is not None:
                    self._ring_timer.cancel()
                self.store.event(self.call_id, "TRANSFER_ANSWERED", target=self.connect.uri if self.connect else "")
                record = self.connect is not None and self.connect.record
                self._command(p.Bridge(leg_a=self.leg, leg_b=self.b_leg, direct_media=self.direct_media and not record))
                if self.connect is not None and self.connect.record:
                    self.recording_started_at = time.time()
                    self.rec_id = f"{self.call_id}-r{next(self._plays)}"
                    path = os.path.join(self.recordings_dir, f"{self.call_id}.wav")
                    self._command(p.RecordStart(rec_id=self.rec_id, legs=(self.leg, self.b_leg), path=path))
                    self.store.call_recording(self.call_id, path)
            elif msg.state == "disconnected":
                self.close_holds("transfer_target_hangup")
                b_leg, self.b_leg = self.b_leg, ""
                if self._ring_timer is not None:
                    self._ring_timer.cancel()
                if self.rec_id:
                    self._command(p.RecordStop(rec_id=self.rec_id))
                    self.rec_id = ""
                if self.b_answered_at is not None:
                    # the target hung up after talking: the caller's call is over too
                    self.store.event(self.call_id, "TRANSFER_ENDED", by="target")
                    self.execute([HangUp(200, cause="transfer_target_hangup")])
                else:
                    result = {486: "busy", 487: "no_answer", 408: "no_answer", 480: "no_answer",
                              404: "not_found", 603: "declined"}.get(msg.code, "failed")
                    self.store.event(self.call_id, "TRANSFER_FAILED", code=msg.code, result=result, b_leg=b_leg)
                    self.log.info("call.transfer_failed", code=msg.code, result=result)
                    if self.transfer_failed is not None:  # an agent's blind transfer out: back to her queue
                        failed, self.transfer_failed = self.transfer_failed, None
                        failed(result)
                    else:
                        self._feed(ConnectEnded(result, msg.code))
        elif isinstance(msg, p.Error):
            self.log.error("call.b_leg_error", command=msg.command, error=msg.message)

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
            if leg == self.wrapup_leg and self.customers is not None:
                self.customers.line_event(self, msg)
            elif self.acd is not None and self.acd.owns_leg(self, leg):
                self.acd.agent_leg_event(self, msg)
            elif leg == self.b_leg:
                self._b_event(msg)
            return
        if isinstance(msg, p.CallState):
            # "connecting" = our 200 OK is out: the caller is answered (and billed) from here
            if msg.state in ("connecting", "confirmed") and self.answered_at is None:
                self.answered_at = time.time()
                self.store.call_answered(self.call_id, self.answered_at)
                self.log.info("call.answered")
                self._feed(Answered())
            elif msg.state == "disconnected":
                self._end_b_leg()
                self._stop_message(feed=False)  # hanging up is how most messages end
                self._leave_acd()
                self._ended(msg.code, msg.reason)
        elif isinstance(msg, p.Bridged):
            if self.acd is not None and msg.other == self.queue_agent_leg:
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
            self.store.event(self.call_id, "DIGIT", digit=digit, method=msg.method)
            if self.message is not None and digit == "#":
                self._stop_message(feed=True)  # "press the pound key when you are done"
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
                self.store.event(self.call_id, "DIGITS", digits=digits, reason=msg.reason, purpose="callback")
                if self.queued is not None:
                    self._callback_number(self.queued, digits.rstrip("#"))
                return
            if msg.collect_id == self.collect_id:
                self.collect_id = ""
                digits = inputs.dtmf_digits(msg.digits[:MAX_COLLECTED])
                if digits != msg.digits:
                    self.log.warning("call.digits_filtered", got=repr(msg.digits[:40]), kept=digits)
                self.store.event(self.call_id, "DIGITS", digits=digits, reason=msg.reason)
                self._feed(DigitsEntered(digits, msg.reason))
        elif isinstance(msg, p.Error):
            self.log.error("call.worker_error", command=msg.command, error=msg.message)
            if msg.command == "record_start" and (self.queue_rec_id or self.rec_id):
                # the recording never began (the caller left at that very moment): say so
                self.queue_rec_id = self.rec_id = ""
                self.store.call_recording(self.call_id, None)
                self.store.event(self.call_id, "RECORDING_FAILED", error=msg.message)
            self.store.event(self.call_id, "ERROR", command=msg.command, error=msg.message)
            if msg.command == "play" and self.play_id:
                # a prompt that cannot play must not leave the caller in silence forever
                self.play_id = ""
                self._feed(PromptsDone(interrupted=True))

    # ------------------------------------------------------------ hold (RFC 3264 8.4)

    def _talking_to(self, leg: str) -> tuple[str, str] | None:
        """(party of `leg`, the leg it talks to) for a bridged call's caller, agent or transfer
        target; None for a leg that is not in a conversation (a ring, an IVR-only call)."""
        other = self.queue_agent_leg or (self.b_leg if self.b_answered_at is not None else "")
        if not other:
            return None
        if leg == self.leg:
            return "caller", other
        if leg == self.queue_agent_leg:
            return "agent", self.leg
        if leg == self.b_leg:
            return "transfer_target", self.leg
        return None

    def _hold_changed(self, msg: p.HoldState) -> None:
        """A party's phone holds (re-INVITE sendonly/inactive) or resumes (sendrecv): the
        other party hears hold music meanwhile (the bridge is cut, so not the holding phone's
        own sound), the stretch is kept as hold time, queue_log gets HOLD / UNHOLD and a
        recording is paused (a silent stretch) and marked with its offsets."""
        talk = self._talking_to(msg.leg)
        if talk is None or self.hangup is not None or self.ended or self.consulting:
            return
        party, other = talk
        far = other if msg.leg == self.leg else msg.leg  # the bridge is caller <-> far
        now = time.time()
        offset = round(now - self.recording_started_at, 2) if self.recording_started_at is not None else None
        if msg.held and msg.leg not in self.holds:
            first = not self.holds
            self.holds[msg.leg] = (now, party)
            self.hold_count += 1
            self.store.event(self.call_id, "HOLD", now, party=party, direction=msg.direction,
                             recording_offset=offset)
            self.log.info("call.hold", party=party, direction=msg.direction)
            if self.acd is not None:
                self.acd.hold_changed(self, party, True, 0.0)
            if first:
                self._command(p.Unbridge(leg_a=self.leg, leg_b=far))
                rec_id = self.queue_rec_id or self.rec_id
                if rec_id and not self.recording_paused_by_operator:
                    self._command(p.RecordPause(rec_id=rec_id))
            moh = self.moh or self.default_moh
            if moh and other not in self.holds:
                self.hold_play_id = f"{self.call_id}-hold{next(self._plays)}"
                self._command(p.Play(leg=other, files=prompts.playable(moh), play_id=self.hold_play_id, loop=True))
            if msg.leg in self.holds and self.holds.keys() >= {self.leg, other}:
                self._command(p.StopPlay(leg=msg.leg))  # both hold: nobody listens to music
        elif not msg.held and msg.leg in self.holds:
            self._end_hold(msg.leg, now, offset, "resumed")
            if other not in self.holds:
                self._command(p.StopPlay(leg=other))
            if not self.holds:
                recorded = bool(self.queue_rec_id or self.rec_id)
                self._command(p.Bridge(leg_a=self.leg, leg_b=far,
                                       direct_media=self.direct_media and not recorded))
                rec_id = self.queue_rec_id or self.rec_id
                if rec_id and not self.recording_paused_by_operator:
                    self._command(p.RecordResume(rec_id=rec_id))
            elif moh := (self.moh or self.default_moh):
                # the other party still holds: the one who resumed hears the music now
                self._command(p.Play(leg=msg.leg, files=prompts.playable(moh), play_id=self.hold_play_id, loop=True))

    def _end_hold(self, leg: str, now: float, offset: float | None, how: str) -> None:
        started, party = self.holds.pop(leg)
        seconds = max(0.0, now - started)
        self.hold_seconds += seconds
        self.store.call_hold(self.call_id, self.hold_seconds, self.hold_count)
        self.store.event(self.call_id, "UNHOLD", now, party=party, seconds=round(seconds, 2), how=how,
                         recording_offset=offset)
        self.log.info("call.unhold", party=party, seconds=round(seconds, 2), how=how)
        if self.acd is not None:
            self.acd.hold_changed(self, party, False, seconds)

    def close_holds(self, how: str) -> None:
        """The call (or the held party's leg) ends while on hold: the stretch ends there."""
        now = time.time()
        offset = round(now - self.recording_started_at, 2) if self.recording_started_at is not None else None
        for leg in list(self.holds):
            self._end_hold(leg, now, offset, how)

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
        self.store.event(self.call_id, "TRANSFER_REFUSED", via=msg.via, target=msg.target,
                         replaces=msg.replaces, side=side, leg=msg.leg)

    def _ended(self, code: int, reason: str) -> None:
        if self.ended:
            return
        self.ended_at = time.time()
        self._cancel_io()
        if self.hangup is not None and self.hangup.cause == "transfer_target_hangup":
            by, cause, disposition = "target", self.hangup.cause, "completed"
        elif self.ended_by_agent:
            by, cause, disposition = "agent", "agent_hangup", "completed"
        elif self.hangup is not None:
            by, cause = "ringmaster", self.hangup.cause
            disposition = self.disposition or ("abandoned" if self.unserved_exit else "completed")
        else:
            by, cause = "caller", "caller_hangup"
            # answered by the IVR for hold music, but never served: the caller abandoned
            served = self.answered_at is not None and not self.abandoned_in_queue and not self.unserved_exit
            disposition = "completed" if served else "abandoned"
        self._record_end(disposition, cause, code, by)

    def fail(self, cause: str) -> None:
        """The worker holding this call is gone: close the record as failed."""
        if self.ended:
            return
        self.ended_at = time.time()
        self._cancel_io()
        if self._ring_timer is not None:
            self._ring_timer.cancel()
        self._stop_message(feed=False)
        self.end_supervision("failed")
        self._leave_acd()
        self._record_end("failed", cause, 0, "ringmaster")

    def _leave_acd(self) -> None:
        self.end_supervision("caller_hangup")
        self.close_holds("caller_hangup")
        if self.acd is None:
            return
        self._stop_queue_recording()
        if self.queue_agent_leg and not self.ended_by_agent:
            self.acd.caller_ended_connected(self)  # COMPLETECALLER, the agent leg is hung up
            self.queue_agent_leg = ""
        elif self.queued is not None:
            self.queued = None
            self.abandoned_in_queue = True
            self.acd.caller_gone(self)  # ABANDON

    def _record_end(self, disposition: str, cause: str, code: int, by: str) -> None:
        run = self.run
        if self.customers is not None:
            self.customers.call_identified(self)  # an account keyed in after the queue counts too
        self.store.call_ended(self.call_id, self.ended_at or time.time(), disposition, cause, code, by,
                              run.path if run else [], run.variables if run else {})
        self.notify("ended", {"caller": self.caller, "called": self.called, "flow": run.flow.name if run else None,
                              "disposition": disposition, "cause": cause, "code": code, "by": by,
                              "arrived_at": self.arrived_at, "answered_at": self.answered_at,
                              "ended_at": self.ended_at, "variables": dict(run.variables) if run else {}})
        self.log.info("call.ended", disposition=disposition, cause=cause, code=code, by=by)
