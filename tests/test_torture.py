"""RFC 4475's torture messages, bit-exact from the RFC's own archive (tests/data/rfc4475),
sent as they are to the edge (UDP and TCP, from the trusted trunk and from untrusted ports) and
straight to a worker's SIP port from an untrusted source: whatever each one is answered, the
daemon, the edge and every worker survive, no worker slot stays charged, and the whole capacity
still answers calls (issues 17 and 19).

The exact reply codes are not asserted: RFC 4475 itself leaves many of them open (section 1: a
seed for a test plan, "not a test plan in itself"), and the worker's refusal of requests that do
not come from the edge is another change's to pin down. What is asserted is what a contact
centre needs: no message kills or wedges anything."""

from __future__ import annotations

import hashlib
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

from tests.helpers.rawsip import Listener, RawSip, status_of
from tests.test_edge_boundary import _full_capacity_calls

TORTURE_DIR = Path(__file__).resolve().parent / "data" / "rfc4475"
# Every .dat in the archive, test.dat included (the archive carries it though no section of the
# RFC names it); sorted, so a failure names the same message on every run.
TORTURE = sorted(TORTURE_DIR.glob("*.dat"))


# sha-256 over every file's name, a NUL and its bytes, in name order: the files are exactly the
# ones decoded from the RFC (README.md says how), with no line end or trailing space changed
CORPUS_SHA256 = "49e6e89cbec0e169e7e50aa709bcdb185be9273e0b261edff0095dfe28e43a7f"


def test_the_torture_set_is_the_rfc_archive_bit_for_bit() -> None:
    """The 50 files of RFC 4475 Appendix A, untouched: not a subset, not re-typed, not
    normalised by an editor or by git (tests/data/rfc4475/.gitattributes marks them binary)."""
    assert len(TORTURE) == 50, [p.name for p in TORTURE]
    digest = hashlib.sha256()
    for path in TORTURE:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert digest.hexdigest() == CORPUS_SHA256


def _snapshot(d) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    st = d.status()
    assert st, "status did not answer"
    return st


def _send_every_message(sender: RawSip, to_port: int, wait: float = 0.15) -> dict[str, list[int]]:
    """Each torture message as one datagram, its bytes untouched; the status codes of whatever
    came back to the sender within `wait` seconds after it (most replies go to the messages' own
    Via addresses, documentation hosts such as 192.0.2.2, and never come back: that is fine)."""
    got: dict[str, list[int]] = {}
    for path in TORTURE:
        sender.send(path.read_bytes(), to_port)
        got[path.stem] = [status_of(r) for r in sender.replies(wait)]
    return got


def _send_every_message_over_tcp(to_port: int, from_ports: list[int], wait: float = 0.1) -> int:
    """Each torture message on a TCP connection of its own (the edge listens on TCP too, and a
    stream frames messages by Content-Length, which several of them get wrong: one per
    connection, so a bad length swallows nothing else), from `from_ports` in turn; the
    connection is reset after `wait` seconds (SO_LINGER 0: no TIME_WAIT, so the trusted port can
    be bound again at once). Returns how many connections the edge accepted."""
    accepted = 0
    for i, path in enumerate(TORTURE):
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.settimeout(wait)
        try:
            conn.bind(("127.0.0.1", from_ports[i % len(from_ports)]))
            conn.connect(("127.0.0.1", to_port))
            accepted += 1
            conn.sendall(path.read_bytes())
            conn.recv(65535)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            conn.close()
    return accepted


def _settled(d, timeout: float = 15.0) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """status() once every worker holds no call leg and its edge_calls is 0 (the controller's
    edge watch runs every 5 s and puts a drifted count right; a slot or a leg that stays taken
    longer fails the test)."""
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = _snapshot(d)
        if all(w["edge_calls"] == 0 and w["calls"] == 0 for w in st["workers"]):
            return st
        time.sleep(0.5)
    raise AssertionError(f"a worker slot or leg stayed taken after the torture set: {st['workers']}")


