"""Record events: what one call's core says happened, for the store writer.

The call core emits the decided ones (answer, end, holds, recordings, transfers, voicemail);
the call adapter adds the flow's own steps (digits, speech, lookups, callbacks). Each is a small
frozen dataclass; times (`at`) are monotonic seconds as the core was given
them, durations are seconds. `RecordWriter.apply` is the one place that turns them into store
writes (the calls row, call_events rows, the voicemail row), converting monotonic times to
wall-clock epoch seconds at the moment of writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringmaster.store import Store


@dataclass(frozen=True)
class CallAnswered:
    """The caller's leg was answered (our 200 OK is out): billed from `at`."""

    at: float


@dataclass(frozen=True)
class CallEnded:
    """The call is over and how: `disposition` is one of store.Disposition's values
    (completed, rejected, abandoned, failed), `by` who ended it (caller, agent, target,
    ringmaster), `code` the SIP status of the caller leg's end (0: none, a worker died)."""

    at: float
    disposition: str
    cause: str
    code: int
    by: str


@dataclass(frozen=True)
class HoldStarted:
    """A party of the conversation holds (RFC 3264 8.4 re-INVITE, sendonly or inactive)."""

    at: float
    party: str  # caller, agent, transfer_target
    direction: str
    recording_offset: float | None  # seconds into the recording, None when not recorded


@dataclass(frozen=True)
class HoldEnded:
    """A hold stretch ended (`how`: resumed, or the hang-up that ended it); `total_seconds` and
    `count` are the call's hold time and number of holds so far."""

    at: float
    party: str
    seconds: float
    how: str
    recording_offset: float | None
    total_seconds: float
    count: int


@dataclass(frozen=True)
class RecordingStarted:
    """A recording of the conversation was asked of the worker, into `path`."""

    path: str


@dataclass(frozen=True)
class RecordingFailed:
    """The worker could not start the recording (the caller left at that moment, a disk error):
    the call record says it has none."""

    error: str


@dataclass(frozen=True)
class RecordingPaused:
    """An operator paused (`paused`) or resumed the recording; `on_hold`: the call is on hold,
    so the worker's recording is paused already and only the mark is kept."""

    paused: bool
    on_hold: bool


@dataclass(frozen=True)
class TransferDialled:
    """A flow's transfer step dialled `uri` (the B leg)."""

    uri: str


@dataclass(frozen=True)
class TransferAnswered:
    """The transfer target answered: caller and target are bridged."""

    uri: str


@dataclass(frozen=True)
class TransferFailed:
    """The transfer target did not answer: `result` busy, no_answer, not_found, declined, failed."""

    code: int
    result: str
    leg: str


@dataclass(frozen=True)
class TransferEnded:
    """The connected transfer target hung up (`by` = target): the caller's call ends too."""

    by: str


@dataclass(frozen=True)
class FlowContinued:
    """The caller goes on in `flow` after the agent hung up (continue_on_agent_hangup)."""

    flow: str
    after: str


@dataclass(frozen=True)
class VoicemailStarted:
    """A voicemail message for `box` began recording into `path` at `at`."""

    at: float
    box: str
    caller: str
    path: str


@dataclass(frozen=True)
class VoicemailFinished:
    """The message is stopped (# key, hang-up, max length): `seconds` long, in `path`."""

    rec_id: str
    box: str
    path: str
    seconds: float


@dataclass(frozen=True)
class WorkerError:
    """A worker command of this call failed (protocol.Error)."""

    command: str
    message: str


@dataclass(frozen=True)
class LegEnded:
    """One of the call's other legs (an agent's ring, the connected agent, a transfer target)
    ended with SIP `code`. `charged`: the leg carried the call's conversation (it was bridged);
    a ring-all loser or a withdrawn ring is never charged. Not stored: the queue's record
    (queue_log) has the rings' outcomes; this is for the log and the leg audit."""

    leg: str
    role: str
    code: int
    charged: bool


@dataclass(frozen=True)
class DigitHeard:
    """A DTMF digit the caller pressed (RFC 4733 event or SIP INFO: `method`), as the flow got it."""

    digit: str
    method: str


@dataclass(frozen=True)
class DigitsHeard:
    """Digits a collect step (or the callback number's, `purpose` "callback") gathered."""

    digits: str
    reason: str
    purpose: str = ""


@dataclass(frozen=True)
class CallbackKeyPressed:
    """The waiting caller pressed the queue's callback key."""

    queue: str


@dataclass(frozen=True)
class CallbackQueued:
    """A queued callback was taken for the caller (docs/callbacks.md)."""

    callback_id: str
    queue: str
    number: str


@dataclass(frozen=True)
class CallbackRefused:
    """The callback number was refused (`reason`: why, as said in logs)."""

    reason: str


@dataclass(frozen=True)
class Spoken:
    """A `say` step's text was rendered and played."""

    language: str
    voice: str
    text: str


@dataclass(frozen=True)
class SpeechFailed:
    """A `say` step's text could not be rendered: the flow went on."""

    language: str


@dataclass(frozen=True)
class LookupAnswered:
    """An `http` step's request ended: `result` ok / error / timeout..., `status` the HTTP
    status (0: none), `ms` how long it took."""

    endpoint: str
    result: str
    status: int
    ms: int


@dataclass(frozen=True)
class TransferRefused:
    """A REFER, INVITE-with-Replaces or 3xx the worker refused on one of the call's legs."""

    via: str
    target: str
    replaces: bool
    side: str
    leg: str


