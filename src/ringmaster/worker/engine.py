"""MediaEngine: one pjsua2 endpoint driven by protocol commands from one socket.

Threading (docs/notes/pjsua2.md): the thread that calls libCreate must also poll
libHandleEvents, or DTMF callbacks are never delivered; so the whole worker is one
thread that alternates `libHandleEvents(10 ms)` (which sleeps in pjsip's ioqueue and
releases the GIL: 0.8 % idle CPU measured) with a non-blocking read of the command socket.
The only other threads are pjmedia's clock threads, which talk to us through a queue.
"""

from __future__ import annotations

import base64
import gc
import os
import queue
import re
import select
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pjsua2 as pj

from ringmaster import protocol as p
from ringmaster.worker import native
from ringmaster.worker.admission import MediaBudget, SourcePolicy
from ringmaster.worker.directmedia import Release, first_offer, offer_for
from ringmaster.worker.dtmfrelay import blank_body, body_is_safe
from ringmaster.worker.legs import (
    Collection,
    Graveyard,
    Leg,
    Prompt,
    Recording,
    RefusingAccount,
    Registration,
    WorkerAccount,
    WorkerEndpoint,
)

# The worker does not poll: it sleeps in pjsip's ioqueue until a SIP or RTP packet arrives (the
# media sockets are in that ioqueue too, see start), a pjsip timer falls due, the controller
# wakes it with a CRLF keep-alive datagram to its SIP port after each command (RFC 5626 3.5.1;
# pjsip drops it unparsed), a media clock thread wakes it the same way (a prompt's end), or the
# next deadline of its own (digit timeouts, paced INFO digits, a dial waiting for a slot, a
# recording's WAV header) is due. Polling every 10 ms with legs up, and every 1 ms for 0.2 s
# after any message, cost a busy worker ~100-1000 loop turns/s whether or not anything
# happened (docs/engine-findings.md, 47). These are backstops only.
IDLE_POLL_MS = 5000
BUSY_POLL_MS = 50
# legs up and pjsua's slot count matches them: nothing changes without a callback or a
# command, so the whole loop turn is only a safety net (measured: at 50 ms it was 20 turns a
# second per worker with a call, most of a loaded pool's loop turns; docs/engine-findings.md, 89)
SETTLED_POLL_MS = 1000
POLL_MS = 10  # a recording's WAV header is looked for this often while it is finalised
# after this long with no leg whose media is in this worker, the conference bridge's clock (the
# null sound device's thread, 50 ticks/s) stops too; the next leg or re-anchor starts it again
SOUND_OFF_AFTER = 10.0
# SIP INFO digits leave one by one: the edge's parallel UDP processes can reorder requests
# sent back to back, and a UAS answers an in-dialog request with a lower CSeq than one it
# has already seen with 500 (RFC 3261 12.2.2): the digit is lost. Measured on the edge.
INFO_DIGIT_GAP = 0.12
# A dial that finds every call slot taken waits for one to free, for at most this long: pjsua
# frees a slot some time after the old call's DISCONNECTED callback (its media is torn down
# asynchronously), and a leg we hung up holds its slot until its BYE is answered or times out
# (SIP_TIMEOUT_MS). The edge counts only inbound calls, so an agent leg can be asked for in
# that moment (bench/run acd: about 1 in 700 agent legs). The dial is tried again only when
# pjsua's count of slots drops, never in a spin (docs/engine-findings.md, 11 and 21).
DIAL_WAIT = 5.0
DIAL_RECHECK = 0.02
MEDIA_BACK_WAIT = 2.0  # how long a resumed leg's sendrecv re-INVITE is retried (s)
MAX_LEGS = 4  # PJSUA_MAX_CALLS of the PyPI wheel; asking for more is silently clamped
# SIP transaction timers (RFC 3261 17.1.1.2): T1, T2, T4 as the RFC; the transaction timeout
# (Timers B, F, H) is 64*T1 = 32 s by default, which is how long a BYE that the far end never
# answers kept a leg and its call slot (an agent behind no Record-Route is reached directly,
# without the edge's 2 s fr_timer in between). 4 s is 4 retransmissions on a LAN or loopback
# path whose round trip is milliseconds; every leg ends within ~4 s whatever the far end does.
SIP_T1_MS, SIP_T2_MS, SIP_T4_MS, SIP_TIMEOUT_MS = 500, 4000, 5000, 4000
# What a DTMF digit may be: RFC 4733 events 0-15 (pjmedia maps them to these characters) and
# the one character of a SIP INFO application/dtmf-relay "Signal=" line (pjsua passes on
# whatever byte follows the "=": letters, CR, non-UTF-8 bytes were seen reaching the flow).
DTMF_SIGNALS = frozenset("0123456789*#ABCD")
# Refused requests are summed per (source IP, method, code) and reported at most this often:
# a flood must not become a flood of events to the controller.
REFUSAL_REPORT_EVERY = 1.0
_HEADER_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)\s*:\s*(.*)$")  # RFC 3261 token


@dataclass
class WorkerSettings:
    name: str
    sip_host: str
    sip_port: int
    rtp_port: int
    rtp_port_range: int
    proxy: str = ""  # outbound proxy URI (the edge) for dialled legs
    public_host: str = ""
    log_level: int = 1
    # sources (IP or IP:PORT) that may open dialogs: the edge; nothing else is answered but 403
    allowed_sources: tuple[str, ...] = ()
    # ms of audio the conference bridge mixes per clock tick (pjsua_media_config's
    # audio_frame_ptime; config workers.audio_frame_ptime): 20 or 40
    audio_frame_ptime: int = 40


