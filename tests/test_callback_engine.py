"""Queued callbacks in the ACD engine without SIP (docs/callbacks.md): a callback keeps the
caller's place (priority, arrival time and order), counts in the position and estimated wait
of the callers behind, is offered for a preview, dialled when the agent accepts, retried in
place after a failed dial, fails after its attempts, waits for its schedule's window and can
be cancelled."""

from __future__ import annotations

import random

import pytest

from ringmaster.acd.config import AgentConfig, QueueConfig
from ringmaster.acd.engine import Bridge, CancelRing, QueueEngine, QueueLog, Ring

CB = {"route": "carrier", "caller_id": "4570000000", "key": "5", "preview": 8, "attempts": 2, "retry_delay": 60}


def engine(queue: dict, names: tuple[str, ...] = ("a",), login: bool = False) -> QueueEngine:  # type: ignore[type-arg]
    agents = {n: AgentConfig(mobile=f"+4510000{i:03d}") for i, n in enumerate(names)}
    e = QueueEngine({"q": QueueConfig.model_validate({"strategy": "linear", "members": list(names),
                                                      "callback": CB, **queue})}, agents, rng=random.Random(1))
    if login:
        for n in names:
            e.agent_login(n, now=0.0)
    return e


def logs(actions, event: str) -> list[QueueLog]:  # type: ignore[no-untyped-def]
    return [a for a in actions if isinstance(a, QueueLog) and a.event == event]


def order(e: QueueEngine) -> list[str]:
    return [t.id for t in e.queues["q"].waiting]


def test_a_callback_keeps_the_callers_place_and_counts_for_those_behind():
    e = engine({})
    e.enqueue("c1", "q", now=10)
    e.enqueue("c2", "q", now=20)
    e.enqueue("c3", "q", now=30)
    e.queues["q"].answered, e.queues["q"].avg_hold = 1, 60.0  # one call answered after a minute
    out = e.request_callback("c2", "cb-c2", "+4512345678", now=40)
    (req,) = logs(out, "CALLBACKREQUEST")
    assert req.call_id == "c2" and req.data == ("cb-c2", "+4512345678", 2, 2, 20)
    assert "c2" not in e.tasks and order(e) == ["c1", "cb-c2", "c3"]
    assert e.tasks["cb-c2"].enqueued_at == 20 and e.position_of("cb-c2") == (2, 120.0)
    assert e.position_of("c3") == (3, 180.0)  # still third: the callback is counted
    e.enqueue("c4", "q", now=50)
    assert e.position_of("c4") == (4, 240.0)


def test_priority_and_arrival_order_hold_for_callbacks():
    e = engine({})
    e.enqueue("low", "q", now=1, priority=0)
    e.enqueue("high", "q", now=5, priority=5)
    e.enqueue("later", "q", now=6, priority=5)
    e.request_callback("high", "cb-high", "+4512345678", now=7)
    assert order(e) == ["cb-high", "later", "low"]
    # a flow's callback enters at the time it was asked for, behind those already waiting
    e.enqueue_callback("cb-flow", "q", "+4587654321", now=8, priority=5, log_request="flowcall")
    assert order(e) == ["cb-high", "later", "cb-flow", "low"]
    # a restored callback keeps its stored arrival time
    e.enqueue_callback("cb-old", "q", "+4511111111", now=100, enqueued_at=0.5, priority=0)
    assert order(e)[-2:] == ["cb-old", "low"]


