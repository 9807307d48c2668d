"""Attended transfer from the agent's own phone (issue 11 item 2; RFC 5589 7.1, RFC 3891):
alice's pjsua2 phone holds the queue caller, calls bob (or a listed external number) through
the edge, talks, then sends REFER with Replaces naming that second call. The caller hears the
hold music, then the target; both of alice's calls end; it is booked as an attended transfer.
A consult she hangs up leaves her back with the caller once she resumes; a Replaces naming
anything but her live consult call changes nothing. Real phones, SIPp, Kamailio and workers;
after each test no leg is up, every slot is free and SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from ringmaster import protocol as p
from ringmaster.acd.phone_transfer import replaces_call_id
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, write_tone
from tests.helpers.phone import Phone
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_attended_transfer import EXTERNAL, NUMBER, _events, _external, _invites, _with_external
from tests.test_hold_calls import _stats
from tests.test_transfer_calls import ALICE, BOB, CALLER, HOLD, _all_free, _config, _connected_to_alice, _hears, _rows
from tests.test_worker_defence import _stops_cleanly

PERMITTED = "+4522334455"  # not a listed transfer target; alice's outbound rule lets her dial it


def test_the_replaces_call_id_is_read_from_an_escaped_refer_to() -> None:
    assert replaces_call_id("sip:bob@127.0.0.1:5060?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2") == "abc@host"
    assert replaces_call_id("sip:bob@h?X-A=1&replaces=k7%3Bto-tag%3Da") == "k7"
    assert replaces_call_id("sip:bob@h") is None
    assert replaces_call_id("sip:bob@h?Replaces=") is None


def _phones_not_trusted(d) -> None:  # type: ignore[no-untyped-def]
    """Only the queue caller's port is a trusted trunk: the agents' phones place calls by their
    credentials, never by address (as in test_outbound_calls)."""
    d.config["sip"]["trusted"] = [{"name": "callers", "address": f"127.0.0.1:{d.ports.caller(1)}"}]


async def _hold(d, alice: Phone, leg: str) -> None:  # type: ignore[no-untyped-def]
    """alice's phone holds the caller; the edge is told where her next call goes."""
    alice.send(p.Hold(leg=leg, direction="sendonly"))
    await asyncio.to_thread(d.wait_event, "call.hold", 1, 10.0)
    await asyncio.to_thread(d.wait_event, "phone_consult.steered", 1, 5.0)
    await asyncio.sleep(0.5)  # the edge's htable entry (an RPC) and the hold music


async def _consult(alice: Phone, uri: str) -> str:
    """alice's phone calls `uri` with her credentials; returns the leg (not waited on)."""
    leg = f"alice-consult{len(alice.events)}"
    alice.send(p.Dial(leg=leg, uri=uri, account="alice"))
    return leg


