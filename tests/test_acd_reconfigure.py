"""The ACD engine changed at run time, without SIP: members added and removed (Asterisk's
AddQueueMember / RemoveQueueMember / QueueMemberPenalty), queues and agents added, changed and
removed by a reload. Waiting tasks keep the settings they entered with; the agent-to-queues
index and the free sets stay true to the members (checked after every step of a random run)."""

from __future__ import annotations

import random

import pytest

from ringmaster.acd.config import AgentConfig, QueueConfig
from ringmaster.acd.engine import Bridge, CancelRing, LeaveQueue, QueueEngine, Ring
from tests.test_acd_engine import agents, engine, logs, rings


def qcfg(**spec) -> QueueConfig:  # type: ignore[no-untyped-def]
    return QueueConfig.model_validate(spec)


def test_member_added_at_run_time_is_offered_the_caller_already_waiting():
    e = engine({"q": {"strategy": "linear", "members": ["a"]}}, names=("a", "b"))
    e.agent_pause("a", "lunch", now=5)
    assert rings(e.enqueue("c1", "q", now=10)) == []
    out = e.add_member("q", "b", tier=1, now=11)
    assert [(lg.queue, lg.agent) for lg in logs(out, "ADDMEMBER")] == [("q", "b")]
    assert rings(out) == [Ring("c1", "q", ("b",), 15.0)]
    assert e.by_agent["b"] == ["q"] and e.check_index() == []
    with pytest.raises(ValueError, match="already a member"):
        e.add_member("q", "b", tier=1, now=12)
    with pytest.raises(KeyError):
        e.add_member("q", "nobody", tier=1, now=12)


def test_member_removed_on_a_call_keeps_it_and_gets_no_new_offer_from_that_queue():
    e = engine({"q": {"strategy": "linear", "members": ["a", "b"]}, "other": {"members": ["a"]}}, names=("a", "b"))
    e.enqueue("c1", "q", now=10)
    e.ring_answered("c1", "a", now=11)
    out = e.remove_member("q", "a", now=12)
    assert [lg.agent for lg in logs(out, "REMOVEMEMBER")] == ["a"]
    assert e.agents["a"].call == "c1" and e.tasks["c1"].agent == "a"  # still on her call
    assert e.by_agent["a"] == ["other"] and e.check_index() == []
    e.call_ended("c1", "agent", now=20)
    e.agent_pause("b", "lunch", now=21)
    assert rings(e.enqueue("c2", "q", now=22)) == []  # a is free, but no longer serves q
    assert rings(e.enqueue("c3", "other", now=23)) == [Ring("c3", "other", ("a",), 15.0)]  # still serves other
    e.ring_answered("c3", "a", now=24)
    assert logs(e.call_ended("c3", "agent", now=25), "COMPLETEAGENT")


def test_member_removed_while_ringing_has_the_ring_withdrawn_and_the_caller_goes_to_the_next():
    e = engine({"q": {"strategy": "linear", "members": ["a", "b"]}}, names=("a", "b"))
    assert rings(e.enqueue("c1", "q", now=10))[0].agents == ("a",)
    out = e.remove_member("q", "a", now=11)
    assert CancelRing("c1", ("a",)) in out and logs(out, "RINGCANCELED")[0].agent == "a"
    assert rings(out) == [Ring("c1", "q", ("b",), 15.0)]
    assert not e.agents["a"].offered and e.check_index() == []
    assert e.ring_failed("c1", "a", now=12) == []  # the withdrawn ring's late end changes nothing
    assert e.tasks["c1"].ringing == {"b": 11}


def test_tier_change_takes_effect_for_the_caller_waiting():
    e = engine({"q": {"strategy": "linear", "tier_wait": 30, "members": ["a", {"agent": "b", "tier": 2}]}},
               names=("a", "b"))
    e.agent_pause("a", "lunch", now=5)
    assert rings(e.enqueue("c1", "q", now=10)) == []  # b is tier 2: not before 30 s
    assert rings(e.set_member_tier("q", "b", 1, now=12)) == [Ring("c1", "q", ("b",), 15.0)]
    assert e._member_at["q"]["b"] == (1, 1)