Record = (CallAnswered | CallEnded | HoldStarted | HoldEnded | RecordingStarted | RecordingFailed
          | RecordingPaused | TransferDialled | TransferAnswered | TransferFailed | TransferEnded
          | FlowContinued | VoicemailStarted | VoicemailFinished | WorkerError | LegEnded | DigitHeard
          | DigitsHeard | CallbackKeyPressed | CallbackQueued | CallbackRefused | Spoken | SpeechFailed
          | LookupAnswered | TransferRefused)
RECORDS = (CallAnswered, CallEnded, HoldStarted, HoldEnded, RecordingStarted, RecordingFailed,
           RecordingPaused, TransferDialled, TransferAnswered, TransferFailed, TransferEnded,
           FlowContinued, VoicemailStarted, VoicemailFinished, WorkerError, LegEnded, DigitHeard,
           DigitsHeard, CallbackKeyPressed, CallbackQueued, CallbackRefused, Spoken, SpeechFailed,
           LookupAnswered, TransferRefused)


def wall_clock(at: float) -> float:
    """Epoch seconds of the monotonic time `at` (as time.monotonic() counts), read now."""
    return time.time() - (time.monotonic() - at)


class RecordWriter:
    """Writes one call's record events to the store (store.py's queued writer).

    `flow()` gives the call's IVR path and variables when it ends. Store methods are
    non-blocking (they queue a write); nothing here waits."""

    def __init__(self, store: Store, call_id: str,
                 flow: Callable[[], tuple[list[str], dict[str, Any]]] = lambda: ([], {}),
                 wall: Callable[[float], float] = wall_clock):
        self.store = store
        self.call_id = call_id
        self.flow = flow
        self.wall = wall

    def apply(self, r: Record) -> None:
        """One record event -> its store writes (none for LegEnded)."""
        s, cid = self.store, self.call_id
        if isinstance(r, CallAnswered):
            s.call_answered(cid, self.wall(r.at))
        elif isinstance(r, CallEnded):
            path, variables = self.flow()
            s.call_ended(cid, self.wall(r.at), r.disposition, r.cause, r.code, r.by, path, variables)
        elif isinstance(r, HoldStarted):
            s.event(cid, "HOLD", self.wall(r.at), party=r.party, direction=r.direction,
                    recording_offset=r.recording_offset)
        elif isinstance(r, HoldEnded):
            s.call_hold(cid, r.total_seconds, r.count)
            s.event(cid, "UNHOLD", self.wall(r.at), party=r.party, seconds=round(r.seconds, 2), how=r.how,
                    recording_offset=r.recording_offset)
        elif isinstance(r, RecordingStarted):
            s.call_recording(cid, r.path)
        elif isinstance(r, RecordingFailed):
            s.call_recording(cid, None)
            s.event(cid, "RECORDING_FAILED", error=r.error)
        elif isinstance(r, RecordingPaused):
            name = "RECORDING_PAUSED" if r.paused else "RECORDING_RESUMED"
            if r.on_hold:
                s.event(cid, name, on_hold=True)
            else:
                s.event(cid, name)
        elif isinstance(r, TransferDialled):
            s.event(cid, "TRANSFER", target=r.uri)
        elif isinstance(r, TransferAnswered):
            s.event(cid, "TRANSFER_ANSWERED", target=r.uri)
        elif isinstance(r, TransferFailed):
            s.event(cid, "TRANSFER_FAILED", code=r.code, result=r.result, b_leg=r.leg)
        elif isinstance(r, TransferEnded):
            s.event(cid, "TRANSFER_ENDED", by=r.by)
        elif isinstance(r, FlowContinued):
            s.event(cid, "CONTINUE", flow=r.flow, after=r.after)
        elif isinstance(r, VoicemailStarted):
            s.voicemail_started(cid, r.box, r.caller, r.path, self.wall(r.at))
        elif isinstance(r, VoicemailFinished):
            s.voicemail_finished(cid, r.path, r.seconds)
        elif isinstance(r, WorkerError):
            s.event(cid, "ERROR", command=r.command, error=r.message)
        elif isinstance(r, DigitHeard):
            s.event(cid, "DIGIT", digit=r.digit, method=r.method)
        elif isinstance(r, DigitsHeard):
            if r.purpose:
                s.event(cid, "DIGITS", digits=r.digits, reason=r.reason, purpose=r.purpose)
            else:
                s.event(cid, "DIGITS", digits=r.digits, reason=r.reason)
        elif isinstance(r, CallbackKeyPressed):
            s.event(cid, "CALLBACK_KEY", queue=r.queue)
        elif isinstance(r, CallbackQueued):
            s.event(cid, "CALLBACK", callback_id=r.callback_id, queue=r.queue, number=r.number)
        elif isinstance(r, CallbackRefused):
            s.event(cid, "CALLBACK_REFUSED", reason=r.reason)
        elif isinstance(r, Spoken):
            s.event(cid, "SAY", language=r.language, voice=r.voice, text=r.text)
        elif isinstance(r, SpeechFailed):
            s.event(cid, "SAY_FAILED", language=r.language)
        elif isinstance(r, LookupAnswered):
            s.event(cid, "HTTP", endpoint=r.endpoint, result=r.result, status=r.status, ms=r.ms)
        elif isinstance(r, TransferRefused):
            s.event(cid, "TRANSFER_REFUSED", via=r.via, target=r.target, replaces=r.replaces, side=r.side, leg=r.leg)
        elif isinstance(r, LegEnded):
            pass  # see LegEnded: the queue's record has the rings' outcomes