def test_the_agent_previews_then_the_dial_connects_or_is_retried_in_place_then_fails():
    e = engine({}, login=True)
    e.agent_pause("a", "lunch", now=1)
    e.enqueue("c1", "q", now=10)
    e.request_callback("c1", "cb1", "+4512345678", now=11)
    e.enqueue("c2", "q", now=12)
    out = e.agent_unpause("a", now=20)
    (ring,) = [x for x in out if isinstance(x, Ring)]
    assert ring == Ring("cb1", "q", ("a",), 8.0)  # the preview time, not the ring timeout
    assert logs(out, "CALLBACKOFFER")[0].data == (1, "+4512345678")
    out = e.ring_answered("cb1", "a", now=22)
    assert Bridge("cb1", "a") in out and logs(out, "CALLBACKDIAL") and not logs(out, "CONNECT")
    assert e.agents["a"].status(22) == "on-call"
    out = e.callback_failed("cb1", "noanswer", now=50)
    assert logs(out, "CALLBACKFAIL")[0].data == (1, "noanswer", "retry")
    # back in its place, ahead of c2, but not offered before the retry delay: c2 goes first
    assert order(e)[0] == "cb1" and e.position_of("c2") == (2, None)
    assert [x.call_id for x in out if isinstance(x, Ring)] == ["c2"]
    e.ring_failed("c2", "a", now=55)
    assert e.next_deadline() is not None
    out = e.tick(110.0)
    assert [x.call_id for x in out if isinstance(x, Ring)] == ["cb1"]
    assert logs(out, "CALLBACKOFFER")[0].data == (2, "+4512345678")
    e.ring_answered("cb1", "a", now=112)
    out = e.callback_failed("cb1", "busy", now=120)
    assert logs(out, "CALLBACKFAIL")[0].data == (2, "busy", "final")
    assert "cb1" not in e.tasks and order(e) == ["c2"]
    assert [x.call_id for x in out if isinstance(x, Ring)] == ["c2"]  # she is free for the next at once


def test_an_answered_callback_connects_and_completes_like_a_call():
    e = engine({}, login=True)
    e.agent_pause("a", "x", now=0)
    e.enqueue("c1", "q", now=10)
    e.request_callback("c1", "cb1", "+4512345678", now=30)
    e.agent_unpause("a", now=100)
    e.ring_answered("cb1", "a", now=103)
    out = e.callback_answered("cb1", now=110)
    assert [x.event for x in out] == ["CALLBACKANSWER", "CONNECT"]
    assert out[0].data == (1, 80, 10) and out[1].data == (100, "", 10)
    out = e.call_ended("cb1", "caller", now=170)
    assert logs(out, "COMPLETECALLER")[0].data == (100, 60, 1)


def test_a_busy_customer_fails_at_once_with_on_busy_fail_and_an_uncounted_failure_retries_now():
    e = engine({"callback": {**CB, "on_busy": "fail", "attempts": 3}}, login=True)
    e.enqueue_callback("cb1", "q", "+4512345678", now=1)
    e.ring_answered("cb1", "a", now=2)
    out = e.callback_failed("cb1", "worker-lost", now=3, counted=False)
    assert logs(out, "CALLBACKFAIL")[0].data == (0, "worker-lost", "retry")
    assert [x.call_id for x in out if isinstance(x, Ring)] == ["cb1"]  # offered again at once
    e.ring_answered("cb1", "a", now=4)
    out = e.callback_failed("cb1", "busy", now=5)
    assert logs(out, "CALLBACKFAIL")[0].data == (1, "busy", "final")


def test_callbacks_wait_for_their_window_in_place_and_calls_do_not():
    e = engine({}, login=True)
    e.agent_pause("a", "x", now=0)
    e.set_callback_window("q", 500.0, now=1)
    e.enqueue_callback("cb1", "q", "+4512345678", now=2)
    e.enqueue("c1", "q", now=3)
    out = e.agent_unpause("a", now=10)
    assert [x.call_id for x in out if isinstance(x, Ring)] == ["c1"]  # the call, not the callback
    e.ring_answered("c1", "a", now=11)
    e.call_ended("c1", "agent", now=20)
    assert e.next_deadline() == 500.0
    out = e.tick(500.0)
    assert [x.call_id for x in out if isinstance(x, Ring)] == ["cb1"]
    # closed with no known opening: waits until told
    e2 = engine({}, login=True)
    e2.set_callback_window("q", float("inf"), now=0)
    assert not [x for x in e2.enqueue_callback("cb", "q", "+4512345678", now=1) if isinstance(x, Ring)]
    assert [x.call_id for x in e2.set_callback_window("q", 0.0, now=5) if isinstance(x, Ring)] == ["cb"]