def test_changed_strategy_and_timeout_apply_to_new_callers_while_the_waiting_caller_keeps_the_old():
    e = engine({"q": {"strategy": "linear", "ring_timeout": 15, "members": ["a", "b", "c"]}})
    for n in "abc":
        e.agent_pause(n, "meeting", now=5)
    e.enqueue("old", "q", now=10)
    e.reconfigure({"q": qcfg(strategy="ring-all", ring_timeout=5, members=["a", "b", "c"])},
                  agents("a", "b", "c"), now=11)
    e.enqueue("new", "q", now=12)
    out = e.agent_unpause("a", now=13)
    assert rings(out) == [Ring("old", "q", ("a",), 15.0)]  # linear, 15 s: the settings it came with
    assert rings(e.agent_unpause("b", now=14)) == [Ring("new", "q", ("b",), 5.0)]  # ring-all, 5 s: the new ones
    assert [(lg.call_id, lg.agent) for lg in logs(e.tick(19), "RINGNOANSWER")] == [("new", "b")]
    assert [(lg.call_id, lg.agent) for lg in logs(e.tick(28), "RINGNOANSWER")] == [("old", "a")]


def test_removing_a_queue_with_a_caller_waiting_is_refused_and_changes_nothing():
    e = engine({"q": {"members": ["a"]}, "r": {"members": ["b"]}}, names=("a", "b"))
    e.agent_pause("a", "lunch", now=1)
    e.enqueue("c1", "q", now=10)
    before = (set(e.queues), dict(e.by_agent), list(e.queues["q"].waiting))
    problems = e.reconfigure_problems({"r": qcfg(members=["b"])}, agents("a", "b"))
    assert len(problems) == 1 and "queue 'q' is removed but 1 caller wait in it (c1)" in problems[0], problems
    with pytest.raises(ValueError, match="drain them to another queue"):
        e.reconfigure({"r": qcfg(members=["b"])}, agents("a", "b"), now=11)
    assert (set(e.queues), dict(e.by_agent), list(e.queues["q"].waiting)) == before
    assert e.reconfigure_problems({"r": qcfg(members=["b"])}, agents("a", "b"), drain={"q": "nosuch"})


def test_removed_queue_drained_to_a_named_queue_moves_its_callers_and_chats():
    e = engine({"q": {"members": ["a"]}, "r": {"members": ["b"]}}, names=("a", "b"))
    e.agent_pause("a", "lunch", now=1)
    e.agent_pause("b", "lunch", now=1)
    e.enqueue("c1", "q", now=10)
    e.enqueue("t1", "q", now=10, channel="chat")
    out = e.reconfigure({"r": qcfg(members=["b"])}, agents("a", "b"), now=12, drain={"q": "r"})
    assert [(lg.call_id, lg.data[0]) for lg in logs(out, "TRANSFER")] == [("c1", "r"), ("t1", "r")]
    leave = [a for a in out if isinstance(a, LeaveQueue)]
    assert len(leave) == 1 and leave[0].call_id == "c1" and leave[0].reason == "drained"
    assert leave[0].target is not None and getattr(leave[0].target, "queue", None) == "r"
    assert "q" not in e.queues and e.tasks["t1"].queue == "r" and "c1" not in e.tasks
    assert e.by_agent == {"a": [], "b": ["r"]} and e.check_index() == []


def test_a_connected_call_outlives_its_removed_queue_and_an_agent_removed_on_a_call_leaves_after_it():
    e = engine({"q": {"members": ["a"], "wrapup": 5}, "r": {"members": ["b"]}}, names=("a", "b"))
    e.enqueue("c1", "q", now=10)
    e.ring_answered("c1", "a", now=11)
    e.reconfigure({"r": qcfg(members=["b"])}, agents("b"), now=12)  # queue q and agent a both go
    assert "q" not in e.queues and "a" in e.agents and e.agents["a"].call == "c1"
    assert not e.agents["a"].logged_in
    out = e.call_ended("c1", "caller", now=30)
    assert logs(out, "COMPLETECALLER")[0].queue == "q"
    assert "a" not in e.agents and "a" not in e.by_agent and e.check_index() == []
    assert e.tick(40) == []  # a's wrap-up timer finds nobody


