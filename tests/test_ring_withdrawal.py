"""A ring the record says ended has ended on the phone (issue 15, item 2).

Real pjsua2 agent phones registered at the edge; each test reads what every phone saw (its
INVITEs and their ends, with the time they arrived), not only the queue_log: at a ring-all
timeout every phone's ring is CANCELled before the retry rings it again; an agent logged out
or paused while ringing stops ringing at once while the others go on; and the end of a ring
that was already withdrawn is never booked against the call's next offer.
"""

from __future__ import annotations

import asyncio
import sys

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.test_acd_calls import acd_config, agents_up, queue_log, wait_agent

NAMES = ("alice", "bob", "carol")


def incomings(phone: Phone) -> list[p.Incoming]:
    return [m for m in phone.events if isinstance(m, p.Incoming)]


def ended(phone: Phone, leg: str) -> p.CallState | None:
    return next((m for m in phone.events if isinstance(m, p.CallState) and m.leg == leg
                 and m.state == "disconnected"), None)


async def ring_end(phone: Phone, leg: str, timeout: float) -> p.CallState:
    return await phone.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=timeout)


async def agent_cli(d, *args: str) -> str:  # type: ignore[no-untyped-def]
    """`ringmaster agent ...` without blocking the loop the phones' events arrive on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ringmaster.cli", "agent", *args, "-c", str(d.config_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    return out.decode()


async def test_ring_all_timeout_cancels_every_phone_before_the_retry_rings_it_again(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    acd_config(d, {"strategy": "ring-all", "members": list(NAMES), "ring_timeout": 2, "retry": 1}, agents=NAMES)
    d.start()
    phones = await agents_up(d, NAMES)
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        first = [await ph.wait(p.Incoming, timeout=10) for ph in phones]
        for ph, inc in zip(phones, first, strict=True):
            # nobody answers: at the ring timeout each phone's ring ends (CANCEL -> 487) ...
            st = await ring_end(ph, inc.leg, timeout=5)
            assert st.code == 487, (ph.spec.name, st)
            rang = ph.arrived(st) - ph.arrived(inc)
            assert 1.8 <= rang <= 2.6, (ph.spec.name, rang)
        for ph, inc in zip(phones, first, strict=True):
            # ... and only then (retry: 1 s) does the same call ring it again, once
            again = await ph.wait(p.Incoming, lambda m, leg=inc.leg: m.leg != leg, timeout=5)
            gap = ph.arrived(again) - ph.arrived(ended(ph, inc.leg))  # type: ignore[arg-type]
            assert gap >= 0.8, (ph.spec.name, gap)
        await asyncio.sleep(0.3)
        for ph in phones:
            ringing = [m for m in incomings(ph) if ended(ph, m.leg) is None]
            assert len(ringing) == 1, (ph.spec.name, ringing)  # never two rings of one call at once
        await caller.hangup(a)
        for ph in phones:
            second = incomings(ph)[1]
            st = await ring_end(ph, second.leg, timeout=3)
            assert st.code == 487, (ph.spec.name, st)
        for name in NAMES:
            wait_agent(d, name, "available")
    finally:
        await caller.stop()
        for ph in phones:
            await ph.stop()
    row = d.wait_calls_ended(1)[0]
    events = [(e, ag) for e, ag, _ in queue_log(d, row["call_id"])]
    assert sorted(ag for e, ag in events if e == "RINGNOANSWER") == sorted(NAMES), events
    assert sorted(ag for e, ag in events if e == "RINGCANCELED") == sorted(NAMES), events
    assert events[-1] == ("ABANDON", "NONE"), events


async def test_the_ring_an_agent_answers_is_the_live_one_and_no_ended_ring_is_booked_against_it(daemon_factory):
    """Round 1 times out (RINGNOANSWER, no-answer streak 1), round 2 rings, and alice answers
    the oldest ring still ringing on her phone: she talks to the caller (her leg stays up, no
    200-then-BYE). When the caller hangs up, nothing of round 1 is booked against round 2:
    bob and carol are RINGCANCELED, nobody is charged a second no-answer, and auto_pause
    after 2 pauses no one."""
    d = daemon_factory(workers=1, start=False)
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    acd_config(d, {"strategy": "ring-all", "members": list(NAMES), "ring_timeout": 2, "retry": 0.5,
                   "auto_pause": {"after": 2, "reason": "missed"}}, agents=NAMES)
    d.start()
    phones = await agents_up(d, NAMES)
    alice = phones[0]
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        first = [await ph.wait(p.Incoming, timeout=10) for ph in phones]
        for ph, inc in zip(phones, first, strict=True):
            await ph.wait(p.Incoming, lambda m, leg=inc.leg: m.leg != leg, timeout=6)  # round 2 rings
        await asyncio.sleep(0.2)
        oldest = next(m for m in incomings(alice) if ended(alice, m.leg) is None)
        alice.send(p.Answer(leg=oldest.leg))
        await alice.wait(p.CallState, lambda m: m.leg == oldest.leg and m.state == "confirmed", timeout=5)
        await asyncio.sleep(1.0)
        assert ended(alice, oldest.leg) is None, alice.events[-6:]  # she talks; no BYE right after her 200
        wait_agent(d, "alice", "on-call")
        await caller.hangup(a)
        await ring_end(alice, oldest.leg, timeout=5)
        for ph in phones:
            for inc in incomings(ph):
                await ring_end(ph, inc.leg, timeout=3)
        for name in NAMES:
            wait_agent(d, name, "available")
    finally:
        await caller.stop()
        for ph in phones:
            await ph.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed", row
    events = [(e, ag) for e, ag, _ in queue_log(d) if e not in ("ADDMEMBER", "REMOVEMEMBER")]
    assert not [e for e in events if e[0] == "PAUSE"], events
    mine = [(e, ag) for e, ag, _ in queue_log(d, row["call_id"])]
    assert sorted(ag for e, ag in mine if e == "RINGNOANSWER") == sorted(NAMES), mine
    assert sorted(ag for e, ag in mine if e == "RINGCANCELED") == ["bob", "carol"], mine
    assert mine[-2:] == [("CONNECT", "alice"), ("COMPLETECALLER", "alice")], mine


async def test_logout_while_ringing_stops_that_phone_at_once_and_the_others_ring_on(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    acd_config(d, {"strategy": "ring-all", "members": list(NAMES), "ring_timeout": 20}, agents=NAMES)
    d.start()
    phones = await agents_up(d, NAMES)
    alice, bob, carol = phones
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        first = [await ph.wait(p.Incoming, timeout=10) for ph in phones]
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await agent_cli(d, "alice", "--logout")
        st = await ring_end(alice, first[0].leg, timeout=3)
        assert st.code == 487, st
        assert alice.arrived(st) - asked < 2.0  # the CLI's start is most of it
        await asyncio.sleep(1.0)
        assert len(incomings(alice)) == 1 and ended(alice, first[0].leg) is not None
        for ph in (bob, carol):  # still ringing (the same ring, or a new one for the two of them)
            assert [m for m in incomings(ph) if ended(ph, m.leg) is None], ph.events
        inc = [m for m in incomings(bob) if ended(bob, m.leg) is None][-1]
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed", timeout=5)
        for m in incomings(carol):
            st = await ring_end(carol, m.leg, timeout=3)
            assert st.code == 487, st
        wait_agent(d, "bob", "on-call")
        await asyncio.sleep(0.5)
        assert ended(bob, inc.leg) is None  # bob talks to the caller, not 200-then-BYE
        await caller.hangup(a)
        await ring_end(bob, inc.leg, timeout=5)
    finally:
        await caller.stop()
        for ph in phones:
            await ph.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob" and row["disposition"] == "completed", row
    events = [(e, ag) for e, ag, _ in queue_log(d, row["call_id"])]
    assert ("RINGCANCELED", "alice") in events and ("CONNECT", "bob") in events, events
    assert ("RINGCANCELED", "carol") in events and events[-1] == ("COMPLETECALLER", "bob"), events


async def test_pausing_an_agent_while_her_phone_rings_withdraws_the_ring_at_once(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice", "bob"], "ring_timeout": 20}, agents=("alice", "bob"))
    d.start()
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=10)
        asked = asyncio.get_running_loop().time()
        out = await agent_cli(d, "alice", "--pause", "lunch")
        assert "paused:lunch" in out, out
        st = await ring_end(alice, inc.leg, timeout=3)
        assert st.code == 487 and alice.arrived(st) - asked < 2.0, st
        inc_b = await bob.wait(p.Incoming, timeout=5)  # the caller goes to the next agent
        bob.send(p.Answer(leg=inc_b.leg))
        await bob.wait(p.CallState, lambda m: m.leg == inc_b.leg and m.state == "confirmed", timeout=5)
        wait_agent(d, "alice", "paused:lunch")
        await caller.hangup(a)
        await ring_end(bob, inc_b.leg, timeout=5)
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob"
    events = [(e, ag) for e, ag, _ in queue_log(d, row["call_id"])]
    assert ("RINGCANCELED", "alice") in events and ("RINGNOANSWER", "alice") not in events, events


async def test_a_caller_who_left_by_exitempty_is_not_stored_completed(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "ring_timeout": 20, "leave_when_empty": True})
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=10)
        await agent_cli(d, "alice", "--logout")
        st = await ring_end(alice, inc.leg, timeout=3)  # her ring ends with her logout ...
        assert st.code == 487, st
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)  # ... and he leaves
    finally:
        await caller.stop()
        await alice.stop()
    row = d.wait_calls_ended(1)[0]
    events = [e for e, _, _ in queue_log(d, row["call_id"])]
    assert events[-1] == "EXITEMPTY", events
    assert row["disposition"] == "abandoned" and row["agent"] is None, row


async def test_a_caller_whose_bye_crosses_the_agents_answer_is_abandoned_not_answered(daemon_factory):
    """The caller hangs up at the moment the agent answers: the worker sees the agent's 200,
    then the caller's BYE before the controller's Bridge reaches it. The caller never heard the
    agent: ABANDON under the agent (app_queue's "caller was about to talk to agent"), the call
    `abandoned` with no agent, the agent's leg ended at once with a BYE and the agent free. A
    BYE that comes after the bridge is an answered call (CONNECT, COMPLETECALLER); each round
    must be one of the two, whole, and the crossing must be seen at least once."""
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "ring_timeout": 20})
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    crossed = 0
    try:
        for _ in range(6):
            a = await caller.call(f"sip:500@{d.edge}")
            inc = await alice.wait(p.Incoming, lambda m: ended(alice, m.leg) is None, timeout=10)
            alice.send(p.Answer(leg=inc.leg))
            caller.send(p.Hangup(leg=a))  # the same instant
            await caller.wait(p.CallState, lambda m, leg=a: m.leg == leg and m.state == "disconnected", timeout=5)
            st = await ring_end(alice, inc.leg, timeout=5)  # alice's leg ends, whatever happened
            assert st.code in (200, 487), st
            rows = d.wait_calls_ended(_ + 1)
            row = rows[-1]
            events = [(e, ag) for e, ag, _d in queue_log(d, row["call_id"])]
            if ("CONNECT", "alice") in events:
                assert events[-1] == ("COMPLETECALLER", "alice") and row["disposition"] == "completed", (events, row)
                assert row["agent"] == "alice"
            else:
                assert row["disposition"] == "abandoned" and row["agent"] is None, row
                assert events[-1][0] == "ABANDON", events
                crossed += events[-1] == ("ABANDON", "alice")
            wait_agent(d, "alice", "available")
    finally:
        await caller.stop()
        await alice.stop()
    assert crossed, "the BYE never crossed the answer in 6 rounds"