def test_a_callback_never_times_out_or_leaves_an_empty_queue_and_can_be_cancelled():
    e = engine({"max_wait": 5, "leave_when_empty": True}, login=True)
    e.agent_pause("a", "x", now=0)
    e.enqueue("c1", "q", now=1)
    e.request_callback("c1", "cb1", "+4512345678", now=2)
    e.agent_logout("a", now=3)
    e.tick(100.0)
    assert order(e) == ["cb1"]
    e.agent_login("a", now=101)  # paused still: nothing offered
    with pytest.raises(KeyError):
        e.cancel_callback("nope", "api", now=102)
    out = e.cancel_callback("cb1", "api", now=102)
    assert logs(out, "CALLBACKCANCEL")[0].data == ("api", 1, 1, 101) and not e.tasks


def test_cancelling_a_callback_during_its_preview_withdraws_the_ring_and_one_being_dialled_is_refused():
    e = engine({}, login=True)
    e.enqueue_callback("cb1", "q", "+4512345678", now=1)
    out = e.cancel_callback("cb1", "api", now=2)
    assert CancelRing("cb1", ("a",)) in out
    e.enqueue_callback("cb2", "q", "+4512345678", now=10)
    e.ring_ended("cb1", "a", now=10)
    e.ring_answered("cb2", "a", now=11)
    with pytest.raises(ValueError):
        e.cancel_callback("cb2", "api", now=12)


def test_a_ring_all_queue_previews_a_callback_to_one_agent_and_a_drained_queue_moves_it_in_place():
    e = engine({"strategy": "ring-all"}, names=("a", "b"), login=True)
    out = e.enqueue_callback("cb1", "q", "+4512345678", now=5, enqueued_at=1.0)
    (ring,) = [x for x in out if isinstance(x, Ring)]
    assert len(ring.agents) == 1
    e.cancel_callback("cb1", "api", now=6)
    e.ring_ended("cb1", ring.agents[0], now=6)
    e.agent_logout("a", now=7)
    e.agent_logout("b", now=7)
    e.enqueue_callback("cb2", "q", "+4512345678", now=8, enqueued_at=2.0, attempts=1)
    queues = {"q2": QueueConfig.model_validate({"members": ["a"], "callback": CB})}
    agents = {n: a.spec for n, a in e.agents.items()}
    out = e.reconfigure(queues, agents, now=9, drain={"q": "q2"})
    assert logs(out, "TRANSFER")[0].call_id == "cb2"
    t = e.tasks["cb2"]
    assert (t.queue, t.enqueued_at, t.attempts, t.callback) == ("q2", 2.0, 1, "+4512345678")