class MediaEngine:
    def __init__(self, settings: WorkerSettings, sock: socket.socket):
        self.s = settings
        self.sock = sock
        self.inbuf = b""
        self.legs: dict[str, Leg] = {}
        self.recordings: dict[str, Recording] = {}
        self.registrations: dict[str, Registration] = {}
        self.bridges: set[frozenset[str]] = set()
        self.releases: dict[frozenset[str], Release] = {}  # bridges asked for direct media
        self.supervisions: dict[str, p.Supervise] = {}  # supervisor's leg -> its caller, agent, mode
        self.answered: list[tuple[str, int]] = []  # re-INVITEs of ours answered (leg id, code)
        self.media_back: list[tuple[str, float]] = []  # resumed legs to re-INVITE sendrecv (deadline)
        self.deferred: dict[str, list[p.Message]] = {}  # leg -> commands waiting for its media
        self.bye_after_ack: dict[str, int] = {}  # answered incoming leg -> hang-up code, once ACKed
        self.media_q: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.graveyard = Graveyard()
        self.finalizing: list[tuple[str, str, float]] = []  # (rec_id, path, give-up time)
        self.pending_dials: list[tuple[p.Dial, float]] = []  # waiting for a free leg (deadline)
        self.slots_sent: tuple[int, tuple[str, ...], tuple[str, ...]] = (0, (), ())  # last Slots reported
        self.slots_refused = 0  # slot count at the last refused dial: retry when it drops
        self.dial_retry_at = 0.0  # ... or after DIAL_RECHECK (a slot counted free not yet reusable)
        self.seq = 0
        self.running = True
        self.busy_at = 0.0  # last loop turn with media in this worker (or a dial waiting)
        self.waker: socket.socket | None = None  # media threads wake the loop through it
        self.sound_on = False  # the null sound device (the conference bridge's clock) is open
        self.ep: pj.Endpoint | None = None
        self.account: WorkerAccount | None = None
        self.refusing: RefusingAccount | None = None
        self.policy = SourcePolicy.parse(settings.allowed_sources)
        self.budget = MediaBudget()
        self.refused: dict[tuple[str, str, int], int] = {}  # (source IP, method, code) -> count
        self.refused_report_at = 0.0
        # run(): a pjsua callback or a command ran since the last whole turn (see run)
        self.dirty = True
        self.media_pending = False  # a media thread queued an item (from_media_thread)
        self.wake_at = 0.0  # when the next whole turn is due anyway (monotonic s)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        ep = WorkerEndpoint(self)
        ep.libCreate()
        cfg = pj.EpConfig()
        # an unsolicited NOTIFY (message-summary) would be answered 200 from anyone
        cfg.uaConfig.mwiUnsolicitedEnabled = False
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = MAX_LEGS
        cfg.uaConfig.userAgent = f"ringmaster-worker/{self.s.name}"
        cfg.logConfig.level = self.s.log_level
        cfg.logConfig.consoleLevel = self.s.log_level
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True
        # The conference bridge's clock (the null sound device's thread) wakes once per frame
        # in every worker with media here, and a worker carries at most two calls: at 40 ms it
        # wakes half as often, which took recorded calls from ~8.0 to ~6.2 % of a core per
        # call/s (docs/engine-findings.md 107). A stream port keeps its own ptime: the bridge
        # puts two 20 ms frames (two RTP packets) per 40 ms tick (pjmedia conference.c).
        cfg.medConfig.audioFramePtime = self.s.audio_frame_ptime
        # The null sound device (the conference clock) is ours to stop (SOUND_OFF_AFTER). pjsua's
        # own auto-close (1 s by default) arms a timer when the last call ends that only a
        # conference connection cancels, not a new call: a leg that came inside that second
        # and connected nothing lost the clock under it, and sent no RTP and no RFC 4733 digit
        # (docs/engine-findings.md, 74). It also left `sound_on` saying the clock ran.
        cfg.medConfig.sndAutoCloseTime = -1
        # No media thread: pjmedia's own polls its own ioqueue every 10 ms, call or no call
        # (0.4-0.5 % of a core per idle worker, measured). Without `hasIoqueue` pjsua puts
        # the media sockets in SIP's ioqueue (pjsua_media.c), polled by this thread's
        # libHandleEvents, which wakes on their packets like on SIP's.
        cfg.medConfig.hasIoqueue = False
        cfg.medConfig.threadCnt = 0
        ep.libInit(cfg)
        native.set_transaction_timers(SIP_T1_MS, SIP_T2_MS, SIP_T4_MS, SIP_TIMEOUT_MS)
        tcfg = pj.TransportConfig()
        tcfg.port = self.s.sip_port
        tcfg.boundAddress = self.s.sip_host
        if self.s.public_host:
            tcfg.publicAddress = self.s.public_host
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        ep.audDevManager().setNoDev()  # no clock until a leg needs one (sound_needed)
        # G.711 only: speex/16000 (pjsua's default first choice) distorts bridges (measured)
        for codec in ep.codecEnum2():
            cid = codec.codecId
            prio = 255 if cid.startswith("PCMU") else 254 if cid.startswith("PCMA") else 0
            ep.codecSetPriority(cid, prio)
        self.ep = ep
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{self.s.name}@{self.s.sip_host}:{self.s.sip_port}"
        if self.s.proxy:
            acfg.sipConfig.proxies.append(self.s.proxy)
        self._media_ports(acfg)
        # No re-INVITE to "lock" the codec when an answer lists several (pjsua's default): a
        # second offer per agent leg costs a round trip, and UAs that do not expect it (SIPp's
        # UAS scenarios, some gateways) drop the call, so our BYE went unanswered and held the
        # leg's slot (docs/engine-findings.md, 21). RFC 3264 6.1 lets us send with the first.
        acfg.mediaConfig.lockCodecEnabled = False
        self.account = WorkerAccount(self)
        self.account.create(acfg)
        # Requests the worker refuses land on an account whose media is the loop transport
        # (no socket): see RefusingAccount and admission.py.
        rcfg = pj.AccountConfig()
        rcfg.idUri = f"sip:refused@{self.s.sip_host}:{self.s.sip_port}"
        rcfg.mediaConfig.useLoopMedTp = True
        self.refusing = RefusingAccount(self)
        self.refusing.create(rcfg)
        self.waker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.waker.setblocking(False)
        self.waker.bind((self.s.sip_host, 0))
        self.send(p.Ready(worker=self.s.name, pid=os.getpid(), sip_uri=acfg.idUri))

    def _media_ports(self, acfg: pj.AccountConfig) -> None:
        tc = acfg.mediaConfig.transportConfig
        tc.port = self.s.rtp_port
        # pjsua's range is of RTP start ports, inclusive (pjsua_media.c: a port above
        # port + port_range wraps): with our slice's size it also took the slice's last port
        # + 2, which is the next worker's first RTP port ("Address already in use" under
        # load, issue 10). Each pair needs its RTCP port (+1) inside the slice too.
        tc.portRange = max(0, self.s.rtp_port_range - 2)
        tc.boundAddress = self.s.sip_host
        if self.s.public_host:
            tc.publicAddress = self.s.public_host

    def sound_needed(self) -> None:
        """Open the null sound device (its clock drives the conference bridge) before a leg's
        media exists: an admitted INVITE (select_account) or a dial."""
        if not self.sound_on and self.ep is not None:
            self.ep.audDevManager().setNullDev()
            self.sound_on = True

    def _next_deadline(self, now: float) -> float | None:
        """The earliest moment the loop must act on its own (monotonic s), or None."""
        due: list[float] = []
        for leg in self.legs.values():
            c = leg.collection
            if c is not None and leg.prompt is None:
                due.append(c.timer_from + (c.inter_digit_timeout if c.got_digit else c.first_timeout))
            if leg.info_digits:
                due.append(leg.info_next_at)
        if self.pending_dials:
            due.append(min(now + DIAL_RECHECK, max(self.dial_retry_at, now)))
            due.extend(deadline for _, deadline in self.pending_dials)
        if self.finalizing:
            due.append(now + POLL_MS / 1000)
        if self.refused:
            due.append(self.refused_report_at)
        return min(due) if due else None

    def _poll_ms(self) -> int:
        # (registrations need no polling: pjsip's refresh timers end the sleep themselves)
        now = time.monotonic()
        if self.answered or not self.media_q.empty():
            return 0
        if self.media_back:
            return 10  # a resumed leg's re-INVITE is retried shortly
        if self.inbuf:
            return 1  # the rest of a command is on its way (a wake-up datagram came first)
        media_here = self.pending_dials or any(not leg.media_off or leg.reinvite_out for leg in self.legs.values())
        if media_here:
            self.busy_at = now  # a leg has (or waits for) media in this worker: the clock runs
        elif self.sound_on and now - self.busy_at > SOUND_OFF_AFTER and self.ep is not None:
            self.ep.audDevManager().setNoDev()
            self.sound_on = False
        used = native.call_count()
        if used > len(self.legs):
            backstop = BUSY_POLL_MS  # a slot frees behind our back (no callback): watch for it
        elif self.legs:
            backstop = SETTLED_POLL_MS  # every event of these legs comes with a callback
        else:
            backstop = IDLE_POLL_MS
        due = self._next_deadline(now)
        if self.sound_on and not media_here:
            off_at = self.busy_at + SOUND_OFF_AFTER  # the clock stops then (no leg's media here)
            due = off_at if due is None else min(due, off_at)
        if due is None:
            return backstop
        return max(0, min(backstop, int((due - now) * 1000) + 1))

    def run(self) -> None:
        """The worker's one thread: sleep in pjsip's ioqueue, then act. Most wake-ups are an
        RTP packet of a leg whose media is here (50 a second per leg), on which nothing else
        happened: such a turn only reads the command socket. The whole turn (timers, slots,
        collections) runs when a pjsua callback ran (`dirty`), a media thread queued something,
        a command came, or the deadline `_poll_ms` set last time is reached (measured: the
        whole turn on every packet was a third of a loaded worker's CPU, finding 89)."""
        assert self.ep is not None
        # the quick turn runs ~50 times a second per leg with media here: locals, the SWIG
        # function without its Python wrapper, and a poll object made once (no list per call).
        # The function is given the endpoint's SwigPyObject (`.this`), not our subclass's
        # instance: for anything else SWIG 4.2's pointer conversion builds the type's qualified
        # name as a new string and looks `this` up by attribute on every call (measured ~10 %
        # of a loaded worker's main thread, docs/engine-findings.md 106).
        ep = self.ep.this
        handle_events = pj._pjsua2.Endpoint_libHandleEvents
        commands = select.poll()
        commands.register(self.sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        command_waiting = commands.poll
        monotonic = time.monotonic
        timeout = 0
        while self.running:
            handle_events(ep, timeout)
            if self.media_pending:
                self.media_pending = False  # before draining: an item put meanwhile sets it again
                self._drain_media_queue()
                self.dirty = True
            if self.inbuf or command_waiting(0):
                self._read_commands()
            now = monotonic()
            if not self.dirty and now < self.wake_at:
                timeout = int((self.wake_at - now) * 1000) + 1
                continue
            self.dirty = False
            self.graveyard.empty()
            if self.answered:
                self._releases_answered()
            if self.bye_after_ack:
                self._hang_up_acked()
            if self.media_back:
                self._bring_media_back()
            self._check_collections()
            self._send_info_digits()
            self._check_slots()
            if self.finalizing:
                self._check_finalized()
            if self.refused:
                self._report_refusals()
            timeout = self._poll_ms()
            self.wake_at = time.monotonic() + timeout / 1000
        self.stop()

    def stop(self) -> None:
        """Hang up, let the BYEs leave, then destroy with no reference left to pjsua2."""
        ep = self.ep
        if ep is None:
            return
        for rec in list(self.recordings.values()):
            self._finish_recording(rec)
        try:
            ep.hangupAllCalls()
        except pj.Error:
            pass
        for reg in self.registrations.values():
            try:
                reg.setRegistration(False)
            except pj.Error:
                pass
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(not leg.disconnected for leg in self.legs.values()):
            ep.libHandleEvents(20)
        for _ in range(5):
            ep.libHandleEvents(10)
        self._check_finalized()
        for leg in self.legs.values():
            if leg.prompt is not None:
                self._drop_prompt(leg)
        self.legs.clear()
        self.recordings.clear()
        self.registrations.clear()
        self.bridges.clear()
        self.supervisions.clear()
        self.account = None
        self.refusing = None
        self.graveyard.empty()
        self.graveyard.empty()
        sys.last_traceback = sys.last_value = sys.last_type = None  # type: ignore[assignment]
        gc.collect()
        self.ep = None
        ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        del ep
        gc.collect()

    # ------------------------------------------------------------ output

    def send(self, msg: p.Message) -> None:
        try:
            self.sock.sendall(p.encode(msg))
        except OSError:
            self.running = False  # controller gone: shut down cleanly

    def report_error(self, command: str, message: str, leg: str = "", detail: str = "") -> None:
        if detail:
            print(detail, file=sys.stderr, flush=True)
        self.send(p.Error(command=command, message=message, leg=leg))

    def send_state(self, leg: str, state: str, code: int, reason: str, remote_contact: str = "") -> None:
        self.send(p.CallState(leg=leg, state=state, code=code, reason=reason, remote_contact=remote_contact))

    def from_media_thread(self, item: tuple[str, Any]) -> None:
        """Called on a media clock thread: queue `item` and end the main loop's sleep (a CRLF
        datagram to our own SIP port, as the controller does)."""
        self.media_q.put(item)
        self.media_pending = True
        waker = self.waker
        if waker is not None:
            try:
                waker.sendto(b"\r\n\r\n", (self.s.sip_host, self.s.sip_port))
            except OSError:
                pass  # the item is queued; the loop's backstop picks it up

    # ------------------------------------------------------------ input

    def _read_commands(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                return
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.running = False
                return
            self.inbuf += chunk
            self.dirty = True
            while b"\n" in self.inbuf:
                line, self.inbuf = self.inbuf.split(b"\n", 1)
                if line.strip():
                    self._dispatch(line)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = p.decode(line)
        except p.ProtocolError as exc:
            self.report_error("decode", str(exc))
            return
        self._dispatch_message(msg)

    def _dispatch_message(self, msg: p.Message) -> None:
        handler: Callable[[Any], None] | None = getattr(self, f"do_{msg.type}", None)
        if handler is None:
            self.report_error(msg.type, "not a command")
            return
        try:
            handler(msg)
        except pj.Error as exc:
            self.report_error(msg.type, exc.info() if hasattr(exc, "info") else str(exc),
                              _leg_of(msg))
        except (KeyError, ValueError, OSError) as exc:
            self.report_error(msg.type, f"{type(exc).__name__}: {exc}", _leg_of(msg))

    def _leg(self, leg_id: str) -> Leg:
        leg = self.legs.get(leg_id)
        if leg is None or leg.disconnected:
            raise KeyError(f"no live leg {leg_id}")
        return leg

    # ------------------------------------------------------------ pjsua2 callbacks

    def incoming(self, acc: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        self.seq += 1
        leg_id = f"{self.s.name}-in{self.seq}"
        leg = Leg(self, acc, leg_id, prm.callId)
        self.legs[leg_id] = leg
        info = leg.getInfo()
        request_uri, headers = _parse_request(prm.rdata.wholeMsg)
        src = prm.rdata.srcAddress
        self.send(p.Incoming(leg=leg_id, sip_call_id=info.callIdString, request_uri=request_uri,
                             from_uri=info.remoteUri, to_uri=info.localUri, source=src,
                             headers=headers))

    def select_account(self, prm: pj.OnSelectAccountParam) -> None:
        """Admit or refuse a new out-of-dialog request before pjsua allocates its media.

        Refused requests go to the RefusingAccount (loop media, no socket), which answers
        403 (source not allowed) or 480 (media budget spent); admitted INVITEs take one unit
        of the media budget. `rdata.info` is pjsip's ASCII summary ("Request msg
        INVITE/cseq=1 (rdata0x..)"); the whole message may hold any bytes.
        """
        assert self.account is not None and self.refusing is not None
        src = prm.rdata.srcAddress
        parts = prm.rdata.info.split()
        method = parts[2].split("/", 1)[0] if len(parts) > 2 else "?"
        if not self.policy.allows(src):
            code = 403
        elif method == "INVITE" and not self.budget.available():
            code = 480
        else:
            if method == "INVITE":
                self.budget.take()
                self.sound_needed()
            if prm.accountIndex == self.refusing.getId():
                prm.accountIndex = self.account.getId()
            return
        prm.accountIndex = self.refusing.getId()
        key = (src.rsplit(":", 1)[0], method[:16], code)
        self.refused[key] = self.refused.get(key, 0) + 1

    def refusal_for(self, source: str, method: str) -> tuple[int, str]:
        """Status code and reason for a request select_account sent to the RefusingAccount."""
        if not self.policy.allows(source):
            return 403, "Forbidden"
        # Not 503: the edge's dispatcher marks a worker that answers 503 as down until its
        # next OPTIONS ping, so a burst spread over the pool would take every worker out
        # (docs/notes/kamailio-edge.md pitfall 5). 480 + Retry-After is relayed to the
        # caller as "try again shortly" and the worker stays in rotation.
        return 480, "Busy With A Burst"

    def _report_refusals(self) -> None:
        now = time.monotonic()
        if now < self.refused_report_at:
            return
        refused, self.refused = self.refused, {}
        self.refused_report_at = now + REFUSAL_REPORT_EVERY
        for (source, method, code), count in refused.items():
            self.send(p.SourceRefused(source=source, method=method, code=code, count=count))

    def transfer_requested(self, leg: Leg, target: str, via: str) -> None:
        """A REFER, an INVITE with Replaces or a 3xx for this leg, already refused by pjsua
        on our say-so (legs.py); the controller records it and decides what, if anything,
        to dial. The target is the peer's text: bounded, never used here."""
        target = target.strip()
        if target.startswith("<") and ">" in target:  # pjsua gives Refer-To as name-addr
            target = target[1:target.index(">")]
        target = target[:500]
        replaces = via == "replaces" or "replaces=" in target.lower()
        self.send(p.TransferRequested(leg=leg.leg_id, target=target, via=via,  # type: ignore[arg-type]
                                      replaces=replaces))

    def check_info(self, leg: Leg, rdata: pj.SipRxData) -> None:
        """An incoming INFO on `leg`, before pjsua parses it: blank a dtmf-relay body that
        would abort pjsua (pjsua then answers 400) and say so once per leg."""
        message = rdata.wholeMsg.encode("utf-8", "surrogateescape")  # SWIG decodes that way
        if body_is_safe(message):
            return
        blanked = blank_body(int(rdata.pjRxData), message)
        if not leg.bad_dtmf_reported:
            leg.bad_dtmf_reported = True
            body = message.partition(b"\r\n\r\n")[2][:40]
            self.report_error("dtmf", "malformed dtmf-relay INFO body "
                              + ("refused (400)" if blanked else "NOT defused: pjsua may abort")
                              + f": {body!r}", leg.leg_id)
        if not blanked:
            print(f"dtmf-relay guard: packet not found in rdata for leg {leg.leg_id}",
                  file=sys.stderr, flush=True)

    def leg_gone(self, leg: Leg) -> None:
        if leg.prompt is not None:
            self._drop_prompt(leg)
        leg.collection = None
        for pair in [b for b in self.bridges if leg.leg_id in b]:
            self.bridges.discard(pair)
        for pair in [r for r in self.releases if leg.leg_id in r]:
            del self.releases[pair]
        if self.supervisions.pop(leg.leg_id, None) is not None:
            for rec in self.recordings.values():
                if leg.leg_id in rec.legs:
                    rec.legs.remove(leg.leg_id)
        self.deferred.pop(leg.leg_id, None)
        self.legs.pop(leg.leg_id, None)
        # No graveyard for a leg: it goes when its DISCONNECTED callback returns (pjsua2 allows
        # deleting a Call there, call.cpp processStateChange). Kept to the next loop turn, its
        # ~Call ran after pjsua had given its call id to an INVITE of the same poll, cleared
        # that call's user data and hung it up: the caller got BYE 2 ms after our 200, the
        # controller never heard of it and the worker aborted at shutdown on pjsua's
        # call_id assertion (issue 10; docs/engine-findings.md, 48).

    def hold_changed(self, leg: Leg, held: bool, direction: str) -> None:
        """pjsua callback (onCallMediaState): the peer's offer put the leg on hold or took it
        off. Reported only: the controller decides what the other party hears."""
        self.send(p.HoldState(leg=leg.leg_id, held=held, direction=direction))
        if not held and leg.media_off:
            # the peer resumes a leg whose media we had turned off (direct media): pjsua
            # answered its offer "inactive" (the leg's media direction stays as we last set
            # it), so offer sendrecv ourselves, from the main loop (not inside pjsua's callback)
            self.media_back.append((leg.leg_id, time.monotonic() + MEDIA_BACK_WAIT))

    def media_ready(self, leg: Leg, first: bool) -> None:
        # a re-INVITE gives new media: redo the bridges and recordings this leg is in
        for pair in self.bridges:
            if leg.leg_id in pair:
                other = self.legs.get(next(iter(pair - {leg.leg_id})))
                if other is not None and other.audio is not None:
                    self._connect(leg, other)
        for rec in self.recordings.values():
            if leg.leg_id in rec.legs and not rec.paused:
                leg.audio.startTransmit(rec.recorder)  # type: ignore[union-attr]
        if leg.prompt is not None:
            leg.prompt.startTransmit(leg.audio)  # a prompt (hold music) goes on after a hold
        for sup in list(self.supervisions.values()):
            if leg.leg_id in (sup.leg, sup.caller, sup.agent):
                self._wire_supervision(sup)
        if first:
            self.send(p.MediaReady(leg=leg.leg_id))
        released = False
        for rel in list(self.releases.values()):
            if leg.leg_id in rel.legs:
                released = True
                if rel.step == "want":
                    self._release_start(rel)
                elif rel.step == "anchoring":
                    self._anchoring_done(rel)
        if not released and not leg.reinvite_out:
            for cmd in self.deferred.pop(leg.leg_id, []):
                self._dispatch_message(cmd)  # waited for this lone leg's media (_needs_media)

    def digit(self, leg: Leg, digit: str, method: str) -> None:
        signal = digit.upper()
        if len(signal) != 1 or signal not in DTMF_SIGNALS:
            # not a key of a phone: never let it reach a flow (it could become a variable,
            # a path or a URI); say so once per leg, a hostile peer may send thousands
            if not leg.bad_dtmf_reported:
                leg.bad_dtmf_reported = True
                self.report_error("dtmf", f"ignored a {method} signal that is not a DTMF digit: "
                                          f"{digit[:8]!r}", leg.leg_id)
            return
        digit = signal
        self.send(p.Digit(leg=leg.leg_id, digit=digit, method=method))
        if leg.prompt is not None and leg.prompt.barge_in:
            prompt = leg.prompt
            self._drop_prompt(leg)
            self.send(p.PlaybackDone(leg=leg.leg_id, play_id=prompt.play_id, interrupted=True))
        leg.digits += digit
        if leg.collection is not None:
            leg.collection.got_digit = True
            leg.collection.timer_from = time.monotonic()
            self._evaluate_collection(leg)

    def reg_state(self, reg: Registration, prm: pj.OnRegStateParam) -> None:
        info = reg.getInfo()
        auth_failed = prm.code in (401, 407, 403) or (
            prm.status != 0 and "credential" in self.ep.utilStrError(prm.status).lower())  # type: ignore[union-attr]
        reason = prm.reason
        if prm.status != 0:
            reason = f"{reason} ({self.ep.utilStrError(prm.status)})"  # type: ignore[union-attr]
        self.send(p.RegState(reg_id=reg.reg_id, code=prm.code, reason=reason,
                             expires=int(info.regExpiresSec), registered=bool(info.regIsActive),
                             auth_failed=auth_failed))

    def _drain_media_queue(self) -> None:
        while True:
            try:
                kind, obj = self.media_q.get_nowait()
            except queue.Empty:
                return
            if kind == "eof":
                prompt: Prompt = obj
                leg = self.legs.get(prompt.leg)
                if leg is not None and leg.prompt is prompt:
                    self._drop_prompt(leg)
                    if leg.collection is not None:
                        leg.collection.timer_from = time.monotonic()
                    self.send(p.PlaybackDone(leg=leg.leg_id, play_id=prompt.play_id))

    # ------------------------------------------------------------ helpers

    def _drop_prompt(self, leg: Leg) -> None:
        prompt, leg.prompt = leg.prompt, None
        if prompt is None:
            return
        if leg.audio is not None:
            try:
                prompt.stopTransmit(leg.audio)
            except pj.Error:
                pass
        self.graveyard.bury(prompt)  # destroyed next turn, never from its own callback

    def _connect(self, a: Leg, b: Leg) -> None:
        assert a.audio is not None and b.audio is not None
        a.audio.startTransmit(b.audio)
        b.audio.startTransmit(a.audio)

    def _check_collections(self) -> None:
        now = time.monotonic()
        for leg in list(self.legs.values()):
            c = leg.collection
            if c is None or leg.prompt is not None:
                continue  # timers wait for the prompt to end
            limit = c.inter_digit_timeout if c.got_digit else c.first_timeout
            if now - c.timer_from >= limit:
                self._finish_collection(leg, "inter_digit_timeout" if c.got_digit else "timeout")

    def _evaluate_collection(self, leg: Leg) -> None:
        c = leg.collection
        assert c is not None
        for i, d in enumerate(leg.digits):
            if d in c.terminators:
                self._finish_collection(leg, "terminator", upto=i, skip=1)
                return
            if i + 1 >= c.max_digits:
                self._finish_collection(leg, "max_digits", upto=i + 1)
                return

    def _finish_collection(self, leg: Leg, reason: str, upto: int | None = None,
                           skip: int = 0) -> None:
        c = leg.collection
        assert c is not None
        if upto is None:
            upto = len(leg.digits)
        digits = leg.digits[:upto]
        leg.digits = leg.digits[upto + skip:]
        leg.collection = None
        self.send(p.DigitsCollected(leg=leg.leg_id, collect_id=c.collect_id, digits=digits,
                                    reason=reason))

    def _finish_recording(self, rec: Recording) -> None:
        if rec.paused:
            try:
                self._silence().stopTransmit(rec.recorder)
            except pj.Error:
                pass
        for leg_id in rec.legs:
            leg = self.legs.get(leg_id)
            if leg is not None and leg.audio is not None and not rec.paused:
                try:
                    leg.audio.stopTransmit(rec.recorder)
                except pj.Error:
                    pass
        self.recordings.pop(rec.rec_id, None)
        # the WAV header is completed when the recorder is destroyed: this drops its only
        # reference (a plain SWIG object, in no cycle). No gc.collect() here: in a worker host
        # it walked four engines' objects holding the GIL the others wait on, at every
        # recording's end (docs/engine-findings.md 109)
        recorder = rec.recorder
        rec.recorder = None  # type: ignore[assignment]
        del recorder
        # pjmedia removes conference ports on its clock thread: the file is closed (and its
        # header written) a frame or two after the destroy. RecordingDone promises a complete
        # file, so it waits for the header (checked every loop turn, never blocking).
        self.finalizing.append((rec.rec_id, rec.path, time.monotonic() + 2.0))

    def _check_finalized(self) -> None:
        still = []
        for rec_id, path, deadline in self.finalizing:
            if _wav_complete(path):
                self.send(p.RecordingDone(rec_id=rec_id, path=path))
            elif time.monotonic() > deadline:
                self.report_error("record_stop", f"{path}: WAV header not completed in 2 s")
                self.send(p.RecordingDone(rec_id=rec_id, path=path))
            else:
                still.append((rec_id, path, deadline))
        self.finalizing = still

    # ------------------------------------------------------------ commands

    def do_answer(self, cmd: p.Answer) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = cmd.code
        self._leg(cmd.leg).answer(prm)

    def do_reject(self, cmd: p.Reject) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = cmd.code
        if cmd.reason:
            prm.reason = cmd.reason
        for name, value in cmd.headers:
            h = pj.SipHeader()
            h.hName = name
            h.hValue = value
            prm.txOption.headers.append(h)
        self._leg(cmd.leg).hangup(prm)

    def do_hangup(self, cmd: p.Hangup) -> None:
        for pending in [d for d in self.pending_dials if d[0].leg == cmd.leg]:
            self.pending_dials.remove(pending)  # never dialled: nothing to hang up
            self.send_state(cmd.leg, "disconnected", 487, "cancelled before dialling")
            return
        leg = self.legs.get(cmd.leg)
        if leg is None or leg.disconnected:
            return  # already gone: hanging up twice is not an error
        if leg.incoming and leg.state == "connecting":
            # our 200 is out, the caller's ACK is not in: pjsip holds a BYE until the ACK (its
            # issue 1712) and pjsua, seeing the call confirmed while hanging up, sends a second
            # one (pjsua_call.c, the CANCEL/200 crossover case): two BYEs, the second answered
            # 481 (finding 95). Hang up once the ACK confirms the call; without an ACK pjsip
            # ends the call itself (RFC 3261 13.3.1.4: 64*T1).
            self.bye_after_ack[cmd.leg] = cmd.code
            return
        prm = pj.CallOpParam()
        prm.statusCode = cmd.code if cmd.code >= 300 else 0
        leg.hangup(prm)

    def do_play(self, cmd: p.Play) -> None:
        leg = self._leg(cmd.leg)
        if self._needs_media(cmd, (cmd.leg,), "play"):
            return
        if leg.audio is None:
            raise ValueError("leg has no active media yet")
        for f in cmd.files:
            if not os.path.isfile(f):
                raise ValueError(f"prompt file not found: {f}")
        if leg.prompt is not None:
            old = leg.prompt
            self._drop_prompt(leg)
            self.send(p.PlaybackDone(leg=leg.leg_id, play_id=old.play_id, interrupted=True))
        prompt = Prompt(self, leg.leg_id, cmd.play_id, cmd.barge_in)
        prompt.looping = cmd.loop
        options = 0 if cmd.loop else pj.PJMEDIA_FILE_NO_LOOP
        if len(cmd.files) == 1:
            prompt.createPlayer(cmd.files[0], options)
        else:
            files = pj.StringVector()
            for f in cmd.files:
                files.append(f)
            prompt.createPlaylist(files, "", options)
        leg.prompt = prompt
        prompt.startTransmit(leg.audio)

    def do_stop_play(self, cmd: p.StopPlay) -> None:
        leg = self._leg(cmd.leg)
        if leg.prompt is not None:
            prompt = leg.prompt
            self._drop_prompt(leg)
            self.send(p.PlaybackDone(leg=leg.leg_id, play_id=prompt.play_id, interrupted=True))

    def do_collect(self, cmd: p.CollectDigits) -> None:
        leg = self._leg(cmd.leg)
        if self._needs_media(cmd, (cmd.leg,), "collect"):
            return
        if cmd.max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        if cmd.flush:
            leg.digits = ""
        leg.collection = Collection(cmd.collect_id, cmd.max_digits, cmd.terminators,
                                    cmd.first_timeout, cmd.inter_digit_timeout,
                                    time.monotonic(), got_digit=bool(leg.digits))
        if leg.digits:
            self._evaluate_collection(leg)

    def do_dial(self, cmd: p.Dial) -> None:
        if cmd.leg in self.legs or any(d.leg == cmd.leg for d, _ in self.pending_dials):
            raise ValueError(f"leg id {cmd.leg} already in use")
        if not self._try_dial(cmd):
            self.pending_dials.append((cmd, time.monotonic() + DIAL_WAIT))
            self._check_slots()  # the controller logs the wait once, from the Slots report

    def _slot_may_be_free(self, used: int, now: float) -> bool:
        return used < MAX_LEGS and (used < self.slots_refused or now >= self.dial_retry_at)

    def _check_slots(self) -> None:
        """Each loop turn: dial what waits if pjsua has a free slot, give up on dials that
        waited DIAL_WAIT, and report the slots to the controller when they change."""
        used = native.call_count()
        if self.pending_dials:
            now = time.monotonic()
            waiting = []
            for cmd, deadline in self.pending_dials:
                if self._slot_may_be_free(used, now) and self._try_dial(cmd):
                    used = native.call_count()
                elif now >= deadline:
                    self.send_state(cmd.leg, "disconnected", 503, "no free call leg in this worker")
                else:
                    waiting.append((cmd, deadline))
            self.pending_dials = waiting
        report = (used, tuple(cmd.leg for cmd, _ in self.pending_dials), tuple(sorted(self.legs)))
        if report != self.slots_sent:
            self.slots_sent = report
            self.send(p.Slots(used=report[0], max=MAX_LEGS, waiting=report[1], legs=report[2]))

    def _try_dial(self, cmd: p.Dial) -> bool:
        """Place the call; False if every call slot is taken (pjsua frees a slot some time
        after the old call's DISCONNECTED callback: its media is torn down asynchronously)."""
        assert self.account is not None
        used = native.call_count()
        if used >= MAX_LEGS:
            self.slots_refused = used
            return False  # makeCall would fail with PJ_ETOOMANY and log it: wait for a slot
        if not self.budget.available():
            self.dial_retry_at = time.monotonic() + DIAL_RECHECK
            return False  # a burst spent the media budget: wait like for a free slot
        acc: pj.Account = self.account
        if cmd.account:
            reg = self.registrations.get(cmd.account)
            if reg is None:
                self.send_state(cmd.leg, "disconnected", 500, f"no registration {cmd.account!r}")
                return True
            acc = reg
        self.budget.take()
        self.sound_needed()
        leg = Leg(self, acc, cmd.leg)
        prm = pj.CallOpParam(True)
        if cmd.from_uri:
            prm.txOption.localUri = cmd.from_uri  # pjsua's From for this dialog, not the account's
        for name, value in cmd.extra_headers:
            h = pj.SipHeader()
            h.hName = name
            h.hValue = value
            prm.txOption.headers.append(h)
        offer = self._first_offer(cmd.offer_media_of)
        if offer is not None:
            # the INVITE carries the caller's media (the edge puts X-Ringmaster-Sdp in the
            # body, route DIRECTMEDIA); pjsua's own stream for this leg stays inactive
            body, origin = offer
            prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
            dirs = pj.IntVector()
            dirs.append(pj.PJMEDIA_DIR_NONE)
            prm.opt.mediaDir = dirs
            h = pj.SipHeader()
            h.hName = "X-Ringmaster-Sdp"
            h.hValue = base64.b64encode(body.encode()).decode()
            prm.txOption.headers.append(h)
            leg.forced_origin = origin
            leg.media_off = True
            leg.offered_direct = True
        self.legs[cmd.leg] = leg
        try:
            leg.makeCall(cmd.uri, prm)
            return True
        except pj.Error as exc:
            self.legs.pop(cmd.leg, None)
            self.graveyard.bury(leg)
            why = exc.info() if hasattr(exc, "info") else str(exc)
            if "PJ_ETOOMANY" in why or "Address already in use" in why:
                # the count said a slot is free but pjsua still refused (finding 11: a slot can
                # be reusable a moment after DISCONNECTED): look again shortly, not every turn
                self.slots_refused = used
                self.dial_retry_at = time.monotonic() + DIAL_RECHECK
                return False
            self.send_state(cmd.leg, "disconnected", 500, f"dial failed: {why}"[:300])
            return True

    def _first_offer(self, leg_id: str) -> tuple[str, Any] | None:
        """The SDP offering leg `leg_id`'s media to a new leg (Dial.offer_media_of), or None
        (then the new leg gets the worker's own media): the leg must be here with its media
        in the worker and an SDP of its party's."""
        if not leg_id:
            return None
        src = self.legs.get(leg_id)
        if src is None or src.disconnected or src.audio is None or src.media_off or not src.remote_sdp:
            return None
        return first_offer(src.remote_sdp, self.s.public_host or self.s.sip_host)

    def do_bridge(self, cmd: p.Bridge) -> None:
        a, b = self._leg(cmd.leg_a), self._leg(cmd.leg_b)
        self.bridges.add(frozenset((a.leg_id, b.leg_id)))
        for leg in (a, b):
            if leg.prompt is not None:  # hold music stops when the parties meet
                prompt = leg.prompt
                self._drop_prompt(leg)
                self.send(p.PlaybackDone(leg=leg.leg_id, play_id=prompt.play_id,
                                         interrupted=True))
        if a.audio is not None and b.audio is not None:
            self._connect(a, b)
        self.send(p.Bridged(leg=a.leg_id, other=b.leg_id))
        pre = next((leg for leg in (b, a) if leg.offered_direct and leg.media_off), None)
        a.offered_direct = b.offered_direct = False  # good for this first bridge only
        if cmd.direct_media:
            first = b if pre is a else a  # the leg to re-INVITE first; a pre-released leg is never it
            second = b if first is a else a
            rel = Release(first.leg_id, second.leg_id, pre=pre is not None)
            self.releases[rel.legs] = rel
            self._release_start(rel)
        elif pre is not None and not pre.reinvite_out:
            # dialled with the other party's media, but this bridge stays in the worker (a
            # recording, say): bring the leg's media here; media_ready then connects it
            self._reinvite(pre, None)

    # ------------------------------------------------------------ direct media (directmedia.py)

    def _release_start(self, rel: Release) -> None:
        """Re-INVITE the first leg with the second's media, once both legs have media."""
        a, b = self.legs.get(rel.first), self.legs.get(rel.second)
        if a is None or b is None or a.audio is None or (b.audio is None and not rel.pre):
            return  # media_ready calls again when the media is there
        if a.reinvite_out or b.reinvite_out:
            return
        # a pre-released second leg has its media away already: giving up brings it back
        give_up = self._take_back if rel.pre else self._anchored
        if any(rel.legs & set(rec.legs) for rec in self.recordings.values()):
            give_up(rel, "recording")  # the recorder needs both voices in this worker
            return
        if any(rel.legs & {sup.caller, sup.agent} for sup in self.supervisions.values()):
            self._anchored(rel, "supervised")  # the supervisor hears (and may speak) through this worker
            return
        offer = offer_for(a.local_sdp, b.remote_sdp)
        if offer is None:
            give_up(rel, "no plain RTP audio SDP to offer")
            return
        if self._reinvite(a, offer):
            rel.step = "first"
        else:
            give_up(rel, "re-INVITE could not be sent")

    def _reinvite(self, leg: Leg, offer: tuple[str, Any] | None) -> bool:
        """Send a re-INVITE on `leg`: with `offer` (body, origin), our media inactive and the
        edge told to send `body`; without, our media back to sendrecv. False if pjsua refused
        (e.g. an INVITE transaction of the peer's is still open)."""
        prm = pj.CallOpParam(True)
        prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
        dirs = pj.IntVector()
        dirs.append(pj.PJMEDIA_DIR_NONE if offer else pj.PJMEDIA_DIR_ENCODING_DECODING)
        prm.opt.mediaDir = dirs
        if offer is not None:
            body, origin = offer
            h = pj.SipHeader()
            h.hName = "X-Ringmaster-Sdp"
            h.hValue = base64.b64encode(body.encode()).decode()
            prm.txOption.headers.append(h)
            leg.forced_origin = origin
        else:
            self.sound_needed()
        leg.reinvite_out = True
        leg.reinvite_off = offer is not None
        try:
            leg.reinvite(prm)
        except pj.Error:
            leg.reinvite_out = False
            leg.forced_origin = None
            return False
        return True

    def reinvite_answered(self, leg: Leg, code: int) -> None:
        """pjsua callback (onCallTsxState): the final answer to a re-INVITE of ours; acted on
        in the main loop, never from inside pjsua's callback."""
        self.answered.append((leg.leg_id, code))  # the id: never keep a Leg past its end

    def _hang_up_acked(self) -> None:
        """Send the hang-ups do_hangup held for a caller's ACK, on legs it has confirmed; drop
        those of legs that ended meanwhile."""
        for leg_id, code in list(self.bye_after_ack.items()):
            leg = self.legs.get(leg_id)
            if leg is None or leg.disconnected:
                del self.bye_after_ack[leg_id]
            elif leg.state != "connecting":
                del self.bye_after_ack[leg_id]
                self.do_hangup(p.Hangup(leg=leg_id, code=code))

    def _releases_answered(self) -> None:
        answered, self.answered = self.answered, []
        for leg_id, code in answered:
            rel = next((r for r in self.releases.values() if leg_id in r.legs), None)
            leg = self.legs.get(leg_id)
            if leg is None or leg.disconnected:
                continue
            if rel is None:
                if leg.audio is not None:  # a lone leg's media is back (_needs_media)
                    for cmd in self.deferred.pop(leg_id, []):
                        self._dispatch_message(cmd)
                continue
            ok = 200 <= code < 300
            if ok and leg.reinvite_off:
                self._media_off(leg)
            if rel.step == "first" and leg.leg_id == rel.first and rel.pre:
                if ok:  # the second leg was dialled with this one's media: done
                    rel.step = "direct"
                    self.send(p.MediaPath(leg_a=rel.first, leg_b=rel.second, path="direct"))
                else:
                    self._take_back(rel, f"caller leg re-INVITE answered {code}")
            elif rel.step == "first" and leg.leg_id == rel.first:
                other = self.legs.get(rel.second)
                offer = offer_for(other.local_sdp, leg.remote_sdp) if ok and other else None
                if offer is not None and other is not None and self._reinvite(other, offer):
                    rel.step = "second"
                else:
                    self._take_back(rel, f"caller leg re-INVITE answered {code}" if not ok
                                    else "agent leg re-INVITE not sent")
            elif rel.step == "second" and leg.leg_id == rel.second:
                if ok:
                    rel.step = "direct"
                    self.send(p.MediaPath(leg_a=rel.first, leg_b=rel.second, path="direct"))
                else:
                    self._take_back(rel, f"agent leg re-INVITE answered {code}")
            elif rel.step == "anchoring":
                self._take_back(rel, rel.reason)  # legs whose re-INVITE was out: ask now
            elif rel.step == "want":
                self._release_start(rel)  # it waited for this re-INVITE (media back after a hold)

    def _bring_media_back(self) -> None:
        """Re-INVITE (sendrecv) the legs whose peer resumed while our media was off; pjsua
        refuses while the peer's re-INVITE still waits for its ACK, so try again next turn."""
        now = time.monotonic()
        still = []
        for leg_id, deadline in self.media_back:
            leg = self.legs.get(leg_id)
            if leg is None or leg.disconnected or not leg.media_off or leg.reinvite_out:
                continue
            if not self._reinvite(leg, None):
                if now < deadline:
                    still.append((leg_id, deadline))
                else:
                    self.report_error("hold", "could not take the media back after the peer resumed", leg_id)
        self.media_back = still

    def _media_off(self, leg: Leg) -> None:
        """After our inactive re-INVITE was accepted: the leg has no conference port."""
        info = leg.getInfo()
        if not any(m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                   for m in info.media):
            leg.audio = None
            leg.media_off = True

    def _take_back(self, rel: Release, reason: str) -> None:
        """Bring a bridge's media back into the worker (sendrecv re-INVITEs on the legs whose
        media is off or whose re-INVITE of ours is out); MediaPath "anchored" when done."""
        rel.step = "anchoring"
        rel.reason = reason
        for leg_id in (rel.first, rel.second):
            leg = self.legs.get(leg_id)
            if leg is not None and leg.media_off and not leg.reinvite_out and not leg.hold_reported:
                self._reinvite(leg, None)
        self._anchoring_done(rel)

    def _anchoring_done(self, rel: Release) -> None:
        # a leg whose peer holds with "inactive" answers our sendrecv offer with "inactive"
        # again (RFC 3264 8.4): its media comes back when the peer resumes, not before; asking
        # again would loop re-INVITEs
        legs = [self.legs.get(i) for i in (rel.first, rel.second)]
        if all(leg is None or (not leg.reinvite_out and (not leg.media_off or leg.hold_reported))
               for leg in legs):
            self._anchored(rel, rel.reason)

    def _anchored(self, rel: Release, reason: str) -> None:
        rel.step = "anchored"
        self.releases.pop(rel.legs, None)
        self.send(p.MediaPath(leg_a=rel.first, leg_b=rel.second, path="anchored", reason=reason))
        for leg_id in (rel.first, rel.second):
            for cmd in self.deferred.pop(leg_id, []):
                self._dispatch_message(cmd)  # a command that waited for the media to be back

    def _needs_media(self, cmd: p.Message, leg_ids: tuple[str, ...], why: str) -> bool:
        """True if `cmd` must wait: one of its legs' media is away (direct media) or on its
        way; the bridge's media is taken back and `cmd` runs when it is here again."""
        for leg_id in leg_ids:
            rel = next((r for r in self.releases.values() if leg_id in r.legs), None)
            if rel is None:
                continue
            leg = self.legs.get(leg_id)
            if rel.step == "want":
                self._anchored(rel, why)  # never released: nothing to take back
                continue
            if leg is not None and (leg.media_off or leg.reinvite_out or rel.step != "direct"):
                self.deferred.setdefault(leg_id, []).append(cmd)
                if rel.step == "direct":
                    self._take_back(rel, why)
                elif rel.step in ("first", "second"):
                    rel.reason = why
                    rel.step = "anchoring"  # stop the release where it is, then come back
                return True
        for leg_id in leg_ids:
            # a leg left with its media away after the other party of its direct bridge
            # ended (e.g. a survey after the agent hung up): bring it back on its own
            leg = self.legs.get(leg_id)
            if (leg is not None and (leg.media_off or (leg.reinvite_out and leg.audio is None))
                    and not any(leg_id in r.legs for r in self.releases.values())):
                self.deferred.setdefault(leg_id, []).append(cmd)
                if not leg.reinvite_out and not self._reinvite(leg, None):
                    self.deferred.pop(leg_id, None)
                    raise ValueError("leg media is away and the re-INVITE to bring it back failed")
                return True
        return False

    def do_unbridge(self, cmd: p.Unbridge) -> None:
        pair = frozenset((cmd.leg_a, cmd.leg_b))
        self.bridges.discard(pair)
        a, b = self.legs.get(cmd.leg_a), self.legs.get(cmd.leg_b)
        if a is not None and b is not None and a.audio is not None and b.audio is not None:
            for src, dst in ((a, b), (b, a)):
                try:
                    src.audio.stopTransmit(dst.audio)  # type: ignore[union-attr]
                except pj.Error:
                    pass
        rel = self.releases.get(pair)
        if rel is None:
            return
        # the parties no longer talk: bring their media back (hold music needs it here)
        if rel.step == "want":
            self.releases.pop(pair, None)
        elif rel.step == "direct":
            self._take_back(rel, "unbridge")
        elif rel.step in ("first", "second"):
            rel.reason = "unbridge"
            rel.step = "anchoring"

    def do_supervise(self, cmd: p.Supervise) -> None:
        if cmd.mode not in ("listen", "whisper", "barge"):
            raise ValueError(f"mode {str(cmd.mode)[:16]!r}: listen, whisper or barge")
        if len({cmd.leg, cmd.caller, cmd.agent}) != 3:
            raise ValueError("the supervisor's, caller's and agent's legs are three legs")
        for leg_id in (cmd.leg, cmd.caller, cmd.agent):
            self._leg(leg_id)
        if self._needs_media(cmd, (cmd.caller, cmd.agent), "supervise"):
            return  # a direct bridge: runs again once its media is back in this worker
        self.supervisions[cmd.leg] = cmd
        self._wire_supervision(cmd)

    def _wire_supervision(self, sup: p.Supervise) -> None:
        """Connect the conference ports for `sup`'s mode (again after any of the three legs got
        new media from a re-INVITE): caller and agent -> supervisor always; supervisor -> agent
        in whisper and barge; supervisor -> caller in barge only. The caller <-> agent bridge
        is the Bridge command's and is left alone (a hold cuts it, a resume restores it).
        A recording of the caller's leg takes the supervisor's voice in barge, where the caller
        hears it (as MixMonitor on the caller's channel would), not in whisper or listen."""
        s, c, a = (self.legs.get(i) for i in (sup.leg, sup.caller, sup.agent))
        if s is None or s.audio is None:
            return  # media_ready wires it when the supervisor's media is there
        links = ((c, s, True), (a, s, True),
                 (s, a, sup.mode in ("whisper", "barge")), (s, c, sup.mode == "barge"))
        for src, dst, on in links:
            if src is None or dst is None or src.audio is None or dst.audio is None:
                continue
            try:
                if on:
                    src.audio.startTransmit(dst.audio)
                else:
                    src.audio.stopTransmit(dst.audio)
            except pj.Error:
                pass  # stopping a link that was never made
        for rec in self.recordings.values():
            if sup.caller not in rec.legs or (sup.mode == "barge") == (sup.leg in rec.legs):
                continue
            if sup.mode == "barge":
                rec.legs.append(sup.leg)  # pause, resume and stop treat her like the parties
                if not rec.paused:
                    s.audio.startTransmit(rec.recorder)
            else:
                rec.legs.remove(sup.leg)
                if not rec.paused:
                    try:
                        s.audio.stopTransmit(rec.recorder)
                    except pj.Error:
                        pass

    def do_hold(self, cmd: p.Hold) -> None:
        leg = self._leg(cmd.leg)
        prm = pj.CallOpParam(True)
        prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
        dirs = pj.IntVector()
        dirs.append({"sendonly": pj.PJMEDIA_DIR_ENCODING, "inactive": pj.PJMEDIA_DIR_NONE,
                     "sendrecv": pj.PJMEDIA_DIR_ENCODING_DECODING}[cmd.direction])
        prm.opt.mediaDir = dirs
        leg.reinvite(prm)

    def do_record_start(self, cmd: p.RecordStart) -> None:
        if cmd.rec_id in self.recordings:
            raise ValueError(f"recording {cmd.rec_id} already running")
        if self._needs_media(cmd, cmd.legs, "record"):
            return
        legs = [self._leg(leg_id) for leg_id in cmd.legs]
        os.makedirs(os.path.dirname(os.path.abspath(cmd.path)), exist_ok=True)
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(cmd.path)
        rec = Recording(cmd.rec_id, cmd.path, [leg.leg_id for leg in legs], recorder)
        self.recordings[cmd.rec_id] = rec
        for leg in legs:
            if leg.audio is not None:
                leg.audio.startTransmit(recorder)

    def _recording_legs(self, rec: Recording) -> list[Leg]:
        return [leg for i in rec.legs if (leg := self.legs.get(i)) is not None and leg.audio is not None]

    def do_record_pause(self, cmd: p.RecordPause) -> None:
        rec = self.recordings[cmd.rec_id]
        if not rec.paused:
            # The conference bridge feeds a recorder only while something transmits to it:
            # with the legs disconnected the paused stretch would be cut out of the file
            # (measured: 3.5 s of call gave 2.0 s of WAV). The null sound device's capture
            # port sends silence, which keeps the file's timeline with a silent stretch.
            self._silence().startTransmit(rec.recorder)
            for leg in self._recording_legs(rec):
                leg.audio.stopTransmit(rec.recorder)  # type: ignore[union-attr]
            rec.paused = True

    def do_record_resume(self, cmd: p.RecordResume) -> None:
        rec = self.recordings[cmd.rec_id]
        if rec.paused:
            for leg in self._recording_legs(rec):
                leg.audio.startTransmit(rec.recorder)  # type: ignore[union-attr]
            self._silence().stopTransmit(rec.recorder)
            rec.paused = False

    def _silence(self) -> pj.AudioMedia:
        assert self.ep is not None
        return self.ep.audDevManager().getCaptureDevMedia()

    def do_record_stop(self, cmd: p.RecordStop) -> None:
        self._finish_recording(self.recordings[cmd.rec_id])

    def do_send_dtmf(self, cmd: p.SendDtmf) -> None:
        leg = self._leg(cmd.leg)
        bad = [d for d in cmd.digits if d not in "0123456789*#ABCDabcd"]
        if bad:
            raise ValueError(f"not DTMF digits: {bad}")
        if cmd.method == "info":
            leg.info_digits += cmd.digits
        else:
            leg.dialDtmf(cmd.digits)

    def _send_info_digits(self) -> None:
        now = time.monotonic()
        for leg in self.legs.values():
            if leg.info_digits and now >= leg.info_next_at and not leg.disconnected:
                digit, leg.info_digits = leg.info_digits[0], leg.info_digits[1:]
                leg.info_next_at = now + INFO_DIGIT_GAP
                prm = pj.CallSendDtmfParam()
                prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
                prm.digits = digit
                try:
                    leg.sendDtmf(prm)
                except pj.Error as exc:
                    self.report_error("send_dtmf", str(exc.info() if hasattr(exc, "info") else exc), leg.leg_id)

    def do_refer(self, cmd: p.Refer) -> None:
        prm = pj.CallOpParam(True)
        if cmd.replaces:
            self._leg(cmd.leg).xferReplaces(self._leg(cmd.replaces), prm)
        else:
            self._leg(cmd.leg).xfer(cmd.target, prm)

    def do_register(self, cmd: p.Register) -> None:
        old = self.registrations.pop(cmd.reg_id, None)
        if old is not None:
            self.graveyard.bury(old)
        acfg = pj.AccountConfig()
        acfg.idUri = cmd.aor
        acfg.regConfig.registrarUri = cmd.registrar
        acfg.regConfig.timeoutSec = cmd.expires
        # retries are the controller's (with backoff); pjsua must not loop on its own
        acfg.regConfig.retryIntervalSec = 0
        cred = pj.AuthCredInfo("digest", "*", cmd.username, 0, cmd.password)
        acfg.sipConfig.authCreds.append(cred)
        if cmd.contact_uri:
            acfg.sipConfig.contactForced = f"<{cmd.contact_uri}>"
            acfg.natConfig.contactRewriteUse = 0  # contactForced is ignored otherwise
        acfg.natConfig.viaRewriteUse = 0
        reg = Registration(self, cmd.reg_id, accept_calls=cmd.accept_calls)
        self.registrations[cmd.reg_id] = reg
        reg.create(acfg)

    def do_unregister(self, cmd: p.Unregister) -> None:
        reg = self.registrations.pop(cmd.reg_id, None)
        if reg is not None:
            try:
                reg.setRegistration(False)
            except pj.Error:
                pass
            self.graveyard.bury(reg)

    def do_shutdown(self, cmd: p.Shutdown) -> None:
        self.running = False


def _leg_of(msg: p.Message) -> str:
    """The leg an error concerns, so the controller can tell that leg's call (a failed
    record_start names its first leg: the call must not claim a recording that never began)."""
    leg = getattr(msg, "leg", "")
    if not leg and isinstance(msg, p.RecordStart) and msg.legs:
        return msg.legs[0]
    return leg


def _wav_complete(path: str) -> bool:
    """True once the RIFF size field is written (pjmedia writes 0 until the file is closed)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[:4] == b"RIFF" and int.from_bytes(head[4:8], "little") > 0


def _parse_request(whole: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Request-URI, X- headers and P-Asserted-Identity (RFC 3325) of an INVITE (the To header
    may differ from the R-URI)."""
    head = whole.split("\r\n\r\n", 1)[0].split("\r\n")
    parts = head[0].split(" ")
    ruri = parts[1] if len(parts) >= 3 else ""
    headers = []
    for line in head[1:]:
        m = _HEADER_RE.match(line)
        if m and (m.group(1).lower().startswith("x-") or m.group(1).lower() == "p-asserted-identity"):
            headers.append((m.group(1), m.group(2)))
    return ruri, tuple(headers)
