"""One presence for voice, chat and email, in the engine without IO: per-channel capacity and
wrap-up, exclusive and concurrent policies, offers that time out or are rejected, emails by due
time, transfers, and a randomized interleaving checked against every agent's limits."""

from __future__ import annotations

import random

import pytest

from ringmaster.acd.config import CHANNELS, AgentConfig, PresenceProfile, QueueConfig
from ringmaster.acd.engine import Bridge, CancelRing, QueueEngine, QueueLog, Ring


def make(profiles: dict[str, dict], queues: dict[str, dict] | None = None, seed: int = 3) -> QueueEngine:  # type: ignore[type-arg]
    names = list(profiles)
    queues = queues or {"q": {"strategy": "longest-idle", "members": names, "offer_timeout": 20}}
    e = QueueEngine({q: QueueConfig.model_validate(s) for q, s in queues.items()},
                    {n: AgentConfig(mobile=f"+4520000{i:03d}") for i, n in enumerate(names)},
                    rng=random.Random(seed),
                    presence={n: PresenceProfile.model_validate(p) for n, p in profiles.items()})
    for i, n in enumerate(names):
        e.agent_login(n, now=float(i))
    return e


def rings(actions) -> list[Ring]:  # type: ignore[no-untyped-def]
    return [a for a in actions if isinstance(a, Ring)]


def test_exclusive_agent_in_a_chat_is_not_rung_and_gets_the_call_after_chat_and_wrapup():
    e = make({"a": {"policy": "exclusive", "wrapup": {"chat": 5}}})
    assert rings(e.enqueue("chat1", "q", now=10, channel="chat"))[0].agents == ("a",)
    e.ring_answered("chat1", "a", now=11)
    assert rings(e.enqueue("call1", "q", now=12)) == []  # a holds a chat
    assert rings(e.call_ended("chat1", "agent", now=20)) == []  # chat wrap-up until 25
    assert e.next_deadline() == 25
    assert rings(e.tick(now=25)) == [Ring("call1", "q", ("a",), 15.0)]


def test_agent_on_a_call_gets_no_chat_unless_concurrent_and_chat_capacity_three_holds_the_fourth():
    e = make({"x": {"policy": "exclusive"}, "c": {"policy": "concurrent", "capacity": {"chat": 3}}},
             queues={"voice": {"members": ["x"]}, "chat": {"members": ["x", "c"]}})
    out = e.enqueue("call1", "voice", now=5)
    e.ring_answered("call1", "x", now=6)
    e.enqueue("callc", "chat", now=6.5)  # c gets a call too (concurrent agents still take one call)
    e.ring_answered("callc", "c", now=6.6)
    offered = []
    for i in range(4):
        out = e.enqueue(f"chat{i}", "chat", now=7 + i, channel="chat")
        offered += [(r.call_id, r.agents) for r in rings(out)]
        for r in rings(out):
            e.ring_answered(r.call_id, r.agents[0], now=7.5 + i)
    assert offered == [("chat0", ("c",)), ("chat1", ("c",)), ("chat2", ("c",))]  # x is on a call; c is full at 3
    assert e.agents["c"].load("chat") == 3 and e.agents["c"].call == "callc"
    out = e.call_ended("chat1", "agent", now=20)
    assert [(r.call_id, r.agents) for r in rings(out)] == [("chat3", ("c",))]


def test_exclusive_agent_holding_chats_takes_more_chats_but_no_email():
    e = make({"a": {"capacity": {"chat": 2, "email": 1}}})
    e.enqueue("chat1", "q", now=1, channel="chat")
    e.ring_answered("chat1", "a", now=2)
    assert rings(e.enqueue("mail1", "q", now=3, channel="email")) == []
    assert rings(e.enqueue("chat2", "q", now=4, channel="chat"))[0].call_id == "chat2"


def test_offer_timeout_and_reject_move_the_task_to_the_next_agent_and_count_toward_auto_pause():
    e = make({"a": {}, "b": {}, "c": {}},
             queues={"q": {"strategy": "linear", "members": ["a", "b", "c"], "offer_timeout": 20, "retry": 0,
                           "auto_pause": {"after": 1, "reason": "missed-offer"}}})
    assert rings(e.enqueue("t1", "q", now=10, channel="chat")) == [Ring("t1", "q", ("a",), 20.0, "chat")]
    out = e.tick(now=30)
    assert CancelRing("t1", ("a",), "chat") in out
    assert e.agents["a"].paused == "missed-offer"
    assert rings(out) == [Ring("t1", "q", ("b",), 20.0, "chat")]
    out = e.ring_failed("t1", "b", now=31, reason="rejected")
    assert [r.agents for r in rings(out)] == [("c",)]
    out = e.ring_answered("t1", "c", now=32)
    assert Bridge("t1", "c", "chat") in out
    assert [(lg.agent, lg.event) for lg in out if isinstance(lg, QueueLog)] == [("c", "CONNECT")]


def test_emails_are_offered_by_due_time_and_priority_first():
    e = make({"a": {"capacity": {"email": 1}}})
    e.agent_pause("a", "meeting", now=0)
    e.enqueue("late", "q", now=1, channel="email", due=5000)
    e.enqueue("soon", "q", now=2, channel="email", due=3000)
    e.enqueue("vip", "q", now=3, channel="email", due=9000, priority=2)
    order = []
    out = e.agent_unpause("a", now=4)
    for step in range(3):
        r = rings(out)[0]
        order.append(r.call_id)
        e.ring_answered(r.call_id, "a", now=5 + step)
        out = e.call_ended(r.call_id, "agent", now=5.5 + step)
    assert order == ["vip", "soon", "late"]


