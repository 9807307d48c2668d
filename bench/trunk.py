"""A mobile trunk for the ACD benchmark: a SIP UAS on loopback that answers every INVITE at
once (its "mobile agents" pick up immediately), notes when each INVITE arrived and for which
call (X-Ringmaster-Call), and answers BYEs. RTP it receives is read and dropped."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field


def _hdr(msg: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s*:\s*(.*)$", msg, re.M | re.I)]


@dataclass
class Trunk(asyncio.DatagramProtocol):
    host: str
    port: int
    rtp_port: int
    invites: dict[str, float] = field(default_factory=dict)  # ringmaster call id -> arrival (time.time)
    byes: int = 0
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.time()
        text = data.decode(errors="replace")
        head = text.split("\r\n\r\n", 1)[0]
        first = head.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0"):
            return
        method = first.split(" ", 1)[0]
        vias = "\r\n".join(f"Via: {v}" for v in _hdr(head, "Via"))
        rr = "".join(f"Record-Route: {r}\r\n" for r in _hdr(head, "Record-Route"))
        common = (f"{vias}\r\nFrom: {_hdr(head, 'From')[0]}\r\n"
                  f"Call-ID: {_hdr(head, 'Call-ID')[0]}\r\nCSeq: {_hdr(head, 'CSeq')[0]}\r\n")
        to = _hdr(head, "To")[0]
        assert self.transport is not None
        if method == "INVITE":
            call = (_hdr(head, "X-Ringmaster-Call") or [""])[0]
            if call and call not in self.invites:
                self.invites[call] = now
            if ";tag=" not in to:
                to += f";tag={uuid.uuid4().hex[:8]}"
            sdp = (f"v=0\r\no=trunk 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
                   f"m=audio {self.rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
            reply = (f"SIP/2.0 200 OK\r\n{common}To: {to}\r\n{rr}Contact: <sip:agent@{self.host}:{self.port}>\r\n"
                     f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
            self.transport.sendto(reply.encode(), addr)
        elif method in ("BYE", "CANCEL", "OPTIONS"):
            if method == "BYE":
                self.byes += 1
            self.transport.sendto(f"SIP/2.0 200 OK\r\n{common}To: {to}\r\nContent-Length: 0\r\n\r\n".encode(), addr)


class Discard(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pass