def _assert_survived(d, before: dict[str, Any], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert d.proc.poll() is None, f"the daemon died:\n{d.log_text()[-3000:]}"
    st = _settled(d)
    pids = {w["name"]: w["pid"] for w in st["workers"]}
    assert st["worker_restarts"] == 0, st["workers"]
    assert pids == {w["name"]: w["pid"] for w in before["workers"]}, "a worker was replaced"
    assert all(w["alive"] and w["edge"] == "active" for w in st["workers"]), st["workers"]
    assert st["edge"]["pid"] == before["edge"]["pid"] and st["edge"]["restarts"] == 0, st["edge"]
    assert not d.events("worker.died") and not d.events("edge.died"), d.log_text()[-3000:]
    # 2 workers x 2 inbound: every one of 4 simultaneous calls is answered and played to the end
    _full_capacity_calls(d, tmp_path)


def test_the_torture_set_sent_to_the_edge_leaves_the_edge_and_workers_serving(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2)
    before = _snapshot(d)
    trunk = RawSip(d.ports.caller(4))  # callers 0-9 are the trusted trunk: past REQINIT's gate
    stranger = RawSip(d.ports.caller(21))  # untrusted: through pike and the scanner check first
    try:
        codes = _send_every_message(trunk, d.ports.edge)
        _send_every_message(stranger, d.ports.edge)
        trusted_tcp = [d.ports.caller(i) for i in range(5, 10)]  # unused by UDP here and by SIPp
        assert _send_every_message_over_tcp(d.ports.edge, trusted_tcp) == len(TORTURE)
        _send_every_message_over_tcp(d.ports.edge, [d.ports.caller(22), d.ports.caller(23)])
        # the edge still answers the trunk: a well-formed request to an unknown number
        trunk.send(trunk.invite(d.ports.edge, user="0900123456"), d.ports.edge)
        assert status_of(trunk.final_reply(3.0)) == 404
    finally:
        trunk.close()
        stranger.close()
    # no torture INVITE names a number the plan routes (their Request-URIs are vivekg@, user@,
    # ...): none may have reached a worker as a call
    assert not d.events("call.flow_started"), d.events("call.flow_started")
    assert any(codes.values()), "the edge answered none of the torture messages"
    _assert_survived(d, before, tmp_path)


def test_the_torture_set_sent_straight_to_a_worker_leaves_it_serving(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2)
    before = _snapshot(d)
    stranger = RawSip(d.ports.caller(20))  # not trusted, and not the edge
    try:
        _send_every_message(stranger, d.ports.workers)
    finally:
        stranger.close()
    _assert_survived(d, before, tmp_path)


def test_a_stray_response_is_relayed_nowhere(daemon_factory):
    """RFC 4475 3.3.10 (bcast.dat) is a 200 OK whose second Via is 255.255.255.255: the edge
    tried to send it there (sendto failed with EACCES only because its socket may not broadcast).
    RFC 3261 16.11: a response whose top Via is not the proxy's MUST be dropped; and this edge
    relays every request statefully (t_relay), so a response that matches none of its
    transactions answers nothing it sent, whatever its top Via says. Forwarding such responses
    lets anyone, trusted or not, have the edge send SIP to any host and port, a worker's too."""
    d = daemon_factory(workers=1)
    victim = Listener(d.ports.sink(5))  # stands for any host the attacker names
    attacker = RawSip(d.ports.caller(20))
    try:
        for top in (f"127.0.0.1:{d.ports.edge}", "192.0.2.198"):  # the edge's own address, and not
            stray = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {top};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{victim.port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
                     f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
                     f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()
            attacker.send(stray, d.ports.edge)
        assert victim.drain(1.0) == [], "the edge forwarded a response it never asked for"
    finally:
        victim.close()
        attacker.close()