def test_transfer_moves_a_held_chat_to_another_queue_and_frees_the_agent():
    e = make({"a": {}, "b": {}}, queues={"sales": {"members": ["a"]}, "billing": {"members": ["b"]}})
    e.enqueue("t1", "sales", now=1, channel="chat", data={"customer": "Ann"})
    e.ring_answered("t1", "a", now=2)
    out = e.transfer("t1", "billing", now=30)
    assert [(lg.queue, lg.event) for lg in out if isinstance(lg, QueueLog)] == [
        ("sales", "TRANSFER"), ("billing", "ENTERQUEUE")]
    assert rings(out) == [Ring("t1", "billing", ("b",), 30.0, "chat")]
    assert e.tasks["t1"].data == {"customer": "Ann"} and e.agents["a"].load("chat") == 0


def test_wrapup_done_ends_wrapup_early_and_a_restored_agent_keeps_its_pause():
    e = make({"a": {"wrapup": {"email": 300}}})
    e.enqueue("m1", "q", now=1, channel="email")
    e.ring_answered("m1", "a", now=2)
    e.call_ended("m1", "agent", now=3)
    assert rings(e.enqueue("m2", "q", now=4, channel="email")) == []
    assert rings(e.wrapup_done("a", now=5))[0].call_id == "m2"
    fresh = make({"a": {}})
    fresh.agent_logout("a", now=0)
    fresh.restore_agent("a", True, "lunch", now=1)
    fresh.restore_task("m9", "q", "email", enqueued_at=0.5, now=1)
    assert fresh.agents["a"].paused == "lunch" and rings(fresh.dispatch(now=1)) == []


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_random_interleaving_of_calls_chats_emails_logins_pauses_keeps_every_limit(seed: int):
    rng = random.Random(seed)
    names = [f"ag{i}" for i in range(8)]
    profiles = {n: {"policy": rng.choice(["exclusive", "concurrent"]),
                    "capacity": {"chat": rng.randint(1, 3), "email": rng.randint(0, 2)},
                    "wrapup": {ch: rng.choice([0, 0, 2]) for ch in CHANNELS}} for n in names}
    queues = {f"q{i}": {"strategy": s, "members": rng.sample(names, 5), "ring_timeout": 5, "offer_timeout": 4,
                        "retry": 1, "wrapup": rng.choice([0, 1])}
              for i, s in enumerate(["ring-all", "linear", "round-robin", "longest-idle", "fewest-calls"])}
    e = make(profiles, queues=queues, seed=seed)
    for n in names:
        e.agent_logout(n, now=0)
    now = 0.0
    assigned: dict[str, str] = {}
    n_tasks = 0
    for step in range(1500):
        now += rng.uniform(0, 0.8)
        roll = rng.random()
        if roll < 0.25:
            n_tasks += 1
            ch = rng.choice(CHANNELS)
            out = e.enqueue(f"{ch}{step}", rng.choice(list(queues)), now, priority=rng.choice([0, 0, 1]), channel=ch,
                            due=now + rng.uniform(0, 100) if ch == "email" else None)
        elif roll < 0.5 and any(t.ringing for t in e.tasks.values()):
            t = rng.choice([t for t in e.tasks.values() if t.ringing])
            agent = rng.choice(sorted(t.ringing))
            out = e.ring_answered(t.id, agent, now) if rng.random() < 0.75 else e.ring_failed(t.id, agent, now, "rejected")
        elif roll < 0.65 and any(t.agent for t in e.tasks.values()):
            t = rng.choice([t for t in e.tasks.values() if t.agent])
            out = e.call_ended(t.id, rng.choice(["agent", "caller"]), now)
        elif roll < 0.7 and e.tasks:
            out = e.caller_left(rng.choice(sorted(e.tasks)), now)
        elif roll < 0.73 and e.tasks:
            out = e.transfer(rng.choice(sorted(e.tasks)), rng.choice(list(queues)), now)
        elif roll < 0.85:
            out = rng.choice([e.agent_login, e.agent_logout, e.agent_unpause])(rng.choice(names), now)
        elif roll < 0.9:
            out = e.agent_pause(rng.choice(names), "break", now)
        elif roll < 0.93:
            out = e.wrapup_done(rng.choice(names), now)
        else:
            out = e.tick(now)
        for act in out:
            if isinstance(act, Ring):
                for a in act.agents:  # an offer only ever goes to an agent who may take it
                    st = e.agents[a]
                    assert st.logged_in and st.paused is None, (step, a)
            if isinstance(act, Bridge):
                assert assigned.get(act.call_id) in (None, "transferred"), f"step {step}: {act.call_id} assigned twice"
                assigned[act.call_id] = act.agent
            if isinstance(act, QueueLog) and act.event == "TRANSFER":
                assigned[act.call_id] = "transferred"
        for a in e.agents.values():
            for ch in CHANNELS:
                assert a.load(ch) <= a.capacity(ch), (step, a.id, ch)
            if a.presence.policy == "exclusive":
                used = {ch for ch in list(a.holding.values()) + list(a.offered.values())}
                assert len(used) <= 1, (step, a.id, used)
            for t in a.offered:
                assert a.id in e.tasks[t].ringing, (step, a.id, t)
            for t in a.holding:
                assert e.tasks[t].agent == a.id, (step, a.id, t)
        for t in e.tasks.values():
            assert (t.agent is None) or not t.ringing
            if t.agent is None:  # the dispatch's list of tasks with no offer out is exact
                assert (t in e.queues[t.queue].unoffered[t.channel]) == (not t.ringing), (step, t.id)
    assert n_tasks > 300 and len(assigned) > 100
