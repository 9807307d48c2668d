"""Rules for values that come from outside, in one place: JSON bodies (MQTT and HTTP), DTMF
digits, caller IDs and IVR variables that become file names or SIP header values.

Each rule either returns a value that is safe where it goes or raises InputRefused with the
reason and the place (a dotted field name), which the entry point turns into its own answer
(an MQTT message on `errors`, an HTTP 400). Nothing here does IO.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

# RFC 4733 section 3.2: events 0-15 are 0-9, *, #, A-D; the only digits a caller can send.
DTMF_DIGITS = frozenset("0123456789*#ABCD")

JSON_MAX_DEPTH = 16  # our payloads are 3 levels deep; a task's free `data` gets the rest
JSON_MAX_INT_DIGITS = 20  # an int64 and a bit: no field needs more
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")

# File-name rules: what survives on every file system and in a shell without quoting.
# 255 bytes is the NAME_MAX of ext4/xfs/btrfs; we keep well under it (a 230-character caller
# ID plus a suffix used to exceed it and the recording failed silently).
FILE_NAME_MAX = 64
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9+=@,_.-]")

# Names that become MQTT topic levels (agents/NAME/commands), broker user names and file-name
# parts: agent, queue and skill names. No '/', '+', '#' (MQTT 3.1.1 section 4.7: level
# separator and wildcards), no NUL, nothing a shell or a file system treats specially.
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# RFC 3261 section 25.1: token characters, for a header's name
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
HEADER_VALUE_MAX = 200


class InputRefused(ValueError):
    """A value from outside that cannot be used. `field` is its dotted place ("" = the whole
    input), `reason` what is wrong; str() is "field: reason"."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


# ---------------------------------------------------------------- JSON


def json_object(raw: bytes, *, max_bytes: int, max_depth: int = JSON_MAX_DEPTH) -> dict[str, Any]:
    """Parse raw as one JSON object within bounds; InputRefused otherwise.

    Bounded before parsing: size, and nesting depth (Python's json recurses once per level and
    a 20 kB body of brackets used to raise RecursionError, a 500). While parsing: integers of
    at most JSON_MAX_INT_DIGITS digits (int() of 5000 digits raises ValueError), and only
    finite numbers: NaN and Infinity are not JSON (RFC 8259 section 6) and 1e999 overflows.
    """
    if len(raw) > max_bytes:
        raise InputRefused("", f"{len(raw)} bytes is too large (limit {max_bytes})")
    # fewer brackets than the limit cannot nest deeper than it: most payloads skip the scan
    depth = json_depth(raw) if raw.count(b"[") + raw.count(b"{") > max_depth else 0
    if depth > max_depth:
        raise InputRefused("", f"nested {depth} levels deep (limit {max_depth})")
    try:
        data = json.loads(raw, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputRefused("", f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputRefused("", "must be a JSON object")
    return data


def json_depth(raw: bytes) -> int:
    """Deepest nesting of [ and { outside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > JSON_MAX_INT_DIGITS:
        raise InputRefused("", f"a number of {len(text)} digits is too large")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputRefused("", f"number {text[:30]} is out of range")
    return value


def _json_constant(text: str) -> Any:
    raise InputRefused("", f"{text} is not a JSON number")


# ---------------------------------------------------------------- DTMF


def dtmf_digits(digits: str) -> str:
    """Only the RFC 4733 digits of digits, in order; a-d count as A-D (SIP INFO senders vary)."""
    return "".join(c for c in digits.upper() if c in DTMF_DIGITS)


# ---------------------------------------------------------------- caller and called IDs

PARTY_ID_MAX = 128  # E.164 is 15 digits; SIP user parts can be names, not novels


def party_id(value: str) -> str:
    """A caller ID or a called number as the call record, the routing and the flows keep it:
    printable characters only, at most PARTY_ID_MAX. It is still the caller's choice: where it
    becomes a path or a header, that place applies its own rule (file_name_part, header_value)."""
    return "".join(c for c in value if c.isprintable())[:PARTY_ID_MAX]


# ---------------------------------------------------------------- paths


def file_name_part(value: str, max_len: int = FILE_NAME_MAX, empty: str = "unknown") -> str:
    """value made safe as one path component: no separators, no `..`, no leading dot,
    printable ASCII only, at most max_len characters. A caller ID '../../etc/x' becomes
    '_._.._etc_x'; never '' (then `empty`)."""
    safe = _UNSAFE_FILE_CHARS.sub("_", value)[:max_len]
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return safe or empty


def contained(root: str | Path, relative: str) -> Path:
    """root/relative, resolved, if it stays inside root; InputRefused otherwise (a template
    expanding to '/etc/x' or '../x', or through a symlink that points out)."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or target == base:
        raise InputRefused("path", f"{relative!r} is not inside {str(base)!r}")
    if any(len(part) > 255 for part in target.relative_to(base).parts):
        raise InputRefused("path", f"a file name in {relative[:80]!r}... is longer than 255 characters")
    return target


# ---------------------------------------------------------------- SIP headers


def header_name_ok(name: str) -> bool:
    """name is a SIP token (RFC 3261 section 25.1) of sane length, usable as a header name."""
    return 0 < len(name) <= 64 and bool(_TOKEN.match(name))


def header_value(value: str, max_len: int = HEADER_VALUE_MAX) -> str | None:
    """value as a SIP header value, or None when it cannot be one safely.

    No control characters (CR/LF would start a new header or the body: header injection;
    NUL ends a C string in pjsip), no DEL, printable text only, at most max_len characters.
    RFC 3261 section 25.1 allows UTF-8 in TEXT-UTF8 values; we keep it but refuse the rest.
    """
    if len(value) > max_len or not value.isprintable():
        return None
    return value.strip()

