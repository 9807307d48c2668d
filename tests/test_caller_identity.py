"""The agent's phone shows who is calling (issue 11 item 7): the agent leg's From carries the
caller's number and display name on the edge's address (not the worker's), P-Asserted-Identity
(RFC 3325) too where `sip.send_pai` says the agent side trusts it, and the IVR's variables stay
in their X- headers. Read by a pjsua2 phone (a softphone agent) and by a SIPp UAS (mobile
agents behind the trunk)."""

from __future__ import annotations

import asyncio
import re
import subprocess

import pytest

from ringmaster import protocol as p
from ringmaster.calls import display_name, identity
from tests.helpers.phone import Phone
from tests.helpers.sipp import agent_scenario, run_sipp
from tests.test_acd_calls import acd_config, register, wait_agent
from tests.test_leg_slots import queue_config, wait_slots_free


@pytest.mark.parametrize(("from_value", "name"), [
    ('"Dana Jensen" <sip:4511223344@192.0.2.1>;tag=x', "Dana Jensen"),
    ("Dana <sip:4511223344@192.0.2.1>", "Dana"),
    ('"Da\\"na\r\nX-Evil: 1" <sip:1@h>', "Da"),  # no quote, backslash or line break survives
    ("<sip:4511223344@192.0.2.1>", ""),
    ("sip:4511223344@192.0.2.1", ""),
])
def test_display_name_is_taken_safely_from_the_callers_from(from_value: str, name: str) -> None:
    assert display_name(from_value) == name


def test_identity_is_the_callers_number_on_the_given_host_or_nothing() -> None:
    assert identity("+4511223344", "Dana", "127.0.0.1:5060") == '"Dana" <sip:+4511223344@127.0.0.1:5060>'
    assert identity("4511223344", "", "edge") == "<sip:4511223344@edge>"
    for odd in ("", "45 11", "a<b", "x@y", "a\r\nb", "9" * 65):
        assert identity(odd, "Dana", "edge") is None


@pytest.mark.parametrize("send_pai", [False, True])
async def test_a_softphone_agent_sees_the_callers_name_and_number(daemon_factory, send_pai: bool):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.config["flows"]["main"] = [{"set": {"account": "1234"}}, {"queue": "sales"}, "hangup"]
    d.config["sip"]["send_pai"] = send_pai
    d.start()
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        caller.send(p.Dial(leg="c1", uri=f"sip:500@{d.edge}",
                           from_uri=f'"Dana Jensen" <sip:4511223344@127.0.0.1:{d.ports.caller(1)}>'))
        inc = await agent.wait(p.Incoming, timeout=10)
        headers = dict(inc.headers)
        expected = f'"Dana Jensen" <sip:4511223344@{d.edge.split(":")[0]}>'
        assert inc.from_uri == expected, inc.from_uri
        assert str(d.ports.workers) not in inc.from_uri and "w1@" not in inc.from_uri  # not the worker
        assert headers.get("P-Asserted-Identity") == (expected if send_pai else None), headers
        assert headers["X-Ringmaster-Var-account"] == "1234" and headers["X-Ringmaster-Queue"] == "sales"
        agent.send(p.Answer(leg=inc.leg))
        await caller.wait(p.CallState, lambda m: m.leg == "c1" and m.state == "confirmed")
        await asyncio.sleep(0.3)
        await caller.hangup("c1")
        await agent.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=8)
    finally:
        await caller.stop()
        await agent.stop()
    assert d.wait_calls_ended(1)[0]["agent"] == "alice"
    wait_slots_free(d, timeout=5)


def test_a_mobile_agent_behind_the_trunk_gets_from_and_pai(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    trunk = d.ports.caller(20)
    queue_config(d, trunk, agents=1)
    d.config["sip"]["send_pai"] = True
    d.start()
    log = d.dir / "agent_messages.log"
    scenario = agent_scenario(d.dir, copy_record_route=True)
    out = open(d.dir / "sipp-agent.log", "wb")
    agents = subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(trunk), "-mp", str(trunk + 2),
                               "-rtp_echo", "-nostdin", "-trace_msg", "-message_file", str(log)],
                              cwd=d.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        r = run_sipp("uac_hold_reinvite.xml", d.edge, d.ports.caller(0), d.dir, service="500", caller="4522334455",
                     hold_ms=1000, timeout=20)
        assert (r.successful, r.failed) == (1, 0), r.output
        d.wait_calls_ended(1)
        wait_slots_free(d, timeout=5)
    finally:
        agents.kill()
        agents.wait()
        out.close()
    text = log.read_text(errors="replace")
    invite = next(m for m in re.split(r"-{20,}", text) if re.search(r"^INVITE sip:", m, re.M))
    heads = {k.lower(): v.strip() for k, v in re.findall(r"^([A-Za-z-]+):(.*)$", invite, re.M)}
    expected = f'"Test" <sip:4522334455@{d.edge.split(":")[0]}>'
    assert heads["from"].split(";tag=")[0] == expected, heads["from"]
    assert heads["p-asserted-identity"] == expected
    assert heads["x-ringmaster-queue"] == "sales"
