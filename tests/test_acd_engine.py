"""The ACD engine without SIP: strategies, ring-all and its race, no-answer and auto-pause,
tiers, overflow, abandon, exit key, priority, multi-queue agents, and a randomized
interleaving that checks nobody is ever double-booked."""

from __future__ import annotations

import random

import pytest

from ringmaster.acd.config import AgentConfig, QueueConfig
from ringmaster.acd.engine import (
    Announce,
    Bridge,
    CancelRing,
    DropAgent,
    LeaveQueue,
    QueueEngine,
    QueueLog,
    Ring,
)


def agents(*names: str, **skills: dict[str, int]) -> dict[str, AgentConfig]:
    return {n: AgentConfig(mobile=f"+4510000{i:03d}", skills=skills.get(n, {})) for i, n in enumerate(names)}


def engine(queues: dict[str, dict], names: tuple[str, ...] = ("a", "b", "c"), login: bool = True, **skills) -> QueueEngine:  # type: ignore[no-untyped-def]
    e = QueueEngine({q: QueueConfig.model_validate(spec) for q, spec in queues.items()}, agents(*names, **skills),
                    rng=random.Random(7))
    if login:
        for i, n in enumerate(names):
            e.agent_login(n, now=float(i))  # a idle longest, then b, then c
    return e


def rings(actions) -> list[Ring]:  # type: ignore[no-untyped-def]
    return [a for a in actions if isinstance(a, Ring)]


def logs(actions, event: str | None = None) -> list[QueueLog]:  # type: ignore[no-untyped-def]
    return [a for a in actions if isinstance(a, QueueLog) and (event is None or a.event == event)]


def test_ring_all_rings_everyone_first_answer_wins_others_stop_and_all_are_free_after():
    e = engine({"q": {"strategy": "ring-all", "members": ["a", "b", "c"]}})
    out = e.enqueue("c1", "q", now=10)
    assert logs(out, "ENTERQUEUE") and rings(out) == [Ring("c1", "q", ("a", "b", "c"), 15.0)]
    out = e.ring_answered("c1", "b", now=12)
    assert CancelRing("c1", ("a", "c")) in out and Bridge("c1", "b") in out
    assert [lg.agent for lg in logs(out, "RINGCANCELED")] == ["a", "c"]
    assert logs(out, "CONNECT")[0].data[0] == 2
    # a and c stay reserved until the call side says their phones stopped ringing
    assert not e.agents["a"].available(12) and e.agents["a"].status(12) == "ringing"
    for n in "ac":
        e.ring_ended("c1", n, now=12)
    assert e.agents["a"].available(12) and e.agents["c"].available(12) and not e.agents["b"].available(12)
    out = e.call_ended("c1", "agent", now=40)
    assert logs(out, "COMPLETEAGENT")[0].data == (2, 28, 1)
    assert all(e.agents[n].available(40) for n in "abc")


def test_ring_all_late_answer_is_dropped_and_not_counted():
    e = engine({"q": {"strategy": "ring-all", "members": ["a", "b"]}})
    e.enqueue("c1", "q", now=10)
    e.ring_answered("c1", "a", now=11)
    out = e.ring_answered("c1", "b", now=11.01)  # answered just before its CANCEL arrived
    assert out[0] == DropAgent("c1", "b")
    assert e.agents["b"].available(12) and e.agents["b"].calls_by_queue["q"] == 0
    e.call_ended("c1", "caller", now=20)
    assert e.agents["a"].calls_by_queue["q"] == 1


def test_linear_always_starts_from_the_top():
    e = engine({"q": {"strategy": "linear", "members": ["c", "a", "b"]}})
    for i in range(3):
        out = e.enqueue(f"k{i}", "q", now=10 + i)
        assert rings(out)[0].agents == ("c",)
        e.ring_answered(f"k{i}", "c", now=10.5 + i)
        e.call_ended(f"k{i}", "agent", now=10.8 + i)


def test_round_robin_rotates_over_six_calls():
    e = engine({"q": {"strategy": "round-robin", "members": ["a", "b", "c"]}})
    order = []
    for i in range(6):
        out = e.enqueue(f"k{i}", "q", now=10 + i)
        agent = rings(out)[0].agents[0]
        order.append(agent)
        e.ring_answered(f"k{i}", agent, now=10.2 + i)
        e.call_ended(f"k{i}", "agent", now=10.5 + i)
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_longest_idle_agent_gets_the_call():
    e = engine({"q": {"strategy": "longest-idle", "members": ["a", "b", "c"]}})
    e.enqueue("k1", "q", now=10)  # a (idle since 0)
    e.ring_answered("k1", "a", now=10)
    e.call_ended("k1", "agent", now=11)  # a idle since 11 now
    assert rings(e.enqueue("k2", "q", now=12))[0].agents == ("b",)