@pytest.mark.parametrize("seed", range(6))
def test_random_interleaving_with_callbacks_keeps_places_and_never_double_books(seed: int):
    """Calls, callbacks asked for, previews answered or not, dials failed or answered, cancels,
    logins and pauses in random order: no agent is ever held by two tasks, every queue's line is
    in service order with positions 1..n, and a callback keeps the arrival time it was given."""
    rng = random.Random(seed)
    names = ("a", "b", "c")
    agents = {n: AgentConfig(mobile=f"+4510000{i:03d}") for i, n in enumerate(names)}
    cb = {**CB, "attempts": 2, "retry_delay": 4}
    e = QueueEngine({q: QueueConfig.model_validate({"strategy": s, "members": list(names), "callback": cb,
                                                    "ring_timeout": 5, "retry": 1})
                     for q, s in (("q1", "ring-all"), ("q2", "linear"))}, agents, rng=random.Random(seed))
    arrival: dict[str, float] = {}
    ending: list[tuple[str, str]] = []
    now = 0.0
    outcomes = {"answered": 0, "failed": 0}
    dials: set[str] = set()    # callbacks whose customer is being dialled (CALLBACKDIAL, no answer yet)
    talking: set[str] = set()
    for step in range(400):
        now += rng.uniform(0, 1.5)
        if ending and rng.random() < 0.5:
            e.ring_ended(*ending.pop(rng.randrange(len(ending))), now=now)
        roll = rng.random()
        waiting_calls = [t for t in e.tasks.values() if t.agent is None and t.callback is None]
        dialling = [e.tasks[i] for i in sorted(dials) if i in e.tasks]
        if dialling and roll < 0.3:  # the customer's phone answers or not before anything else happens
            t = rng.choice(dialling)
            if rng.random() < 0.5:
                out = e.callback_answered(t.id, now)
                outcomes["answered"] += 1
            else:
                out = e.callback_failed(t.id, rng.choice(["busy", "noanswer", "worker-lost"]), now,
                                        counted=rng.random() < 0.8)
                outcomes["failed"] += 1
        elif roll < 0.2:
            out = e.enqueue(f"c{step}", rng.choice(["q1", "q2"]), now, priority=rng.choice([0, 0, 2]))
        elif roll < 0.3 and waiting_calls:
            t = rng.choice(waiting_calls)
            out = e.request_callback(t.id, f"cb-{t.id}", "+4512345678", now)
            arrival[f"cb-{t.id}"] = t.enqueued_at
        elif roll < 0.5 and any(t.ringing for t in e.tasks.values()):
            t = rng.choice([t for t in e.tasks.values() if t.ringing])
            agent = rng.choice(list(t.ringing))
            out = e.ring_answered(t.id, agent, now) if rng.random() < 0.7 else e.ring_failed(t.id, agent, now)
        elif roll < 0.7 and any(t.agent and (t.callback is None or t.id in talking) for t in e.tasks.values()):
            t = rng.choice([t for t in e.tasks.values() if t.agent and (t.callback is None or t.id in talking)])
            out = e.call_ended(t.id, rng.choice(["agent", "caller"]), now)
        elif roll < 0.75 and any(t.callback and t.agent is None for t in e.tasks.values()):
            out = e.cancel_callback(rng.choice([t.id for t in e.tasks.values() if t.callback and t.agent is None]),
                                    "api", now)
        elif roll < 0.9:
            out = rng.choice([e.agent_login, e.agent_logout, e.agent_unpause])(rng.choice(names), now)
        elif roll < 0.93:
            out = e.agent_pause(rng.choice(names), "break", now)
        else:
            out = e.tick(now)
        ending += [(x.call_id, ag) for x in out if isinstance(x, CancelRing) for ag in x.agents]
        for x in out:
            if isinstance(x, QueueLog) and x.event == "CALLBACKDIAL":
                dials.add(x.call_id)
            elif isinstance(x, QueueLog) and x.event in ("CALLBACKANSWER", "CALLBACKFAIL"):
                dials.discard(x.call_id)
                if x.event == "CALLBACKANSWER":
                    talking.add(x.call_id)
        holders: dict[str, list[str]] = {}
        for t in e.tasks.values():
            for ag in [*t.ringing, *([t.agent] if t.agent else [])]:
                holders.setdefault(ag, []).append(t.id)
            if t.callback is not None:
                assert t.enqueued_at == arrival.setdefault(t.id, t.enqueued_at), (step, t.id)
        assert all(len(held) == 1 for held in holders.values()), (step, holders)
        for q in e.queues.values():
            keys = [t.sort_key() for t in q.waiting]
            assert keys == sorted(keys), (step, q.name)
            assert sorted(q.position(t) for t in q.waiting) == list(range(1, len(q.waiting) + 1)), step
    assert outcomes["answered"] and outcomes["failed"], outcomes
