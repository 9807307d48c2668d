"""SIP URI and name-addr helpers shared by the call adapters (calls.py, outbound.py,
callbacks.py) and the queue runtime: pure functions, no IO.

They live apart from calls.py so that modules below the call adapter (acd/runtime.py,
callbacks.py) need not import it (no import cycle).
"""

from __future__ import annotations


def sip_user(uri: str) -> str:
    """User part of a SIP URI in any of its forms ('"Bob" <sip:+45123@host>;tag=x')."""
    u = uri
    if "<" in u:
        u = u.split("<", 1)[1].split(">", 1)[0]
    u = u.split(";", 1)[0]
    if ":" in u and u.split(":", 1)[0] in ("sip", "sips", "tel"):
        u = u.split(":", 1)[1]
    return u.split("@", 1)[0] if "@" in u else ""


def display_name(from_value: str) -> str:
    """The display name of a From header value ('"Dana Jensen" <sip:...>' or 'Dana <sip:...>'),
    made safe to quote again (RFC 3261 25.1 quoted-string: no quote, backslash or control
    character), at most 64 characters; "" when there is none."""
    v = from_value.strip()
    if v.startswith('"'):
        name = v[1:].split('"', 1)[0]
    elif "<" in v:
        name = v.split("<", 1)[0]
    else:
        return ""
    return "".join(c for c in name if c.isprintable() and c not in '"\\').strip()[:64]


def identity(number: str, name: str, host: str) -> str | None:
    """The caller's identity as a name-addr for an agent leg's From / P-Asserted-Identity
    ('"Dana" <sip:4511223344@edge>'), or None when the number is not a plain SIP user part
    (RFC 3261 25.1 unreserved characters; a withheld or odd caller ID is not passed on)."""
    if not number or any(not (c.isalnum() or c in "+-_.!~*'()&=$,;?/") for c in number) or len(number) > 64:
        return None
    uri = f"sip:{number}@{host}"
    return f'"{name}" <{uri}>' if name else f"<{uri}>"