def test_fewest_calls_and_least_talk_time():
    e = engine({"f": {"strategy": "fewest-calls", "members": ["a", "b"]},
                "t": {"strategy": "least-talk-time", "members": ["a", "b"]}}, names=("a", "b"))
    e.enqueue("k1", "f", now=10)
    e.ring_answered("k1", "a", now=10)
    e.call_ended("k1", "agent", now=100)  # a: 1 call, 90 s talk
    assert rings(e.enqueue("k2", "f", now=101))[0].agents == ("b",)
    e.ring_answered("k2", "b", now=101)
    e.call_ended("k2", "agent", now=102)  # b: 1 call, 1 s talk
    assert rings(e.enqueue("k3", "t", now=103))[0].agents == ("b",)


def test_random_is_seeded_and_spreads():
    e = engine({"q": {"strategy": "random", "members": ["a", "b", "c"]}})
    seen = set()
    for i in range(12):
        agent = rings(e.enqueue(f"k{i}", "q", now=10 + i))[0].agents[0]
        seen.add(agent)
        e.ring_answered(f"k{i}", agent, now=10 + i)
        e.call_ended(f"k{i}", "agent", now=10.5 + i)
    assert seen == {"a", "b", "c"}


def test_skills_filter_and_tier_escalation_after_wait():
    e = engine({"q": {"strategy": "linear", "skills": {"fr": 3}, "tier_wait": 20,
                      "members": ["a", {"agent": "b", "tier": 2}, "c"]}},
               a={"fr": 2}, b={"fr": 5}, c={"en": 9})
    out = e.enqueue("k1", "q", now=0)
    assert rings(out) == []  # a lacks the level, c lacks the skill, b is tier 2
    assert rings(e.tick(now=19.9)) == []
    assert rings(e.tick(now=20.0))[0].agents == ("b",)


def test_no_answer_logs_ringnoanswer_rings_next_after_retry_and_auto_pauses():
    e = engine({"q": {"strategy": "linear", "members": ["a", "b"], "ring_timeout": 10, "retry": 2,
                      "auto_pause": {"after": 2, "reason": "missed"}}}, names=("a", "b"))
    e.enqueue("k1", "q", now=0)
    out = e.tick(now=10)
    assert CancelRing("k1", ("a",)) in out and logs(out, "RINGNOANSWER")[0].data == (10000,)
    assert rings(out) == []  # retry delay
    assert rings(e.tick(now=12))[0].agents == ("b",)  # the next member, as app_queue's linear does
    e.tick(now=22)
    assert rings(e.tick(now=24))[0].agents == ("a",)  # both let it ring: from the top again
    out = e.tick(now=34)
    assert logs(out, "PAUSE")[0].data == ("missed",) and e.agents["a"].paused == "missed"
    assert rings(e.tick(now=36))[0].agents == ("b",)


def test_paused_logged_out_unregistered_and_busy_agents_are_never_rung():
    e = QueueEngine({"q": QueueConfig(strategy="ring-all", members=["a", "b", "c", "d"])},
                    {"a": AgentConfig(mobile="+451"), "b": AgentConfig(mobile="+452"), "c": AgentConfig(mobile="+453"),
                     "d": AgentConfig.model_validate({"softphone": {"username": "d", "password": "secret"}})})
    for n in "abd":
        e.agent_login(n, now=0)
    e.agent_pause("a", "lunch", now=0)
    e.enqueue("chat1", "q", now=0, channel="chat")
    e.ring_answered("chat1", "b", now=0.5)  # b accepted a chat: exclusive, so no call for b
    out = e.enqueue("k1", "q", now=1)
    assert rings(out) == []  # a paused, b in a chat, c logged out, d not registered
    assert rings(e.agent_registered("d", True, now=2))[0].agents == ("d",)


def test_max_wait_overflows_and_abandon_records_wait_time():
    e = engine({"q": {"members": ["a"], "max_wait": 30, "overflow": {"queue": "backup"}},
                "backup": {"members": ["a"]}}, names=("a",), login=False)
    e.enqueue("k1", "q", now=0)
    e.enqueue("k2", "q", now=5)
    out = e.tick(now=30)
    assert logs(out, "EXITWITHTIMEOUT")[0].data == (1, 1, 30)
    assert [a for a in out if isinstance(a, LeaveQueue)][0].target.queue == "backup"
    out = e.caller_left("k2", now=31)
    assert logs(out, "ABANDON")[0].data == (1, 2, 26)


