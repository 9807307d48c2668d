"""Crafted SIP over raw UDP: a sender that builds requests byte by byte (hostile, malformed,
forged) and a listener that records every request it is sent (a number that must never ring).

Nothing here is a SIP stack on purpose: the point is to send what a polite stack would not.
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass, field


def branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex[:16]


SDP = ("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@dataclass
class RawSip:
    """One UDP socket on 127.0.0.1:port that sends crafted requests and reads replies."""

    port: int
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)

    def close(self) -> None:
        self.sock.close()

    def invite(self, to_port: int, user: str = "100", call_id: str = "", headers: str = "",
               body: str | None = None, to_tag: str = "", route: str = "", cseq: int = 1,
               method: str = "INVITE", ruri: str = "") -> bytes:
        """A request from this socket to 127.0.0.1:to_port; `headers` are extra raw lines
        ending in CRLF; body None = an SDP offer for INVITE, empty otherwise."""
        call_id = call_id or uuid.uuid4().hex
        if body is None:
            # an RTP port nobody here reads; below the socket's when +1000 would pass 65535
            # (the port blocks at the top of the range: a port of 65633 made a worker answer 400)
            media = self.port + 1000 if self.port + 1000 <= 65535 else self.port - 1000
            body = SDP.format(port=media) if method == "INVITE" else ""
        ctype = "Content-Type: application/sdp\r\n" if body and method == "INVITE" else ""
        ruri = ruri or f"sip:{user}@127.0.0.1:{to_port}"
        to = f"<sip:{user}@127.0.0.1:{to_port}>" + (f";tag={to_tag}" if to_tag else "")
        msg = (f"{method} {ruri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch()};rport\r\n"
               + (f"Route: {route}\r\n" if route else "")
               + f"From: <sip:4512345678@127.0.0.1:{self.port}>;tag={uuid.uuid4().hex[:8]}\r\n"
               f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
               f"Contact: <sip:4512345678@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n"
               f"User-Agent: hostile-test\r\n{headers}{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}")
        return msg.encode()

    def send(self, data: bytes, to_port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", to_port))

    def pending(self) -> list[str]:
        """Datagrams already waiting, without blocking (read while sending a burst: the socket's
        buffer holds only ~100 datagrams on loopback)."""
        out: list[str] = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(65535).decode(errors="replace"))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.2)
        return out

    def replies(self, seconds: float) -> list[str]:
        """Every datagram received within `seconds` (first lines and headers, decoded loosely)."""
        out: list[str] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            out.append(data.decode(errors="replace"))
        return out

    def final_reply(self, seconds: float) -> str:
        """The first final (>= 200) reply within `seconds`, or '' if none came."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            if data.startswith("SIP/2.0 ") and not data.startswith("SIP/2.0 1"):
                return data
        return ""


def status_of(reply: str) -> int:
    """The status code of a reply text, 0 if it is not one."""
    if reply.startswith("SIP/2.0 "):
        try:
            return int(reply.split(" ", 2)[1])
        except ValueError:
            return 0
    return 0


class Listener:
    """A UDP socket standing for a number that must never be dialled: counts what it gets."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.received: list[str] = []

    def drain(self, seconds: float = 0.5) -> list[str]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.received.append(self.sock.recv(65535).decode(errors="replace"))
            except TimeoutError:
                continue
        return self.received

    def requests(self, method: str) -> list[str]:
        return [r for r in self.received if r.startswith(method + " ")]

    def close(self) -> None:
        self.sock.close()


def header_values(message: str, name: str) -> list[str]:
    """Every value of header `name` (case-insensitive, long form) in a SIP message text; a
    Route or Record-Route line listing several entries gives one value per entry."""
    head = message.split("\r\n\r\n", 1)[0]
    out: list[str] = []
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if not sep or key.strip().lower() != name.lower():
            continue
        if name.lower() in ("route", "record-route"):
            out.extend(v.strip() for v in value.split(","))
        else:
            out.append(value.strip())
    return out


def uri_of(value: str) -> str:
    """`<sip:x@h:p;lr>;tag=..` -> `sip:x@h:p;lr`."""
    return value.split("<", 1)[1].split(">", 1)[0] if "<" in value else value.split(";", 1)[0]


def hostport_of(uri: str) -> tuple[str, int]:
    """`sip:user@127.0.0.1:5070;transport=udp` (or without the user) -> ('127.0.0.1', 5070)."""
    rest = uri.split(":", 1)[1] if uri.startswith(("sip:", "sips:")) else uri
    hostport = rest.split("@", 1)[-1].split(";", 1)[0]
    host, _, port = hostport.partition(":")
    return host, int(port or 5060)
