"""A raw-UDP SIP user agent for crafted requests (a dialog-following UAC, a redirector, a listener): a caller that sends exactly the bytes a test
writes (hostile INFO bodies, REFER, floods), follows the Record-Route set of the answer and
reads every reply. Loopback only; no retransmissions (the peer is on the same host)."""

from __future__ import annotations

import re
import socket
import time
import uuid
from dataclasses import dataclass, field


@dataclass
class Reply:
    code: int
    method: str  # the CSeq method it answers
    cseq: int
    text: str


@dataclass
class Request:
    method: str
    text: str


SDP = ("v=0\r\no=raw 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
       "m=audio {rtp} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
       "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n")


def _header(text: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s*:(.*)$", text, re.M | re.I)]


@dataclass
class RawUac:
    """One UDP socket at (host, port) talking to `target` (host, port)."""

    port: int
    target: tuple[str, int]
    user: str = "4511223344"
    host: str = "127.0.0.1"
    replies: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)  # requests the peer sent us

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, self.port))
        self.sock.setblocking(False)
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:10]
        self.cseq = 1
        self.remote_tag = ""
        self.route: list[str] = []
        self.remote_target = ""
        self.ruri = ""

    def close(self) -> None:
        self.sock.close()

    # ------------------------------------------------------------ raw IO

    def send(self, data: bytes | str) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, self.target)

    def pump(self, seconds: float = 0.0) -> None:
        """Read what has arrived (for `seconds`); answer the peer's requests with 200."""
        end = time.monotonic() + seconds
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                if time.monotonic() >= end:
                    return
                time.sleep(0.002)
                continue
            text = data.decode(errors="replace")
            first = text.split("\r\n", 1)[0]
            if first.startswith("SIP/2.0 "):
                code = int(first.split(" ")[1])
                cseq = _header(text, "CSeq")[0].split()
                self.replies.append(Reply(code, cseq[1], int(cseq[0]), text))
            else:
                method = first.split(" ", 1)[0]
                self.requests.append(Request(method, text))
                if method != "ACK":
                    self.sock.sendto(self._answer(text, 200).encode(), addr)

    def wait_reply(self, method: str, cseq: int, final: bool = True, timeout: float = 5.0) -> Reply:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.01)
            for r in self.replies:
                if r.method == method and r.cseq == cseq and (r.code >= 200 or not final):
                    return r
        raise AssertionError(f"no {'final ' if final else ''}reply to {method} {cseq} in {timeout}s: "
                             f"{[(r.code, r.method, r.cseq) for r in self.replies]}")

    def _answer(self, request: str, code: int) -> str:
        lines = [f"SIP/2.0 {code} OK"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for v in _header(request, name):
                lines.append(f"{name}: {v}")
        return "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"

    # ------------------------------------------------------------ dialog

    def _via(self) -> str:
        return f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch=z9hG4bK{uuid.uuid4().hex}"

    def invite_text(self, number: str, rtp_port: int, call_id: str | None = None,
                    extra: str = "") -> str:
        body = SDP.format(host=self.host, rtp=rtp_port)
        call_id = call_id or self.call_id
        uri = f"sip:{number}@{self.target[0]}:{self.target[1]}"
        return (f"INVITE {uri} SIP/2.0\r\n{self._via()}\r\n"
                f"From: <sip:{self.user}@{self.host}:{self.port}>;tag={self.tag}\r\n"
                f"To: <sip:{number}@{self.target[0]}:{self.target[1]}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:{self.user}@{self.host}:{self.port}>\r\nMax-Forwards: 70\r\n{extra}"
                f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}")

    def invite_and_cancel(self, number: str, rtp_port: int, call_id: str, gap: float = 0.002) -> None:
        """An INVITE and, `gap` seconds later, its CANCEL (same branch, RFC 3261 9.1): a call
        the caller ends before anyone could answer it."""
        invite = self.invite_text(number, rtp_port, call_id=call_id)
        self.send(invite)
        time.sleep(gap)
        via = _header(invite, "Via")[0]
        uri = invite.split(" ", 2)[1]
        self.send(f"CANCEL {uri} SIP/2.0\r\nVia: {via}\r\n"
                  f"From: <sip:{self.user}@{self.host}:{self.port}>;tag={self.tag}\r\n"
                  f"To: <sip:{number}@{self.target[0]}:{self.target[1]}>\r\nCall-ID: {call_id}\r\n"
                  "CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")

    def new_call(self) -> None:
        """Forget the last dialog: the next INVITE starts a new call from the same socket."""
        self.call_id, self.tag, self.cseq = uuid.uuid4().hex, uuid.uuid4().hex[:10], 1
        self.remote_tag, self.route, self.remote_target = "", [], ""
        self.replies.clear()
        self.requests.clear()

    def send_invite(self, number: str, rtp_port: int) -> None:
        """Send an INVITE without waiting (complete_invite takes its answer)."""
        self.ruri = f"sip:{number}@{self.target[0]}:{self.target[1]}"
        self.to_uri = f"<sip:{number}@{self.target[0]}:{self.target[1]}>"
        self.send(self.invite_text(number, rtp_port))

    def invite(self, number: str, rtp_port: int, timeout: float = 5.0) -> Reply:
        """Send an INVITE and wait for its final reply; on 2xx, ACK it and keep the dialog."""
        self.send_invite(number, rtp_port)
        return self.complete_invite(timeout)

    def complete_invite(self, timeout: float = 5.0) -> Reply:
        """Wait for the INVITE's final reply; on 2xx, ACK it and keep the dialog."""
        reply = self.wait_reply("INVITE", 1, timeout=timeout)
        if 200 <= reply.code < 300:
            self.remote_tag = re.search(r";tag=([^;>\s]+)", _header(reply.text, "To")[0]).group(1)  # type: ignore[union-attr]
            rr = [u.strip() for h in _header(reply.text, "Record-Route") for u in h.split(",")]
            self.route = list(reversed(rr))  # UAC: the Route set is the Record-Route reversed
            contact = _header(reply.text, "Contact")[0]
            self.remote_target = contact[contact.index("<") + 1:contact.index(">")] if "<" in contact else contact
            self.request("ACK", cseq=1)
        return reply

    def request(self, method: str, body: bytes | str = b"", content_type: str = "",
                extra: str = "", cseq: int | None = None) -> int:
        """Send an in-dialog request along the route set; returns its CSeq number."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        raw = body.encode() if isinstance(body, str) else body
        head = (f"{method} {self.remote_target} SIP/2.0\r\n{self._via()}\r\n"
                + "".join(f"Route: {r}\r\n" for r in self.route)
                + f"From: <sip:{self.user}@{self.host}:{self.port}>;tag={self.tag}\r\n"
                f"To: {self.to_uri};tag={self.remote_tag}\r\nCall-ID: {self.call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:{self.user}@{self.host}:{self.port}>\r\n"
                f"Max-Forwards: 70\r\n{extra}"
                + (f"Content-Type: {content_type}\r\n" if content_type else "")
                + f"Content-Length: {len(raw)}\r\n\r\n")
        self.send(head.encode() + raw)
        return cseq

    def info_digit(self, signal: bytes | str, duration: int = 160) -> int:
        """A SIP INFO application/dtmf-relay digit (the format Cisco and pjsua send)."""
        sig = signal.encode("latin-1") if isinstance(signal, str) else signal
        return self.request("INFO", b"Signal=" + sig + f"\r\nDuration={duration}\r\n".encode(),
                            "application/dtmf-relay")

    def bye(self) -> Reply:
        return self.wait_reply("BYE", self.request("BYE"))


class Listener:
    """A UDP socket that only records what reaches it: the 'premium-rate number' a hostile
    peer would like the server to call. A test asserts it saw no INVITE."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.port = port
        self.seen: list[str] = []

    @property
    def uri(self) -> str:
        return f"sip:+4590901234@127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            self.seen.append(data.decode(errors="replace").split(" ", 1)[0])
        return self.seen

    def close(self) -> None:
        self.sock.close()


class Redirector:
    """A UAS that answers every INVITE with 302 Moved Temporarily to `contact` (RFC 3261
    21.3.3), from a thread: a hostile agent or transfer target trying to send our leg on."""

    def __init__(self, port: int, contact: str, host: str = "127.0.0.1"):
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.contact = contact
        self.invites = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            text = data.decode(errors="replace")
            if not text.startswith("INVITE "):
                continue
            self.invites += 1
            lines = ["SIP/2.0 302 Moved Temporarily"]
            for name in ("Via", "From", "Call-ID", "CSeq"):
                lines += [f"{name}: {v}" for v in _header(text, name)]
            lines.append(f"To: {_header(text, 'To')[0]};tag=redir{self.invites}")
            lines.append(f"Contact: <{self.contact}>")
            self.sock.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()