def test_exit_key_takes_the_caller_to_the_flow():
    e = engine({"q": {"members": ["a"], "exit_key": {"key": "1", "flow": "callback"}}}, names=("a",), login=False)
    e.enqueue("k1", "q", now=0)
    assert e.exit_key("k1", "5", now=3) == []
    out = e.exit_key("k1", "1", now=4)
    assert logs(out, "EXITWITHKEY")[0].data == ("1", 1, 1, 4)
    assert LeaveQueue("k1", "q", "key", "callback") in out


def test_priority_goes_ahead_of_arrival_and_position_is_announced():
    e = engine({"q": {"members": ["a"], "announce": {"every": 10}}}, names=("a",), login=False)
    e.enqueue("k1", "q", now=0)
    e.enqueue("vip", "q", now=1, priority=5)
    out = e.tick(now=10)
    assert Announce("k1", 2, None) in out
    out = e.agent_login("a", now=11)
    assert rings(out)[0].call_id == "vip"


def test_full_queue_and_join_empty_and_leave_when_empty():
    e = engine({"q": {"members": ["a"], "max_length": 1}, "strict": {"members": ["a"], "join_empty": False},
                "leave": {"members": ["a"], "leave_when_empty": True}}, names=("a",), login=False)
    e.enqueue("k1", "q", now=0)
    assert logs(e.enqueue("k2", "q", now=1), "FULL")
    assert logs(e.enqueue("k3", "strict", now=1), "JOINEMPTY")
    e.agent_login("a", now=2)
    e.agent_pause("a", "x", now=2)
    e.enqueue("k4", "leave", now=3)
    out = e.agent_logout("a", now=4)
    assert logs(out, "EXITEMPTY") and LeaveQueue("k4", "leave", "empty", None) in out


