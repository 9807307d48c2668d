"""pjsua2 objects of one worker: call legs, prompt players, recorders, registrations.

Rules from docs/notes/pjsua2.md that shape this file:
- every pjsua2 object is held by the worker's registries (a Call or player held only by a
  local is garbage-collected at once: 603 or silence);
- callbacks never raise (pjsua2 prints and swallows): each body reports errors as events;
- onEof2 runs on a media clock thread: it only enqueues, the main thread does the rest.

What a worker must never do on a peer's say-so (issues 11 and 17): dial a REFER's target,
let an INVITE with Replaces take over a leg, follow a 3xx, or take a dialog from anyone but
the edge. Each of those is refused here and reported to the controller, which decides.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pjsua2 as pj

from ringmaster import protocol as p
from ringmaster.worker.directmedia import Origin, offer_direction, puts_on_hold, with_origin

if TYPE_CHECKING:
    from ringmaster.worker.engine import MediaEngine

# pjsip_inv_state -> protocol state names
STATE_NAMES = {
    pj.PJSIP_INV_STATE_NULL: "null",
    pj.PJSIP_INV_STATE_CALLING: "calling",
    pj.PJSIP_INV_STATE_INCOMING: "incoming",
    pj.PJSIP_INV_STATE_EARLY: "early",
    pj.PJSIP_INV_STATE_CONNECTING: "connecting",
    pj.PJSIP_INV_STATE_CONFIRMED: "confirmed",
    pj.PJSIP_INV_STATE_DISCONNECTED: "disconnected",
}


def _guard(engine: MediaEngine, where: str, leg: str = ""):  # type: ignore[no-untyped-def]
    """Context for callback bodies: report exceptions as protocol errors, never raise."""

    class _G:
        def __enter__(self) -> None:
            engine.dirty = True  # the main loop runs a whole turn after any callback
            return None

        def __exit__(self, et, ev, tb) -> bool:  # type: ignore[no-untyped-def]
            if ev is not None:
                engine.report_error(where, f"{et.__name__}: {ev}", leg,
                                    "".join(traceback.format_exception(et, ev, tb)))
            return True

    return _G()


class Prompt(pj.AudioMediaPlayer):
    """A player bound to one leg. EOF is handed to the main thread."""

    def __init__(self, engine: MediaEngine, leg: str, play_id: str, barge_in: bool):
        super().__init__()
        self.engine = engine
        self.leg = leg
        self.play_id = play_id
        self.barge_in = barge_in
        self.looping = False

    def onEof2(self) -> None:  # media thread
        if not self.looping:
            self.engine.from_media_thread(("eof", self))


@dataclass
class Collection:
    collect_id: str
    max_digits: int
    terminators: str
    first_timeout: float
    inter_digit_timeout: float
    timer_from: float  # restarted when a prompt ends and at each digit
    got_digit: bool = False


@dataclass
class Recording:
    rec_id: str
    path: str
    legs: list[str]
    recorder: pj.AudioMediaRecorder
    paused: bool = False


class Leg(pj.Call):
    def __init__(self, engine: MediaEngine, acc: pj.Account, leg_id: str,
                 call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.engine = engine
        self.leg_id = leg_id
        self.audio: pj.AudioMedia | None = None
        self.prompt: Prompt | None = None
        self.digits = ""  # type-ahead buffer, consumed by the next collection
        self.collection: Collection | None = None
        self.disconnected = False
        self.state = ""  # pjsua's last call state name (STATE_NAMES)
        self.incoming = call_id != pj.PJSUA_INVALID_ID  # we are its UAS
        self.info_digits = ""  # SIP INFO digits waiting to be sent, paced
        self.info_next_at = 0.0
        self.created = time.monotonic()
        self.bad_dtmf_reported = False  # a non-DTMF signal is reported once per leg
        # direct media (directmedia.py): the peer's last SDP (its INVITE's offer, its 2xx's
        # answer), pjsua's last SDP for this leg, the o= pjsua's next offer must carry, and
        # whether a re-INVITE of ours is out (its final answer moves the release on)
        self.remote_sdp = ""
        self.local_sdp = ""
        self.forced_origin: Origin | None = None
        self.reinvite_out = False
        self.reinvite_off = False  # ... and it turns our media off (True) or back on
        self.media_off = False  # our media is inactive: the peer talks RTP to the other party
        self.offered_direct = False  # dialled offering another leg's media (Dial.offer_media_of)
        self.media_seen = False  # MediaReady was sent (once per leg)
        # hold (RFC 3264 8.4): the direction of the peer's last offer, and the hold state last
        # reported to the controller (HoldState), so each change is reported once
        self.peer_direction = ""
        self.hold_reported = False

    # -- callbacks (main thread: the one polling libHandleEvents)

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        with _guard(self.engine, "onCallState", self.leg_id):
            info = self.getInfo()
            state = STATE_NAMES.get(info.state, str(info.state))
            self.state = state
            if state == "disconnected":
                self.disconnected = True
                self.audio = None
                self.engine.leg_gone(self)
            self.engine.send_state(self.leg_id, state, info.lastStatusCode, info.lastReason,
                                   info.remoteContact if state == "confirmed" else "")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        with _guard(self.engine, "onCallMediaState", self.leg_id):
            info = self.getInfo()
            held = puts_on_hold(self.peer_direction)
            if held != self.hold_reported:
                self.hold_reported = held
                self.engine.hold_changed(self, held, self.peer_direction)
            for i, media in enumerate(info.media):
                # REMOTE_HOLD: the peer sends only (it holds us); its audio still reaches a
                # conference port, which bridges and recordings use as before
                if (media.type == pj.PJMEDIA_TYPE_AUDIO
                        and media.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)):
                    first = not self.media_seen
                    self.media_seen = True
                    self.media_off = False
                    self.audio = self.getAudioMedia(i)
                    self.engine.media_ready(self, first)
                    return
            if self.audio is not None and self.reinvite_out:
                # our own re-INVITE made the stream inactive (direct media): no conference
                # port is left to connect, and none must be used until media comes back
                self.audio = None
                self.media_off = True
            elif self.audio is not None:
                # an "inactive" stream (the peer's hold, or our own Hold): pjsua removed its
                # conference port; media_ready connects the new one when audio flows again
                self.audio = None

    def onCallSdpCreated(self, prm: pj.OnCallSdpCreatedParam) -> None:
        with _guard(self.engine, "onCallSdpCreated", self.leg_id):
            if self.local_sdp:
                # a new offer or answer of pjsua's (a hold, a re-INVITE): the peer now has the
                # worker's address, not the media of the first offer
                self.offered_direct = False
            if prm.remSdp.wholeSdp:
                self.remote_sdp = prm.remSdp.wholeSdp  # the offer we are answering
                self.peer_direction = offer_direction(self.remote_sdp)
            if self.forced_origin is not None:
                # the edge sends our X-Ringmaster-Sdp, whose o= is this; pjsua's later offers
                # must go on from the same version (RFC 3264 8)
                prm.sdp.wholeSdp = with_origin(prm.sdp.wholeSdp, self.forced_origin)
                self.forced_origin = None
            self.local_sdp = prm.sdp.wholeSdp

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        with _guard(self.engine, "onDtmfDigit", self.leg_id):
            method = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc2833"
            self.engine.digit(self, prm.digit, method)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        # runs before pjsua's own handling of an incoming in-dialog request: the one chance
        # to defuse a dtmf-relay INFO body that would abort pjsua's parser (dtmfrelay.py)
        e = prm.e
        if e.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = e.body.tsxState.tsx
        if tsx.method == "INVITE":
            if (tsx.role == pj.PJSIP_ROLE_UAC and tsx.statusCode >= 200
                    and tsx.state in (pj.PJSIP_TSX_STATE_COMPLETED, pj.PJSIP_TSX_STATE_TERMINATED)):
                with _guard(self.engine, "onCallTsxState", self.leg_id):
                    if e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG and 200 <= tsx.statusCode < 300:
                        body = _body(e.body.tsxState.src.rdata.wholeMsg)
                        if body:
                            self.remote_sdp = body  # the answer to our INVITE or re-INVITE
                    if self.reinvite_out:
                        self.reinvite_out = False
                        self.engine.reinvite_answered(self, tsx.statusCode)
            return
        if (tsx.role != pj.PJSIP_ROLE_UAS or tsx.state != pj.PJSIP_TSX_STATE_TRYING
                or tsx.method != "INFO"):
            return
        with _guard(self.engine, "onCallTsxState", self.leg_id):
            self.engine.check_info(self, e.body.tsxState.src.rdata)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        # a REFER we sent (protocol Refer): report its progress; never end our own leg for it
        prm.cont = not prm.finalNotify
        with _guard(self.engine, "onCallTransferStatus", self.leg_id):
            self.engine.send(p.ReferStatus(leg=self.leg_id, code=prm.statusCode, reason=prm.reason,
                                           final=bool(prm.finalNotify)))

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # pjsua's default is 202 Accepted and a new call to Refer-To, placed by pjsua itself:
        # a caller or an agent phone could make the server dial anything (toll fraud), and
        # the untracked call crashed the worker at shutdown (issue 11). RFC 3515 2.4.2 lets
        # the recipient refuse a REFER with any non-2xx; 603 Decline says "not by policy".
        # The controller hears of it and decides (it may transfer by its own rules).
        prm.statusCode = pj.PJSIP_SC_DECLINE
        with _guard(self.engine, "onCallTransferRequest", self.leg_id):
            self.engine.transfer_requested(self, prm.dstUri, via="refer")

    def onCallReplaceRequest(self, prm: pj.OnCallReplaceRequestParam) -> None:
        # An INVITE with Replaces (RFC 3891) would hand this leg, bridged or not, to whoever
        # knows its dialog id. The worker never asked for one; 603 as RFC 3891 3 suggests.
        # pjsua calls this before any media is allocated for the new INVITE.
        prm.statusCode = pj.PJSIP_SC_DECLINE
        with _guard(self.engine, "onCallReplaceRequest", self.leg_id):
            self.engine.transfer_requested(self, _from_uri(prm.rdata.wholeMsg), via="replaces")

    def onCallRedirected(self, prm: pj.OnCallRedirectedParam) -> int:
        # A 3xx to one of our dialled legs would have pjsua dial its Contact: only the
        # controller dials, so stop here (the leg ends with the 3xx as its final code).
        with _guard(self.engine, "onCallRedirected", self.leg_id):
            self.engine.transfer_requested(self, prm.targetUri, via="redirect")
        return pj.PJSIP_REDIRECT_STOP


def _refuse_subscription(prm: pj.OnIncomingSubscribeParam) -> None:
    # pjsua accepts a presence SUBSCRIBE (200) unless told otherwise and then sends NOTIFYs
    # to the subscriber: a worker has no presence to offer and must not send to strangers.
    prm.code = 403
    prm.reason = "Forbidden"


class Registration(pj.Account):
    """An upstream registration (PBX / trunk) whose Contact points at the edge."""

    def __init__(self, engine: MediaEngine, reg_id: str, accept_calls: bool = False):
        super().__init__()
        self.engine = engine
        self.reg_id = reg_id
        self.accept_calls = accept_calls

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        with _guard(self.engine, "onRegState"):
            self.engine.reg_state(self, prm)

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        # Registrations live in a process the edge never sends calls to (the "reg" agent):
        # a call matched to this account would answer with the edge's forced Contact and
        # its ACK would loop at the edge. Decline loudly if one arrives anyway.
        with _guard(self.engine, "onIncomingCall"):
            if self.accept_calls:
                self.engine.incoming(self, prm)
                return
            call = pj.Call(self, prm.callId)
            op = pj.CallOpParam()
            op.statusCode = 403
            call.hangup(op)
            # dropped now, not on the next loop turn: the hangup freed its pjsua call id, which
            # the next INVITE of this same poll may get; pjsua2's ~Call clears the user data
            # of, and hangs up, whatever call holds that id then (engine.leg_gone)
            del call
            self.engine.report_error("incoming", "call reached the registration agent; not served here")

    def onIncomingSubscribe(self, prm: pj.OnIncomingSubscribeParam) -> None:
        _refuse_subscription(prm)


class WorkerAccount(pj.Account):
    """The worker's own identity: receives the calls the edge dispatches to it."""

    def __init__(self, engine: MediaEngine):
        super().__init__()
        self.engine = engine

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        with _guard(self.engine, "onIncomingCall"):
            self.engine.incoming(self, prm)

    def onIncomingSubscribe(self, prm: pj.OnIncomingSubscribeParam) -> None:
        _refuse_subscription(prm)


