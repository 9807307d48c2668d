"""A guard for SIP INFO application/dtmf-relay bodies that pjsua's own parser would die on.

pjsua 2.15.1 parses a dtmf-relay INFO in pjsua_call_on_tsx_state_changed (pjsua_call.c):
it takes the body with strlen (so a NUL ends it), splits off the first line with pj_strtok
on the delimiter set "\\r\\n", then steps past that line and its CRLF with
`input.slen -= token.slen + 2` without checking: a "Signal=5" with no CRLF after it (or a
NUL before the CRLF, or a bare LF) leaves a negative length, and the next pj_strstr asserts
(`str->slen >= 0`) and aborts the whole worker, every call on it with it
(docs/engine-findings.md 25). That happens before any callback reports the digit.

The only Python code that runs before that parser is Call.onCallTsxState (pjsua calls the
application first, then handles the INFO). It cannot answer the request or stop the parser,
but the parser reads the body in place from the received packet, so the guard blanks the
body's first byte when the body is not well-formed: strlen then sees an empty body and pjsua
answers 400 Bad Request, as it does for any dtmf-relay body it cannot read.
"""

from __future__ import annotations

import ctypes
import re

# Lines separated by CRLF, no NUL, no bare CR or LF, and at least one CRLF: then the first
# line pj_strtok finds is followed by its CRLF and pjsua's arithmetic stays >= 0. The last
# line may be unterminated: pjsua sends "Signal=5\r\nDuration=160" itself, Cisco adds a CRLF.
_WELL_FORMED = re.compile(rb"\A(?:[^\x00\r\n]*\r\n)+[^\x00\r\n]*\Z")
_CONTENT_TYPE = re.compile(rb"^(?:content-type|c)\s*:\s*application/dtmf-relay\b", re.I | re.M)
# Where to look for the packet inside pjsip_rx_data: the packet buffer (pkt_info.packet) is
# an array inside the struct, after tp_info and the timestamp (~0.3 kB in 2.15.1).
_SEARCH = 4096


def body_is_safe(message: bytes) -> bool:
    """True unless `message` (a whole SIP request) is a dtmf-relay INFO whose body could
    make pjsua's parser abort (see the module text). Other messages are always safe."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep or not body or not _CONTENT_TYPE.search(head):
        return True
    return _WELL_FORMED.match(body) is not None


def blank_body(rdata_ptr: int, message: bytes) -> bool:
    """Write a NUL over the first body byte of the received packet at `rdata_ptr`
    (a pjsip_rx_data*). Returns False if the packet was not found where pjsip keeps it."""
    head, sep, _ = message.partition(b"\r\n\r\n")
    if not sep or not rdata_ptr:
        return False
    probe = message[:64]
    window = ctypes.string_at(rdata_ptr, _SEARCH + len(message))
    at = window.find(probe)
    if at < 0 or window[at:at + len(message)] != message:
        return False
    ctypes.memset(rdata_ptr + at + len(head) + len(sep), 0, 1)
    return True
