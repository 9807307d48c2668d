"""The typed controller <-> media worker protocol.

Commands flow controller -> worker, events flow worker -> controller. Each message is a
dataclass; on the wire it is one JSON object per line with a "type" field. The boundary is
deliberately dumb: a worker executes commands and reports what happened, it never decides
where a call goes. The same messages could cross a TCP socket to a worker on another host.

A "leg" is one SIP dialog owned by one worker. Inbound legs get their id from the worker
(it sees the INVITE first); outbound legs get theirs from the controller (it asks for them),
so both sides can refer to a leg before it exists on the other side.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

DtmfMethod = Literal["rfc2833", "info"]


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


@dataclass(frozen=True)
class Message:
    type: ClassVar[str] = ""


_REGISTRY: dict[str, type[Message]] = {}


def message(name: str):  # type: ignore[no-untyped-def]
    """Register a dataclass as a wire message called `name`."""

    def wrap(cls: type[Message]) -> type[Message]:
        cls.type = name  # type: ignore[misc]
        _REGISTRY[name] = cls
        return cls

    return wrap


# ---------------------------------------------------------------- commands


@message("answer")
@dataclass(frozen=True)
class Answer(Message):
    leg: str
    code: int = 200


@message("reject")
@dataclass(frozen=True)
class Reject(Message):
    """Refuse an incoming leg with `code` and reason phrase; headers: extra headers of the
    answer (e.g. a Warning, RFC 3261 20.43, saying why an outbound call was refused)."""

    leg: str
    code: int = 486
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@message("play")
@dataclass(frozen=True)
class Play(Message):
    """Play files one after another. barge_in: a DTMF digit stops the playback."""

    leg: str
    files: tuple[str, ...]
    play_id: str = ""
    loop: bool = False
    barge_in: bool = False


@message("stop_play")
@dataclass(frozen=True)
class StopPlay(Message):
    leg: str


@message("collect")
@dataclass(frozen=True)
class CollectDigits(Message):
    """Collect up to max_digits digits; ends on a terminator, max_digits or a timeout.

    Timeouts run in the worker, next to the media clock, so the controller's own latency
    never eats into the caller's inter-digit time. Digits typed before this command (during
    a barge-in prompt) are counted: the worker keeps a small buffer per leg.
    """

    leg: str
    collect_id: str
    max_digits: int
    terminators: str = ""
    first_timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    flush: bool = False


@message("dial")
@dataclass(frozen=True)
class Dial(Message):
    """Place an outbound call. extra_headers lets the controller ask the edge for a fork."""

    leg: str
    uri: str
    extra_headers: tuple[tuple[str, str], ...] = ()
    # the new dialog's From (name-addr, e.g. '"Dana" <sip:4511223344@edge>'): the caller's
    # identity toward an agent's phone; "" = the worker's own account URI
    from_uri: str = ""
    # direct media from the start: the id of a leg of this worker (the caller's) whose media
    # the INVITE offers instead of the worker's own (worker/directmedia.py, "first offer");
    # the Bridge that follows then re-INVITEs only that leg. "" = the worker's own media.
    offer_media_of: str = ""
    # place the call from this Register's account (its reg_id): its digest credentials answer
    # a 401/407 (a test phone dialling as the agent it registered); "" = the worker's account
    account: str = ""


@message("bridge")
@dataclass(frozen=True)
class Bridge(Message):
    """Connect two legs' audio. direct_media: once both have media, take the worker out of the
    path (re-INVITEs, worker/directmedia.py) so caller and agent send RTP to each other; a
    later Play, CollectDigits or RecordStart on either leg brings the media back first."""

    leg_a: str
    leg_b: str
    direct_media: bool = False


@message("unbridge")
@dataclass(frozen=True)
class Unbridge(Message):
    """Disconnect two bridged legs' audio (e.g. while one holds the other). If the bridge's
    media had gone direct, the worker takes it back first (sendrecv re-INVITEs, MediaPath
    "anchored"); a later Bridge joins them again, directly if asked."""

    leg_a: str
    leg_b: str


@message("supervise")
@dataclass(frozen=True)
class Supervise(Message):
    """Join a supervisor's leg to a bridged caller <-> agent conversation, or change its mode
    (sent again with another mode). Like Asterisk's ChanSpy (options w, B) and FreeSWITCH's
    eavesdrop (DTMF 1/2/3): the supervisor always hears both parties; "listen": nobody hears
    the supervisor; "whisper": only the agent does; "barge": both do (a three-way call).
    If the bridge's media had gone direct, the worker takes it back first (MediaPath
    "anchored", reason "supervise") and releases it no more while the supervisor is there.
    The supervision ends with the supervisor's leg (Hangup)."""

    leg: str     # the supervisor's leg (dialled by this worker)
    caller: str  # the caller's leg
    agent: str   # the agent's leg
    mode: Literal["listen", "whisper", "barge"] = "listen"