def test_new_agent_and_queue_from_a_reload_take_calls():
    e = engine({"q": {"members": ["a"]}}, names=("a",))
    new_agents = agents("a", "z")
    e.reconfigure({"q": qcfg(members=["a"]), "vip": qcfg(members=["z"])}, new_agents, now=5)
    assert not e.agents["z"].logged_in and e.agents["z"].registered  # a mobile counts as registered
    e.agent_login("z", now=6)
    assert rings(e.enqueue("c1", "vip", now=7)) == [Ring("c1", "vip", ("z",), 15.0)]
    assert e.by_agent == {"a": ["q"], "z": ["vip"]} and e.check_index() == []


def test_changed_agent_skills_apply_at_once():
    e = engine({"q": {"members": ["a"], "skills": {"fr": 3}}}, names=("a",))
    assert rings(e.enqueue("c1", "q", now=10)) == []
    changed = {"a": AgentConfig(mobile="+4510000000", skills={"fr": 5})}
    out = e.reconfigure({"q": qcfg(members=["a"], skills={"fr": 3})}, changed, now=11)
    assert rings(out) == [Ring("c1", "q", ("a",), 15.0)]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_member_and_queue_changes_never_double_book_and_keep_the_index_true(seed: int):
    rng = random.Random(seed)
    names = tuple(f"ag{i}" for i in range(5))
    e: QueueEngine = engine({f"q{i}": {"strategy": s, "members": rng.sample(names, 3), "ring_timeout": 5, "retry": 1}
                             for i, s in enumerate(["ring-all", "linear", "round-robin"])}, names=names)
    now = 0.0
    connected: set[str] = set()
    for step in range(500):
        now += rng.uniform(0, 1.5)
        roll = rng.random()
        queues = list(e.queues)
        out: list = []
        if roll < 0.2:
            out = e.enqueue(f"c{step}", rng.choice(queues), now, channel=rng.choice(["voice", "voice", "chat"]))
        elif roll < 0.4 and any(c.ringing for c in e.tasks.values()):
            call = rng.choice([c for c in e.tasks.values() if c.ringing])
            agent = rng.choice(list(call.ringing))
            out = e.ring_answered(call.id, agent, now) if rng.random() < 0.7 else e.ring_failed(call.id, agent, now)
        elif roll < 0.55 and any(c.agent for c in e.tasks.values()):
            out = e.call_ended(rng.choice([c for c in e.tasks.values() if c.agent]).id, "agent", now)
        elif roll < 0.7:
            q, a = rng.choice(queues), rng.choice(names)
            members = {m.agent for m in e.queues[q].spec.members}
            if a in e.agents:
                out = e.remove_member(q, a, now) if a in members else e.add_member(q, a, rng.randint(1, 2), now)
        elif roll < 0.78:
            # a reload: each queue's members reshuffled, its timeout changed, a queue added or
            # (when empty) removed; waiting callers of a removed queue drained to another
            specs = {q: qcfg(strategy=e.queues[q].spec.strategy, members=rng.sample(names, 3),
                             ring_timeout=rng.choice([3, 5, 8]), retry=1) for q in queues}
            drain = {}
            if len(specs) > 2 and rng.random() < 0.5:
                gone = rng.choice(queues)
                del specs[gone]
                drain = {gone: next(iter(specs))}
            if rng.random() < 0.3:
                specs[f"n{step}"] = qcfg(strategy="linear", members=rng.sample(names, 2))
            out = e.reconfigure(specs, agents(*names), now=now, drain=drain)
        elif roll < 0.85:
            out = rng.choice([e.agent_login, e.agent_logout, e.agent_unpause])(rng.choice(names), now)
        else:
            out = e.tick(now)
        for act in out:
            if isinstance(act, Bridge):
                assert act.call_id not in connected, "a call was connected twice"
                connected.add(act.call_id)
            if isinstance(act, Ring):  # only members of the queue, as it is now, are offered its tasks
                members = {m.agent for m in e.queues[act.queue].spec.members}
                assert set(act.agents) <= members, (step, act, members)
        assert e.check_index() == [], (step, e.check_index())
        holders: dict[str, list[str]] = {}
        for c in e.tasks.values():
            for a in [*c.ringing, *([c.agent] if c.agent else [])]:
                holders.setdefault(a, []).append(c.id)
        for a, held in holders.items():
            assert len(held) == 1, f"step {step}: agent {a} holds {held}"
        for c in e.tasks.values():
            if c.agent is None:
                assert c.queue in e.queues, (step, c.id)  # nobody waits in a queue that is gone
    assert connected


