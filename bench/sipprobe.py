"""A minimal SIP caller for latency probes: INVITE -> (1xx) -> 200 timed with a monotonic
clock, ACK along the Record-Route set, then answers the server's BYE. SIPp's own response
times are quantized to its scheduler tick (0/4/12 ms seen), too coarse for a p99."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field


@dataclass
class ProbeCall:
    call_id: str
    sent_at: float
    branch: str
    from_tag: str
    answered_at: float | None = None
    final: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)


def _hdr(msg: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s*:\s*(.*)$", msg, re.M | re.I)]


class SipProbe(asyncio.DatagramProtocol):
    def __init__(self, edge: tuple[str, int], local_port: int, rtp_port: int, service: str):
        self.edge = edge
        self.local_port = local_port
        self.rtp_port = rtp_port
        self.service = service
        self.calls: dict[str, ProbeCall] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode(), self.edge)

    def invite(self) -> ProbeCall:
        cid = f"probe-{uuid.uuid4().hex}"
        branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        tag = uuid.uuid4().hex[:8]
        host, port = self.edge
        sdp = (f"v=0\no=probe 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
               f"m=audio {self.rtp_port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n").replace("\n", "\r\n")
        msg = (f"INVITE sip:{self.service}@{host}:{port} SIP/2.0\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch={branch};rport\n"
               f"From: <sip:probe@127.0.0.1:{self.local_port}>;tag={tag}\n"
               f"To: <sip:{self.service}@{host}:{port}>\nCall-ID: {cid}\nCSeq: 1 INVITE\n"
               f"Contact: <sip:probe@127.0.0.1:{self.local_port}>\nMax-Forwards: 70\n"
               f"User-Agent: ringmaster-bench-probe\nContent-Type: application/sdp\n"
               f"Content-Length: {len(sdp)}\n\n")
        call = ProbeCall(cid, time.perf_counter(), branch, tag)
        self.calls[cid] = call
        assert self.transport is not None
        self.transport.sendto(msg.replace("\n", "\r\n").encode() + sdp.encode(), self.edge)
        return call

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        text = data.decode(errors="replace")
        head = text.split("\r\n\r\n", 1)[0]
        cids = _hdr(head, "Call-ID")
        call = self.calls.get(cids[0]) if cids else None
        if call is None:
            return
        first = head.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0 "):
            code = int(first.split()[1])
            if code < 200 or "INVITE" not in (_hdr(head, "CSeq") or [""])[0]:
                return
            to = _hdr(head, "To")[0]
            if code >= 300:
                call.final = code
                self._send(f"ACK sip:{self.service}@{self.edge[0]}:{self.edge[1]} SIP/2.0\n"
                           f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch={call.branch};rport\n"
                           f"From: <sip:probe@127.0.0.1:{self.local_port}>;tag={call.from_tag}\nTo: {to}\n"
                           f"Call-ID: {call.call_id}\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n")
                call.ended.set()
                return
            if call.answered_at is None:
                call.answered_at = now
                call.final = code
            contact = _hdr(head, "Contact")[0].strip("<>").split(">")[0]
            routes = ", ".join(reversed(_hdr(head, "Record-Route")))
            self._send(f"ACK {contact} SIP/2.0\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\n"
                       + (f"Route: {routes}\n" if routes else "")
                       + f"From: <sip:probe@127.0.0.1:{self.local_port}>;tag={call.from_tag}\nTo: {to}\n"
                       f"Call-ID: {call.call_id}\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n")
        elif first.startswith("BYE "):
            vias = "\n".join(f"Via: {v}" for v in _hdr(head, "Via"))
            self._send(f"SIP/2.0 200 OK\n{vias}\nFrom: {_hdr(head, 'From')[0]}\nTo: {_hdr(head, 'To')[0]}\n"
                       f"Call-ID: {call.call_id}\nCSeq: {_hdr(head, 'CSeq')[0]}\nContent-Length: 0\n\n")
            call.ended.set()


async def probe(edge: tuple[str, int], local_port: int, rtp_port: int, service: str, rate: float,
                seconds: float) -> list[ProbeCall]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: SipProbe(edge, local_port, rtp_port, service), local_addr=("127.0.0.1", local_port))
    try:
        calls = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            calls.append(proto.invite())
        await asyncio.gather(*(asyncio.wait_for(c.ended.wait(), 30) for c in calls), return_exceptions=True)
        return calls
    finally:
        transport.close()