class RefusingAccount(pj.Account):
    """Where `WorkerEndpoint.onSelectAccount` sends requests the worker will not take.

    Its media is pjmedia's loop transport (`useLoopMedTp`): pjsua allocates media for an
    INVITE before the application sees it, and for this account that costs no socket and no
    ioqueue slot, so a flood of refused INVITEs cannot exhaust the worker (admission.py).
    It answers 403 (source not allowed) or 480 with Retry-After (media budget spent).
    """

    def __init__(self, engine: MediaEngine):
        super().__init__()
        self.engine = engine

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        with _guard(self.engine, "onIncomingCall"):
            call = pj.Call(self, prm.callId)
            op = pj.CallOpParam()
            op.statusCode, reason = self.engine.refusal_for(prm.rdata.srcAddress, "INVITE")
            op.reason = reason
            if op.statusCode == 480:
                # RFC 3261 20.33: tell a well-behaved sender when to try again
                h = pj.SipHeader()
                h.hName, h.hValue = "Retry-After", "1"
                op.txOption.headers.append(h)
            call.hangup(op)
            # dropped now, not on the next loop turn: the hangup freed its pjsua call id, which
            # the next INVITE of this same poll may get; pjsua2's ~Call clears the user data
            # of, and hangs up, whatever call holds that id then (engine.leg_gone)
            del call

    def onIncomingSubscribe(self, prm: pj.OnIncomingSubscribeParam) -> None:
        _refuse_subscription(prm)
        self.engine.refusal_for(prm.rdata.srcAddress, "SUBSCRIBE")


