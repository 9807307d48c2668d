"""A media worker's own defence (issues 11 and 17): it takes new dialogs from the edge only,
no burst can exhaust its sockets or kill it, it dials nothing a REFER or a 3xx asks for, and
only DTMF digits reach a flow. Real daemon, real Kamailio, real workers, SIPp and raw UDP."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.helpers.rawuac import Listener, RawUac, Redirector
from tests.helpers.sipp import refused_scenario, run_sipp
from tests.test_acd_calls import acd_config, register, wait_agent


def _call_events(d, event: str) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        rows = con.execute("SELECT call_id, data FROM call_events WHERE event=? ORDER BY id", (event,)).fetchall()
    finally:
        con.close()
    return [(r[0], json.loads(r[1])) for r in rows]


def _no_worker_died(d) -> None:  # type: ignore[no-untyped-def]
    assert not d.events("worker.died"), [e.get("code") for e in d.events("worker.died")]


def _edge_sees_workers_active(d, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """A worker that answered 503 is marked down by the edge's dispatcher until its next
    OPTIONS ping (2 s): wait for that, as a caller's retry would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = d.status()
        if st and st["workers"] and all(w["edge"] == "active" for w in st["workers"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"workers not active at the edge: {d.status()}")


def _stops_cleanly(d) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM: the daemon exits 0 and every worker exited 0 (else controller.worker_exit_codes)."""
    assert d.stop() == 0, d.log_text()[-2000:]
    assert not d.events("controller.worker_exit_codes"), d.events("controller.worker_exit_codes")


def _flood(uac: RawUac, number: str, count: int, rate: float, rtp_port: int) -> dict[int, int]:
    """count INVITEs (each its own call) at `rate` per second; final reply codes, counted."""
    t0 = time.monotonic()
    for i in range(count):
        uac.send(uac.invite_text(number, rtp_port, call_id=f"flood-{i}-{uac.call_id}"))
        uac.pump(0)
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    uac.pump(1.0)
    finals: dict[str, int] = {}
    for r in uac.replies:
        if r.method == "INVITE" and r.code >= 200:
            call_id = [ln for ln in r.text.split("\r\n") if ln.lower().startswith("call-id:")][0]
            finals.setdefault(call_id, r.code)  # 403 is retransmitted (we never ACK): count once
    codes: dict[int, int] = {}
    for code in finals.values():
        codes[code] = codes.get(code, 0) + 1
    return codes


def test_invite_sent_around_the_edge_straight_to_a_worker_gets_403_and_reaches_no_flow(daemon_factory):
    d = daemon_factory(workers=1)
    # an untrusted host that found a worker's SIP port: before, 100 Trying then 200 OK
    uac = RawUac(d.ports.caller(21), ("127.0.0.1", d.ports.workers))
    try:
        reply = uac.invite("100", d.ports.sink(0))
        # a presence SUBSCRIBE used to be accepted, with NOTIFYs sent to the subscriber
        uac.send(f"SUBSCRIBE sip:w1@127.0.0.1:{d.ports.workers} SIP/2.0\r\n{uac._via()}\r\n"
                 f"From: <sip:x@127.0.0.1:{uac.port}>;tag=s1\r\nTo: <sip:w1@127.0.0.1>\r\n"
                 f"Call-ID: sub-{uac.call_id}\r\nCSeq: 7 SUBSCRIBE\r\nContact: <sip:x@127.0.0.1:{uac.port}>\r\n"
                 "Event: presence\r\nExpires: 60\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        subscribed = uac.wait_reply("SUBSCRIBE", 7)
        uac.pump(0.3)
    finally:
        uac.close()
    assert reply.code == 403, reply.text
    assert subscribed.code == 403 and not uac.requests, (subscribed.text, uac.requests)
    assert not [r for r in uac.replies if 180 <= r.code < 300], [(r.code, r.method) for r in uac.replies]
    refused = d.wait_event("worker.request_refused")
    assert refused[0]["code"] == 403 and refused[0]["source"] == "127.0.0.1" and refused[0]["method"] == "INVITE"
    assert d.calls() == []  # the controller never heard of it
    _stops_cleanly(d)


def test_bursts_of_invites_straight_and_through_the_edge_leave_the_worker_alive_and_serving(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    # 404, not 486: the edge's failover branch (486/500/503) leaks a dispatcher load slot
    # when there is no other worker to try, which would end this test for the edge's reason
    d.config["flows"]["refuse"] = [{"hangup": {"code": 404}}]
    d.config["entry_points"].append({"number": "404", "flow": "refuse"})
    d.start()
    # 200 INVITEs at 100/s straight to the worker's port from an untrusted source: before the
    # fix each one got RTP/RTCP sockets before anyone looked at it, and the 33rd within half
    # a second aborted the worker in pj_ioqueue_register_sock2 (the 64-slot media ioqueue)
    uac = RawUac(d.ports.caller(22), ("127.0.0.1", d.ports.workers))
    try:
        codes = _flood(uac, "999", 200, 100, d.ports.sink(0))
    finally:
        uac.close()
    assert codes == {403: 200}, codes
    _no_worker_died(d)
    # 200 calls at 100/s from a trusted SIPp through the edge to a number whose flow refuses
    # them at once: the worker takes what its media budget allows and answers 480 to the rest
    burst = run_sipp(refused_scenario(404, tmp_path), d.edge, d.ports.caller(1), tmp_path, service="404",
                     calls=200, rate=100, limit=200, timeout=30)
    assert burst.successful + burst.failed == 200, burst.output
    assert burst.successful > 0, burst.output  # some got through to the flow
    _no_worker_died(d)
    _edge_sees_workers_active(d)
    # and a trusted call right after is served: answered, prompt played, hung up by the flow
    # (once the burst's media budget window, 0.6 s, has passed: within it a call gets the
    # budget's 480 by design, which happened when the burst's tail ran late on a busy box)
    time.sleep(1.0)
    ok = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(2), tmp_path, service="100", timeout=20)
    assert ok.successful == 1 and ok.failed == 0, ok.output
    _no_worker_died(d)
    _stops_cleanly(d)


async def test_a_caller_cancelling_every_invite_at_once_cannot_exhaust_a_worker(ports):
    """The sender ends each call itself (INVITE, CANCEL 2 ms later), so no refusal of ours
    paces the churn: only the media budget does. Before it, the 33rd call aborted the worker.
    The worker here is a test phone (the same executable) that takes calls from loopback."""
    worker = await Phone("target", ports.caller(0), ports.base + 100).start()
    caller = await Phone("caller", ports.caller(1), ports.base + 140).start()
    uac = RawUac(ports.caller(2), ("127.0.0.1", ports.caller(0)))
    try:
        t0 = time.monotonic()
        for i in range(300):  # 150 calls/s for 2 s
            uac.invite_and_cancel("target", ports.sink(0), call_id=f"c{i}-{uac.call_id}")
            uac.pump(0)
            await asyncio.sleep(max(0.0, t0 + (i + 1) / 150 - time.monotonic()))
        await asyncio.sleep(0.6)
        uac.pump(0.1)
        assert worker.proc.alive, "the worker died"
        admitted = sum(isinstance(m, p.Incoming) for m in worker.events)
        assert 0 < admitted < 300, admitted  # the budget let some in and turned the rest away
        assert {r.code for r in uac.replies if r.method == "INVITE" and r.code >= 200} == {480, 487}
        # and it still takes a call
        worker.events.clear()
        leg = caller.spec.name + "-after"
        caller.send(p.Dial(leg=leg, uri=worker.uri))
        await worker.answer_next()
        await caller.wait(p.CallState, lambda m: m.leg == leg and m.state == "confirmed")
    finally:
        uac.close()
        assert await caller.stop() == 0
        assert await worker.stop() == 0


def test_callers_refer_is_refused_nothing_is_dialled_and_the_attempt_is_on_the_record(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1)
    listener = Listener(d.ports.caller(25))  # the number the caller wants us to call
    try:
        res = run_sipp("uac_refer.xml", d.edge, d.ports.caller(1), tmp_path, service="200", hold_ms=1000,
                       timeout=20, extra=["-key", "refer_to", listener.uri])
        time.sleep(1.0)
        seen = listener.methods()
    finally:
        listener.close()
    assert res.successful == 1 and res.failed == 0, res.output  # 603 to the REFER, then a clean BYE
    assert "INVITE" not in seen, seen
    rows = d.wait_calls_ended(1)
    assert rows[0]["hangup_by"] == "caller"
    refused = _call_events(d, "TRANSFER_REFUSED")
    assert len(refused) == 1, refused
    call_id, data = refused[0]
    assert call_id == rows[0]["call_id"]
    assert data["via"] == "refer" and data["target"] == listener.uri and data["side"] == "caller"
    logged = d.wait_event("call.transfer_refused")
    assert logged[0]["call_id"] == call_id and logged[0]["target"] == listener.uri
    _no_worker_died(d)
    _stops_cleanly(d)


def _digits(d, call_id: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        rows = con.execute("SELECT data FROM call_events WHERE call_id=? AND event='DIGIT' ORDER BY id",
                           (call_id,)).fetchall()
    finally:
        con.close()
    return [(json.loads(r[0])["digit"], json.loads(r[0])["method"]) for r in rows]


def _info_answers(uac: RawUac, bodies: list[bytes]) -> list[int]:
    answers = []
    for body in bodies:
        cseq = uac.request("INFO", body, "application/dtmf-relay")
        answers.append(uac.wait_reply("INFO", cseq).code)
        time.sleep(0.12)  # a key press at a time: the edge may reorder back-to-back INFOs
    return answers


def test_only_dtmf_digits_from_sip_info_reach_the_flow_and_the_rest_is_reported_once(daemon_factory):
    d = daemon_factory(workers=1)
    uac = RawUac(d.ports.caller(3), ("127.0.0.1", d.ports.edge))
    # one key, then what no keypad sends: a letter outside A-D, a non-UTF-8 byte, a flash
    # (RFC 4733 event 16 as pjmedia names it), a CR; then lower-case b and a #
    signals = [b"5", b"Z", b"\xff", b"R", b"\r", b"b", b"#"]
    bodies = [b"Signal=" + sig + b"\r\nDuration=160\r\n" for sig in signals]
    try:
        assert uac.invite("200", d.ports.sink(0)).code == 200
        # through the edge: it refuses every body that is not one DTMF signal (400)
        through_edge = _info_answers(uac, bodies)
        # straight at the worker's Contact (in-dialog requests are matched by dialog, not by
        # source): the worker's own filter is the second wall
        uac.route = []
        host, _, port = uac.remote_target.split("@", 1)[-1].split(";", 1)[0].partition(":")
        uac.target = (host, int(port))
        straight = _info_answers(uac, bodies[1:5])
        uac.pump(0.3)
        assert uac.bye().code == 200
    finally:
        uac.close()
    assert through_edge == [200, 400, 400, 400, 400, 200, 200], through_edge
    assert [e["detail"].split()[0] for e in d.events("edge.malformed_refused")] == ["reason=dtmf_body"] * 4
    # pjsua answers a readable body 200 (the worker filters the signal); the CR makes a bare
    # CR in the body, which the worker's guard refuses before pjsua parses it (400)
    assert straight == [200, 200, 200, 400], straight
    row = d.wait_calls_ended(1)[0]
    assert _digits(d, row["call_id"]) == [("5", "info"), ("B", "info"), ("#", "info")]
    errors = [data for cid, data in _call_events(d, "ERROR") if cid == row["call_id"]]
    assert len(errors) == 1 and errors[0]["command"] == "dtmf", errors  # once per leg
    _no_worker_died(d)
    _stops_cleanly(d)


def test_dtmf_relay_bodies_that_abort_pjsua_are_refused_and_the_call_goes_on(daemon_factory):
    """pjsua's INFO parser steps past the Signal line's CRLF without checking it is there:
    a NUL before it, no CRLF at all, or a bare LF aborted the worker (SIGABRT in pj_strstr)."""
    d = daemon_factory(workers=1)
    uac = RawUac(d.ports.caller(4), ("127.0.0.1", d.ports.edge))
    try:
        assert uac.invite("200", d.ports.sink(0)).code == 200
        answers = _info_answers(uac, [b"Signal=5\x00\r\nDuration=160\r\n", b"Signal=6", b"Signal=7\n",
                                      b"Signal=8\r\nDuration=160\r\n"])
        uac.pump(0.3)
        assert uac.bye().code == 200  # the call was never dropped
    finally:
        uac.close()
    assert answers == [400, 400, 400, 200], answers
    row = d.wait_calls_ended(1)[0]
    assert _digits(d, row["call_id"]) == [("8", "info")]
    assert row["hangup_by"] == "caller"
    _no_worker_died(d)
    _stops_cleanly(d)


def test_a_3xx_to_a_dialled_leg_is_not_followed(daemon_factory, tmp_path: Path):
    """A leg the controller dialled (a transfer target here; agent legs are the same Leg)
    answers 302 to a number of its choosing: pjsua would dial it; the worker must not."""
    d = daemon_factory(workers=1, start=False)
    listener = Listener(d.ports.caller(25))
    redirector = Redirector(d.ports.caller(26), listener.uri)
    d.config["flows"]["transfer"] = [
        {"transfer": {"to": f"sip:target@127.0.0.1:{d.ports.caller(26)}", "ring_timeout": 3}},
        {"play": "other"}, "hangup"]
    d.config["entry_points"].append({"number": "301", "flow": "transfer"})
    d.start()
    try:
        res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(1), tmp_path, service="301", timeout=20)
        time.sleep(1.0)
        seen = listener.methods()
    finally:
        listener.close()
        redirector.close()
    assert redirector.invites >= 1  # the transfer did ring the target
    assert "INVITE" not in seen, seen
    assert res.successful == 1 and res.failed == 0, res.output  # the flow went on and hung up
    row = d.wait_calls_ended(1)[0]
    assert json.loads(row["ivr_path"]) == ["transfer:0:transfer", "transfer:1:play", "transfer:2:hangup"]
    failed = [data for cid, data in _call_events(d, "TRANSFER_FAILED") if cid == row["call_id"]]
    assert len(failed) == 1 and failed[0]["code"] >= 300, failed
    refused = [data for cid, data in _call_events(d, "TRANSFER_REFUSED") if cid == row["call_id"]]
    # (pjsua reports the 3xx Contact without its port)
    assert len(refused) == 1 and refused[0]["via"] == "redirect" and refused[0]["side"] == "transfer_target" \
        and refused[0]["target"].startswith("sip:+4590901234@127.0.0.1"), refused
    _no_worker_died(d)
    _stops_cleanly(d)


async def test_agents_refer_is_refused_nothing_is_dialled_and_the_bridge_goes_on(daemon_factory):
    """The agent presses Transfer on the softphone (an in-dialog REFER to some number): before,
    202 and the worker dialled it; the caller was hung up ~4 s later and the worker crashed."""
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.start()
    listener = Listener(d.ports.caller(25))
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await agent.wait(p.Incoming, timeout=10)
        agent.send(p.Answer(leg=inc.leg))
        await agent.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        agent.send(p.Refer(leg=inc.leg, target=listener.uri))
        status = await agent.wait(p.ReferStatus, lambda m: m.leg == inc.leg and m.final, timeout=5)
        await asyncio.sleep(1.5)  # long enough for a dialled target to be rung
        # still bridged: neither side was hung up
        for phone, leg in ((caller, a), (agent, inc.leg)):
            assert not [m for m in phone.events if isinstance(m, p.CallState) and m.leg == leg
                        and m.state == "disconnected"], phone.events[-5:]
        agent.send(p.Hangup(leg=inc.leg))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        seen = listener.methods()
    finally:
        listener.close()
        await caller.stop()
        await agent.stop()
    assert status.code == 603, status
    assert "INVITE" not in seen, seen
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["hangup_by"] == "agent" and row["disposition"] == "completed"
    refused = [data for cid, data in _call_events(d, "TRANSFER_REFUSED") if cid == row["call_id"]]
    assert len(refused) == 1 and refused[0]["side"] == "agent" and refused[0]["target"] == listener.uri, refused
    _no_worker_died(d)
    _stops_cleanly(d)
