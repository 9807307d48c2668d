"""The queue engine's side of an attended transfer, without SIP: a consulted agent is held busy
(no queue offers her a call), free at once when the consult ends, and the call's agent after a
complete; ATTENDEDTRANSFER carries app_queue's fields and the transferring agent wraps up."""

from __future__ import annotations

from ringmaster.acd.engine import QueueEngine
from tests.test_acd_engine import engine, logs, rings


def _connected_to_a(e: QueueEngine) -> None:
    e.enqueue("c1", "q", now=10)
    e.ring_answered("c1", "a", now=12)


def test_a_consulted_agent_is_offered_nothing_until_the_consult_ends_and_then_is_free_without_wrapup():
    e = engine({"q": {"strategy": "linear", "members": ["a", "b"], "wrapup": 30}}, names=("a", "b"))
    _connected_to_a(e)
    e.consult_started("b", "c1-consult", now=20)
    assert e.agents["b"].status(20) == "on-call" and not e.agents["b"].available(20)
    assert rings(e.enqueue("c2", "q", now=21)) == []  # b is consulted: the new caller waits
    out = e.consult_ended("b", "c1-consult", now=25)
    assert [r.agents for r in rings(out)] == [("b",)]  # free at once: the waiting caller rings her
    assert not e.agents["b"].in_wrapup("voice", 25)
    assert e.consult_ended("b", "c1-consult", now=26) == []  # once only


def test_attended_transfer_to_the_consulted_agent_moves_the_call_and_logs_attendedtransfer():
    e = engine({"q": {"strategy": "linear", "members": ["a"], "wrapup": 30}}, names=("a", "b"))
    _connected_to_a(e)
    e.consult_started("b", "c1-consult", now=20)
    out = e.attended_transfer("c1", ("BRIDGE", "b"), now=40, to_agent="b", consult_key="c1-consult")
    (log,) = logs(out, "ATTENDEDTRANSFER")
    assert (log.agent, log.data) == ("a", ("BRIDGE", "b", 2, 28, 1))
    assert e.agents["a"].in_wrapup("voice", 41) and e.agents["a"].call is None
    assert e.agents["b"].call == "c1" and "c1-consult" not in e.agents["b"].holding
    assert e.queues["q"].transferred == 1
    out = e.call_ended("c1", "agent", now=70)
    assert [(lg.agent, lg.data[1]) for lg in logs(out, "COMPLETEAGENT")] == [("b", 30)]
    assert e.agents["b"].call is None


def test_attended_transfer_to_an_external_party_ends_the_task():
    e = engine({"q": {"strategy": "linear", "members": ["a"]}}, names=("a",))
    _connected_to_a(e)
    out = e.attended_transfer("c1", ("BRIDGE", "accounting"), now=30)
    assert logs(out, "ATTENDEDTRANSFER")[0].data[:2] == ("BRIDGE", "accounting")
    assert "c1" not in e.tasks and e.agents["a"].call is None
    assert e.attended_transfer("c1", ("BRIDGE", "accounting"), now=31) == []