class WorkerEndpoint(pj.Endpoint):
    """The pjsua2 endpoint, for the one callback that runs before pjsua allocates media."""

    def __init__(self, engine: MediaEngine):
        super().__init__()
        self.engine = engine

    def onSelectAccount(self, prm: pj.OnSelectAccountParam) -> None:
        # pjsua calls this for each new out-of-dialog INVITE (and SUBSCRIBE, MESSAGE) after
        # the call-slot check and before the media transport is created (pjsua_call.c,
        # pjsua_call_on_incoming). It cannot refuse by itself, but it picks the account.
        self.engine.dirty = True
        try:
            self.engine.select_account(prm)
        except Exception as exc:  # never raise into pjsua; fail closed
            refusing = self.engine.refusing
            if refusing is not None:
                prm.accountIndex = refusing.getId()
            self.engine.report_error("onSelectAccount", f"{type(exc).__name__}: {exc}")


def _body(whole: str) -> str:
    """The body of a whole SIP message as pjsua gives it (rdata.wholeMsg)."""
    head, sep, body = whole.partition("\r\n\r\n")
    return body if sep else ""


def _from_uri(whole: str) -> str:
    """The From URI of a raw request (for reporting only; never dialled)."""
    for line in whole.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("from", "f"):
            value = value.strip()
            if "<" in value and ">" in value:
                return value[value.index("<") + 1:value.index(">")][:200]
            return value.split(";", 1)[0][:200]
    return ""


@dataclass
class Graveyard:
    """pjsua2 objects to drop on the next loop turn, never inside their own callback."""

    items: list[object] = field(default_factory=list)

    def bury(self, obj: object) -> None:
        self.items.append(obj)

    def empty(self) -> None:
        self.items.clear()