@pytest.mark.parametrize("direct_media", [False, True])
async def test_phone_holds_calls_bob_and_transfers_with_replaces_the_caller_hears_bob(daemon_factory,
                                                                                    tmp_path: Path,
                                                                                    direct_media: bool):
    """Two workers: by load her second call would go to the idle one; the edge sends it to the
    caller's, where the caller can be bridged to bob."""
    d = daemon_factory(workers=2, start=False)
    _config(d)
    _phones_not_trusted(d)
    d.config["sip"]["direct_media"] = direct_media
    d.start()
    for name, freq in (("caller", CALLER), ("alice", ALICE), ("bob", BOB)):
        write_tone(tmp_path / f"{name}.wav", freq, 30)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        await _hold(d, alice, alice_leg)
        consult = await _consult(alice, f"sip:bob@{d.edge}")
        inc = await bob.wait(p.Incoming, timeout=10)
        assert dict(inc.headers).get("X-Ringmaster-Consult") == "alice", inc.headers
        wait_agent(d, "bob", "on-call")  # held for the consult: no queue offers him a call
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        await alice.wait(p.MediaReady, lambda m: m.leg == consult)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        alice.send(p.Play(leg=consult, files=(str(tmp_path / "alice.wav"),), loop=True))
        await asyncio.sleep(0.5)
        caller_heard, alice_heard, bob_heard = await asyncio.gather(
            _hears(caller, a, tmp_path / "c1.wav"), _hears(alice, consult, tmp_path / "a1.wav"),
            _hears(bob, inc.leg, tmp_path / "b1.wav"))
        mark = len(alice.events)
        alice.send(p.Refer(leg=alice_leg, target="", replaces=consult))
        refer = await alice.wait(p.ReferStatus, lambda m: m.leg == alice_leg and m.final, timeout=5, after=mark)
        for leg in (alice_leg, consult):
            await alice.wait(p.CallState, lambda m, leg=leg: m.leg == leg and m.state == "disconnected", timeout=5)
        await asyncio.sleep(0.5)
        caller_after, bob_after = await asyncio.gather(_hears(caller, a, tmp_path / "c2.wav"),
                                                       _hears(bob, inc.leg, tmp_path / "b2.wav"))
        st = d.status()
        assert st["agents"]["alice"] in ("wrap-up", "available") and st["agents"]["bob"] == "on-call", st["agents"]
        bob.send(p.Hangup(leg=inc.leg))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        wait_agent(d, "bob", "available")
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert refer.code == 603  # pjsua2 takes no REFER without dialling it; the server did the transfer
    # during the consult: the caller hears hold music only; alice and bob hear each other
    assert has_tone(caller_heard, HOLD, tol=TONES_TOL), dominant_frequencies(caller_heard)
    assert not has_tone(caller_heard, ALICE, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_heard)
    assert not has_tone(caller_heard, BOB, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_heard)
    assert has_tone(alice_heard, BOB, tol=TONES_TOL), dominant_frequencies(alice_heard)
    assert not has_tone(alice_heard, CALLER, tol=TONES_TOL, min_share=0.05), dominant_frequencies(alice_heard)
    assert has_tone(bob_heard, ALICE, tol=TONES_TOL), dominant_frequencies(bob_heard)
    # after the REFER: the caller and bob hear each other, no music
    assert has_tone(caller_after, BOB, tol=TONES_TOL), dominant_frequencies(caller_after)
    assert not has_tone(caller_after, HOLD, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_after)
    assert has_tone(bob_after, CALLER, tol=TONES_TOL), dominant_frequencies(bob_after)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob" and row["disposition"] == "completed" and row["hangup_by"] == "agent", row
    assert row["holds"] == 1, row
    qlog = _rows(d, "SELECT agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])
    assert [(ag, ev) for ag, ev, _ in qlog if ev not in ("HOLD", "UNHOLD")] == [
        ("NONE", "ENTERQUEUE"), ("alice", "CONNECT"), ("alice", "ATTENDEDTRANSFER"), ("bob", "COMPLETEAGENT")], qlog
    transfer_data = next(data for _, ev, data in qlog if ev == "ATTENDEDTRANSFER")
    assert transfer_data.startswith("BRIDGE|bob|"), qlog
    events = _events(d, row["call_id"])
    names = [e for e, _ in events]
    assert names.index("HOLD") < names.index("CONSULT") < names.index("CONSULT_ANSWERED") < names.index("TRANSFER")
    transfer = next(data for e, data in events if e == "TRANSFER")
    assert {k: transfer[k] for k in ("mode", "agent", "queue", "kind", "target", "via")} == {
        "mode": "attended", "agent": "alice", "queue": "sales", "kind": "agent", "target": "bob", "via": "phone"}
    assert "TRANSFER_REFUSED" not in names, events
    stats = _stats(d)
    assert next(a for a in stats["agents"] if a["agent"] == "alice")["transferred"] == 1
    assert next(q for q in stats["queues"] if q["queue"] == "sales")["transferred"] == 1
    assert d.events("edge.agent_steer_failed") == []
    consult_event = next(data for e, data in events if e == "CONSULT")
    assert consult_event["phone_leg"].startswith(row["worker"] + "-"), (consult_event, row["worker"])
    _all_free(d)
    _stops_cleanly(d)


@pytest.mark.parametrize(("how", "number", "target"), [("listed", NUMBER, "accounting"),
                                                      ("rule", PERMITTED, PERMITTED)])
async def test_phone_consults_an_external_number_and_transfers_the_caller_talks_to_it(
        daemon_factory, tmp_path: Path, how: str, number: str, target: str):
    """Her second call dials a number of `transfer_targets`, or one her outbound rules permit
    (a SIPp UAS behind the trunk plays its tone); after the REFER with Replaces the caller hears
    it, and the caller's hang-up ends that leg. The UAS got one INVITE: the consult's, from the
    caller's worker. A number neither lists nor permits is refused (403), nothing dialled."""
    d = daemon_factory(workers=2, start=False)
    port = d.ports.caller(20)
    _with_external(d, port)
    _phones_not_trusted(d)
    if how == "rule":
        d.config["outbound"] = [{"name": "local", "numbers": [r"\+4522[0-9]{6}"], "route": "carrier",
                                 "agents": ["alice"], "caller_id": "+4570001001"}]
    d.start()
    for name, freq in (("caller", CALLER), ("alice", ALICE)):
        write_tone(tmp_path / f"{name}.wav", freq, 30)
    uas = _external(d, tmp_path, port)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        await _hold(d, alice, alice_leg)
        refused = await _consult(alice, f"sip:+4590901234@{d.edge}")  # the trunk allows it, the plan does not
        st_refused = await alice.wait(p.CallState, lambda m: m.leg == refused and m.state == "disconnected",
                                      timeout=10)
        consult = await _consult(alice, f"sip:{number}@{d.edge}")
        await alice.wait(p.MediaReady, lambda m: m.leg == consult, timeout=10)
        alice.send(p.Play(leg=consult, files=(str(tmp_path / "alice.wav"),), loop=True))
        await asyncio.sleep(0.5)
        caller_during, alice_during = await asyncio.gather(_hears(caller, a, tmp_path / "c1.wav"),
                                                           _hears(alice, consult, tmp_path / "a1.wav"))
        alice.send(p.Refer(leg=alice_leg, target="", replaces=consult))
        for leg in (alice_leg, consult):
            await alice.wait(p.CallState, lambda m, leg=leg: m.leg == leg and m.state == "disconnected", timeout=5)
        await asyncio.sleep(0.5)
        caller_after = await _hears(caller, a, tmp_path / "c2.wav")
        wait_agent(d, "alice", "available", timeout=10)
        caller.send(p.Hangup(leg=a))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        out, _ = await asyncio.to_thread(uas.communicate, timeout=45)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert uas.returncode == 0, out[-2000:]  # it got its BYE when the caller hung up
    assert st_refused.code == 403, st_refused
    invites = _invites(tmp_path)
    assert len(invites) == 1 and invites[0].startswith(f"INVITE sip:{number}@127.0.0.1:"), invites
    assert has_tone(caller_during, HOLD, tol=TONES_TOL), dominant_frequencies(caller_during)
    assert not has_tone(caller_during, EXTERNAL, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_during)
    assert has_tone(alice_during, EXTERNAL, tol=TONES_TOL), dominant_frequencies(alice_during)
    assert has_tone(caller_after, EXTERNAL, tol=TONES_TOL), dominant_frequencies(caller_after)
    assert not has_tone(caller_after, HOLD, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_after)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed" and row["hangup_by"] == "caller", row
    qlog = _rows(d, "SELECT agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])
    assert [(ag, ev) for ag, ev, _ in qlog if ev not in ("HOLD", "UNHOLD")] == [
        ("NONE", "ENTERQUEUE"), ("alice", "CONNECT"), ("alice", "ATTENDEDTRANSFER")], qlog
    assert next(data for _, ev, data in qlog if ev == "ATTENDEDTRANSFER").startswith(f"BRIDGE|{target}|"), qlog
    events = _events(d, row["call_id"])
    transfer = next(data for e, data in events if e == "TRANSFER")
    assert (transfer["mode"], transfer["kind"], transfer["target"], transfer["via"]) == (
        "attended", "external", target, "phone")
    refusal = next(data for e, data in events if e == "TRANSFER_REFUSED")
    assert refusal["target"] == "+4590901234" and "outbound rules do not permit it" in refusal["reason"], refusal
    if how == "rule":  # presented as her outbound call would be, not as the queue caller
        trace = next(tmp_path.glob("*_messages.log")).read_text()
        assert re.search(r"\nFrom:[^\n]*sip:\+4570001001@", trace), trace[:2000]
    _all_free(d)
    _stops_cleanly(d)


async def test_phone_hangs_up_the_consult_and_resumes_the_caller_talks_to_alice_again(daemon_factory,
                                                                                     tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    _config(d)
    _phones_not_trusted(d)
    d.start()
    for name, freq in (("caller", CALLER), ("alice", ALICE), ("bob", BOB)):
        write_tone(tmp_path / f"{name}.wav", freq, 30)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        await _hold(d, alice, alice_leg)
        consult = await _consult(alice, f"sip:bob@{d.edge}")
        inc = await bob.wait(p.Incoming, timeout=10)
        bob.send(p.Answer(leg=inc.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == consult)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        await asyncio.sleep(0.5)
        alice_during = await _hears(alice, consult, tmp_path / "a1.wav")
        await alice.hangup(consult)  # she hangs up on bob
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "bob", "available")
        caller_held = await _hears(caller, a, tmp_path / "c1.wav")
        alice.send(p.Hold(leg=alice_leg, direction="sendrecv"))  # and resumes the caller
        await asyncio.to_thread(d.wait_event, "call.unhold", 1, 10.0)
        await asyncio.sleep(0.5)
        caller_back, alice_back = await asyncio.gather(_hears(caller, a, tmp_path / "c2.wav"),
                                                       _hears(alice, alice_leg, tmp_path / "a2.wav"))
        await caller.hangup(a)
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert has_tone(alice_during, BOB, tol=TONES_TOL), dominant_frequencies(alice_during)
    assert has_tone(caller_held, HOLD, tol=TONES_TOL), dominant_frequencies(caller_held)
    assert has_tone(caller_back, ALICE, tol=TONES_TOL), dominant_frequencies(caller_back)
    assert not has_tone(caller_back, HOLD, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_back)
    assert has_tone(alice_back, CALLER, tol=TONES_TOL), dominant_frequencies(alice_back)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed" and row["hangup_by"] == "caller", row
    events = _events(d, row["call_id"])
    ended = [data for e, data in events if e == "CONSULT_ENDED"]
    assert [(x["outcome"], x["via"], x["target"]) for x in ended] == [("cancelled", "phone", "bob")], ended
    assert "TRANSFER" not in [e for e, _ in events]
    qlog = _rows(d, "SELECT agent, event FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])
    assert [ev for _, ev in qlog] == ["ENTERQUEUE", "CONNECT", "HOLD", "UNHOLD", "COMPLETECALLER"], qlog
    _all_free(d)
    _stops_cleanly(d)


async def test_refer_with_replaces_naming_no_live_consult_of_hers_and_a_consult_off_her_worker_are_refused(
        daemon_factory, tmp_path: Path):
    """603 to each REFER, TRANSFER_REFUSED with the reason, and the call goes on: a Replaces
    before any consult (nothing is dialled: bob is not rung), one naming another dialog while
    her consult to bob is up (the consult goes on), and her second call placed without a hold
    (so by load, onto the other worker): 403 with the reason, nobody rung."""
    d = daemon_factory(workers=2, start=False)
    _config(d)
    _phones_not_trusted(d)
    d.start()
    for name, freq in (("caller", CALLER), ("alice", ALICE), ("bob", BOB)):
        write_tone(tmp_path / f"{name}.wav", freq, 30)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    bogus = f"sip:bob@{d.edge}?Replaces=not-a-call%40127.0.0.1%3Bto-tag%3Dx1%3Bfrom-tag%3Dy2"
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        # her second call without a hold: the edge dispatches it by load, to the other worker
        away = await _consult(alice, f"sip:bob@{d.edge}")
        st_away = await alice.wait(p.CallState, lambda m: m.leg == away and m.state == "disconnected", timeout=10)
        # a REFER with Replaces and no consult up
        mark = len(alice.events)
        alice.send(p.Refer(leg=alice_leg, target=bogus))
        first = await alice.wait(p.ReferStatus, lambda m: m.leg == alice_leg and m.final, timeout=5, after=mark)
        await asyncio.sleep(1.0)
        assert not [m for m in bob.events if isinstance(m, p.Incoming)]  # nothing dialled
        caller_talks = await _hears(caller, a, tmp_path / "c1.wav")
        # a consult to bob, then a Replaces naming another dialog
        await _hold(d, alice, alice_leg)
        consult = await _consult(alice, f"sip:bob@{d.edge}")
        inc = await bob.wait(p.Incoming, timeout=10)
        bob.send(p.Answer(leg=inc.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == consult)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        mark = len(alice.events)
        alice.send(p.Refer(leg=alice_leg, target=bogus))
        second = await alice.wait(p.ReferStatus, lambda m: m.leg == alice_leg and m.final, timeout=5, after=mark)
        await asyncio.sleep(0.5)
        caller_held, alice_consulting = await asyncio.gather(_hears(caller, a, tmp_path / "c2.wav"),
                                                             _hears(alice, consult, tmp_path / "a2.wav"))
        await alice.hangup(consult)
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        alice.send(p.Hold(leg=alice_leg, direction="sendrecv"))
        await asyncio.to_thread(d.wait_event, "call.unhold", 1, 10.0)
        await asyncio.sleep(0.5)
        caller_back = await _hears(caller, a, tmp_path / "c3.wav")
        await caller.hangup(a)
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert st_away.code == 403, st_away
    assert (first.code, second.code) == (603, 603), (first, second)
    assert has_tone(caller_talks, ALICE, tol=TONES_TOL), dominant_frequencies(caller_talks)
    assert has_tone(caller_held, HOLD, tol=TONES_TOL), dominant_frequencies(caller_held)
    assert has_tone(alice_consulting, BOB, tol=TONES_TOL), dominant_frequencies(alice_consulting)
    assert has_tone(caller_back, ALICE, tol=TONES_TOL), dominant_frequencies(caller_back)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed" and row["hangup_by"] == "caller", row
    events = _events(d, row["call_id"])
    refusals = [data for e, data in events if e == "TRANSFER_REFUSED"]
    assert [r["via"] for r in refusals] == ["phone", "refer", "refer"], refusals
    assert refusals[0]["reason"].startswith(f"your call is on worker {row['worker']}, this call reached w"), refusals
    assert refusals[1]["reason"] == "no consult call of alice's is up on this call", refusals
    assert refusals[2]["reason"] == "Replaces names no live consult call of alice's", refusals
    assert [e for e, _ in events].count("CONSULT") == 1 and "TRANSFER" not in [e for e, _ in events]
    assert len(d.events("acd.consult")) == 1  # bob was rung once: for the consult on her call's worker
    _all_free(d)
    _stops_cleanly(d)


async def test_a_full_caller_worker_gets_no_steering_and_her_consult_elsewhere_is_refused_with_the_reason(
        daemon_factory, tmp_path: Path):
    """Two workers; alice's caller shares its worker with a second caller waiting in the queue
    (the dispatcher's least-load pick puts calls 1 and 3 on one worker, 2 on the other): that
    worker has promised its 4 legs, so her hold does not steer her next INVITE there; it goes
    by load to the other worker and is refused with 403 and the reason; bob is not rung."""
    d = daemon_factory(workers=2, start=False)
    _config(d)
    _phones_not_trusted(d)
    d.start()
    alice, bob = await agents_up(d, ("alice", "bob"))
    callers = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, callers, alice)
        waiting = [await callers.call(f"sip:500@{d.edge}") for _ in range(2)]  # both wait: alice is busy
        await asyncio.to_thread(d.wait_event, "acd.enqueued", 3, 10.0)
        for _ in range(50):  # the store's writer commits in batches
            rows = _rows(d, "SELECT call_id, worker FROM calls ORDER BY arrived_at")
            if len(rows) == 3:
                break
            await asyncio.sleep(0.1)
        assert len(rows) == 3 and rows[0][1] == rows[2][1] != rows[1][1], rows
        alice.send(p.Hold(leg=alice_leg, direction="sendonly"))
        await asyncio.to_thread(d.wait_event, "phone_consult.not_steered", 1, 10.0)
        away = await _consult(alice, f"sip:bob@{d.edge}")
        st = await alice.wait(p.CallState, lambda m: m.leg == away and m.state == "disconnected", timeout=10)
        await asyncio.sleep(0.5)
        for leg in waiting:
            await callers.hangup(leg)
        alice.send(p.Hold(leg=alice_leg, direction="sendrecv"))
        await asyncio.to_thread(d.wait_event, "call.unhold", 1, 10.0)
        await callers.hangup(a)
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
    finally:
        await callers.stop()
        await alice.stop()
        await bob.stop()
    assert st.code == 403, st
    assert not [m for m in bob.events if isinstance(m, p.Incoming)]
    assert d.events("phone_consult.steered") == []
    refusal = next(data for e, data in _events(d, rows[0][0]) if e == "TRANSFER_REFUSED")
    assert refusal["via"] == "phone" and "which holds 4 of its 4 legs" in refusal["reason"], refusal
    d.wait_calls_ended(3)
    _all_free(d)
    _stops_cleanly(d)
