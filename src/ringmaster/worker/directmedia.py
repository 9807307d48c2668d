"""Direct media after bridge: the SDP a worker asks the edge to send, and the steps of a release.

Once a caller and an agent are bridged and nothing needs their audio in the worker (no
recording, no prompt), the worker takes itself out of the media path, as Asterisk's
`direct_media` and FreeSWITCH's `bypass_media_after_bridge` do: it re-INVITEs the caller leg
offering the agent's media (address and codecs from the agent's last SDP), then re-INVITEs the
agent leg offering what the caller answered. This is third-party call control (RFC 3725, flow
I, with the agent's SDP already in hand). pjsua itself offers `a=inactive` in both re-INVITEs
(it then sends and expects no RTP on those legs: no codec work, no conference port); the SDP the
far end must see travels base64-encoded in `X-Ringmaster-Sdp`, and the edge puts it in the body
(kamailio.cfg.tmpl, route DIRECTMEDIA). pjmedia's negotiator keeps a local "inactive" whatever
the answer says (sdp_neg.c, update_media_direction), so pjsua's view stays consistent.

The origin line of the SDP we send keeps the leg's session id and takes the next version (RFC
3264 8: a changed SDP has a higher version); the worker makes pjsua's own offer carry the same
o= line (onCallSdpCreated), so a later offer of pjsua's follows on from it.

First offer (RFC 3725 flow I from the start): an agent leg whose bridge is known to go direct
(no recording, nothing to play to the agent) is dialled with the caller's media in its INVITE
(`first_offer`) and pjsua's own stream inactive, so the agent answers the caller's SDP and the
bridge then needs one re-INVITE (the caller's, with the agent's answer) instead of two: one SIP
transaction less per call in the worker and the edge (docs/engine-findings.md, 88).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")


@dataclass(frozen=True)
class Origin:
    """An SDP o= line (RFC 4566 5.2): username, session id, version, network type, address
    type, address."""

    user: str
    session: str
    version: int
    rest: str  # "IN IP4 192.0.2.1"

    def line(self) -> str:
        return f"o={self.user} {self.session} {self.version} {self.rest}"

    def next(self) -> Origin:
        return Origin(self.user, self.session, self.version + 1, self.rest)


def _lines(sdp: str) -> list[str]:
    return [line for line in sdp.replace("\r\n", "\n").split("\n") if line]


def origin_of(sdp: str) -> Origin | None:
    """The o= line of an SDP body, or None if it has none or it is malformed."""
    for line in _lines(sdp):
        if line.startswith("o="):
            parts = line[2:].split()
            if len(parts) == 6 and parts[2].isdigit():
                return Origin(parts[0], parts[1], int(parts[2]), " ".join(parts[3:]))
            return None
    return None


def with_origin(sdp: str, origin: Origin) -> str:
    """`sdp` with its o= line replaced by `origin` (CRLF line ends, RFC 4566 5)."""
    out = [origin.line() if line.startswith("o=") else line for line in _lines(sdp)]
    return "\r\n".join(out) + "\r\n"


def audio_section(sdp: str) -> tuple[str, list[str]] | None:
    """(session-level c= line or "", the lines of the first audio m= section) of an SDP, or
    None when it has no usable audio stream: no m=audio, port 0 (refused), a profile other
    than plain RTP/AVP (SRTP, DTLS: the worker's legs are plain RTP), or no c= at all."""
    session_c = ""
    section: list[str] = []
    in_audio = False
    seen_media = False
    for line in _lines(sdp):
        if line.startswith("m="):
            if in_audio:
                break
            seen_media = True
            fields = line[2:].split()
            if len(fields) >= 4 and fields[0] == "audio" and not section:
                if fields[1] == "0" or fields[2] != "RTP/AVP":
                    return None
                in_audio = True
                section.append(line)
            continue
        if in_audio:
            section.append(line)
        elif not seen_media and line.startswith("c="):
            session_c = line
    if not section:
        return None
    if not session_c and not any(line.startswith("c=") for line in section):
        return None
    return session_c, section


def offer_for(own_last: str, peer: str) -> tuple[str, Origin] | None:
    """The SDP to send on a leg whose last local SDP was `own_last`, carrying the media of
    `peer` (the other party's last SDP), with the leg's origin at its next version; or None
    if either SDP is unusable (the bridge then keeps its media in the worker).

    The media section is the peer's as it wrote it, direction included: an SDP's direction
    is its author's (RFC 3264 5.1), and the far end must hear what the peer really does."""
    origin = origin_of(own_last)
    if origin is None:
        return None
    nxt = origin.next()
    body = _with_media(nxt, peer)
    return (body, nxt) if body is not None else None


def first_offer(peer: str, address: str) -> tuple[str, Origin] | None:
    """The SDP of a new leg's INVITE that offers `peer`'s media (the caller's last SDP) instead
    of the worker's: a fresh origin (random session id, version 1, RFC 4566 5.2) whose address
    is the worker's `address` (IPv4 or IPv6 literal); None if `peer` has no usable audio."""
    family = "IP6" if ":" in address else "IP4"
    origin = Origin("-", str(random.randrange(1, 2**31)), 1, f"IN {family} {address}")
    body = _with_media(origin, peer)
    return (body, origin) if body is not None else None


def _with_media(origin: Origin, peer: str) -> str | None:
    media = audio_section(peer)
    if media is None:
        return None
    session_c, section = media
    lines = ["v=0", origin.line(), "s=-"]
    if session_c:
        lines.append(session_c)
    lines.append("t=0 0")
    lines.extend(section)
    return "\r\n".join(lines) + "\r\n"


def offer_direction(sdp: str) -> str:
    """The direction a peer's SDP offer asks for its first audio stream, as a hold is read:
    the stream's own a=sendrecv/sendonly/recvonly/inactive, else the session's, else
    "sendrecv" (RFC 3264 5.1, 6.1). A connection address of 0.0.0.0 (the stream's c=, else the
    session's) is the RFC 2543 hold, read as "inactive" unless the offer says "sendonly"
    (RFC 3264 8.4). "" when the SDP has no audio stream (nothing to say about a hold)."""
    session_dir = ""
    session_c = ""
    media_dir = ""
    media_c = ""
    in_audio = seen_audio = False
    for line in _lines(sdp):
        if line.startswith("m="):
            if seen_audio:
                break
            in_audio = line[2:].startswith("audio ")
            seen_audio = in_audio
            continue
        if line in DIRECTIONS:
            if in_audio:
                media_dir = line[2:]
            elif not seen_audio:
                session_dir = line[2:]
        elif line.startswith("c="):
            if in_audio:
                media_c = line
            elif not seen_audio:
                session_c = line
    if not seen_audio:
        return ""
    direction = media_dir or session_dir or "sendrecv"
    address = (media_c or session_c).split()[-1:] or [""]
    if address[0].split("/", 1)[0] == "0.0.0.0" and direction != "sendonly":
        direction = "inactive"
    return direction


def puts_on_hold(direction: str) -> bool:
    """True for an offer direction that holds the other side (we may not send to it)."""
    return direction in ("sendonly", "inactive")


@dataclass
class Release:
    """One bridge's way out of the worker's media path.

    step: "want" (asked; waits for both legs' media), "first" (re-INVITE to leg `first` sent),
    "second" (re-INVITE to `second` sent), "direct" (done: RTP flows between the parties),
    "anchoring" (taking media back, e.g. before a prompt), "anchored" (media in the worker:
    never released, given up, or taken back).

    pre: `second` was dialled with `first`'s media (`first_offer`): its media never came to
    the worker, and the answer to `first`'s re-INVITE ends the release."""

    first: str
    second: str
    step: str = "want"
    reason: str = ""
    pre: bool = False

    @property
    def legs(self) -> frozenset[str]:
        return frozenset((self.first, self.second))