def test_member_changes_record_only_what_differs_from_the_yaml():
    from ringmaster.acd.members import MemberChange, change_for, effective_queue, members_view, stale

    yaml_q = qcfg(members=["a", {"agent": "b", "tier": 2}])
    changes: dict[tuple[str, str], MemberChange] = {}

    def do(agent: str, action: str, tier: int | None = None, at: float = 0.0) -> MemberChange | None:
        c = change_for(yaml_q, "q", changes, agent, action, tier, at, "test")
        if c is None:
            changes.pop(("q", agent), None)
        else:
            changes[("q", agent)] = c
        return c

    assert do("c", "add", 3, at=1.0) == MemberChange("q", "c", 3, False, 1.0, "test")
    assert do("a", "remove") == MemberChange("q", "a", None, True, 0.0, "test")  # a YAML member: recorded
    assert [(m.agent, m.tier) for m in effective_queue(yaml_q, "q", changes).members] == [("b", 2), ("c", 3)]
    assert do("c", "remove") is None and ("q", "c") not in changes  # added at run time: nothing left to record
    assert do("a", "add", 1) is None and not changes.get(("q", "a"))  # back as the YAML has it
    assert do("b", "tier", 5) is not None and do("b", "tier", 2) is None  # back to the YAML's tier
    assert changes == {}
    with pytest.raises(ValueError, match="already a member"):
        do("a", "add")
    with pytest.raises(ValueError, match="not a member"):
        do("z", "remove")
    do("z", "add", 1, at=2.0)
    assert [v.as_dict() for v in members_view(yaml_q, "q", changes)][-1] == {"agent": "z", "tier": 1, "dynamic": True}
    # a change naming an agent or queue that is gone, or removing a member the YAML dropped, is stale
    changes[("gone", "a")] = MemberChange("gone", "a", 1)
    changes[("q", "x")] = MemberChange("q", "x", None, True)
    assert {(c.queue, c.agent) for c in stale({"q": yaml_q}, agents("a", "b", "z", "x"), changes)} == {
        ("gone", "a"), ("q", "x")}


def test_a_changed_profile_gives_the_agent_its_new_chat_capacity_at_once():
    from ringmaster.acd.config import PresenceProfile

    e = QueueEngine({"q": qcfg(members=["a"])}, agents("a"), presence={"a": PresenceProfile(capacity={"chat": 1})})
    e.agent_login("a", now=1)
    assert rings(e.enqueue("t1", "q", now=2, channel="chat"))[0].agents == ("a",)
    assert rings(e.enqueue("t2", "q", now=3, channel="chat")) == []  # one chat at a time
    out = e.reconfigure({"q": qcfg(members=["a"])}, agents("a"), {"a": PresenceProfile(capacity={"chat": 2})}, now=4)
    assert [r.call_id for r in rings(out)] == ["t2"]  # the offer in flight stays, a second one goes out
    assert e.agents["a"].offered == {"t1": "chat", "t2": "chat"}