@message("hold")
@dataclass(frozen=True)
class Hold(Message):
    """Re-INVITE the peer of `leg` offering `direction` for our audio (RFC 3264 8.4):
    "sendonly" or "inactive" puts the peer on hold, "sendrecv" resumes. Test phones use it
    to act as an agent pressing Hold; the controller never holds a party itself."""

    leg: str
    direction: Literal["sendonly", "inactive", "sendrecv"] = "sendonly"


@message("record_start")
@dataclass(frozen=True)
class RecordStart(Message):
    """Record the mix of the given legs (both directions of a bridge) into an 8 kHz WAV."""

    rec_id: str
    legs: tuple[str, ...]
    path: str


@message("record_pause")
@dataclass(frozen=True)
class RecordPause(Message):
    rec_id: str


@message("record_resume")
@dataclass(frozen=True)
class RecordResume(Message):
    rec_id: str


@message("record_stop")
@dataclass(frozen=True)
class RecordStop(Message):
    rec_id: str


@message("hangup")
@dataclass(frozen=True)
class Hangup(Message):
    leg: str
    code: int = 200


@message("send_dtmf")
@dataclass(frozen=True)
class SendDtmf(Message):
    leg: str
    digits: str
    method: DtmfMethod = "rfc2833"


@message("refer")
@dataclass(frozen=True)
class Refer(Message):
    """Ask the peer of `leg` to call `target` (an in-dialog REFER, RFC 3515); the answer
    comes back as ReferStatus. Test phones use it to act as an agent pressing Transfer;
    a worker refuses every REFER it receives (TransferRequested). `replaces`: another leg
    of this process whose dialog the REFER names instead (Refer-To: its remote URI with
    ?Replaces=, RFC 3891; an attended transfer, RFC 5589 7.1); `target` is then unused."""

    leg: str
    target: str
    replaces: str = ""


@message("register")
@dataclass(frozen=True)
class Register(Message):
    """Register an AOR at a registrar, with the Contact forced to contact_uri (the edge)."""

    reg_id: str
    registrar: str
    aor: str
    username: str
    password: str
    contact_uri: str = ""
    expires: int = 300
    accept_calls: bool = False  # a phone (agent) registering itself; the reg agent never takes calls


@message("unregister")
@dataclass(frozen=True)
class Unregister(Message):
    reg_id: str


@message("shutdown")
@dataclass(frozen=True)
class Shutdown(Message):
    pass


# ---------------------------------------------------------------- events


@message("ready")
@dataclass(frozen=True)
class Ready(Message):
    worker: str
    pid: int
    sip_uri: str


@message("incoming")
@dataclass(frozen=True)
class Incoming(Message):
    leg: str
    sip_call_id: str
    request_uri: str
    from_uri: str
    to_uri: str
    source: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@message("state")
@dataclass(frozen=True)
class CallState(Message):
    """SIP dialog state of a leg: calling, early, connecting, confirmed, disconnected."""

    leg: str
    state: str
    code: int = 0
    reason: str = ""
    remote_contact: str = ""  # who answered: with a forked ring-all, the agent's registered contact


@message("media")
@dataclass(frozen=True)
class MediaReady(Message):
    leg: str


@message("bridged")
@dataclass(frozen=True)
class Bridged(Message):
    """The answer to Bridge: the worker has joined the two legs (their audio meets as soon as
    both have media). Events of a worker arrive in the order it saw them, so a caller's
    DISCONNECTED before this means the caller left before being connected."""

    leg: str    # Bridge.leg_a
    other: str  # Bridge.leg_b


@message("media_path")
@dataclass(frozen=True)
class MediaPath(Message):
    """Where a bridge's RTP flows now. path: "direct" (between the parties, the worker keeps
    only the signalling), "anchored" (through the worker: a release failed, or media was taken
    back); reason says why, e.g. "re-INVITE answered 488" or "play"."""

    leg_a: str
    leg_b: str
    path: Literal["direct", "anchored"]
    reason: str = ""


@message("hold_state")
@dataclass(frozen=True)
class HoldState(Message):
    """The peer of `leg` put the call on hold or took it off (its last offer, RFC 3264 8.4).

    held: the offer's audio direction was "sendonly" or "inactive", or its connection address
    was 0.0.0.0 (the RFC 2543 way, which RFC 3264 8.4 asks us to understand); direction: that
    offer's direction as we read it ("sendonly", "inactive", "sendrecv", "recvonly"). Sent
    once per change. The worker changes nothing itself: the controller decides (hold music)."""

    leg: str
    held: bool
    direction: str = ""


@message("digit")
@dataclass(frozen=True)
class Digit(Message):
    leg: str
    digit: str
    method: str = ""


