"""A SIP caller with its own RTP, for IVR latency: it sends RFC 4733 digits and timestamps
the first received packet of the next prompt (each prompt is a distinct tone, classified per
20 ms packet with the Goertzel algorithm). Loopback only; one UDP socket per call for RTP."""

from __future__ import annotations

import asyncio
import math
import random
import re
import struct
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from tests.helpers.audio import ULAW

EVENTS = {d: i for i, d in enumerate("0123456789*#")}


def goertzel_power(samples: np.ndarray, freq: float, rate: int = 8000) -> float:
    n = len(samples)
    k = int(0.5 + n * freq / rate)
    w = 2 * math.pi * k / n
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples.astype(np.float64):
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def classify(payload: bytes, tones: dict[str, float]) -> str:
    samples = ULAW[np.frombuffer(payload, dtype=np.uint8)]
    if float(np.abs(samples).mean()) < 300:
        return ""
    powers = {name: goertzel_power(samples, f) for name, f in tones.items()}
    best = max(powers, key=lambda k: powers[k])
    total = float((samples.astype(np.float64) ** 2).sum()) * len(samples) / 2
    return best if powers[best] > 0.3 * total else "?"


class RtpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, tones: dict[str, float]):
        self.tones = tones
        self.transport: asyncio.DatagramTransport | None = None
        self.heard: list[tuple[float, str]] = []  # (arrival, tone) per packet
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        if len(data) > 12 and data[1] & 0x7F == 0:
            self.heard.append((now, classify(data[12:], self.tones)))
            self.changed.set()


@dataclass
class CallLeg:
    call_id: str
    from_tag: str
    rtp: RtpEndpoint
    rtp_port: int
    answered: asyncio.Future[tuple[str, int, int]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    to: str = ""
    routes: str = ""
    contact: str = ""
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    ts: int = field(default_factory=lambda: random.getrandbits(32))


def _hdr(msg: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s*:\s*(.*)$", msg, re.M | re.I)]


class SipCaller(asyncio.DatagramProtocol):
    """Signalling for many calls from one SIP socket."""

    def __init__(self, edge: tuple[str, int], local_port: int):
        self.edge = edge
        self.local_port = local_port
        self.calls: dict[str, CallLeg] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _send(self, text: str, body: bytes = b"") -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode() + body, self.edge)

    def invite(self, leg: CallLeg, service: str) -> None:
        host, port = self.edge
        sdp = (f"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {leg.rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
               f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n").encode()
        self.calls[leg.call_id] = leg
        self._send(f"INVITE sip:{service}@{host}:{port} SIP/2.0\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\n"
                   f"From: <sip:bench@127.0.0.1:{self.local_port}>;tag={leg.from_tag}\n"
                   f"To: <sip:{service}@{host}:{port}>\nCall-ID: {leg.call_id}\nCSeq: 1 INVITE\n"
                   f"Contact: <sip:bench@127.0.0.1:{self.local_port}>\nMax-Forwards: 70\n"
                   f"Content-Type: application/sdp\nContent-Length: {len(sdp)}\n\n", sdp)

    def bye(self, leg: CallLeg) -> None:
        self._send(f"BYE {leg.contact} SIP/2.0\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\n"
                   + (f"Route: {leg.routes}\n" if leg.routes else "")
                   + f"From: <sip:bench@127.0.0.1:{self.local_port}>;tag={leg.from_tag}\nTo: {leg.to}\n"
                   f"Call-ID: {leg.call_id}\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n")

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        head, _, body = text.partition("\r\n\r\n")
        cids = _hdr(head, "Call-ID")
        leg = self.calls.get(cids[0]) if cids else None
        if leg is None:
            return
        first = head.split("\r\n", 1)[0]
        cseq = (_hdr(head, "CSeq") or [""])[0]
        if first.startswith("SIP/2.0 "):
            code = int(first.split()[1])
            if "INVITE" not in cseq or code < 200:
                if "BYE" in cseq and code >= 200:
                    leg.ended.set()
                return
            leg.to = _hdr(head, "To")[0]
            if code >= 300:
                if not leg.answered.done():
                    leg.answered.set_exception(RuntimeError(f"call refused: {code}"))
                return
            leg.contact = _hdr(head, "Contact")[0].strip("<>").split(">")[0]
            leg.routes = ", ".join(reversed(_hdr(head, "Record-Route")))
            self._send(f"ACK {leg.contact} SIP/2.0\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\n"
                       + (f"Route: {leg.routes}\n" if leg.routes else "")
                       + f"From: <sip:bench@127.0.0.1:{self.local_port}>;tag={leg.from_tag}\nTo: {leg.to}\n"
                       f"Call-ID: {leg.call_id}\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n")
            m_port = re.search(r"^m=audio (\d+)", body, re.M)
            c_ip = re.search(r"^c=IN IP4 (\S+)", body, re.M)
            pt = re.search(r"^a=rtpmap:(\d+) telephone-event", body, re.M)
            if not leg.answered.done() and m_port and c_ip:
                leg.answered.set_result((c_ip.group(1), int(m_port.group(1)), int(pt.group(1)) if pt else 101))
        elif first.startswith("BYE "):
            vias = "\n".join(f"Via: {v}" for v in _hdr(head, "Via"))
            self._send(f"SIP/2.0 200 OK\n{vias}\nFrom: {_hdr(head, 'From')[0]}\nTo: {_hdr(head, 'To')[0]}\n"
                       f"Call-ID: {leg.call_id}\nCSeq: {cseq}\nContent-Length: 0\n\n")
            leg.ended.set()


def send_digit(leg: CallLeg, remote: tuple[str, int], pt: int, digit: str) -> float:
    """RFC 4733: three packets for the event, three end packets; returns the send time of the first."""
    assert leg.rtp.transport is not None
    event = EVENTS[digit]
    leg.ts = (leg.ts + 1600) & 0xFFFFFFFF
    t0 = time.perf_counter()
    for i, (end, duration) in enumerate([(0, 160), (0, 320), (0, 480), (1, 640), (1, 640), (1, 640)]):
        leg.seq = (leg.seq + 1) & 0xFFFF
        marker = 0x80 if i == 0 else 0
        header = struct.pack("!BBHII", 0x80, marker | pt, leg.seq, leg.ts, leg.ssrc)
        payload = struct.pack("!BBH", event, (end << 7) | 10, duration)
        leg.rtp.transport.sendto(header + payload, remote)
    return t0