def test_agent_in_two_queues_gets_one_offer_at_a_time_and_wrapup_of_the_calls_queue():
    e = engine({"sales": {"members": ["a"], "wrapup": 10}, "support": {"members": ["a"], "wrapup": 60}}, names=("a",))
    out = e.enqueue("s1", "sales", now=0) + e.enqueue("p1", "support", now=0.1)
    assert [r.call_id for r in rings(out)] == ["s1"]  # one offer; p1 waits
    e.ring_answered("s1", "a", now=1)
    out = e.call_ended("s1", "agent", now=5)
    assert rings(out) == []  # sales wrap-up (10 s), not support's
    assert rings(e.tick(now=14.9)) == []
    assert [r.call_id for r in rings(e.tick(now=15))] == ["p1"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_interleaving_never_double_books_and_connects_each_call_once(seed: int):
    rng = random.Random(seed)
    names = tuple(f"ag{i}" for i in range(6))
    queues = {f"q{i}": {"strategy": s, "members": rng.sample(names, 4), "wrapup": rng.choice([0, 3]),
                        "ring_timeout": 5, "retry": 1}
              for i, s in enumerate(["ring-all", "linear", "round-robin", "longest-idle"])}
    e = engine(queues, names=names, login=False)
    now = 0.0
    connected: dict[str, str] = {}
    offered: dict[str, set[str]] = {}
    ending: list[tuple[str, str]] = []  # withdrawn rings whose end the phones have not reported yet
    for step in range(600):
        now += rng.uniform(0, 1.5)
        if ending and rng.random() < 0.5:  # a phone reports a withdrawn ring's end (its 487)
            call_id, agent = ending.pop(rng.randrange(len(ending)))
            for act in e.ring_ended(call_id, agent, now):
                if isinstance(act, Ring):
                    offered.setdefault(act.call_id, set()).update(act.agents)
        roll = rng.random()
        calls = list(e.calls)
        if roll < 0.2:
            out = e.enqueue(f"c{step}", rng.choice(list(queues)), now, priority=rng.choice([0, 0, 1]))
        elif roll < 0.45 and any(c.ringing for c in e.calls.values()):
            call = rng.choice([c for c in e.calls.values() if c.ringing])
            agent = rng.choice(list(call.ringing))
            out = e.ring_answered(call.id, agent, now) if rng.random() < 0.7 else e.ring_failed(call.id, agent, now)
        elif roll < 0.6 and any(c.agent for c in e.calls.values()):
            call = rng.choice([c for c in e.calls.values() if c.agent])
            out = e.call_ended(call.id, rng.choice(["agent", "caller"]), now)
        elif roll < 0.7 and calls:
            out = e.caller_left(rng.choice(calls), now)
        elif roll < 0.85:
            a = rng.choice(names)
            out = rng.choice([e.agent_login, e.agent_logout, e.agent_unpause])(a, now)
        elif roll < 0.9:
            out = e.agent_pause(rng.choice(names), "break", now)
        else:
            out = e.tick(now)
        for act in out:
            if isinstance(act, Ring):
                offered.setdefault(act.call_id, set()).update(act.agents)
            if isinstance(act, Bridge):
                assert act.call_id not in connected, "a call was connected twice"
                connected[act.call_id] = act.agent
            if isinstance(act, CancelRing):
                ending += [(act.call_id, agent) for agent in act.agents]
        # invariants after every step
        holders: dict[str, list[str]] = {}
        for c in e.calls.values():
            for a in c.ringing:
                holders.setdefault(a, []).append(c.id)
            if c.agent:
                holders.setdefault(c.agent, []).append(c.id)
        for a, held in holders.items():
            assert len(held) == 1, f"step {step}: agent {a} holds {held}"
        for c in e.calls.values():
            for a in c.ringing:  # a ringing agent is logged in and reserved by exactly this call
                assert e.agents[a].logged_in and e.agents[a].reserved_by == c.id, (step, a, c.id)
        for a in e.agents.values():
            ringing = next((t for t, ch in a.offered.items() if ch == "voice"), None)
            if ringing is not None:
                assert ringing in e.calls and a.id in e.calls[ringing].ringing, (step, a.id)
            # a phone still ringing for a withdrawn call is offered nothing else
            assert len(a.withdrawn) + (ringing is not None) + (a.call is not None) <= 1, (step, a.id)
        for a in e.agents.values():
            if a.call is not None:
                assert a.reserved_by is None and e.calls[a.call].agent == a.id
    assert connected, "the scenario never connected a call"


def test_a_calls_own_skills_from_the_ivr_narrow_the_agents():
    e = engine({"q": {"strategy": "linear", "members": ["a", "b"]}}, names=("a", "b"), a={"en": 5}, b={"fr": 4})
    assert rings(e.enqueue("k1", "q", now=10, skills={"fr": 3}))[0].agents == ("b",)
    assert rings(e.enqueue("k2", "q", now=11, skills={"en": 1}))[0].agents == ("a",)
    assert rings(e.enqueue("k3", "q", now=12, skills={"de": 1})) == []  # nobody speaks German


def test_unroutable_reason_is_data_and_follows_logins():
    """The sans-IO core says why a task cannot reach a logged-in member, once on entry and again
    only when the reason changes; a paused member does not make a task unroutable."""
    from ringmaster.acd.engine import Unroutable

    def why(actions) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
        return [(a.call_id, a.reason) for a in actions if isinstance(a, Unroutable)]

    e = engine({"q": {"members": ["a", "b"]}, "empty": {"members": []}}, names=("a", "b"), login=False,
               a={"en": 5}, b={"en": 1})
    assert why(e.enqueue("t1", "q", 10.0, skills={"en": 3}, channel="chat")) == [("t1", "no-member-logged-in")]
    assert why(e.enqueue("t2", "q", 10.0, skills={"fr": 1}, channel="chat")) == [("t2", "no-skills")]
    assert why(e.enqueue("t3", "empty", 10.0)) == [("t3", "no-members")]
    assert why(e.agent_login("b", 11.0)) == []           # b lacks en 3: nothing changes for t1
    assert why(e.agent_login("a", 12.0)) == [("t1", "")]  # now routable, and offered
    assert e.tasks["t1"].ringing == {"a": 12.0}
    assert why(e.agent_logout("a", 13.0)) == [("t1", "no-member-logged-in")]
    e.agent_login("a", 14.0)
    assert why(e.agent_pause("a", "lunch", 15.0)) == []
    assert e.diagnose("q", {"en": 3}) == "" and e.diagnose("q", {"en": 6}) == "no-skills"
    assert e.diagnose("empty") == "no-members"


def test_ring_all_timeout_withdraws_the_whole_fork_at_once_and_holds_the_agents_until_their_phones_stop():
    e = engine({"q": {"strategy": "ring-all", "members": ["a", "b", "c"], "ring_timeout": 2, "retry": 1}})
    e.enqueue("c1", "q", now=10)
    out = e.tick(now=12)
    assert [x for x in out if isinstance(x, CancelRing)] == [CancelRing("c1", ("a", "b", "c"))]  # one CANCEL
    assert [lg.agent for lg in logs(out, "RINGNOANSWER")] == ["a", "b", "c"]
    # the retry is due at 13, but the phones have not said their rings ended: nobody is rung
    assert rings(e.tick(now=13)) == []
    assert all(e.agents[n].status(13) == "ringing" for n in "abc")
    assert rings(e.ring_ended("c1", "a", now=13.1)) == [Ring("c1", "q", ("a",), 2.0)]
    assert e.ring_ended("c1", "a", now=13.2) == []  # an end reported twice, or for no ring, is nothing


def test_a_withdrawn_ring_whose_end_never_comes_frees_the_agent_after_the_grace():
    from ringmaster.acd.engine import RING_END_GRACE

    e = engine({"q": {"strategy": "linear", "members": ["a"], "ring_timeout": 2, "retry": 0}}, names=("a",))
    e.enqueue("c1", "q", now=10)
    e.tick(now=12)  # RINGNOANSWER, CANCEL out; the worker holding the leg dies: no end ever comes
    assert e.next_deadline() == 12 + RING_END_GRACE
    assert rings(e.tick(now=12 + RING_END_GRACE)) == [Ring("c1", "q", ("a",), 2.0)]


def test_pausing_an_agent_while_she_rings_withdraws_the_ring_and_the_next_agent_rings_now():
    e = engine({"q": {"strategy": "linear", "members": ["a", "b"], "ring_timeout": 30}}, names=("a", "b"))
    assert rings(e.enqueue("c1", "q", now=10)) == [Ring("c1", "q", ("a",), 30.0)]
    out = e.agent_pause("a", "lunch", now=11)
    assert CancelRing("c1", ("a",)) in out and [lg.agent for lg in logs(out, "RINGCANCELED")] == ["a"]
    assert rings(out) == [Ring("c1", "q", ("b",), 30.0)]
    assert not logs(out, "RINGNOANSWER") and e.agents["a"].no_answer_streak == 0


def test_an_exclusive_agent_whose_withdrawn_ring_still_rings_is_offered_no_chat_until_it_ended():
    from ringmaster.acd.config import PresenceProfile

    e = QueueEngine({"q": QueueConfig.model_validate({"strategy": "linear", "members": ["a"], "ring_timeout": 2,
                                                      "retry": 30, "offer_timeout": 20})},
                    agents("a"), presence={"a": PresenceProfile(policy="exclusive")})
    e.agent_login("a", now=0)
    e.enqueue("call1", "q", now=10)
    e.tick(now=12)  # the call's ring timed out; the CANCEL is on its way to the phone
    assert rings(e.enqueue("chat1", "q", now=12.001, channel="chat")) == []
    assert rings(e.ring_ended("call1", "a", now=12.01)) == [Ring("chat1", "q", ("a",), 20.0, "chat")]


def test_a_caller_gone_before_the_bridge_is_an_abandon_under_the_agent_and_the_agent_is_free_at_once():
    e = engine({"q": {"strategy": "linear", "members": ["a"], "wrapup": 10}}, names=("a",))
    e.enqueue("c1", "q", now=10)
    e.ring_answered("c1", "a", now=14)
    out = e.connect_abandoned("c1", now=14.01)
    assert [(lg.event, lg.agent, lg.data) for lg in logs(out)] == [("ABANDON", "a", (1, 1, 4))]
    q = e.queues["q"]
    assert (q.answered, q.abandoned) == (0, 1) and "c1" not in e.calls
    assert e.agents["a"].available(14.02) and e.agents["a"].calls_by_queue["q"] == 0  # no wrap-up, no call
    assert e.connect_abandoned("c1", now=15) == [] and e.call_ended("c1", "caller", now=15) == []


def test_blind_transfer_ends_the_agents_part_like_a_call_and_the_caller_can_enter_another_queue():
    e = engine({"q": {"strategy": "linear", "members": ["a"], "wrapup": 5},
                "r": {"strategy": "linear", "members": ["b"]}})
    e.enqueue("c1", "q", now=10, priority=3, skills={})
    e.ring_answered("c1", "a", now=12)
    assert e.blind_transfer("nope", "r", "queue", now=13) == []  # no such call: nothing happens
    out = e.blind_transfer("c1", "r", "queue", now=40)
    (bt,) = logs(out, "BLINDTRANSFER")
    assert (bt.queue, bt.agent, bt.data) == ("q", "a", ("r", "queue", 2, 28, 1))
    assert "c1" not in e.tasks and e.queues["q"].transferred == 1
    assert e.agents["a"].status(41) == "wrap-up" and e.agents["a"].available(45.1)
    assert e.agents["a"].calls_by_queue["q"] == 1 and e.agents["a"].talk_time == 28
    out = e.enqueue("c1", "r", now=40, priority=3)  # the runtime's next step: the caller waits again
    assert rings(out) == [Ring("c1", "r", ("b",), 15.0)]
    assert e.blind_transfer("c1", "q", "queue", now=41) == []  # ringing, not connected: not hers to send


def test_stats_count_a_blind_transfer_for_the_queue_and_the_agent_with_its_talk_time():
    from ringmaster.reports.stats import Tally

    t = Tally(0, float("inf"), {}, {})
    t.add(10, "q", "NONE", "ENTERQUEUE", "|4511")
    t.add(12, "q", "a", "CONNECT", "2|c1|1")
    t.add(40, "q", "a", "BLINDTRANSFER", "r|queue|2|28|1")
    (qs,), (ags,) = t.result()
    assert qs.transferred == 1 and qs.avg_talk == 28 and ags.transferred == 1 and ags.talk_seconds == 28


def test_offer_to_rings_that_agent_alone_member_or_not_and_a_lapse_returns_the_call_to_the_queue():
    e = engine({"q": {"strategy": "linear", "members": ["a", "b"], "ring_timeout": 5, "retry": 0},
                "r": {"strategy": "linear", "members": ["c"]}})
    out = e.enqueue("c1", "q", now=10, offer_to="c")  # c serves r only
    assert rings(out) == [Ring("c1", "q", ("c",), 5.0)]
    assert e.enqueue("c2", "q", now=10.5, offer_to="c") and e.tasks["c2"].ringing.keys() == {"a"}  # c is busy
    out = e.tick(15.1)  # c let it ring: RINGNOANSWER, and q's own members take it
    assert [lg.agent for lg in logs(out, "RINGNOANSWER")] == ["c"] and rings(out) == [Ring("c1", "q", ("b",), 5.0)]


@pytest.mark.parametrize("strategy", ["round-robin", "linear"])
def test_hunt_fast_path_picks_what_the_full_candidate_list_would(strategy: str) -> None:
    # _first_candidate (members from the strategy's rotation, first who may take the task)
    # must choose as _candidates + the strategy's order + the declined filter do, whatever the
    # agents' states: paused, logged out, on a call, in wrap-up, tiers, skills, declines
    rng = random.Random(11)
    names = tuple(f"a{i}" for i in range(30))
    skills = {n: {"de": rng.randint(0, 3)} for n in names}
    members = [{"agent": n, "tier": rng.randint(1, 3)} for n in names]
    e = engine({"q": {"strategy": strategy, "members": members, "tier_wait": 5, "wrapup": 3}}, names, **skills)
    checked = 0
    for step in range(300):
        now = 100.0 + step
        n = rng.choice(names)
        r = rng.random()
        if r < 0.15:
            e.agent_pause(n, "x", now)
        elif r < 0.3:
            e.agent_unpause(n, now)
        elif r < 0.35:
            e.agent_logout(n, now)
        elif r < 0.45:
            e.agent_login(n, now)
        out = e.enqueue(f"c{step}", "q", now, skills={"de": rng.randint(0, 2)} if rng.random() < 0.5 else None)
        for ring in rings(out):
            if rng.random() < 0.5:  # answered (on a call, then maybe wrapping up); else still ringing
                e.ring_answered(ring.call_id, ring.agents[0], now)
                if rng.random() < 0.5:
                    e.call_ended(ring.call_id, "agent", now + 0.5)
        q = e.queues["q"]
        for task in list(q.waiting)[:3]:
            task.declined = {x for x in names if rng.random() < 0.2}
            later = now + rng.choice([0.0, 6.0, 12.0])
            strat = e._strategy(e._spec(task).strategy)
            cands = e._candidates(q, task, later)
            fresh = [a for a in cands if a.id not in task.declined] or cands
            slow = strat.order(fresh, q, later, e.rng)[:1]
            fast = e._first_candidate(q, task, later, strat.rotation(q))  # type: ignore[arg-type]
            assert [a.id for a in fast] == [a.id for a in slow], (step, task.id)
            checked += 1
    assert checked > 100
