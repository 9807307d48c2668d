"""The outbound rules and the presence of an agent on her own call, without SIP: which agent
may dial which number over which trunk with which caller ID (outbound.decide), the sample
numbers `check` tries against a trunk, and the queue engine keeping an agent on her own call
out of every offer until it ends (docs/outbound.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringmaster.config import load_config
from ringmaster.outbound import Permit, Refusal, decide, disposition_of, sample_numbers, warning_header
from tests.test_acd_engine import engine, rings

PLAN = """\
sip:
  listen: 127.0.0.1:25060
  trunks:
    carrier: {address: 127.0.0.1:25080, allowed: ['\\+45[0-9]{8}', '112'], caller_id: "+4570001000"}
    intl: {address: 127.0.0.1:25090}
profiles:
  sales: {}
agents:
  alice: {softphone: {username: alice, password: alice-secret}, caller_id: "+4570001001"}
  bob: {softphone: {username: bob, password: bob-secret}, profile: sales}
  carol: {softphone: {username: carol, password: carol-secret}}
outbound:
  - {name: emergency, numbers: ['112'], route: carrier, agents: ['*'], caller_id: "+4570009999"}
  - {name: dk-alice, numbers: ['\\+45[2-9][0-9]{7}'], route: carrier, agents: [alice], caller_id: agent}
  - {name: dk-sales, numbers: ['\\+45[2-9][0-9]{7}'], route: carrier, profiles: [sales]}
  - {name: world, numbers: ['\\+[1-9][0-9]{6,14}'], route: intl, agents: [alice]}
flows:
  demo: [hangup]
entry_points:
  - {number: "100", flow: demo}
"""


@pytest.fixture
def cfg(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "prompts").mkdir()
    f = tmp_path / "plan.yaml"
    f.write_text(PLAN)
    return load_config(f)


def test_the_first_rule_of_hers_that_matches_decides_route_and_caller_id(cfg):  # type: ignore[no-untyped-def]
    v = decide(cfg, "alice", "+4522334455")
    assert isinstance(v, Permit) and (v.rule.name, v.rule.route, v.caller_id) == ("dk-alice", "carrier", "+4570001001")
    v = decide(cfg, "bob", "+4522334455")  # by his profile; the trunk's caller ID
    assert isinstance(v, Permit) and (v.rule.name, v.caller_id) == ("dk-sales", "+4570001000")
    v = decide(cfg, "alice", "+19005550100")  # only alice's `world` rule lets it out, via intl
    assert isinstance(v, Permit) and (v.rule.route, v.caller_id) == ("intl", "")
    v = decide(cfg, "carol", "112")  # everyone: the fixed number
    assert isinstance(v, Permit) and v.caller_id == "+4570009999"


@pytest.mark.parametrize("agent, number, reason", [
    ("bob", "+19005550100", "is not a number agent 'bob' may dial (rules: emergency, dk-sales)"),
    ("carol", "+4522334455", "is not a number agent 'carol' may dial (rules: emergency)"),
    ("alice", "22334455; DROP", "is not a number"),
    ("alice", "sip:x@evil", "is not a number"),
    ("mallory", "112", "unknown agent 'mallory'"),
])
def test_anything_else_is_refused_with_the_reason(cfg, agent: str, number: str, reason: str):  # type: ignore[no-untyped-def]
    v = decide(cfg, agent, number)
    assert isinstance(v, Refusal) and reason in v.reason


def test_check_samples_each_alternative_of_a_pattern():
    assert sample_numbers(r"\+45[0-9]{8}") == ["+4500000000", "+4599999999"]
    assert sample_numbers(r"(00|\+)4[5-6]\d{8}|112") == ["004500000000", "+4699999999", "112"]
    assert sample_numbers(r"\+[0-9]+") == ["+0", "+99999"]
    assert sample_numbers(r"[^9]+") == []  # cannot sample: left to the edge's own check


def test_dispositions_and_the_warning_a_refusal_carries():
    assert [disposition_of(c) for c in (486, 600, 408, 480, 487, 404, 503)] == \
        ["busy", "busy", "no_answer", "no_answer", "no_answer", "failed", "failed"]
    assert warning_header('no "quotes"\r\nX-Evil: 1') == ("Warning", '399 ringmaster "no quotesX-Evil: 1"')


def test_an_agent_on_her_own_call_is_offered_nothing_until_it_ends():
    e = engine({"q": {"strategy": "linear", "members": ["a"]}, "c": {"strategy": "linear", "members": ["a"]}},
               names=("a",))
    actions, refusal = e.outbound_started("a", "out-1", 10.0)
    assert refusal is None and e.agents["a"].status(10.0) == "on-call"
    assert rings(e.enqueue("call-1", "q", 11.0)) == []
    assert rings(e.enqueue("chat-1", "c", 11.0, channel="chat")) == []  # exclusive: no chat either
    assert e.outbound_started("a", "out-2", 12.0)[1] == "agent 'a' is on a call"
    out = e.outbound_ended("a", "out-1", 20.0, talked=True)
    assert [r.call_id for r in rings(out)] == ["call-1"]
