"""The edge is the boundary: it relays nothing it should not, refuses what no worker could take
before a worker slot is charged, lets in only numbers the dial plan routes, lets workers dial
only what the plan lists, throttles password guessing, and keeps its count of each worker's
calls honest (real Kamailio, real workers, raw UDP for the crafted SIP, SIPp callers)."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.helpers.audio import write_tone
from tests.helpers.rawsip import Listener, RawSip, branch, header_values, hostport_of, status_of, uri_of
from tests.helpers.sipp import run_sipp


def _edge_counter(d, name: str, at_least: int = 1, timeout: float = 12.0) -> dict:  # type: ignore[no-untyped-def]
    """status() once the edge watch loop (every 5 s) has counted `name` at_least times."""
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        st = d.status() or {}
        if st.get("edge", {}).get("counters", {}).get(name, 0) >= at_least:
            return st
        time.sleep(0.3)
    raise AssertionError(f"edge counter {name} < {at_least}: {st.get('edge')}")


def _full_capacity_calls(d, tmp_path: Path, calls: int = 4) -> None:  # type: ignore[no-untyped-def]
    """`calls` callers at once (2 workers x 2 inbound = the whole capacity): every one answered."""
    res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(0), tmp_path, service="100", calls=calls,
                   rate=200, rtp_sink=d.ports.sink(), timeout=30)
    assert res.successful == calls and res.failed == 0, res.output


def test_forged_in_dialog_invite_from_an_untrusted_source_is_refused_and_relayed_nowhere(daemon_factory):
    d = daemon_factory(workers=1)
    premium = Listener(d.ports.sink(5))  # stands for a premium-rate number elsewhere on the network
    attacker = RawSip(d.ports.caller(20))  # callers 0-9 are the trusted trunk; 20 is not
    try:
        edge = d.ports.edge
        forged = attacker.invite(edge, user="0900123456", ruri=f"sip:0900123456@127.0.0.1:{premium.port}",
                                 to_tag="f00d", route=f"<sip:127.0.0.1:{edge};lr>")
        attacker.send(forged, edge)
        reply = attacker.final_reply(2.0)
        assert status_of(reply) == 403, reply
        assert premium.drain(1.0) == [], "the edge relayed a forged in-dialog INVITE"
        # the same with a BYE and an ACK: nothing relayed either
        for method in ("BYE", "ACK"):
            attacker.send(attacker.invite(edge, method=method, ruri=f"sip:x@127.0.0.1:{premium.port}",
                                          to_tag="f00d", route=f"<sip:127.0.0.1:{edge};lr>"), edge)
        assert premium.drain(1.0) == []
    finally:
        premium.close()
        attacker.close()
    assert d.events("edge.unknown_dialog_refused")


def test_numbers_the_plan_does_not_route_are_refused_at_the_edge_even_in_a_burst(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2, start=False)
    d.config["entry_points"] += [{"prefix": "77", "flow": "demo"}, {"pattern": r"9\d{3}", "flow": "demo"}]
    d.start()
    pids = {w["name"]: w["pid"] for w in d.status()["workers"]}
    trunk = RawSip(d.ports.caller(3))
    try:
        trunk.send(trunk.invite(d.ports.edge, user="0900123456"), d.ports.edge)
        assert status_of(trunk.final_reply(2.0)) == 404
        # a trusted burst of 200 INVITEs at 100/s to unknown numbers: all refused by the edge,
        # none reaches a worker (each would have cost the worker sockets for its media)
        got: list[str] = []
        for i in range(200):
            trunk.send(trunk.invite(d.ports.edge, user=f"555{i:04d}"), d.ports.edge)
            time.sleep(0.01)
            got += trunk.pending()
        codes = [status_of(r) for r in got + trunk.replies(1.0)]
        assert codes.count(404) == 200, sorted(set(codes))
    finally:
        trunk.close()
    assert not d.events("call.no_route"), "unknown numbers reached a worker"
    st = d.status()
    assert {w["name"]: w["pid"] for w in st["workers"]} == pids and all(w["alive"] for w in st["workers"])
    # exact, prefix and pattern entry points still get through
    for number in ("100", "7712", "9123"):
        res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(0), tmp_path, service=number,
                       rtp_sink=d.ports.sink(), timeout=20)
        assert res.successful == 1, (number, res.output)
    assert _edge_counter(d, "unknown_number", 201)["edge"]["counters"]["unknown_number"] == 201


MALFORMED = {
    "nul in a header": ("Subject: a\x00b\r\n", 400),
    "control byte in a header": ("Subject: a\x07b\r\n", 400),
    "300 Via headers": ("".join(f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK{i}\r\n" for i in range(300)), 513),
    "2000 headers": ("".join(f"X-H{i}: {i}\r\n" for i in range(2000)), 513),
    "12 Via headers": ("".join(f"Via: SIP/2.0/UDP 10.0.0.{i}:5060;branch=z9hG4bK{i}\r\n" for i in range(11)), 400),
    "120 short headers": ("".join(f"X-{i}: {i}\r\n" for i in range(200)), 400),
}


def test_malformed_requests_are_refused_before_a_worker_slot_is_charged(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2)
    trunk = RawSip(d.ports.caller(3))
    try:
        for name, (headers, code) in MALFORMED.items():
            for _ in range(2):  # twice each: before the fix, 4 of them filled both workers
                trunk.send(trunk.invite(d.ports.edge, headers=headers), d.ports.edge)
                reply = trunk.final_reply(3.0)
                assert status_of(reply) == code, (name, reply[:200] or "no reply")
        big_from = trunk.invite(d.ports.edge).replace(b"From: <sip:4512345678", b"From: <sip:" + b"4" * 40000)
        trunk.send(big_from, d.ports.edge)
        assert status_of(trunk.final_reply(3.0)) == 513
    finally:
        trunk.close()
    # (the edge's log lines reach the daemon's log a moment after its replies)
    d.wait_event("edge.malformed_refused", 2 * len(MALFORMED) + 1, timeout=5)
    assert all(w["edge_calls"] == 0 for w in d.status()["workers"])
    _full_capacity_calls(d, tmp_path)


def test_a_dtmf_info_with_a_nul_or_a_bad_signal_never_reaches_the_worker(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1)
    trunk = RawSip(d.ports.caller(3))
    try:
        call_id = uuid.uuid4().hex
        trunk.send(trunk.invite(d.ports.edge, user="200", call_id=call_id), d.ports.edge)
        ok = trunk.final_reply(5.0)
        assert status_of(ok) == 200, ok
        to = header_values(ok, "To")[0]
        route = ", ".join(reversed(header_values(ok, "Record-Route")))
        contact = uri_of(header_values(ok, "Contact")[0])
        frm = header_values(ok, "From")[0]

        def in_dialog(method: str, cseq: int, body: str = "", ctype: str = "") -> bytes:
            extra = f"Content-Type: {ctype}\r\n" if ctype else ""
            return (f"{method} {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{trunk.port};branch={branch()}\r\n"
                    f"Route: {route}\r\nFrom: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
                    f"Max-Forwards: 70\r\n{extra}Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()

        trunk.send(in_dialog("ACK", 1), d.ports.edge)
        for cseq, signal in enumerate(("1\x00", "\x00", "Z", "1\r", "\xff"), start=2):
            body = f"Signal={signal}\r\nDuration=160\r\n"
            trunk.send(in_dialog("INFO", cseq, body, "application/dtmf-relay"), d.ports.edge)
            assert status_of(trunk.final_reply(2.0)) == 400, repr(signal)
        trunk.send(in_dialog("INFO", 20, "Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"), d.ports.edge)
        assert status_of(trunk.final_reply(2.0)) == 200
        trunk.send(in_dialog("BYE", 21), d.ports.edge)
        assert status_of(trunk.final_reply(2.0)) == 200
    finally:
        trunk.close()
    st = d.status()
    assert st["worker_restarts"] == 0 and all(w["alive"] for w in st["workers"])
    assert len(d.events("edge.malformed_refused")) == 5


def test_workers_dial_only_transfer_targets_the_live_plan_lists(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    write_tone(d.dir / "prompts" / "short.wav", 880, 2.0)
    old_target, new_target = Listener(d.ports.sink(6)), Listener(d.ports.sink(7))
    d.config["flows"]["xfer"] = [{"play": "short"},
                                 {"transfer": {"to": f"sip:reception@127.0.0.1:{old_target.port}", "ring_timeout": 2}},
                                 "hangup"]
    d.config["entry_points"].append({"number": "300", "flow": "xfer"})
    d.start()
    try:
        first = subprocess.Popen(_sipp_call(d, "300", 0), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # the caller is in the prompt, on the plan that lists old_target
        d.config["flows"]["xfer"][1]["transfer"]["to"] = f"sip:reception@127.0.0.1:{new_target.port}"
        d.write_config()
        out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "reload", "-c", str(d.config_path)],
                             capture_output=True, text=True, timeout=15)
        assert out.returncode == 0, out.stdout + out.stderr
        d.wait_event("edge.policy_applied")
        first.wait(timeout=20)
        # the call kept its old plan, but the edge no longer lets anyone dial the old target
        assert old_target.drain(0.5) == [], "the edge relayed an INVITE to a target the live plan no longer lists"
        assert d.events("edge.target_refused")
        second = subprocess.Popen(_sipp_call(d, "300", 1), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        second.wait(timeout=20)
        assert new_target.requests("INVITE") or [r for r in new_target.drain(1.0) if r.startswith("INVITE ")]
    finally:
        old_target.close()
        new_target.close()


def _sipp_call(d, service: str, i: int) -> list[str]:  # type: ignore[no-untyped-def]
    from tests.helpers.sipp import sipp_args

    return sipp_args("uac_prompt.xml", d.edge, d.ports.caller(i), service=service, rtp_sink=d.ports.sink(i),
                     timeout=15)


# ---------------------------------------------------------------- password guessing

def _register(sock: socket.socket, edge: int, user: str, password: str, realm: str = "127.0.0.1",
              wait: float = 1.0) -> int:
    """REGISTER as user from sock, answering the digest challenge (RFC 2617, MD5, no qop unless
    offered); returns the final status, 0 if the edge stayed silent."""
    host, port = sock.getsockname()
    call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]

    def request(cseq: int, auth: str = "") -> bytes:
        return (f"REGISTER sip:{realm}:{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch={branch()};rport\r\n"
                f"From: <sip:{user}@{realm}>;tag={tag}\r\nTo: <sip:{user}@{realm}>\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{host}:{port}>\r\nExpires: 60\r\n"
                f"Max-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n").encode()

    def reply() -> str:
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                text = sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            if not text.startswith("SIP/2.0 1"):
                return text
        return ""

    sock.sendto(request(1), ("127.0.0.1", edge))
    first = reply()
    if status_of(first) != 401:
        return status_of(first)
    challenge = header_values(first, "WWW-Authenticate")[0]
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    uri = f"sip:{realm}:{edge}"
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    if "qop=" in challenge:
        cnonce, nc = uuid.uuid4().hex[:8], "00000001"
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        auth = (f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                f'response="{resp}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"\r\n')
    else:
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        auth = (f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                f'response="{resp}", algorithm=MD5\r\n')
    sock.sendto(request(2, auth), ("127.0.0.1", edge))
    return status_of(reply())


def _sock(ip: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))  # the whole of 127/8 is loopback: other addresses stand for other hosts
    s.settimeout(0.1)
    return s


def test_password_guessing_is_banned_per_source_without_locking_the_real_phone_out(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    d.config["agents"] = {"alice": {"softphone": {"username": "alice", "password": "alice-secret"}}}
    d.start()
    edge = d.ports.edge
    phone = _sock("127.0.0.1")
    guessers = [_sock(f"127.0.0.{i}") for i in (2, 3, 4)]
    newcomer = _sock("127.0.0.5")
    try:
        assert _register(phone, edge, "alice", "alice-secret") == 200
        # a guesser at 8 tries/s: 4 wrong passwords are challenged again, the 5th earns a ban:
        # silence from then on, whatever it tries
        results = [_register(guessers[0], edge, "alice", f"guess{i}", wait=0.12) for i in range(12)]
        assert results[:4] == [401] * 4 and set(results[4:]) == {0}, results
        assert _register(guessers[0], edge, "alice", "alice-secret") == 0  # even the right one
        # a second guesser from another host: banned too, and with 10 failures for alice ...
        assert [_register(guessers[1], edge, "alice", f"other{i}", wait=0.12) for i in range(5)] == [401] * 4 + [0]
        # ... alice is under attack: a third host is refused before it can guess at all, ...
        assert _register(guessers[2], edge, "alice", "guess") == 403
        # ... a new address too, even with the right password, but the phone that logged in
        # before keeps working
        assert _register(newcomer, edge, "alice", "alice-secret") == 403
        assert _register(phone, edge, "alice", "alice-secret") == 200
    finally:
        for s in (phone, newcomer, *guessers):
            s.close()
    st = _edge_counter(d, "auth_bans", 2)
    assert st["edge"]["counters"]["auth_failures"] == 10
    assert st["edge"]["auth_banned"] == ["127.0.0.2", "127.0.0.3"]
    assert len(d.events("edge.auth_ban")) == 2 and len(d.events("edge.auth_user_protected")) == 2


# ---------------------------------------------------------------- the edge's count of calls

def test_a_call_whose_bye_bypasses_the_edge_does_not_keep_its_worker_counted_busy(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2)
    trunk = RawSip(d.ports.caller(3))
    try:
        # two calls answered by workers; each caller hangs up straight at the worker's Contact
        # (ignoring the Record-Route), so the edge never sees their BYEs
        for _ in range(2):
            call_id = uuid.uuid4().hex
            trunk.send(trunk.invite(d.ports.edge, user="200", call_id=call_id), d.ports.edge)
            ok = trunk.final_reply(5.0)
            assert status_of(ok) == 200, ok
            to, frm = header_values(ok, "To")[0], header_values(ok, "From")[0]
            route = ", ".join(reversed(header_values(ok, "Record-Route")))
            contact = uri_of(header_values(ok, "Contact")[0])
            for method, cseq, via_route in (("ACK", 1, True), ("BYE", 2, False)):
                msg = (f"{method} {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{trunk.port};branch={branch()}\r\n"
                       + (f"Route: {route}\r\n" if via_route else "")
                       + f"From: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
                       "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
                trunk.sock.sendto(msg, ("127.0.0.1", d.ports.edge) if via_route else hostport_of(contact))
            assert status_of(trunk.final_reply(3.0)) == 200
    finally:
        trunk.close()
    d.wait_calls_ended(2)
    # the edge still counts the two calls; the controller notices and corrects within ~10 s
    deadline = time.monotonic() + 15
    st: dict = {}
    while time.monotonic() < deadline:
        st = d.status() or {}
        if st.get("edge", {}).get("load_corrections", 0) >= 1 and all(w["edge_calls"] == 0 for w in st["workers"]):
            break
        time.sleep(0.5)
    assert st["edge"]["load_corrections"] >= 1 and all(w["edge_calls"] == 0 for w in st["workers"]), st
    assert d.events("edge.load_corrected")
    _full_capacity_calls(d, tmp_path)