@message("playback_done")
@dataclass(frozen=True)
class PlaybackDone(Message):
    leg: str
    play_id: str
    interrupted: bool = False


@message("digits_collected")
@dataclass(frozen=True)
class DigitsCollected(Message):
    """reason: max_digits, terminator, timeout (no digit at all) or inter_digit_timeout."""

    leg: str
    collect_id: str
    digits: str
    reason: str


@message("recording_done")
@dataclass(frozen=True)
class RecordingDone(Message):
    rec_id: str
    path: str


@message("reg_state")
@dataclass(frozen=True)
class RegState(Message):
    reg_id: str
    code: int
    reason: str
    expires: int
    registered: bool
    auth_failed: bool = False


@message("slots")
@dataclass(frozen=True)
class Slots(Message):
    """The worker's call slots as pjsua counts them (sent when the count, the legs or the
    waiting dials change): `used` of `max` slots taken; `waiting` = leg ids of dials queued
    until one frees; `legs` = ids of the legs the worker holds (legaudit.py compares them)."""

    used: int
    max: int
    waiting: tuple[str, ...] = ()
    legs: tuple[str, ...] = ()

@message("refer_status")
@dataclass(frozen=True)
class ReferStatus(Message):
    """Progress of a REFER this leg sent: the REFER's own final answer (e.g. 202, 603) or
    a NOTIFY's sipfrag status of the new call; final: no more reports will follow."""

    leg: str
    code: int
    reason: str = ""
    final: bool = False


@message("transfer_requested")
@dataclass(frozen=True)
class TransferRequested(Message):
    """A peer asked this leg to go elsewhere; the worker refused it and dialled nothing.

    via: "refer" (an in-dialog REFER, RFC 3515; refused with 603), "replaces" (an INVITE
    with Replaces for this leg, RFC 3891; refused with 603) or "redirect" (a 3xx answer to a
    leg we dialled; not followed, the leg ends with that code). target: the Refer-To URI, the
    replacing INVITE's From URI, or the 3xx Contact, as the peer sent it (untrusted text).
    replaces: the Refer-To carries a Replaces parameter (an attended transfer).
    """

    leg: str
    target: str
    via: Literal["refer", "replaces", "redirect"] = "refer"
    replaces: bool = False


@message("source_refused")
@dataclass(frozen=True)
class SourceRefused(Message):
    """New requests the worker refused before any media was allocated, summed per source.

    code 403: the source is not an allowed one (only the edge is); 480: the worker's
    media budget for the last half second is spent (a burst). Sent at most once a second
    per (source, method, code), with the count since the last report.
    """

    source: str
    method: str
    code: int
    count: int = 1


@message("error")
@dataclass(frozen=True)
class Error(Message):
    command: str
    message: str
    leg: str = ""


# ---------------------------------------------------------------- wire format


def _tupled(value: Any) -> Any:
    # JSON has no tuples; frozen dataclasses want hashable, comparable fields back.
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


_FIELD_NAMES: dict[str, tuple[str, ...]] = {}


def _field_names(cls: type[Message]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls.type)
    if names is None:
        names = _FIELD_NAMES[cls.type] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def encode(msg: Message) -> bytes:
    """One message as a JSON line. Fields are plain values and tuples of them (never nested
    dataclasses), so a shallow copy is the whole body: `dataclasses.asdict` deep-copies every
    value and was most of the cost of a message (measured under bench/run load)."""
    body = {"type": msg.type}
    for name in _field_names(type(msg)):
        body[name] = getattr(msg, name)
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes | str) -> Message:
    try:
        body = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError("a message is a JSON object")
    kind = body.pop("type", None)
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    unknown = set(body).difference(_field_names(cls))
    if unknown:
        raise ProtocolError(f"{kind}: unknown fields {sorted(unknown)}")
    try:
        return cls(**{k: _tupled(v) for k, v in body.items()})
    except TypeError as exc:
        raise ProtocolError(f"{kind}: {exc}") from exc


COMMANDS: tuple[type[Message], ...] = (
    Answer, Reject, Play, StopPlay, CollectDigits, Dial, Bridge, Unbridge, Supervise, Hold, RecordStart,
    RecordPause, RecordResume, RecordStop, Hangup, SendDtmf, Refer, Register, Unregister, Shutdown,
)
EVENTS: tuple[type[Message], ...] = (
    Ready, Incoming, CallState, MediaReady, Bridged, HoldState, Digit, PlaybackDone, DigitsCollected,
    RecordingDone, RegState, ReferStatus, TransferRequested, SourceRefused, Error,
)

__all__ = [c.__name__ for c in COMMANDS + EVENTS] + [
    "Message", "ProtocolError", "encode", "decode", "field",
]
